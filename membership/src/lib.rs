//! concord-membership: the sans-IO group membership and total-order Engine.
#![forbid(unsafe_code)]
pub mod check;
