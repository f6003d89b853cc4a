//! Frame encode/decode micro-benchmarks: header + crc32c over the payload at
//! several sizes, and control-archive validation from an aligned position
//! versus a misaligned one (copied to an aligned scratch first), which is the
//! measurement behind "copy when misaligned" rather than padding the wire.

use std::hint::black_box;

use concord_transport::frame::{self, ARCHIVE_ALIGN, Control, FrameKind, HEADER_LEN, Hello};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rkyv::util::AlignedVec;

fn payload_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("payload");
    for size in [64usize, 4096, 65536] {
        let payload = vec![0xA5u8; size];
        let mut out = vec![0u8; HEADER_LEN + size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("encode_copy_payload_crc/{size}"), |b| {
            b.iter(|| frame::encode_frame_into(black_box(&mut out), FrameKind::Payload, &payload))
        });
        g.bench_function(format!("header_in_place/{size}"), |b| {
            b.iter(|| frame::write_header_in_place(black_box(&mut out), FrameKind::Payload, false))
        });
        g.bench_function(format!("header_in_place_payload_crc/{size}"), |b| {
            b.iter(|| frame::write_header_in_place(black_box(&mut out), FrameKind::Payload, true))
        });
        let mut nocrc = vec![0u8; HEADER_LEN + size];
        frame::write_header_in_place(&mut nocrc, FrameKind::Payload, false);
        g.bench_function(format!("verify_header_only_crc/{size}"), |b| {
            b.iter(|| {
                frame::verify_frame(black_box(&nocrc), 1 << 24)
                    .unwrap()
                    .1
                    .len()
            })
        });
        let f = frame::encode_frame(FrameKind::Payload, &payload);
        g.bench_function(format!("verify_payload_crc/{size}"), |b| {
            b.iter(|| frame::verify_frame(black_box(&f), 1 << 24).unwrap().1.len())
        });
        g.bench_function(format!("header_only/{size}"), |b| {
            b.iter(|| frame::decode_header(black_box(&f), 1 << 24).unwrap().len)
        });
    }
    g.finish();
}

fn control_frames(c: &mut Criterion) {
    let msg = Control::Hello(Hello {
        node_id: 1,
        incarnation: 1,
        cluster_id: 2,
        protocol_min: 1,
        protocol_max: 3,
        build: "concord 0.1.0".into(),
    });
    let f = frame::encode_control(&msg);
    let mut g = c.benchmark_group("control");
    g.bench_function("encode", |b| {
        b.iter(|| frame::encode_control(black_box(&msg)).len())
    });
    for shift in [0usize, 3] {
        let mut buf: AlignedVec<ARCHIVE_ALIGN> = AlignedVec::new();
        buf.extend_from_slice(&vec![0u8; shift]);
        buf.extend_from_slice(&f);
        let mut scratch = AlignedVec::with_capacity(1024);
        let name = if shift == 0 {
            "decode_aligned"
        } else {
            "decode_misaligned_copy"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let (_, p) = frame::verify_frame(black_box(&buf[shift..]), 1 << 24).unwrap();
                frame::decode_control(p, &mut scratch).unwrap().1
            })
        });
    }
    g.finish();
}

criterion_group!(benches, payload_frames, control_frames);
criterion_main!(benches);
