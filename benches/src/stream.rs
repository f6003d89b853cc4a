//! One-way streaming: a sender writes length-prefixed frames as fast as it can
//! for a fixed time, a receiver parses them and checks every sequence number.
//!
//! Frame: a 4-byte little-endian payload length, then the payload, whose first 8
//! bytes are the sequence number. Throughput counts payload bytes only, and the
//! clock runs on the receiver from its first byte to the sender's close, so it
//! measures what was delivered, not what sat in socket buffers.

use crate::pin::CLIENT_CORE;
use crate::pingpong::{STALL_TIMEOUT, Status, expect_seq, loopback_pair, run_pair, stamp};
use anyhow::{Context as _, bail};
use serde::Serialize;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

/// Smallest payload: the sequence number.
pub const MIN_SIZE: usize = 8;
/// Largest payload the frame format (and the bench) accepts.
pub const MAX_SIZE: usize = 16 << 20;
/// Userspace batching buffer of the std baseline on each side.
pub const STD_BUF: usize = 64 * 1024;
/// The sender reads the clock once per this many messages.
const CLOCK_EVERY: u64 = 64;

/// What one streaming case measured.
#[derive(Debug, Clone, Copy)]
pub struct StreamResult {
    /// Messages delivered (equal to those sent, or the case fails).
    pub messages: u64,
    /// Payload bytes delivered.
    pub payload_bytes: u64,
    /// Receiver's clock from first byte to close.
    pub elapsed: Duration,
    /// Whether both threads were pinned.
    pub pinned: bool,
    /// Frames that straddled two receive buffers and were copied (concord's
    /// transport only; both sides together).
    pub straddled_frames: Option<u64>,
}

