//! A mergeable quantile sketch of round-trip times, with 1% relative error.
//!
//! The algorithm is DDSketch's (Masson, Rim and Lee, "DDSketch: A fast and fully-mergeable
//! quantile sketch with relative-error guarantees", VLDB 2019): a value `x` goes to bucket
//! `ceil(log_gamma(x))` with `gamma = (1 + a) / (1 - a)`, and a quantile is read back as the
//! middle of its bucket, within `a` of the true value. Merging two sketches adds their bucket
//! counts, so sketches of flows sum to the sketch of an edge, and of edges to a group of them.
//!
//! Why not the `sketches-ddsketch` crate: the edge measures are the *difference* type of a
//! differential collection, which must be `Ord` (and serializable) to be arranged; that crate's
//! sketch is neither. This is the same algorithm over a sorted vector of (bucket, count), which
//! derives both; it is small and property-tested against exact quantiles below.

use serde::{Deserialize, Serialize};

/// Bytes that are not a sketch [`RttSketch::to_bytes`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SketchError {
    /// The bytes end inside a bucket.
    #[error("sketch truncated at byte {at}")]
    Truncated {
        /// Byte offset.
        at: usize,
    },
    /// A count longer than a 64-bit varint.
    #[error("sketch count over 64 bits at byte {at}")]
    Overlong {
        /// Byte offset of the bucket.
        at: usize,
    },
    /// A bucket not above the one before it.
    #[error("sketch buckets out of order at byte {at}")]
    Unsorted {
        /// Byte offset of the bucket.
        at: usize,
    },
}

/// Relative accuracy.
pub const ALPHA: f64 = 0.01;

fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

/// Counts of values per logarithmic bucket, sorted by bucket. Values of 0 (and below) go to
/// bucket `i16::MIN`, read back as 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RttSketch {
    buckets: Vec<(i16, u64)>,
}

impl RttSketch {
    /// The bucket of a value.
    fn bucket(x: f64) -> i16 {
        if x <= 0.0 {
            return i16::MIN;
        }
        (x.ln() / gamma().ln()).ceil().clamp(f64::from(i16::MIN + 1), f64::from(i16::MAX)) as i16
    }

    /// A bucket's representative value (the middle of `(gamma^(i-1), gamma^i]`, relatively).
    fn value(i: i16) -> f64 {
        if i == i16::MIN {
            return 0.0;
        }
        2.0 * gamma().powi(i32::from(i)) / (1.0 + gamma())
    }

    /// Adds `n` values of `x`.
    pub fn add(&mut self, x: f64, n: u64) {
        if n == 0 {
            return;
        }
        let b = Self::bucket(x);
        match self.buckets.binary_search_by_key(&b, |(k, _)| *k) {
            Ok(i) => self.buckets[i].1 += n,
            Err(i) => self.buckets.insert(i, (b, n)),
        }
    }

    /// Adds another sketch's values.
    pub fn merge(&mut self, other: &RttSketch) {
        if other.buckets.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
            return;
        }
        let mut out = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (self.buckets.iter().peekable(), other.buckets.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    out.push((x.0, x.1 + y.1));
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    out.push(**x);
                    a.next();
                }
                (Some(_), Some(y)) => {
                    out.push(**y);
                    b.next();
                }
                (Some(x), None) => {
                    out.push(**x);
                    a.next();
                }
                (None, Some(y)) => {
                    out.push(**y);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.buckets = out;
    }

    /// Values added.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The `q`-quantile (0 to 1), within [`ALPHA`] of the true one; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // The value of rank floor(q * (n - 1)) (0-based), as DDSketch defines it.
        let rank = (q.clamp(0.0, 1.0) * (total - 1) as f64).floor() as u64;
        let mut seen = 0;
        for (b, n) in &self.buckets {
            seen += n;
            if seen > rank {
                return Some(Self::value(*b));
            }
        }
        self.buckets.last().map(|(b, _)| Self::value(*b))
    }

    /// A compact byte form: per bucket, its index (i16, little-endian) and count (varint).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buckets.len() * 4);
        for (b, n) in &self.buckets {
            out.extend_from_slice(&b.to_le_bytes());
            let mut n = *n;
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
        out
    }

    /// Reads [`to_bytes`](RttSketch::to_bytes) (the `rtt_sketch` of an `Edge` and of the lake's
    /// `edges` table).
    ///
    /// # Errors
    /// [`SketchError`] at the byte offset of the first thing `to_bytes` would not have written:
    /// a truncated bucket, an over-long count, buckets out of order.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SketchError> {
        let mut s = RttSketch::default();
        let mut at = 0;
        while at < bytes.len() {
            let (Some(&lo), Some(&hi)) = (bytes.get(at), bytes.get(at + 1)) else {
                return Err(SketchError::Truncated { at });
            };
            let b = i16::from_le_bytes([lo, hi]);
            let start = at;
            at += 2;
            let (mut n, mut shift) = (0u64, 0u32);
            loop {
                let Some(&byte) = bytes.get(at) else { return Err(SketchError::Truncated { at }) };
                at += 1;
                if shift > 63 {
                    return Err(SketchError::Overlong { at: start });
                }
                n |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    break;
                }
                shift += 7;
            }
            if s.buckets.last().is_some_and(|(last, _)| *last >= b) {
                return Err(SketchError::Unsorted { at: start });
            }
            s.buckets.push((b, n));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn exact(values: &mut [f64], q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        values[(q * (values.len() - 1) as f64).floor() as usize]
    }

    proptest! {
        /// Every quantile is within the relative error of the exact one, and merging sketches
        /// equals sketching the union.
        #[test]
        fn quantiles_within_alpha_and_merge_is_union(
            a in proptest::collection::vec(1.0f64..10_000_000.0, 1..200),
            b in proptest::collection::vec(1.0f64..10_000_000.0, 0..200),
            q in 0.0f64..=1.0,
        ) {
            let (mut sa, mut sb, mut all) = (RttSketch::default(), RttSketch::default(), RttSketch::default());
            for x in &a { sa.add(*x, 1); all.add(*x, 1); }
            for x in &b { sb.add(*x, 1); all.add(*x, 1); }
            sa.merge(&sb);
            prop_assert_eq!(&sa, &all);
            let mut values: Vec<f64> = a.iter().chain(&b).copied().collect();
            let want = exact(&mut values, q);
            let got = sa.quantile(q).unwrap();
            prop_assert!((got - want).abs() <= ALPHA * want * 1.0001, "q {} got {} want {}", q, got, want);
            prop_assert_eq!(RttSketch::from_bytes(&sa.to_bytes()), Ok(sa));
        }
    }

    #[test]
    fn empty_and_zero() {
        let mut s = RttSketch::default();
        assert_eq!(s.quantile(0.5), None);
        s.add(0.0, 3);
        assert_eq!(s.quantile(0.99), Some(0.0));
        assert_eq!(RttSketch::from_bytes(&[1]), Err(SketchError::Truncated { at: 0 }));
        assert_eq!(RttSketch::from_bytes(&[1, 0, 0x80]), Err(SketchError::Truncated { at: 3 }));
        assert_eq!(RttSketch::from_bytes(&[2, 0, 1, 1, 0, 1]), Err(SketchError::Unsorted { at: 3 }));
        assert_eq!(
            RttSketch::from_bytes(&[1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1]),
            Err(SketchError::Overlong { at: 0 })
        );
    }
}
