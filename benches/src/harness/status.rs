//! The outcome of one case in a report: measured, unavailable, or failed.

use serde::Serialize;

/// Status of one case in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Measured.
    Ok,
    /// Cannot run in this build (concord's transport missing): no numbers, by
    /// design.
    Unavailable,
    /// Tried and failed: a bug or a missing resource. Reported loudly.
    Failed,
}

/// A case cannot run in this build, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("concord case unavailable: {reason}")]
pub struct Unavailable {
    /// What is missing.
    pub reason: &'static str,
}

/// `unavailable` when the error chain holds [`Unavailable`], else `failed`.
#[must_use]
pub fn status_of(e: &anyhow::Error) -> Status {
    if e.chain().any(|c| c.is::<Unavailable>()) {
        Status::Unavailable
    } else {
        Status::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn unavailable_is_recognised_through_context() {
        let e = anyhow::Error::new(Unavailable { reason: "test" }).context("size 64");
        assert_eq!(status_of(&e), Status::Unavailable);
        let e = Err::<(), _>(anyhow::anyhow!("socket closed"))
            .context("x")
            .unwrap_err();
        assert_eq!(status_of(&e), Status::Failed);
    }
}
