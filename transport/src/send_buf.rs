//! Send side memory: the pooled [`SendBuf`]s an application fills once and
//! sends to many peers, and each connection's staging chunks where small
//! frames are batched.

use std::alloc::{Layout, alloc, dealloc};
use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::rc::Rc;

use crate::frame::{self, FrameKind, HEADER_LEN};

/// Smallest pooled buffer (header included). Below this, staging chunks are
/// the better home for a frame.
const MIN_CLASS_SHIFT: u32 = 12;

struct Slot {
    ptr: NonNull<u8>,
    cap: usize,
    class: u8,
    refs: Cell<u32>,
    /// Frame length (header + payload) once frozen; 0 while writable.
    frozen_len: Cell<u32>,
}

/// Size-classed pool of send buffers. Slots are allocated on demand up to
/// `cap_bytes` and never freed until the pool drops, so a warm pool does not
/// allocate. Buffers are page aligned, which SEND_ZC pins page by page.
pub(crate) struct SendPool {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<Vec<u32>>>,
    /// Slot indices whose memory was given back to make room for another
    /// size class (reused by the next allocation).
    dead: RefCell<Vec<u32>>,
    allocated: Cell<usize>,
    cap_bytes: usize,
    max_frame: usize,
    /// A request was refused at the cap since the last `take_space_returned`.
    refused: Cell<bool>,
    /// A buffer came back after a refusal: the driver wakes the refused.
    space_returned: Cell<bool>,
}

impl std::fmt::Debug for SendPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendPool")
            .field("slots", &self.slots.borrow().len())
            .field("allocated", &self.allocated.get())
            .field("cap_bytes", &self.cap_bytes)
            .finish()
    }
}

fn class_of(frame_len: usize) -> u32 {
    frame_len
        .next_power_of_two()
        .trailing_zeros()
        .max(MIN_CLASS_SHIFT)
}

impl SendPool {
    pub(crate) fn new(cap_bytes: usize, max_frame: usize) -> SendPool {
        SendPool {
            slots: RefCell::new(Vec::new()),
            free: RefCell::new((0..64).map(|_| Vec::new()).collect()),
            dead: RefCell::new(Vec::new()),
            allocated: Cell::new(0),
            cap_bytes,
            max_frame,
            refused: Cell::new(false),
            space_returned: Cell::new(false),
        }
    }

    /// Returns `(slot, newly_allocated)`, or `None` when the pool is at its
    /// cap even after giving back idle buffers of other sizes.
    fn take(&self, frame_len: usize) -> Option<(u32, bool)> {
        let class = class_of(frame_len);
        if let Some(i) = self.free.borrow_mut()[class as usize].pop() {
            return Some((i, false));
        }
        let cap = 1usize << class;
        if self.allocated.get() + cap > self.cap_bytes && !self.reclaim(cap) {
            self.refused.set(true);
            return None;
        }
        let layout = Layout::from_size_align(cap, 4096).ok()?;
        // SAFETY: cap >= 4096 > 0.
        let ptr = NonNull::new(unsafe { alloc(layout) })
            .unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        self.allocated.set(self.allocated.get() + cap);
        let slot = Slot {
            ptr,
            cap,
            class: class as u8,
            refs: Cell::new(0),
            frozen_len: Cell::new(0),
        };
        let mut slots = self.slots.borrow_mut();
        let index = match self.dead.borrow_mut().pop() {
            Some(i) => {
                slots[i as usize] = slot;
                i
            }
            None => {
                slots.push(slot);
                (slots.len() - 1) as u32
            }
        };
        // Reserve so returning a slot (in a Drop) never allocates.
        let n = slots.len();
        let mut free = self.free.borrow_mut();
        let list = &mut free[class as usize];
        list.reserve(n.saturating_sub(list.len()));
        Some((index, true))
    }

    /// Frees idle buffers of other size classes, largest first, until `need`
    /// more bytes fit under the cap; false (freeing nothing) if they cannot.
    /// Cold: only a pool at its cap whose idle buffers are the wrong size.
    fn reclaim(&self, need: usize) -> bool {
        let mut free = self.free.borrow_mut();
        let idle: usize = free
            .iter()
            .enumerate()
            .map(|(class, list)| list.len() << class)
            .sum();
        if self.allocated.get() - idle + need > self.cap_bytes {
            return false;
        }
        let mut slots = self.slots.borrow_mut();
        let mut dead = self.dead.borrow_mut();
        for list in free.iter_mut().rev() {
            while self.allocated.get() + need > self.cap_bytes
                && let Some(i) = list.pop()
            {
                let s = &mut slots[i as usize];
                // SAFETY: allocated in `take` with this layout; the slot is on
                // a free list, so no SendBuf or BufRef references it.
                unsafe {
                    dealloc(
                        s.ptr.as_ptr(),
                        Layout::from_size_align_unchecked(s.cap, 4096),
                    )
                };
                self.allocated.set(self.allocated.get() - s.cap);
                s.ptr = NonNull::dangling();
                s.cap = 0;
                dead.push(i);
            }
        }
        true
    }

    /// Whether a buffer came back since a request was refused (and forget it).
    pub(crate) fn take_space_returned(&self) -> bool {
        if self.space_returned.replace(false) {
            self.refused.set(false);
            return true;
        }
        false
    }

