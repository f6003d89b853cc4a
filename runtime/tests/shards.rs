//! Shards end to end: placement, idle strategies, wake-ups, timers, channels,
//! panics, shutdown. No test asserts on timing; waits are bounded so a bug
//! fails the test instead of hanging it.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use concord_runtime::{
    Error, Handle, IdleStrategy, JoinHandle, Offer, Reactor, Runtime, ShardContext, ThreadReactor,
    Unpark, affinity, channel, spawn_local, yield_now,
};

/// Far beyond anything a healthy run needs; only a hang reaches it.
const HANG: Duration = Duration::from_secs(60);

fn runtime(shards: usize, idle: IdleStrategy) -> Runtime {
    Runtime::builder()
        .shards(shards)
        .pin(false)
        .idle(idle)
        .build()
        .expect("runtime starts")
}

fn join<T>(h: JoinHandle<T>) -> Result<T, Error> {
    match h.join_timeout(HANG) {
        Ok(r) => r,
        Err(_) => panic!("task did not finish within {HANG:?}"),
    }
}

fn wait_until_parked(h: &Handle, shard: usize) {
    let give_up = Instant::now() + HANG;
    while !h.is_parked(shard) {
        assert!(Instant::now() < give_up, "shard {shard} never parked");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn all_strategies() -> Vec<IdleStrategy> {
    vec![
        IdleStrategy::BusySpin,
        IdleStrategy::Yield,
        IdleStrategy::SpinThenPark {
            spin: Duration::from_micros(20),
            park_timeout: Some(Duration::from_millis(50)),
        },
        IdleStrategy::Park,
        IdleStrategy::adaptive(),
    ]
}

#[test]
fn spawn_on_runs_on_the_named_pinned_shard() {
    let cpus = affinity::current_cpus().unwrap();
    let shards = cpus.len().min(2);
    let rt = Runtime::builder()
        .shards(shards)
        .pin(true)
        .idle(IdleStrategy::Park)
        .build()
        .unwrap();
    for (shard, &cpu) in cpus.iter().enumerate().take(shards) {
        let h = rt
            .spawn_on(shard, move || async move {
                let ctx = ShardContext::current().unwrap();
                (
                    ctx.id(),
                    std::thread::current().name().map(str::to_owned),
                    affinity::current_cpus().unwrap(),
                )
            })
            .unwrap();
        let (id, name, on) = join(h).unwrap();
        assert_eq!(id, shard);
        assert_eq!(
            name.as_deref(),
            Some(format!("concord-shard-{shard}").as_str())
        );
        assert_eq!(on, vec![rt.cpu_of(shard).unwrap()]);
        assert_eq!(rt.cpu_of(shard), Some(cpu));
    }
    rt.shutdown().unwrap();
}

#[test]
fn every_idle_strategy_makes_progress_between_shards() {
    for idle in all_strategies() {
        let rt = runtime(2, idle);
        let (to_b, mut b_in) = channel::<u32>(8);
        let (to_a, mut a_in) = channel::<u32>(8);
        let rounds = 200;
        let b = rt
            .spawn_on(1, move || async move {
                while let Some(v) = b_in.recv().await {
                    assert!(to_a.try_send(v + 1).is_sent());
                }
            })
            .unwrap();
        let a = rt
            .spawn_on(0, move || async move {
                let mut v = 0;
                for _ in 0..rounds {
                    assert!(to_b.try_send(v).is_sent());
                    v = a_in.recv().await.expect("peer alive");
                }
                v
            })
            .unwrap();
        assert_eq!(join(a).unwrap(), rounds, "{idle:?}");
        // `a` dropped `to_b`, so `b` sees the close and ends.
        join(b).unwrap();
        rt.shutdown().unwrap();
    }
}

#[test]
fn a_parked_shard_is_woken_by_a_channel_send() {
    let rt = runtime(2, IdleStrategy::Park);
    let (tx, mut rx) = channel::<&'static str>(4);
    let h = rt
        .spawn_on(1, move || async move { rx.recv().await })
        .unwrap();
    wait_until_parked(rt.handle(), 1);
    // From a plain thread: the send must notice the parked flag and unpark.
    assert!(tx.try_send("wake").is_sent());
    assert_eq!(join(h).unwrap(), Some("wake"));
    rt.shutdown().unwrap();
}

#[test]
fn a_parked_shard_is_woken_by_a_spawn() {
    let rt = runtime(1, IdleStrategy::Park);
    wait_until_parked(rt.handle(), 0);
    let h = rt.spawn_on(0, || async { 7 }).unwrap();
    assert_eq!(join(h).unwrap(), 7);
    rt.shutdown().unwrap();
}

#[test]
fn a_parked_shard_is_woken_by_its_timer() {
    // Park has no timeout of its own: only the timer deadline can end the park.
    let rt = runtime(1, IdleStrategy::Park);
    let h = rt
        .spawn_on(0, || async {
            let ctx = ShardContext::current().unwrap();
            let start = Instant::now();
            ctx.sleep(Duration::from_millis(20)).await;
            start.elapsed()
        })
        .unwrap();
    let slept = join(h).unwrap();
    assert!(slept >= Duration::from_millis(20), "woke early: {slept:?}");

    let (tx, mut rx) = channel::<u8>(1);
    let h = rt
        .spawn_on(0, move || async move {
            let ctx = ShardContext::current().unwrap();
            ctx.call_after(Duration::from_millis(5), move || {
                assert!(tx.try_send(1).is_sent());
            });
            rx.recv().await
        })
        .unwrap();
    assert_eq!(join(h).unwrap(), Some(1));
    rt.shutdown().unwrap();
}

#[test]
fn timers_fire_in_deadline_order() {
    let rt = runtime(1, IdleStrategy::adaptive());
    let h = rt
        .spawn_on(0, || async {
            let ctx = ShardContext::current().unwrap();
            let log = Rc::new(RefCell::new(Vec::new()));
            let t0 = Instant::now();
            for (tag, ms) in [("c", 30u64), ("a", 10), ("b", 20), ("a2", 10)] {
                let log = Rc::clone(&log);
                ctx.call_at(t0 + Duration::from_millis(ms), move || {
                    log.borrow_mut().push(tag)
                });
            }
            let cancelled = {
                let log = Rc::clone(&log);
                ctx.call_at(t0 + Duration::from_millis(15), move || {
                    log.borrow_mut().push("cancelled")
                })
            };
            assert!(cancelled.cancel());
            ctx.sleep_until(t0 + Duration::from_millis(40)).await;
            log.borrow().clone()
        })
        .unwrap();
    assert_eq!(join(h).unwrap(), vec!["a", "a2", "b", "c"]);
    rt.shutdown().unwrap();
}

#[test]
fn sleeping_tasks_wake_in_deadline_order() {
    let rt = runtime(1, IdleStrategy::Park);
    let h = rt
        .spawn_on(0, || async {
            let ctx = ShardContext::current().unwrap();
            let log = Rc::new(RefCell::new(Vec::new()));
            let t0 = Instant::now();
            let mut hs = Vec::new();
            for ms in [7u64, 3, 9, 1, 5, 3] {
                let (ctx2, log) = (ctx.clone(), Rc::clone(&log));
                hs.push(
                    ctx.spawn_local(async move {
                        ctx2.sleep_until(t0 + Duration::from_millis(ms)).await;
                        log.borrow_mut().push(ms);
                    })
                    .unwrap(),
                );
            }
            for h in hs {
                h.await.unwrap();
            }
            log.borrow().clone()
        })
        .unwrap();
    assert_eq!(join(h).unwrap(), vec![1, 3, 3, 5, 7, 9]);
    rt.shutdown().unwrap();
}

#[test]
fn a_full_cross_shard_channel_hands_the_message_back() {
    let rt = runtime(2, IdleStrategy::Park);
    let (tx, mut rx) = channel::<String>(2);
    let (go_tx, mut go_rx) = channel::<()>(1);
    // The consumer waits for a go signal before draining, so the queue fills.
    let consumer = rt
        .spawn_on(1, move || async move {
            go_rx.recv().await;
            let mut got = Vec::new();
            while let Some(s) = rx.recv().await {
                got.push(s);
            }
            got
        })
        .unwrap();
    let producer = rt
        .spawn_on(0, move || async move {
            assert!(tx.try_send("one".to_owned()).is_sent());
            assert!(tx.try_send("two".to_owned()).is_sent());
            let back = match tx.try_send("three".to_owned()) {
                Offer::BackPressured(m) => m,
                other => panic!("expected back-pressure, got {other:?}"),
            };
            assert!(go_tx.try_send(()).is_sent());
            // Retry until the consumer makes room: nothing is lost.
            let ctx = ShardContext::current().unwrap();
            let mut msg = back;
            loop {
                match tx.try_send(msg) {
                    Offer::Sent => break,
                    Offer::BackPressured(m) => {
                        msg = m;
                        ctx.sleep(Duration::from_micros(100)).await;
                    }
                    Offer::Closed(_) => panic!("consumer gone"),
                }
            }
        })
        .unwrap();
    join(producer).unwrap();
    assert_eq!(join(consumer).unwrap(), vec!["one", "two", "three"]);
    rt.shutdown().unwrap();
}

#[test]
fn local_tasks_spawn_yield_and_are_awaited_across_shards() {
    let rt = runtime(2, IdleStrategy::adaptive());
    let h = rt
        .spawn_on(0, || async {
            let counter = Rc::new(RefCell::new(0));
            let mut hs = Vec::new();
            for _ in 0..10 {
                let c = Rc::clone(&counter);
                hs.push(
                    spawn_local(async move {
                        for _ in 0..5 {
                            *c.borrow_mut() += 1;
                            yield_now().await;
                        }
                    })
                    .unwrap(),
                );
            }
            for h in hs {
                h.await.unwrap();
            }
            // Await a task on the other shard from this one.
            let ctx = ShardContext::current().unwrap();
            let remote = ctx
                .handle()
                .spawn_on(1, || async { ShardContext::current().unwrap().id() })
                .unwrap();
            let other = remote.await.unwrap();
            let total = *counter.borrow();
            (total, other)
        })
        .unwrap();
    assert_eq!(join(h).unwrap(), (50, 1));
    rt.shutdown().unwrap();
}

#[test]
fn a_panicking_task_surfaces_an_error_and_the_shard_survives() {
    let rt = runtime(1, IdleStrategy::adaptive());
    let h = rt.spawn_on(0, || async { panic!("boom in task") }).unwrap();
    match join::<()>(h) {
        Err(Error::TaskPanicked { shard: 0, message }) => assert!(message.contains("boom in task")),
        other => panic!("expected TaskPanicked, got {other:?}"),
    }
    // The closure passed to spawn_on panicking counts as the task's panic too.
    let h = rt
        .spawn_on(0, || -> std::future::Ready<()> {
            panic!("boom in closure")
        })
        .unwrap();
    assert!(matches!(join(h), Err(Error::TaskPanicked { .. })));
    let h = rt.spawn_on(0, || async { "still alive" }).unwrap();
    assert_eq!(join(h).unwrap(), "still alive");
    rt.shutdown().unwrap();
}

#[test]
fn a_detached_panic_is_reported_by_shutdown() {
    let rt = runtime(1, IdleStrategy::Park);
    let h = rt
        .spawn_on(0, || async { panic!("nobody is watching") })
        .unwrap();
    drop(h);
    // Make sure the panicking task has run before shutting down.
    join(rt.spawn_on(0, || async { yield_now().await }).unwrap()).unwrap();
    let timer_done = rt
        .spawn_on(0, || async {
            let ctx = ShardContext::current().unwrap();
            ctx.call_after(Duration::ZERO, || panic!("timer boom"));
            ctx.sleep(Duration::from_millis(1)).await;
        })
        .unwrap();
    join(timer_done).unwrap();
    match rt.shutdown() {
        Err(Error::Shutdown { failures }) => {
            assert_eq!(failures.len(), 2, "{failures:?}");
            assert!(
                matches!(&failures[0], Error::TaskPanicked { message, .. } if message.contains("nobody"))
            );
            assert!(
                matches!(&failures[1], Error::TimerPanicked { message, .. } if message.contains("timer boom"))
            );
        }
        other => panic!("expected the panics, got {other:?}"),
    }
}

#[test]
fn shutdown_joins_parked_shards_with_pending_timers_and_tasks() {
    let rt = runtime(2, IdleStrategy::Park);
    let dropped = Arc::new(AtomicUsize::new(0));
    struct CountDrop(Arc<AtomicUsize>);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let started = Arc::new(AtomicUsize::new(0));
    let (_tx, rx) = channel::<u8>(1);
    let mut handles = Vec::new();
    for shard in 0..2 {
        let (d, st) = (Arc::clone(&dropped), Arc::clone(&started));
        handles.push(
            rt.spawn_on(shard, move || async move {
                st.fetch_add(1, Ordering::SeqCst);
                let guard = CountDrop(d);
                let ctx = ShardContext::current().unwrap();
                ctx.call_after(Duration::from_secs(3600), move || drop(guard));
                ctx.sleep(Duration::from_secs(3600)).await;
            })
            .unwrap(),
        );
    }
    let (d, st) = (Arc::clone(&dropped), Arc::clone(&started));
    let mut rx = rx;
    handles.push(
        rt.spawn_on(1, move || async move {
            st.fetch_add(1, Ordering::SeqCst);
            let _guard = CountDrop(d);
            rx.recv().await;
        })
        .unwrap(),
    );
    let give_up = Instant::now() + HANG;
    while started.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < give_up, "tasks never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    wait_until_parked(rt.handle(), 0);
    wait_until_parked(rt.handle(), 1);
    let handle = rt.handle().clone();
    rt.shutdown().unwrap();
    for h in handles {
        assert!(matches!(join(h), Err(Error::Cancelled { .. })));
    }
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        3,
        "futures and timer callbacks dropped"
    );
    assert!(matches!(
        handle.spawn_on(0, || async {}),
        Err(Error::ShuttingDown)
    ));
}

#[test]
fn usage_errors_are_values() {
    assert!(matches!(ShardContext::current(), Err(Error::NotOnShard)));
    assert!(matches!(spawn_local(async {}), Err(Error::NotOnShard)));
    let rt = runtime(1, IdleStrategy::adaptive());
    assert!(matches!(
        rt.spawn_on(5, || async {}),
        Err(Error::NoSuchShard {
            shard: 5,
            shards: 1
        })
    ));
    let h = rt
        .spawn_on(0, || async {
            let ctx = ShardContext::current().unwrap();
            let inner = ctx.spawn_local(async { 1 }).unwrap();
            let blocking = inner.join();
            let right_type = ctx.with_reactor(|_: &mut ThreadReactor| ()).is_ok();
            let wrong_type = ctx.reactor::<FailingReactor>().err();
            (blocking.err(), right_type, wrong_type)
        })
        .unwrap();
    let (blocking, right_type, wrong_type) = join(h).unwrap();
    assert!(matches!(blocking, Some(Error::WouldDeadlock { shard: 0 })));
    assert!(right_type);
    assert!(matches!(
        wrong_type,
        Some(Error::ReactorType { shard: 0, .. })
    ));
    rt.shutdown().unwrap();

    assert!(matches!(
        Runtime::builder().shards(0).pin(false).build(),
        Err(Error::Config {
            field: "shards",
            ..
        })
    ));
    let cores = affinity::current_cpus().unwrap().len();
    assert!(matches!(
        Runtime::builder().shards(cores + 1).pin(true).build(),
        Err(Error::TooManyShards { shards, cores: c }) if shards == cores + 1 && c == cores
    ));
}

/// A reactor that fails after a number of polls (or at creation).
#[derive(Debug)]
struct FailingReactor {
    polls_left: usize,
    inner: ThreadReactor,
}

impl Reactor for FailingReactor {
    fn poll(&mut self) -> io::Result<usize> {
        if self.polls_left == 0 {
            return Err(io::Error::other("device on fire"));
        }
        self.polls_left -= 1;
        Ok(0)
    }
    fn park(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.park(timeout)
    }
    fn unparker(&self) -> Arc<dyn Unpark> {
        self.inner.unparker()
    }
}

#[test]
fn reactor_failures_are_reported() {
    let err = Runtime::builder()
        .shards(2)
        .pin(false)
        .reactor(|shard| {
            if shard == 1 {
                Err(io::Error::other("no ring for you"))
            } else {
                Ok(ThreadReactor::new())
            }
        })
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::ReactorInit { shard: 1, .. }),
        "{err:?}"
    );

    let rt = Runtime::builder()
        .shards(1)
        .pin(false)
        .idle(IdleStrategy::BusySpin)
        .reactor(|_| {
            Ok::<_, io::Error>(FailingReactor {
                polls_left: 100,
                inner: ThreadReactor::new(),
            })
        })
        .build()
        .unwrap();
    // The shard stops on its own once poll fails; spawns then fail or are cancelled.
    let give_up = Instant::now() + HANG;
    loop {
        match rt.spawn_on(0, || async {}) {
            Err(Error::ShuttingDown) => break,
            Ok(h) => {
                if matches!(join(h), Err(Error::Cancelled { .. })) {
                    break;
                }
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(Instant::now() < give_up, "shard never stopped");
    }
    match rt.shutdown() {
        Err(Error::Reactor { shard: 0, source }) => {
            assert_eq!(source.to_string(), "device on fire")
        }
        other => panic!("expected the reactor error, got {other:?}"),
    }
}

fn ping_pong(rt: &Runtime, rounds: u32) {
    let (to_b, mut b_in) = channel::<u32>(8);
    let (to_a, mut a_in) = channel::<u32>(8);
    let b = rt
        .spawn_on(1, move || async move {
            while let Some(v) = b_in.recv().await {
                assert!(to_a.try_send(v + 1).is_sent());
            }
        })
        .unwrap();
    let a = rt
        .spawn_on(0, move || async move {
            let mut v = 0;
            for _ in 0..rounds {
                assert!(to_b.try_send(v).is_sent());
                v = a_in.recv().await.expect("peer alive");
            }
            v
        })
        .unwrap();
    assert_eq!(join(a).unwrap(), rounds);
    join(b).unwrap();
}

#[test]
fn a_spinning_shard_costs_its_producers_no_unpark() {
    let rt = runtime(2, IdleStrategy::BusySpin);
    ping_pong(&rt, 500);
    for shard in 0..2 {
        let s = rt.handle().stats(shard).unwrap();
        assert_eq!(s.parks, 0, "shard {shard}: {s:?}");
        assert_eq!(s.unparks, 0, "shard {shard}: {s:?}");
        // Counts depend on how often the answer was already there (no wake needed).
        assert!(s.remote_wakes > 0, "shard {shard}: {s:?}");
        assert!(s.tasks_polled > 0, "shard {shard}: {s:?}");
        assert!(s.turns > 0 && s.spawned >= 1, "shard {shard}: {s:?}");
    }
    rt.shutdown().unwrap();
}

#[test]
fn a_parking_shard_is_unparked_by_its_producers() {
    let rt = runtime(2, IdleStrategy::Park);
    ping_pong(&rt, 100);
    let total: u64 = (0..2).map(|s| rt.handle().stats(s).unwrap().unparks).sum();
    let parks: u64 = (0..2).map(|s| rt.handle().stats(s).unwrap().parks).sum();
    // Each round trip finds at least one shard parked (Park parks whenever idle),
    // and every park that was not cut short needed an unpark to end.
    assert!(parks > 0 && total > 0, "parks {parks}, unparks {total}");
    assert!(rt.handle().stats(2).is_none());
    rt.shutdown().unwrap();
}

#[test]
fn send_await_carries_a_stream_through_a_tiny_channel_without_loss() {
    for idle in [IdleStrategy::Park, IdleStrategy::adaptive()] {
        let rt = runtime(2, idle);
        let (tx, mut rx) = channel::<u64>(2);
        let n = 2_000u64;
        let consumer = rt
            .spawn_on(1, move || async move {
                let (mut count, mut sum, mut last) = (0u64, 0u64, None);
                while let Some(v) = rx.recv().await {
                    assert!(
                        last.is_none_or(|l| v == l + 1),
                        "out of order: {last:?} then {v}"
                    );
                    last = Some(v);
                    count += 1;
                    sum += v;
                }
                (count, sum)
            })
            .unwrap();
        let producer = rt
            .spawn_on(0, move || async move {
                for v in 0..n {
                    tx.send(v).await.expect("receiver alive");
                }
            })
            .unwrap();
        join(producer).unwrap();
        assert_eq!(join(consumer).unwrap(), (n, n * (n - 1) / 2), "{idle:?}");
        rt.shutdown().unwrap();
    }
}
