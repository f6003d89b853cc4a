use super::*;

/// The highest position node `n` applied: its last delivery or view change.
fn last_position(net: &Net, n: u32) -> u64 {
    let d = net.deliveries(n).last().map_or(0, |(p, _)| *p);
    let v = net.views(n).last().map_or(0, |(_, _, p)| *p);
    d.max(v)
}

/// A member that promised in a flush is frozen at the ready it reported:
/// the flush may decide a cut that ends there, so it acknowledges nothing
/// above it in the old epoch. Otherwise the old sequencer counts a later
/// position as stable and Safe-mode members deliver it while the flush
/// drops it: two histories. Here n2 promises epoch `e + 1` (a Prepare
/// whose leader is never heard again) at ready `r`; the sequencer n1,
/// still leased, orders "m" at `r + 1`, and n2 receives it. n1 must not
/// deliver `r + 1` on n2's word; the flush n2 then runs decides it, and
/// everyone ends with the same history.
#[test]
fn a_promised_member_acks_nothing_above_its_promised_ready() {
    let mut net = Setup::new(3).mode(DeliveryMode::Safe).start();
    let g = group();
    net.form(g, &[1, 2, 3]);
    net.send(3, g, b"before");
    net.run(30);
    let r = last_position(&net, 2);
    assert_eq!(r, last_position(&net, 1));
    let formed = net.views(2).last().unwrap().0.id;
    let epoch = formed.epoch();
    net.keep = Some(|from, to, body| {
        from == NodeId(2) && to == NodeId(1) && matches!(body, Body::Ack { .. })
    });
    // The lease holder's ballot: n2's acceptor promises it at once.
    let now = Time(net.now);
    net.engine(2).handle_message(
        now,
        NodeId(1),
        Message {
            incarnation: 0,
            body: Body::Prepare {
                group: g,
                epoch: epoch + 1,
                ballot: Ballot {
                    round: 1,
                    leader: 1,
                },
            },
        },
    );
    net.drain(1);
    net.run(1);
    net.send(1, g, b"m");
    // Less than a failure timeout: n2 is still frozen, nobody flushes.
    net.run(10);
    let held = net.deliveries(2).iter().any(|(_, p)| p == b"m");
    assert!(!held, "n2 delivered past its promise");
    for (_, _, msg) in &net.kept {
        if let Body::Ack {
            ready, epoch: e, ..
        } = msg.body
        {
            assert!(
                e != epoch || ready <= r,
                "n2 promised ready {r} and then acked {ready} in epoch {e}"
            );
        }
    }
    assert!(
        !net.deliveries(1).iter().any(|(p, _)| *p > r),
        "n1 delivered past n2's promised ready {r}: {:?}",
        net.deliveries(1)
    );
    // n2's freeze outlasts two failure timeouts: it flushes, and "m" is
    // decided and delivered by all three, at one position.
    net.run(300);
    for n in 1..=3 {
        assert!(net.engine(n).is_member(g), "n{n} is no member");
        assert!(
            net.deliveries(n).iter().any(|(_, p)| p == b"m"),
            "n{n} never delivered m: {:?}",
            net.deliveries(n)
        );
    }
    assert_same(&net, 1, 2);
    assert_same(&net, 1, 3);
    // The same chain of views from the formed one on, one flush long.
    let since = |n: u32| -> Vec<ViewId> {
        installed_ids(&net, n)
            .into_iter()
            .filter(|v| *v >= formed)
            .collect()
    };
    assert_eq!(since(1), since(2));
    assert_eq!(since(1), since(3));
    assert_eq!(since(1).last().map(|v| v.epoch()), Some(epoch + 1));
}
