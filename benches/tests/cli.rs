//! The harness binaries as CI and the README run them: exit status, table,
//! JSON fields, interleaved rounds, and clear errors for bad arguments
//! (including a flag the binary does not use). Short runs (counts, never
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

/// The cases of this build, in the order a round runs them.
fn pingpong_cases() -> Vec<&'static str> {
    let mut c = vec!["concord", "floor", "blocking"];
    if cfg!(feature = "glommio") {
        c.extend(["glommio", "glommio-spin"]);
    }
    c
}

/// The case of every run the log announces, in order (`<bin>: round i/n: <case> ...`).
fn run_log(bin: &str, stderr: &str) -> Vec<(usize, String)> {
    let prefix = format!("{bin}: round ");
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|l| {
            let (round, rest) = l.split_once('/').unwrap();
            let (_, rest) = rest.split_once(": ").unwrap();
            let case = rest.split_whitespace().next().unwrap();
            (round.parse().unwrap(), case.to_string())
        })
        .collect()
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
    let names = pingpong_cases();
    for case in &names {
        assert!(stdout.contains(case), "table lacks {case}:\n{stdout}");
    }
    let v = read_json(&json);
    assert_eq!(v["rounds"], 3, "three rounds by default");
    let cases = v["cases"].as_array().unwrap();
    // Every case at the two default sizes, all measured in every round.
    assert_eq!(cases.len(), 2 * names.len());
    for c in cases {
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(c["round_trips"], 100);
        assert_eq!(c["rounds_ok"], 3);
        for k in ["name", "size", "p50_ns", "p99_ns", "p999_ns", "max_ns"] {
            assert!(!c[k].is_null(), "{k} in {c}");
        }
        for k in ["p50_ns", "p99_ns", "p999_ns", "max_ns", "allocs_per_msg"] {
            let s = &c["spread"][k];
            assert_eq!(s["values"].as_array().unwrap().len(), 3, "{k} in {c}");
            let (min, med, max) = (
                s["min"].as_f64().unwrap(),
                s["median"].as_f64().unwrap(),
                s["max"].as_f64().unwrap(),
            );
            assert!(min <= med && med <= max, "{k} in {c}");
        }
    }
    assert!(v["ratio_p50_vs_floor_64"].as_f64().unwrap() > 0.0);
    assert!(v["ratio_p99_vs_floor_64"].as_f64().unwrap() > 0.0);
    let ratio = &v["spread"]["ratio_p50_vs_floor_64"];
    assert_eq!(ratio["median"], v["ratio_p50_vs_floor_64"]);
    assert_eq!(ratio["values"].as_array().unwrap().len(), 3);
    assert!(v["allocs_per_msg"].as_f64().is_some());
    assert_eq!(v["floor_allocs_per_msg"].as_f64(), Some(0.0));
    assert_eq!(v["failures"].as_array().unwrap().len(), 0);
    assert!(v["run"]["machine"]["nproc"].as_u64().unwrap() >= 1);
    assert_eq!(v["run"]["args"]["quick"], true);
    assert_eq!(v["run"]["args"]["rounds"], 3);
}

