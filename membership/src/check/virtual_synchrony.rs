//! Virtual synchrony: members that pass from view V to the same next view
//! delivered the same set of messages in V.
//!
//! Source: Birman and Joseph, SOSP 1987, and the "virtual synchrony" property
//! of Chockler et al. 2001 (property 4.2, "same view delivery" with
//! "virtual synchrony"). It is what the flush of a view change buys: survivors
//! agree which old-view messages to deliver and fetch what they lack, so an
//! application can treat a view change as a consistent cut. Without it, two
//! replicas that continue together disagree on what happened before the change.
//!
//! A node "passes from V to W" when it installs W right after V without losing
//! membership in between (no `Partitioned` event). W may exclude the node (a
//! graceful leave, or a view announcing its own removal); it still passed
//! through V's end with the others.
//!
//! A message the member delivered in an earlier stint of its membership
//! counts as delivered in V if another member delivered it in V (see
//! `Stint::earlier`: it is not handed over twice).

use std::collections::{BTreeMap, BTreeSet};

use super::{Digest, Group, Invariant, Logs, Member, ViewNo, Violation, groups, stints};

/// A member that passed from one view to the next, what it delivered in the
/// first, and what it delivered in earlier stints.
type Passed = (Member, BTreeSet<Digest>, BTreeSet<Digest>);

/// Checks virtual synchrony for every view transition seen in the logs.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    for group in groups(logs) {
        // (V, W) -> member -> digests delivered in V
        let mut passed: BTreeMap<(ViewNo, ViewNo), Vec<Passed>> = BTreeMap::new();
        for log in &logs.nodes {
            let (runs, _) = stints(log, group);
            for stint in runs {
                for pair in stint.views.windows(2) {
                    let (v, ds) = &pair[0];
                    let (w, _) = &pair[1];
                    passed.entry((v.view, w.view)).or_default().push((
                        log.member(),
                        ds.iter().map(|d| d.digest).collect(),
                        stint.earlier.clone(),
                    ));
                }
            }
        }
        for ((v, w), members) in &mut passed {
            let all: BTreeSet<Digest> = members
                .iter()
                .flat_map(|(_, set, _)| set.iter().copied())
                .collect();
            for (_, set, earlier) in members.iter_mut() {
                set.extend(earlier.intersection(&all).copied());
            }
            compare(group, *v, *w, members)?;
        }
    }
    Ok(())
}

fn compare(group: Group, v: ViewNo, w: ViewNo, members: &[Passed]) -> Result<(), Violation> {
    let Some((first, first_set, _)) = members.first() else {
        return Ok(());
    };
    for (m, set, _) in &members[1..] {
        if set != first_set {
            let only_first: Vec<_> = first_set
                .difference(set)
                .take(3)
                .map(|d| format!("{d:#x}"))
                .collect();
            let only_m: Vec<_> = set
                .difference(first_set)
                .take(3)
                .map(|d| format!("{d:#x}"))
                .collect();
            return Err(Violation::new(
                Invariant::VirtualSynchrony,
                format!(
                    "{first} and {m} both passed from view {v} to view {w} but delivered different sets in view {v} \
                     ({} vs {} messages; only {first}: [{}]; only {m}: [{}])",
                    first_set.len(),
                    set.len(),
                    only_first.join(", "),
                    only_m.join(", ")
                ),
            )
            .member(*m)
            .group(group)
            .view(v));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Event, Invariant, Reason};
    use super::check;

    fn with_failure_of_3() -> super::super::Logs {
        let mut logs = healthy();
        logs.nodes[2].crashed = true;
        for l in &mut logs.nodes[..2] {
            l.events
                .push(view(500, 2, &[1, 2], Reason::Failed(vec![3])));
        }
        logs
    }

    #[test]
    fn same_sets_pass() {
        assert_eq!(check(&with_failure_of_3()), Ok(()));
    }

    #[test]
    fn a_survivor_missing_a_message_is_caught() {
        let mut logs = with_failure_of_3();
        // node 2 never delivered seq 3 of view 1 but moved to view 2 with node 1
        logs.nodes[1].events.remove(3);
        let v = check(&logs).unwrap_err();
        assert_eq!(v.invariant, Invariant::VirtualSynchrony);
        assert_eq!(v.view, Some(1));
        assert!(v.detail.contains("from view 1 to view 2"), "{v}");
    }

    #[test]
    fn the_crashed_member_may_have_delivered_less() {
        let mut logs = with_failure_of_3();
        logs.nodes[2].events.truncate(2);
        assert_eq!(check(&logs), Ok(()));
    }

    #[test]
    fn a_graceful_leaver_must_match_too() {
        let mut logs = healthy();
        for l in &mut logs.nodes {
            l.events.push(view(500, 2, &[1, 2], Reason::Leave(3)));
        }
        assert_eq!(check(&logs), Ok(()));
        logs.nodes[2].events.remove(1);
        assert!(check(&logs).is_err());
    }

    #[test]
    fn a_partitioned_member_did_not_pass_through() {
        let mut logs = with_failure_of_3();
        logs.nodes[2].crashed = false;
        logs.nodes[2].events.truncate(2);
        logs.nodes[2]
            .events
            .push(Event::Partitioned { at: 450, group: G });
        logs.nodes[2]
            .events
            .push(view(600, 3, &[1, 2, 3], Reason::Join(3)));
        assert_eq!(check(&logs), Ok(()));
    }

    #[test]
    fn a_rejoined_member_counts_what_it_delivered_before_the_partition() {
        let mut logs = with_failure_of_3();
        // node 3 was cut off after delivering n1's sender_seq 2 in view 1
        // (beyond the cut); nodes 1 and 2 deliver it again in view 3, which
        // node 3 joined; all three move on to view 4.
        logs.nodes[2].crashed = false;
        logs.nodes[2]
            .events
            .push(Event::Partitioned { at: 450, group: G });
        for l in &mut logs.nodes[..2] {
            l.events.truncate(3);
            l.events
                .push(view(500, 2, &[1, 2], Reason::Failed(vec![3])));
        }
        for l in &mut logs.nodes {
            l.events.push(view(600, 3, &[1, 2, 3], Reason::Merged));
        }
        for l in &mut logs.nodes[..2] {
            l.events.push(deliver(601, 3, 5, 1, 2));
        }
        for l in &mut logs.nodes {
            l.events.push(view(700, 4, &[1, 2, 3], Reason::Join(3)));
        }
        assert_eq!(check(&logs), Ok(()));
        // ...but a message it never delivered is not excused
        for l in &mut logs.nodes[..2] {
            l.events.insert(6, deliver(602, 3, 6, 2, 2));
        }
        assert!(check(&logs).is_err());
    }
}
