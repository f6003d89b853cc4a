use super::*;

/// A member multicasts just after it is cut off (the primary never gets the
/// message), reports Partitioned, and while it is still trying to rejoin the
/// application leaves the group; after the heal it joins again with the same
/// incarnation. The accepted message is not lost: the new join sends it
/// again, every member delivers it once, before the sender's later messages.
#[test]
fn a_message_sent_before_a_leave_while_cut_off_is_delivered_after_the_next_join() {
    for mode in [DeliveryMode::Agreed, DeliveryMode::Safe] {
        let mut net = Setup::new(3).mode(mode).start();
        let g = group();
        net.form(g, &[1, 2, 3]);
        net.side = vec![0, 0, 1];
        assert!(matches!(net.send(3, g, b"cut off"), Multicast::Sent { .. }));
        net.run(300);
        assert!(net.logs[2].contains(&Ev::Partitioned), "{mode:?}");
        assert!(!net.engine(3).is_member(g));
        let now = Time(net.now);
        net.engine(3).leave(now, g).unwrap();
        net.drain(2);
        net.side = vec![0, 0, 0];
        net.run(50);
        net.join(3, g);
        net.run(300);
        assert!(
            net.engine(3).is_member(g),
            "{mode:?}: node 3 did not get back in"
        );
        net.send(3, g, b"after");
        net.run(50);
        for n in [1, 2, 3] {
            let mine: Vec<Vec<u8>> = net
                .deliveries(n)
                .into_iter()
                .map(|d| d.1)
                .filter(|p| p == b"cut off" || p == b"after")
                .collect();
            assert_eq!(
                mine,
                vec![b"cut off".to_vec(), b"after".to_vec()],
                "{mode:?}: node {n}"
            );
        }
    }
}

/// No majority anywhere (4 nodes split 2 | 2): node 1, the sequencer, and
/// node 2 deliver node 2's message in their old view (Agreed), which no
/// primary ever orders. Node 1 then leaves while it is rejoining and joins
/// again with the same incarnation, and node 2 (which still holds its
/// message) merges last. Whoever restarts the group, node 1 must not deliver
/// the message a second time: what it delivered of every sender survives the
/// leave. If node 1 restarts the group itself, it continues after what it
/// delivered, as a rejoining member does, not from the older decided cut
/// (which would reuse positions and order the message again, where every
/// member skips it).
#[test]
fn a_member_that_leaves_while_rejoining_and_joins_again_delivers_nothing_twice() {
    for node_1_restarts in [true, false] {
        let mut net = Setup::new(4).start();
        let g = group();
        net.form(g, &[1, 2, 3, 4]);
        net.send(3, g, b"before");
        net.run(20);
        net.side = vec![0, 0, 1, 1];
        net.run(1);
        assert!(matches!(
            net.send(2, g, b"minority"),
            Multicast::Sent { .. }
        ));
        net.run(10);
        for n in [1, 2] {
            assert!(
                net.deliveries(n).iter().any(|d| d.1 == b"minority"),
                "node {n} did not deliver in its old view"
            );
        }
        let last_1 = net.deliveries(1).last().unwrap().0;
        net.run(300);
        for n in 1..=4 {
            assert!(
                net.logs[(n - 1) as usize].contains(&Ev::Partitioned),
                "node {n}"
            );
        }
        // Node 1 abandons its rejoin; so do 3 and 4 if node 1 is to restart.
        let leavers: &[u32] = if node_1_restarts { &[1, 3, 4] } else { &[1] };
        for &n in leavers {
            let now = Time(net.now);
            net.engine(n).leave(now, g).unwrap();
            net.drain((n - 1) as usize);
        }
        if node_1_restarts {
            net.join(1, g);
        }
        net.side = vec![0, 1, 0, 0];
        net.run(300);
        if node_1_restarts {
            let restart = net
                .views(1)
                .into_iter()
                .find(|(v, r, _)| *r == Reason::Join(NodeId(1)) && v.id.epoch() > 1)
                .expect("node 1 restarted the group");
            assert!(
                restart.2 >= last_1,
                "the restart starts after {} although node 1 delivered up to {last_1}",
                restart.2
            );
        } else {
            assert!(net.engine(3).is_member(g) && net.engine(4).is_member(g));
            net.join(1, g);
            net.run(100);
        }
        assert!(net.engine(1).is_member(g), "node 1 did not get back in");
        net.side = vec![0, 0, 0, 0];
        net.run(300);
        assert!(net.engine(2).is_member(g), "node 2 did not merge");
        net.send(2, g, b"after");
        net.run(50);
        for n in [1, 2] {
            let got: Vec<Vec<u8>> = net
                .deliveries(n)
                .into_iter()
                .map(|d| d.1)
                .filter(|p| p == b"minority" || p == b"after")
                .collect();
            assert_eq!(
                got,
                vec![b"minority".to_vec(), b"after".to_vec()],
                "node {n}, node 1 restarts: {node_1_restarts}"
            );
        }
    }
}

