//! Bounded cross-shard channels (many producers, one consumer).
//!
//! The queue is a fixed-capacity [`crossbeam_queue::ArrayQueue`]: no allocation per
//! message, and a full queue is an outcome ([`Offer::BackPressured`] hands the
//! message back), never a silent drop or an unbounded buffer.
//!
//! Waking the consumer: a receiving task that finds the queue empty registers its
//! waker; the next send takes and wakes it. That waker schedules the task on its
//! shard, which unparks the shard only if the shard has announced it is parked (an
//! atomic flag): a busy or spinning receiver costs the sender no syscall.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

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
}

/// Create a channel holding at most `capacity` messages (at least 1).
pub fn channel<T: Send>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        queue: ArrayQueue::new(capacity.max(1)),
        rx_waker: AtomicWaker::new(),
        senders: AtomicUsize::new(1),
        rx_alive: AtomicBool::new(true),
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
        if !self.inner.rx_alive.load(Ordering::Acquire) {
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
        self.inner.rx_alive.store(false, Ordering::Release);
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

    #[test]
    fn capacity_zero_is_rounded_up() {
        let (tx, _rx) = channel::<()>(0);
        assert_eq!(tx.capacity(), 1);
    }
}
