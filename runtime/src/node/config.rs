//! [`NodeConfig`]: who this node is, who its peers are, where it keeps its
//! state, and its timeouts. [`NodeConfig::validate`] refuses a configuration
//! the node cannot run with, naming the field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use concord_membership::{NodeId, VersionRange, version};
use concord_transport::DriverConfig;

use super::error::ConfigError;
use super::shards::Shard;

/// Everything a node needs to start.
///
/// ```
/// use concord_runtime::node::NodeConfig;
/// use concord_membership::NodeId;
///
/// let mut cfg = NodeConfig::new(NodeId(1), 7, "127.0.0.1:7001".parse().unwrap(), "/tmp/n1".into());
/// cfg.add_node(NodeId(2), "127.0.0.1:7002".parse().unwrap());
/// cfg.add_node(NodeId(3), "127.0.0.1:7003".parse().unwrap());
/// cfg.validate().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node.
    pub node: NodeId,
    /// The cluster: peers with another id are refused in the handshake.
    pub cluster: u64,
    /// Where this node accepts connections from its peers.
    pub listen: SocketAddr,
    /// The configured node set, this node included: id -> address. The
    /// primary component of every group is a strict majority of these.
    pub nodes: BTreeMap<NodeId, SocketAddr>,
    /// Where the durable state lives (created if missing).
    pub data_dir: PathBuf,
    /// Protocol versions this node runs.
    pub protocol: VersionRange,
    /// One heartbeat per peer per interval.
    pub heartbeat_interval: Duration,
    /// A peer not heard from for this long is suspected.
    pub failure_timeout: Duration,
    /// Clock drift margin of the sequencer lease (see `docs/DESIGN.md`, "Node").
    pub lease_drift: Duration,
    /// Most unstable own messages per group before `multicast` back-pressures.
    pub window: usize,
    /// Most order entries per order record.
    pub batch: usize,
    /// Frames queued per peer behind a back-pressured connection before
    /// `multicast` back-pressures too (control traffic is always queued).
    pub peer_backlog: usize,
    /// Unread events a group may hold: past it the node stops reading from
    /// the transport (its senders back-pressure) until the application
    /// reads. A soft bound: one order record can deliver up to `batch`
    /// messages at once.
    pub event_queue: usize,
    /// The payload size the peers' multicasts usually stay under: with
    /// `window` it sizes the receive ring of each connection
    /// ([`DriverConfig::recv_buf_count_for`]) so that a peer's unstable
    /// messages, which the Engine holds as views of the receive buffers,
    /// fit without copies. Larger payloads still work: past the ring's
    /// size the node copies payloads out instead of pausing the
    /// connection (`NodeStats::pressure_copies`).
    pub payload_hint: usize,
    /// Time a peer has to complete the transport handshake.
    pub handshake_timeout: Duration,
    /// How long [`Node::shutdown`](super::Node::shutdown) waits for its
    /// ordered leaves and for its connections to drain.
    pub shutdown_timeout: Duration,
    /// Which shard of the node this is (set by
    /// [`ShardPlan::config`](super::ShardPlan::config); `0 of 1` for a
    /// one-shard node).
    pub shard: Shard,
}

