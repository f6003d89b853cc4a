//! The node processes of one run, and the guard that stops them.
//!
//! Each node is this binary re-executed with [`MEMBER_ROLE`] and its
//! [`MemberSpec`]; the parent writes [`Command`]s to its stdin and a thread
//! per child forwards the [`Reply`] lines of its stdout. [`Members`] kills
//! every child by PID and reaps it when dropped: on the normal path, on an
//! error (`?` unwinds through it) and on a panic. A child whose stdin closes
//! (the parent died without unwinding, `kill -9`) exits by itself.

use super::proto::{Command, MEMBER_ROLE, MemberSpec, Reply};
use anyhow::{Context as _, bail};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

/// One node process.
#[derive(Debug)]
struct Member {
    id: u32,
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<String>,
}

/// The running node processes; dropping it kills and reaps every one and
/// removes the run's data directory.
#[derive(Debug)]
pub struct Members {
    members: Vec<Member>,
    dir: PathBuf,
}

impl Members {
    /// Starts one process per spec; every spec's data directory is under
    /// `dir`, which the guard removes when dropped.
    pub fn spawn(specs: &[MemberSpec], dir: PathBuf) -> anyhow::Result<Members> {
        let exe = std::env::current_exe().context("finding this binary to re-execute")?;
        let mut cmds = Vec::with_capacity(specs.len());
        for spec in specs {
            let mut cmd = std::process::Command::new(&exe);
            cmd.arg(MEMBER_ROLE).arg(serde_json::to_string(spec)?);
            cmds.push((spec.id, cmd));
        }
        Self::start(cmds, dir)
    }

    /// Starts `(node id, command)` each with piped stdin and stdout. If one
    /// fails to start, the ones already started are stopped.
    fn start(cmds: Vec<(u32, std::process::Command)>, dir: PathBuf) -> anyhow::Result<Members> {
        let mut me = Members {
            members: Vec::with_capacity(cmds.len()),
            dir,
        };
        for (id, mut cmd) in cmds {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting node {id} ({cmd:?})"))?;
            let stdin = child.stdin.take().context("child stdin")?;
            let stdout = child.stdout.take().context("child stdout")?;
            let (tx, replies) = channel();
            let reader = std::thread::Builder::new()
                .name(format!("node{id}-stdout"))
                .spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                });
            me.members.push(Member {
                id,
                child,
                stdin,
                replies,
            });
            reader.context("spawning a reader thread")?;
        }
        Ok(me)
    }

    /// The process ids, in spec order.
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.child.id()).collect()
    }

    fn member(&mut self, id: u32) -> anyhow::Result<&mut Member> {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .with_context(|| format!("no node {id}"))
    }

    /// Sends `cmd` to node `id`.
    pub fn send(&mut self, id: u32, cmd: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(cmd)?;
        line.push('\n');
        let m = self.member(id)?;
        m.stdin
            .write_all(line.as_bytes())
            .and_then(|()| m.stdin.flush())
            .with_context(|| format!("sending {cmd:?} to node {id}"))
    }

    /// The next reply of node `id`, waiting at most `timeout`. A
    /// [`Reply::Error`] becomes an error.
    pub fn recv(&mut self, id: u32, timeout: Duration) -> anyhow::Result<Reply> {
        let m = self.member(id)?;
        let line = match m.replies.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                bail!("node {id} did not answer within {timeout:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = m.child.wait().map(|s| s.to_string()).unwrap_or_default();
                bail!("node {id} exited ({status})")
            }
        };
        let reply: Reply =
            serde_json::from_str(&line).with_context(|| format!("node {id} answered {line:?}"))?;
        if let Reply::Error { message } = reply {
            bail!("node {id}: {message}");
        }
        Ok(reply)
    }

    /// Sends `cmd` to node `id` and waits for its reply.
    pub fn ask(&mut self, id: u32, cmd: &Command, timeout: Duration) -> anyhow::Result<Reply> {
        self.send(id, cmd)?;
        self.recv(id, timeout)
    }

    /// Asks every node to quit and waits a moment for them to exit; the
    /// guard kills whichever did not.
    pub fn quit(mut self) {
        for m in &mut self.members {
            let _ = writeln!(m.stdin, "{}", serde_json::json!({"cmd": "quit"}));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        for m in &mut self.members {
            while std::time::Instant::now() < deadline {
                if !matches!(m.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for m in &mut self.members {
            if matches!(m.child.try_wait(), Ok(None)) {
                // `Child::kill` is SIGKILL to this child's PID.
                let _ = m.child.kill();
            }
            let _ = m.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // A reaped child has no /proc entry; a zombie's state is `Z`.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    }

    fn sleepers(dir: &std::path::Path) -> Members {
        let cmds = (1..=3)
            .map(|id| {
                // `sleep` ignores its stdin: only the guard can stop it.
                let mut c = std::process::Command::new("sleep");
                c.arg("60");
                (id, c)
            })
            .collect();
        Members::start(cmds, dir.to_path_buf()).unwrap()
    }

    #[test]
    fn a_panic_kills_and_reaps_every_child_and_removes_the_directory() {
        let dir = std::env::temp_dir().join(format!("concord-procs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let members = sleepers(&dir);
        let pids = members.pids();
        assert!(pids.iter().all(|&p| alive(p)), "{pids:?}");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = members;
            panic!("the parent fails mid-run");
        }));
        assert!(r.is_err());
        for p in &pids {
            assert!(!alive(*p), "node process {p} outlived the guard");
        }
        assert!(!dir.exists());
    }

    #[test]
    fn an_error_path_drops_the_guard_too() {
        fn fails(dir: &std::path::Path, pids: &mut Vec<u32>) -> anyhow::Result<()> {
            let mut members = sleepers(dir);
            *pids = members.pids();
            // `sleep` never answers: the wait times out and `?` returns.
            members.recv(1, Duration::from_millis(20))?;
            Ok(())
        }
        let dir = std::env::temp_dir().join(format!("concord-procs-err-{}", std::process::id()));
        let mut pids = Vec::new();
        let e = fails(&dir, &mut pids).unwrap_err();
        assert!(format!("{e:#}").contains("did not answer"), "{e:#}");
        assert_eq!(pids.len(), 3);
        for p in &pids {
            assert!(!alive(*p), "node process {p} outlived the guard");
        }
    }
}
