//! Shard-local timers: a binary heap keyed by (deadline, insertion order).
//!
//! O(log n) insert and fire is plenty for protocol timers (heartbeats, failure
//! detection, retransmits), of which a shard has tens to thousands. Cancellation is
//! lazy: a cancelled entry stays in the heap until it reaches the top or until
//! cancelled entries are more than half of the heap, when the heap is compacted,
//! so memory stays bounded when most timeouts are cancelled before they fire
//! (the common case for request timeouts).
//!
//! Everything here is `!Send`: a timer belongs to the shard that created it.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::error::panic_message;

/// Compact when at least this many entries are cancelled and they are the majority.
const COMPACT_MIN: usize = 64;

struct SleepState {
    fired: Cell<bool>,
    cancelled: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

type Callback = Box<dyn FnOnce()>;

struct CallbackState {
    /// `None` once fired or cancelled.
    f: RefCell<Option<Callback>>,
}

/// A [`Timer`]'s callback and which of its heap entries is live.
struct RepeatState {
    f: RefCell<Box<dyn FnMut()>>,
    /// The `seq` of the entry that fires it; `None` while not armed. Entries
    /// of earlier arms stay in the heap and are skipped as cancelled.
    armed: Cell<Option<u64>>,
    deadline: Cell<Option<Instant>>,
}

enum Action {
    Wake(Rc<SleepState>),
    Call(Rc<CallbackState>),
    Repeat(Rc<RepeatState>, u64),
}

struct Entry {
    deadline: Instant,
    seq: u64,
    action: Action,
}

impl Entry {
    fn is_cancelled(&self) -> bool {
        match &self.action {
            Action::Wake(s) => s.cancelled.get(),
            Action::Call(c) => c.f.borrow().is_none(),
            Action::Repeat(r, seq) => r.armed.get() != Some(*seq),
        }
    }
}

// Reversed so that `BinaryHeap` (a max-heap) pops the earliest deadline; the
// sequence number makes timers with equal deadlines fire in creation order.
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}

/// One shard's timers.
#[derive(Default)]
pub(crate) struct TimerQueue {
    heap: RefCell<BinaryHeap<Entry>>,
    seq: Cell<u64>,
    cancelled: Cell<usize>,
}

impl fmt::Debug for TimerQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerQueue")
            .field("len", &self.heap.borrow().len())
            .field("cancelled", &self.cancelled.get())
            .finish()
    }
}

impl TimerQueue {
    fn push(&self, deadline: Instant, action: Action) {
        let seq = self.next_seq();
        self.push_as(deadline, seq, action);
    }

    fn next_seq(&self) -> u64 {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        seq
    }

    fn push_as(&self, deadline: Instant, seq: u64, action: Action) {
        self.heap.borrow_mut().push(Entry {
            deadline,
            seq,
            action,
        });
    }