impl NodeConfig {
    /// A configuration with LAN defaults (10 ms heartbeats, 100 ms failure
    /// timeout, every protocol version this build runs) and `node` as the
    /// only configured node; add the others with [`NodeConfig::add_node`].
    pub fn new(node: NodeId, cluster: u64, listen: SocketAddr, data_dir: PathBuf) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(node, listen);
        NodeConfig {
            node,
            cluster,
            listen,
            nodes,
            data_dir,
            protocol: VersionRange {
                min: version::OLDEST,
                max: version::CURRENT,
            },
            heartbeat_interval: Duration::from_millis(10),
            failure_timeout: Duration::from_millis(100),
            lease_drift: Duration::from_millis(1),
            window: 1024,
            batch: 256,
            peer_backlog: 4096,
            event_queue: 16384,
            payload_hint: 1024,
            handshake_timeout: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(5),
            shard: Shard::default(),
        }
    }

    /// Adds (or moves) a configured node.
    pub fn add_node(&mut self, node: NodeId, addr: SocketAddr) -> &mut Self {
        self.nodes.insert(node, addr);
        self
    }

    /// Checks the configuration; [`Node::start`](super::Node::start) calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.nodes.contains_key(&self.node) {
            return Err(ConfigError::NotConfigured { node: self.node });
        }
        for (&node, addr) in &self.nodes {
            if node != self.node && *addr == self.listen {
                return Err(ConfigError::AddressInUse { node, addr: *addr });
            }
        }
        if self.nodes[&self.node].port() != 0
            && self.listen.port() != 0
            && self.nodes[&self.node] != self.listen
        {
            return Err(ConfigError::Invalid {
                field: "listen",
                reason: "differs from this node's address in `nodes`",
            });
        }
        let (min, max) = (self.protocol.min, self.protocol.max);
        if min > max || min < version::OLDEST || max > version::CURRENT {
            return Err(ConfigError::Protocol {
                min,
                max,
                supported: VersionRange {
                    min: version::OLDEST,
                    max: version::CURRENT,
                },
            });
        }
        if self.heartbeat_interval.is_zero() || self.failure_timeout <= self.heartbeat_interval {
            return Err(ConfigError::Invalid {
                field: "failure_timeout",
                reason: "need 0 < heartbeat_interval < failure_timeout",
            });
        }
        if self.window == 0 {
            return Err(ConfigError::Invalid {
                field: "window",
                reason: "must be at least 1",
            });
        }
        if self.batch == 0 {
            return Err(ConfigError::Invalid {
                field: "batch",
                reason: "must be at least 1",
            });
        }
        if self.peer_backlog == 0 {
            return Err(ConfigError::Invalid {
                field: "peer_backlog",
                reason: "must be at least 1",
            });
        }
        if self.event_queue == 0 {
            return Err(ConfigError::Invalid {
                field: "event_queue",
                reason: "must be at least 1",
            });
        }
        if self.handshake_timeout.is_zero() || self.shutdown_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                field: "handshake_timeout",
                reason: "timeouts must be non-zero",
            });
        }
        if self.shard.count == 0 || self.shard.index >= self.shard.count {
            return Err(ConfigError::Invalid {
                field: "shard",
                reason: "need index < count",
            });
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                field: "data_dir",
                reason: "must name a directory",
            });
        }
        Ok(())
    }

    /// The Engine's configuration for incarnation `incarnation`.
    pub(crate) fn engine_config(&self, incarnation: u64) -> concord_membership::Config {
        let mut c =
            concord_membership::Config::new(self.node, self.nodes.keys().copied().collect());
        c.incarnation = incarnation;
        c.protocol = self.protocol;
        c.heartbeat_interval = nanos(self.heartbeat_interval);
        c.failure_timeout = nanos(self.failure_timeout);
        c.lease_drift = nanos(self.lease_drift);
        c.window = self.window;
        c.batch = self.batch;
        c
    }

    /// The bounds of the node's pool of payload buffers
    /// ([`Group::payload_buf`](super::Group::payload_buf), and received
    /// payloads copied under receive pressure): free buffers kept, and the
    /// bytes they may hold. Sized for what can be out at once in steady
    /// state: every sender's window of unstable payloads (this node's
    /// own, and copies of the others'), plus the deliveries the application
    /// has not read, at `payload_hint` bytes each.
    pub(crate) fn payload_pool(&self) -> (usize, usize) {
        let keep = self
            .window
            .saturating_mul(self.nodes.len().max(1))
            .saturating_add(self.event_queue);
        (keep, keep.saturating_mul(self.payload_hint.max(64)))
    }

    /// The transport settings for this node's shard: its id, cluster and
    /// protocol range go into the handshake. Build the shard's driver from
    /// it (see [`runtime`](super::runtime)).
    pub fn driver_config(&self) -> DriverConfig {
        let mut dc = DriverConfig {
            node_id: u64::from(self.node.0),
            cluster_id: self.cluster,
            protocol: concord_transport::VersionRange {
                min: self.protocol.min.0,
                max: self.protocol.max.0,
            },
            handshake_timeout: self.handshake_timeout,
            close_linger: self.shutdown_timeout,
            // Reconnect fast: a restarted peer is back within milliseconds
            // on a LAN, and the failure detector decides what a gap means.
            connect_backoff_initial: Duration::from_millis(5),
            connect_backoff_max: self.failure_timeout.max(Duration::from_millis(10)),
            ..DriverConfig::default()
        };
        // One sender's unstable messages on its connection, with the
        // framing of each (transport header, wire prefix, Data header).
        let held = (self.window as u64).saturating_mul(self.payload_hint as u64 + DATA_OVERHEAD);
        dc.recv_buf_count = dc.recv_buf_count_for(held).unwrap_or(32768);
        dc
    }
}

/// Bytes around a `Data` payload on the wire, an upper bound: the
/// transport's frame header, the wire prefix and the archived header.
const DATA_OVERHEAD: u64 = 128;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_membership::ProtocolVersion;

    fn three() -> NodeConfig {
        let mut c = NodeConfig::new(
            NodeId(1),
            9,
            "127.0.0.1:7001".parse().unwrap(),
            "/tmp/x".into(),
        );
        c.add_node(NodeId(2), "127.0.0.1:7002".parse().unwrap());
        c.add_node(NodeId(3), "127.0.0.1:7003".parse().unwrap());
        c
    }

    #[test]
    fn accepts_a_sane_configuration() {
        three().validate().unwrap();
    }

    #[test]
    fn refuses_what_cannot_run() {
        let mut c = three();
        c.nodes.remove(&NodeId(1));
        assert!(matches!(
            c.validate(),
            Err(ConfigError::NotConfigured { node: NodeId(1) })
        ));
        let mut c = three();
        c.add_node(NodeId(2), "127.0.0.1:7001".parse().unwrap());
        assert!(matches!(
            c.validate(),
            Err(ConfigError::AddressInUse {
                node: NodeId(2),
                ..
            })
        ));
        let mut c = three();
        c.failure_timeout = c.heartbeat_interval;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "failure_timeout",
                ..
            })
        ));
        let mut c = three();
        c.protocol.max = ProtocolVersion(99);
        assert!(matches!(c.validate(), Err(ConfigError::Protocol { .. })));
        let mut c = three();
        c.window = 0;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "window",
                ..
            })
        ));
    }
}
