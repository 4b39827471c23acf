//! Kernel TAI timestamps to UNIX wall-clock time.
//!
//! Why TAI: `bpf_ktime_get_ns` is CLOCK_MONOTONIC, which does not follow
//! wall-clock steps (settimeofday, NTP corrections at boot), so a boot-offset
//! computed once drifts from real time. `bpf_ktime_get_tai_ns` (kernel 6.1+)
//! is CLOCK_TAI, which the kernel keeps as CLOCK_REALTIME plus a whole number
//! of seconds (the TAI-UTC offset, 37 s when an NTP daemon has set it, 0
//! otherwise). Converting is therefore a subtraction of that offset, which
//! [`TaiClock::refresh`] re-reads; call it once per batch.
//!
//! Caveat: a timestamp taken before a leap second (or before the NTP daemon
//! first sets the offset) and converted after it is off by one second (or 37).

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the UNIX epoch (UTC, as `CLOCK_REALTIME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct UnixNanos(pub u64);

impl UnixNanos {
    /// As a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }
}

/// Converts kernel CLOCK_TAI nanoseconds to [`UnixNanos`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaiClock {
    tai_minus_utc_ns: i64,
}

impl TaiClock {
    /// Read the current TAI-UTC offset.
    pub fn new() -> io::Result<Self> {
        Ok(Self { tai_minus_utc_ns: crate::sys::tai_minus_realtime_ns()? })
    }

    /// A clock with a fixed offset (tests, replays).
    pub const fn with_offset_ns(tai_minus_utc_ns: i64) -> Self {
        Self { tai_minus_utc_ns }
    }

    /// Re-read the TAI-UTC offset (it changes at leap seconds and when the NTP
    /// daemon first sets it).
    pub fn refresh(&mut self) -> io::Result<()> {
        self.tai_minus_utc_ns = crate::sys::tai_minus_realtime_ns()?;
        Ok(())
    }

    /// The current offset, nanoseconds.
    pub const fn tai_minus_utc_ns(&self) -> i64 {
        self.tai_minus_utc_ns
    }

    /// Convert a kernel timestamp; 0 (the kernel's "not observed") and
    /// pre-epoch results give `None`.
    pub fn to_unix(&self, tai_ns: u64) -> Option<UnixNanos> {
        if tai_ns == 0 {
            return None;
        }
        let unix = i128::from(tai_ns) - i128::from(self.tai_minus_utc_ns);
        u64::try_from(unix).ok().map(UnixNanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_not_observed() {
        assert_eq!(TaiClock::with_offset_ns(37_000_000_000).to_unix(0), None);
    }

    #[test]
    fn subtracts_offset() {
        let c = TaiClock::with_offset_ns(37_000_000_000);
        assert_eq!(c.to_unix(38_000_000_001), Some(UnixNanos(1_000_000_001)));
        assert_eq!(c.to_unix(1), None, "before the epoch");
        assert_eq!(TaiClock::with_offset_ns(0).to_unix(u64::MAX), Some(UnixNanos(u64::MAX)));
    }

    #[test]
    fn offset_is_whole_seconds_and_now_converts_to_now() {
        let c = TaiClock::new().expect("clock_gettime works");
        assert_eq!(c.tai_minus_utc_ns() % 1_000_000_000, 0);
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid out-pointer for the call (test only).
        assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_TAI, &mut ts) }, 0);
        let tai =
            u64::try_from(ts.tv_sec).expect("positive") * 1_000_000_000 + u64::try_from(ts.tv_nsec).expect("positive");
        let unix = c.to_unix(tai).expect("after epoch").to_system_time();
        let skew = SystemTime::now().duration_since(unix).unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(1), "skew {skew:?}");
    }
}
