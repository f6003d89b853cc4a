use super::*;

/// No majority anywhere (a three-way split): every member reports
/// Partitioned and, after the heal, one of them restarts the group as an
/// orphan while the others merge. The restarted epoch continues the
/// restarter's own history (no position is used twice), and every member's
/// FIFO stream resumes where it can: messages a member delivered and
/// released before the split cannot be sent again, so the sequencer orders
/// it from the first one it still holds (`JoinRequest::next_seq`) instead of
/// waiting for ever for a sequence number the group's older record names.
#[test]
fn orphan_restart_resumes_every_members_stream() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    for i in 0..12u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
        net.run(1);
    }
    net.run(50);
    assert_eq!(net.deliveries(1).len(), 12);
    assert_same(&net, 1, 2);
    assert_same(&net, 1, 3);
    let last_before = net.deliveries(1).last().unwrap().0;
    net.side = vec![0, 1, 2];
    net.run(200);
    for n in 1..=3 {
        assert!(net.logs[(n - 1) as usize].contains(&Ev::Partitioned));
        assert!(!net.engine(n).is_member(g));
    }
    net.side = vec![0, 0, 0];
    net.run(600);
    let view = net
        .engine(1)
        .view(g)
        .expect("node 1 is a member again")
        .clone();
    assert_eq!(view.members.len(), 3, "{view:?}");
    for n in 2..=3 {
        assert_eq!(net.engine(n).view(g), Some(&view));
    }
    // The restart continued the history: its view starts at or after the
    // last position delivered before the split.
    let restart = net
        .views(view.members[0].0)
        .into_iter()
        .find(|(v, r, _)| *r == Reason::Join(view.members[0]) && v.members.len() == 1)
        .expect("one node restarted the group");
    assert!(
        restart.2 >= last_before,
        "the restart reused positions: it starts after {} but {last_before} was delivered",
        restart.2
    );
    // Every member's stream goes on: new messages of each are delivered by all.
    for n in 1..=3u32 {
        assert!(matches!(
            net.send(n, g, &[100 + n as u8]),
            Multicast::Sent { .. }
        ));
    }
    net.run(100);
    for n in 1..=3u32 {
        let got: Vec<u8> = net
            .deliveries(n)
            .iter()
            .filter(|(_, p)| p[0] >= 100)
            .map(|(_, p)| p[0])
            .collect();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, vec![101, 102, 103], "node {n} delivered {got:?}");
    }
    assert_same_tail(&net, 3);
}

/// A sole member leaves and later joins again with the same incarnation: the
/// group restarts as an orphan from its last decided epoch, whose record of
/// the member's stream is older than the messages it delivered since. Its
/// sender sequence continues (no reuse), and the sequencer orders it from
/// there instead of waiting for a number it will never send again (which
/// back-pressures it for ever).
#[test]
fn rejoin_after_leave_continues_the_stream_past_the_decided_record() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1]);
    for i in 0..5u8 {
        net.send(1, g, &[i]);
    }
    net.run(20);
    assert_eq!(net.deliveries(1).len(), 5);
    let now = Time(net.now);
    net.engine(1).leave(now, g).unwrap();
    net.drain(0);
    net.run(20);
    assert!(!net.engine(1).is_member(g));
    net.join(1, g);
    net.run(200);
    assert!(net.engine(1).is_member(g), "node 1 did not get back in");
    assert!(matches!(
        net.send(1, g, b"again"),
        Multicast::Sent { sender_seq: 6 }
    ));
    net.run(20);
    assert_eq!(net.deliveries(1).last().unwrap().1, b"again".to_vec());
    net.join(2, g);
    net.run(50);
    assert!(net.engine(2).is_member(g));
    net.send(1, g, b"more");
    net.send(2, g, b"hello");
    net.run(50);
    for n in [1, 2] {
        let tail: Vec<Vec<u8>> = net
            .deliveries(n)
            .iter()
            .rev()
            .take(2)
            .map(|d| d.1.clone())
            .collect();
        assert!(
            tail.contains(&b"more".to_vec()) && tail.contains(&b"hello".to_vec()),
            "node {n}: {tail:?}"
        );
    }
}

