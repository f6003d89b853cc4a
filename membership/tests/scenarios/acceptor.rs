use super::*;

/// Runs `engine` dry: the last persisted state (the "disk") and the messages
/// it sent, in order, with a check that every Promise/Accepted was preceded
/// by a Persist that already covers it.
fn drain_with_disk(
    engine: &mut Engine<P>,
    disk: &mut Option<DurableState>,
) -> Vec<(NodeId, Body<P>)> {
    let mut sent = Vec::new();
    while let Some(cmd) = engine.poll_command() {
        match cmd {
            Command::Persist(s) => *disk = Some(s),
            Command::Send { to, msg } => {
                if let Body::Promise { epoch, ballot, .. } | Body::Accepted { epoch, ballot, .. } =
                    &msg.body
                {
                    let d = disk.as_ref().expect("a vote went out before any Persist");
                    let inst = d.groups[0]
                        .instances
                        .iter()
                        .find(|i| i.epoch == *epoch)
                        .expect("the vote's instance is on disk");
                    assert!(
                        inst.promised >= *ballot,
                        "vote sent before it was persisted"
                    );
                }
                sent.push((to, msg.body));
            }
            _ => {}
        }
    }
    sent
}

/// Paxos acceptors must not forget: a node that promised ballot b, or
/// accepted a value, and then crashed and restarted (recovered from its
/// persisted state) refuses lower ballots and reports the accepted value to
/// the next proposer. Without this two values could be decided for one epoch
/// (two different creations of one group).
#[test]
fn restarted_acceptor_remembers_promises_and_accepted_values() {
    let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let g = group();
    let mut disk = None;
    let mut e: Engine<P> = Engine::new(config(NodeId(3), &nodes, 1), Time(0)).unwrap();
    let _ = drain_with_disk(&mut e, &mut disk);
    let b5 = Ballot {
        round: 5,
        leader: 1,
    };
    let msg = |incarnation, body| Message { incarnation, body };
    e.handle_message(
        Time(1),
        NodeId(1),
        msg(
            1,
            Body::Prepare {
                group: g,
                epoch: 1,
                ballot: b5,
            },
        ),
    );
    let out = drain_with_disk(&mut e, &mut disk);
    assert!(
        out.iter().any(|(to, b)| *to == NodeId(1)
            && matches!(b, Body::Promise { ballot, .. } if *ballot == b5))
    );
    let value = Proposal {
        view: View {
            group: g,
            id: ViewId::first_of(1),
            members: vec![NodeId(1)],
            protocol: ProtocolVersion(1),
        },
        cut: 0,
        old_members: Vec::new(),
        next: Vec::new(),
        incarnations: vec![1],
    };
    e.handle_message(
        Time(2),
        NodeId(1),
        msg(
            1,
            Body::Accept {
                group: g,
                epoch: 1,
                ballot: b5,
                proposal: Box::new(value.clone()),
            },
        ),
    );
    let out = drain_with_disk(&mut e, &mut disk);
    assert!(out.iter().any(|(_, b)| matches!(b, Body::Accepted { .. })));

    // Crash and restart from the disk.
    drop(e);
    let state = disk.clone().expect("the votes were persisted");
    assert!(
        Engine::<P>::recover(config(NodeId(3), &nodes, 1), Time(3), state.clone()).is_err(),
        "a recovering node must run a higher incarnation"
    );
    let bytes = state.encode().unwrap();
    let state = DurableState::decode(&bytes).unwrap();
    let mut e: Engine<P> = Engine::recover(config(NodeId(3), &nodes, 2), Time(3), state).unwrap();
    let _ = drain_with_disk(&mut e, &mut disk);

    // A competing proposer with a lower ballot is refused...
    let b3 = Ballot {
        round: 3,
        leader: 2,
    };
    e.handle_message(
        Time(4),
        NodeId(2),
        msg(
            1,
            Body::Prepare {
                group: g,
                epoch: 1,
                ballot: b3,
            },
        ),
    );
    let out = drain_with_disk(&mut e, &mut disk);
    assert!(
        out.iter()
            .any(|(_, b)| matches!(b, Body::Reject { promised, .. } if *promised == b5)),
        "{out:?}"
    );
    // ...and a higher one learns the value accepted before the crash.
    let b9 = Ballot {
        round: 9,
        leader: 2,
    };
    e.handle_message(
        Time(5),
        NodeId(2),
        msg(
            1,
            Body::Prepare {
                group: g,
                epoch: 1,
                ballot: b9,
            },
        ),
    );
    let out = drain_with_disk(&mut e, &mut disk);
    assert!(
        out.iter().any(|(_, b)| matches!(
            b,
            Body::Promise { accepted: Some(a), .. } if a.0 == b5 && a.1 == value
        )),
        "{out:?}"
    );
}
