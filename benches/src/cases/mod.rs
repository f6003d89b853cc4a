//! The cases: one way of moving messages between two pinned threads over one
//! loopback TCP connection each, built on [`crate::harness`].
//!
//! - [`concord`]: concord's transport, a busy-polled (ping-pong) or parking
//!   (stream) `concord_transport::Driver` per thread;
//! - [`std_sockets`]: the std-socket baselines `floor`, `blocking` (ping-pong)
//!   and `std` (stream);
//! - `glommio`: glommio 0.9 executors, default and with `spin_before_park`
//!   (ping-pong; only with the `glommio` feature).

pub mod concord;
#[cfg(feature = "glommio")]
pub mod glommio;
pub mod std_sockets;
