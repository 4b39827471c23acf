//! Progress on a terminal (indicatif): hidden when stderr is not a terminal, so logs and CI
//! output stay clean.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::summary::Summary;

/// A progress line.
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A spinner (queue mode: no known end), or a bar over bytes when the total is known.
    pub(crate) fn new(enabled: bool, total_bytes: Option<u64>) -> Progress {
        let target = if enabled { ProgressDrawTarget::stderr_with_hz(4) } else { ProgressDrawTarget::hidden() };
        let bar = match total_bytes {
            Some(total) => {
                let bar = ProgressBar::with_draw_target(Some(total), target);
                if let Ok(style) = ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg}") {
                    bar.set_style(style);
                }
                bar
            }
            None => {
                let bar = ProgressBar::with_draw_target(None, target);
                if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed} {msg}") {
                    bar.set_style(style);
                }
                bar.enable_steady_tick(Duration::from_millis(250));
                bar
            }
        };
        Progress { bar }
    }

    pub(crate) fn set_total(&self, total_bytes: u64) {
        self.bar.set_length(total_bytes);
    }

    pub(crate) fn update(&self, s: &Summary, read_bytes: u64, records: u64, in_flight: usize) {
        self.bar.set_position(read_bytes);
        self.bar.set_message(format!(
            "files {} records {} malformed {} in flight {} mouthfuls {}/{}",
            s.files, records, s.malformed, in_flight, s.mouthfuls_delivered, s.mouthfuls
        ));
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
