//! concord-transport: the io_uring driver, TCP connections, framing and buffer pools.

pub mod frame;

/// A closed range of protocol versions a node supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionRange {
    /// Lowest supported version.
    pub min: u16,
    /// Highest supported version.
    pub max: u16,
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {}]", self.min, self.max)
    }
}
