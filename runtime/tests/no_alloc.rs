//! Steady-state cross-shard messaging allocates nothing: channel send, the
//! receiver's wake-up (waker, remote run queue, unpark flag) and the task poll
//! reuse memory set up during warm-up.
//!
//! Own binary so that the counting allocator sees only these tests, which take
//! a lock so that they never run (and allocate) at the same time. Only the
//! runtime's shard threads are counted (each task marks its thread with
//! `alloc::track_current_thread` when it starts): the test harness's own
//! thread allocates when it prints that a test has run for over 60 seconds,
//! which happens on a loaded machine while one test waits for the other's
//! lock.
//!
//! The counting allocator's own tests live here too, since this binary
//! installs it; they count per thread, so they do not disturb the others.

use concord_runtime::alloc::{self, AllocSnapshot, CountingAlloc};
use concord_runtime::{IdleStrategy, Runtime, channel};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

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
            alloc::track_current_thread();
            while let Some(v) = b_in.recv().await {
                assert!(to_a.try_send(v).is_sent());
            }
        })
        .unwrap();
    let a = rt
        .spawn_on(0, move || async move {
            alloc::track_current_thread();
            for i in 0..200 {
                assert!(to_b.try_send(i).is_sent());
                a_in.recv().await;
            }
            let before = alloc::tracked_allocs();
            for i in 0..2_000 {
                assert!(to_b.try_send(i).is_sent());
                a_in.recv().await;
            }
            alloc::tracked_allocs() - before
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
            alloc::track_current_thread();
            let mut n = 0u64;
            while rx.recv().await.is_some() {
                n += 1;
            }
            n
        })
        .unwrap();
    let producer = rt
        .spawn_on(0, move || async move {
            alloc::track_current_thread();
            for i in 0..500 {
                tx.send(i).await.unwrap();
            }
            let before = alloc::tracked_allocs();
            for i in 0..5_000 {
                tx.send(i).await.unwrap();
            }
            alloc::tracked_allocs() - before
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

#[test]
fn rearming_a_timer_allocates_nothing() {
    let _serial = serial();
    let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
    let h = rt
        .spawn_on(0, || async {
            alloc::track_current_thread();
            let ctx = concord_runtime::ShardContext::current().unwrap();
            let fired = std::rc::Rc::new(std::cell::Cell::new(0u32));
            let f = std::rc::Rc::clone(&fired);
            let timer = ctx.timer(move || f.set(f.get() + 1));
            let round = |n: u32| {
                for _ in 0..n {
                    // Replaced before it is due, then due at once: both the
                    // stale entries and the firing ones go through the heap.
                    timer.arm(std::time::Instant::now() + std::time::Duration::from_secs(60));
                    timer.arm(std::time::Instant::now());
                }
            };
            round(50);
            concord_runtime::yield_now().await;
            let before = alloc::tracked_allocs();
            for _ in 0..200 {
                round(5);
                concord_runtime::yield_now().await;
            }
            let allocs = alloc::tracked_allocs() - before;
            (allocs, fired.get())
        })
        .unwrap();
    let (allocs, fired) = h.join().unwrap();
    rt.shutdown().unwrap();
    assert!(fired > 0, "the timer never fired");
    assert_eq!(allocs, 0, "{allocs} allocations in 2000 re-arms");
}

#[test]
fn allocation_inside_window_is_counted() {
    assert!(alloc::is_installed(), "this binary installs CountingAlloc");
    let global_before = alloc::snapshot();
    let before = alloc::thread_allocs();
    let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(100));
    let after = alloc::thread_allocs();
    let global = alloc::snapshot().since(&global_before);
    drop(v);
    assert_eq!(after - before, 1);
    // Other test threads may allocate concurrently: at least ours is there.
    assert!(global.allocs >= 1);
    assert!(global.bytes >= 100);
}

#[test]
fn nothing_counted_outside_allocations() {
    let mut buf = [0u8; 256];
    let before = alloc::thread_allocs();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31);
    }
    let sum: u64 = std::hint::black_box(&buf)
        .iter()
        .map(|&b| u64::from(b))
        .sum();
    let after = alloc::thread_allocs();
    assert!(sum > 0);
    assert_eq!(after, before, "no heap use in this window");
}

#[test]
fn realloc_counts_and_since_diffs() {
    let before = alloc::thread_allocs();
    let mut v: Vec<u64> = Vec::with_capacity(1);
    v.push(1);
    v.reserve_exact(1000);
    let n = alloc::thread_allocs() - before;
    assert_eq!(n, 2, "one alloc plus one realloc");
    let a = alloc::snapshot();
    let b = AllocSnapshot {
        allocs: a.allocs + 4,
        ..a
    };
    assert_eq!(b.since(&a).allocs, 4);
    drop(v);
}

#[test]
fn only_tracked_threads_count_in_tracked_allocs() {
    // The shard tests track their threads: hold `SERIAL` so that none runs now.
    let _serial = serial();
    let (untracked, tracked) = std::thread::spawn(|| {
        let before = alloc::tracked_allocs();
        drop(std::hint::black_box(vec![0u8; 32]));
        let untracked = alloc::tracked_allocs() - before;
        alloc::track_current_thread();
        let before = alloc::tracked_allocs();
        drop(std::hint::black_box(vec![0u8; 32]));
        (untracked, alloc::tracked_allocs() - before)
    })
    .join()
    .unwrap();
    assert_eq!((untracked, tracked), (0, 1));
}
