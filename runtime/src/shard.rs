//! One shard: a thread, its reactor, its timers, its tasks, and the duty loop.
//!
//! ```text
//! loop {
//!     work  = reactor.poll()            // I/O completions
//!           + timers.fire(now)          // due sleeps and callbacks
//!           + remote.drain()            // tasks woken / spawned from other threads
//!           + tasks.run_ready(budget)   // local run queue, bounded per turn
//!     idle.step(work, now)              // busy | spin | yield | park (capped at next timer)
//! }
//! ```
//!
//! Everything except [`ShardShared`] is `!Send` and lives on the shard thread.
//! Other threads reach a shard only through `ShardShared`: a mutex-protected
//! queue of [`Remote`] items plus two flags. The flags are what keep the hot path
//! free of syscalls: a producer unparks the shard only when the shard has
//! announced that it is parking.
//!
//! Lost-wake-up argument (Dekker with SeqCst): the producer stores
//! `has_remote = true` then loads `parked`; the shard stores `parked = true` then
//! loads `has_remote`. Sequential consistency guarantees at least one of them
//! sees the other's store, so either the shard does not park or the producer
//! unparks it. An unpark that lands before `Reactor::park` is kept as a permit
//! by the reactor (the trait requires it).

use std::any::{Any, type_name};
use std::cell::{Cell, RefCell, RefMut};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_task::Runnable;
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use slab::Slab;

use crate::error::{Error, panic_message};
use crate::idle::{IdleStrategy, Idler, Step};
use crate::reactor::{Reactor, Unpark};
use crate::runtime::Handle;
use crate::task::{Completer, JoinHandle, join_pair, run_task};
use crate::timer::{Sleep, Timer, TimerHandle, TimerQueue, call_at};

/// Tasks run per turn before the reactor is polled again, so a storm of ready
/// tasks cannot starve I/O.
const RUN_BUDGET: usize = 64;

/// Capacity of the lock-free queue of tasks woken from other threads; beyond it
/// wake-ups spill into the mutex-protected queue (slower, never lost).
const WOKEN_CAPACITY: usize = 1024;

type Job = Box<dyn FnOnce(&Rc<ShardLocal>) + Send>;

/// Counters of one shard, read with [`Handle::stats`](crate::Handle::stats).
/// Monotonic; a snapshot is not atomic across fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Turns of the duty loop.
    pub turns: u64,
    /// Times the shard blocked in `Reactor::park`.
    pub parks: u64,
    /// Times another thread (or shutdown) had to unpark it: the syscalls a
    /// parked shard cost its producers. Zero while the shard never parks.
    pub unparks: u64,
    /// Task polls.
    pub tasks_polled: u64,
    /// Task wake-ups and spawns that came from other threads.
    pub remote_wakes: u64,
    /// Tasks spawned on this shard.
    pub spawned: u64,
}

/// Written by the shard thread only (plain load + store), read by anyone.
#[derive(Default)]
struct Counters {
    turns: AtomicU64,
    parks: AtomicU64,
    tasks_polled: AtomicU64,
    remote_wakes: AtomicU64,
    spawned: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    // Single writer: no read-modify-write needed.
    c.store(c.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

/// Work handed to a shard by another thread.
pub(crate) enum Remote {
    /// A task of this shard was woken from another thread.
    Run(Runnable<usize>),
    /// Create a task on this shard (`spawn_on`).
    Spawn(Job),
}

#[derive(Default)]
struct RemoteQueue {
    items: VecDeque<Remote>,
    closed: bool,
}

/// The part of a shard that other threads can touch.
pub(crate) struct ShardShared {
    pub(crate) id: usize,
    // Separate cache lines: `parked` is written by the shard each park, `has_remote`
    // by every producer.
    parked: CachePadded<AtomicBool>,
    has_remote: CachePadded<AtomicBool>,
    /// The mutex queue has items (spawns, or wake-ups that overflowed `woken`).
    has_jobs: AtomicBool,
    shutdown: AtomicBool,
    /// Set by teardown; later remote wake-ups are not queued.
    closed: AtomicBool,
    /// Tasks woken from other threads: the hot cross-shard path, one CAS per wake.
    woken: ArrayQueue<Runnable<usize>>,
    remote: Mutex<RemoteQueue>,
    unparker: OnceLock<Arc<dyn Unpark>>,
    counters: CachePadded<Counters>,
    /// Written by producers, rarely (each is a syscall anyway).
    unparks: AtomicU64,
}

impl Drop for ShardShared {
    fn drop(&mut self) {
        // Only a wake-up racing with teardown can be left here, and only for a task
        // teardown already closed (its future is gone). Dropping a runnable off its
        // shard thread would be wrong if that ever failed; leaking it is safe.
        while let Some(r) = self.woken.pop() {
            std::mem::forget(r);
        }
    }
}

impl fmt::Debug for ShardShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardShared")
            .field("id", &self.id)
            .field("parked", &self.parked.load(Ordering::Relaxed))
            .field("shutdown", &self.shutdown.load(Ordering::Relaxed))
            .finish()
    }
}