impl StreamResult {
    /// Messages per second.
    #[must_use]
    pub fn msgs_per_s(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Payload gigabytes (1e9 bytes) per second.
    #[must_use]
    pub fn gb_per_s(&self) -> f64 {
        self.payload_bytes as f64 / 1e9 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Checks a size is usable for streaming.
pub fn check_size(size: usize) -> anyhow::Result<()> {
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
        bail!("message size {size} is outside {MIN_SIZE}..={MAX_SIZE} bytes");
    }
    Ok(())
}

/// Receives frames until the sender closes; returns (messages, elapsed).
///
/// Generic over the reader so tests can feed it corrupt streams.
pub fn receive_frames(r: &mut impl BufRead, size: usize) -> anyhow::Result<(u64, Duration)> {
    let mut payload = vec![0u8; size];
    let mut seq = 0u64;
    let mut start: Option<Instant> = None;
    loop {
        // A clean end is EOF exactly at a frame boundary.
        if r.fill_buf().context("receiving")?.is_empty() {
            break;
        }
        start.get_or_insert_with(Instant::now);
        let mut hdr = [0u8; 4];
        r.read_exact(&mut hdr)
            .with_context(|| format!("frame {seq}: truncated length prefix"))?;
        let len = u32::from_le_bytes(hdr) as usize;
        if len != size {
            bail!("frame {seq}: length prefix says {len} bytes, expected {size}");
        }
        r.read_exact(&mut payload)
            .with_context(|| format!("frame {seq}: truncated payload"))?;
        expect_seq(&payload, seq).context("receiver")?;
        seq += 1;
    }
    let elapsed = start.map_or(Duration::ZERO, |s| s.elapsed());
    Ok((seq, elapsed))
}

/// Sends frames for `duration` (a multiple of 64 frames, at least 64); returns how many.
///
/// Header and payload sit in one buffer so each frame is one `write_all`: with
/// two, a frame larger than a `BufWriter`'s buffer would cost an extra
/// 4-byte syscall for the header.
pub fn send_frames(w: &mut impl Write, size: usize, duration: Duration) -> io::Result<u64> {
    let len = u32::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut frame = vec![0u8; 4 + size];
    frame[..4].copy_from_slice(&len.to_le_bytes());
    for (i, b) in frame.iter_mut().enumerate().skip(12) {
        *b = i as u8;
    }
    let start = Instant::now();
    let mut seq = 0u64;
    loop {
        stamp(&mut frame[4..], seq);
        w.write_all(&frame)?;
        seq += 1;
        if seq.is_multiple_of(CLOCK_EVERY) && start.elapsed() >= duration {
            break;
        }
    }
    w.flush()?;
    Ok(seq)
}

/// The std-socket baseline: blocking sockets, TCP_NODELAY, a 64 KiB `BufWriter`
/// and `BufReader` so small frames are batched into large syscalls (what a
/// careful std program would do; frames larger than the buffer bypass it).
pub fn std_stream(size: usize, duration: Duration) -> anyhow::Result<StreamResult> {
    check_size(size)?;
    let (sender, receiver) = loopback_pair()?;
    for s in [&sender, &receiver] {
        s.set_read_timeout(Some(STALL_TIMEOUT))?;
        s.set_write_timeout(Some(STALL_TIMEOUT))?;
    }
    // The sender is the client (core 0), the receiver the server (core 1).
    debug_assert_eq!(CLIENT_CORE, 0);
    let pair = run_pair(
        move || {
            let mut r = BufReader::with_capacity(STD_BUF, receiver);
            receive_frames(&mut r, size)
        },
        move || {
            let mut w = BufWriter::with_capacity(STD_BUF, sender);
            let sent = send_frames(&mut w, size, duration).context("sending")?;
            let s = w.into_inner().map_err(|e| e.into_error())?;
            s.shutdown(Shutdown::Write).context("closing sender")?;
            Ok(sent)
        },
    )?;
    let (received, elapsed) = pair.server;
    if received != pair.client {
        bail!("sent {} messages but {received} arrived", pair.client);
    }
    Ok(StreamResult {
        messages: received,
        payload_bytes: received * size as u64,
        elapsed,
        pinned: pair.pinned,
        straddled_frames: None,
    })
}

/// One row of the stream report.
#[derive(Debug, Clone, Serialize)]
pub struct StreamRecord {
    /// Case name.
    pub name: String,
    /// Payload size in bytes.
    pub size: usize,
    /// Outcome.
    pub status: Status,
    /// Why it is unavailable or failed.
    pub error: Option<String>,
    /// Messages delivered and verified.
    pub messages: Option<u64>,
    /// Receiver-side seconds.
    pub seconds: Option<f64>,
    /// Messages per second.
    pub msgs_per_s: Option<f64>,
    /// Payload GB (1e9 bytes) per second.
    pub gb_per_s: Option<f64>,
    /// Whether both threads were pinned.
    pub pinned: Option<bool>,
    /// Frames copied because they straddled receive buffers (concord only).
    pub straddled_frames: Option<u64>,
}

impl StreamRecord {
    /// Builds a row from a case's outcome.
    #[must_use]
    pub fn new(name: &str, size: usize, outcome: &anyhow::Result<StreamResult>) -> Self {
        match outcome {
            Ok(r) => StreamRecord {
                name: name.into(),
                size,
                status: Status::Ok,
                error: None,
                messages: Some(r.messages),
                seconds: Some(r.elapsed.as_secs_f64()),
                msgs_per_s: Some(r.msgs_per_s()),
                gb_per_s: Some(r.gb_per_s()),
                pinned: Some(r.pinned),
                straddled_frames: r.straddled_frames,
            },
            Err(e) => StreamRecord {
                name: name.into(),
                size,
                status: crate::concord_case::status_of(e),
                error: Some(format!("{e:#}")),
                messages: None,
                seconds: None,
                msgs_per_s: None,
                gb_per_s: None,
                pinned: None,
                straddled_frames: None,
            },
        }
    }
}

/// concord / std throughput at one size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeRatio {
    /// Payload size.
    pub size: usize,
    /// concord msgs/s over std msgs/s; null when either is missing.
    pub ratio_vs_std: Option<f64>,
}

/// The whole stream JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// Always `"stream"`.
    pub bench: &'static str,
    /// Machine, commit, time and arguments of the run.
    pub run: crate::report::RunInfo,
    /// One row per case and size.
    pub cases: Vec<StreamRecord>,
    /// Per size: concord / std throughput.
    pub ratios: Vec<SizeRatio>,
    /// concord / std throughput at 64 KiB; null when either is missing.
    pub ratio_64k_vs_std: Option<f64>,
    /// Names (`name@size`) of the cases that failed.
    pub failures: Vec<String>,
}

impl StreamReport {
    /// Derives ratios and failures from the rows.
    #[must_use]
    pub fn new(run: crate::report::RunInfo, cases: Vec<StreamRecord>) -> Self {
        let rate = |name: &str, size: usize| {
            cases
                .iter()
                .find(|c| c.name == name && c.size == size && c.status == Status::Ok)
                .and_then(|c| c.msgs_per_s)
        };
        let mut sizes: Vec<usize> = cases.iter().map(|c| c.size).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let ratios: Vec<SizeRatio> = sizes
            .into_iter()
            .map(|size| SizeRatio {
                size,
                ratio_vs_std: match (rate(crate::concord_case::NAME, size), rate("std", size)) {
                    (Some(c), Some(s)) if s > 0.0 => Some(c / s),
                    _ => None,
                },
            })
            .collect();
        let ratio_64k_vs_std = ratios
            .iter()
            .find(|r| r.size == 65536)
            .and_then(|r| r.ratio_vs_std);
        let failures = cases
            .iter()
            .filter(|c| c.status == Status::Failed)
            .map(|c| format!("{}@{}", c.name, c.size))
            .collect();
        StreamReport {
            bench: "stream",
            run,
            cases,
            ratios,
            ratio_64k_vs_std,
            failures,
        }
    }

