//! No allocation per delivered message at any node in steady state: three
//! nodes in one process, every node multicasting pooled 64-byte payloads
//! (the measurement is `support/node_allocs.rs`, which the
//! `node_allocs` example prints). Its own binary: it installs the counting
//! allocator.
//!
//! What may still allocate in the measured span is capacity growth (a ring
//! or queue reaching a new peak, once), far below one allocation per hundred
//! deliveries; anything allocated per message, per multicast or per order
//! record is at least a few per hundred and fails.

use concord_runtime::alloc::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[path = "support/node_allocs.rs"]
mod measure;

#[test]
fn no_node_allocates_per_delivery_in_steady_state() {
    let figures = measure::measure(3_000, 3_000);
    for f in &figures {
        println!("{}", f.json());
    }
    for f in &figures {
        assert_eq!(
            f.deliveries, f.expected,
            "node {} did not deliver everything: {f:?}",
            f.node
        );
        assert!(
            f.allocs * 100 < f.deliveries,
            "node {} (sequencer: {}) allocated {} times in {} deliveries: {:.4} per delivery",
            f.node,
            f.sequencer,
            f.allocs,
            f.deliveries,
            f.allocs_per_delivery()
        );
    }
}