impl ShardShared {
    pub(crate) fn new(id: usize) -> Self {
        Self {
            id,
            parked: CachePadded::new(AtomicBool::new(false)),
            has_remote: CachePadded::new(AtomicBool::new(false)),
            has_jobs: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            woken: ArrayQueue::new(WOKEN_CAPACITY),
            remote: Mutex::new(RemoteQueue::default()),
            unparker: OnceLock::new(),
            counters: CachePadded::new(Counters::default()),
            unparks: AtomicU64::new(0),
        }
    }

    fn lock_remote(&self) -> std::sync::MutexGuard<'_, RemoteQueue> {
        // Never held across user code; a poisoned lock still holds consistent data.
        self.remote.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hand `item` to the shard; gives it back if the shard has stopped.
    pub(crate) fn push_remote(&self, item: Remote) -> Result<(), Remote> {
        {
            let mut q = self.lock_remote();
            if q.closed {
                return Err(item);
            }
            q.items.push_back(item);
        }
        self.has_jobs.store(true, Ordering::SeqCst);
        self.signal();
        Ok(())
    }

    /// Tell the shard there is remote work; unpark it only if it parked.
    fn signal(&self) {
        self.has_remote.store(true, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            self.unpark();
        }
    }

    fn unpark(&self) {
        if let Some(u) = self.unparker.get() {
            self.unparks.fetch_add(1, Ordering::Relaxed);
            u.unpark();
        }
    }

    pub(crate) fn stats(&self) -> ShardStats {
        let c = &self.counters;
        ShardStats {
            turns: c.turns.load(Ordering::Relaxed),
            parks: c.parks.load(Ordering::Relaxed),
            unparks: self.unparks.load(Ordering::Relaxed),
            tasks_polled: c.tasks_polled.load(Ordering::Relaxed),
            remote_wakes: c.remote_wakes.load(Ordering::Relaxed),
            spawned: c.spawned.load(Ordering::Relaxed),
        }
    }

    /// The `schedule` function of every task of this shard.
    fn schedule(self: &Arc<Self>, mut runnable: Runnable<usize>) {
        let local =
            with_current(|local| Arc::ptr_eq(&local.shared, self).then(|| Rc::clone(local)));
        if let Some(Some(local)) = local {
            local.run_queue.borrow_mut().push_back(runnable);
            return;
        }
        if !self.closed.load(Ordering::Acquire) {
            match self.woken.push(runnable) {
                Ok(()) => {
                    self.signal();
                    return;
                }
                Err(r) => runnable = r,
            }
        }
        if let Err(Remote::Run(r)) = self.push_remote(Remote::Run(runnable)) {
            // The shard has torn down, so every one of its tasks was closed and
            // its future dropped on the shard; a closed task is never scheduled
            // again. Should that ever fail, leaking the runnable is the safe
            // choice: dropping it here could drop a `!Send` future off its thread.
            tracing::error!(shard = self.id, "task woken after its shard stopped");
            std::mem::forget(r);
        }
    }