    /// The table printed to stdout.
    #[must_use]
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{:<10} {:>7} {:>14} {:>9} {:>12} {:>7}  status",
            "case", "size", "msgs/s", "GB/s", "messages", "secs"
        );
        for c in &self.cases {
            let status = match c.status {
                Status::Ok if c.pinned == Some(false) => "ok (NOT PINNED)".to_string(),
                Status::Ok => match c.straddled_frames {
                    Some(n) => format!("ok (straddled frames copied: {n})"),
                    None => "ok".to_string(),
                },
                Status::Unavailable => {
                    format!("unavailable: {}", c.error.as_deref().unwrap_or("?"))
                }
                Status::Failed => format!("FAILED: {}", c.error.as_deref().unwrap_or("?")),
            };
            let _ = writeln!(
                t,
                "{:<10} {:>7} {:>14} {:>9} {:>12} {:>7}  {}",
                c.name,
                c.size,
                c.msgs_per_s.map_or("-".into(), |v| format!("{v:.0}")),
                c.gb_per_s.map_or("-".into(), |v| format!("{v:.3}")),
                c.messages.map_or("-".into(), |v| v.to_string()),
                c.seconds.map_or("-".into(), |v| format!("{v:.2}")),
                status
            );
        }
        for r in &self.ratios {
            let _ = writeln!(
                t,
                "concord/std at {:>6} B: {}",
                r.size,
                r.ratio_vs_std
                    .map_or("null (concord or std missing)".into(), |v| format!(
                        "{v:.3}"
                    ))
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(
                t,
                "!!! {} case(s) FAILED: {}",
                self.failures.len(),
                self.failures.join(", ")
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(size: usize, seqs: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        for &s in seqs {
            out.extend_from_slice(&(size as u32).to_le_bytes());
            let mut p = vec![0u8; size];
            stamp(&mut p, s);
            out.extend_from_slice(&p);
        }
        out
    }

    #[test]
    fn std_stream_delivers_everything_in_order() {
        for size in [8, 64, 65536] {
            let r = std_stream(size, Duration::from_millis(30)).unwrap();
            assert!(r.messages >= CLOCK_EVERY, "sent at least one clock batch");
            assert_eq!(r.payload_bytes, r.messages * size as u64);
        }
    }

    #[test]
    fn send_then_receive_round_trips_through_memory() {
        let mut buf = Vec::new();
        let sent = send_frames(&mut buf, 16, Duration::ZERO).unwrap();
        assert_eq!(sent, CLOCK_EVERY);
        let (got, _) = receive_frames(&mut &buf[..], 16).unwrap();
        assert_eq!(got, sent);
    }

    #[test]
    fn receiver_rejects_gaps_bad_lengths_and_truncation() {
        let gap = frames(16, &[0, 1, 3]);
        let e = receive_frames(&mut &gap[..], 16).unwrap_err();
        assert!(
            format!("{e:#}").contains("expected sequence 2, got 3"),
            "{e:#}"
        );

        let wrong_len = frames(24, &[0]);
        let e = receive_frames(&mut &wrong_len[..], 16).unwrap_err();
        assert!(format!("{e:#}").contains("length prefix says 24"), "{e:#}");

        let mut cut = frames(16, &[0, 1]);
        cut.truncate(cut.len() - 3);
        let e = receive_frames(&mut &cut[..], 16).unwrap_err();
        assert!(
            format!("{e:#}").contains("frame 1: truncated payload"),
            "{e:#}"
        );

        let (n, _) = receive_frames(&mut &[][..], 16).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn sizes_are_checked() {
        assert!(std_stream(4, Duration::from_millis(1)).is_err());
        assert!(std_stream(MAX_SIZE + 1, Duration::from_millis(1)).is_err());
    }

    #[test]
    fn report_ratio_json_shape() {
        let ok = |m| {
            Ok(StreamResult {
                messages: m,
                payload_bytes: m * 65536,
                elapsed: Duration::from_secs(1),
                pinned: true,
                straddled_frames: None,
            })
        };
        let rows = vec![
            StreamRecord::new("concord", 65536, &ok(300)),
            StreamRecord::new("std", 65536, &ok(200)),
            StreamRecord::new("std", 64, &Err(anyhow::anyhow!("boom"))),
        ];
        let rep = StreamReport::new(crate::report::RunInfo::collect(&"a"), rows);
        assert_eq!(rep.ratio_64k_vs_std, Some(1.5));
        assert_eq!(rep.failures, vec!["std@64".to_string()]);
        let v = serde_json::to_value(&rep).unwrap();
        assert_eq!(v["ratio_64k_vs_std"], 1.5);
        assert!(v["ratios"][0]["ratio_vs_std"].is_null());
        for key in [
            "name",
            "size",
            "msgs_per_s",
            "gb_per_s",
            "messages",
            "status",
        ] {
            assert!(v["cases"][0].get(key).is_some(), "missing {key}");
        }
        assert!(rep.table().contains("FAILED: boom"));
    }
}
