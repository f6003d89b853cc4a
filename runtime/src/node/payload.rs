//! Pooled buffers for the payloads a node multicasts.
//!
//! The application writes a payload once into a [`PayloadBuf`] taken from
//! its group ([`Group::payload_buf`](super::Group::payload_buf)) and
//! multicasts it: the buffer becomes a [`Bytes`](super::Bytes) that the
//! Engine's window, the `Data` message to every member and the sender's own
//! delivery share (clones bump a reference count). When the last of them is
//! dropped (the payload is stable and the application dropped its
//! delivery) the buffer goes back to the pool with its storage, and the next
//! `payload_buf` hands it out again: in steady state a multicast allocates
//! nothing, where a fresh `Bytes::copy_from` allocates once per message.
//!
//! The pool is a free list of reference-counted slots. A slot is never
//! freed by its last handle: that handle's `Drop` sees it is the last one
//! (a strong count of 1; everything lives on one shard, so no other handle
//! can appear meanwhile) and pushes the slot itself back, allocation and
//! storage kept. The free list is bounded in slots and in the bytes they
//! hold (`NodeConfig::payload_pool`), and keeps no slot whose storage grew
//! past [`MAX_KEPT_CAPACITY`] (one jumbo payload does not pin its memory for
//! good); the others are freed as usual.
//!
//! The node copies into these buffers too: a received payload it must copy
//! out of its receive buffer (receive pressure, see `Core::recv_short`) goes
//! into a pooled buffer, so that copy allocates nothing once warm either.

use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::rc::{Rc, Weak};

/// Largest buffer capacity a slot keeps when it returns to the pool.
pub const MAX_KEPT_CAPACITY: usize = 64 * 1024;

/// One buffer and the pool it returns to.
struct Slot {
    bytes: Vec<u8>,
    home: Weak<RefCell<Free>>,
}

#[derive(Default)]
struct Free {
    slots: Vec<Rc<Slot>>,
    /// At most this many free slots,
    keep: usize,
    /// holding at most this many bytes of storage in all.
    budget: usize,
    /// The storage the free slots hold now.
    held: usize,
}

/// A node's pool of payload buffers. Cloning shares the pool.
#[derive(Clone)]
pub(crate) struct PayloadPool(Rc<RefCell<Free>>);

impl PayloadPool {
    /// A pool that keeps at most `keep` free buffers holding at most
    /// `budget` bytes of storage in all.
    pub fn new(keep: usize, budget: usize) -> Self {
        PayloadPool(Rc::new(RefCell::new(Free {
            // Room for every slot it may keep: giving one back never grows
            // the list.
            slots: Vec::with_capacity(keep),
            keep,
            budget,
            held: 0,
        })))
    }

    /// Puts `n` free buffers of `capacity` bytes in the pool (within its
    /// bounds), so that the first `n` payloads out at once allocate nothing
    /// either: the node fills one sender window's worth at start, and its
    /// steady state then does not depend on how long it warmed up.
    pub fn prefill(&self, n: usize, capacity: usize) {
        let mut f = self.0.borrow_mut();
        while f.slots.len() < n.min(f.keep) && f.held + capacity <= f.budget {
            f.held += capacity;
            let slot = Rc::new(Slot {
                bytes: Vec::with_capacity(capacity),
                home: Rc::downgrade(&self.0),
            });
            f.slots.push(slot);
        }
    }

    /// An empty buffer: a free one (its storage kept), or a new one.
    pub fn take(&self) -> PayloadBuf {
        let free = {
            let mut f = self.0.borrow_mut();
            let slot = f.slots.pop();
            if let Some(s) = &slot {
                f.held -= s.bytes.capacity();
            }
            slot
        };
        let slot = free.unwrap_or_else(|| {
            Rc::new(Slot {
                bytes: Vec::new(),
                home: Rc::downgrade(&self.0),
            })
        });
        PayloadBuf { slot: Some(slot) }
    }

    /// Free buffers now.
    #[cfg(test)]
    pub fn free(&self) -> usize {
        self.0.borrow().slots.len()
    }
}

impl fmt::Debug for PayloadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let free = self.0.try_borrow().map(|f| f.slots.len()).ok();
        f.debug_struct("PayloadPool").field("free", &free).finish()
    }
}

/// Called by every handle's `Drop`: the last handle of a slot puts it back.
fn give_back(slot: Option<Rc<Slot>>) {
    let Some(mut slot) = slot else { return };
    // Not the last handle: the others keep the bytes.
    let Some(s) = Rc::get_mut(&mut slot) else {
        return;
    };
    if s.bytes.capacity() > MAX_KEPT_CAPACITY {
        return;
    }
    s.bytes.clear();
    let Some(home) = s.home.upgrade() else { return };
    // `try_`: a slot dropped while the pool is being handed a buffer (never
    // expected) is freed instead of panicking.
    let Ok(mut free) = home.try_borrow_mut() else {
        return;
    };
    let cap = slot.bytes.capacity();
    if free.slots.len() < free.keep && free.held + cap <= free.budget {
        free.held += cap;
        free.slots.push(slot);
    }
}

