//! `concord doctor`: run the runtime's start-up checks and print what they found.

use std::fmt::Write as _;
use std::process::ExitCode;

use concord_runtime::env::{
    self, DEFAULT_MEMLOCK_PER_SHARD, EnvReport, MIN_KERNEL, Requirements, display_bytes,
};
use concord_runtime::transport::{Driver, DriverConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Shards to check for (default: one per CPU this process may use).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    shards: Option<u32>,
    /// Bytes of memlock each shard pins.
    #[arg(long, default_value_t = DEFAULT_MEMLOCK_PER_SHARD)]
    memlock_per_shard: u64,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cpus = concord_runtime::affinity::current_cpus()?;
    let shards = args.shards.map_or(cpus.len().max(1), |s| s as usize);
    let req = Requirements {
        shards,
        memlock_per_shard: args.memlock_per_shard,
    };
    let report = env::probe(&req);
    let mut problems: Vec<String> = report.problems().iter().map(ToString::to_string).collect();
    let transport = transport_check();
    if let Err(e) = &transport {
        problems.push(format!("the transport cannot start: {e}"));
    }
    let out = if args.json {
        serde_json::to_string_pretty(&json(&report, &req, &transport, &problems))? + "\n"
    } else {
        text(&report, &req, &transport, &problems)
    };
    print!("{out}");
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The real thing: create a Driver with the default configuration (its ring
/// setup, buffer rings, send pool) and listen on loopback.
fn transport_check() -> Result<String, String> {
    let mut d = Driver::new(DriverConfig::default()).map_err(|e| e.to_string())?;
    let addr = d
        .listen("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?)
        .map_err(|e| e.to_string())?;
    Ok(format!("Driver::new(default) and listen on {addr}"))
}

fn ok(good: bool) -> &'static str {
    if good { "ok" } else { "PROBLEM" }
}

fn text(
    r: &EnvReport,
    req: &Requirements,
    transport: &Result<String, String>,
    problems: &[String],
) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = write_text(&mut s, r, req, transport, problems);
    s
}

fn write_text(
    s: &mut String,
    r: &EnvReport,
    req: &Requirements,
    transport: &Result<String, String>,
    problems: &[String],
) -> std::fmt::Result {
    writeln!(s, "concord doctor")?;
    let kernel_ok = r.kernel_version.is_none_or(|v| v >= MIN_KERNEL);
    let version = r
        .kernel_version
        .map_or("unparsed".to_owned(), |(a, b)| format!("{a}.{b}"));
    writeln!(
        s,
        "  kernel       {} ({version}; need >= {}.{})  {}",
        r.kernel_release,
        MIN_KERNEL.0,
        MIN_KERNEL.1,
        ok(kernel_ok)
    )?;
    writeln!(
        s,
        "  cpus         {} online, {} usable by this process {:?}",
        r.cpus_online,
        r.cpus_allowed.len(),
        r.cpus_allowed
    )?;
    writeln!(s, "  shards       {}", req.shards)?;
    let sysctl = r
        .io_uring
        .disabled_sysctl
        .map_or("absent".to_owned(), |v| v.to_string());
    match r.io_uring.setup {
        Ok(()) => {
            writeln!(
                s,
                "  io_uring     usable (kernel.io_uring_disabled = {sysctl})  ok"
            )?;
            writeln!(
                s,
                "    ring setup COOP_TASKRUN|TASKRUN_FLAG  {}",
                if r.io_uring.coop_taskrun {
                    "ok"
                } else {
                    "unsupported (slower fallback)"
                }
            )?;
            for op in &r.io_uring.ops {
                let status = match (op.supported, op.required) {
                    (true, _) => "supported",
                    (false, true) => "MISSING (required)",
                    (false, false) => "missing (optional)",
                };
                writeln!(s, "    {:<16} {status}", op.name)?;
            }
            match r.io_uring.buf_ring {
                Some(Ok(())) => writeln!(s, "    buf ring         register/unregister ok")?,
                Some(Err(errno)) => writeln!(
                    s,
                    "    buf ring         FAILED: {}",
                    std::io::Error::from_raw_os_error(errno)
                )?,
                None => {}
            }
        }
        Err(errno) => writeln!(
            s,
            "  io_uring     UNUSABLE: {} (kernel.io_uring_disabled = {sysctl})",
            std::io::Error::from_raw_os_error(errno)
        )?,
    }
    let m = &r.memlock;
    writeln!(
        s,
        "  memlock      soft {}, hard {}; need {} ({} shards x {})",
        display_bytes(m.soft),
        display_bytes(m.hard),
        display_bytes(m.need),
        m.shards,
        display_bytes(req.memlock_per_shard)
    )?;
    if m.cap_ipc_lock {
        writeln!(
            s,
            "               CAP_IPC_LOCK held: the limit is not enforced  ok"
        )?;
    } else {
        writeln!(s, "               {}", ok(m.soft >= m.need))?;
    }
    match transport {
        Ok(what) => writeln!(s, "  transport    {what}  ok")?,
        Err(_) => writeln!(s, "  transport    Driver::new(default) FAILED")?,
    }
    for p in problems {
        writeln!(s, "problem: {p}")?;
    }
    if problems.is_empty() {
        writeln!(s, "result: ready")
    } else {
        writeln!(s, "result: NOT ready ({} problems)", problems.len())
    }
}

fn json(
    r: &EnvReport,
    req: &Requirements,
    transport: &Result<String, String>,
    problems: &[String],
) -> serde_json::Value {
    let limit = |v: u64| {
        if v == u64::MAX {
            serde_json::Value::Null
        } else {
            v.into()
        }
    };
    serde_json::json!({
        "ready": problems.is_empty(),
        "kernel": {
            "release": r.kernel_release,
            "version": r.kernel_version.map(|(a, b)| [a, b]),
            "min": [MIN_KERNEL.0, MIN_KERNEL.1],
        },
        "cpus": { "online": r.cpus_online, "allowed": r.cpus_allowed },
        "shards": req.shards,
        "io_uring": {
            "disabled_sysctl": r.io_uring.disabled_sysctl,
            "setup_errno": r.io_uring.setup.err(),
            "coop_taskrun": r.io_uring.coop_taskrun,
            "ops": r.io_uring.ops.iter().map(|o| serde_json::json!({
                "name": o.name, "required": o.required, "supported": o.supported,
            })).collect::<Vec<_>>(),
            "buf_ring_errno": r.io_uring.buf_ring.and_then(|b| b.err()),
            "buf_ring_ok": r.io_uring.buf_ring == Some(Ok(())),
        },
        "memlock": {
            "soft": limit(r.memlock.soft),
            "hard": limit(r.memlock.hard),
            "need": r.memlock.need,
            "per_shard": req.memlock_per_shard,
            "cap_ipc_lock": r.memlock.cap_ipc_lock,
        },
        "transport": { "ok": transport.is_ok(), "detail": match transport { Ok(s) | Err(s) => s } },
        "problems": problems,
    })
}