/// A member multicasts while its sequencer is unreachable, is cut off, and
/// after the heal finds the group empty (the other side flushed it out and
/// then left): it restarts the group alone. Its own messages that nobody
/// ordered are ordered by its own retransmission tick, and it delivers them
/// without waiting for a peer's ack that a sole member never gets (which
/// back-pressures it for ever).
#[test]
fn sole_restarter_orders_and_delivers_its_held_messages() {
    let mut net = Setup::new(3).mode(DeliveryMode::Safe).start();
    let g = group();
    net.form(g, &[2, 1]);
    net.side = vec![1, 0, 0];
    for i in 0..2u8 {
        assert!(matches!(net.send(1, g, &[i]), Multicast::Sent { .. }));
    }
    net.run(200);
    assert!(net.logs[0].contains(&Ev::Partitioned));
    assert!(net.engine(2).is_member(g));
    let now = Time(net.now);
    net.engine(2).leave(now, g).unwrap();
    net.drain(1);
    net.run(50);
    assert!(!net.engine(2).is_member(g));
    net.side = vec![0, 0, 0];
    net.run(300);
    let view = net
        .engine(1)
        .view(g)
        .expect("node 1 restarted the group")
        .clone();
    assert_eq!(view.members, vec![NodeId(1)]);
    let mine: Vec<Vec<u8>> = net.deliveries(1).into_iter().map(|d| d.1).collect();
    assert_eq!(mine, vec![vec![0], vec![1]], "node 1 delivered {mine:?}");
}

/// A member's record of a sender can be far behind the sender's stream (here
/// the group was restarted from its creation record after the only member
/// left, having multicast more than the receive ring's range). When that
/// sender joins again its stream resumes at the Join's `first_seq`; the
/// payloads below it will never be ordered, so receivers move their ring
/// there instead of refusing the sender's new messages as out of range for
/// ever.
#[test]
fn a_stream_resumed_far_ahead_is_accepted_by_every_member() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1]);
    for chunk in 0..8u8 {
        for i in 0..50u8 {
            assert!(matches!(
                net.send(1, g, &[chunk, i]),
                Multicast::Sent { .. }
            ));
        }
        net.run(2);
    }
    net.run(20);
    assert_eq!(net.deliveries(1).len(), 400);
    let now = Time(net.now);
    net.engine(1).leave(now, g).unwrap();
    net.drain(0);
    net.run(20);
    net.join(2, g);
    net.run(200);
    assert!(
        net.engine(2).is_member(g),
        "node 2 did not restart the group"
    );
    // A stale copy of one of node 1's old messages arrives late at node 2
    // (the simulator's delay spikes do this): node 2 now holds a ring for
    // node 1's stream starting where its record of it stands, at 1.
    let now = Time(net.now);
    let stale = Message {
        incarnation: 0,
        body: Body::Data {
            group: g,
            epoch: 1,
            sender: NodeId(1),
            sender_incarnation: 0,
            sender_seq: 5,
            ack: 0,
            payload: P::from(&[0u8, 4][..]),
        },
    };
    net.engine(2).handle_message(now, NodeId(1), stale);
    net.drain(1);
    net.join(1, g);
    net.run(100);
    assert!(net.engine(1).is_member(g), "node 1 did not get back in");
    assert!(matches!(
        net.send(1, g, b"resumed"),
        Multicast::Sent { sender_seq: 401 }
    ));
    net.run(100);
    for n in [1, 2] {
        assert_eq!(
            net.deliveries(n).last().map(|d| d.1.clone()),
            Some(b"resumed".to_vec()),
            "node {n}"
        );
    }
}

