//! Sequence stamps: the first 8 bytes of every message carry its sequence
//! number (little endian), which both sides check, so a case that loses,
//! reorders or corrupts a message fails instead of reporting a figure.

use anyhow::bail;

/// Writes `seq` into the message header.
#[inline]
pub fn stamp(buf: &mut [u8], seq: u64) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
}

/// Reads the sequence number from a message header.
#[inline]
#[must_use]
pub fn seq_of(buf: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[..8]);
    u64::from_le_bytes(b)
}

/// Fails unless `buf` carries `want`.
#[inline]
pub fn expect_seq(buf: &[u8], want: u64) -> anyhow::Result<()> {
    let got = seq_of(buf);
    if got != want {
        bail!("message out of order: expected sequence {want}, got {got}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_echo_is_detected() {
        let mut buf = [0u8; 64];
        stamp(&mut buf, 41);
        assert_eq!(seq_of(&buf), 41);
        assert!(expect_seq(&buf, 41).is_ok());
        let e = expect_seq(&buf, 42).unwrap_err();
        assert!(format!("{e}").contains("expected sequence 42, got 41"));
    }
}
