//! Time ranges and how the API reads a point in time.
//!
//! Times are ns since the Unix epoch everywhere inside. A request may write a point as RFC 3339
//! (`2026-11-29T12:00:00Z`), as an integer of ns since the epoch, or relative to the wall clock
//! (`now`, `now-15m`, `now-1h30m`: humantime durations). A range is half-open, `[from, to)`,
//! and never empty.

use chrono::{DateTime, SecondsFormat, Utc};

/// A non-empty half-open time range `[from_ns, to_ns)`, ns since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeRange {
    from_ns: u64,
    to_ns: u64,
}

/// A range whose end is not after its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("empty time range: `to` ({to_ns} ns) must be after `from` ({from_ns} ns)")]
pub struct EmptyRange {
    /// The requested start.
    pub from_ns: u64,
    /// The requested end.
    pub to_ns: u64,
}

impl TimeRange {
    /// `[from_ns, to_ns)`.
    ///
    /// # Errors
    /// [`EmptyRange`] unless `from_ns < to_ns`.
    pub const fn new(from_ns: u64, to_ns: u64) -> Result<Self, EmptyRange> {
        if from_ns < to_ns {
            Ok(TimeRange { from_ns, to_ns })
        } else {
            Err(EmptyRange { from_ns, to_ns })
        }
    }

    /// The first ns inside.
    pub const fn from_ns(&self) -> u64 {
        self.from_ns
    }

    /// The first ns after.
    pub const fn to_ns(&self) -> u64 {
        self.to_ns
    }

    /// The length, ns (at least 1).
    pub const fn len_ns(&self) -> u64 {
        self.to_ns - self.from_ns
    }

    /// Whether `t_ns` is inside.
    pub const fn contains(&self, t_ns: u64) -> bool {
        self.from_ns <= t_ns && t_ns < self.to_ns
    }

    /// Whether the two ranges share a ns.
    pub const fn overlaps(&self, other: &TimeRange) -> bool {
        self.from_ns < other.to_ns && other.from_ns < self.to_ns
    }
}

/// A point in time the API could not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot read {0:?} as a time: write RFC 3339 (2026-11-29T12:00:00Z), ns since the epoch, \
     `now` or `now-<duration>` (now-15m)"
)]
pub struct BadTime(pub String);

/// The wall clock, ns since the Unix epoch.
pub fn now_ns() -> u64 {
    let now = Utc::now();
    u64::try_from(now.timestamp_nanos_opt().unwrap_or(i64::MAX)).unwrap_or(0)
}

/// Reads a point in time; `now_ns` is the wall clock that `now-...` is relative to.
///
/// # Errors
/// [`BadTime`] for anything else, for times before the epoch, and for times past the year 2262
/// (the end of i64 ns).
pub fn parse_time(text: &str, now_ns: u64) -> Result<u64, BadTime> {
    let t = text.trim();
    let bad = || BadTime(text.to_owned());
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<i64>().ok().and_then(|v| u64::try_from(v).ok()).ok_or_else(bad);
    }
    if let Some(rest) = t.strip_prefix("now") {
        let rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(now_ns);
        }
        let ago = rest.strip_prefix('-').ok_or_else(bad)?;
        let d = humantime::parse_duration(ago.trim()).map_err(|_| bad())?;
        let d = u64::try_from(d.as_nanos()).map_err(|_| bad())?;
        return now_ns.checked_sub(d).ok_or_else(bad);
    }
    let dt = DateTime::parse_from_rfc3339(t).map_err(|_| bad())?;
    dt.timestamp_nanos_opt().and_then(|v| u64::try_from(v).ok()).ok_or_else(bad)
}

/// A time as RFC 3339 in UTC with the shortest exact fraction (`2026-11-29T12:00:00Z`).
pub fn format_time(t_ns: u64) -> String {
    let t = DateTime::<Utc>::from_timestamp_nanos(i64::try_from(t_ns).unwrap_or(i64::MAX));
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: u64 = 1_795_953_600_000_000_000; // 2026-11-29T12:00:00Z (ns)

    #[test]
    fn reads_every_form() {
        assert_eq!(parse_time("2026-11-29T12:00:00Z", 0), Ok(NOON));
        assert_eq!(parse_time("2026-11-29T13:00:00+01:00", 0), Ok(NOON));
        assert_eq!(parse_time("2026-11-29T12:00:00.5Z", 0), Ok(NOON + 500_000_000));
        assert_eq!(parse_time(&NOON.to_string(), 0), Ok(NOON));
        assert_eq!(parse_time("now", NOON), Ok(NOON));
        assert_eq!(parse_time("now-15m", NOON), Ok(NOON - 15 * 60 * 1_000_000_000));
        assert_eq!(parse_time(" now - 1h 30m ", NOON), Ok(NOON - 90 * 60 * 1_000_000_000));
        assert_eq!(format_time(NOON), "2026-11-29T12:00:00Z");
        assert_eq!(format_time(NOON + 250_000_000), "2026-11-29T12:00:00.250Z");
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for bad in ["", "yesterday", "now+5m", "now-", "now-5 parsecs", "2026-11-29", "-5", "99999999999999999999"] {
            assert_eq!(parse_time(bad, NOON), Err(BadTime(bad.to_owned())), "{bad:?}");
        }
        assert!(parse_time("1969-12-31T23:59:59Z", NOON).is_err(), "before the epoch");
        assert!(parse_time("now-100y", NOON).is_err(), "before the epoch, relative");
    }

    #[test]
    fn ranges_are_never_empty() {
        assert_eq!(TimeRange::new(5, 5), Err(EmptyRange { from_ns: 5, to_ns: 5 }));
        assert!(TimeRange::new(6, 5).is_err());
        let r = TimeRange::new(5, 10).expect("valid");
        assert!(r.contains(5) && r.contains(9) && !r.contains(10) && !r.contains(4));
        assert!(r.overlaps(&TimeRange::new(9, 20).expect("valid")));
        assert!(!r.overlaps(&TimeRange::new(10, 20).expect("valid")));
        assert_eq!(r.len_ns(), 5);
    }
}
