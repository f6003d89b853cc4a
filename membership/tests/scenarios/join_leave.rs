use super::*;

#[test]
fn graceful_leave_causes_no_flush_and_no_timeout() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    for i in 0..10u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
    }
    let now = Time(net.now);
    net.engine(3).leave(now, g).unwrap();
    net.drain(2);
    for i in 10..20u8 {
        net.send(1 + u32::from(i % 2), g, &[i]);
    }
    net.run(50);
    assert!(!net.engine(3).is_member(g));
    assert_eq!(
        net.engine(1).view(g).unwrap().members,
        vec![NodeId(1), NodeId(2)]
    );
    let leave = Reason::Leave(NodeId(3));
    let p1 = position_of(&net.views(1), &leave).expect("node 1 saw the leave");
    assert_eq!(Some(p1), position_of(&net.views(2), &leave));
    assert_eq!(Some(p1), position_of(&net.views(3), &leave));
    // Node 3 delivered exactly the prefix before its Leave; 1 and 2 all 20.
    assert_same(&net, 1, 2);
    assert_eq!(net.deliveries(1).len(), 20);
    let before: Vec<_> = net
        .deliveries(1)
        .into_iter()
        .filter(|(s, _)| *s < p1)
        .collect();
    assert_eq!(net.deliveries(3), before);
    assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
}

#[test]
fn join_causes_no_flush_and_no_timeout() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2]);
    for i in 0..10u8 {
        net.send(1 + u32::from(i % 2), g, &[i]);
    }
    net.join(3, g);
    for i in 10..20u8 {
        net.send(1 + u32::from(i % 2), g, &[i]);
        net.run(1);
    }
    net.run(50);
    for i in 20..30u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
    }
    net.run(50);
    let join = Reason::Join(NodeId(3));
    let p = position_of(&net.views(1), &join).expect("node 1 saw the join");
    assert_eq!(Some(p), position_of(&net.views(2), &join));
    assert_eq!(Some(p), position_of(&net.views(3), &join));
    assert_same(&net, 1, 2);
    assert_eq!(net.deliveries(1).len(), 30);
    // The joiner delivers exactly what was ordered after its Join.
    let after: Vec<_> = net
        .deliveries(1)
        .into_iter()
        .filter(|(s, _)| *s > p)
        .collect();
    assert_eq!(net.deliveries(3), after);
    assert!(!after.is_empty());
    assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
}

#[test]
fn leaving_coordinator_hands_over_sequencer() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    for i in 0..10u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
    }
    let now = Time(net.now);
    net.engine(1).leave(now, g).unwrap();
    net.drain(0);
    for i in 10..30u8 {
        net.send(2 + u32::from(i % 2), g, &[i]);
        net.run(1);
    }
    net.run(50);
    let view = net.engine(2).view(g).unwrap().clone();
    assert_eq!(view.members, vec![NodeId(2), NodeId(3)]);
    assert_eq!(view.coordinator(), Some(NodeId(2)));
    assert_same(&net, 2, 3);
    assert_eq!(net.deliveries(2).len(), 30);
    let leave = Reason::Leave(NodeId(1));
    let p = position_of(&net.views(2), &leave).unwrap();
    assert_eq!(Some(p), position_of(&net.views(1), &leave));
    assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
}

