//! Bounded cross-shard channels (many producers, one consumer).
//!
//! The queue is a fixed-capacity [`crossbeam_queue::ArrayQueue`]: no allocation per
//! message, and a full queue is an outcome ([`Offer::BackPressured`] hands the
//! message back), never a silent drop or an unbounded buffer.
//!
//! A producer that would rather wait than shed load awaits [`Sender::send`]: it
//! registers its waker and is woken when the consumer pops (every waiting sender
//! is woken, so a waiter whose future was dropped cannot swallow the wake-up of
//! a live one).
//!
//! Waking the consumer: a receiving task that finds the queue empty registers its
//! waker; the next send takes and wakes it. That waker schedules the task on its
//! shard, which unparks the shard only if the shard has announced it is parked (an
//! atomic flag): a busy or spinning receiver costs the sender no syscall.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

/// Outcome of [`Sender::try_send`]. Back-pressure is a value, not an error.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a back-pressured or closed offer hands the message back"]
pub enum Offer<T> {
    /// The message is queued.
    Sent,
    /// The queue is full; here is the message back. Retry later or shed load.
    BackPressured(T),
    /// The receiver is gone; here is the message back.
    Closed(T),
}

impl<T> Offer<T> {
    /// Whether the message was queued.
    pub fn is_sent(&self) -> bool {
        matches!(self, Self::Sent)
    }
}

/// Outcome of [`Receiver::try_recv`] when there is no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecv {
    /// Nothing queued now; senders remain.
    Empty,
    /// Nothing queued and every sender is gone.
    Closed,
}

struct Inner<T> {
    queue: ArrayQueue<T>,
    rx_waker: AtomicWaker,
    senders: AtomicUsize,
    rx_alive: AtomicBool,
    /// Senders waiting in [`Sender::send`] for room. The count keeps the
    /// receiver's hot path off the lock when nobody waits.
    tx_waiting: AtomicUsize,
    tx_wakers: Mutex<Vec<Waker>>,
}

impl<T> Inner<T> {
    /// Wake every sender waiting for room. All of them, not one: a waiter whose
    /// future was dropped would otherwise swallow the wake-up of a live one.
    fn wake_senders(&self) {
        if self.tx_waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        // Wake outside the lock, a small batch at a time, popping rather than
        // taking the vector so its capacity is kept: no allocation per
        // back-pressure episode in steady state.
        const BATCH: usize = 8;
        loop {
            let mut batch: [Option<Waker>; BATCH] = Default::default();
            let more = {
                let mut w = self.tx_wakers.lock().unwrap_or_else(|p| p.into_inner());
                for slot in &mut batch {
                    *slot = w.pop();
                }
                if w.is_empty() {
                    self.tx_waiting.store(0, Ordering::SeqCst);
                }
                !w.is_empty()
            };
            for w in batch.into_iter().flatten() {
                w.wake();
            }
            if !more {
                return;
            }
        }
    }
}

/// Create a channel holding at most `capacity` messages (at least 1).
pub fn channel<T: Send>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        queue: ArrayQueue::new(capacity.max(1)),
        rx_waker: AtomicWaker::new(),
        senders: AtomicUsize::new(1),
        rx_alive: AtomicBool::new(true),
        tx_waiting: AtomicUsize::new(0),
        tx_wakers: Mutex::new(Vec::new()),
    });
    (
        Sender {
            inner: Arc::clone(&inner),
        },
        Receiver { inner },
    )
}

/// The sending half; clone it for more producers. `Send + Sync`.
pub struct Sender<T> {
    inner: Arc<Inner<T>>,
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("len", &self.inner.queue.len())
            .field("capacity", &self.inner.queue.capacity())
            .finish()
    }
}

impl<T> Sender<T> {
    /// Queue `msg` without blocking.
    pub fn try_send(&self, msg: T) -> Offer<T> {
        if !self.inner.rx_alive.load(Ordering::SeqCst) {
            return Offer::Closed(msg);
        }
        match self.inner.queue.push(msg) {
            Ok(()) => {
                self.inner.rx_waker.wake();
                Offer::Sent
            }
            Err(msg) => Offer::BackPressured(msg),
        }
    }

