use super::*;

#[test]
fn three_members_deliver_the_same_sequence() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    for i in 0..30u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
    }
    net.run(50);
    let d1 = net.deliveries(1);
    assert_eq!(d1.len(), 30);
    assert_eq!(d1, net.deliveries(2));
    assert_eq!(d1, net.deliveries(3));
}

#[test]
fn coordinator_crash_is_survived() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    assert_eq!(
        net.engine(2).view(g).unwrap().coordinator(),
        Some(NodeId(1))
    );
    for i in 0..10u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
    }
    net.run(5);
    net.crash(1);
    for i in 10..20u8 {
        net.send(2 + u32::from(i % 2), g, &[i]);
    }
    net.run(300);
    let failed = Reason::Failed(vec![NodeId(1)]);
    let p2 = position_of(&net.views(2), &failed).expect("node 2 installed a view without 1");
    assert_eq!(Some(p2), position_of(&net.views(3), &failed));
    let view = net.engine(2).view(g).unwrap().clone();
    assert_eq!(view.members, vec![NodeId(2), NodeId(3)]);
    assert_eq!(view.coordinator(), Some(NodeId(2)));
    assert_same(&net, 2, 3);
    // Everything the survivors multicast is delivered, and the group goes on.
    let payloads: Vec<Vec<u8>> = net.deliveries(2).into_iter().map(|(_, p)| p).collect();
    for i in 10..20u8 {
        assert!(payloads.contains(&vec![i]), "message {i} lost");
    }
    net.send(3, g, b"after");
    net.run(20);
    assert_same(&net, 2, 3);
    assert_eq!(net.deliveries(3).last().unwrap().1, b"after".to_vec());
    assert!(net.stats(2).flushes >= 1);
}

#[test]
fn back_pressure_returns_payload_when_window_full() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    // No time passes: nothing becomes stable, the window (64) fills.
    for i in 0..64u32 {
        assert!(matches!(
            net.send(2, g, &i.to_le_bytes()),
            Multicast::Sent { .. }
        ));
    }
    let now = Time(net.now);
    match net
        .engine(2)
        .multicast(now, g, b"overflow".as_slice().into())
        .unwrap()
    {
        Multicast::BackPressured(p) => assert_eq!(&*p, b"overflow"),
        other => panic!("expected BackPressured, got {other:?}"),
    }
    assert_eq!(net.stats(2).back_pressured, 1);
    net.run(30);
    assert!(matches!(net.send(2, g, b"later"), Multicast::Sent { .. }));
    net.run(30);
    assert_eq!(net.deliveries(1).len(), 65);
    assert_same(&net, 1, 3);
}

#[test]
fn safe_delivery_waits_for_every_member() {
    for mode in [DeliveryMode::Agreed, DeliveryMode::Safe] {
        let mut net = Setup::new(3).mode(mode).start();
        let g = group();
        net.form(g, &[1, 2, 3]);
        net.deaf[2] = true;
        net.send(1, g, b"m");
        net.run(5);
        let got = net.deliveries(1).len();
        match mode {
            // Agreed: the order is known, so 1 delivers without 3.
            DeliveryMode::Agreed => assert_eq!(got, 1),
            // Safe: node 3 does not hold it, so nobody delivers yet.
            DeliveryMode::Safe => {
                assert_eq!(got, 0);
                assert_eq!(net.deliveries(2).len(), 0);
            }
        }
        net.deaf[2] = false;
        net.run(30);
        for n in 1..=3 {
            assert_eq!(net.deliveries(n).len(), 1, "node {n} in {mode:?}");
        }
        assert_eq!(net.stats(1).flushes, 0);
    }
}

