//! The ordering invariants of one [`Group`], checked (debug and test builds
//! only): [`Group::validate`] names the first one that does not hold.
//!
//! Each is a relation the code maintains after every event, for a member
//! and for a node that is (re)joining alike. The checks cost O(1) or
//! O(members + senders + pending entries): the ring is sampled at the
//! positions the relations are about (its first position, the next one to
//! deliver, the ready point and the one after it), never walked.
//!
//! The sender-index hint (`buf_hint`) is not among them: it is checked
//! against the node and incarnation before every use, and it may point past
//! the end of `senders` after buffers are dropped (a rejoin, an install).
#![cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "called by the Engine's debug checks and the tests"
    )
)]

use std::fmt;

use super::ring::{MAX_AHEAD, Slot};
use super::{Group, Phase};
use crate::message::SenderNext;
use crate::types::{NodeId, Payload};

/// An ordering invariant of a [`Group`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invariant {
    /// `base <= delivered + 1`: the ring releases only delivered positions.
    RingStartsPastDelivered,
    /// `base <= stable + 1`: the ring releases only stable positions.
    ReleasedPastStable,
    /// `delivered <= ready`: only positions held in full are delivered.
    DeliveredPastReady,
    /// `delivered <= cap`: nothing is delivered past a flush's cap.
    DeliveredPastCap,
    /// `ready < base + slots.len()`: the ready point is a position of the
    /// ring, or the one right before it.
    ReadyPastRing,
    /// `base + slots.len() <= hi_seen + 1`: the ring holds no position
    /// above the highest one known to exist.
    RingPastHiSeen,
    /// `slots.len() <= MAX_AHEAD`.
    RingTooLong,
    /// A member's `stable <= ready`: the stable point is what every member,
    /// this one too, holds.
    StablePastReady,
    /// `last_ack_sent <= ready`: an ack claims only what is held.
    AckPastReady,
    /// Every position of `base..=ready` holds its entry (sampled).
    ReadyPositionMissing,
    /// Every data position of `delivered + 1..=ready` holds its payload
    /// (sampled).
    ReadyPayloadMissing,
    /// `ready` is as far as it goes: position `ready + 1` lacks its entry
    /// or its payload (every event that adds either advances `ready`).
    ReadyBehind,
    /// A node has at most one sender buffer (the hinted lookups rely on it).
    DuplicateSenderBuf,
    /// `next` lists a node at most once (`set_next_at` relies on it).
    DuplicateNext,
    /// `delivered_hi` lists a node at most once (`mark_delivered_at` relies
    /// on it).
    DuplicateDeliveredHi,
    /// A member's view and incarnations have the same length.
    IncarnationsMismatch,
    /// A joining node holds no order: an empty ring, `hi_seen`, `stable`
    /// and `ready` at `delivered`, no sequencer role, no install waiting.
    JoiningHoldsOrder,
    /// A waiting install or accept is of the next epoch.
    PendingEpochMismatch,
    /// The sequencer's view and incarnations have the same length.
    SequencerIncarnationsMismatch,
    /// `seq.stable <= ack` of every member it waits for: the stable point
    /// never passes what a member acknowledged.
    StablePastAck,
    /// `seq.stable <= stable`: the member knows the stable point it set.
    SequencerStablePastMember,
    /// `seq.published_stable <= seq.stable`.
    PublishedPastStable,
    /// The pending entries cover `pending_first..seq.next_pos` exactly.
    PendingMismatch,
    /// An active sequencer's ordering view has the coordinator of the
    /// member's view as its coordinator too.
    SequencerNotCoordinator,
    /// An active sequencer's `hi_seen + 1 == next_pos`: nobody else
    /// assigns positions, and it knows every one it assigned.
    HiSeenNotNextPosition,
    /// An active sequencer waits for an ack of every member of its view.
    AckMissing,
    /// An active sequencer waits only for members and departing leavers.
    AckStray,
    /// An active sequencer's departing leavers are out of its view.
    DepartingMember,
    /// An active sequencer's joiners waiting for a Welcome, and members
    /// waiting to leave, are in its view.
    NotInView,
}

