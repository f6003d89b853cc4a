use super::*;

#[test]
fn minority_partition_stops_delivering_and_reports_it() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    net.send(1, g, b"before");
    net.run(10);
    net.side = vec![0, 0, 1];
    net.run(5);
    let before_3 = net.deliveries(3).len();
    for i in 0..10u8 {
        net.send(1 + u32::from(i % 2), g, &[i]);
    }
    net.run(300);
    assert!(
        net.logs[2].contains(&Ev::Partitioned),
        "node 3 did not report"
    );
    assert!(!net.engine(3).is_member(g));
    let now = Time(net.now);
    assert!(matches!(
        net.engine(3).multicast(now, g, b"x".as_slice().into()),
        Err(concord_membership::MulticastError::Partitioned { .. })
    ));
    // Nothing multicast in the majority after the cut reached node 3.
    assert_eq!(net.deliveries(3).len(), before_3);
    let failed = Reason::Failed(vec![NodeId(3)]);
    assert!(position_of(&net.views(1), &failed).is_some());
    assert_eq!(net.deliveries(1).len(), 11);
    assert_same(&net, 1, 2);
}

#[test]
fn heal_then_minority_rejoins_primary() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    net.side = vec![0, 0, 1];
    net.run(200);
    assert!(!net.engine(3).is_member(g));
    net.send(1, g, b"during");
    net.run(10);
    net.side = vec![0, 0, 0];
    net.run(300);
    assert!(net.engine(3).is_member(g), "node 3 did not rejoin");
    let p = position_of(&net.views(1), &Reason::Merged).expect("primary ordered the merge");
    assert_eq!(Some(p), position_of(&net.views(3), &Reason::Merged));
    net.send(3, g, b"back");
    net.run(20);
    let last = |n: u32| net.deliveries(n).last().cloned();
    assert_eq!(last(1), last(3));
    assert_eq!(last(2), last(3));
    assert_eq!(last(3).unwrap().1, b"back".to_vec());
    // Nothing from the primary's partition period is delivered at node 3.
    assert!(!net.deliveries(3).iter().any(|(_, p)| p == b"during"));
}

/// A sequencer cut off alone orders its own Leave. It must not install the
/// view without itself, which the primary
/// never installs (the primary flushes it out instead): a view change waits
/// until every member holds the entry, in Agreed mode too. Cut off, it
/// reports Partitioned and, as the application asked to leave, does not
/// rejoin after the heal.
#[test]
fn a_cut_off_leaving_sequencer_installs_no_view_of_its_own() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    for i in 0..6u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
    }
    net.run(10);
    net.side = vec![1, 0, 0];
    let now = Time(net.now);
    net.engine(1).leave(now, g).unwrap();
    net.drain(0);
    net.run(300);
    assert_eq!(
        position_of(&net.views(1), &Reason::Leave(NodeId(1))),
        None,
        "the cut-off leaver installed its Leave view: {:?}",
        net.views(1)
    );
    assert_eq!(partitioned_count(&net, 1), 1);
    assert!(!net.engine(1).is_member(g));
    let failed = Reason::Failed(vec![NodeId(1)]);
    let p2 = position_of(&net.views(2), &failed).expect("the primary flushed node 1 out");
    assert_eq!(Some(p2), position_of(&net.views(3), &failed));
    // After the heal the leaver stays out: it asked to leave.
    net.side = vec![0, 0, 0];
    net.run(200);
    assert!(!net.engine(1).is_member(g));
    assert_eq!(position_of(&net.views(1), &Reason::Merged), None);
    assert_eq!(
        net.engine(2).view(g).unwrap().members,
        vec![NodeId(2), NodeId(3)]
    );
    // And it can join again when it wants to.
    net.join(1, g);
    net.run(50);
    assert!(net.engine(1).is_member(g));
    let join = Reason::Join(NodeId(1));
    let last_join = |views: Vec<(View, Reason, u64)>| {
        views
            .into_iter()
            .rev()
            .find(|(_, r, _)| *r == join)
            .map(|(_, _, p)| p)
    };
    let p = last_join(net.views(2)).expect("the primary admitted node 1");
    assert_eq!(Some(p), last_join(net.views(1)));
    assert!(p > p2);
}

