//! Helpers for concord multi-process integration tests.
