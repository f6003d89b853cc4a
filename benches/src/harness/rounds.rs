//! Interleaved rounds: the cases run A B C A B C ..., so a figure and the
//! baseline it is compared with are measured seconds apart in every round, and
//! a slow spell of this shared machine hits one round of every case instead of
//! every round of one case.
//!
//! The schedule is round by round; within a round every size in order, and at
//! each size every case in order. [`run_interleaved`] runs it and files each
//! outcome under its case and size, in round order.

use serde::Serialize;

use crate::harness::stats::Spread;
use crate::harness::status::{Status, status_of};

/// Rounds when `--rounds` is not given (quick runs too).
pub const DEFAULT_ROUNDS: u32 = 3;

/// One run in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Round, from 0.
    pub round: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Case name.
    pub case: &'static str,
}

/// Every run, in the order they happen: rounds outermost, then sizes, then cases.
#[must_use]
pub fn schedule(rounds: usize, sizes: &[usize], cases: &[&'static str]) -> Vec<Slot> {
    let mut slots = Vec::with_capacity(rounds * sizes.len() * cases.len());
    for round in 0..rounds {
        for &size in sizes {
            for &case in cases {
                slots.push(Slot { round, size, case });
            }
        }
    }
    slots
}

/// What every report row says before its figures: the case, the size, and
/// how its rounds went. Flattened into each row's JSON.
#[derive(Debug, Clone, Serialize)]
pub struct RowHead {
    /// Case name.
    pub name: String,
    /// Message (payload) size in bytes.
    pub size: usize,
    /// Outcome: `failed` if any round failed.
    pub status: Status,
    /// Why it is unavailable or failed, and in which rounds.
    pub error: Option<String>,
    /// Rounds run.
    pub rounds: usize,
    /// Rounds that measured.
    pub rounds_ok: usize,
}

/// Every round's outcome of one case at one size, in round order.
#[derive(Debug)]
pub struct CaseRounds<T> {
    /// Case name.
    pub name: &'static str,
    /// Message size in bytes.
    pub size: usize,
    /// One outcome per round.
    pub outcomes: Vec<anyhow::Result<T>>,
}

impl<T> CaseRounds<T> {
    /// The row head of this case's report row.
    #[must_use]
    pub fn head(&self) -> RowHead {
        RowHead {
            name: self.name.to_string(),
            size: self.size,
            status: self.status(),
            error: self.error(),
            rounds: self.outcomes.len(),
            rounds_ok: self.rounds_ok(),
        }
    }

    /// `failed` if any round failed, else `unavailable` if any round was,
    /// else `ok`.
    #[must_use]
    pub fn status(&self) -> Status {
        let statuses = self.statuses();
        if statuses.contains(&Status::Failed) {
            Status::Failed
        } else if statuses.contains(&Status::Unavailable) {
            Status::Unavailable
        } else {
            Status::Ok
        }
    }

    fn statuses(&self) -> Vec<Status> {
        self.outcomes
            .iter()
            .map(|o| o.as_ref().map_or_else(status_of, |_| Status::Ok))
            .collect()
    }

    /// Why the case is not `ok`: the error of the first round with the case's
    /// status, and which rounds did not measure (`(rounds 1, 3 of 3)`).
    #[must_use]
    pub fn error(&self) -> Option<String> {
        let status = self.status();
        let first = self
            .outcomes
            .iter()
            .filter_map(|o| o.as_ref().err())
            .find(|e| status_of(e) == status)?;
        let bad: Vec<String> = self
            .outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_err())
            .map(|(r, _)| (r + 1).to_string())
            .collect();
        let which = if bad.len() == 1 { "round" } else { "rounds" };
        Some(format!(
            "{first:#} ({which} {} of {})",
            bad.join(", "),
            self.outcomes.len()
        ))
    }

    /// Rounds that measured.
    #[must_use]
    pub fn rounds_ok(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_ok()).count()
    }

    /// The measured results, in round order.
    pub fn ok(&self) -> impl Iterator<Item = &T> {
        self.outcomes.iter().filter_map(|o| o.as_ref().ok())
    }

    /// `figure` of every round (null where the round failed).
    pub fn per_round(&self, figure: impl Fn(&T) -> Option<f64>) -> Vec<Option<f64>> {
        self.outcomes
            .iter()
            .map(|o| o.as_ref().ok().and_then(&figure))
            .collect()
    }

    /// Median and spread of `figure` over the rounds that measured it.
    pub fn spread(&self, figure: impl Fn(&T) -> Option<f64>) -> Option<Spread> {
        Spread::of(self.per_round(figure))
    }
}

