//! Steady-state cross-shard messaging allocates nothing: channel send, the
//! receiver's wake-up (waker, remote run queue, unpark flag) and the task poll
//! reuse memory set up during warm-up.
//!
//! Own binary so that the counting allocator sees only these tests, which take
//! a lock so that they never run (and allocate) at the same time. Only the
//! runtime's shard threads are counted (each task marks its thread when it
//! starts): the test harness's own thread allocates when it prints that a
//! test has run for over 60 seconds, which happens on a loaded machine while
//! one test waits for the other's lock.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use concord_runtime::{IdleStrategy, Runtime, channel};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the shard threads the tests run on; allocations elsewhere are
    /// not the runtime's.
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count() {
    if COUNTED.try_with(|c| c.get()).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts the allocations of the calling (shard) thread from now on.
fn count_this_thread() {
    COUNTED.with(|c| c.set(true));
}

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn round_trips_allocate_nothing(idle: IdleStrategy) {
    let rt = Runtime::builder()
        .shards(2)
        .pin(false)
        .idle(idle)
        .build()
        .unwrap();
    let (to_b, mut b_in) = channel::<u64>(4);
    let (to_a, mut a_in) = channel::<u64>(4);
    let b = rt
        .spawn_on(1, move || async move {
            count_this_thread();
            while let Some(v) = b_in.recv().await {
                assert!(to_a.try_send(v).is_sent());
            }
        })
        .unwrap();
    let a = rt
        .spawn_on(0, move || async move {
            count_this_thread();
            for i in 0..200 {
                assert!(to_b.try_send(i).is_sent());
                a_in.recv().await;
            }
            let before = ALLOCS.load(Ordering::SeqCst);
            for i in 0..2_000 {
                assert!(to_b.try_send(i).is_sent());
                a_in.recv().await;
            }
            ALLOCS.load(Ordering::SeqCst) - before
        })
        .unwrap();
    let allocs = a.join().unwrap();
    b.join().unwrap();
    rt.shutdown().unwrap();
    assert_eq!(
        allocs, 0,
        "{idle:?}: {allocs} allocations in 2000 round trips"
    );
}

#[test]
fn steady_state_round_trips_allocate_nothing() {
    let _serial = serial();
    round_trips_allocate_nothing(IdleStrategy::BusySpin);
    round_trips_allocate_nothing(IdleStrategy::Park);
    round_trips_allocate_nothing(IdleStrategy::adaptive());
}

#[test]
fn steady_state_back_pressured_sends_allocate_nothing() {
    let _serial = serial();
    let rt = Runtime::builder()
        .shards(2)
        .pin(false)
        .idle(IdleStrategy::adaptive())
        .build()
        .unwrap();
    let (tx, mut rx) = channel::<u64>(1);
    let consumer = rt
        .spawn_on(1, move || async move {
            count_this_thread();
            let mut n = 0u64;
            while rx.recv().await.is_some() {
                n += 1;
            }
            n
        })
        .unwrap();
    let producer = rt
        .spawn_on(0, move || async move {
            count_this_thread();
            for i in 0..500 {
                tx.send(i).await.unwrap();
            }
            let before = ALLOCS.load(Ordering::SeqCst);
            for i in 0..5_000 {
                tx.send(i).await.unwrap();
            }
            ALLOCS.load(Ordering::SeqCst) - before
        })
        .unwrap();
    let allocs = producer.join().unwrap();
    assert_eq!(consumer.join().unwrap(), 5_500);
    rt.shutdown().unwrap();
    assert_eq!(
        allocs, 0,
        "{allocs} allocations in 5000 sends through a 1-slot channel"
    );
}