/// A node admitted again after a partition still suspects the peers it
/// could not hear while it was cut off. Those
/// suspicions are older than its admission and must not make it report
/// Partitioned (or start a flush) right after its Merged view.
#[test]
fn a_merged_member_ignores_suspicions_from_before_its_readmission() {
    let mut net = Setup::new(5).start();
    let g = group();
    net.form(g, &[1, 2, 3, 4, 5]);
    net.side = vec![0, 0, 0, 0, 1];
    net.run(200);
    assert!(!net.engine(5).is_member(g));
    assert_eq!(partitioned_count(&net, 5), 1);
    // Heal, but node 5 hears only the coordinator for a few milliseconds.
    net.side = vec![0; 5];
    net.cut = vec![(5, 2), (5, 3), (5, 4)];
    let mut waited = 0;
    while !net.engine(5).is_member(g) {
        net.run(1);
        waited += 1;
        assert!(waited < 200, "node 5 was not admitted again");
    }
    net.run(3);
    net.cut.clear();
    net.run(200);
    assert_eq!(partitioned_count(&net, 5), 1, "{:?}", net.views(5));
    assert!(net.engine(5).is_member(g));
    let p = position_of(&net.views(1), &Reason::Merged).expect("the primary merged node 5");
    assert_eq!(Some(p), position_of(&net.views(5), &Reason::Merged));
    net.send(5, g, b"back");
    net.run(20);
    for n in 1..=5 {
        assert_eq!(net.deliveries(n).last().unwrap().1, b"back".to_vec());
    }
}

/// A node that saw itself partitioned while the others still count it as a
/// member (it could not hear them; they heard it) asks to join again. The
/// coordinator removes it and admits it again, ordered back to back. A
/// coordinator that ignored a join request from a member would leave the
/// node out for ever, and in Safe mode the stable point would wait for its
/// acks for ever.
#[test]
fn a_member_that_saw_itself_partitioned_is_removed_and_admitted_again() {
    let mut net = Setup::new(5).mode(DeliveryMode::Safe).start();
    let g = group();
    net.form(g, &[1, 2, 3, 4, 5]);
    net.deaf[4] = true;
    net.run(60);
    assert_eq!(partitioned_count(&net, 5), 1);
    assert!(!net.engine(5).is_member(g));
    assert_eq!(net.engine(1).view(g).unwrap().members.len(), 5);
    net.send(2, g, b"while 5 is out");
    net.run(60);
    net.deaf[4] = false;
    net.run(100);
    assert!(net.engine(5).is_member(g), "node 5 was not admitted again");
    for n in 1..=4 {
        assert!(
            net.deliveries(n)
                .iter()
                .any(|d| d.1 == b"while 5 is out".to_vec()),
            "node {n}"
        );
    }
    let views1 = net.views(1);
    let left = position_of(&views1, &Reason::Leave(NodeId(5))).expect("node 5 removed");
    let merged = position_of(&views1, &Reason::Merged).expect("node 5 admitted again");
    assert_eq!(merged, left + 1);
    assert_eq!(Some(merged), position_of(&net.views(5), &Reason::Merged));
    assert_eq!(net.stats(1).flushes, 0);
    net.send(5, g, b"back");
    net.run(30);
    for n in 1..=5 {
        assert_eq!(net.deliveries(n).last().unwrap().1, b"back".to_vec());
    }
}

