//! concord-runtime: thread-per-core shards over the concord transport.
