//! Safe delivery is uniform: a message that any member delivered in Safe
//! mode in a view is delivered in that view by every member that passes
//! from it to the next view.
//!
//! Source: "safe" (uniform) delivery in the Extended Virtual Synchrony model
//! (Moser, Amir, Melliar-Smith and Agarwal, "Extended Virtual Synchrony",
//! ICDCS 1994, specification 7; Chockler et al. 2001, section 8.1, "safe
//! indications"). A Safe delivery waits until every member of the view holds
//! the message, so the member that delivered it may crash or be cut off
//! right after: whoever continues still holds it, and the flush must carry
//! it over. Without this rule Safe mode promises nothing beyond Agreed, and
//! an application that acted on a Safe delivery (answered a client, wrote to
//! disk) acted on something the survivors never saw.
//!
//! Unlike [`super::virtual_synchrony`], which compares members that moved to
//! the *same* next view, this counts the deliveries of every member of the
//! view, including one that crashed or lost the primary in it. A message a
//! survivor delivered in an earlier stint of its membership counts as
//! delivered (it is not handed over twice, see `Stint::earlier`).

use std::collections::{BTreeMap, BTreeSet};

use super::{Digest, Invariant, Logs, Member, Mode, ViewNo, Violation, groups, stints};

/// Checks that every Safe delivery of a view reached every member that
/// passed from the view to the next.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    for group in groups(logs) {
        // view -> digest -> who delivered it in Safe mode
        let mut safe: BTreeMap<ViewNo, BTreeMap<Digest, Member>> = BTreeMap::new();
        // view -> (member, next view, delivered in the view or earlier)
        let mut passed: BTreeMap<ViewNo, Vec<(Member, ViewNo, BTreeSet<Digest>)>> = BTreeMap::new();
        for log in &logs.nodes {
            for stint in stints(log, group).0 {
                for (v, ds) in &stint.views {
                    for d in ds.iter().filter(|d| d.mode == Mode::Safe) {
                        safe.entry(v.view)
                            .or_default()
                            .entry(d.digest)
                            .or_insert(log.member());
                    }
                }
                for pair in stint.views.windows(2) {
                    let (v, ds) = &pair[0];
                    let mut have: BTreeSet<Digest> = ds.iter().map(|d| d.digest).collect();
                    have.extend(stint.earlier.iter().copied());
                    passed
                        .entry(v.view)
                        .or_default()
                        .push((log.member(), pair[1].0.view, have));
                }
            }
        }
        for (view, delivered) in &safe {
            for (member, next, have) in passed.get(view).into_iter().flatten() {
                if let Some((digest, by)) = delivered.iter().find(|(d, _)| !have.contains(d)) {
                    return Err(Violation::new(
                        Invariant::SafeDelivery,
                        format!(
                            "{by} delivered message {digest:#x} in Safe mode in view {view}, but {member} \
                             passed from view {view} to view {next} without delivering it"
                        ),
                    )
                    .member(*member)
                    .group(group)
                    .view(*view));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Event, Invariant, Logs, Mode, Reason};
    use super::check;

    /// `healthy` in Safe mode; node 3 crashes after delivering everything,
    /// nodes 1 and 2 move on without it.
    fn safe_then_failure() -> Logs {
        let mut logs = healthy();
        for l in &mut logs.nodes {
            for e in &mut l.events {
                if let Event::Delivery(d) = e {
                    d.mode = Mode::Safe;
                }
            }
        }
        logs.nodes[2].crashed = true;
        for l in &mut logs.nodes[..2] {
            l.events
                .push(view(500, 2, &[1, 2], Reason::Failed(vec![3])));
        }
        logs
    }

    #[test]
    fn uniform_safe_delivery_passes() {
        assert_eq!(check(&safe_then_failure()), Ok(()));
        assert_eq!(check(&healthy()), Ok(()));
    }

    #[test]
    fn a_safe_delivery_only_the_crashed_member_made_is_caught() {
        let mut logs = safe_then_failure();
        // nodes 1 and 2 never delivered seq 3, which node 3 delivered Safe
        // before it crashed; both moved to view 2 (they agree with each
        // other, so virtual synchrony alone is satisfied).
        for l in &mut logs.nodes[..2] {
            l.events.remove(3);
        }
        let v = check(&logs).unwrap_err();
        assert_eq!(v.invariant, Invariant::SafeDelivery);
        assert!(v.detail.contains("n3#0 delivered"), "{v}");
        assert_eq!(
            super::super::virtual_synchrony::check(&logs),
            Ok(()),
            "the test should isolate what only this checker sees"
        );
    }

    #[test]
    fn the_same_loss_in_agreed_mode_is_not_this_checkers_business() {
        let mut logs = safe_then_failure();
        for l in &mut logs.nodes {
            for e in &mut l.events {
                if let Event::Delivery(d) = e {
                    d.mode = Mode::Agreed;
                }
            }
        }
        for l in &mut logs.nodes[..2] {
            l.events.remove(3);
        }
        assert_eq!(check(&logs), Ok(()));
    }
}
