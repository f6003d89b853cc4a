//! concord's own case: the seam where `concord_transport::Driver` plugs in.
//!
//! Same shape as the baselines: [`pingpong`] returns a [`CaseResult`] measured
//! with [`crate::pingpong::measure_round_trips`] on two pinned threads, and
//! [`stream`] a [`StreamResult`]. Until the transport has a Driver that can
//! connect, send and receive, both return [`Unavailable`], which the binaries
//! report as "unavailable" with null ratios: never made-up numbers.

use crate::pingpong::{CaseResult, Status};
use crate::stream::StreamResult;
use std::time::Duration;

/// Name of concord's case in tables, JSON and `--cases`.
pub const NAME: &str = "concord";

/// concord's case cannot run in this build, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("concord case unavailable: {reason}")]
pub struct Unavailable {
    /// What is missing.
    pub reason: &'static str,
}

const NO_DRIVER: Unavailable = Unavailable {
    reason: "concord_transport has no Driver that can connect, send and receive yet",
};

/// `unavailable` when the error chain holds [`Unavailable`], else `failed`.
#[must_use]
pub fn status_of(e: &anyhow::Error) -> Status {
    if e.chain().any(|c| c.is::<Unavailable>()) {
        Status::Unavailable
    } else {
        Status::Failed
    }
}

/// Ping-pong over concord's transport.
pub fn pingpong(size: usize, warmup: u64, iters: u64) -> anyhow::Result<CaseResult> {
    crate::pingpong::check_size(size)?;
    let _ = (warmup, iters);
    Err(NO_DRIVER.into())
}

/// One-way streaming over concord's transport.
pub fn stream(size: usize, duration: Duration) -> anyhow::Result<StreamResult> {
    crate::stream::check_size(size)?;
    let _ = duration;
    Err(NO_DRIVER.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn unavailable_is_recognised_through_context() {
        let e = anyhow::Error::new(NO_DRIVER.clone()).context("size 64");
        assert_eq!(status_of(&e), Status::Unavailable);
        let e = Err::<(), _>(anyhow::anyhow!("socket closed"))
            .context("x")
            .unwrap_err();
        assert_eq!(status_of(&e), Status::Failed);
    }
}