    /// Number of entries, cancelled ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.borrow().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.heap.borrow().is_empty()
    }

    fn note_cancelled(&self) {
        let cancelled = self.cancelled.get() + 1;
        self.cancelled.set(cancelled);
        if cancelled >= COMPACT_MIN
            && let Ok(mut heap) = self.heap.try_borrow_mut()
            && cancelled * 2 > heap.len()
        {
            heap.retain(|e| !e.is_cancelled());
            self.cancelled.set(0);
        }
    }

    /// The earliest live deadline, dropping cancelled entries on top.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut heap = self.heap.borrow_mut();
        while let Some(top) = heap.peek() {
            if top.is_cancelled() {
                heap.pop();
                self.cancelled.set(self.cancelled.get().saturating_sub(1));
            } else {
                return Some(top.deadline);
            }
        }
        None
    }

    /// Fire every timer due at `now`, in deadline order. Wakes sleepers, runs
    /// callbacks (a panicking callback is reported to `on_panic` and the rest still
    /// fire). Returns how many fired.
    pub(crate) fn fire(&self, now: Instant, mut on_panic: impl FnMut(String)) -> usize {
        let mut fired = 0;
        loop {
            // The heap borrow ends before the action runs: a callback may add timers.
            let entry = {
                let mut heap = self.heap.borrow_mut();
                match heap.peek() {
                    Some(e) if e.deadline <= now => heap.pop(),
                    _ => None,
                }
            };
            let Some(entry) = entry else { break };
            match entry.action {
                Action::Wake(s) => {
                    if s.cancelled.get() {
                        self.cancelled.set(self.cancelled.get().saturating_sub(1));
                        continue;
                    }
                    s.fired.set(true);
                    let waker = s.waker.borrow_mut().take();
                    if let Some(w) = waker {
                        w.wake();
                    }
                    fired += 1;
                }
                Action::Repeat(r, seq) => {
                    if r.armed.get() != Some(seq) {
                        self.cancelled.set(self.cancelled.get().saturating_sub(1));
                        continue;
                    }
                    r.armed.set(None);
                    r.deadline.set(None);
                    // The callback may arm its own timer again: that only
                    // pushes an entry, it does not touch `f`.
                    let Ok(mut f) = r.f.try_borrow_mut() else {
                        continue;
                    };
                    if let Err(p) = catch_unwind(AssertUnwindSafe(|| (*f)())) {
                        on_panic(panic_message(&*p));
                    }
                    fired += 1;
                }
                Action::Call(c) => {
                    let f = c.f.borrow_mut().take();
                    match f {
                        None => {
                            self.cancelled.set(self.cancelled.get().saturating_sub(1));
                        }
                        Some(f) => {
                            if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
                                on_panic(panic_message(&*p));
                            }
                            fired += 1;
                        }
                    }
                }
            }
        }
        fired
    }

    /// Drop every entry (shard teardown), which releases the wakers and callbacks
    /// they hold and breaks any reference cycle through them.
    pub(crate) fn clear(&self) {
        let entries = std::mem::take(&mut *self.heap.borrow_mut());
        self.cancelled.set(0);
        drop(entries);
    }
}

/// Register a callback to run on this shard at `deadline`.
pub(crate) fn call_at(
    queue: &Rc<TimerQueue>,
    deadline: Instant,
    f: impl FnOnce() + 'static,
) -> TimerHandle {
    let state = Rc::new(CallbackState {
        f: RefCell::new(Some(Box::new(f))),
    });
    queue.push(deadline, Action::Call(Rc::clone(&state)));
    TimerHandle {
        state,
        queue: Rc::clone(queue),
    }
}

/// A callback timer that can be armed again and again: the callback is
/// boxed once, when the timer is made, and each [`arm`](Timer::arm) only
/// pushes a heap entry (no allocation once the heap has grown), where every
/// [`ShardContext::call_at`](crate::ShardContext::call_at) boxes its
/// callback anew. For a deadline that moves all the time, like a protocol
/// engine's next wake-up. At most one deadline is pending: arming again
/// replaces it. Dropping the timer cancels it.
pub struct Timer {
    state: Rc<RepeatState>,
    queue: Rc<TimerQueue>,
}

impl Timer {
    pub(crate) fn new(queue: &Rc<TimerQueue>, f: impl FnMut() + 'static) -> Self {
        Timer {
            state: Rc::new(RepeatState {
                f: RefCell::new(Box::new(f)),
                armed: Cell::new(None),
                deadline: Cell::new(None),
            }),
            queue: Rc::clone(queue),
        }
    }

    /// Runs the callback at `deadline` (on this shard), instead of at the
    /// deadline pending, if any.
    pub fn arm(&self, deadline: Instant) {
        self.cancel();
        let seq = self.queue.next_seq();
        self.state.armed.set(Some(seq));
        self.state.deadline.set(Some(deadline));
        self.queue
            .push_as(deadline, seq, Action::Repeat(Rc::clone(&self.state), seq));
    }

    /// Forgets the pending deadline. Returns whether there was one.
    pub fn cancel(&self) -> bool {
        self.state.deadline.set(None);
        if self.state.armed.take().is_some() {
            self.queue.note_cancelled();
            true
        } else {
            false
        }
    }

    /// The pending deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.state.deadline.get()
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("deadline", &self.deadline())
            .finish()
    }
}

/// A callback timer. Dropping the handle does not cancel the timer.
pub struct TimerHandle {
    state: Rc<CallbackState>,
    queue: Rc<TimerQueue>,
}

impl fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerHandle")
            .field("pending", &self.is_pending())
            .finish()
    }
}