    /// The largest payload a pooled buffer can ever hold: the maximum frame,
    /// or less when the pool's cap is below that frame's size class.
    pub(crate) fn max_payload(&self) -> usize {
        let cap = self
            .cap_bytes
            .checked_next_power_of_two()
            .map_or(
                self.cap_bytes,
                |p| {
                    if p == self.cap_bytes { p } else { p / 2 }
                },
            );
        self.max_frame.min(cap.saturating_sub(HEADER_LEN))
    }

    /// Whether a buffer came back since a request was refused.
    pub(crate) fn space_returned(&self) -> bool {
        self.space_returned.get()
    }

    fn acquire(&self, slot: u32) {
        let s = &self.slots.borrow()[slot as usize];
        s.refs.set(s.refs.get() + 1);
    }

    fn release(&self, slot: u32) {
        let slots = self.slots.borrow();
        let s = &slots[slot as usize];
        let n = s.refs.get() - 1;
        s.refs.set(n);
        if n == 0 {
            s.frozen_len.set(0);
            self.free.borrow_mut()[s.class as usize].push(slot);
            if self.refused.get() {
                self.space_returned.set(true);
            }
        }
    }
}

impl Drop for SendPool {
    fn drop(&mut self) {
        for s in self.slots.get_mut().drain(..).filter(|s| s.cap > 0) {
            // SAFETY: allocated in `take` with this layout. The pool drops only
            // when no BufRef is left, and in-flight sends hold BufRefs until
            // their completion (and SEND_ZC notification) arrives.
            unsafe {
                dealloc(
                    s.ptr.as_ptr(),
                    Layout::from_size_align_unchecked(s.cap, 4096),
                )
            };
        }
    }
}

/// A pooled buffer the application fills once, then sends to any number of
/// connections ([`Driver::send_buf`](crate::Driver::send_buf)): one buffer, N
/// sends, no copy. Sends above the zero-copy threshold use SEND_ZC, and the
/// driver keeps the buffer until the kernel's notification says it is done
/// with the pages. The buffer returns to the pool when this handle and every
/// send using it are done.
pub struct SendBuf {
    r: BufRef,
    len: usize,
}

impl std::fmt::Debug for SendBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBuf")
            .field("slot", &self.r.slot)
            .field("len", &self.len)
            .field("frozen", &self.is_frozen())
            .finish()
    }
}

impl SendBuf {
    /// `None` when `len` exceeds [`SendPool::max_payload`] or the pool is
    /// at its cap.
    pub(crate) fn new(pool: &Rc<SendPool>, len: usize) -> Option<(SendBuf, bool)> {
        if len > pool.max_payload() {
            return None;
        }
        let (slot, fresh) = pool.take(len + HEADER_LEN)?;
        pool.acquire(slot);
        let ptr = pool.slots.borrow()[slot as usize].ptr;
        Some((
            SendBuf {
                r: BufRef {
                    pool: Rc::clone(pool),
                    slot,
                    ptr,
                },
                len,
            },
            fresh,
        ))
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the buffer has been sent (and so can no longer be written).
    pub fn is_frozen(&self) -> bool {
        self.r.frozen_len() != 0
    }

    /// The payload to fill in place, or `None` once the buffer has been
    /// handed to a send (the kernel may be reading it).
    pub fn payload_mut(&mut self) -> Option<&mut [u8]> {
        if self.is_frozen() {
            return None;
        }
        // SAFETY: not frozen means no send has referenced the buffer, so this
        // handle is its only user; the slot holds HEADER_LEN + len bytes and
        // `&mut self` makes the borrow exclusive.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.r.ptr.as_ptr().add(HEADER_LEN), self.len)
        })
    }

    /// The payload (readable at any time).
    pub fn payload(&self) -> &[u8] {
        // SAFETY: the slot holds HEADER_LEN + len bytes; nobody writes once
        // frozen, and before that only through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.r.ptr.as_ptr().add(HEADER_LEN), self.len) }
    }

    /// Writes the header (checksum over the payload) on first use and returns
    /// a reference for one send.
    pub(crate) fn freeze(&self, checksum_payload: bool) -> BufRef {
        if !self.is_frozen() {
            // SAFETY: not frozen: no send references the buffer, and we hold
            // `&self` only, but no `&mut` payload borrow can be live because
            // payload_mut needs `&mut self`.
            let frame = unsafe {
                std::slice::from_raw_parts_mut(self.r.ptr.as_ptr(), HEADER_LEN + self.len)
            };
            frame::write_header_in_place(frame, FrameKind::Payload, checksum_payload);
            let slots = self.r.pool.slots.borrow();
            slots[self.r.slot as usize]
                .frozen_len
                .set((HEADER_LEN + self.len) as u32);
        }
        self.r.clone()
    }
}

/// One counted reference to a pooled buffer, held by a queued or in-flight
/// send (and by a pending SEND_ZC notification).
pub(crate) struct BufRef {
    pool: Rc<SendPool>,
    slot: u32,
    ptr: NonNull<u8>,
}

impl std::fmt::Debug for BufRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BufRef({})", self.slot)
    }
}

impl BufRef {
    pub(crate) fn frozen_len(&self) -> u32 {
        self.pool.slots.borrow()[self.slot as usize]
            .frozen_len
            .get()
    }

    /// Start of the frame (header). Valid for `frozen_len` bytes while this
    /// reference lives.
    pub(crate) fn ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

impl Clone for BufRef {
    fn clone(&self) -> Self {
        self.pool.acquire(self.slot);
        BufRef {
            pool: Rc::clone(&self.pool),
            slot: self.slot,
            ptr: self.ptr,
        }
    }
}

impl Drop for BufRef {
    fn drop(&mut self) {
        self.pool.release(self.slot);
    }
}
