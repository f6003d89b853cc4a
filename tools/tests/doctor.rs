//! `concord doctor` as a user runs it: the built binary, its output, its exit status.

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_concord");

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn doctor_reports_a_ready_machine() {
    // The project's machines and CI run as root on Linux 6.18 with io_uring on.
    let out = Command::new(BIN).arg("doctor").output().unwrap();
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(s.contains(release.trim()), "kernel release missing:\n{s}");
    for needle in [
        "io_uring     usable",
        "SEND_ZC          supported",
        "RECV             supported",
        "PROVIDE_BUFFERS  supported",
        "buf ring         register/unregister ok",
        "memlock      soft ",
        "CAP_IPC_LOCK held",
        "transport    Driver::new(default) and listen on 127.0.0.1:",
        "result: ready",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
    }
    assert!(!s.contains("problem:"), "{s}");
}

/// A copy of the built binary that an unprivileged user can execute even when
/// the checkout sits in a directory only root can enter. The directory (and
/// the copy) is removed when the guard drops.
fn unprivileged_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("concord-doctor-")
        .tempdir()
        .expect("temporary directory");
    let exe = dir.path().join("concord");
    fs::copy(BIN, &exe).expect("copy the concord binary");
    fs::set_permissions(&exe, Permissions::from_mode(0o755)).expect("chmod the copy");
    // Traversable, not listable, by other users.
    fs::set_permissions(dir.path(), Permissions::from_mode(0o711)).expect("chmod the dir");
    (dir, exe)
}

#[test]
fn doctor_fails_with_the_fix_when_memlock_is_too_low() {
    // An unprivileged user (no CAP_IPC_LOCK) with a 64 KiB memlock limit, asked
    // for 4 shards of 8 MiB each.
    let (dir, exe) = unprivileged_copy();
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -l 64 && exec "$0" doctor --shards 4 --memlock-per-shard 8388608"#)
        .arg(&exe)
        .current_dir(dir.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    for needle in [
        "soft 64 KiB, hard 64 KiB; need 32 MiB (4 shards x 8 MiB)",
        "problem: memlock limit too low",
        "ulimit -l 32768",
        "LimitMEMLOCK=infinity",
        "/etc/security/limits.conf",
        "result: NOT ready",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
    }
}

#[test]
fn doctor_json_is_machine_readable() {
    let out = Command::new(BIN)
        .args(["doctor", "--json", "--shards", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["shards"], 1);
    assert_eq!(v["memlock"]["need"], v["memlock"]["per_shard"]);
    let ops = v["io_uring"]["ops"].as_array().unwrap();
    assert!(
        ops.iter()
            .any(|o| o["name"] == "SEND_ZC" && o["supported"] == true),
        "{v:#}"
    );
    assert_eq!(v["transport"]["ok"], true);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
}

#[test]
fn bad_arguments_are_rejected_by_clap() {
    let out = Command::new(BIN)
        .args(["doctor", "--shards", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = Command::new(BIN).arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