    pub(crate) fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.unpark();
    }

    pub(crate) fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed)
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<ShardLocal>>> = const { RefCell::new(None) };
}

/// Run `f` with the current thread's shard, if it is a shard thread.
fn with_current<T>(f: impl FnOnce(&Rc<ShardLocal>) -> T) -> Option<T> {
    CURRENT
        .try_with(|c| {
            let local = c.borrow().clone();
            local.map(|l| f(&l))
        })
        .ok()
        .flatten()
}

/// The index of the shard running on this thread, if any.
pub(crate) fn current_shard_id() -> Option<usize> {
    with_current(|l| l.shared.id)
}

/// The shard-thread side of a shard.
pub(crate) struct ShardLocal {
    shared: Arc<ShardShared>,
    handle: Handle,
    run_queue: RefCell<VecDeque<Runnable<usize>>>,
    tasks: RefCell<Slab<async_task::Task<(), usize>>>,
    timers: Rc<TimerQueue>,
    reactor: RefCell<Box<dyn Reactor>>,
    /// Swapped with the remote queue so the lock is held for a pointer swap only
    /// and neither deque reallocates in steady state.
    spare: RefCell<VecDeque<Remote>>,
    failures: RefCell<Vec<Error>>,
    closing: Cell<bool>,
}

impl ShardLocal {
    fn id(&self) -> usize {
        self.shared.id
    }

    fn record_failure(&self, err: Error) {
        tracing::error!(shard = self.id(), error = %err, "unobserved failure");
        self.failures.borrow_mut().push(err);
    }

