//! Helpers for concord multi-process integration tests: a [`Cluster`] of
//! real node processes (`concord-test-node`) on loopback, and the parser of
//! their logs into the simulator's checker input ([`check::Logs`]).
//!
//! # Log format
//!
//! One record a line, fields separated by spaces, times in `CLOCK_BOOTTIME`
//! nanoseconds (one clock for every process on the host):
//!
//! ```text
//! N <node> <incarnation>                                   first line
//! S <at> <group> <sender_seq> <digest>                     a multicast was accepted
//! D <at> <group> <view> <seq> <sender> <sender_seq> <digest>  a delivery
//! V <at> <group> <view> <protocol> <position> <reason> <members,...>
//! P <at> <group>                                           partitioned
//! END                                                      the process stopped on command
//! ```
//!
//! `reason` is `J:n`, `L:n`, `F:n,m`, `M` or `A:from:to`. A digest is unique
//! per multicast: node, incarnation, group index and counter.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use concord_membership::check::{self, Delivered, Event, Logs, NodeLog, Reason, Sent};

/// One node incarnation's parsed log.
#[derive(Debug, Clone)]
pub struct ParsedLog {
    /// The node.
    pub node: u32,
    /// Its incarnation.
    pub incarnation: u64,
    /// What its application saw.
    pub events: Vec<Event>,
    /// What it multicast.
    pub sent: Vec<Sent>,
    /// Whether it ended with `END`.
    pub ended: bool,
}

impl ParsedLog {
    /// Deliveries in `group`.
    pub fn delivered(&self, group: u64) -> BTreeSet<u64> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Delivery(d) if d.group == group => Some(d.digest),
                _ => None,
            })
            .collect()
    }

    /// When this incarnation's current membership of `group` began: the
    /// first view of its last unbroken run of views that include it.
    pub fn member_since(&self, group: u64) -> Option<u64> {
        let mut since = None;
        for e in &self.events {
            match e {
                Event::View(v) if v.group == group => {
                    if v.members.contains(&self.node) {
                        since.get_or_insert(v.at);
                    } else {
                        since = None;
                    }
                }
                Event::Partitioned { group: g, .. } if *g == group => since = None,
                _ => {}
            }
        }
        since
    }

    /// The last view event of `group`.
    pub fn last_view(&self, group: u64) -> Option<&check::ViewInstalled> {
        self.events.iter().rev().find_map(|e| match e {
            Event::View(v) if v.group == group => Some(v),
            _ => None,
        })
    }
}

fn num<T: std::str::FromStr>(f: Option<&str>, what: &str) -> anyhow::Result<T> {
    f.with_context(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| anyhow::anyhow!("bad {what}"))
}

fn parse_reason(s: &str) -> anyhow::Result<Reason> {
    let list = |t: &str| -> anyhow::Result<Vec<u32>> {
        t.split(',')
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().context("node id"))
            .collect()
    };
    Ok(match s.split_once(':') {
        Some(("J", n)) => Reason::Join(n.parse()?),
        Some(("L", n)) => Reason::Leave(n.parse()?),
        Some(("F", ns)) => Reason::Failed(list(ns)?),
        Some(("A", ft)) => {
            let (f, t) = ft.split_once(':').context("A:from:to")?;
            Reason::AdjustVersion {
                from: f.parse()?,
                to: t.parse()?,
            }
        }
        None if s == "M" => Reason::Merged,
        None if s == "P" => Reason::Partitioned,
        _ => bail!("unknown reason {s}"),
    })
}

