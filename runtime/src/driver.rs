//! The transport's io_uring [`Driver`] as a shard's [`Reactor`].
//!
//! A shard owns one driver; the duty loop's `reactor.poll()` is
//! [`Driver::poll`], and an idle shard parks in [`Driver::park`] (blocking in
//! `io_uring_enter` until a completion or the driver's eventfd unparker).
//!
//! Events reach the application one of two ways:
//! - [`DriverReactor::new`] queues them; a task takes them with
//!   [`ShardContext::driver_event`] and uses [`ShardContext::driver`] to send.
//!   Frames stay zero-copy ([`RecvFrame`](concord_transport::RecvFrame) borrows
//!   the receive buffer), and the queue is bounded by the transport itself: frames
//!   the application holds keep their buffers, so a peer's ring runs dry and the
//!   driver stops reading from it.
//! - [`DriverReactor::with_handler`] calls a handler inside `poll`, with the driver
//!   at hand to reply at once: the lowest-latency path, for protocol engines that
//!   run as handlers rather than tasks.

use std::cell::RefMut;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use concord_transport::{Driver, Event, Unparker};

use crate::error::Error;
use crate::reactor::{Reactor, Unpark};
use crate::shard::ShardContext;

type Handler = Box<dyn FnMut(&mut Driver, Event)>;

enum Dispatch {
    Queue {
        events: VecDeque<Event>,
        waker: Option<Waker>,
    },
    Handler(Handler),
}

/// A shard reactor that owns a transport [`Driver`].
pub struct DriverReactor {
    driver: Driver,
    dispatch: Dispatch,
}

impl fmt::Debug for DriverReactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.dispatch {
            Dispatch::Queue { events, .. } => format!("queue ({} pending)", events.len()),
            Dispatch::Handler(_) => "handler".to_owned(),
        };
        f.debug_struct("DriverReactor")
            .field("driver", &self.driver)
            .field("dispatch", &mode)
            .finish()
    }
}

impl DriverReactor {
    /// Queue events for tasks ([`ShardContext::driver_event`]).
    pub fn new(driver: Driver) -> Self {
        Self {
            driver,
            dispatch: Dispatch::Queue {
                events: VecDeque::with_capacity(256),
                waker: None,
            },
        }
    }

    /// Dispatch events to `handler` inside the duty loop's poll.
    pub fn with_handler(driver: Driver, handler: impl FnMut(&mut Driver, Event) + 'static) -> Self {
        Self {
            driver,
            dispatch: Dispatch::Handler(Box::new(handler)),
        }
    }

    /// The driver.
    pub fn driver(&mut self) -> &mut Driver {
        &mut self.driver
    }

    /// Take the next queued event (queue mode; `None` in handler mode).
    pub fn try_event(&mut self) -> Option<Event> {
        match &mut self.dispatch {
            Dispatch::Queue { events, .. } => events.pop_front(),
            Dispatch::Handler(_) => None,
        }
    }
}

struct DriverUnpark(Unparker);

impl Unpark for DriverUnpark {
    fn unpark(&self) {
        self.0.unpark();
    }
}

impl Reactor for DriverReactor {
    fn poll(&mut self) -> io::Result<usize> {
        let n = match &mut self.dispatch {
            Dispatch::Queue { events, waker } => {
                let before = events.len();
                let n = self.driver.poll(&mut |_, ev| events.push_back(ev));
                if events.len() > before
                    && let Some(w) = waker.take()
                {
                    w.wake();
                }
                n
            }
            Dispatch::Handler(h) => self.driver.poll(h),
        };
        Ok(n)
    }

    fn park(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.driver.park(timeout).map_err(io::Error::other)
    }

    fn unparker(&self) -> Arc<dyn Unpark> {
        Arc::new(DriverUnpark(self.driver.unparker()))
    }
}

impl ShardContext {
    /// This shard's transport driver. Errors if the shard's reactor is not a
    /// [`DriverReactor`]. Do not hold it across an `.await`.
    pub fn driver(&self) -> Result<RefMut<'_, Driver>, Error> {
        Ok(RefMut::map(self.reactor::<DriverReactor>()?, |r| {
            &mut r.driver
        }))
    }

    /// Wait for the next transport event (queue mode).
    pub fn driver_event(&self) -> DriverEvent {
        DriverEvent { ctx: self.clone() }
    }
}

/// Future returned by [`ShardContext::driver_event`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct DriverEvent {
    ctx: ShardContext,
}

impl Future for DriverEvent {
    type Output = Result<Event, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut r = match self.ctx.reactor::<DriverReactor>() {
            Ok(r) => r,
            Err(e) => return Poll::Ready(Err(e)),
        };
        match &mut r.dispatch {
            Dispatch::Queue { events, waker } => match events.pop_front() {
                Some(ev) => Poll::Ready(Ok(ev)),
                None => {
                    match waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => *waker = Some(cx.waker().clone()),
                    }
                    Poll::Pending
                }
            },
            Dispatch::Handler(_) => Poll::Ready(Err(Error::Config {
                field: "reactor",
                reason: "the shard's DriverReactor dispatches to a handler, not a queue",
            })),
        }
    }
}