/// The deliveries `node` made after its last view change, and that view's
/// position.
fn since_last_view(net: &Net, node: u32) -> (u64, Vec<(u64, Vec<u8>)>) {
    let log = &net.logs[(node - 1) as usize];
    let at = log
        .iter()
        .rposition(|e| matches!(e, Ev::View { .. }))
        .expect("a view");
    let Ev::View { position, .. } = &log[at] else {
        unreachable!()
    };
    let after = log[at + 1..]
        .iter()
        .filter_map(|e| match e {
            Ev::Deliver { seq, payload, .. } => Some((*seq, payload.clone())),
            _ => None,
        })
        .collect();
    (*position, after)
}

/// Two members cut off together (the sequencer n1 and n2, a minority of 5)
/// deliver n2's message the primary never orders; the primary (n3) flushes
/// them out and then leaves. After the heal n1 restarts the group from the
/// decided value it hears of in the `NoGroup` replies (its cut and sender
/// progress, not only its view: positions go on from the cut), and n2
/// merges. n2 re-sends its message, but both members of the new view
/// delivered it already, so the sequencer (alone in its view) does not
/// order it again: a position nobody delivers would be a hole in the total
/// order.
#[test]
fn a_message_both_cut_off_members_delivered_is_not_ordered_again_at_their_merge() {
    let mut net = Setup::new(5).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    for i in 0..3u8 {
        net.send(1 + u32::from(i), g, &[i]);
    }
    net.run(20);
    net.side = vec![0, 0, 1, 1, 1];
    assert!(matches!(
        net.send(2, g, b"minority"),
        Multicast::Sent { .. }
    ));
    net.run(200);
    for n in [1, 2] {
        assert!(net.logs[(n - 1) as usize].contains(&Ev::Partitioned));
        let got: Vec<Vec<u8>> = net.deliveries(n).into_iter().map(|d| d.1).collect();
        assert!(got.contains(&b"minority".to_vec()), "node {n}: {got:?}");
    }
    assert_eq!(net.engine(3).view(g).unwrap().members, vec![NodeId(3)]);
    let primary_last = net.deliveries(3).last().unwrap().0;
    let now = Time(net.now);
    net.engine(3).leave(now, g).unwrap();
    net.drain(2);
    net.run(50);
    assert!(!net.engine(3).is_member(g));
    // n1 first: it restarts the group alone.
    net.side = vec![1, 0, 1, 1, 1];
    net.run(300);
    let view = net
        .engine(1)
        .view(g)
        .expect("n1 restarted the group")
        .clone();
    assert_eq!(view.members, vec![NodeId(1)]);
    let (restart_at, _) = since_last_view(&net, 1);
    assert!(
        restart_at >= primary_last,
        "the restart went back to position {restart_at}; the primary had reached {primary_last}"
    );
    net.side = vec![1, 1, 1, 1, 1];
    net.run(300);
    assert!(net.engine(2).is_member(g), "n2 did not merge");
    assert!(matches!(net.send(2, g, b"after"), Multicast::Sent { .. }));
    net.run(50);
    for n in [1, 2] {
        let (at, after) = since_last_view(&net, n);
        let seqs: Vec<u64> = after.iter().map(|d| d.0).collect();
        assert_eq!(
            seqs,
            vec![at + 1],
            "node {n}: {after:?} after position {at}"
        );
        assert_eq!(after[0].1, b"after".to_vec());
        let minority = net
            .deliveries(n)
            .into_iter()
            .filter(|d| d.1 == b"minority")
            .count();
        assert_eq!(minority, 1, "node {n}");
    }
}

