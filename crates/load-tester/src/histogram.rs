//! [`LatencyHistogram`]: an HDR histogram of latencies in microseconds that
//! serialises to JSON and merges exactly.
//!
//! Exactness matters because shards run on different machines and
//! `load-tester merge` must give the histogram one big run would have given.
//! The JSON form lists every non-empty bucket as `[value_us, count]`, where
//! `value_us` is the highest value the bucket holds; recording that value
//! again lands in the same bucket, so read-back and merge lose nothing.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Smallest trackable latency: 1 µs.
const LOWEST_US: u64 = 1;
/// Largest trackable latency: 1 hour; longer values are clamped to it.
const HIGHEST_US: u64 = 3_600_000_000;
/// Significant decimal digits kept: 3 (values are exact to 0.1 %).
const SIGFIG: u8 = 3;

/// Latencies in microseconds, 1 µs to 1 h at 3 significant digits.
#[derive(Clone, PartialEq)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .field("p50_us", &self.percentile_us(50.0))
            .field("max_us", &self.max_us())
            .finish()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts; the fallback
        // only exists so that this can never panic.
        let inner = Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
            .or_else(|_| Histogram::new(SIGFIG))
            .unwrap_or_else(|_| unreachable_histogram());
        LatencyHistogram { inner }
    }

    /// Records one latency; values outside 1 µs..1 h are clamped.
    pub fn record(&mut self, latency: Duration) {
        self.record_us(u64::try_from(latency.as_micros()).unwrap_or(HIGHEST_US));
    }

    /// Records one latency in microseconds (clamped to 1 µs..1 h).
    pub fn record_us(&mut self, us: u64) {
        self.record_n_us(us, 1);
    }

    fn record_n_us(&mut self, us: u64, count: u64) {
        let us = us.clamp(LOWEST_US, HIGHEST_US);
        // In range by construction; saturating keeps it panic-free anyway.
        let _ = self.inner.record_n(us, count);
    }

    /// Adds every sample of `other`: the result is the histogram of both
    /// sample sets, bucket for bucket.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for bucket in other.inner.iter_recorded() {
            self.record_n_us(bucket.value_iterated_to(), bucket.count_at_value());
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The latency at percentile `p` (0..=100) in microseconds; 0 when empty.
    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.is_empty() { 0 } else { self.inner.value_at_percentile(p.clamp(0.0, 100.0)) }
    }

    /// The latency at percentile `p` in milliseconds; NaN when empty.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.is_empty() { f64::NAN } else { self.percentile_us(p) as f64 / 1000.0 }
    }

    /// Largest sample in microseconds (the bucket's highest equivalent value).
    pub fn max_us(&self) -> u64 {
        if self.is_empty() { 0 } else { self.inner.max() }
    }

    /// Mean in milliseconds; NaN when empty.
    pub fn mean_ms(&self) -> f64 {
        if self.is_empty() { f64::NAN } else { self.inner.mean() / 1000.0 }
    }

    /// Every non-empty bucket as `(highest value in µs, count)`, ascending.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.inner.iter_recorded().map(|b| (b.value_iterated_to(), b.count_at_value())).collect()
    }

    /// Builds a histogram from [`buckets`](Self::buckets).
    pub fn from_buckets(buckets: &[(u64, u64)]) -> Self {
        let mut h = LatencyHistogram::new();
        for &(us, count) in buckets {
            h.record_n_us(us, count);
        }
        h
    }
}

/// Never reached: `Histogram::new(3)` only fails for sigfig > 5.
fn unreachable_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new(2).expect("a 2-digit histogram always builds")
}

#[derive(Serialize, Deserialize)]
struct Wire {
    /// Unit of the bucket values.
    unit: String,
    /// Samples, for a quick look and an integrity check on read.
    count: u64,
    /// `[highest value of the bucket, samples in it]`.
    buckets: Vec<(u64, u64)>,
}

impl Serialize for LatencyHistogram {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire { unit: "us".to_owned(), count: self.count(), buckets: self.buckets() }
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for LatencyHistogram {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        if wire.unit != "us" {
            return Err(D::Error::custom(format!(
                "histogram unit {:?} is not supported (expected \"us\")",
                wire.unit
            )));
        }
        let h = LatencyHistogram::from_buckets(&wire.buckets);
        if h.count() != wire.count {
            return Err(D::Error::custom(format!(
                "histogram says it holds {} samples but its buckets hold {}: the file is damaged",
                wire.count,
                h.count()
            )));
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_a_tenth_of_a_percent() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 1000);
        let p95 = h.percentile_ms(95.0);
        assert!((p95 - 950.0).abs() <= 1.0, "{p95}");
        assert!((h.max_us() as f64 - 1_000_000.0).abs() <= 1000.0);
    }

    #[test]
    fn json_round_trip_is_exact() {
        let mut h = LatencyHistogram::new();
        for us in [1, 7, 999, 1_234_567, 9_999_999_999] {
            h.record_us(us);
        }
        let json = serde_json::to_string(&h).unwrap_or_default();
        let back: LatencyHistogram = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, h);
    }

    #[test]
    fn a_damaged_count_is_refused() {
        let bad = r#"{"unit":"us","count":3,"buckets":[[10,1]]}"#;
        let err = serde_json::from_str::<LatencyHistogram>(bad).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
