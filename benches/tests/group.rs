//! Smoke test of the `group` binary: a short `--quick` run of three real
//! node processes writes JSON with every field the group benchmark promises,
//! and every node delivered the same sequence.

use std::path::PathBuf;
use std::process::Command;

fn tmp_json(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "concord-bench-group-{name}-{}.json",
        std::process::id()
    ))
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

#[test]
fn quick_run_has_every_field_and_the_orders_agree() {
    let json = tmp_json("quick");
    // Fewer messages than `--quick` alone: this runs as a debug build.
    let out = Command::new(env!("CARGO_BIN_EXE_group"))
        .args([
            "--quick",
            "--messages",
            "300",
            "--warmup",
            "50",
            "--seconds",
            "0.3",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(v["bench"], "group");
    assert_eq!(v["rounds"], 3);
    for k in [
        "floor_rtt_p50_ns",
        "floor_rtt_p99_ns",
        "lat64_p50_ns",
        "lat64_p99_ns",
        "lat64_p999_ns",
        "lat64_safe_p50_ns",
        "lat1k_p50_ns",
    ] {
        assert!(v[k].as_u64().is_some_and(|n| n > 0), "{k}: {}", v[k]);
    }
    for k in [
        "ratio_lat64_p50_vs_floor",
        "ratio_lat64_p99_vs_floor_p99",
        "tput64_msgs_per_s",
        "tput1k_mb_per_s",
    ] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {}", v[k]);
    }
    for k in ["allocs_per_delivery", "copies_per_delivery"] {
        assert!(v[k].as_f64().is_some_and(|x| x >= 0.0), "{k}: {}", v[k]);
    }
    assert_eq!(v["order_hash_agree"], true, "{}", v["order"]);
    // One check per latency and throughput case per size and round.
    assert_eq!(v["order"]["checks"], 3 * 2 * 3);
    assert_eq!(v["failures"].as_array().unwrap().len(), 0);
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(
        cases.len(),
        4 * 2,
        "floor, agreed, safe, tput at 64 and 1024"
    );
    for c in cases {
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(c["rounds_ok"], 3, "{c}");
        if c["name"] == "tput" {
            let nodes = c["nodes"].as_array().unwrap();
            assert_eq!(nodes.len(), 3, "{c}");
            for n in nodes {
                assert!(n["msgs_per_s"].as_f64().unwrap() > 0.0, "{n}");
            }
            let s = &c["spread"]["msgs_per_s"];
            assert_eq!(s["values"].as_array().unwrap().len(), 3, "{c}");
        } else {
            assert_eq!(c["samples"], if c["name"] == "floor" { 750 } else { 300 });
            let s = &c["spread"]["p50_ns"];
            assert_eq!(s["values"].as_array().unwrap().len(), 3, "{c}");
        }
    }
    // The sender sequences neither group, and no node process outlives the
    // run.
    let roles = &v["roles"];
    let seqs = roles["sequencers"].as_array().unwrap();
    assert_eq!(seqs.len(), 2);
    assert!(!seqs.contains(&roles["sender"]), "{roles}");
    let pids = roles["pids"].as_array().unwrap();
    assert_eq!(pids.len(), 3);
    for p in pids {
        assert!(!alive(p.as_u64().unwrap()), "node process {p} still runs");
    }
}