/// A violated [`Invariant`], with the values that break it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    pub invariant: Invariant,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.invariant, self.detail)
    }
}

/// `Err` naming `invariant` unless `holds`; `detail` runs only on failure.
#[inline]
fn check(
    holds: bool,
    invariant: Invariant,
    detail: impl FnOnce() -> String,
) -> Result<(), Violation> {
    if holds {
        Ok(())
    } else {
        Err(Violation {
            invariant,
            detail: detail(),
        })
    }
}

/// A node that `items` name more than once (short lists: pairwise).
fn duplicate<T>(items: &[T], node: impl Fn(&T) -> NodeId) -> Option<NodeId> {
    for (i, a) in items.iter().enumerate() {
        let n = node(a);
        if items[i + 1..].iter().any(|b| node(b) == n) {
            return Some(n);
        }
    }
    None
}

fn unique_nodes(list: &[SenderNext], invariant: Invariant) -> Result<(), Violation> {
    let dup = duplicate(list, |s| s.node);
    check(dup.is_none(), invariant, || {
        format!("{dup:?} twice in {list:?}")
    })
}

impl<P: Payload> Group<P> {
    /// Check the ordering invariants; the first one that does not hold.
    pub(crate) fn validate(&self) -> Result<(), Violation> {
        self.validate_ring()?;
        self.validate_senders()?;
        self.validate_phase()?;
        self.validate_sequencer()
    }

    /// Whether position `pos` holds its entry and, for data, its payload.
    fn complete(&self, pos: u64) -> bool {
        match self.slot(pos) {
            Some(Slot::Data { sender, inc, seq }) => self.payload(sender, inc, seq).is_some(),
            Some(_) => true,
            None => false,
        }
    }

    fn validate_ring(&self) -> Result<(), Violation> {
        use Invariant::*;
        let (base, delivered, ready, stable) = (self.base, self.delivered, self.ready, self.stable);
        let len = self.slots.len() as u64;
        // Saturating: a reset at position u64::MAX leaves `base` there too.
        check(
            base <= delivered.saturating_add(1),
            RingStartsPastDelivered,
            || format!("base {base}, delivered {delivered}"),
        )?;
        check(base <= stable.saturating_add(1), ReleasedPastStable, || {
            format!("base {base}, stable {stable}")
        })?;
        check(delivered <= ready, DeliveredPastReady, || {
            format!("delivered {delivered}, ready {ready}")
        })?;
        check(delivered <= self.cap, DeliveredPastCap, || {
            format!("delivered {delivered}, cap {}", self.cap)
        })?;
        let end = base.saturating_add(len);
        check(ready.saturating_add(1) <= end, ReadyPastRing, || {
            format!("ready {ready}, base {base}, {len} slots")
        })?;
        check(
            end <= self.hi_seen.saturating_add(1),
            RingPastHiSeen,
            || format!("base {base}, {len} slots, hi_seen {}", self.hi_seen),
        )?;
        check(len <= MAX_AHEAD, RingTooLong, || format!("{len} slots"))?;
        if self.is_member() {
            check(stable <= ready, StablePastReady, || {
                format!("stable {stable}, ready {ready}")
            })?;
        }
        check(self.last_ack_sent <= ready, AckPastReady, || {
            format!("last ack {}, ready {ready}", self.last_ack_sent)
        })?;
        for pos in [base, delivered.saturating_add(1), ready] {
            if pos < base || pos > ready {
                continue;
            }
            check(self.slot(pos).is_some(), ReadyPositionMissing, || {
                format!("position {pos} of {base}..={ready}")
            })?;
            if pos > delivered {
                check(self.complete(pos), ReadyPayloadMissing, || {
                    format!(
                        "position {pos} ({:?}), delivered {delivered}",
                        self.slot(pos)
                    )
                })?;
            }
        }
        if let Some(after) = ready.checked_add(1) {
            check(!self.complete(after), ReadyBehind, || {
                format!(
                    "ready {ready}, position {after} is held ({:?})",
                    self.slot(after)
                )
            })?;
        }
        Ok(())
    }