/// A sequencer cut off alone delivers its own messages in its old view; the
/// primary flushes it out and then loses its last member, so after the heal
/// the cut-off node restarts the group as an orphan, at the era after the
/// last decided cut. The restarted group never orders the messages the restarter already
/// delivered beyond that cut (it would skip them), so they must leave its
/// send window: kept there, they stay for ever, and with a full window every
/// multicast is back-pressured.
#[test]
fn an_orphan_restarter_frees_the_window_of_what_it_delivered_beyond_the_cut() {
    // Node 1's window holds exactly what it sends while cut off.
    let mut net = Setup::new(3).configure(1, |c| c.window = 4).start();
    let g = group();
    net.form(g, &[1, 2]);
    for i in 0..4u8 {
        net.send(1 + u32::from(i % 2), g, &[i]);
    }
    net.run(10);
    net.side = vec![1, 0, 0];
    for i in 10..14u8 {
        assert!(matches!(net.send(1, g, &[i]), Multicast::Sent { .. }));
        net.run(1);
    }
    // Node 1 delivered its own messages, which node 2 never got.
    assert_eq!(net.deliveries(1).len(), 8);
    net.run(200);
    assert_eq!(partitioned_count(&net, 1), 1);
    let failed = Reason::Failed(vec![NodeId(1)]);
    let cut = position_of(&net.views(2), &failed).expect("the primary flushed node 1 out");
    net.crash(2);
    net.side = vec![0, 0, 0];
    net.run(300);
    assert!(
        net.engine(1).is_member(g),
        "node 1 did not restart the group"
    );
    let (view, _, at) = net.views(1).last().cloned().unwrap();
    assert_eq!(view.members, vec![NodeId(1)]);
    assert_eq!(
        Some(at),
        concord_membership::position::next_era_base(cut),
        "the restart did not start at the next era after the decided cut"
    );
    // Its window is free again: each multicast goes out and is delivered.
    for i in 0..8u8 {
        let r = net.send(1, g, &[100, i]);
        assert!(
            matches!(r, Multicast::Sent { .. }),
            "message {i} after the restart was refused: {r:?}"
        );
        net.run(1);
    }
    net.run(20);
    let after: Vec<Vec<u8>> = net
        .deliveries(1)
        .into_iter()
        .skip(8)
        .map(|(_, p)| p)
        .collect();
    let want: Vec<Vec<u8>> = (0..8).map(|i| vec![100, i]).collect();
    assert_eq!(after, want);
}

/// A sole member (its own sequencer) that one acceptor cannot hear goes on
/// hearing a majority, so it never notices that node 3 suspects it. Node 3
/// joins, sees the only member "gone" and restarts the group as an orphan.
/// The sequencer orders only under a lease that a majority of acceptors
/// granted, and an acceptor that granted it promises no later epoch before
/// it ran out: so the old sequencer stops ordering before the restart is
/// decided, and no second history goes on beside the restarted one (a
/// joiner welcomed by both, or a sole member delivering on in a history the
/// primary replaced). After the heal its messages held meanwhile are
/// delivered in the restarted group.
#[test]
fn a_cut_off_sole_sequencer_stops_ordering_before_the_primary_restarts_the_group() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1]);
    assert!(matches!(net.send(1, g, &[0]), Multicast::Sent { .. }));
    net.run(10);
    assert_eq!(net.deliveries(1).len(), 1);
    // Node 3 stops hearing node 1 (and node 1 node 3); node 1 still hears
    // node 2, so it keeps a majority and stays a member.
    net.cut = vec![(1, 3)];
    net.run(40);
    net.join(3, g);
    // Multicasts accepted by node 1 (it refuses them once it knows it was
    // replaced and rejoins).
    let try_send = |net: &mut Net, b: u8| {
        let now = Time(net.now);
        let ok = matches!(
            net.engine(1).multicast(now, g, [b].as_slice().into()),
            Ok(Multicast::Sent { .. })
        );
        net.drain(0);
        ok
    };
    let mut sent = 0u8;
    let mut accepted = Vec::new();
    let mut restarted = false;
    for _ in 0..200 {
        sent += 1;
        assert!(try_send(&mut net, sent), "node 1 refused a multicast");
        accepted.push(sent);
        net.run(1);
        if net.engine(3).is_member(g) {
            restarted = true;
            break;
        }
    }
    assert!(restarted, "node 3 never restarted the group");
    let epoch_of = |v: u64| v >> 32;
    let restart_epoch = epoch_of(net.engine(3).view(g).unwrap().id.0);
    let old_history = |net: &Net| {
        net.logs[0]
            .iter()
            .filter(|e| matches!(e, Ev::Deliver { view, .. } if epoch_of(*view) < restart_epoch))
            .count()
    };
    let before = old_history(&net);
    for _ in 0..10 {
        sent += 1;
        if try_send(&mut net, sent) {
            accepted.push(sent);
        }
        net.run(1);
    }
    assert_eq!(
        old_history(&net),
        before,
        "node 1 went on delivering in the history node 3's restart replaced"
    );
    net.cut.clear();
    net.run(600);
    let view = net.engine(3).view(g).expect("node 3 is a member").clone();
    assert!(view.members.contains(&NodeId(1)), "{view:?}");
    assert_eq!(net.engine(1).view(g), Some(&view));
    // What node 1 delivered in the old history is lost with it (a sole
    // member released it); everything else it accepted reaches node 3.
    let old: Vec<u8> = net.logs[0]
        .iter()
        .filter_map(|e| match e {
            Ev::Deliver { view, payload, .. } if epoch_of(*view) < restart_epoch => {
                Some(payload[0])
            }
            _ => None,
        })
        .collect();
    let at3: Vec<u8> = net.deliveries(3).iter().map(|(_, p)| p[0]).collect();
    assert!(accepted.len() > old.len(), "{accepted:?} {old:?}");
    for m in accepted.into_iter().filter(|m| !old.contains(m)) {
        assert!(
            at3.contains(&m),
            "node 3 never delivered node 1's message {m}: {at3:?}"
        );
    }
}

