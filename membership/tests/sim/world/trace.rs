//! The event trace: every event the world notes goes into the seed's trace
//! hash (FNV-1a over the time and a numeric key), and, when asked, into a
//! text line; plus how the trace names a script action.

use std::cell::RefCell;
use std::rc::Rc;

use crate::sim::rng::{FNV_START, fnv1a};
use crate::sim::scenario::{Action, MS};

/// Where a kept trace goes; shared so a panicking run still leaves its trace.
pub type TraceLines = Rc<RefCell<Vec<String>>>;

/// The event trace: always hashed, kept as text only when asked.
#[derive(Debug)]
pub(super) struct Trace {
    hash: u64,
    lines: Option<TraceLines>,
}

impl Trace {
    pub(super) fn new(lines: Option<TraceLines>) -> Trace {
        Trace {
            hash: FNV_START,
            lines,
        }
    }

    /// The hash of every event noted so far.
    pub(super) fn hash(&self) -> u64 {
        self.hash
    }

    /// Notes one event at `now`: `now` and `key` go into the hash, `line`
    /// (built only when the trace is kept) into the text.
    pub(super) fn note(&mut self, now: u64, key: &[u64], line: impl FnOnce() -> String) {
        let mut h = fnv1a(self.hash, &now.to_le_bytes());
        for k in key {
            h = fnv1a(h, &k.to_le_bytes());
        }
        self.hash = h;
        if let Some(lines) = &self.lines {
            lines
                .borrow_mut()
                .push(format!("{:>10.3}ms {}", now as f64 / MS as f64, line()));
        }
    }
}

/// An action with node ids (`n1` is index 0) and group names as in the rest
/// of the trace.
pub(super) fn show(a: &Action) -> String {
    match a {
        Action::Multicast { node, group, count } => {
            format!("n{} multicasts {count} to g{group}", node + 1)
        }
        Action::Join { node, group } => format!("n{} joins g{group}", node + 1),
        Action::Leave { node, group } => format!("n{} leaves g{group}", node + 1),
        Action::LeaveCoordinator { group } => format!("the coordinator of g{group} leaves"),
        Action::Crash { node } => format!("n{} crashes", node + 1),
        Action::CrashCoordinator { group } => format!("the coordinator of g{group} crashes"),
        Action::Restart { node } => format!("n{} restarts", node + 1),
        Action::Partition { side } => {
            let cut: Vec<String> = (0..64)
                .filter(|i| side & (1 << i) != 0)
                .map(|i| format!("n{}", i + 1))
                .collect();
            format!("partition: {} | the rest", cut.join(" "))
        }
        Action::CutOneWay { side } => {
            let cut: Vec<String> = (0..64)
                .filter(|i| side & (1 << i) != 0)
                .map(|i| format!("n{}", i + 1))
                .collect();
            format!("one-way cut: {} -> the rest lost", cut.join(" "))
        }
        Action::CutLink { a, b } => format!("link cut: n{} - n{} (only)", a + 1, b + 1),
        Action::Flap {
            a,
            b,
            period,
            until,
        } => format!(
            "link n{}-n{} flaps every {:.1}ms until {:.1}ms",
            a + 1,
            b + 1,
            *period as f64 / MS as f64,
            *until as f64 / MS as f64
        ),
        Action::Pause { node, len } => {
            format!("n{} PAUSES for {:.1}ms", node + 1, *len as f64 / MS as f64)
        }
        Action::ArmFlushTrap {
            group,
            phase,
            target,
            down,
            window,
        } => format!(
            "flush trap on g{group}: crash the {target:?} in the {phase:?} phase (down {}ms, for {}ms)",
            down / MS,
            window / MS
        ),
        Action::RestartCoordinatorsOf { group } => {
            format!("the crashed coordinator of g{group} restarts")
        }
        Action::ArmPersistTrap { node, before, down } => format!(
            "persist trap on n{}: crash {} its next Persist (down {}ms)",
            node + 1,
            if *before {
                "before writing"
            } else {
                "right after writing"
            },
            down / MS
        ),
        Action::Heal => "heal".to_string(),
        Action::Upgrade { node, max, down } => format!(
            "n{} upgrades to max version {max} (down {}ms)",
            node + 1,
            down / MS
        ),
        Action::Adjust { node, group, to } => format!(
            "n{} adjusts {} to {}",
            node + 1,
            group.map_or("every group".to_string(), |g| format!("g{g}")),
            to.map_or("the highest common version".to_string(), |v| format!(
                "version {v}"
            ))
        ),
        Action::Batch { node, group, count } => {
            format!("n{} multicast_batch of {count} to g{group}", node + 1)
        }
    }
}