/// A Safe-mode leaver waits for its Leave entry to become stable, but it is
/// no longer a target of the order records. The
/// coordinator tells it when it installs the Leave (and any member answers
/// a retried LeaveRequest), so the leave completes in both modes, for a
/// member and for the coordinator, without a flush or a timeout. A join
/// while the leave is in progress is refused.
#[test]
fn a_graceful_leave_completes_in_both_modes_for_member_and_coordinator() {
    for mode in [DeliveryMode::Agreed, DeliveryMode::Safe] {
        for leaver in [3u32, 1] {
            let mut net = Setup::new(3).mode(mode).start();
            let g = group();
            net.form(g, &[1, 2, 3]);
            for i in 0..10u8 {
                net.send(1 + u32::from(i % 3), g, &[i]);
            }
            let now = Time(net.now);
            net.engine(leaver).leave(now, g).unwrap();
            assert!(matches!(
                net.engine(leaver).join(now, g, mode),
                Err(concord_membership::JoinError::InProgress { .. })
            ));
            net.drain((leaver - 1) as usize);
            net.run(50);
            let what = format!("{mode:?}, node {leaver} leaving");
            assert!(!net.engine(leaver).is_member(g), "{what}: still a member");
            let leave = Reason::Leave(NodeId(leaver));
            let stay: Vec<u32> = [1u32, 2, 3].into_iter().filter(|n| *n != leaver).collect();
            let p = position_of(&net.views(stay[0]), &leave).expect("the leave was installed");
            assert_eq!(Some(p), position_of(&net.views(stay[1]), &leave), "{what}");
            assert_eq!(Some(p), position_of(&net.views(leaver), &leave), "{what}");
            assert_same(&net, stay[0], stay[1]);
            assert_eq!(net.deliveries(stay[0]).len(), 10, "{what}");
            let before: Vec<_> = net
                .deliveries(stay[0])
                .into_iter()
                .filter(|(s, _)| *s < p)
                .collect();
            assert_eq!(net.deliveries(leaver), before, "{what}");
            assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
            // The group goes on, and the leaver can come back.
            net.send(stay[1], g, b"after");
            net.join(leaver, g);
            net.run(50);
            assert!(net.engine(leaver).is_member(g), "{what}: did not rejoin");
            assert_eq!(net.deliveries(stay[0]).len(), 11, "{what}");
            assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
        }
    }
}

/// A leaver that misses a message ordered before its Leave fetches it by
/// NACK. The stable point (and so every member's release of entries and
/// payloads) waits for the leaver up to its own Leave: were it to stop
/// counting when its Leave is ordered, everyone would release the message,
/// and the leaver would wait for it for ever.
#[test]
fn a_leaver_still_gets_what_was_ordered_before_its_leave() {
    for mode in [DeliveryMode::Agreed, DeliveryMode::Safe] {
        let mut net = Setup::new(3).mode(mode).start();
        let g = group();
        net.form(g, &[1, 2, 3]);
        net.deaf[2] = true;
        net.send(1, g, b"missed");
        let now = Time(net.now);
        net.engine(3).leave(now, g).unwrap();
        net.drain(2);
        net.run(5);
        net.deaf[2] = false;
        net.run(50);
        assert!(
            !net.engine(3).is_member(g),
            "{mode:?}: node 3 still leaving"
        );
        assert_eq!(net.deliveries(3), net.deliveries(1), "{mode:?}");
        assert_eq!(net.deliveries(3).len(), 1, "{mode:?}");
        let leave = Reason::Leave(NodeId(3));
        let p = position_of(&net.views(1), &leave).expect("the leave was installed");
        assert_eq!(Some(p), position_of(&net.views(3), &leave), "{mode:?}");
        assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
    }
}

/// A leaving coordinator's last order record (its own Leave) is lost on the
/// way to one member. Until its Leave is stable it
/// keeps sending the empty order record that says where the order ends, so
/// that member NACKs the Leave, acks it, and everyone installs it.
#[test]
fn a_leaving_coordinator_whose_last_record_is_lost_still_completes() {
    for mode in [DeliveryMode::Agreed, DeliveryMode::Safe] {
        let mut net = Setup::new(3).mode(mode).start();
        let g = group();
        net.form(g, &[1, 2, 3]);
        net.send(2, g, b"before");
        net.run(5);
        net.deaf[2] = true;
        let now = Time(net.now);
        net.engine(1).leave(now, g).unwrap();
        net.drain(0);
        net.run(3);
        net.deaf[2] = false;
        net.run(50);
        assert!(
            !net.engine(1).is_member(g),
            "{mode:?}: node 1 still leaving"
        );
        let leave = Reason::Leave(NodeId(1));
        let p = position_of(&net.views(2), &leave).expect("node 2 installed the leave");
        assert_eq!(Some(p), position_of(&net.views(3), &leave), "{mode:?}");
        assert_eq!(Some(p), position_of(&net.views(1), &leave), "{mode:?}");
        net.send(3, g, b"after");
        net.run(20);
        assert_same(&net, 2, 3);
        assert_eq!(net.deliveries(2).last().unwrap().1, b"after".to_vec());
        assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
    }
}