#[test]
fn the_json_records_build_machine_and_load() {
    let json = tmp_json("run-info");
    let out = run(
        "pingpong",
        &[
            "--cases",
            "floor",
            "--sizes",
            "64",
            "--rounds",
            "1",
            "--iterations",
            "20",
            "--warmup",
            "0",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = read_json(&json)["run"].clone();
    // The commit the binary was built from, when it was built in a checkout.
    let commit = info["git_commit"].as_str().unwrap();
    let in_checkout = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .is_ok_and(|o| o.status.success());
    if in_checkout {
        assert_eq!(commit.len(), 40, "{commit}");
        assert!(commit.chars().all(|c| c.is_ascii_hexdigit()), "{commit}");
        assert!(info["git_dirty"].is_boolean(), "{info}");
    } else {
        assert_eq!(commit, "unknown");
        assert!(info["git_dirty"].is_null(), "{info}");
    }
    assert!(
        info["rustc"].as_str().unwrap().starts_with("rustc "),
        "{info}"
    );
    // x86 kernels have a model name; others may not, but the field is there.
    let model = &info["machine"]["cpu_model"];
    assert!(model.is_string() || model.is_null(), "{info}");
    if std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains("model name")) {
        assert!(!model.as_str().unwrap().is_empty());
    }
    for k in ["loadavg_start", "loadavg_end"] {
        for f in ["one", "five", "fifteen"] {
            assert!(info[k][f].as_f64().unwrap() >= 0.0, "{k}.{f} in {info}");
        }
    }

    let json = tmp_json("run-info-stream");
    let out = run(
        "stream",
        &[
            "--cases",
            "std",
            "--sizes",
            "64",
            "--rounds",
            "1",
            "--seconds",
            "0.02",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = read_json(&json);
    assert_eq!(v["run"]["git_commit"], commit);
    assert!(!v["run"]["loadavg_end"].is_null());
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
    assert_eq!(v["rounds"], 3, "three rounds by default");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6, "concord and std at 64, 1024, 65536");
    for c in cases {
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(c["rounds_ok"], 3);
        assert!(c["messages"].as_u64().unwrap() >= 1);
        assert!(c["msgs_per_s"].as_f64().unwrap() > 0.0);
        assert!(c["gb_per_s"].as_f64().unwrap() > 0.0);
        assert!(c["allocs_per_msg"].as_f64().is_some(), "{c}");
        for k in ["msgs_per_s", "gb_per_s", "allocs_per_msg"] {
            assert_eq!(c["spread"][k]["values"].as_array().unwrap().len(), 3);
        }
    }
    assert!(v["ratio_64k_vs_std"].as_f64().unwrap() > 0.0);
    assert_eq!(
        v["spread"]["ratio_64k_vs_std"]["median"],
        v["ratio_64k_vs_std"]
    );
    assert_eq!(v["ratios"].as_array().unwrap().len(), 3);
    for r in v["ratios"].as_array().unwrap() {
        assert_eq!(r["spread"]["median"], r["ratio_vs_std"]);
    }
}

#[test]
fn rounds_interleave_the_cases() {
    let out = run(
        "pingpong",
        &[
            "--cases",
            "floor,blocking",
            "--sizes",
            "64",
            "--rounds",
            "2",
            "--iterations",
            "20",
            "--warmup",
            "0",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let log = run_log("pingpong", &stderr);
    let want: Vec<(usize, String)> = [(1, "floor"), (1, "blocking"), (2, "floor"), (2, "blocking")]
        .into_iter()
        .map(|(r, c)| (r, c.to_string()))
        .collect();
    assert_eq!(log, want, "{stderr}");

    let out = run(
        "stream",
        &["--sizes", "64", "--rounds", "2", "--seconds", "0.02"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let log = run_log("stream", &stderr);
    let want: Vec<(usize, String)> = [(1, "concord"), (1, "std"), (2, "concord"), (2, "std")]
        .into_iter()
        .map(|(r, c)| (r, c.to_string()))
        .collect();
    assert_eq!(log, want, "{stderr}");
}

#[test]
fn median_and_spread_of_known_inputs() {
    use concord_bench::harness::rounds::schedule;
    use concord_bench::harness::stats::{Spread, median};

    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), Some(2.5));
    assert_eq!(median(&[]), None);
    let s = Spread::of(vec![Some(1.2), Some(1.4), None, Some(1.1)]).unwrap();
    assert_eq!((s.median, s.min, s.max), (1.2, 1.1, 1.4));
    assert_eq!(s.values, vec![Some(1.2), Some(1.4), None, Some(1.1)]);
    let order: Vec<&str> = schedule(3, &[64], &["a", "b", "c"])
        .into_iter()
        .map(|s| s.case)
        .collect();
    assert_eq!(order, ["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
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

    let out = run("pingpong", &["--rounds", "0"]);
    assert_eq!(out.status.code(), Some(2));

    let out = run("stream", &["--sizes", "lots"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a size"));

    let out = run("stream", &["--seconds", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("seconds must be in"));
}

#[test]
fn a_flag_the_binary_does_not_use_is_rejected() {
    for (bin, flag, value) in [
        ("pingpong", "--seconds", "1"),
        ("pingpong", "--concord-idle", "spin"),
        ("stream", "--iterations", "100"),
        ("stream", "--warmup", "10"),
    ] {
        let out = run(bin, &[flag, value]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin} {flag}: {err}");
        assert!(
            err.contains(&format!("unexpected argument '{flag}'")),
            "{bin} {flag}: {err}"
        );
        assert!(out.stdout.is_empty(), "{bin} {flag} ran anyway");
    }
}

#[cfg(not(feature = "glommio"))]
#[test]
fn glommio_cases_need_the_feature() {
    let out = run("pingpong", &["--cases", "floor,glommio"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features glommio"), "{err}");
    assert!(out.stdout.is_empty(), "nothing ran");
}

#[cfg(feature = "glommio")]
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
    assert!(
        gl["error"]
            .as_str()
            .unwrap()
            .contains("rounds 1, 2, 3 of 3")
    );
}