/// The coordinator sees itself partitioned (it cannot hear the others; they
/// hear it) and asks to join again, while the others still count it as
/// their member and sequencer. Only the sequencer admits joiners, so nobody
/// would admit it, nobody would sequence, and the group would stand still
/// for ever. A member whose coordinator asks to join, and whose order
/// records stopped for a failure timeout, counts it as failed: the others
/// flush it out and admit it again.
#[test]
fn a_coordinator_that_saw_itself_partitioned_is_flushed_out_and_admitted_again() {
    for mode in [DeliveryMode::Agreed, DeliveryMode::Safe] {
        let mut net = Setup::new(5).mode(mode).start();
        let g = group();
        net.form(g, &[1, 2, 3, 4, 5]);
        net.deaf[0] = true;
        net.run(60);
        assert_eq!(partitioned_count(&net, 1), 1, "{mode:?}");
        assert!(!net.engine(1).is_member(g), "{mode:?}");
        net.deaf[0] = false;
        net.run(200);
        assert!(
            net.engine(1).is_member(g),
            "{mode:?}: node 1 was not admitted again"
        );
        let failed = Reason::Failed(vec![NodeId(1)]);
        let out = position_of(&net.views(2), &failed).expect("node 1 flushed out");
        let merged = position_of(&net.views(2), &Reason::Merged).expect("node 1 merged");
        assert!(merged > out, "{mode:?}");
        for n in 3..=5 {
            assert_eq!(
                Some(out),
                position_of(&net.views(n), &failed),
                "{mode:?}: node {n}"
            );
        }
        assert_eq!(
            Some(merged),
            position_of(&net.views(1), &Reason::Merged),
            "{mode:?}"
        );
        net.send(2, g, b"after");
        net.send(1, g, b"back");
        net.run(50);
        for n in 1..=5 {
            let got: Vec<Vec<u8>> = net.deliveries(n).into_iter().map(|d| d.1).collect();
            assert!(
                got.ends_with(&[b"after".to_vec(), b"back".to_vec()]),
                "{mode:?}: node {n}"
            );
        }
    }
}

/// A member installs a decided epoch, then sees itself partitioned (so it
/// is joining again), and only then gets a
/// delayed copy of that same decision. It must not install the view again
/// (nor go back to it after a later fast-path view): a (re)joiner installs a
/// decision only for a view above the last one it installed.
#[test]
fn a_delayed_copy_of_an_installed_decision_is_not_installed_again() {
    for join_after_flush in [false, true] {
        let what = format!("a join after the flush: {join_after_flush}");
        let mut net = Setup::new(5).start();
        let g = group();
        net.form(g, &[1, 2, 3, 4, 5]);
        net.crash(5);
        // Keep a copy of the flush decision on its way to node 4.
        net.keep =
            Some(|_, to, body| to == NodeId(4) && matches!(body, Body::Decided { epoch: 2, .. }));
        net.run(200);
        let copy = net.kept.first().cloned();
        let (from, _, decided) = copy.expect("the flush decision went to node 4");
        let flushed = net.engine(4).view(g).unwrap();
        assert_eq!(flushed.id, ViewId::first_of(2), "{what}");
        if join_after_flush {
            net.restart(5);
            net.join(5, g);
            net.run(50);
            assert!(net.engine(5).is_member(g), "{what}");
        }
        net.side = vec![0, 0, 0, 1, 0];
        net.run(100);
        assert_eq!(partitioned_count(&net, 4), 1, "{what}");
        assert!(!net.engine(4).is_member(g), "{what}");
        let before = installed_ids(&net, 4);
        let now = Time(net.now);
        net.engine(4).handle_message(now, from, decided);
        net.drain(3);
        assert_eq!(
            installed_ids(&net, 4),
            before,
            "{what}: installed the stale decision"
        );
        assert!(!net.engine(4).is_member(g), "{what}");
        // After the heal node 4 merges, and its views only go up.
        net.side = vec![0; 5];
        net.run(200);
        assert!(net.engine(4).is_member(g), "{what}");
        let ids = installed_ids(&net, 4);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{what}: {ids:?}");
        let merged = position_of(&net.views(4), &Reason::Merged).expect("node 4 merged");
        assert_eq!(
            Some(merged),
            position_of(&net.views(1), &Reason::Merged),
            "{what}"
        );
    }
}

