//! Allocations and payload copies per delivery at each node in steady state
//! (the measurement is `tests/support/node_allocs.rs`): three nodes in one
//! process, every node multicasting 64-byte payloads in an Agreed group,
//! each counting from its `--warm`th delivery (default 2,000) to its last
//! (3 x `--per-node`, default 5,000 each).
//!
//! ```text
//! cargo run --release -p concord-runtime --example node_allocs [-- --per-node N --warm N]
//! ```
//!
//! Prints a line per node, then one JSON object per node and a summary
//! object (`allocs_per_delivery_max`, `copies_per_delivery_max`) for checks.

use concord_runtime::alloc::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[path = "../tests/support/node_allocs.rs"]
mod measure;

fn main() {
    let (mut per_node, mut warm) = (5_000u64, 2_000u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), v) {
            ("--per-node", Some(v)) => per_node = v,
            ("--warm", Some(v)) => warm = v,
            _ => {
                eprintln!("usage: node_allocs [--per-node N] [--warm N]");
                std::process::exit(2);
            }
        }
    }
    let figures = measure::measure(per_node, warm);
    for f in &figures {
        println!(
            "node {}: {} deliveries measured (of {}), {} allocations on its shard thread: {:.4} per delivery; {} received payloads copied ({} reassembled, {} under receive pressure): {:.4} per delivery (sequencer: {})",
            f.node,
            f.deliveries,
            f.expected,
            f.allocs,
            f.allocs_per_delivery(),
            f.reassembled + f.pressure_copies,
            f.reassembled,
            f.pressure_copies,
            f.copies_per_delivery(),
            f.sequencer
        );
    }
    for f in &figures {
        println!("{}", f.json());
    }
    let max = |g: fn(&measure::Figure) -> f64| figures.iter().map(g).fold(0.0, f64::max);
    println!(
        "{{\"allocs_per_delivery_max\":{:.6},\"copies_per_delivery_max\":{:.6},\"complete\":{}}}",
        max(measure::Figure::allocs_per_delivery),
        max(measure::Figure::copies_per_delivery),
        figures.iter().all(|f| f.deliveries == f.expected)
    );
}