impl TimerHandle {
    /// Cancel the callback. Returns `true` if it had not run yet.
    pub fn cancel(&self) -> bool {
        let f = self.state.f.borrow_mut().take();
        match f {
            Some(f) => {
                drop(f);
                self.queue.note_cancelled();
                true
            }
            None => false,
        }
    }

    /// Whether the callback has neither run nor been cancelled.
    pub fn is_pending(&self) -> bool {
        self.state.f.borrow().is_some()
    }
}

/// A future that completes at a deadline on the shard that created it.
/// Obtain it from [`ShardContext::sleep`](crate::ShardContext::sleep).
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    queue: Rc<TimerQueue>,
    state: Option<Rc<SleepState>>,
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Sleep {
    pub(crate) fn new(queue: Rc<TimerQueue>, deadline: Instant) -> Self {
        Self {
            deadline,
            queue,
            state: None,
        }
    }

    /// When this sleep completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match &this.state {
            Some(s) if s.fired.get() => Poll::Ready(()),
            Some(s) => {
                let mut slot = s.waker.borrow_mut();
                match &*slot {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            None => {
                // Even an expired deadline goes through the heap, so sleeps complete
                // in deadline order however late their first poll is.
                let s = Rc::new(SleepState {
                    fired: Cell::new(false),
                    cancelled: Cell::new(false),
                    waker: RefCell::new(Some(cx.waker().clone())),
                });
                this.queue.push(this.deadline, Action::Wake(Rc::clone(&s)));
                this.state = Some(s);
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(s) = &self.state
            && !s.fired.get()
        {
            s.cancelled.set(true);
            s.waker.borrow_mut().take();
            self.queue.note_cancelled();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn callbacks_fire_in_deadline_then_creation_order() {
        let q = Rc::new(TimerQueue::default());
        let log = Rc::new(RefCell::new(Vec::new()));
        let t0 = Instant::now();
        for (i, ms) in [(0, 30), (1, 10), (2, 20), (3, 10), (4, 0)] {
            let log = Rc::clone(&log);
            call_at(&q, t0 + Duration::from_millis(ms), move || {
                log.borrow_mut().push(i)
            });
        }
        assert_eq!(q.fire(t0 + Duration::from_millis(15), |_| {}), 3);
        assert_eq!(*log.borrow(), vec![4, 1, 3]);
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(20)));
        assert_eq!(q.fire(t0 + Duration::from_secs(1), |_| {}), 2);
        assert_eq!(*log.borrow(), vec![4, 1, 3, 2, 0]);
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn cancelled_callbacks_do_not_fire() {
        let q = Rc::new(TimerQueue::default());
        let hit = Rc::new(Cell::new(0));
        let t0 = Instant::now();
        let h1 = {
            let hit = Rc::clone(&hit);
            call_at(&q, t0, move || hit.set(hit.get() + 1))
        };
        let h2 = {
            let hit = Rc::clone(&hit);
            call_at(&q, t0 + Duration::from_millis(1), move || {
                hit.set(hit.get() + 10)
            })
        };
        assert!(h1.cancel());
        assert!(!h1.cancel(), "second cancel is a no-op");
        assert!(h2.is_pending());
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(q.fire(t0 + Duration::from_secs(1), |_| {}), 1);
        assert_eq!(hit.get(), 10);
        assert!(!h2.is_pending());
        assert!(!h2.cancel());
    }

    #[test]
    fn a_panicking_callback_is_reported_and_the_rest_fire() {
        let q = Rc::new(TimerQueue::default());
        let t0 = Instant::now();
        let hit = Rc::new(Cell::new(false));
        call_at(&q, t0, || panic!("boom"));
        let h = Rc::clone(&hit);
        call_at(&q, t0, move || h.set(true));
        let mut panics = Vec::new();
        assert_eq!(q.fire(t0, |m| panics.push(m)), 2);
        assert_eq!(panics, vec!["boom".to_owned()]);
        assert!(hit.get());
    }

    #[test]
    fn callbacks_may_add_timers_while_firing() {
        let q = Rc::new(TimerQueue::default());
        let t0 = Instant::now();
        let hit = Rc::new(Cell::new(false));
        let (q2, h2) = (Rc::clone(&q), Rc::clone(&hit));
        call_at(&q, t0, move || {
            call_at(&q2, t0, move || h2.set(true));
        });
        // The nested timer is due too, so it fires in the same pass.
        assert_eq!(q.fire(t0, |_| {}), 2);
        assert!(hit.get());
    }

    #[test]
    fn mass_cancellation_compacts_the_heap() {
        let q = Rc::new(TimerQueue::default());
        let far = Instant::now() + Duration::from_secs(3600);
        let handles: Vec<_> = (0..1000).map(|_| call_at(&q, far, || {})).collect();
        for h in &handles {
            h.cancel();
        }
        assert!(q.len() < COMPACT_MIN * 2, "heap kept {} entries", q.len());
    }

    #[test]
    fn a_timer_fires_at_its_last_deadline_and_can_be_armed_again() {
        let q = Rc::new(TimerQueue::default());
        let hits = Rc::new(Cell::new(0));
        let t0 = Instant::now();
        let h = Rc::clone(&hits);
        let t = Timer::new(&q, move || h.set(h.get() + 1));
        t.arm(t0 + Duration::from_millis(5));
        t.arm(t0 + Duration::from_millis(10));
        assert_eq!(t.deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(q.fire(t0 + Duration::from_millis(7), |_| {}), 0, "replaced");
        assert_eq!(q.fire(t0 + Duration::from_millis(10), |_| {}), 1);
        assert_eq!((hits.get(), t.deadline()), (1, None));
        t.arm(t0 + Duration::from_millis(20));
        assert!(t.cancel());
        assert!(!t.cancel());
        assert_eq!(q.fire(t0 + Duration::from_secs(1), |_| {}), 0);
        t.arm(t0 + Duration::from_millis(30));
        assert_eq!(q.fire(t0 + Duration::from_secs(1), |_| {}), 1);
        assert_eq!(hits.get(), 2);
        t.arm(t0 + Duration::from_millis(40));
        drop(t);
        assert_eq!(q.next_deadline(), None, "dropping cancels");
    }

    #[test]
    fn a_timer_may_arm_itself_from_its_callback() {
        let q = Rc::new(TimerQueue::default());
        let t0 = Instant::now();
        let me: Rc<RefCell<Option<Timer>>> = Rc::new(RefCell::new(None));
        let (m, hits) = (Rc::clone(&me), Rc::new(Cell::new(0u32)));
        let h = Rc::clone(&hits);
        let t = Timer::new(&q, move || {
            h.set(h.get() + 1);
            if h.get() < 3
                && let Some(t) = &*m.borrow()
            {
                t.arm(t0);
            }
        });
        t.arm(t0);
        *me.borrow_mut() = Some(t);
        assert_eq!(q.fire(t0, |_| {}), 3);
        assert_eq!(hits.get(), 3);
        me.borrow_mut().take();
    }

    #[test]
    fn dropped_sleep_is_cancelled() {
        let q = Rc::new(TimerQueue::default());
        let deadline = Instant::now() + Duration::from_secs(3600);
        let mut sleep = Sleep::new(Rc::clone(&q), deadline);
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(Pin::new(&mut sleep).poll(&mut cx).is_pending());
        assert_eq!(q.next_deadline(), Some(deadline));
        drop(sleep);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn sleep_completes_when_fired() {
        let q = Rc::new(TimerQueue::default());
        let deadline = Instant::now() + Duration::from_secs(3600);
        let mut sleep = Sleep::new(Rc::clone(&q), deadline);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut sleep).poll(&mut cx).is_pending());
        assert_eq!(q.fire(deadline, |_| {}), 1);
        assert!(Pin::new(&mut sleep).poll(&mut cx).is_ready());
        // Sleeps first polled after their deadline still complete in deadline order.
        let t0 = Instant::now();
        let mut late = Sleep::new(Rc::clone(&q), t0 + Duration::from_millis(2));
        let mut early = Sleep::new(Rc::clone(&q), t0 + Duration::from_millis(1));
        assert!(Pin::new(&mut late).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut early).poll(&mut cx).is_pending());
        let q2 = Rc::clone(&q);
        assert_eq!(q2.next_deadline(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(q.fire(t0 + Duration::from_secs(1), |_| {}), 2);
        assert!(Pin::new(&mut late).poll(&mut cx).is_ready());
        assert!(Pin::new(&mut early).poll(&mut cx).is_ready());
    }
}
