//! Per-operator time, from timely's own scheduling log: what `--profile` prints.
//!
//! Each worker registers a logger for `timely` events, pairs every operator's start and stop
//! events, and sums the time between them per operator. It costs a little (an event per
//! operator activation), so it is off unless asked for.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};

/// Time per operator of one worker, by operator name.
#[derive(Clone, Debug, Default)]
pub struct OperatorTimes {
    /// (operator name, total scheduled time), largest first after [`OperatorTimes::sorted`].
    pub entries: Vec<(String, Duration)>,
}

impl OperatorTimes {
    /// Adds another worker's times, by name.
    pub fn merge(&mut self, other: &OperatorTimes) {
        for (name, d) in &other.entries {
            match self.entries.iter_mut().find(|(n, _)| n == name) {
                Some((_, total)) => *total += *d,
                None => self.entries.push((name.clone(), *d)),
            }
        }
    }

    /// Largest first.
    pub fn sorted(mut self) -> Self {
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.1));
        self
    }
}

#[derive(Default)]
struct State {
    names: HashMap<usize, String>,
    started: HashMap<usize, Duration>,
    total: HashMap<usize, Duration>,
}

/// Starts collecting operator times on this worker; call the returned closure at the end.
pub fn install(worker: &mut timely::worker::Worker) -> impl FnOnce() -> OperatorTimes {
    let state: Rc<RefCell<State>> = Rc::default();
    let sink = Rc::clone(&state);
    if let Some(mut registry) = worker.log_register() {
        registry.insert::<TimelyEventBuilder, _>("timely", move |_time, data| {
            let Some(data) = data else { return };
            let mut s = sink.borrow_mut();
            for (at, event) in data.iter() {
                match event {
                    TimelyEvent::Operates(op) => {
                        s.names.insert(op.id, op.name.clone());
                    }
                    TimelyEvent::Schedule(e) => match e.start_stop {
                        StartStop::Start => {
                            s.started.insert(e.id, *at);
                        }
                        StartStop::Stop => {
                            if let Some(start) = s.started.remove(&e.id) {
                                *s.total.entry(e.id).or_default() += at.saturating_sub(start);
                            }
                        }
                    },
                    _ => {}
                }
            }
        });
    }
    move || {
        let s = state.borrow();
        let mut times = OperatorTimes::default();
        for (id, d) in &s.total {
            let name = s.names.get(id).cloned().unwrap_or_else(|| format!("operator {id}"));
            times.merge(&OperatorTimes { entries: vec![(name, *d)] });
        }
        times.sorted()
    }
}
