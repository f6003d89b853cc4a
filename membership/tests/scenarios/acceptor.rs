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

/// Paxos phase 2a: a proposer whose promises report different accepted
/// values proposes the one of the highest ballot, because that one may have
/// been decided by a majority the proposer does not hear from. Here node 3
/// led ballot (2, 3) for epoch 1 and got node 1's acceptance (with its own,
/// a majority of three: its value is decided) and crashed before it sent
/// `Decided`. Node 2 had accepted an older proposal at ballot (1, 2), which
/// a minority holds. Node 1 then creates the group: its own promise reports
/// the decided value, node 2's the older one. Proposing the older one would
/// decide a second value for epoch 1 (two creations of one group).
#[test]
fn a_proposer_adopts_the_accepted_value_of_the_highest_ballot() {
    let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let g = group();
    let mut disk = None;
    let mut e: Engine<P> = Engine::new(config(NodeId(1), &nodes, 1), Time(0)).unwrap();
    let _ = drain_with_disk(&mut e, &mut disk);
    let msg = |body| Message {
        incarnation: 1,
        body,
    };
    let created_by = |node: u32| Proposal {
        view: View {
            group: g,
            id: ViewId::first_of(1),
            members: vec![NodeId(node)],
            protocol: ProtocolVersion(1),
        },
        cut: 0,
        old_members: Vec::new(),
        next: Vec::new(),
        incarnations: vec![1],
    };
    let (older, decided) = (created_by(2), created_by(3));
    let b_older = Ballot {
        round: 1,
        leader: 2,
    };
    let b_decided = Ballot {
        round: 2,
        leader: 3,
    };
    e.handle_message(
        Time(MS),
        NodeId(3),
        msg(Body::Prepare {
            group: g,
            epoch: 1,
            ballot: b_decided,
        }),
    );
    e.handle_message(
        Time(MS),
        NodeId(3),
        msg(Body::Accept {
            group: g,
            epoch: 1,
            ballot: b_decided,
            proposal: Box::new(decided.clone()),
        }),
    );
    let out = drain_with_disk(&mut e, &mut disk);
    assert!(
        out.iter()
            .any(|(to, b)| *to == NodeId(3) && matches!(b, Body::Accepted { .. })),
        "{out:?}"
    );

    // Node 3 is gone; node 1 joins, node 2 answers as a non-member that
    // accepted the older value.
    e.join(Time(2 * MS), g, DeliveryMode::Agreed).unwrap();
    let mut proposed = None;
    for t in 3..200u64 {
        let now = Time(t * MS);
        e.handle_message(now, NodeId(2), msg(Body::Heartbeat));
        e.tick(now);
        for (to, body) in drain_with_disk(&mut e, &mut disk) {
            if to != NodeId(2) {
                continue;
            }
            match body {
                Body::JoinRequest { .. } => e.handle_message(
                    now,
                    NodeId(2),
                    msg(Body::NoGroup {
                        group: g,
                        known: None,
                    }),
                ),
                Body::Prepare { epoch, ballot, .. } => e.handle_message(
                    now,
                    NodeId(2),
                    msg(Body::Promise {
                        group: g,
                        epoch,
                        ballot,
                        accepted: Some(Box::new((b_older, older.clone()))),
                        state: None,
                    }),
                ),
                Body::Accept { proposal, .. } => proposed = Some(*proposal),
                _ => {}
            }
        }
        if proposed.is_some() {
            break;
        }
    }
    let proposed = proposed.expect("node 1 proposed no value for epoch 1");
    assert_eq!(
        proposed, decided,
        "node 1 proposed a value other than the one a majority accepted"
    );
}