/// Parses one log file. A last line without its newline (the process was
/// killed mid-write, which one `write(2)` per record makes unlikely) is
/// ignored; anything else malformed is an error.
pub fn parse_log(path: &Path) -> anyhow::Result<ParsedLog> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let complete = text.ends_with('\n');
    let mut lines: Vec<&str> = text.lines().collect();
    if !complete {
        lines.pop();
    }
    let mut log = ParsedLog {
        node: 0,
        incarnation: 0,
        events: Vec::new(),
        sent: Vec::new(),
        ended: false,
    };
    for (i, line) in lines.iter().enumerate() {
        let ctx = || format!("{}:{}: {line}", path.display(), i + 1);
        let mut f = line.split(' ');
        match f.next() {
            Some("N") => {
                log.node = num(f.next(), "node").with_context(ctx)?;
                log.incarnation = num(f.next(), "incarnation").with_context(ctx)?;
            }
            Some("S") => log.sent.push(Sent {
                at: num(f.next(), "at").with_context(ctx)?,
                node: log.node,
                incarnation: log.incarnation,
                group: num(f.next(), "group").with_context(ctx)?,
                sender_seq: num(f.next(), "sender_seq").with_context(ctx)?,
                digest: num(f.next(), "digest").with_context(ctx)?,
            }),
            Some("D") => log.events.push(Event::Delivery(Delivered {
                at: num(f.next(), "at").with_context(ctx)?,
                group: num(f.next(), "group").with_context(ctx)?,
                view: num(f.next(), "view").with_context(ctx)?,
                seq: num(f.next(), "seq").with_context(ctx)?,
                sender: num(f.next(), "sender").with_context(ctx)?,
                sender_incarnation: num(f.next(), "sender_incarnation").with_context(ctx)?,
                sender_seq: num(f.next(), "sender_seq").with_context(ctx)?,
                digest: num(f.next(), "digest").with_context(ctx)?,
                mode: match f.next() {
                    Some("agreed") => check::Mode::Agreed,
                    Some("safe") => check::Mode::Safe,
                    other => anyhow::bail!("{}: mode {other:?} is neither agreed nor safe", ctx()),
                },
            })),
            Some("V") => {
                let at = num(f.next(), "at").with_context(ctx)?;
                let group = num(f.next(), "group").with_context(ctx)?;
                let view = num(f.next(), "view").with_context(ctx)?;
                let protocol = num(f.next(), "protocol").with_context(ctx)?;
                let position = num(f.next(), "position").with_context(ctx)?;
                let reason = parse_reason(f.next().unwrap_or("")).with_context(ctx)?;
                let members = f
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(|x| x.parse::<u32>())
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(ctx)?;
                log.events.push(Event::View(check::ViewInstalled {
                    at,
                    group,
                    view,
                    members,
                    protocol,
                    reason,
                    position,
                }));
            }
            Some("P") => log.events.push(Event::Partitioned {
                at: num(f.next(), "at").with_context(ctx)?,
                group: num(f.next(), "group").with_context(ctx)?,
            }),
            Some("END") => log.ended = true,
            _ => bail!("{}: unknown record", ctx()),
        }
    }
    Ok(log)
}

/// Free ports on 127.0.0.1, from the kernel (listeners held until all are
/// chosen, so none repeats).
pub fn free_addrs(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let ls = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ls
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<Vec<_>, _>>()?)
}

/// A running node process. Dropping it kills the process (SIGKILL, by its
/// PID) and reaps it, so a failing test leaves nothing behind.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Proc {
    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command line.
    pub fn command(&mut self, cmd: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{cmd}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits (bounded) for the process to exit; kills it if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill9();
        bail!("process {} did not exit within {timeout:?}", self.pid())
    }

    /// `kill -9` (std's `Child::kill` sends SIGKILL to the child's PID, not
    /// yet reaped and so not reused), then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// What each node process runs.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `(name, "agreed" | "safe")`.
    pub groups: Vec<(String, String)>,
    /// Messages per group per incarnation.
    pub count: u64,
    /// Pause between two multicasts of one group.
    pub interval_us: u64,
    /// Heartbeat interval and failure timeout, milliseconds.
    pub timeouts_ms: (u64, u64),
}