/// Members 1 and 2, cut off together, deliver node 2's message in their
/// old view (Agreed); the primary (node 3 alone) never ordered it. Returns
/// once they have reported Partitioned.
fn deliver_beyond_the_primary_cut(net: &mut Net, g: GroupId) {
    net.form(g, &[1, 2, 3]);
    net.run(20);
    net.side = vec![0, 0, 1, 1, 1];
    assert!(matches!(
        net.send(2, g, b"minority"),
        Multicast::Sent { .. }
    ));
    net.run(200);
    for n in [1, 2] {
        assert!(net.logs[(n - 1) as usize].contains(&Ev::Partitioned));
        let got: Vec<Vec<u8>> = net.deliveries(n).into_iter().map(|d| d.1).collect();
        assert!(got.contains(&b"minority".to_vec()), "node {n}: {got:?}");
    }
    assert_eq!(net.engine(3).view(g).unwrap().members, vec![NodeId(3)]);
}

/// Node `n` delivered exactly one message since its last view, `after`, at
/// the position right after the view's, and `minority` once in all.
fn assert_no_hole_after_last_view(net: &Net, n: u32) {
    let (at, after) = since_last_view(net, n);
    let seqs: Vec<u64> = after.iter().map(|d| d.0).collect();
    assert_eq!(
        seqs,
        vec![at + 1],
        "node {n}: {after:?} after position {at}"
    );
    assert_eq!(after[0].1, b"after".to_vec());
    let minority = net
        .deliveries(n)
        .into_iter()
        .filter(|d| d.1 == b"minority")
        .count();
    assert_eq!(minority, 1, "node {n}");
}

/// Nodes 1 and 2 delivered node 2's message beyond the primary's cut; the
/// primary's sole member, node 3, admits both again and (rightly: it lacks
/// the message) orders node 2's stream from it. Node 3 crashes before it
/// has the re-sent copy, and a flush to `[1, 2]` that ordered it again would
/// leave a position both skip as a duplicate (a hole nobody delivers). Each
/// promise carries the member's delivered marks, and the new epoch resumes
/// every stream after what every member of the new view delivered.
#[test]
fn a_flush_does_not_order_again_what_every_member_of_the_new_view_delivered() {
    let mut net = Setup::new(5).start();
    let g = group();
    deliver_beyond_the_primary_cut(&mut net, g);
    net.side = vec![1, 0, 1, 1, 1];
    assert!(
        net.run_until(300, |n| n.engine(1).is_member(g)),
        "n1 did not merge"
    );
    net.run(10);
    net.side = vec![1, 1, 1, 1, 1];
    assert!(
        net.run_until(300, |n| n.engine(2).is_member(g)),
        "n2 did not merge"
    );
    // Node 2 re-sends its message now; node 3 never gets it.
    net.crash(3);
    net.run(300);
    for n in [1, 2] {
        let view = net.engine(n).view(g).expect("a member").clone();
        assert_eq!(view.members, vec![NodeId(1), NodeId(2)], "node {n}");
    }
    assert!(matches!(net.send(2, g, b"after"), Multicast::Sent { .. }));
    net.run(50);
    for n in [1, 2] {
        assert_no_hole_after_last_view(&net, n);
    }
}

/// As above, but node 3, the sequencer that admitted node 2 and still
/// lacked its message, leaves before ordering the re-sent copy. Node 2
/// takes the sequencer role over alone; ordering its own message again
/// would leave a position it skips. A sequencer alone in its view after a
/// Leave does not order again what it delivered itself.
#[test]
fn a_sequencer_left_alone_does_not_order_again_what_it_delivered() {
    let mut net = Setup::new(5).start();
    let g = group();
    deliver_beyond_the_primary_cut(&mut net, g);
    // Node 1 stays cut off; node 2 merges.
    net.side = vec![0, 1, 1, 1, 1];
    assert!(
        net.run_until(300, |n| n.engine(2).is_member(g)),
        "n2 did not merge"
    );
    // Node 2 re-sends its message now; node 3 leaves before it arrives.
    let now = Time(net.now);
    net.engine(3).leave(now, g).unwrap();
    net.drain(2);
    net.run(100);
    assert!(!net.engine(3).is_member(g));
    assert_eq!(net.engine(2).view(g).unwrap().members, vec![NodeId(2)]);
    assert!(matches!(net.send(2, g, b"after"), Multicast::Sent { .. }));
    net.run(50);
    assert_no_hole_after_last_view(&net, 2);
}

