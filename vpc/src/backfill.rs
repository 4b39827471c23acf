//! Backfill: the files under a prefix whose time falls in a range, instead of the queue.
//!
//! A file's time is the one in its AWS name
//! (`ACCOUNT_vpcflowlogs_REGION_FLOWLOGID_YYYYMMDDTHHMMZ_HASH.log.gz`, the end of the 5-minute
//! delivery window it belongs to), or, for a key without one, the object's last-modified time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What to backfill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackfillRange {
    /// The bucket.
    pub bucket: String,
    /// The key prefix to list (for example `AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/`).
    pub prefix: String,
    /// Files from this time (inclusive).
    pub from: SystemTime,
    /// Files before this time (exclusive).
    pub to: SystemTime,
}

impl BackfillRange {
    /// True when a file of this key (and last-modified time) belongs to the range.
    pub fn contains(&self, key: &str, last_modified: SystemTime) -> bool {
        let t = key_time(key).unwrap_or(last_modified);
        t >= self.from && t < self.to
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic Gregorian date.
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The time in an AWS flow log file name (`_YYYYMMDDTHHMMZ_`), if it has one.
pub fn key_time(key: &str) -> Option<SystemTime> {
    let name = key.rsplit('/').next()?;
    for token in name.split('_') {
        let b = token.as_bytes();
        if b.len() != 14 || b[8] != b'T' || b[13] != b'Z' {
            continue;
        }
        let digits = |r: std::ops::Range<usize>| -> Option<i64> {
            let s = token.get(r)?;
            s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok()).flatten()
        };
        let (y, mo, d, h, mi) = (digits(0..4)?, digits(4..6)?, digits(6..8)?, digits(9..11)?, digits(11..13)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 {
            continue;
        }
        let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60;
        return u64::try_from(secs).ok().map(|s| UNIX_EPOCH + Duration::from_secs(s));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_names_carry_their_time() {
        let key = "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/123456789012_vpcflowlogs_us-east-1_fl-0123456789abcdef0_20240501T1205Z_0a1b2c3d.log.gz";
        let t = key_time(key).unwrap();
        assert_eq!(t, humantime::parse_rfc3339("2024-05-01T12:05:00Z").unwrap());
        assert_eq!(key_time("plain/file.log.gz"), None);
        assert_eq!(key_time("x_20241301T1205Z_y.log.gz"), None, "month 13");
        let leap = key_time("a_20240229T2359Z_b").unwrap();
        assert_eq!(leap, humantime::parse_rfc3339("2024-02-29T23:59:00Z").unwrap());
    }

    #[test]
    fn range_uses_the_name_then_last_modified() {
        let at = |s: &str| humantime::parse_rfc3339(s).unwrap();
        let r = BackfillRange {
            bucket: "b".into(),
            prefix: "".into(),
            from: at("2024-05-01T12:00:00Z"),
            to: at("2024-05-01T13:00:00Z"),
        };
        let late = at("2030-01-01T00:00:00Z");
        assert!(r.contains("a_20240501T1200Z_b.log.gz", late));
        assert!(!r.contains("a_20240501T1300Z_b.log.gz", late), "end is exclusive");
        assert!(r.contains("no-time.log.gz", at("2024-05-01T12:30:00Z")));
        assert!(!r.contains("no-time.log.gz", late));
    }
}
