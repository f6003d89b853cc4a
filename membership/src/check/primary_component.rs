//! Primary component: a member cut off in a minority stops delivering, and
//! nothing is delivered outside a view the node belongs to.
//!
//! Source: the primary-partition model (Ricciardi and Birman, PODC 1991;
//! Chockler et al. 2001, section 2.3): only a component holding a strict
//! majority of the configured nodes continues. A minority member that kept
//! delivering would hand its application messages the primary never ordered
//! (or ordered differently), which nothing can undo after the heal.
//!
//! Checked, per incarnation and group: after `Partitioned`, or after a view
//! that excludes the node, and before the first view that includes it, the
//! node delivers nothing. It may deliver again once a view that includes it is
//! installed (it rejoined the primary as a new member).

use super::{Invariant, Logs, Violation, groups, stints};

/// Checks that nothing is delivered outside primary membership.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    for group in groups(logs) {
        for log in &logs.nodes {
            let (_, stray) = stints(log, group);
            if let Some(d) = stray.first() {
                return Err(Violation::new(
                    Invariant::PrimaryComponent,
                    format!(
                        "delivered seq {} (n{} sender_seq {}) at t={} while not a member of any primary view \
                         (before its first view, after Partitioned, or after being removed)",
                        d.seq, d.sender, d.sender_seq, d.at
                    ),
                )
                .member(log.member())
                .group(group)
                .view(d.view));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Event, Invariant, Reason};
    use super::check;

    #[test]
    fn healthy_passes() {
        assert_eq!(check(&healthy()), Ok(()));
    }

    #[test]
    fn delivering_after_partitioned_is_caught() {
        let mut logs = healthy();
        logs.nodes[2]
            .events
            .insert(2, Event::Partitioned { at: 100, group: G });
        let v = check(&logs).unwrap_err();
        assert_eq!(v.invariant, Invariant::PrimaryComponent);
        assert_eq!(v.member.map(|m| m.node), Some(3));
    }

    #[test]
    fn delivering_before_any_view_is_caught() {
        let mut logs = healthy();
        logs.nodes[0].events.remove(0);
        assert!(check(&logs).is_err());
    }

    #[test]
    fn delivering_again_after_rejoining_is_fine() {
        let mut logs = healthy();
        let ev = &mut logs.nodes[2].events;
        ev.truncate(2);
        ev.push(Event::Partitioned { at: 150, group: G });
        ev.push(view(300, 3, &[1, 2, 3], Reason::Join(3)));
        ev.push(deliver(301, 3, 1, 1, 2));
        assert_eq!(check(&logs), Ok(()));
    }

    #[test]
    fn delivering_after_being_removed_is_caught() {
        let mut logs = healthy();
        logs.nodes[2]
            .events
            .insert(2, view(100, 2, &[1, 2], Reason::Failed(vec![3])));
        assert!(check(&logs).is_err());
    }
}