    /// Queue `msg`, waiting while the channel is full. Gives the message back if
    /// the receiver is gone. For a producer that would rather shed load, use
    /// [`try_send`](Self::try_send), which never waits.
    pub fn send(&self, msg: T) -> SendFuture<'_, T> {
        SendFuture {
            tx: self,
            msg: Some(msg),
        }
    }

    /// Whether the receiver has been dropped.
    pub fn is_closed(&self) -> bool {
        !self.inner.rx_alive.load(Ordering::Acquire)
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.inner.queue.len()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.inner.queue.is_empty()
    }

    /// The channel's capacity.
    pub fn capacity(&self) -> usize {
        self.inner.queue.capacity()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.inner.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.inner.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The receiver must see the close even if it is waiting.
            self.inner.rx_waker.wake();
        }
    }
}

/// The receiving half. `Send`, so it can be moved to the shard that consumes it.
pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("len", &self.inner.queue.len())
            .field("capacity", &self.inner.queue.capacity())
            .finish()
    }
}

impl<T> Receiver<T> {
    /// Take a message if one is queued.
    pub fn try_recv(&mut self) -> Result<T, TryRecv> {
        if let Some(msg) = self.inner.queue.pop() {
            self.inner.wake_senders();
            return Ok(msg);
        }
        if self.inner.senders.load(Ordering::Acquire) == 0 {
            // A sender may have pushed just before dropping.
            return self.inner.queue.pop().ok_or(TryRecv::Closed);
        }
        Err(TryRecv::Empty)
    }

    /// Wait for the next message; `None` once every sender is gone and the queue
    /// is drained.
    pub fn recv(&mut self) -> Recv<'_, T> {
        Recv { rx: self }
    }

    /// Poll form of [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.try_recv() {
            Ok(msg) => return Poll::Ready(Some(msg)),
            Err(TryRecv::Closed) => return Poll::Ready(None),
            Err(TryRecv::Empty) => {}
        }
        self.inner.rx_waker.register(cx.waker());
        // Re-check after registering: a send between the first check and the
        // registration would otherwise have found no waker to wake.
        match self.try_recv() {
            Ok(msg) => Poll::Ready(Some(msg)),
            Err(TryRecv::Closed) => Poll::Ready(None),
            Err(TryRecv::Empty) => Poll::Pending,
        }
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.inner.queue.len()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.inner.queue.is_empty()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.inner.rx_alive.store(false, Ordering::SeqCst);
        self.inner.wake_senders();
    }
}

/// Future returned by [`Sender::send`]: `Ok(())` once queued, `Err(msg)` if the
/// receiver is gone.
#[must_use = "futures do nothing unless awaited"]
pub struct SendFuture<'a, T> {
    tx: &'a Sender<T>,
    msg: Option<T>,
}

impl<T> fmt::Debug for SendFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFuture")
            .field("pending", &self.msg.is_some())
            .finish()
    }
}

impl<T> Unpin for SendFuture<'_, T> {}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(msg) = this.msg.take() else {
            return Poll::Ready(Ok(()));
        };
        let inner = &this.tx.inner;
        let msg = match this.tx.try_send(msg) {
            Offer::Sent => return Poll::Ready(Ok(())),
            Offer::Closed(m) => return Poll::Ready(Err(m)),
            Offer::BackPressured(m) => m,
        };
        {
            let mut w = inner.tx_wakers.lock().unwrap_or_else(|p| p.into_inner());
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            inner.tx_waiting.store(w.len(), Ordering::SeqCst);
        }
        // Re-check after registering: a pop (or the receiver's drop) between the
        // first attempt and the registration would otherwise find no waiter.
        match this.tx.try_send(msg) {
            Offer::Sent => Poll::Ready(Ok(())),
            Offer::Closed(m) => Poll::Ready(Err(m)),
            Offer::BackPressured(m) => {
                this.msg = Some(m);
                Poll::Pending
            }
        }
    }
}

