//! concord-membership: the sans-IO group membership and total-order Engine.
//!
//! # What it is
//!
//! A deterministic protocol state machine (the quinn-proto / openraft
//! "Engine" pattern): no sockets, no clock, no threads. Events go in — a
//! message from a peer ([`Engine::handle_message`]), the passage of time
//! ([`Engine::tick`]), an application multicast, a join or leave request —
//! and commands come out of [`Engine::poll_command`]: send this message to
//! that peer, deliver this to the application, a view changed, persist this
//! acceptor state, wake me at time T. The deterministic simulator and the
//! real node run exactly this code. [`Engine`]'s own page lists its methods
//! by class and the order in which a caller drives it.
//!
//! ```text
//!        handle_message(now, from, msg)   tick(now)   join/leave/multicast
//!                       \                    |              /
//!                        v                   v             v
//!                  +---------------------------------------------+
//!                  |  Engine (one per node)                      |
//!                  |   failure detector (heartbeats, per node)   |
//!                  |   acceptor (epoch decisions, per group)     |
//!                  |   proposer (the flushes this node leads)    |
//!                  |   Group: view, order ring, sender buffers,  |
//!                  |          sequencer (if coordinator)         |
//!                  +---------------------------------------------+
//!                                      |
//!                                      v  poll_command()
//!          Send{to, msg} | Deliver(d) | ViewChange{..} | Partitioned
//!          | JoinRefused{..} | WakeAt(t) | Persist(state)
//! ```
//!
//! # The model
//!
//! A configured set of nodes hosts members of many named groups. Each group
//! has a sequence of views; within a view, the first member is the sequencer:
//! payloads go from their sender straight to every member, the sequencer
//! multicasts small batched [`OrderEntry`] records, and a member delivers a
//! position when it holds both. Joins and leaves are entries of the same
//! order (no flush, no timeout). A crash is handled by a flush whose outcome
//! is agreed by a strict majority of the configured nodes (single-decree
//! Paxos per epoch), which is also what keeps a minority from continuing.
//! `docs/DESIGN.md` (section 4) describes the protocol, its invariants
//! and why they hold.
//!
//! # Errors
//!
//! Each operation has an error type of its own, listing only what it can
//! return: [`ConfigError`] ([`Engine::new`], [`Engine::recover`]),
//! [`JoinError`], [`LeaveError`], [`MulticastError`], [`BatchError`]
//! ([`Engine::multicast_batch`]) and [`AdjustError`]
//! ([`Engine::adjust_version`]); the last two wrap the version model's
//! [`VersionError`]. A full sender window is an outcome
//! ([`Multicast::BackPressured`]), not an error.
//!
//! # Example
//!
//! ```
//! use concord_membership::{Command, Config, DeliveryMode, Engine, GroupId, NodeId, Time};
//!
//! let cfg = Config::new(NodeId(1), vec![NodeId(1)]);
//! let mut engine: Engine<Vec<u8>> = Engine::new(cfg, Time(0)).unwrap();
//! let group = GroupId::from_name("prices");
//! engine.join(Time(0), group, DeliveryMode::Agreed).unwrap();
//! // A one-node cluster creates the group by itself on the next tick.
//! let mut now = Time(0);
//! let mut delivered = Vec::new();
//! for _ in 0..100 {
//!     now = now.plus(1_000_000);
//!     engine.tick(now);
//!     let _ = engine.multicast(now, group, b"hello".to_vec());
//!     while let Some(cmd) = engine.poll_command() {
//!         if let Command::Deliver(d) = cmd {
//!             delivered.push(d.payload);
//!         }
//!     }
//!     if !delivered.is_empty() {
//!         break;
//!     }
//! }
//! assert_eq!(delivered[0], b"hello".to_vec());
//! ```
#![forbid(unsafe_code)]

pub mod check;
mod durable;
mod engine;
mod error;
mod group;
mod message;
mod types;
mod vecmap;
pub mod version;
pub mod wire;

pub use durable::{DurableState, GroupAcceptor, Instance};
pub use engine::{Command, Engine};
pub use error::{AdjustError, BatchError, ConfigError, JoinError, LeaveError, MulticastError};
pub use message::{
    Ballot, Body, MemberState, Message, OrderEntries, OrderEntry, Proposal, SenderNext, Shared,
    SharedPool,
};
pub use types::position;
pub use types::{
    Config, Delivery, DeliveryMode, GroupId, Multicast, NodeId, Payload, ProtocolVersion, Reason,
    Stats, Time, VersionRange, View, ViewId,
};
pub use version::{AdjustRequest, Scope, Target, VersionError, VersionEvent};
