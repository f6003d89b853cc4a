//! Three real node processes on loopback. Every node multicasts into every
//! group; each writes its delivery log; the simulator's checkers
//! (`concord_membership::check`) verify the logs. Every process a test
//! starts is killed by its `Proc` guard when the test ends, also on failure.

use std::collections::BTreeSet;
use std::time::Duration;

use concord_membership::GroupId;
use concord_tests::{Cluster, Workload, check_all, summary};

const BIN: &str = env!("CARGO_BIN_EXE_concord-test-node");

fn workload(count: u64) -> Workload {
    Workload {
        groups: vec![
            ("orders".into(), "agreed".into()),
            ("audit".into(), "safe".into()),
        ],
        count,
        interval_us: 1000,
        // Generous: debug builds of three nodes share 2 cores with the
        // rest of the machine's work, and a missed deadline is a flush.
        timeouts_ms: (50, 1500),
    }
}

fn groups() -> Vec<u64> {
    vec![
        GroupId::from_name("orders").0,
        GroupId::from_name("audit").0,
    ]
}

/// Waits for quiescence, stops every node, checks the logs, and returns the
/// per-node delivered counts.
fn finish(c: &mut Cluster, up: &[u32]) -> anyhow::Result<Vec<String>> {
    let gs = groups();
    c.wait_for("quiescence", Duration::from_secs(90), |logs| {
        c.quiescent(logs, &gs)
    })?;
    c.quit_all()?;
    let logs = c.logs()?;
    let up: BTreeSet<u32> = up.iter().copied().collect();
    let input = c.checker_logs(&logs, &gs, &up);
    if let Err(v) = check_all(&input) {
        anyhow::bail!("checker: {v}\n{}", summary(&logs));
    }
    let counts = logs
        .iter()
        .map(|l| {
            format!(
                "n{}#{}: {}",
                l.node,
                l.incarnation,
                gs.iter()
                    .map(|g| format!("{} delivered", l.delivered(*g).len()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    Ok(counts)
}

#[test]
fn steady_traffic_in_agreed_and_safe_groups() -> anyhow::Result<()> {
    let mut c = Cluster::start(std::path::Path::new(BIN), 3, workload(300))?;
    let counts = finish(&mut c, &[1, 2, 3])?;
    println!("steady: {counts:?} ; every checker passed");
    Ok(())
}

#[test]
fn kill_9_of_a_member_and_its_restart() -> anyhow::Result<()> {
    let mut c = Cluster::start(std::path::Path::new(BIN), 3, workload(300))?;
    let g = groups()[0];
    c.wait_for("node 3 delivers traffic", Duration::from_secs(60), |logs| {
        logs.iter()
            .any(|l| l.node == 3 && l.delivered(g).len() >= 100)
    })?;
    c.kill9(3);
    c.wait_for(
        "the survivors install a view without 3",
        Duration::from_secs(30),
        |logs| {
            [1u32, 2].iter().all(|&n| {
                logs.iter()
                    .rev()
                    .find(|l| l.node == n)
                    .and_then(|l| l.last_view(g))
                    .is_some_and(|v| !v.members.contains(&3))
            })
        },
    )?;
    c.spawn(3)?;
    let counts = finish(&mut c, &[1, 2, 3])?;
    let logs = c.logs()?;
    let incs: Vec<u64> = logs
        .iter()
        .filter(|l| l.node == 3)
        .map(|l| l.incarnation)
        .collect();
    assert_eq!(incs.len(), 2, "node 3 ran twice: {incs:?}");
    assert!(
        incs[1] > incs[0],
        "the restart runs a new incarnation: {incs:?}"
    );
    println!("kill -9: {counts:?} ; node 3 incarnations {incs:?} ; every checker passed");
    Ok(())
}

#[test]
fn graceful_stop_and_restart_of_the_sequencers_node() -> anyhow::Result<()> {
    let mut c = Cluster::start(std::path::Path::new(BIN), 3, workload(300))?;
    let g = groups()[0];
    let mut seq = 0;
    c.wait_for("traffic in a view of 3", Duration::from_secs(60), |logs| {
        logs.iter().any(|l| {
            l.delivered(g).len() >= 100
                && l.last_view(g).is_some_and(|v| {
                    seq = v.members[0];
                    v.members.len() == 3
                })
        })
    })?;
    c.stop(seq)?;
    c.wait_for(
        "the others install a view without the sequencer",
        Duration::from_secs(30),
        |logs| {
            (1..=3u32).filter(|&n| n != seq).all(|n| {
                logs.iter()
                    .rev()
                    .find(|l| l.node == n)
                    .and_then(|l| l.last_view(g))
                    .is_some_and(|v| !v.members.contains(&seq))
            })
        },
    )?;
    c.spawn(seq)?;
    let counts = finish(&mut c, &[1, 2, 3])?;
    println!("sequencer n{seq} stopped and restarted: {counts:?} ; every checker passed");
    Ok(())
}
