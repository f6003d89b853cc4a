//! Task results: [`JoinHandle`] and the wrapper that catches a task's panic.
//!
//! A task's output travels through a small shared slot rather than through
//! `async_task::Task`, because the result must reach three kinds of waiter: a
//! task on the same shard, a task on another shard, and a plain thread blocking
//! in [`JoinHandle::join`]. A panic becomes [`Error::TaskPanicked`]; a task
//! dropped before it finished (shutdown) becomes [`Error::Cancelled`]; neither
//! hangs the waiter.

use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{Error, panic_message};

struct Slot<T> {
    result: Option<Result<T, Error>>,
    /// The result was taken by the handle.
    taken: bool,
    handle_alive: bool,
    waker: Option<Waker>,
}

struct JoinState<T> {
    slot: Mutex<Slot<T>>,
    done: Condvar,
}

impl<T> JoinState<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // The lock is never held across user code, so poisoning cannot leave the
        // slot half-updated; take the data either way.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Create a connected completer / handle pair for a task on `shard`.
pub(crate) fn join_pair<T>(shard: usize) -> (Completer<T>, JoinHandle<T>) {
    let state = Arc::new(JoinState {
        slot: Mutex::new(Slot {
            result: None,
            taken: false,
            handle_alive: true,
            waker: None,
        }),
        done: Condvar::new(),
    });
    (
        Completer {
            state: Some(Arc::clone(&state)),
            shard,
        },
        JoinHandle { state, shard },
    )
}

/// The task side of a [`JoinHandle`]. Dropping it unfinished reports
/// [`Error::Cancelled`].
pub(crate) struct Completer<T> {
    state: Option<Arc<JoinState<T>>>,
    shard: usize,
}

impl<T> Completer<T> {
    /// Deliver the result. If the handle was dropped, a failure comes back so
    /// the shard can report it instead of losing it.
    pub(crate) fn complete(mut self, result: Result<T, Error>) -> Option<Error> {
        let state = self.state.take()?;
        Self::deliver(&state, result)
    }

    fn deliver(state: &JoinState<T>, result: Result<T, Error>) -> Option<Error> {
        let waker = {
            let mut slot = state.lock();
            if !slot.handle_alive {
                return result.err();
            }
            slot.result = Some(result);
            slot.waker.take()
        };
        state.done.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
        None
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            // Cancellation is not a failure to report when nobody waits.
            let _unobserved = Self::deliver(&state, Err(Error::Cancelled { shard: self.shard }));
        }
    }
}

/// Waits for a task's result. Await it (from any shard) or [`join`](Self::join) it
/// (from a thread that is not a shard). Dropping it detaches the task, which keeps
/// running; a detached task's panic is reported by
/// [`Runtime::shutdown`](crate::Runtime::shutdown).
#[must_use = "dropping a JoinHandle detaches the task"]
pub struct JoinHandle<T> {
    state: Arc<JoinState<T>>,
    shard: usize,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("shard", &self.shard)
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> JoinHandle<T> {
    /// The shard the task runs on.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Whether the result is ready.
    pub fn is_finished(&self) -> bool {
        let slot = self.state.lock();
        slot.result.is_some() || slot.taken
    }

    /// Block the calling thread until the task finishes.
    ///
    /// Returns [`Error::WouldDeadlock`] on a shard thread: await the handle there.
    pub fn join(self) -> Result<T, Error> {
        match self.wait(None) {
            Ok(r) => r,
            Err(_) => unreachable!("an unbounded wait only returns with a result"),
        }
    }

    /// Like [`join`](Self::join) but gives up after `timeout`, handing the handle back.
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<T, Error>, Self> {
        self.wait(Some(timeout))
    }

    fn wait(self, timeout: Option<Duration>) -> Result<Result<T, Error>, Self> {
        if let Some(shard) = crate::shard::current_shard_id() {
            return Ok(Err(Error::WouldDeadlock { shard }));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut slot = self.state.lock();
        loop {
            if let Some(r) = slot.result.take() {
                slot.taken = true;
                return Ok(r);
            }
            slot = match deadline {
                None => self
                    .state
                    .done
                    .wait(slot)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        drop(slot);
                        return Err(self);
                    }
                    self.state
                        .done
                        .wait_timeout(slot, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.state.lock();
        if let Some(r) = slot.result.take() {
            slot.taken = true;
            return Poll::Ready(r);
        }
        if slot.taken {
            // Polled again after completion: report it as a value, not a panic.
            return Poll::Ready(Err(Error::Cancelled { shard: self.shard }));
        }
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        let mut slot = self.state.lock();
        slot.handle_alive = false;
        slot.waker = None;
    }
}

/// Run `fut` to completion with panics caught, then deliver the outcome. A
/// failure nobody is waiting for goes to `unobserved`.
pub(crate) async fn run_task<F: Future>(
    fut: F,
    completer: Completer<F::Output>,
    shard: usize,
    unobserved: impl FnOnce(Error),
) {
    let mut fut = pin!(fut);
    let outcome = poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(Error::TaskPanicked {
                shard,
                message: panic_message(&*payload),
            })),
        },
    )
    .await;
    if let Some(err) = completer.complete(outcome) {
        unobserved(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_result_reaches_a_blocking_joiner() {
        let (c, h) = join_pair::<u32>(3);
        let t = std::thread::spawn(move || h.join());
        assert!(c.complete(Ok(9)).is_none());
        assert_eq!(t.join().unwrap().unwrap(), 9);
    }

    #[test]
    fn dropped_completer_reports_cancelled() {
        let (c, h) = join_pair::<u32>(1);
        drop(c);
        assert!(matches!(h.join(), Err(Error::Cancelled { shard: 1 })));
    }

    #[test]
    fn failure_of_a_detached_task_comes_back() {
        let (c, h) = join_pair::<u32>(0);
        drop(h);
        let back = c.complete(Err(Error::TaskPanicked {
            shard: 0,
            message: "x".into(),
        }));
        assert!(matches!(back, Some(Error::TaskPanicked { .. })));
        let (c, h) = join_pair::<u32>(0);
        drop(h);
        assert!(c.complete(Ok(1)).is_none(), "success needs no report");
    }

    #[test]
    fn join_timeout_hands_the_handle_back() {
        let (c, h) = join_pair::<u32>(0);
        let h = h.join_timeout(Duration::from_millis(1)).unwrap_err();
        assert!(!h.is_finished());
        assert!(c.complete(Ok(4)).is_none());
        assert!(h.is_finished());
        assert_eq!(
            h.join_timeout(Duration::from_secs(60))
                .ok()
                .unwrap()
                .unwrap(),
            4
        );
    }
}