#[test]
fn fifo_per_sender_under_reordering() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    net.jitter = 3 * MS;
    net.loss_every = 10;
    for i in 0..60u32 {
        let sender = 1 + i % 3;
        loop {
            match net.send(sender, g, &[sender as u8, (i / 3) as u8]) {
                Multicast::Sent { .. } => break,
                Multicast::BackPressured(_) => net.run(1),
            }
        }
        net.run(1);
    }
    net.loss_every = 0;
    net.run(400);
    for n in 1..=3 {
        let d = net.deliveries(n);
        assert_eq!(d.len(), 60, "node {n} delivered {}", d.len());
        for s in 1..=3u8 {
            let from_s: Vec<u8> = d
                .iter()
                .filter(|(_, p)| p[0] == s)
                .map(|(_, p)| p[1])
                .collect();
            assert_eq!(
                from_s,
                (0..20).collect::<Vec<u8>>(),
                "FIFO of sender {s} at node {n}"
            );
        }
    }
    assert_same(&net, 1, 2);
    assert_same(&net, 1, 3);
}

/// A Safe delivery waits for every member's ack and then for the stable
/// point to come back: both go out as soon as a member holds a position it
/// may not deliver yet, not on the next tick. A multicast sent right after
/// a tick is delivered at every member before the next one (4 hops of
/// 0.1 ms: data, order, ack, stable point), in Safe as in Agreed mode.
#[test]
fn a_safe_delivery_needs_no_tick() {
    for mode in [DeliveryMode::Agreed, DeliveryMode::Safe] {
        let mut net = Setup::new(3).mode(mode).start();
        let g = group();
        net.form(g, &[1, 2, 3]);
        for round in 0..5u8 {
            net.run(3);
            // Stop on a tick: the next one is 1 ms away.
            while !net.now.is_multiple_of(MS) {
                net.step();
            }
            let before: Vec<usize> = (1..=3).map(|n| net.deliveries(n).len()).collect();
            let sender = 2 + u32::from(round % 2);
            assert!(matches!(
                net.send(sender, g, &[round]),
                Multicast::Sent { .. }
            ));
            for _ in 0..9 {
                net.step();
            }
            for n in 1..=3u32 {
                let d = net.deliveries(n);
                assert_eq!(
                    d.len(),
                    before[n as usize - 1] + 1,
                    "{mode:?} round {round}: node {n} has not delivered 0.9 ms after the send"
                );
                assert_eq!(d.last().unwrap().1, vec![round]);
            }
        }
    }
}

/// A flush carries into the new view only the incarnations that answered
/// it: a member that promised and then restarted (its new incarnation has
/// no group state and has not joined again) is not a member of the view the
/// flush installs. Listed there as its old self, it would be a dead member
/// of a live view: its acks never come, so the stable point and Safe
/// delivery stand still until yet another flush removes it.
///
/// Five configured nodes, the group `[1, 2, 3]`. Node 1 (the coordinator)
/// crashes; node 5 hears nothing but is heard, so the flush leader waits a
/// failure timeout for its promise, and in that time the other member,
/// which had promised as a member, restarts (from its disk) and is heard
/// again in its next incarnation.
#[test]
fn a_member_that_restarts_during_a_flush_is_not_in_the_view_it_installs() {
    let mut net = Setup::new(5).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    for i in 0..6u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
    }
    net.run(20);
    net.deaf[4] = true;
    net.keep = Some(|_, _, body| matches!(body, Body::Promise { state: Some(_), .. }));
    net.crash(1);
    assert!(
        net.run_until(200, |n| n.kept.iter().any(|(from, to, _)| from != to)),
        "no member promised to a flush leader"
    );
    let (member, leader) = {
        let (from, to, _) = net.kept.iter().find(|(from, to, _)| from != to).unwrap();
        (from.0, to.0)
    };
    net.keep = None;
    let range = config(NodeId(member), &[NodeId(member)], 0).protocol;
    net.crash(member);
    net.recover(member, range);
    assert!(
        net.run_until(300, |n| n
            .views(leader)
            .iter()
            .any(|(v, r, _)| *r == Reason::Failed(vec![NodeId(1)])
                || v.members == vec![NodeId(leader)])),
        "node {leader} installed no view after the flush: {:?}",
        net.views(leader)
    );
    net.run(100);
    let since = net.views(leader);
    let after_crash: Vec<&(View, Reason, u64)> = since
        .iter()
        .skip_while(|(v, _, _)| v.members.contains(&NodeId(1)))
        .collect();
    assert!(!after_crash.is_empty());
    for (v, r, p) in after_crash {
        assert!(
            !v.members.contains(&NodeId(member)),
            "node {leader} installed {v:?} ({r:?} at {p}) with node {member}, whose incarnation \
             that answered the flush is gone"
        );
    }
    assert!(!net.engine(member).is_member(g));
    // The group goes on without it.
    net.send(leader, g, b"after");
    net.run(20);
    assert_eq!(net.deliveries(leader).last().unwrap().1, b"after".to_vec());
}