/// A payload being written: one buffer from the node's pool, owned by the
/// application until it multicasts it (`Into<Bytes>`, no copy). Dropped
/// unsent, it goes back to the pool.
///
/// ```no_run
/// # use std::io::Write;
/// # use concord_runtime::node::{Group, Multicast};
/// # fn demo(prices: &Group) -> Result<(), Box<dyn std::error::Error>> {
/// let mut quote = prices.payload_buf();
/// write!(quote, "EURUSD {}", 1.0841)?;
/// if let Multicast::BackPressured(_back) = prices.multicast(quote)? {
///     // offer `_back` again once `prices.writable()` completes
/// }
/// # Ok(())
/// # }
/// ```
pub struct PayloadBuf {
    /// `Some` until it is frozen into `Bytes` or dropped.
    slot: Option<Rc<Slot>>,
}

impl PayloadBuf {
    /// The buffer to write into (empty when handed out; its capacity is
    /// what the buffer's earlier payloads needed).
    pub fn as_mut_vec(&mut self) -> &mut Vec<u8> {
        let slot = self
            .slot
            .as_mut()
            .expect("a PayloadBuf holds its slot until dropped");
        // Unique: a slot is handed out only from the free list, where it is
        // its own last handle, and a PayloadBuf is never cloned.
        &mut Rc::get_mut(slot)
            .expect("a PayloadBuf is the only handle of its slot")
            .bytes
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.as_mut_vec().extend_from_slice(bytes);
    }

    /// Empties it (the storage stays).
    pub fn clear(&mut self) {
        self.as_mut_vec().clear();
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        self.slot.as_ref().map_or(&[], |s| &s.bytes)
    }

    /// The payload, shared from here on.
    pub(crate) fn freeze(mut self) -> Pooled {
        Pooled(self.slot.take())
    }
}

impl Drop for PayloadBuf {
    fn drop(&mut self) {
        give_back(self.slot.take());
    }
}

impl Deref for PayloadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl DerefMut for PayloadBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_vec()
    }
}

impl std::io::Write for PayloadBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for PayloadBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PayloadBuf({} bytes)", self.len())
    }
}

/// A multicast payload in a pooled buffer, shared: the `Bytes` variant a
/// [`PayloadBuf`] becomes. The last clone dropped returns the buffer.
#[derive(Clone)]
pub(crate) struct Pooled(Option<Rc<Slot>>);

impl Pooled {
    pub fn as_slice(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |s| &s.bytes)
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give_back(self.0.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_handle_returns_the_buffer_with_its_storage() {
        let pool = PayloadPool::new(4, 1 << 20);
        let mut b = pool.take();
        b.extend_from_slice(&[1; 100]);
        let at = b.as_slice().as_ptr();
        let p = b.freeze();
        let q = p.clone();
        drop(p);
        assert_eq!(pool.free(), 0, "a clone still shares it");
        assert_eq!(q.as_slice(), &[1; 100]);
        drop(q);
        assert_eq!(pool.free(), 1);
        let mut again = pool.take();
        assert!(again.is_empty(), "handed out empty");
        again.extend_from_slice(&[2; 100]);
        assert_eq!(again.as_slice().as_ptr(), at, "the same storage");
        drop(again);
        assert_eq!(pool.free(), 1, "dropped unsent, it comes back too");
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_small_buffers() {
        let pool = PayloadPool::new(2, 1 << 20);
        let bufs: Vec<_> = (0..4).map(|_| pool.take()).collect();
        drop(bufs);
        assert_eq!(pool.free(), 2);
        let budget = PayloadPool::new(8, 250);
        let bufs: Vec<_> = (0..4)
            .map(|_| {
                let mut b = budget.take();
                b.extend_from_slice(&[0; 100]);
                b
            })
            .collect();
        drop(bufs);
        assert_eq!(budget.free(), 2, "two of 100 bytes fit a budget of 250");
        let mut big = pool.take();
        big.as_mut_vec().resize(MAX_KEPT_CAPACITY + 1, 0);
        drop(big);
        assert_eq!(pool.free(), 1, "a jumbo buffer is freed, not kept");
    }

    #[test]
    fn prefilled_buffers_are_handed_out_first() {
        let pool = PayloadPool::new(8, 1000);
        pool.prefill(16, 100);
        assert_eq!(pool.free(), 8, "within the slot bound");
        let bufs: Vec<_> = (0..8).map(|_| pool.take()).collect();
        assert!(
            bufs.iter()
                .all(|b| b.slot.as_ref().unwrap().bytes.capacity() == 100)
        );
        let budget = PayloadPool::new(8, 250);
        budget.prefill(8, 100);
        assert_eq!(budget.free(), 2, "within the byte budget");
    }

    #[test]
    fn a_buffer_outliving_its_pool_is_freed() {
        let pool = PayloadPool::new(2, 1 << 20);
        let b = pool.take().freeze();
        drop(pool);
        drop(b);
    }
}