    pub(crate) fn spawn<F>(self: &Rc<Self>, fut: F) -> Result<JoinHandle<F::Output>, Error>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let (completer, handle) = join_pair(self.id());
        self.spawn_with(fut, completer)?;
        Ok(handle)
    }

    fn spawn_with<F>(self: &Rc<Self>, fut: F, completer: Completer<F::Output>) -> Result<(), Error>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        if self.closing.get() {
            // Dropping the completer tells its handle the task was cancelled.
            return Err(Error::ShuttingDown);
        }
        let weak: Weak<ShardLocal> = Rc::downgrade(self);
        let wrapped = run_task(fut, completer, self.id(), move |err| {
            if let Some(local) = weak.upgrade() {
                local.record_failure(err);
            }
        });
        let shared = Arc::clone(&self.shared);
        let runnable = {
            let mut tasks = self.tasks.borrow_mut();
            let entry = tasks.vacant_entry();
            let (runnable, task) = async_task::Builder::new()
                .metadata(entry.key())
                .spawn_local(move |_| wrapped, move |r| shared.schedule(r));
            entry.insert(task);
            runnable
        };
        bump(&self.shared.counters.spawned, 1);
        runnable.schedule();
        Ok(())
    }

    fn poll_reactor(&self) -> Result<usize, Error> {
        let shard = self.id();
        let mut reactor = self
            .reactor
            .try_borrow_mut()
            .map_err(|_| Error::ReactorBusy { shard })?;
        reactor
            .poll()
            .map_err(|source| Error::Reactor { shard, source })
    }

    fn fire_timers(&self, now: Instant) -> usize {
        let shard = self.id();
        self.timers.fire(now, |message| {
            self.record_failure(Error::TimerPanicked { shard, message })
        })
    }

    fn drain_remote(self: &Rc<Self>) -> usize {
        let n = self.take_remote();
        if n > 0 {
            bump(&self.shared.counters.remote_wakes, n as u64);
        }
        n
    }

    fn take_remote(self: &Rc<Self>) -> usize {
        // The relaxed load keeps an idle check off the producers' cache line; the
        // swap then synchronizes with the producer's store, so `has_jobs` (stored
        // before it) is visible below.
        if !self.shared.has_remote.load(Ordering::Relaxed)
            || !self.shared.has_remote.swap(false, Ordering::SeqCst)
        {
            return 0;
        }
        let mut n = 0;
        {
            let mut run_queue = self.run_queue.borrow_mut();
            while let Some(r) = self.shared.woken.pop() {
                run_queue.push_back(r);
                n += 1;
            }
        }
        if !self.shared.has_jobs.load(Ordering::Relaxed) {
            return n;
        }
        self.shared.has_jobs.store(false, Ordering::SeqCst);
        let mut spare = self.spare.borrow_mut();
        {
            let mut q = self.shared.lock_remote();
            std::mem::swap(&mut q.items, &mut *spare);
        }
        n += spare.len();
        let mut jobs = Vec::new();
        for item in spare.drain(..) {
            match item {
                Remote::Run(r) => self.run_queue.borrow_mut().push_back(r),
                Remote::Spawn(job) => jobs.push(job),
            }
        }
        drop(spare);
        // Jobs run after the borrow ends: they spawn, which may schedule.
        for job in jobs {
            job(self);
        }
        n
    }

    fn run_ready(&self, budget: usize) -> usize {
        let mut ran = 0;
        while ran < budget {
            let next = self.run_queue.borrow_mut().pop_front();
            let Some(runnable) = next else { break };
            let key = *runnable.metadata();
            runnable.run();
            ran += 1;
            let finished = {
                let mut tasks = self.tasks.borrow_mut();
                match tasks.get(key) {
                    Some(t) if t.is_finished() => Some(tasks.remove(key)),
                    _ => None,
                }
            };
            drop(finished);
        }
        if ran > 0 {
            bump(&self.shared.counters.tasks_polled, ran as u64);
        }
        ran
    }

    fn park(&self, strategy_timeout: Option<Duration>) -> Result<(), Error> {
        let timeout = match self.timers.next_deadline() {
            None => strategy_timeout,
            Some(deadline) => {
                let now = Instant::now();
                if deadline <= now {
                    return Ok(());
                }
                let until_timer = deadline - now;
                Some(strategy_timeout.map_or(until_timer, |t| t.min(until_timer)))
            }
        };
        self.shared.parked.store(true, Ordering::SeqCst);
        let pending = self.shared.has_remote.load(Ordering::SeqCst)
            || !self.run_queue.borrow().is_empty()
            || self.shared.shutdown.load(Ordering::SeqCst);
        let result = if pending {
            Ok(())
        } else {
            let shard = self.id();
            bump(&self.shared.counters.parks, 1);
            match self.reactor.try_borrow_mut() {
                Ok(mut r) => r
                    .park(timeout)
                    .map_err(|source| Error::Reactor { shard, source }),
                Err(_) => Err(Error::ReactorBusy { shard }),
            }
        };
        self.shared.parked.store(false, Ordering::Relaxed);
        result
    }

    fn run_loop(self: &Rc<Self>, strategy: IdleStrategy) -> Result<(), Error> {
        let mut idler = Idler::new(strategy);
        let needs_clock = idler.needs_clock();
        // Passed to strategies that never read the clock.
        let epoch = Instant::now();
        loop {
            if self.shared.shutdown.load(Ordering::Acquire) {
                return Ok(());
            }
            bump(&self.shared.counters.turns, 1);
            let mut work = self.poll_reactor()?;
            let mut now = None;
            if !self.timers.is_empty() {
                let t = Instant::now();
                work += self.fire_timers(t);
                now = Some(t);
            }
            work += self.drain_remote();
            work += self.run_ready(RUN_BUDGET);
            let now = match now {
                Some(t) => t,
                None if needs_clock => Instant::now(),
                None => epoch,
            };
            match idler.step(work, now) {
                Step::Busy => {}
                Step::Spin => std::hint::spin_loop(),
                Step::Yield => std::thread::yield_now(),
                Step::Park(timeout) => self.park(timeout)?,
            }
        }
    }

    /// Cancel every task and drop every future, timer and queued job on this
    /// thread (local futures must not be dropped elsewhere).
    fn teardown(&self) {
        self.closing.set(true);
        // Dropping a Task schedules it one last time so its future is dropped by
        // running the (now closed) runnable below.
        let tasks: Vec<_> = self.tasks.borrow_mut().drain().collect();
        drop(tasks);
        self.drain_closed();
        // Futures are gone; now release what the timers hold (wakers, callbacks).
        self.timers.clear();
        self.drain_closed();
    }

    /// Close the remote queue and run or drop everything queued until both
    /// queues stay empty. Runnables here belong to closed tasks: running one drops
    /// its future without polling it.
    fn drain_closed(&self) {
        loop {
            self.shared.closed.store(true, Ordering::SeqCst);
            let remote = {
                let mut q = self.shared.lock_remote();
                q.closed = true;
                std::mem::take(&mut q.items)
            };
            let mut local = std::mem::take(&mut *self.run_queue.borrow_mut());
            while let Some(r) = self.shared.woken.pop() {
                local.push_back(r);
            }
            if remote.is_empty() && local.is_empty() {
                return;
            }
            for r in local {
                r.run();
            }
            for item in remote {
                match item {
                    Remote::Run(r) => {
                        r.run();
                    }
                    Remote::Spawn(job) => drop(job),
                }
            }
        }
    }
}

