//! concord-runtime: thread-per-core shards.
//!
//! # The model
//!
//! A [`Runtime`] is N shards, by default one per CPU the process may use, each an
//! OS thread named `concord-shard-{i}` pinned to its CPU. A shard owns one
//! [`Reactor`] (in production the transport's io_uring `Driver`; [`ThreadReactor`]
//! when there is no I/O), its timers and its tasks, and runs a duty loop:
//!
//! ```text
//! loop { work = reactor.poll() + timers.fire(now) + inbox.drain() + tasks.run_ready();
//!        idle.step(work) }   // busy | spin | yield | park (never past the next timer)
//! ```
//!
//! Nothing is shared between shards except what you share explicitly: bounded
//! [`channel`]s (a full one hands the message back as [`Offer::BackPressured`]),
//! [`Handle::spawn_on`] to start work on another shard, and wakers. A shard that
//! is spinning costs its producers no syscall; a parked one is unparked only
//! when it announced it is parked.
//!
//! Why thread-per-core and hand-rolled rather than glommio: on this machine the
//! idle strategy decides latency more than anything else (a wake-up costs tens of
//! microseconds), and the fastest io_uring setup measured (COOP_TASKRUN +
//! TASKRUN_FLAG, spinning in user space) is one glommio does not expose; see
//! `docs/DESIGN.md` (section 2) for the figures.
//!
//! # Example
//!
//! ```
//! use concord_runtime::{channel, IdleStrategy, Offer, Runtime, ShardContext};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), concord_runtime::Error> {
//! let rt = Runtime::builder()
//!     .shards(2)
//!     .pin(false)
//!     .idle(IdleStrategy::spin_then_park(Duration::from_micros(50)))
//!     .build()?;
//! let (tx, mut rx) = channel::<u64>(64);
//! let consumer = rt.spawn_on(1, move || async move {
//!     let mut sum = 0;
//!     while let Some(v) = rx.recv().await {
//!         sum += v;
//!     }
//!     sum
//! })?;
//! let producer = rt.spawn_on(0, move || async move {
//!     let ctx = ShardContext::current().expect("on a shard");
//!     for v in 1..=10 {
//!         let mut msg = v;
//!         // Back-pressure is a value: wait a little and offer the message again.
//!         while let Offer::BackPressured(back) = tx.try_send(msg) {
//!             msg = back;
//!             ctx.sleep(Duration::from_micros(10)).await;
//!         }
//!     }
//! })?;
//! producer.join()?;
//! assert_eq!(consumer.join()?, 55);
//! rt.shutdown()?;
//! # Ok(())
//! # }
//! ```
//!
//! # With the transport
//!
//! A shard's reactor is usually the transport's io_uring `Driver`:
//!
//! ```no_run
//! use concord_runtime::transport::{Driver, DriverConfig, Event};
//! use concord_runtime::{DriverReactor, Runtime, ShardContext};
//!
//! # fn main() -> Result<(), concord_runtime::Error> {
//! let rt = Runtime::builder()
//!     .reactor(|shard| {
//!         Driver::new(DriverConfig { node_id: shard as u64 + 1, ..DriverConfig::default() })
//!             .map(DriverReactor::new)
//!     })
//!     .build()?;
//! let server = rt.spawn_on(0, || async {
//!     let ctx = ShardContext::current()?;
//!     ctx.driver()?.listen("127.0.0.1:7000".parse().unwrap())?;
//!     loop {
//!         if let Event::Frame { conn, frame } = ctx.driver_event().await? {
//!             let reply = frame.to_vec(); // or parse `frame` in place: no copy needed
//!             drop(frame);
//!             let _ = ctx.driver()?.send(conn, &reply)?;
//!         }
//!     }
//!     #[allow(unreachable_code)]
//!     Ok::<(), concord_runtime::Error>(())
//! })?;
//! # drop(server);
//! # rt.shutdown()
//! # }
//! ```
//!
//! # Start-up checks
//!
//! [`Builder::build`] first runs [`env::check_environment`]: io_uring must be
//! enabled with the opcodes the transport uses, and RLIMIT_MEMLOCK must cover
//! the shards (or the process holds CAP_IPC_LOCK). Failures are
//! [`Error::IoUringUnavailable`] and [`Error::MemLockLimit`], whose messages say
//! how to fix them; `concord doctor` prints the full report.
//!
//! # Measurement tools
//!
//! Two modules serve the benches, tests and examples that measure the runtime
//! and the transport rather than the runtime itself: [`alloc`], a counting
//! global allocator that proves a hot path allocates nothing, and
//! [`affinity::pin_to`], which pins a thread to a wanted core mapped onto the
//! CPUs the process may use. They live here because both need `unsafe`.

pub mod affinity;
pub mod alloc;
mod channel;
mod driver;
pub mod env;
mod error;
mod idle;
pub mod node;
mod reactor;
mod runtime;
mod shard;
mod task;
mod timer;

/// The transport crate, re-exported so embedders name one dependency.
pub use concord_transport as transport;

pub use channel::{Offer, Receiver, Recv, SendFuture, Sender, TryRecv, channel};
pub use driver::{DriverEvent, DriverReactor};
pub use error::{Error, UringBlocker};
pub use idle::{IdleStrategy, Idler, Step};
pub use reactor::{Reactor, ThreadReactor, Unpark};
pub use runtime::{Builder, Handle, Runtime};
pub use shard::{ShardContext, ShardStats, YieldNow, spawn_local, yield_now};
pub use task::JoinHandle;
pub use timer::{Sleep, Timer, TimerHandle};