/// Forms `[1, 2, 3]` (n1 sequences), then lets n1 order and deliver
/// messages whose order records never reach the others, and cuts it off
/// alone. Returns the highest position n1 delivered, above what the
/// others hold.
fn cut_off_beyond_the_cut(net: &mut Net, g: GroupId) -> u64 {
    net.form(g, &[1, 2, 3]);
    net.send(2, g, b"before");
    net.run(10);
    net.lose = Some(|from, _, body| from == NodeId(1) && matches!(body, Body::Order { .. }));
    for i in 0..4u8 {
        net.send(1, g, &[b'a', i]);
    }
    net.run(1);
    let reached = net.deliveries(1).last().unwrap().0;
    let held = net.deliveries(2).last().unwrap().0;
    assert!(reached > held, "n1 delivered nothing beyond what n2 holds");
    net.side = vec![1, 0, 0];
    net.lose = None;
    net.run(200);
    assert!(!net.engine(1).is_member(g));
    reached
}

/// After the heal, n1 is a member again, every view it installed since it
/// was cut off is above `reached`, its positions grow, and its last
/// delivery is the others' last.
fn merged_above(net: &mut Net, g: GroupId, reached: u64) {
    assert!(net.engine(1).is_member(g), "n1 was not merged back");
    let views = net.views(1);
    let cut_off = views
        .iter()
        .position(|(_, r, _)| *r == Reason::Partitioned)
        .expect("n1 saw itself partitioned");
    for (view, reason, at) in &views[cut_off + 1..] {
        assert!(
            *at > reached,
            "n1 delivered up to {reached} and installed {:?} ({reason:?}) at {at}",
            view.id
        );
    }
    net.send(3, g, b"after");
    net.run(30);
    let positions: Vec<u64> = net.deliveries(1).iter().map(|d| d.0).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "n1's positions do not grow: {positions:?}"
    );
    let last = |n: u32| net.deliveries(n).last().cloned();
    assert_eq!(last(1).unwrap().1, b"after".to_vec());
    assert_eq!(last(1), last(2));
    assert_eq!(last(1), last(3));
}

/// The shape of simulator base seed 1814: a sequencer cut off with no order
/// record of its last messages reaching the others delivers them (Agreed)
/// at positions above the cut the others' flush decides. Merged back into
/// the primary in the same era, it must be admitted above every position it
/// delivered: positions grow along its whole history, so it is never handed
/// a position it already used, for another message.
#[test]
fn a_sequencer_cut_off_beyond_the_cut_is_merged_above_what_it_delivered() {
    let mut net = Setup::new(3).start();
    let g = group();
    let reached = cut_off_beyond_the_cut(&mut net, g);
    // The primary orders a message of its own where n1 had delivered
    // another.
    net.send(2, g, b"b");
    net.run(20);
    net.side = vec![0, 0, 0];
    net.run(300);
    let merged = position_of(&net.views(1), &Reason::Merged).expect("n1 merged");
    assert_eq!(Some(merged), position_of(&net.views(2), &Reason::Merged));
    merged_above(&mut net, g, reached);
}

/// The same, with a copy of n1's first JoinRequest (from before it was a
/// member, reporting position 0) reaching the primary's sequencer while n1
/// is cut off: the Join ordered for it lies below what n1 delivered, and
/// n1 must not install its Welcome (it is removed and admitted again above).
#[test]
fn a_welcome_below_what_the_joiner_delivered_is_not_installed() {
    let mut net = Setup::new(3).start();
    let g = group();
    net.keep = Some(|from, to, body| {
        from == NodeId(1) && to == NodeId(2) && matches!(body, Body::JoinRequest { .. })
    });
    let reached = cut_off_beyond_the_cut(&mut net, g);
    let (from, _, request) = net.kept.first().cloned().expect("n1 asked n2");
    net.keep = None;
    let now = Time(net.now);
    net.engine(2).handle_message(now, from, request);
    net.drain(1);
    net.run(20);
    net.side = vec![0, 0, 0];
    net.run(400);
    merged_above(&mut net, g, reached);
}
