//! Message sizes each workload accepts, and the batching of streams.

use anyhow::bail;

/// Smallest ping-pong message: the sequence number.
pub const PINGPONG_MIN_SIZE: usize = 8;

/// Smallest stream payload: the sequence number.
pub const STREAM_MIN_SIZE: usize = 8;
/// Largest stream payload the frame format (and the bench) accepts.
pub const STREAM_MAX_SIZE: usize = 16 << 20;

/// Userspace batching buffer of the std stream baseline on each side; concord's
/// stream sender queues the same number of frame bytes between polls, so both
/// batch alike.
pub const STD_BUF: usize = 64 * 1024;

/// Checks a size is usable for ping-pong.
pub fn check_pingpong_size(size: usize) -> anyhow::Result<()> {
    if size < PINGPONG_MIN_SIZE {
        bail!(
            "message size {size} is below the minimum of {PINGPONG_MIN_SIZE} bytes (the sequence number)"
        );
    }
    Ok(())
}

/// Checks a size is usable for streaming.
pub fn check_stream_size(size: usize) -> anyhow::Result<()> {
    if !(STREAM_MIN_SIZE..=STREAM_MAX_SIZE).contains(&size) {
        bail!("message size {size} is outside {STREAM_MIN_SIZE}..={STREAM_MAX_SIZE} bytes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(check_pingpong_size(8).is_ok());
        let e = check_pingpong_size(4).unwrap_err();
        assert!(format!("{e:#}").contains("minimum of 8 bytes"), "{e:#}");
        assert!(check_stream_size(8).is_ok());
        assert!(check_stream_size(STREAM_MAX_SIZE).is_ok());
        assert!(check_stream_size(4).is_err());
        assert!(check_stream_size(STREAM_MAX_SIZE + 1).is_err());
    }
}
