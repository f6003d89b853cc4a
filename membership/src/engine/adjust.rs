//! The Engine side of adjust-version and of the version-gated functions
//! (the model is in `crate::version`).

use super::{Command, Engine};
use crate::error::{AdjustError, BatchError};
use crate::group::Phase;
use crate::message::{Body, Message, OrderEntry, Shared};
use crate::types::{GroupId, Multicast, NodeId, Payload, ProtocolVersion, Time, VersionRange};
use crate::version::{
    self, AdjustRequest, Pending, Rejection, Scope, Target, VersionChange, VersionError,
    VersionEvent,
};

impl<P: Payload> Engine<P> {
    /// Switch the active protocol version of one group, or of every group
    /// this node is a member of, to `target`.
    ///
    /// Checks first, and refuses with [`AdjustError::Version`] naming the culprit:
    /// every configured node active, every configured node in the view (and
    /// this node in the primary component), every node capable of the target.
    /// Then it asks each group's sequencer, which checks again and orders the
    /// outcome: every member reports the switch as a
    /// [`Command::ViewChange`] with [`crate::Reason::AdjustVersion`] at the
    /// same position, and queues a [`VersionEvent`] (see
    /// [`Engine::poll_version_event`]) with the request number returned here.
    /// Groups already at the target are left alone (not in the result).
    pub fn adjust_version(
        &mut self,
        now: Time,
        scope: Scope,
        target: Target,
    ) -> Result<Vec<AdjustRequest>, AdjustError> {
        self.now = self.now.max(now);
        self.ctx.now = self.now;
        let gids: Vec<GroupId> = match scope {
            Scope::Group(group) => vec![group],
            Scope::All => self.groups.keys().copied().collect(),
        };
        let reachable = self.detector.reachable();
        for gid in &gids {
            let Some(g) = self.groups.get(gid) else {
                return Err(AdjustError::NotMember { group: *gid });
            };
            match g.phase {
                Phase::Member if reachable >= self.majority => {}
                Phase::Joining { rejoin: false, .. } if scope == Scope::All => {}
                Phase::Joining { rejoin: false, .. } => {
                    return Err(AdjustError::NotMember { group: *gid });
                }
                _ => {
                    // Cut off from the primary component (or about to be).
                    let mut missing: Vec<NodeId> = self
                        .cfg
                        .nodes
                        .iter()
                        .filter(|n| self.suspected(**n) || !g.view.contains(**n))
                        .copied()
                        .collect();
                    if missing.is_empty() {
                        missing.push(self.ctx.me);
                    }
                    return Err(VersionError::Partitioned { missing }.into());
                }
            }
        }
        let to = match target {
            Target::Exact(v) => v,
            Target::HighestCommon => {
                let mut ranges = Vec::with_capacity(self.cfg.nodes.len());
                for n in &self.cfg.nodes {
                    match self.active_range(*n) {
                        Some(r) => ranges.push(r),
                        None => return Err(VersionError::NodeNotActive { node: *n }.into()),
                    }
                }
                version::highest_common(ranges).unwrap_or(self.cfg.protocol.max)
            }
        };
        // Every group is checked before any request goes out: one refusal
        // refuses the whole command.
        let mut asks = Vec::new();
        for gid in gids {
            let Some(g) = self.groups.get(&gid).filter(|g| g.is_member()) else {
                continue;
            };
            let (members, active) = match g.seq.as_ref() {
                Some(s) => (s.view.members.clone(), s.view.protocol),
                None => (g.view.members.clone(), g.view.protocol),
            };
            version::check(&self.cfg.nodes, &members, to, |n| self.active_range(n))?;
            if active != to {
                asks.push(gid);
            }
        }
        let mut out = Vec::with_capacity(asks.len());
        for group in asks {
            let request = self.ctx.versions.next_request;
            self.ctx.versions.next_request += 1;
            self.ctx.versions.pending.push(Pending {
                group,
                request,
                to,
                sent: self.now,
            });
            if let Some(c) = self.groups.get(&group).and_then(|g| g.coordinator()) {
                self.ctx.send(c, Body::AdjustRequest { group, request, to });
            }
            out.push(AdjustRequest { group, request, to });
        }
        self.drain_loopback();
        Ok(out)
    }