/// A coordinator leaves while the only other member of its view is gone
/// (crashed here). Its Leave is never stable, so it flushes; no member of
/// the view at the cut (after its own Leave) answers, and the flush must
/// still decide, with no member, so that the leave ends and a restarted node
/// can restart the group. A leader that dropped such a flush would start it
/// again every tick for ever, believe it is a member for ever, and the
/// restarted node would never be admitted (it asks the leaver, which orders
/// nothing more).
#[test]
fn a_leaving_coordinator_whose_last_peer_is_gone_ends_its_leave() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2]);
    for i in 0..6u8 {
        net.send(1 + u32::from(i % 2), g, &[i]);
    }
    net.run(10);
    assert_eq!(net.deliveries(1).len(), 6);
    net.crash(2);
    let now = Time(net.now);
    net.engine(1).leave(now, g).unwrap();
    net.drain(0);
    net.run(300);
    assert!(
        !net.engine(1).is_member(g),
        "the leaver still believes it is a member: {:?}",
        net.views(1)
    );
    assert_eq!(
        position_of(&net.views(1), &Reason::Leave(NodeId(1))),
        None,
        "the leaver installed a Leave view nobody else installed"
    );
    assert_eq!(partitioned_count(&net, 1), 1);
    // The restarted node restarts the group, after the history node 1 ran.
    net.restart(2);
    net.join(2, g);
    net.run(300);
    assert!(net.engine(2).is_member(g), "node 2#1 was not admitted");
    assert!(!net.engine(1).is_member(g));
    let v2 = net.views(2);
    let (view, _, at) = v2.last().unwrap();
    assert_eq!(view.members, vec![NodeId(2)]);
    assert!(
        *at > 6,
        "the restart reused positions: view {view:?} at {at}"
    );
    net.send(2, g, b"after");
    net.run(20);
    assert_eq!(net.deliveries(2).last().unwrap().1, b"after".to_vec());
}

/// A node gives its join up (`leave` while joining) after the sequencer has
/// already ordered its Join. The group counts it as a member, but it holds
/// nothing of the group and never acks, so the stable point would stand
/// still for ever (Safe mode delivering nothing more, no view change
/// installed). The Welcome it gets is answered with a LeaveRequest, and the
/// Leave of a joiner that never acknowledged its Welcome does not wait for
/// its ack.
#[test]
fn a_joiner_that_gave_up_after_its_join_was_ordered_is_removed_again() {
    let mut net = Setup::new(3).mode(DeliveryMode::Safe).start();
    let g = group();
    net.form(g, &[1, 2]);
    net.join(3, g);
    let now = Time(net.now);
    net.engine(3).leave(now, g).unwrap();
    net.drain(2);
    net.run(100);
    assert!(!net.engine(3).is_member(g));
    assert!(
        position_of(&net.views(1), &Reason::Join(NodeId(3))).is_some(),
        "the sequencer never ordered the Join (the scenario did not happen)"
    );
    assert_eq!(
        net.engine(1).view(g).unwrap().members,
        vec![NodeId(1), NodeId(2)],
        "node 3 is still counted as a member"
    );
    net.send(2, g, b"after");
    net.run(50);
    assert_eq!(
        net.deliveries(1).last().map(|(_, p)| p.clone()),
        Some(b"after".to_vec())
    );
    assert_same(&net, 1, 2);
    // It can join again when it wants to.
    net.join(3, g);
    net.run(100);
    assert!(net.engine(3).is_member(g), "node 3 was not admitted again");
}

