use super::*;

/// Run until `node` reports Partitioned, then give its (re)join up at once:
/// it holds no state for the group any more, before the sequencer's rule
/// for a member that asks to join (a failure timeout of silent acks) can
/// remove and re-admit it.
fn partition_then_give_up(net: &mut Net, node: u32, g: GroupId) {
    assert!(
        net.run_until(400, |net| partitioned_count(net, node) == 1),
        "node {node} never saw itself partitioned"
    );
    let now = Time(net.now);
    net.engine(node).leave(now, g).unwrap();
    net.drain((node - 1) as usize);
    net.run(1);
    assert!(
        net.engine(node).view(g).is_none(),
        "node {node} kept the group"
    );
}

/// A member cut one way (it hears nobody, everyone hears it) sees itself
/// partitioned and gives the group up. Its node goes on heartbeating, so
/// nobody suspects it, and in Safe mode the coordinator's messages wait
/// for its acks for ever. Once it hears the coordinator again it answers
/// the order records with `NotMember`: the coordinator counts it as failed
/// and a flush removes it.
#[test]
fn a_member_that_gave_the_group_up_is_removed_though_its_node_is_heard() {
    let mut net = Setup::new(3).mode(DeliveryMode::Safe).start();
    let g = group();
    net.form(g, &[1, 2]);
    net.deaf[1] = true;
    partition_then_give_up(&mut net, 2, g);
    net.run(20);
    net.deaf[1] = false;
    net.run(400);
    let view = net.engine(1).view(g).expect("node 1 is a member").clone();
    assert_eq!(view.members, vec![NodeId(1)], "{view:?}");
    assert!(matches!(net.send(1, g, b"after"), Multicast::Sent { .. }));
    net.run(20);
    assert_eq!(
        net.deliveries(1).last().map(|d| d.1.clone()),
        Some(b"after".to_vec())
    );
    assert!(net.stats(2).not_member_sent > 0);
    assert!(net.stats(1).not_member_received > 0);
}

/// The coordinator is the one cut one way and gives the group up: its
/// members ack a node that holds nothing for the group and orders nothing
/// more, and hear its heartbeats. Their acks are answered with `NotMember`,
/// so they count it as failed and flush it out; the group goes on.
#[test]
fn members_of_a_coordinator_that_gave_the_group_up_flush_it_out() {
    let mut net = Setup::new(3).mode(DeliveryMode::Safe).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    net.deaf[0] = true;
    partition_then_give_up(&mut net, 1, g);
    net.run(20);
    net.deaf[0] = false;
    net.run(600);
    for n in [2, 3] {
        let view = net.engine(n).view(g).expect("still a member").clone();
        assert_eq!(
            view.members,
            vec![NodeId(2), NodeId(3)],
            "node {n}: {view:?}"
        );
    }
    assert!(matches!(net.send(3, g, b"after"), Multicast::Sent { .. }));
    net.run(20);
    for n in [2, 3] {
        assert_eq!(
            net.deliveries(n).last().map(|d| d.1.clone()),
            Some(b"after".to_vec()),
            "node {n}"
        );
    }
}