/// A member of an older, replaced history restarts the group again (the
/// seed-14 shape): node 1, alone, delivers its messages at positions 1..=5
/// and is cut off; node 3 restarts the orphaned group and orders its own
/// messages, then crashes; after the heal node 1 finds every member of the
/// last decided view gone and restarts the group itself. The last decided
/// cut is node 3's restart, which node 1 never saw: continuing from that
/// cut would hand node 1 positions it delivered before. Each restart
/// starts the next era, so node 1's positions grow along its whole history.
#[test]
fn a_second_orphan_restart_reuses_no_position_an_older_history_delivered() {
    use concord_membership::position::{era, era_base};
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1]);
    for i in 0..5u8 {
        assert!(matches!(net.send(1, g, &[i]), Multicast::Sent { .. }));
    }
    net.run(20);
    assert_eq!(net.deliveries(1).len(), 5);
    net.side = vec![1, 0, 0];
    net.run(200);
    assert_eq!(partitioned_count(&net, 1), 1);
    net.join(3, g);
    net.run(200);
    assert!(
        net.engine(3).is_member(g),
        "node 3 did not restart the group"
    );
    for i in 0..3u8 {
        assert!(matches!(net.send(3, g, &[30, i]), Multicast::Sent { .. }));
    }
    net.run(20);
    assert_eq!(net.deliveries(3).len(), 3);
    net.crash(3);
    net.side = vec![0, 0, 0];
    net.run(600);
    let (view, reason, at) = net
        .views(1)
        .last()
        .cloned()
        .expect("node 1 installed views");
    assert_eq!(
        (view.members.clone(), reason),
        (vec![NodeId(1)], Reason::Join(NodeId(1))),
        "node 1 did not restart the group"
    );
    assert!(matches!(net.send(1, g, &[10]), Multicast::Sent { .. }));
    net.run(20);
    // Node 3's restart started era 1 and node 1's era 2, each at its base.
    let (_, _, at3) = net.views(3)[0].clone();
    assert_eq!((at3, at), (era_base(1), era_base(2)));
    let mine = net.deliveries(1);
    assert_eq!(
        mine.iter().map(|d| d.1.clone()).collect::<Vec<_>>(),
        vec![vec![0], vec![1], vec![2], vec![3], vec![4], vec![10]]
    );
    let positions: Vec<u64> = mine.iter().map(|d| d.0).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "node 1 was handed a position again: {positions:?}"
    );
    assert_eq!(era(positions[5]), 2, "{positions:?}");
}
