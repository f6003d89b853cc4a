//! The harness binaries as CI and the README run them: exit status, table,
//! JSON fields, and clear errors for bad arguments. Short runs (counts, never
//! timing).

use std::path::PathBuf;
use std::process::{Command, Output};

fn run(bin: &str, args: &[&str]) -> Output {
    let exe = match bin {
        "pingpong" => env!("CARGO_BIN_EXE_pingpong"),
        "stream" => env!("CARGO_BIN_EXE_stream"),
        other => panic!("no binary {other}"),
    };
    Command::new(exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {exe}: {e}"))
}

fn tmp_json(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "concord-bench-cli-{}-{name}.json",
        std::process::id()
    ))
}

fn read_json(p: &PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(p).unwrap();
    std::fs::remove_file(p).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn pingpong_runs_every_case_and_writes_json() {
    let json = tmp_json("pingpong");
    let out = run(
        "pingpong",
        &[
            "--quick",
            "--iterations",
            "100",
            "--warmup",
            "10",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for case in ["concord", "floor", "blocking", "glommio", "glommio-spin"] {
        assert!(stdout.contains(case), "table lacks {case}:\n{stdout}");
    }
    let v = read_json(&json);
    let cases = v["cases"].as_array().unwrap();
    // Five cases at the two default sizes, all measured.
    assert_eq!(cases.len(), 10);
    for c in cases {
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(c["round_trips"], 100);
        for k in ["name", "size", "p50_ns", "p99_ns", "p999_ns", "max_ns"] {
            assert!(!c[k].is_null(), "{k} in {c}");
        }
    }
    assert!(v["ratio_p50_vs_floor_64"].as_f64().unwrap() > 0.0);
    assert!(v["allocs_per_msg"].as_f64().is_some());
    assert_eq!(v["floor_allocs_per_msg"].as_f64(), Some(0.0));
    assert_eq!(v["failures"].as_array().unwrap().len(), 0);
    assert!(v["run"]["machine"]["nproc"].as_u64().unwrap() >= 1);
    assert_eq!(v["run"]["args"]["quick"], true);
}

#[test]
fn stream_runs_every_case_and_writes_json() {
    let json = tmp_json("stream");
    let out = run(
        "stream",
        &["--seconds", "0.05", "--json", json.to_str().unwrap()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = read_json(&json);
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6, "concord and std at 64, 1024, 65536");
    for c in cases {
        assert_eq!(c["status"], "ok", "{c}");
        assert!(c["messages"].as_u64().unwrap() >= 1);
        assert!(c["msgs_per_s"].as_f64().unwrap() > 0.0);
        assert!(c["gb_per_s"].as_f64().unwrap() > 0.0);
    }
    assert!(v["ratio_64k_vs_std"].as_f64().unwrap() > 0.0);
    assert_eq!(v["ratios"].as_array().unwrap().len(), 3);
}

#[test]
fn case_and_size_selection() {
    let out = run(
        "pingpong",
        &[
            "--cases",
            "floor",
            "--sizes",
            "128",
            "--iterations",
            "50",
            "--warmup",
            "0",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("floor"));
    assert!(!stdout.contains("blocking"), "{stdout}");
    assert!(stdout.contains("128"));
    // No concord row: the ratio is reported as missing, not invented.
    assert!(stdout.contains("null"), "{stdout}");
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let out = run("pingpong", &["--cases", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown case \"nope\""), "{err}");
    assert!(err.contains("floor"), "lists the valid cases: {err}");

    let out = run("pingpong", &["--sizes", "4"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("minimum of 8 bytes"));

    let out = run("stream", &["--sizes", "lots"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a size"));

    let out = run("stream", &["--seconds", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("seconds must be in"));
}

#[test]
fn glommio_failure_is_loud_and_the_other_cases_still_run() {
    // 64 KiB of memlock is below glommio's 512 KiB minimum; lowering a limit
    // needs no privilege.
    let json = tmp_json("glommio-fail");
    let cmd = format!(
        "ulimit -l 64 && exec '{}' --cases floor,glommio --sizes 64 --iterations 50 --warmup 5 --json '{}'",
        env!("CARGO_BIN_EXE_pingpong"),
        json.display()
    );
    let out = Command::new("bash").arg("-c").arg(&cmd).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed case fails the run:\n{stdout}"
    );
    assert!(
        stdout.contains("FAILED: glommio case could not run"),
        "{stdout}"
    );
    assert!(
        stdout.contains("MemLockLimit"),
        "glommio's own reason is kept:\n{stdout}"
    );
    let v = read_json(&json);
    assert_eq!(v["failures"], serde_json::json!(["glommio@64"]));
    let cases = v["cases"].as_array().unwrap();
    let floor = cases.iter().find(|c| c["name"] == "floor").unwrap();
    assert_eq!(floor["status"], "ok");
    assert_eq!(floor["round_trips"], 50);
    let gl = cases.iter().find(|c| c["name"] == "glommio").unwrap();
    assert_eq!(gl["status"], "failed");
    assert!(gl["p50_ns"].is_null());
    assert!(gl["error"].as_str().unwrap().contains("memlock"));
}