    /// The next ordered adjust-version outcome, if any (queued at every
    /// member when it reaches the entry's position; the switch itself is
    /// also a [`Command::ViewChange`]).
    pub fn poll_version_event(&mut self) -> Option<VersionEvent> {
        self.ctx.versions.events.pop_front()
    }

    /// The range `node` runs, if it is active: not suspected, and its range
    /// for its current incarnation is known.
    pub(super) fn active_range(&self, node: NodeId) -> Option<VersionRange> {
        if node == self.ctx.me {
            return Some(self.cfg.protocol);
        }
        let p = self.detector.peer(node)?;
        if p.suspected {
            return None;
        }
        self.ctx.versions.range(node, p.inc)
    }

    /// The version a group this node creates starts with: the highest one
    /// that it and every peer it has heard from support (its own max when
    /// nothing else is known), so an "old release" node can join.
    pub(super) fn creation_version(&self) -> ProtocolVersion {
        let mine = self.cfg.protocol;
        let known = self.cfg.nodes.iter().filter_map(|n| self.active_range(*n));
        version::highest_common(known)
            .unwrap_or(mine.max)
            .clamp(mine.min, mine.max)
    }

    /// Sequencer side of adjust-version: check again against the view after
    /// everything ordered so far, and order the outcome.
    pub(super) fn on_adjust_request(
        &mut self,
        from: NodeId,
        from_inc: u64,
        gid: GroupId,
        request: u64,
        to: ProtocolVersion,
    ) {
        if self.ctx.versions.is_done(gid, from, from_inc, request) {
            return;
        }
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        if !g.is_member()
            || !g.is_sequencer()
            || g.cap != u64::MAX
            || g.leaving.is_some()
            || !g.seq.as_ref().is_some_and(|s| s.leased(self.now))
        {
            // Not ordering now; the requester re-sends to whoever is.
            return;
        }
        let Some(seq) = g.seq.as_ref() else { return };
        if !seq.view.contains(from) {
            return;
        }
        let members = seq.view.members.clone();
        let from_version = seq.view.protocol;
        // The lease implies that this node reaches a majority: it was
        // granted, less than half a failure timeout ago on this node's own
        // clock, by a strict majority of the configured nodes (this node
        // among them at most once), and a peer counts as unreachable only
        // after a whole failure timeout of silence.
        debug_assert!(
            self.detector.reachable() >= self.majority,
            "a leased sequencer reaches a majority"
        );
        let result = version::check(&self.cfg.nodes, &members, to, |n| self.active_range(n));
        let change = VersionChange {
            requester: from,
            incarnation: from_inc,
            request,
            from: from_version,
            to,
            rejected: result.err().and_then(|e| Rejection::from_error(&e)),
        };
        self.ctx.versions.mark_done(gid, from, from_inc, request);
        if let Some(g) = self.groups.get_mut(&gid) {
            let _ = g.order_control(&mut self.ctx, OrderEntry::Version(change));
        }
        self.after_change(gid);
    }

    /// Re-send adjust-version requests not yet ordered to the current
    /// coordinator (the first one may have been lost, or its coordinator
    /// replaced). A request of a group this node is no longer a member of is
    /// dropped: the node reports `Partitioned` (or its leave) instead.
    pub(super) fn version_tick(&mut self) {
        let groups = &self.groups;
        self.ctx
            .versions
            .pending
            .retain(|p| groups.get(&p.group).is_some_and(|g| g.is_member()));
        let due = self.now.0.saturating_sub(2 * self.cfg.heartbeat_interval);
        let mut resend = Vec::new();
        for p in &mut self.ctx.versions.pending {
            if p.sent.0 <= due {
                p.sent = self.now;
                resend.push(*p);
            }
        }
        for p in resend {
            if let Some(c) = self.groups.get(&p.group).and_then(|g| g.coordinator()) {
                self.ctx.send(
                    c,
                    Body::AdjustRequest {
                        group: p.group,
                        request: p.request,
                        to: p.to,
                    },
                );
            }
        }
    }