/// Configuration a shard thread starts with.
pub(crate) struct ShardStart {
    pub(crate) shared: Arc<ShardShared>,
    pub(crate) handle: Handle,
    pub(crate) cpu: Option<usize>,
    pub(crate) idle: IdleStrategy,
    pub(crate) reactor: Arc<crate::runtime::ReactorFactory>,
    pub(crate) ready: std::sync::mpsc::Sender<(usize, Result<(), Error>)>,
}

/// Body of a shard thread. Returns the shard's failures (empty when clean).
pub(crate) fn shard_main(start: ShardStart) -> Vec<Error> {
    let ShardStart {
        shared,
        handle,
        cpu,
        idle,
        reactor,
        ready,
    } = start;
    let shard = shared.id;
    if let Some(cpu) = cpu
        && let Err(source) = crate::affinity::pin_current_thread(cpu)
    {
        let _ = ready.send((shard, Err(Error::Pin { shard, cpu, source })));
        return Vec::new();
    }
    let reactor = match catch_unwind(AssertUnwindSafe(|| reactor(shard))) {
        Ok(Ok(r)) => r,
        Ok(Err(source)) => {
            let _ = ready.send((shard, Err(Error::ReactorInit { shard, source })));
            return Vec::new();
        }
        Err(p) => {
            let message = panic_message(&*p);
            let _ = ready.send((shard, Err(Error::ShardPanicked { shard, message })));
            return Vec::new();
        }
    };
    // Set before the first park; producers that see no unparker know the shard
    // has not parked yet.
    let _ = shared.unparker.set(reactor.unparker());
    let local = Rc::new(ShardLocal {
        shared: Arc::clone(&shared),
        handle,
        run_queue: RefCell::new(VecDeque::with_capacity(256)),
        tasks: RefCell::new(Slab::with_capacity(64)),
        timers: Rc::new(TimerQueue::default()),
        reactor: RefCell::new(reactor),
        spare: RefCell::new(VecDeque::with_capacity(64)),
        failures: RefCell::new(Vec::new()),
        closing: Cell::new(false),
    });
    CURRENT.with(|c| *c.borrow_mut() = Some(Rc::clone(&local)));
    let _ = ready.send((shard, Ok(())));
    drop(ready);

    let outcome = catch_unwind(AssertUnwindSafe(|| local.run_loop(idle)));
    let teardown = catch_unwind(AssertUnwindSafe(|| local.teardown()));
    let mut failures = Vec::new();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(e),
        Err(p) => failures.push(Error::ShardPanicked {
            shard,
            message: panic_message(&*p),
        }),
    }
    if let Err(p) = teardown {
        failures.push(Error::ShardPanicked {
            shard,
            message: format!("while shutting down: {}", panic_message(&*p)),
        });
    }
    failures.append(&mut local.failures.borrow_mut());
    CURRENT.with(|c| c.borrow_mut().take());
    // Last reference: the reactor (and its sockets) drop here, on the shard thread.
    drop(local);
    failures
}

/// Access to the shard the calling task runs on. `!Send`: it is only valid on
/// its shard thread.
#[derive(Clone)]
pub struct ShardContext {
    local: Rc<ShardLocal>,
}

