//! The shard's source of I/O events, and how to wake a shard that sleeps on it.
//!
//! A shard owns exactly one [`Reactor`]; the transport's io_uring `Driver` is the
//! real one (see the `driver` module), and [`ThreadReactor`] is the I/O-less one
//! for shards that only run tasks, timers and channels. The runtime never assumes
//! more of a reactor than this trait, which keeps it testable without the transport.

use std::any::Any;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::sync::{Parker, Unparker};

/// Wakes a shard parked in [`Reactor::park`]. Called from any thread.
pub trait Unpark: Send + Sync + 'static {
    /// Make the current or the next `park` return promptly. Wake-ups may coalesce.
    fn unpark(&self);
}

/// A shard's I/O event source. Lives on the shard thread only.
pub trait Reactor: Any {
    /// Reap completions and run their handlers without blocking. Returns how much
    /// work was done (0 means "nothing happened", which feeds the idle strategy).
    fn poll(&mut self) -> io::Result<usize>;

    /// Block until I/O is ready, the [`Unpark`] handle is called, or `timeout`
    /// passes (`None`: no timeout). May return early (spuriously).
    ///
    /// An `unpark` that happens after the shard announced it is about to park but
    /// before this call must not be lost: the next `park` returns at once.
    fn park(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// The handle that wakes this reactor's `park`.
    fn unparker(&self) -> Arc<dyn Unpark>;
}

/// A reactor with no I/O: `park` is a thread park with a timeout.
///
/// The permit semantics of [`crossbeam_utils::sync::Parker`] (an unpark before
/// the park makes that park return at once) give the no-lost-wake-up guarantee
/// [`Reactor::park`] asks for.
#[derive(Debug, Default)]
pub struct ThreadReactor {
    parker: Parker,
}

impl ThreadReactor {
    /// A new reactor; its parker is not tied to a thread until it parks.
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Debug)]
struct ThreadUnpark(Unparker);

impl Unpark for ThreadUnpark {
    fn unpark(&self) {
        self.0.unpark();
    }
}

impl Reactor for ThreadReactor {
    fn poll(&mut self) -> io::Result<usize> {
        Ok(0)
    }

    fn park(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match timeout {
            Some(t) => self.parker.park_timeout(t),
            None => self.parker.park(),
        }
        Ok(())
    }

    fn unparker(&self) -> Arc<dyn Unpark> {
        Arc::new(ThreadUnpark(self.parker.unparker().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpark_before_park_is_not_lost() {
        let mut r = ThreadReactor::new();
        let u = r.unparker();
        u.unpark();
        // Returns at once thanks to the permit; a lost wake-up would block forever.
        r.park(None).unwrap();
    }

    #[test]
    fn unpark_from_another_thread_wakes_park() {
        let mut r = ThreadReactor::new();
        let u = r.unparker();
        let t = std::thread::spawn(move || u.unpark());
        r.park(None).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn park_returns_after_its_timeout() {
        let mut r = ThreadReactor::new();
        r.park(Some(Duration::from_millis(1))).unwrap();
        assert_eq!(r.poll().unwrap(), 0);
    }
}
