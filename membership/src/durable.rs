//! What a node must not forget across a crash: its Paxos acceptor state.
//!
//! Every configured node votes on every epoch change of every group (see
//! `docs/DESIGN.md`, section 4, "Crashes"). A Paxos acceptor that forgets a promise or an
//! accepted value after a restart can let two proposers each gather a
//! majority for different values of the same epoch: the restarted node votes
//! for the second one as if it had never voted for the first. So the Engine
//! emits [`crate::Command::Persist`] with the whole acceptor state whenever
//! that state changes, *before* any command that depends on it (the promise
//! or the accept it is about to send). The embedder processes commands in
//! order: it writes the state to stable storage (and syncs) before it sends
//! what follows. At restart it hands the last state back to
//! [`crate::Engine::recover`].
//!
//! The state is small (per group: the latest decided epoch and the open
//! instances above it) and changes only during epoch changes, never on the
//! ordering hot path. [`DurableState::encode`] and [`DurableState::decode`]
//! give it a versioned, validated byte form for the embedder's file.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::message::{Ballot, Proposal};
use crate::types::GroupId;
use crate::wire::WireError;

/// First byte of an encoded [`DurableState`].
pub const DURABLE_MAGIC: u8 = 0xC1;
/// Version of the encoding.
pub const DURABLE_VERSION: u8 = 1;
/// Largest encoded state accepted by [`DurableState::decode`].
pub const MAX_DURABLE: usize = 64 << 20;

/// One open Paxos instance (one epoch of one group) at this acceptor.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct Instance {
    /// The epoch being decided.
    pub epoch: u32,
    /// The highest ballot promised.
    pub promised: Ballot,
    /// The highest-ballot value accepted, if any.
    pub accepted: Option<(Ballot, Proposal)>,
}

/// The acceptor state of one group.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct GroupAcceptor {
    /// The group.
    pub group: GroupId,
    /// The latest epoch this node knows to be decided, with its value.
    pub decided: Option<(u32, Proposal)>,
    /// Instances above `decided` this node promised or accepted in.
    pub instances: Vec<Instance>,
}

/// Everything a node persists.
#[derive(Debug, Clone, PartialEq, Eq, Default, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct DurableState {
    /// The incarnation that wrote it: a recovering Engine must run a higher one.
    pub incarnation: u64,
    /// Per group acceptor state, sorted by group.
    pub groups: Vec<GroupAcceptor>,
}

impl DurableState {
    /// The versioned byte form: `magic | version | rkyv archive`.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let bytes = rkyv::to_bytes::<rancor::Error>(self).map_err(|_| WireError::Serialize)?;
        let mut out = Vec::with_capacity(2 + bytes.len());
        out.push(DURABLE_MAGIC);
        out.push(DURABLE_VERSION);
        out.extend_from_slice(&bytes);
        Ok(out)
    }

    /// Parse what [`DurableState::encode`] wrote. Validates everything;
    /// never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<DurableState, WireError> {
        if bytes.len() < 2 {
            return Err(WireError::Truncated {
                need: 2,
                have: bytes.len(),
            });
        }
        if bytes[0] != DURABLE_MAGIC {
            return Err(WireError::BadMagic { found: bytes[0] });
        }
        if bytes[1] != DURABLE_VERSION {
            return Err(WireError::UnsupportedVersion { found: bytes[1] });
        }
        let body = &bytes[2..];
        if body.len() > MAX_DURABLE {
            return Err(WireError::HeaderTooLarge { len: body.len() });
        }
        let mut aligned = AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        rkyv::from_bytes::<DurableState, rancor::Error>(&aligned)
            .map_err(|_| WireError::InvalidHeader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{NodeId, ProtocolVersion, View, ViewId};
    use proptest::prelude::*;

    fn sample() -> DurableState {
        let proposal = Proposal {
            view: View {
                group: GroupId(7),
                id: ViewId::first_of(3),
                members: vec![NodeId(1), NodeId(2)],
                protocol: ProtocolVersion(1),
            },
            cut: 41,
            old_members: vec![NodeId(1), NodeId(2), NodeId(3)],
            next: Vec::new(),
            incarnations: vec![1, 4],
        };
        DurableState {
            incarnation: 4,
            groups: vec![GroupAcceptor {
                group: GroupId(7),
                decided: Some((3, proposal.clone())),
                instances: vec![Instance {
                    epoch: 4,
                    promised: Ballot {
                        round: 2,
                        leader: 1,
                    },
                    accepted: Some((
                        Ballot {
                            round: 1,
                            leader: 2,
                        },
                        proposal,
                    )),
                }],
            }],
        }
    }

    #[test]
    fn round_trips() {
        let s = sample();
        let bytes = s.encode().unwrap();
        assert_eq!(DurableState::decode(&bytes).unwrap(), s);
    }

    #[test]
    fn refuses_foreign_bytes() {
        assert!(matches!(
            DurableState::decode(&[0xC0, 1, 0, 0]),
            Err(WireError::BadMagic { found: 0xC0 })
        ));
        assert!(matches!(
            DurableState::decode(&[DURABLE_MAGIC, 9]),
            Err(WireError::UnsupportedVersion { found: 9 })
        ));
        assert!(matches!(
            DurableState::decode(&[DURABLE_MAGIC]),
            Err(WireError::Truncated { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = DurableState::decode(&bytes);
        }

        #[test]
        fn mutated_state_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = sample().encode().unwrap();
            let n = bytes.len();
            for (at, x) in flips {
                bytes[at % n] ^= x;
            }
            let _ = DurableState::decode(&bytes);
        }
    }
}