impl fmt::Debug for ShardContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardContext")
            .field("shard", &self.id())
            .finish()
    }
}

impl ShardContext {
    /// The context of the shard running on this thread.
    pub fn current() -> Result<Self, Error> {
        with_current(|l| Self {
            local: Rc::clone(l),
        })
        .ok_or(Error::NotOnShard)
    }

    /// This shard's index.
    pub fn id(&self) -> usize {
        self.local.id()
    }

    /// A handle to the whole runtime (for `spawn_on` to other shards).
    pub fn handle(&self) -> &Handle {
        &self.local.handle
    }

    /// Spawn a task on this shard. The future need not be `Send`.
    pub fn spawn_local<F>(&self, fut: F) -> Result<JoinHandle<F::Output>, Error>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.local.spawn(fut)
    }

    /// A future that completes after `dur`.
    pub fn sleep(&self, dur: Duration) -> Sleep {
        self.sleep_until(Instant::now() + dur)
    }

    /// A future that completes at `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep::new(Rc::clone(&self.local.timers), deadline)
    }

    /// Run `f` on this shard at `deadline`. A panic in `f` is reported by
    /// shutdown as [`Error::TimerPanicked`]; the shard keeps running.
    pub fn call_at(&self, deadline: Instant, f: impl FnOnce() + 'static) -> TimerHandle {
        call_at(&self.local.timers, deadline, f)
    }

    /// A timer that runs `f` on this shard at each deadline it is armed
    /// for (see [`Timer`]): `f` is boxed once, not per deadline.
    pub fn timer(&self, f: impl FnMut() + 'static) -> Timer {
        Timer::new(&self.local.timers, f)
    }

    /// Run `f` on this shard after `dur`.
    pub fn call_after(&self, dur: Duration, f: impl FnOnce() + 'static) -> TimerHandle {
        self.call_at(Instant::now() + dur, f)
    }

    /// Pending timers on this shard (cancelled ones not yet reaped included).
    pub fn timer_count(&self) -> usize {
        self.local.timers.len()
    }

    /// Borrow this shard's reactor as its concrete type. Do not hold the borrow
    /// across an `.await`: the duty loop needs the reactor between task polls and
    /// stops the shard with [`Error::ReactorBusy`] if it is still borrowed.
    pub fn reactor<R: Reactor>(&self) -> Result<RefMut<'_, R>, Error> {
        let shard = self.id();
        let guard = self
            .local
            .reactor
            .try_borrow_mut()
            .map_err(|_| Error::ReactorBusy { shard })?;
        RefMut::filter_map(guard, |r| {
            let any: &mut dyn Any = &mut **r;
            any.downcast_mut::<R>()
        })
        .map_err(|_| Error::ReactorType {
            shard,
            expected: type_name::<R>(),
        })
    }

    /// Run `f` with this shard's reactor as its concrete type.
    pub fn with_reactor<R: Reactor, T>(&self, f: impl FnOnce(&mut R) -> T) -> Result<T, Error> {
        let mut r = self.reactor::<R>()?;
        Ok(f(&mut r))
    }
}

/// Spawn a task on the current shard. Errors with [`Error::NotOnShard`] off a shard.
pub fn spawn_local<F>(fut: F) -> Result<JoinHandle<F::Output>, Error>
where
    F: Future + 'static,
    F::Output: 'static,
{
    ShardContext::current()?.spawn_local(fut)
}

/// Let the other ready tasks of this shard (and its reactor) run before continuing.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// Future returned by [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            Poll::Ready(())
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Build the job that `spawn_on` sends to a shard.
pub(crate) fn spawn_job<F, Fut>(f: F, completer: Completer<Fut::Output>) -> Remote
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    Remote::Spawn(Box::new(move |local: &Rc<ShardLocal>| {
        // `f` runs inside the task so that a panic in it is the task's panic.
        let fut = async move { f().await };
        // On error the completer was dropped, which reports Cancelled.
        let _ = local.spawn_with(fut, completer);
    }))
}