/// Three (or more) node processes on loopback, each with its data directory.
#[derive(Debug)]
pub struct Cluster {
    /// Holds the data directories and logs.
    pub dir: tempfile::TempDir,
    addrs: Vec<SocketAddr>,
    procs: Vec<Option<Proc>>,
    workload: Workload,
    bin: PathBuf,
    cluster_id: u64,
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n).
    pub fn start(bin: &Path, n: usize, workload: Workload) -> anyhow::Result<Cluster> {
        // CONCORD_KEEP_LOGS=1 keeps the data directories for a post-mortem.
        let keep = std::env::var_os("CONCORD_KEEP_LOGS").is_some();
        let dir = tempfile::Builder::new()
            .prefix("concord-cluster-")
            .disable_cleanup(keep)
            .tempdir()?;
        if keep {
            eprintln!("logs kept in {}", dir.path().display());
        }
        let mut c = Cluster {
            dir,
            addrs: free_addrs(n)?,
            procs: (0..n).map(|_| None).collect(),
            workload,
            bin: bin.to_path_buf(),
            cluster_id: std::process::id() as u64,
        };
        for i in 1..=n {
            c.spawn(i as u32)?;
        }
        Ok(c)
    }

    fn data_dir(&self, node: u32) -> PathBuf {
        self.dir.path().join(format!("n{node}"))
    }

    /// (Re)starts node `node`.
    pub fn spawn(&mut self, node: u32) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--id")
            .arg(node.to_string())
            .arg("--cluster")
            .arg(self.cluster_id.to_string())
            .arg("--data")
            .arg(self.data_dir(node))
            .arg("--count")
            .arg(self.workload.count.to_string())
            .arg("--interval-us")
            .arg(self.workload.interval_us.to_string())
            .arg("--heartbeat-ms")
            .arg(self.workload.timeouts_ms.0.to_string())
            .arg("--failure-timeout-ms")
            .arg(self.workload.timeouts_ms.1.to_string());
        for (i, a) in self.addrs.iter().enumerate() {
            cmd.arg("--node").arg(format!("{}={a}", i + 1));
        }
        for (g, m) in &self.workload.groups {
            cmd.arg("--group").arg(format!("{g}:{m}"));
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::null());
        let mut child = cmd.spawn().context("spawn concord-test-node")?;
        let stdin = child.stdin.take();
        self.procs[node as usize - 1] = Some(Proc { child, stdin });
        Ok(())
    }

    /// The process of `node`, if running.
    pub fn proc(&mut self, node: u32) -> Option<&mut Proc> {
        self.procs[node as usize - 1].as_mut()
    }

    /// `kill -9` of `node`.
    pub fn kill9(&mut self, node: u32) {
        if let Some(mut p) = self.procs[node as usize - 1].take() {
            p.kill9();
        }
    }

    /// Graceful stop of `node`: an ordered leave of every group, then exit.
    pub fn stop(&mut self, node: u32) -> anyhow::Result<()> {
        if let Some(mut p) = self.procs[node as usize - 1].take() {
            p.command("leave")?;
            let st = p.wait_exit(Duration::from_secs(20))?;
            if !st.success() {
                bail!("node {node} exited with {st}");
            }
        }
        Ok(())
    }

    /// Ends the run: every running node exits at once without leaving.
    pub fn quit_all(&mut self) -> anyhow::Result<()> {
        for (i, slot) in self.procs.iter_mut().enumerate() {
            if let Some(mut p) = slot.take() {
                p.command("quit")?;
                let st = p.wait_exit(Duration::from_secs(20))?;
                if !st.success() {
                    bail!("node {} exited with {st}", i + 1);
                }
            }
        }
        Ok(())
    }

    /// Every log written so far.
    pub fn logs(&self) -> anyhow::Result<Vec<ParsedLog>> {
        let mut out = Vec::new();
        for node in 1..=self.addrs.len() as u32 {
            let dir = self.data_dir(node);
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd {
                let p = e?.path();
                if p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("log-"))
                {
                    out.push(parse_log(&p)?);
                }
            }
        }
        out.sort_by_key(|l| (l.node, l.incarnation));
        Ok(out)
    }

    /// Whether `node` has a running process.
    pub fn is_running(&self, node: u32) -> bool {
        self.procs[node as usize - 1].is_some()
    }

    /// Waits (bounded, polling the logs) until `pred` holds.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&[ParsedLog]) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs()?;
            if pred(&logs) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}: {}",
                    summary(&logs)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The live incarnation of each running node: its newest log.
    pub fn live<'a>(&self, logs: &'a [ParsedLog]) -> BTreeMap<u32, &'a ParsedLog> {
        let mut m = BTreeMap::new();
        for l in logs {
            if self.is_running(l.node) {
                m.insert(l.node, l);
            }
        }
        m
    }

    /// Whether the run is quiescent for `groups`: every running node is a
    /// member of each group's same final view of all running nodes, has
    /// finished multicasting, and has delivered everything the live
    /// incarnations multicast.
    pub fn quiescent(&self, logs: &[ParsedLog], groups: &[u64]) -> bool {
        let live = self.live(logs);
        let want: Vec<u32> = (1..=self.procs.len() as u32)
            .filter(|&n| self.is_running(n))
            .collect();
        if want.is_empty() || live.keys().copied().collect::<Vec<_>>() != want {
            return false;
        }
        for &g in groups {
            let mut view = None;
            let mut all = Vec::new();
            for l in live.values() {
                if l.sent.iter().filter(|s| s.group == g).count() as u64 != self.workload.count {
                    return false;
                }
                all.extend(
                    l.sent
                        .iter()
                        .filter(|s| s.group == g)
                        .map(|s| (s.at, s.digest)),
                );
            }
            for l in live.values() {
                let Some(since) = l.member_since(g) else {
                    return false;
                };
                let delivered = l.delivered(g);
                if all
                    .iter()
                    .any(|(at, d)| *at > since && !delivered.contains(d))
                {
                    return false;
                }
                let Some(v) = l.last_view(g) else {
                    return false;
                };
                let mut members = v.members.clone();
                members.sort();
                if members != want || view.is_some_and(|x| x != v.view) {
                    return false;
                }
                view = Some(v.view);
            }
        }
        true
    }

    /// The checker input: every incarnation's log, the ones not running at
    /// the end marked crashed, and every running node expected in each
    /// group's final view.
    pub fn checker_logs(&self, logs: &[ParsedLog], groups: &[u64], up: &BTreeSet<u32>) -> Logs {
        let mut newest: BTreeMap<u32, u64> = BTreeMap::new();
        for l in logs {
            let e = newest.entry(l.node).or_insert(0);
            *e = (*e).max(l.incarnation);
        }
        let nodes = logs
            .iter()
            .map(|l| NodeLog {
                node: l.node,
                incarnation: l.incarnation,
                crashed: !(up.contains(&l.node) && newest[&l.node] == l.incarnation),
                events: l.events.clone(),
            })
            .collect();
        let mut sent: Vec<Sent> = logs.iter().flat_map(|l| l.sent.clone()).collect();
        sent.sort_by_key(|s| s.at);
        Logs {
            nodes,
            sent,
            expected_final: Some(groups.iter().map(|&g| (g, up.clone())).collect()),
            configured: (1..=self.addrs.len() as u32).collect(),
            // The node logs what it hands the application, not what its
            // acceptor stores: the decision checker has nothing to count here.
            ranges: BTreeMap::new(),
            promises: Vec::new(),
            votes: Vec::new(),
            decisions: Vec::new(),
        }
    }
}

