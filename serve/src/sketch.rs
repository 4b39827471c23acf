//! RTT sketches: a [`DDSketch`] (relative-error quantiles) per edge row, merged across rows so
//! that an aggregated edge's p50/p90/p99 are quantiles of all its samples, not averages of
//! per-row quantiles.
//!
//! In the lake, the `rtt_sketch` column holds [`RttSketch::encode`]: the sketch as JSON (serde,
//! the `use_serde` form of `sketches-ddsketch` 0.3), which any language (and DuckDB's JSON
//! functions) can read. An empty sketch has no encoding (its min and max are infinite, which JSON
//! cannot hold): write a null.

use std::fmt;

use sketches_ddsketch::{Config, DDSketch};

/// A sketch of RTT samples, microseconds.
#[derive(Clone)]
pub struct RttSketch(DDSketch);

/// A sketch that cannot be read or merged.
#[derive(Debug, thiserror::Error)]
pub enum SketchError {
    /// The bytes are not an encoded sketch.
    #[error("not an RTT sketch: {0}")]
    Decode(#[source] serde_json::Error),
    /// The sketch is empty (empty sketches are written as nulls).
    #[error("an empty RTT sketch (write a null instead)")]
    Empty,
    /// The two sketches were made with different parameters (relative accuracy, bins).
    #[error("RTT sketches with different parameters cannot be merged")]
    Mismatch,
}

impl RttSketch {
    /// An empty sketch with the crate's default parameters (1% relative accuracy, 2048 bins).
    pub fn new() -> Self {
        RttSketch(DDSketch::new(Config::defaults()))
    }

    /// Adds one sample, microseconds.
    pub fn add(&mut self, rtt_us: f64) {
        self.0.add(rtt_us);
    }

    /// The number of samples.
    pub fn count(&self) -> usize {
        self.0.count()
    }

    /// The `q` quantile (0 to 1) of the samples, microseconds; `None` when empty or `q` is out
    /// of range.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q).ok().flatten()
    }

    /// Adds `other`'s samples to this sketch.
    ///
    /// # Errors
    /// [`SketchError::Mismatch`] when the sketches have different parameters (this one is left
    /// unchanged).
    pub fn merge(&mut self, other: &RttSketch) -> Result<(), SketchError> {
        self.0.merge(&other.0).map_err(|_| SketchError::Mismatch)
    }

    /// The sketch as stored in the lake's `rtt_sketch` column; `None` for an empty sketch.
    pub fn encode(&self) -> Option<Vec<u8>> {
        if self.count() == 0 {
            return None;
        }
        serde_json::to_vec(&self.0).ok()
    }

    /// Reads [`RttSketch::encode`]'s bytes.
    ///
    /// # Errors
    /// [`SketchError::Decode`] for bytes that are not a sketch, [`SketchError::Empty`] for an
    /// empty one.
    pub fn decode(bytes: &[u8]) -> Result<Self, SketchError> {
        let sketch: DDSketch = serde_json::from_slice(bytes).map_err(SketchError::Decode)?;
        if sketch.count() == 0 {
            return Err(SketchError::Empty);
        }
        Ok(RttSketch(sketch))
    }
}

impl Default for RttSketch {
    fn default() -> Self {
        Self::new()
    }
}

impl From<DDSketch> for RttSketch {
    fn from(sketch: DDSketch) -> Self {
        RttSketch(sketch)
    }
}

impl fmt::Debug for RttSketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RttSketch")
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .finish()
    }
}

/// Two sketches are equal when they encode to the same bytes (same parameters and bins).
impl PartialEq for RttSketch {
    fn eq(&self, other: &Self) -> bool {
        serde_json::to_value(&self.0).ok() == serde_json::to_value(&other.0).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch(values: &[f64]) -> RttSketch {
        let mut s = RttSketch::new();
        values.iter().for_each(|v| s.add(*v));
        s
    }

    #[test]
    fn encoding_round_trips() {
        let s = sketch(&[120.0, 250.0, 250.0, 900.0, 15_000.0]);
        let bytes = s.encode().expect("a non-empty sketch encodes");
        let back = RttSketch::decode(&bytes).expect("decodes");
        assert_eq!(back, s);
        assert_eq!(back.count(), 5);
        assert_eq!(back.quantile(0.5), s.quantile(0.5));
    }

    #[test]
    fn empty_and_garbage_are_refused() {
        assert!(RttSketch::new().encode().is_none());
        assert!(matches!(RttSketch::decode(b"not json"), Err(SketchError::Decode(_))));
        assert!(matches!(RttSketch::decode(&[0x01, 0x02]), Err(SketchError::Decode(_))));
    }

    #[test]
    fn merged_quantiles_are_those_of_all_samples() {
        // 99 fast samples in one row, 1 slow sample in another: the merged p50 stays fast and
        // the merged p99+ sees the slow one, which no average of per-row quantiles would give.
        let mut a = sketch(&[100.0; 99]);
        let b = sketch(&[50_000.0]);
        a.merge(&b).expect("same parameters");
        assert_eq!(a.count(), 100);
        let p50 = a.quantile(0.5).expect("p50");
        assert!((p50 - 100.0).abs() <= 100.0 * 0.02, "p50 {p50}");
        let max = a.quantile(1.0).expect("max");
        assert!((max - 50_000.0).abs() <= 50_000.0 * 0.02, "max {max}");
    }

    #[test]
    fn sketches_with_other_parameters_do_not_merge() {
        let mut a = sketch(&[100.0]);
        let mut other = RttSketch::from(DDSketch::new(Config::new(0.05, 512, 1e-9)));
        other.add(100.0);
        assert!(matches!(a.merge(&other), Err(SketchError::Mismatch)));
        assert_eq!(a.count(), 1);
    }
}