    fn validate_senders(&self) -> Result<(), Violation> {
        let dup = duplicate(&self.senders, |b| b.node);
        check(dup.is_none(), Invariant::DuplicateSenderBuf, || {
            format!("{dup:?} has two buffers")
        })?;
        unique_nodes(&self.next, Invariant::DuplicateNext)?;
        unique_nodes(&self.delivered_hi, Invariant::DuplicateDeliveredHi)
    }

    fn validate_phase(&self) -> Result<(), Violation> {
        use Invariant::*;
        match self.phase {
            Phase::Member => {
                let (m, i) = (self.view.members.len(), self.incs.len());
                check(m == i, IncarnationsMismatch, || {
                    format!("{m} members, {i} incarnations")
                })?;
            }
            Phase::Joining { .. } => {
                let d = self.delivered;
                check(
                    self.slots.is_empty()
                        && self.ready == d
                        && self.hi_seen == d
                        && self.stable == d
                        && self.seq.is_none()
                        && self.pending_install.is_none(),
                    JoiningHoldsOrder,
                    || {
                        format!(
                            "{} slots, delivered {d}, ready {}, hi_seen {}, stable {}, \
                             sequencer {}, install waiting {}",
                            self.slots.len(),
                            self.ready,
                            self.hi_seen,
                            self.stable,
                            self.seq.is_some(),
                            self.pending_install.is_some()
                        )
                    },
                )?;
            }
        }
        let epoch = self.epoch();
        if let Some(pi) = &self.pending_install {
            check(pi.epoch == epoch + 1, PendingEpochMismatch, || {
                format!("install of epoch {} in epoch {epoch}", pi.epoch)
            })?;
        }
        if let Some((e, ..)) = self.pending_accept {
            check(e == epoch + 1, PendingEpochMismatch, || {
                format!("accept of epoch {e} in epoch {epoch}")
            })?;
        }
        Ok(())
    }

    fn validate_sequencer(&self) -> Result<(), Violation> {
        use Invariant::*;
        let Some(seq) = &self.seq else {
            return Ok(());
        };
        let (m, i) = (seq.view.members.len(), seq.incs.len());
        check(m == i, SequencerIncarnationsMismatch, || {
            format!("{m} members, {i} incarnations")
        })?;
        let min_ack = seq.acks.iter().map(|a| a.1).min();
        check(
            min_ack.is_none_or(|a| seq.stable <= a),
            StablePastAck,
            || format!("stable {}, acks {:?}", seq.stable, seq.acks),
        )?;
        check(seq.stable <= self.stable, SequencerStablePastMember, || {
            format!(
                "sequencer stable {}, member stable {}",
                seq.stable, self.stable
            )
        })?;
        check(
            seq.published_stable <= seq.stable,
            PublishedPastStable,
            || format!("published {}, stable {}", seq.published_stable, seq.stable),
        )?;
        let end = seq
            .pending
            .iter()
            .fold(seq.pending_first, |end, e| end + e.len());
        check(
            seq.pending.is_empty() || end == seq.next_pos,
            PendingMismatch,
            || {
                format!(
                    "{} entries from {} end at {end}, next position {}",
                    seq.pending.len(),
                    seq.pending_first,
                    seq.next_pos
                )
            },
        )?;
        if seq.retired {
            return Ok(());
        }
        let (c, sc) = (self.coordinator(), seq.view.coordinator());
        check(c == sc, SequencerNotCoordinator, || {
            format!("coordinator {c:?}, ordering view's {sc:?}")
        })?;
        check(
            self.hi_seen.checked_add(1) == Some(seq.next_pos),
            HiSeenNotNextPosition,
            || format!("hi_seen {}, next position {}", self.hi_seen, seq.next_pos),
        )?;
        let view = &seq.view;
        for m in &view.members {
            check(seq.acks.iter().any(|a| a.0 == *m), AckMissing, || {
                format!("no ack of {m:?} in {:?}", seq.acks)
            })?;
        }
        for a in &seq.acks {
            let departing = seq.departing.iter().any(|d| d.0 == a.0);
            check(view.contains(a.0) || departing, AckStray, || {
                format!(
                    "ack {a:?}, view {:?}, departing {:?}",
                    view.members, seq.departing
                )
            })?;
        }
        for d in &seq.departing {
            check(!view.contains(d.0), DepartingMember, || {
                format!("{d:?} departs, view {:?}", view.members)
            })?;
        }
        let waiting = seq.welcomes.iter().map(|w| w.0);
        for n in waiting.chain(seq.leaves.iter().map(|l| l.0)) {
            check(view.contains(n), NotInView, || {
                format!("{n:?} waits, view {:?}", view.members)
            })?;
        }
        Ok(())
    }
}

