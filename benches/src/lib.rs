//! Shared harness code for concord benchmark binaries.