/// A joiner that installed its Welcome and then lost the group before its
/// ack reached the sequencer (a one-way cut: the others still hear it, so
/// nobody suspects it) asks to join again. The sequencer still holds that
/// Welcome as unacknowledged; the joiner ignores a copy of a view it
/// installed. After a failure timeout of such requests the sequencer
/// removes and re-admits it, as it does for a silent member.
#[test]
fn a_welcomed_joiner_partitioned_before_its_ack_is_admitted_again() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2]);
    net.lose = Some(|from, to, body| {
        from == NodeId(3) && to == NodeId(1) && matches!(body, Body::Ack { .. })
    });
    net.join(3, g);
    assert!(
        net.run_until(100, |n| n.engine(3).is_member(g)),
        "n3 not admitted"
    );
    net.deaf[2] = true;
    assert!(
        net.run_until(200, |n| partitioned_count(n, 3) > 0),
        "n3 did not see itself partitioned"
    );
    net.deaf[2] = false;
    net.lose = None;
    assert!(
        net.run_until(500, |n| n.engine(3).is_member(g)),
        "n3 never admitted again: {:?}",
        net.views(3)
    );
    net.send(3, g, b"back");
    net.run(30);
    for n in 1..=3 {
        assert_eq!(
            net.deliveries(n).last().map(|(_, p)| p.clone()),
            Some(b"back".to_vec()),
            "n{n}"
        );
    }
}

/// Members 1 and 2, cut off together, deliver different prefixes of node
/// 2's stream beyond the primary's cut: node 1 (the sequencer) delivers
/// `m1` and `m2`, node 2 only `m1` (node 1's later order records to it are
/// lost). The primary (node 3) admits both again, orders node 2's stream
/// from `m1` (it holds neither) and crashes before it has the re-sent
/// copies, so the flush to `[1, 2]` decides where node 2's stream resumes.
/// Every member of the new view delivers each message of it exactly once:
/// what one member of the new view delivered and another did not is
/// ordered again (the first skips it as a duplicate), so the stream resumes
/// after the lowest delivered mark of the new view's members.
#[test]
fn a_flush_resumes_a_stream_after_what_every_member_of_the_new_view_delivered() {
    let mut net = Setup::new(5).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    net.run(20);
    net.side = vec![0, 0, 1, 1, 1];
    assert!(matches!(net.send(2, g, b"m1"), Multicast::Sent { .. }));
    assert!(
        net.run_until(10, |n| n.deliveries(2).iter().any(|d| d.1 == b"m1")),
        "node 2 did not deliver m1"
    );
    net.lose = Some(|from, to, body| {
        from == NodeId(1) && to == NodeId(2) && matches!(body, Body::Order { .. })
    });
    assert!(matches!(net.send(2, g, b"m2"), Multicast::Sent { .. }));
    net.run(200);
    net.lose = None;
    let got = |net: &Net, n: u32| -> Vec<Vec<u8>> {
        net.deliveries(n).into_iter().map(|d| d.1).collect()
    };
    for n in [1, 2] {
        assert!(net.logs[(n - 1) as usize].contains(&Ev::Partitioned));
    }
    assert!(got(&net, 1).contains(&b"m2".to_vec()), "{:?}", got(&net, 1));
    assert!(
        !got(&net, 2).contains(&b"m2".to_vec()),
        "{:?}",
        got(&net, 2)
    );
    assert_eq!(net.engine(3).view(g).unwrap().members, vec![NodeId(3)]);
    net.side = vec![1, 0, 1, 1, 1];
    assert!(
        net.run_until(300, |n| n.engine(1).is_member(g)),
        "n1 did not merge"
    );
    net.run(10);
    net.side = vec![1, 1, 1, 1, 1];
    assert!(
        net.run_until(300, |n| n.engine(2).is_member(g)),
        "n2 did not merge"
    );
    // Node 2 re-sends its messages now; node 3 never gets them.
    net.crash(3);
    net.run(300);
    for n in [1, 2] {
        let view = net.engine(n).view(g).expect("a member").clone();
        assert_eq!(view.members, vec![NodeId(1), NodeId(2)], "node {n}");
    }
    assert!(matches!(net.send(2, g, b"after"), Multicast::Sent { .. }));
    net.run(50);
    for n in [1, 2] {
        let got = got(&net, n);
        for m in [&b"m1"[..], b"m2", b"after"] {
            let times = got.iter().filter(|p| p.as_slice() == m).count();
            assert_eq!(
                times,
                1,
                "node {n} delivered {:?} {times} times: {got:?}",
                String::from_utf8_lossy(m)
            );
        }
        let at = |m: &[u8]| got.iter().position(|p| p.as_slice() == m);
        assert!(
            at(b"m1") < at(b"m2") && at(b"m2") < at(b"after"),
            "node {n}: {got:?}"
        );
    }
}
