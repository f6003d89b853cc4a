//! Per-group state (filled in by the protocol commit).
