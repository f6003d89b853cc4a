//! Latency recording (hdrhistogram) and its summary.

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Highest latency a histogram can hold: one minute. Anything slower is clamped
/// (and a one-minute round trip on loopback means the bench is broken anyway).
pub const MAX_TRACKABLE_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds whose whole range is allocated up front,
/// so recording into it inside a measured loop never touches the heap.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
}

impl LatencyHistogram {
    /// 1 ns .. [`MAX_TRACKABLE_NS`] at 3 significant digits (about 300 KiB).
    pub fn new() -> anyhow::Result<Self> {
        let hist = Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, 3)
            .context("creating latency histogram")?;
        Ok(Self { hist })
    }

    /// Records one sample; clamps to the trackable range instead of failing.
    #[inline]
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(ns);
    }

    /// Number of samples.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// No samples yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The percentiles every report shows.
    #[must_use]
    pub fn summary(&self) -> Summary {
        Summary::from_histogram(&self.hist)
    }
}

/// Percentiles of one latency distribution, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Smallest sample.
    pub min_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest sample.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: f64,
}

impl Summary {
    /// Summarises a histogram of nanosecond samples.
    #[must_use]
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Summary {
                count: 0,
                min_ns: 0,
                p50_ns: 0,
                p99_ns: 0,
                p999_ns: 0,
                max_ns: 0,
                mean_ns: 0.0,
            };
        }
        Summary {
            count: h.len(),
            min_ns: h.min(),
            p50_ns: h.value_at_quantile(0.50),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            mean_ns: h.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles_are_ordered_and_counted() {
        let mut h = LatencyHistogram::new().unwrap();
        for i in 1..=1000u64 {
            h.record(Duration::from_nanos(i * 1000));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!(s.min_ns <= s.p50_ns && s.p50_ns <= s.p99_ns);
        assert!(s.p99_ns <= s.p999_ns && s.p999_ns <= s.max_ns);
        // 3 significant digits: within 0.1% of the true value.
        assert!(s.p50_ns.abs_diff(500_000) <= 500, "{}", s.p50_ns);
        assert!(s.p99_ns.abs_diff(990_000) <= 990, "{}", s.p99_ns);
        assert!(s.max_ns.abs_diff(1_000_000) <= 1000, "{}", s.max_ns);
    }

    #[test]
    fn out_of_range_is_clamped_not_lost() {
        let mut h = LatencyHistogram::new().unwrap();
        h.record(Duration::from_secs(3600));
        h.record(Duration::ZERO);
        assert_eq!(h.len(), 2);
        let s = h.summary();
        assert!(s.max_ns >= MAX_TRACKABLE_NS - MAX_TRACKABLE_NS / 1000);
        assert_eq!(s.min_ns, 1);
    }

    #[test]
    fn recording_does_not_allocate() {
        let mut h = LatencyHistogram::new().unwrap();
        let before = concord_runtime::alloc::thread_allocs();
        for i in 0..10_000u64 {
            h.record(Duration::from_nanos(
                i.wrapping_mul(7919) % MAX_TRACKABLE_NS,
            ));
        }
        assert_eq!(concord_runtime::alloc::thread_allocs(), before);
    }

    #[test]
    fn summary_json_shape() {
        let mut h = LatencyHistogram::new().unwrap();
        h.record(Duration::from_micros(5));
        let v = serde_json::to_value(h.summary()).unwrap();
        let obj = v.as_object().unwrap();
        for key in [
            "count", "min_ns", "p50_ns", "p99_ns", "p999_ns", "max_ns", "mean_ns",
        ] {
            assert!(obj.contains_key(key), "missing {key}");
        }
        assert_eq!(obj["count"], 1);
        assert!(obj["p50_ns"].as_u64().unwrap().abs_diff(5000) <= 5);
    }
}