/// Future returned by [`Receiver::recv`].
#[must_use = "futures do nothing unless awaited"]
pub struct Recv<'a, T> {
    rx: &'a mut Receiver<T>,
}

impl<T> fmt::Debug for Recv<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recv").finish_non_exhaustive()
    }
}

impl<T> Future for Recv<'_, T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn full_queue_hands_the_message_back() {
        let (tx, mut rx) = channel::<u32>(2);
        assert_eq!(tx.try_send(1), Offer::Sent);
        assert_eq!(tx.try_send(2), Offer::Sent);
        assert_eq!(tx.try_send(3), Offer::BackPressured(3));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(tx.try_send(3), Offer::Sent);
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecv::Empty));
    }

    #[test]
    fn closing_either_side_is_observed() {
        let (tx, mut rx) = channel::<u32>(4);
        let tx2 = tx.clone();
        assert!(tx.try_send(7).is_sent());
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(7));
        assert_eq!(rx.try_recv(), Err(TryRecv::Empty), "tx2 still alive");
        assert!(tx2.try_send(8).is_sent());
        drop(tx2);
        assert_eq!(rx.try_recv(), Ok(8), "queued messages survive the close");
        assert_eq!(rx.try_recv(), Err(TryRecv::Closed));

        let (tx, rx) = channel::<u32>(4);
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(1), Offer::Closed(1));
    }

    #[test]
    fn poll_recv_registers_and_is_woken() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = channel::<u32>(4);
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(tx.try_send(5).is_sent());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(5)));
        // A second send without a registered waker does not wake again.
        assert!(tx.try_send(6).is_sent());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(6)));
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(tx);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            2,
            "close wakes the receiver"
        );
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    }

    struct CountWake(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for CountWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn send_waits_for_room_and_is_woken_by_a_pop() {
        let count = Arc::new(CountWake(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = channel::<u32>(1);
        assert!(tx.try_send(1).is_sent());
        let mut fut = tx.send(2);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the pop woke the sender");
        assert_eq!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(Ok(())));
        assert_eq!(rx.try_recv(), Ok(2));
    }

    #[test]
    fn a_dropped_waiting_sender_does_not_swallow_the_wake_up() {
        let (tx, mut rx) = channel::<u32>(1);
        assert!(tx.try_send(0).is_sent());
        let dead = Arc::new(CountWake(AtomicUsize::new(0)));
        let live = Arc::new(CountWake(AtomicUsize::new(0)));
        let (dead_w, live_w) = (
            Waker::from(Arc::clone(&dead)),
            Waker::from(Arc::clone(&live)),
        );
        let mut f1 = tx.send(1);
        assert!(
            Pin::new(&mut f1)
                .poll(&mut Context::from_waker(&dead_w))
                .is_pending()
        );
        let mut f2 = tx.send(2);
        assert!(
            Pin::new(&mut f2)
                .poll(&mut Context::from_waker(&live_w))
                .is_pending()
        );
        drop(f1);
        assert_eq!(rx.try_recv(), Ok(0));
        assert_eq!(live.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            Pin::new(&mut f2).poll(&mut Context::from_waker(&live_w)),
            Poll::Ready(Ok(()))
        );
    }

    #[test]
    fn send_to_a_dropped_receiver_gives_the_message_back() {
        let count = Arc::new(CountWake(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let (tx, rx) = channel::<u32>(1);
        assert!(tx.try_send(1).is_sent());
        let mut fut = tx.send(2);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        drop(rx);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "close wakes waiting senders"
        );
        assert_eq!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(Err(2)));
    }

    #[test]
    fn capacity_zero_is_rounded_up() {
        let (tx, _rx) = channel::<()>(0);
        assert_eq!(tx.capacity(), 1);
    }
}