/// One line per log: deliveries and the last view per group, for a failure
/// message.
pub fn summary(logs: &[ParsedLog]) -> String {
    let mut s = String::new();
    for l in logs {
        let groups: BTreeSet<u64> = l.events.iter().map(Event::group).collect();
        s.push_str(&format!(
            "\n  n{}#{} end={}",
            l.node, l.incarnation, l.ended
        ));
        for g in groups {
            let v = l.last_view(g).map(|v| (v.view, v.members.clone()));
            s.push_str(&format!(
                " | g{g:#x}: sent {} delivered {} last view {v:?}",
                l.sent.iter().filter(|x| x.group == g).count(),
                l.delivered(g).len()
            ));
        }
    }
    s
}

/// Runs the checkers of `concord_membership::check` over `logs`: all of
/// them but `epoch_decision`, which counts what each acceptor stored
/// (promises, votes, decisions). A node's log records what it hands the
/// application, not its acceptor's state, so that checker has no input here;
/// the simulator runs it on every seed.
pub fn check_all(logs: &Logs) -> Result<(), check::Violation> {
    check::no_creation::check(logs)?;
    check::no_duplication::check(logs)?;
    check::view_agreement::check(logs)?;
    check::primary_component::check(logs)?;
    check::total_order::check(logs)?;
    check::fifo::check(logs)?;
    check::virtual_synchrony::check(logs)?;
    check::safe_delivery::check(logs)?;
    check::version_switch::check(logs)?;
    check::adjust_outcome::check(logs)?;
    check::liveness::check(logs)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ParsedLog> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("log-1.txt");
        std::fs::write(&p, text)?;
        parse_log(&p)
    }

    #[test]
    fn parses_every_record() {
        let log = parse(
            "N 2 5\nV 10 7 1 1 0 J:2 1,2\nS 11 7 1 99\nD 12 7 1 1 2 5 1 99 safe\nP 13 7\nV 14 7 2 2 1 A:1:2 1,2\nEND\n",
        )
        .unwrap();
        assert_eq!((log.node, log.incarnation, log.ended), (2, 5, true));
        assert_eq!(log.sent.len(), 1);
        assert_eq!(log.delivered(7), BTreeSet::from([99]));
        assert_eq!(log.events.len(), 4);
        let Event::Delivery(d) = &log.events[1] else {
            panic!("the second record is the delivery")
        };
        assert_eq!((d.sender_incarnation, d.mode), (5, check::Mode::Safe));
        assert_eq!(
            log.member_since(7),
            Some(14),
            "a new run of views after the partition"
        );
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_garbage_is_refused() {
        let log = parse("N 1 1\nD 12 7 1 1 2 1 1 99 agreed\nD 13 7").unwrap();
        assert_eq!(log.events.len(), 1);
        assert!(parse("N 1 1\nX what\n").is_err());
        assert!(parse("N 1 1\nD 12 7 one 1 2 1 1 99 agreed\n").is_err());
        assert!(parse("N 1 1\nD 12 7 1 1 2 1 1 99 fast\n").is_err());
        assert!(parse("N 1 1\nV 10 7 1 1 0 Q:2 1,2\n").is_err());
    }
}
