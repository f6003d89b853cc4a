//! A node over `cores` shards: one membership domain per shard.
//!
//! Shard `s` of every node runs its own [`Node`](super::Node): its own
//! Engine, failure detector, acceptors and state, its own transport driver
//! and listen port. A group lives on shard [`shard_of`]`(group, cores)` on
//! every node, and shard `s` connects only to shard `s` of its peers, so no
//! shard ever calls into another one. `cores` is a cluster-wide setting: every
//! node must run the same count, and a node's count never changes over the
//! life of its data directory (each shard's acceptor promises live in its own
//! state file; starting with another count would start domains with no
//! memory of their votes). [`ShardPlan::new`] records the count in the data
//! directory and refuses a different one.
//!
//! What shard `s` of a node uses, from the node's [`NodeConfig`]:
//! - listen port and every peer's port: the configured port plus `s`;
//! - cluster id in the handshake: [`domain_id`]`(cluster, s)`, so a shard
//!   reached on the wrong port (a peer configured with shifted ports) fails
//!   the handshake instead of joining another shard's domain;
//! - data directory: `<data_dir>/shard-<s>` when `cores > 1`, `<data_dir>`
//!   itself when `cores == 1` (the layout of a one-shard node).

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use concord_membership::GroupId;

use super::{ConfigError, NodeConfig, StartError, StateError};
use crate::driver::DriverReactor;
use crate::runtime::{Builder, Runtime};
use concord_transport::Driver;

/// Which shard of how many a [`NodeConfig`] is for. The default, `0 of 1`,
/// is a one-shard node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: usize,
    /// Shards per node, the same on every node of the cluster.
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// Whether `group` lives on this shard.
    pub fn owns(&self, group: GroupId) -> bool {
        shard_of(group, self.count) == self.index
    }
}

/// The shard that runs `group` when every node has `cores` shards.
pub fn shard_of(group: GroupId, cores: usize) -> usize {
    // `cores` is at least 1 wherever a plan exists; 0 maps everything to 0.
    (group.0 % cores.max(1) as u64) as usize
}