/// A message of a failed incarnation that the flush removing it did not
/// order is never delivered: the survivors agreed, in the flush, on the
/// old view's messages, and the failed incarnation is a member of no later
/// view. The sequencer orders a member's messages only from the incarnation
/// its view lists, so a late copy of such a message is dropped even when
/// the node is a member again in its next incarnation.
///
/// Node 3 multicasts `old` (its first message), which only node 2 receives,
/// and late (everything node 3 sends node 2 is held in the network). Node 3
/// then restarts at once; node 1 sees the new incarnation, flushes the old
/// one out without `old` and admits the new one. Node 1 leaves, handing the
/// sequencer role to node 2, which has heard nothing of node 3's new
/// incarnation (it still counts its old one as alive). Then the held copy of
/// `old` reaches node 2.
#[test]
fn a_late_message_of_a_failed_incarnation_is_not_ordered_after_its_restart() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    net.send(1, g, b"a");
    net.run(20);
    net.lose = Some(|from, to, body| {
        from == NodeId(3) && to == NodeId(1) && matches!(body, Body::Data { .. })
    });
    net.hold = Some(|from, to, _| from == NodeId(3) && to == NodeId(2));
    assert!(matches!(net.send(3, g, b"old"), Multicast::Sent { .. }));
    net.run(1);
    // A restart, seen by node 1 at once: it flushes node 3's old
    // incarnation out without waiting for a failure timeout.
    let crashed = net.now;
    net.crash(3);
    net.restart(3);
    net.join(3, g);
    assert!(
        net.run_until(100, |n| n.engine(3).is_member(g)
            && n.engine(2).view(g).unwrap().members.contains(&NodeId(3))),
        "node 3 was not admitted again"
    );
    net.lose = None;
    assert!(
        net.views(2)
            .iter()
            .any(|(v, r, _)| *r == Reason::Failed(vec![NodeId(3)])
                && !v.members.contains(&NodeId(3))),
        "node 3's old incarnation was not flushed out: {:?}",
        net.views(2)
    );
    let now = Time(net.now);
    net.engine(1).leave(now, g).unwrap();
    net.drain(0);
    assert!(
        net.run_until(20, |n| n.engine(2).view(g).unwrap().coordinator()
            == Some(NodeId(2))),
        "node 2 did not take the sequencer role over"
    );
    net.run(2);
    // Node 2 still counts node 3 as alive (it heard its old incarnation
    // less than a failure timeout ago) and sequences for it.
    assert!(
        net.now - crashed < 15 * MS,
        "{} ms since the crash",
        (net.now - crashed) / MS
    );
    net.release_held();
    net.run(30);
    net.send(3, g, b"new");
    net.run(30);
    for n in [2, 3] {
        let got: Vec<Vec<u8>> = net.deliveries(n).into_iter().map(|d| d.1).collect();
        assert!(
            !got.contains(&b"old".to_vec()),
            "node {n} delivered the failed incarnation's message: {got:?}"
        );
        assert_eq!(got.last(), Some(&b"new".to_vec()), "node {n}: {got:?}");
    }
}