/// [`Group::validate`] of every group of a node: panics naming the group
/// and the violated invariant. For the Engine's debug builds, after every
/// event (`join`, `leave`, `multicast`, `tick`, `handle_message`, the
/// adjust-version calls), with `self.groups.iter_mut().map(|(_, g)| &*g)`.
pub(crate) fn validate_all<'a, P: Payload + 'a>(groups: impl IntoIterator<Item = &'a Group<P>>) {
    for g in groups {
        if let Err(v) = g.validate() {
            panic!(
                "group {:?} ({:?}, view {:?}): {v}",
                g.id, g.phase, g.view.id
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::Invariant::{self, *};
    use crate::engine::Ctx;
    use crate::group::{Group, Phase, SenderBuf};
    use crate::message::{Ballot, OrderEntry, SenderNext};
    use crate::types::{DeliveryMode, GroupId, NodeId, ProtocolVersion, Stats, Time, View, ViewId};
    use crate::version::Versions;

    type G = Group<Vec<u8>>;
    /// A corruption and the invariant it breaks.
    type Case = (Invariant, fn(&mut G));

    const N1: NodeId = NodeId(1);
    const N2: NodeId = NodeId(2);
    const N3: NodeId = NodeId(3);

    fn ctx(me: NodeId) -> Ctx<Vec<u8>> {
        Ctx {
            me,
            now: Time(1),
            inc: 1,
            batch: 64,
            commands: VecDeque::new(),
            loopback: VecDeque::new(),
            records: Default::default(),
            batches: Default::default(),
            scratch_entries: Vec::new(),
            stats: Stats::default(),
            versions: Versions::default(),
        }
    }

    /// A member of view `[N1, N2]` (epoch 1), as a Welcome leaves it.
    fn admitted() -> G {
        let gid = GroupId::from_name("validate");
        let view = View {
            group: gid,
            id: ViewId::first_of(1),
            members: vec![N1, N2],
            protocol: ProtocolVersion(1),
        };
        let mut g = G::new(gid, DeliveryMode::Agreed, view, Time(0));
        assert_eq!(g.validate(), Ok(()), "a new (joining) group");
        g.phase = Phase::Member;
        g.incs = vec![1, 1];
        g.reset_order(0, Vec::new());
        g
    }

    /// The state after an event: what `Engine::after_change` does.
    fn settle(g: &mut G, ctx: &mut Ctx<Vec<u8>>) {
        g.advance_ready();
        if g.seq.is_some() {
            g.on_ack(ctx.me, g.ready);
        }
        let _ = g.deliver_ready(ctx);
    }

    /// N2, a member frozen by a flush at position 3: N1's sequences 1..=4
    /// at positions 1..=4 are held, 1..=3 delivered, 1..=2 stable (and
    /// released).
    fn frozen_member() -> G {
        let mut g = admitted();
        let mut ctx = ctx(N2);
        let entry = OrderEntry::Data {
            sender: N1,
            incarnation: 1,
            first_seq: 1,
            count: 4,
        };
        assert!(g.insert_entries(N2, 1, &[entry]));
        for s in 1..=4 {
            assert!(g.store_payload(N1, 1, s, vec![s as u8], 64));
        }
        g.stable = 2;
        g.cap = 3;
        settle(&mut g, &mut ctx);
        let at = (g.base, g.delivered, g.ready, g.hi_seen, g.stable);
        assert_eq!(at, (3, 3, 4, 4, 2));
        assert_eq!(g.validate(), Ok(()), "{g:?}");
        g
    }

    /// N1, the sequencer: N2's sequences 1..=3 and its own 1..=2 ordered at
    /// positions 1..=5 (not yet published) and delivered, N2 acked 3.
    fn sequencer() -> G {
        let mut g = admitted();
        let mut ctx = ctx(N1);
        g.take_over(0);
        g.seq.as_mut().unwrap().lease_until = Time(u64::MAX);
        assert_eq!(g.validate(), Ok(()), "a sequencer that ordered nothing");
        for s in 1..=3 {
            assert!(g.store_payload(N2, 1, s, vec![s as u8], 64));
        }
        g.order_sender(&mut ctx, N2, 1);
        settle(&mut g, &mut ctx);
        for s in 1..=2 {
            g.my_seq += 1;
            assert!(g.store_payload(N1, 1, s, vec![s as u8], u64::MAX));
        }
        g.order_sender(&mut ctx, N1, 1);
        settle(&mut g, &mut ctx);
        g.on_ack(N2, 3);
        settle(&mut g, &mut ctx);
        let seq = g.seq.as_ref().unwrap();
        assert_eq!((seq.next_pos, seq.stable, seq.pending.len()), (6, 3, 2));
        assert_eq!((g.base, g.delivered, g.ready), (4, 5, 5));
        assert_eq!(g.validate(), Ok(()), "{g:?}");
        g
    }

    fn broken(g: &G) -> Invariant {
        match g.validate() {
            Ok(()) => panic!("validate() passed a corrupted group: {g:?}"),
            Err(v) => {
                assert!(!v.detail.is_empty());
                v.invariant
            }
        }
    }

    fn seq(g: &mut G) -> &mut crate::group::Sequencer {
        g.seq.as_mut().unwrap()
    }

    /// Set the sequencer's record of `node`'s ack.
    fn ack(g: &mut G, node: NodeId, ready: u64) {
        let a = seq(g).acks.iter_mut().find(|a| a.0 == node).unwrap();
        a.1 = ready;
    }

    #[test]
    fn a_joining_node_after_a_rejoin_is_valid() {
        let mut g = frozen_member();
        let (delivered, next) = (g.delivered, g.next.clone());
        g.phase = Phase::Joining {
            rejoin: true,
            last_request: Time(1),
        };
        g.reset_order(delivered, next);
        assert_eq!(g.validate(), Ok(()));
    }

    #[test]
    fn the_ring_relations_are_checked() {
        let cases: [Case; 10] = [
            (RingStartsPastDelivered, |g| g.base = g.delivered + 2),
            (ReleasedPastStable, |g| g.stable = g.base - 2),
            (DeliveredPastReady, |g| g.delivered = g.ready + 1),
            (DeliveredPastCap, |g| g.cap = g.delivered - 1),
            (ReadyPastRing, |g| {
                g.slots.pop_back();
            }),
            (RingPastHiSeen, |g| g.hi_seen = g.ready - 1),
            (RingTooLong, |g| {
                g.slots.resize(super::MAX_AHEAD as usize + 1, None);
                g.hi_seen = u64::MAX - 1;
            }),
            (StablePastReady, |g| g.stable = g.ready + 1),
            (AckPastReady, |g| g.last_ack_sent = g.ready + 1),
            (ReadyBehind, |g| g.ready -= 1),
        ];
        for (invariant, corrupt) in cases {
            let mut g = frozen_member();
            corrupt(&mut g);
            assert_eq!(broken(&g), invariant);
        }
    }

    #[test]
    fn a_ready_position_without_its_entry_or_payload_is_caught() {
        let mut g = frozen_member();
        let last = g.slots.len() - 1;
        g.slots[last] = None;
        assert_eq!(broken(&g), ReadyPositionMissing);

        let mut g = frozen_member();
        let b = g.senders.iter_mut().find(|b| b.node == N1).unwrap();
        let i = (4 - b.base) as usize;
        b.msgs[i] = None;
        assert_eq!(broken(&g), ReadyPayloadMissing);
    }

    #[test]
    fn a_node_listed_twice_is_caught() {
        let mut g = frozen_member();
        g.senders.push(SenderBuf {
            node: N1,
            inc: 2,
            base: 1,
            msgs: VecDeque::new(),
        });
        assert_eq!(broken(&g), DuplicateSenderBuf);

        let twice = SenderNext {
            node: N3,
            incarnation: 1,
            next: 1,
        };
        let mut g = frozen_member();
        g.next.extend([twice, twice]);
        assert_eq!(broken(&g), DuplicateNext);

        let mut g = frozen_member();
        g.delivered_hi.extend([twice, twice]);
        assert_eq!(broken(&g), DuplicateDeliveredHi);

        let ids = |ids: &[u32]| super::duplicate(ids, |n| NodeId(*n));
        assert_eq!(ids(&[1, 200, 3, 127, 201]), None);
        assert_eq!(ids(&[1, 200, 3, 200]), Some(NodeId(200)));
        assert_eq!(ids(&[127, 5, 127]), Some(NodeId(127)));
    }

    #[test]
    fn the_phase_relations_are_checked() {
        let mut g = frozen_member();
        g.incs.pop();
        assert_eq!(broken(&g), IncarnationsMismatch);

        let mut g = frozen_member();
        g.phase = Phase::Joining {
            rejoin: true,
            last_request: Time(1),
        };
        assert_eq!(broken(&g), JoiningHoldsOrder);

        let mut g = frozen_member();
        g.pending_accept = Some((g.epoch() + 1, Ballot::default(), N1, 4));
        assert_eq!(g.validate(), Ok(()));
        g.pending_accept = Some((g.epoch() + 2, Ballot::default(), N1, 4));
        assert_eq!(broken(&g), PendingEpochMismatch);
    }

    #[test]
    fn the_sequencer_relations_are_checked() {
        let cases: [Case; 9] = [
            (SequencerIncarnationsMismatch, |g| {
                seq(g).incs.pop();
            }),
            (StablePastAck, |g| ack(g, N2, 2)),
            (SequencerStablePastMember, |g| {
                seq(g).stable = 4;
                ack(g, N2, 4);
            }),
            (PublishedPastStable, |g| seq(g).published_stable = 4),
            (PendingMismatch, |g| seq(g).pending_first += 1),
            (SequencerNotCoordinator, |g| seq(g).view.members.reverse()),
            (HiSeenNotNextPosition, |g| g.hi_seen += 1),
            (AckStray, |g| seq(g).acks.push((N3, 5))),
            (DepartingMember, |g| seq(g).departing.push((N2, 5))),
        ];
        for (invariant, corrupt) in cases {
            let mut g = sequencer();
            corrupt(&mut g);
            assert_eq!(broken(&g), invariant);
        }
        let mut g = sequencer();
        seq(&mut g).acks.push((N3, 5));
        seq(&mut g).departing.push((N3, 6));
        assert_eq!(g.validate(), Ok(()), "a departing leaver's ack is no stray");
        seq(&mut g).acks.retain(|a| a.0 != N2);
        assert_eq!(broken(&g), AckMissing);

        let mut g = sequencer();
        seq(&mut g).leaves.push((N3, 0));
        assert_eq!(broken(&g), NotInView);
    }

    #[test]
    fn a_retired_sequencer_is_not_held_to_the_active_ones() {
        let mut g = sequencer();
        seq(&mut g).retired = true;
        g.hi_seen += 1;
        seq(&mut g).leaves.push((N3, 0));
        assert_eq!(g.validate(), Ok(()));
        seq(&mut g).published_stable = 4;
        assert_eq!(broken(&g), PublishedPastStable);
    }

    #[test]
    #[should_panic(expected = "DeliveredPastCap")]
    fn validate_all_panics_naming_the_invariant() {
        let ok = sequencer();
        let mut bad = frozen_member();
        bad.cap = 2;
        super::validate_all([&ok, &bad]);
    }
}