/// The cluster id shard `shard` puts in its handshakes: `cluster` itself for
/// shard 0 (a one-shard node is unchanged), a different id for every other
/// shard.
pub fn domain_id(cluster: u64, shard: usize) -> u64 {
    cluster.wrapping_add((shard as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The file in a node's data directory that records its shard count.
pub const LAYOUT_FILE: &str = "shards";

/// A node's shards, from one [`NodeConfig`] and a shard count: the runtime to
/// build and the configuration each shard's [`Node`](super::Node) starts
/// with.
///
/// ```no_run
/// # use concord_membership::{DeliveryMode, NodeId};
/// # use concord_runtime::node::{Node, NodeConfig, ShardPlan};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut cfg = NodeConfig::new(NodeId(1), 7, "127.0.0.1:7001".parse()?, "/var/lib/concord".into());
/// cfg.add_node(NodeId(2), "127.0.0.1:7101".parse()?);
/// cfg.add_node(NodeId(3), "127.0.0.1:7201".parse()?);
/// let plan = ShardPlan::new(cfg, 2)?; // ports 7001 and 7002 here
/// let rt = plan.runtime().build()?;
/// let mut shards = Vec::new();
/// for s in 0..plan.cores() {
///     let cfg = plan.config(s);
///     shards.push(rt.spawn_on(s, move || async move {
///         let node = Node::start(cfg)?;
///         // Each shard joins the groups it owns.
///         for name in ["orders", "audit", "quotes"] {
///             if node.owns(name) {
///                 let _g = node.join(name, DeliveryMode::Agreed).await?;
///             }
///         }
///         node.shutdown().await?;
///         Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
///     })?);
/// }
/// for h in shards {
///     h.join()?.map_err(|e| e.to_string())?;
/// }
/// rt.shutdown()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ShardPlan {
    base: NodeConfig,
    cores: usize,
}

impl ShardPlan {
    /// Checks `base` and `cores`, creates the data directory if missing, and
    /// records the shard count in it (`<data_dir>/shards`, written durably
    /// once). Refused: `cores == 0`, a port that overflows when shifted by
    /// the shard index, and a data directory that already holds another
    /// count (or, for `cores > 1`, a one-shard node's state).
    pub fn new(base: NodeConfig, cores: usize) -> Result<ShardPlan, StartError> {
        if cores == 0 {
            return Err(ConfigError::Invalid {
                field: "cores",
                reason: "must be at least 1",
            }
            .into());
        }
        base.validate()?;
        for addr in base.nodes.values().chain(std::iter::once(&base.listen)) {
            if addr.port() != 0 && usize::from(addr.port()) + cores - 1 > usize::from(u16::MAX) {
                return Err(ConfigError::Invalid {
                    field: "nodes",
                    reason: "a port plus the shard count overflows 65535",
                }
                .into());
            }
        }
        record_layout(&base.data_dir, cores)?;
        Ok(ShardPlan { base, cores })
    }

    /// Shards per node.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// The configuration shard `shard` starts its node with.
    ///
    /// # Panics
    /// If `shard >= self.cores()`.
    pub fn config(&self, shard: usize) -> NodeConfig {
        assert!(shard < self.cores, "shard {shard} of {}", self.cores);
        let mut c = self.base.clone();
        c.shard = Shard {
            index: shard,
            count: self.cores,
        };
        c.cluster = domain_id(self.base.cluster, shard);
        c.listen = shifted(c.listen, shard);
        for addr in c.nodes.values_mut() {
            *addr = shifted(*addr, shard);
        }
        if self.cores > 1 {
            c.data_dir = self.base.data_dir.join(format!("shard-{shard}"));
        }
        c
    }

    /// A runtime builder with one shard per core, each with a transport
    /// driver configured for its domain, not pinned. Adjust it (idle
    /// strategy, pinning) and `build` it.
    pub fn runtime(&self) -> Builder {
        let configs: Vec<_> = (0..self.cores)
            .map(|s| self.config(s).driver_config())
            .collect();
        Runtime::builder()
            .shards(self.cores)
            .pin(false)
            .reactor(move |s| Driver::new(configs[s].clone()).map(DriverReactor::new))
    }

    /// The shard that runs the group named `name`.
    pub fn shard_of_name(&self, name: &str) -> usize {
        shard_of(GroupId::from_name(name), self.cores)
    }
}

fn shifted(addr: SocketAddr, shard: usize) -> SocketAddr {
    let mut a = addr;
    if a.port() != 0 {
        // `ShardPlan::new` checked that it fits.
        a.set_port(a.port() + shard as u16);
    }
    a
}

fn layout_err(path: &Path, what: String) -> StartError {
    StartError::Layout {
        path: path.to_owned(),
        what,
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StartError + 'a {
    move |source| {
        StartError::State(StateError::Io {
            op,
            path: path.to_owned(),
            source,
        })
    }
}

/// The shard count recorded in `dir`, if any.
fn recorded(dir: &Path) -> Result<Option<usize>, StartError> {
    let path = dir.join(LAYOUT_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .strip_prefix("shards ")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .map(Some)
            .ok_or_else(|| layout_err(&path, format!("unreadable shard count {:?}", s.trim()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

fn record_layout(dir: &Path, cores: usize) -> Result<(), StartError> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let path = dir.join(LAYOUT_FILE);
    match recorded(dir)? {
        Some(n) if n == cores => return Ok(()),
        Some(n) => {
            return Err(layout_err(
                &path,
                format!(
                    "this node ran {n} shard(s) and is asked to run {cores}; the shard count of a \
                     node never changes (each shard's votes live in its own state)"
                ),
            ));
        }
        None => {}
    }
    if cores > 1 && dir.join(super::persist::STATE_FILE).exists() {
        return Err(layout_err(
            &path,
            format!(
                "the directory holds a one-shard node's state and is asked to run {cores} shards"
            ),
        ));
    }
    let tmp: PathBuf = dir.join(format!("{LAYOUT_FILE}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    writeln!(f, "shards {cores}").map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))?;
    Ok(())
}

/// Refuses to start a shard whose data directory belongs to a node with
/// another shard count (called by [`Node::start`](super::Node::start)).
pub(super) fn check_start(config: &NodeConfig) -> Result<(), StartError> {
    let Shard { index, count } = config.shard;
    // A one-shard node's directory is the data directory; a shard of
    // several lives one level below the one that records the count.
    let base = if count == 1 {
        config.data_dir.as_path()
    } else {
        config.data_dir.parent().unwrap_or(Path::new("."))
    };
    match recorded(base)? {
        Some(n) if n != count => Err(layout_err(
            &base.join(LAYOUT_FILE),
            format!("this node ran {n} shard(s); this configuration is shard {index} of {count}"),
        )),
        None if count > 1 => Err(layout_err(
            &base.join(LAYOUT_FILE),
            "missing: start the shards of a multi-shard node from a ShardPlan".to_owned(),
        )),
        _ => Ok(()),
    }
}
