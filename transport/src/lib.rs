//! concord-transport: the io_uring driver, TCP connections, framing and buffer pools.