/// Runs `run` once per slot of [`schedule`], in that order, and returns one
/// [`CaseRounds`] per size and case (sizes outer, cases inner, as given).
pub fn run_interleaved<T>(
    rounds: usize,
    sizes: &[usize],
    cases: &[&'static str],
    mut run: impl FnMut(Slot) -> anyhow::Result<T>,
) -> Vec<CaseRounds<T>> {
    let mut out: Vec<CaseRounds<T>> = sizes
        .iter()
        .flat_map(|&size| {
            cases.iter().map(move |&name| CaseRounds {
                name,
                size,
                outcomes: Vec::with_capacity(rounds),
            })
        })
        .collect();
    for slot in schedule(rounds, sizes, cases) {
        let outcome = run(slot);
        if let Some(c) = out
            .iter_mut()
            .find(|c| c.name == slot.case && c.size == slot.size)
        {
            c.outcomes.push(outcome);
        }
    }
    out
}

/// Per round, `a / b` where both are present and `b` is positive.
#[must_use]
pub fn ratios(a: &[Option<f64>], b: &[Option<f64>]) -> Vec<Option<f64>> {
    a.iter()
        .zip(b)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) if *b > 0.0 => Some(a / b),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::status::Unavailable;

    #[test]
    fn schedule_interleaves_cases_round_by_round() {
        let order: Vec<(usize, usize, &str)> = schedule(2, &[64, 4096], &["a", "b"])
            .into_iter()
            .map(|s| (s.round, s.size, s.case))
            .collect();
        assert_eq!(
            order,
            vec![
                (0, 64, "a"),
                (0, 64, "b"),
                (0, 4096, "a"),
                (0, 4096, "b"),
                (1, 64, "a"),
                (1, 64, "b"),
                (1, 4096, "a"),
                (1, 4096, "b"),
            ]
        );
    }

    #[test]
    fn outcomes_are_filed_by_case_and_size_in_round_order() {
        let mut ran = Vec::new();
        let rows = run_interleaved(3, &[8], &["a", "b"], |s| {
            ran.push(s.case);
            if s.case == "b" && s.round == 1 {
                anyhow::bail!("flaky");
            }
            Ok(s.round as f64 * 10.0 + if s.case == "a" { 1.0 } else { 2.0 })
        });
        assert_eq!(ran, vec!["a", "b", "a", "b", "a", "b"]);
        assert_eq!(rows.len(), 2);
        let (a, b) = (&rows[0], &rows[1]);
        assert_eq!((a.name, b.name), ("a", "b"));
        assert_eq!(a.status(), Status::Ok);
        assert_eq!(a.error(), None);
        assert_eq!(
            a.per_round(|v| Some(*v)),
            vec![Some(1.0), Some(11.0), Some(21.0)]
        );
        assert_eq!(b.status(), Status::Failed);
        assert_eq!(b.rounds_ok(), 2);
        assert_eq!(b.error().unwrap(), "flaky (round 2 of 3)");
        let s = b.spread(|v| Some(*v)).unwrap();
        assert_eq!((s.median, s.min, s.max), (12.0, 2.0, 22.0));
        assert_eq!(s.values, vec![Some(2.0), None, Some(22.0)]);
        let r = ratios(&b.per_round(|v| Some(*v)), &a.per_round(|v| Some(*v)));
        assert_eq!(r, vec![Some(2.0), None, Some(22.0 / 21.0)]);
    }

    #[test]
    fn a_failure_outranks_unavailable() {
        let rows = run_interleaved(2, &[8], &["c"], |s| -> anyhow::Result<()> {
            if s.round == 0 {
                Err(anyhow::Error::new(Unavailable { reason: "no" }))
            } else {
                anyhow::bail!("broke")
            }
        });
        assert_eq!(rows[0].status(), Status::Failed);
        assert_eq!(rows[0].error().unwrap(), "broke (rounds 1, 2 of 2)");
        assert!(rows[0].spread(|()| Some(1.0)).is_none());
    }
}