/// A node restarts (a new incarnation) and joins again while a Welcome for
/// its previous incarnation is still on its way. That Welcome admits the old
/// incarnation, not the new one (the members count the old one): installing
/// it would give the new incarnation a view and position the group never
/// gave it, and a later flush in that group would never end. A joiner
/// installs only a Welcome that names its own incarnation.
#[test]
fn a_welcome_for_an_earlier_incarnation_is_not_installed() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    net.crash(3);
    net.run(100);
    net.restart(3);
    net.keep = Some(|_, to, body| to == NodeId(3) && matches!(body, Body::Welcome { .. }));
    net.join(3, g);
    net.run(50);
    assert!(net.engine(3).is_member(g), "node 3#1 was not admitted");
    let (from, _, welcome) = net
        .kept
        .first()
        .cloned()
        .expect("a Welcome went to node 3#1");
    net.keep = None;
    // Node 3 restarts again and joins; the old Welcome arrives late.
    net.crash(3);
    net.restart(3);
    let seen = net.logs[2].len();
    net.join(3, g);
    let now = Time(net.now);
    net.engine(3).handle_message(now, from, welcome);
    net.drain(2);
    assert!(
        !net.engine(3).is_member(g),
        "node 3#2 installed the Welcome of 3#1: {:?}",
        &net.logs[2][seen..]
    );
    // It is admitted in its own right, at the position every member reports.
    net.run(200);
    assert!(net.engine(3).is_member(g), "node 3#2 was not admitted");
    let join = Reason::Join(NodeId(3));
    let last_join = |views: Vec<(View, Reason, u64)>| {
        views
            .into_iter()
            .rev()
            .find(|(_, r, _)| *r == join)
            .map(|(v, _, p)| (v.id, p))
    };
    let at1 = last_join(net.views(1)).expect("node 1 admitted node 3");
    assert_eq!(Some(at1), last_join(net.views(3)));
    assert_eq!(Some(at1), last_join(net.views(2)));
}

/// A member's silence is counted from its admission. Node 3 was a member
/// (its acks were heard), left, restarted and joined again; a copy of its
/// JoinRequest that is still on its way when it is welcomed, and arrives
/// after it acknowledged, is a stale copy. Measured from the last ack of
/// node 3's previous membership, the silence would remove the just-welcomed
/// member and admit it again, and the positions that member had not fetched
/// yet would become stable without it: a later flush would wait for them
/// for ever.
#[test]
fn a_stale_join_request_of_a_just_welcomed_member_does_not_remove_it() {
    let mut net = Setup::new(3).mode(DeliveryMode::Safe).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    net.send(3, g, b"before");
    net.run(30);
    let now = Time(net.now);
    net.engine(3).leave(now, g).unwrap();
    net.drain(2);
    net.run(100);
    assert!(!net.engine(3).is_member(g), "node 3 did not leave");
    net.restart(3);
    net.keep = Some(|_, to, body| to == NodeId(1) && matches!(body, Body::JoinRequest { .. }));
    // Node 3#1's Ack messages are lost for a while (fewer than a failure
    // timeout): it acknowledges its Welcome with its first message, and the
    // old copy of its request arrives then.
    net.lose = Some(|from, to, body| {
        from == NodeId(3) && to == NodeId(1) && matches!(body, Body::Ack { .. })
    });
    net.join(3, g);
    assert!(
        net.run_until(100, |n| n.engine(3).is_member(g)),
        "node 3#1 was not admitted"
    );
    let (from, _, request) = net
        .kept
        .first()
        .cloned()
        .expect("a JoinRequest went to node 1");
    net.keep = None;
    net.send(3, g, b"first");
    net.run(2);
    let leave = Reason::Leave(NodeId(3));
    let leaves = |net: &Net| net.views(1).iter().filter(|(_, r, _)| *r == leave).count();
    let before = leaves(&net);
    let views_before = net.views(1).len();
    let now = Time(net.now);
    net.engine(1).handle_message(now, from, request);
    net.drain(0);
    net.run(5);
    net.lose = None;
    net.run(100);
    assert_eq!(
        leaves(&net),
        before,
        "the stale request removed node 3 again: {:?}",
        &net.views(1)[views_before..]
    );
    assert!(net.engine(3).is_member(g));
    net.send(2, g, b"after");
    net.run(50);
    assert_eq!(
        net.deliveries(3).last().map(|(_, p)| p.clone()),
        Some(b"after".to_vec())
    );
    assert_same(&net, 1, 2);
}
