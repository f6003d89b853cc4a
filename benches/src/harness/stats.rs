//! Medians and spreads over rounds.
//!
//! Every figure a report shows is the median over the rounds that measured
//! it, next to its spread (the smallest and largest round) and the value of
//! each round. The median of an even count is the mean of the middle two.

use serde::Serialize;

/// The median of `values`; `None` when there are none.
#[must_use]
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// One figure over the rounds: median, spread, and the value of each round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    /// Median over the rounds that have a value.
    pub median: f64,
    /// Smallest round.
    pub min: f64,
    /// Largest round.
    pub max: f64,
    /// One entry per round, in the order they ran; null where that round has
    /// no value (it failed, or a figure it needs is missing).
    pub values: Vec<Option<f64>>,
}

impl Spread {
    /// Summarises per-round values; `None` when no round has a value.
    #[must_use]
    pub fn of(values: Vec<Option<f64>>) -> Option<Spread> {
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        let median = median(&present)?;
        let min = present.iter().copied().fold(f64::INFINITY, f64::min);
        let max = present.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Spread {
            median,
            min,
            max,
            values,
        })
    }

    /// `median (min..max)` with `digits` decimals, each value scaled by `scale`.
    #[must_use]
    pub fn show(&self, scale: f64, digits: usize) -> String {
        format!(
            "{:.d$} ({:.d$}..{:.d$})",
            self.median * scale,
            self.min * scale,
            self.max * scale,
            d = digits
        )
    }
}

/// The median of `spread` as an integer figure (nanoseconds, counts).
#[must_use]
pub fn median_u64(spread: Option<&Spread>) -> Option<u64> {
    spread.map(|s| s.median.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[4.0]), Some(4.0));
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn spread_skips_missing_rounds_but_keeps_their_place() {
        let s = Spread::of(vec![Some(3.0), None, Some(1.0), Some(2.0)]).unwrap();
        assert_eq!(s.median, 2.0);
        assert_eq!((s.min, s.max), (1.0, 3.0));
        assert_eq!(s.values, vec![Some(3.0), None, Some(1.0), Some(2.0)]);
        assert_eq!(s.show(1.0, 1), "2.0 (1.0..3.0)");
        assert!(Spread::of(vec![None, None]).is_none());
        assert_eq!(median_u64(Some(&s)), Some(2));
        assert_eq!(median_u64(None), None);
    }
}