    /// Protocol version 2: multicast several payloads at once. They take
    /// consecutive sender sequence numbers (the first is returned), travel
    /// as one [`Body::DataBatch`] message per member, are ordered as one run
    /// and delivered as individual [`crate::Delivery`]s. Groups running an
    /// older version refuse with [`VersionError::VersionTooLow`]. A batch that
    /// does not fit the sender window comes back whole as
    /// [`Multicast::BackPressured`].
    pub fn multicast_batch(
        &mut self,
        now: Time,
        group: GroupId,
        mut payloads: Vec<P>,
    ) -> Result<Multicast<Vec<P>>, BatchError> {
        self.now = self.now.max(now);
        self.ctx.now = self.now;
        let me = self.ctx.me;
        let inc = self.ctx.inc;
        let window = self.cfg.window;
        let Some(g) = self.groups.get_mut(&group) else {
            return Err(BatchError::NotMember { group });
        };
        match g.phase {
            Phase::Joining { rejoin: true, .. } => return Err(BatchError::Partitioned { group }),
            Phase::Joining { .. } => return Err(BatchError::NotMember { group }),
            Phase::Member => {}
        }
        if g.leaving.is_some() {
            return Err(BatchError::InProgress { group });
        }
        if g.view.protocol < version::BATCH {
            return Err(VersionError::VersionTooLow {
                required: version::BATCH,
                active: g.view.protocol,
            }
            .into());
        }
        let max = version::MAX_BATCH.min(window);
        if payloads.is_empty() {
            return Err(VersionError::EmptyBatch.into());
        }
        if payloads.len() > max {
            return Err(VersionError::BatchTooLarge {
                len: payloads.len(),
                max,
            }
            .into());
        }
        if g.own_unstable(me, inc) + payloads.len() > window {
            self.ctx.stats.back_pressured += 1;
            return Ok(Multicast::BackPressured(payloads));
        }
        let first_seq = g.my_seq + 1;
        g.my_seq += payloads.len() as u64;
        // One list for every target: `payloads`' storage goes into a pooled
        // list, and what that list held before is freed with `payloads`.
        let payloads = self.ctx.batches.share(&mut payloads);
        let epoch = g.epoch();
        let ack = g.ready;
        for m in &g.view.members {
            if *m != me {
                self.ctx.commands.push_back(Command::Send {
                    to: *m,
                    msg: Message {
                        incarnation: inc,
                        body: Body::DataBatch {
                            group,
                            epoch,
                            sender: me,
                            sender_incarnation: inc,
                            first_seq,
                            ack,
                            payloads: payloads.clone(),
                        },
                    },
                });
            }
        }
        g.last_ack_sent = g.last_ack_sent.max(ack);
        for (i, p) in payloads.iter().enumerate() {
            let _ = g.store_payload(me, inc, first_seq + i as u64, p.clone(), u64::MAX);
        }
        if g.is_sequencer() {
            g.order_sender(&mut self.ctx, me, inc);
            self.after_change(group);
        }
        self.drain_loopback();
        Ok(Multicast::Sent {
            sender_seq: first_seq,
        })
    }

    /// A [`Body::DataBatch`]: each payload is handled like its own `Data`.
    pub(super) fn on_data_batch(
        &mut self,
        from: NodeId,
        (group, epoch, sender, sinc): (GroupId, u32, NodeId, u64),
        first_seq: u64,
        ack: u64,
        payloads: Shared<P>,
    ) {
        for (i, p) in payloads.iter().enumerate() {
            let Some(seq) = first_seq.checked_add(i as u64) else {
                return;
            };
            self.on_data(from, group, epoch, sender, sinc, seq, ack, p.clone());
        }
    }

    /// Rolling upgrade, step 1: leave every group gracefully (ordered
    /// leaves, no flush). The node may be stopped once [`Engine::has_groups`]
    /// turns false; restarted with a new release (a higher incarnation, a
    /// wider `protocol` range) it joins again. Returns the groups it leaves.
    pub fn shutdown(&mut self, now: Time) -> Vec<GroupId> {
        let gids: Vec<GroupId> = self.groups.keys().copied().collect();
        let mut leaving = Vec::new();
        for gid in gids {
            let member = self.groups.get(&gid).is_some_and(|g| g.is_member());
            if self.leave(now, gid).is_ok() && member {
                leaving.push(gid);
            }
        }
        leaving
    }

    /// Whether this node is a member of (or joining, or leaving) any group.
    pub fn has_groups(&self) -> bool {
        !self.groups.is_empty()
    }
}
