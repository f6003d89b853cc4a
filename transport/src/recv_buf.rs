//! Receive side memory: one provided-buffer ring per connection, the
//! reassembly pool for frames that straddle two buffers, and [`RecvFrame`],
//! the borrowed view the application gets.
//!
//! Ownership: a buffer id is in exactly one of three places.
//! 1. In the ring, owned by the kernel (it may write there at any time).
//! 2. "Current": the kernel returned it with `IORING_CQE_F_BUF_MORE` (the
//!    incremental mode of kernel 6.12+, `IOU_PBUF_RING_INC`) and will append
//!    later receives after the bytes it already reported; the driver holds one
//!    reference until the kernel reports it full.
//! 3. Held by frames: each [`RecvFrame`] pointing into it holds a reference.
//!
//! When the count reaches zero the buffer goes back to the ring tail. The
//! counts are `Cell`s (shard-local, no atomics, no allocation): `RecvFrame` is
//! `!Send`, which is what makes that sound.

use std::alloc::{Layout, alloc, dealloc};
use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use crate::ConnId;
use crate::frame::HEADER_LEN;

const PAGE: usize = 4096;

/// One connection's provided-buffer ring and the buffers it hands out.
pub(crate) struct RecvRing {
    mem: NonNull<u8>,
    mem_layout: Layout,
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    pub(crate) buf_size: u32,
    count: u16,
    /// Local copy of the tail; the kernel reads the shared one.
    tail: Cell<u16>,
    /// Per buffer: references held (frames + the driver's "current" hold).
    refs: Box<[Cell<u32>]>,
    /// Per buffer: bytes the kernel has reported into it so far.
    fill: Box<[Cell<u32>]>,
    /// Buffers in the ring that the kernel has not started on.
    in_ring: Cell<u16>,
    pub(crate) bgid: u16,
}

impl std::fmt::Debug for RecvRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvRing")
            .field("bgid", &self.bgid)
            .field("buf_size", &self.buf_size)
            .field("count", &self.count)
            .field("in_ring", &self.in_ring.get())
            .finish()
    }
}

impl RecvRing {
    /// Allocates `count` (a power of two) buffers of `buf_size` bytes and a
    /// ring holding all of them.
    pub(crate) fn new(bgid: u16, buf_size: u32, count: u16) -> RecvRing {
        assert!(
            count.is_power_of_two() && buf_size > 0,
            "validated by DriverConfig::validate"
        );
        let mem_layout =
            Layout::from_size_align(buf_size as usize * count as usize, PAGE).expect("size fits");
        let ring_layout =
            Layout::from_size_align(count as usize * std::mem::size_of::<BufRingEntry>(), PAGE)
                .expect("size fits");
        // SAFETY: both layouts have non-zero size (count >= 1, buf_size >= 1).
        let mem = NonNull::new(unsafe { alloc(mem_layout) })
            .unwrap_or_else(|| std::alloc::handle_alloc_error(mem_layout));
        // SAFETY: as above; the ring must start zeroed (tail = 0).
        let ring = NonNull::new(unsafe { std::alloc::alloc_zeroed(ring_layout) })
            .unwrap_or_else(|| std::alloc::handle_alloc_error(ring_layout))
            .cast::<BufRingEntry>();
        let r = RecvRing {
            mem,
            mem_layout,
            ring,
            ring_layout,
            buf_size,
            count,
            tail: Cell::new(0),
            refs: (0..count).map(|_| Cell::new(0)).collect(),
            fill: (0..count).map(|_| Cell::new(0)).collect(),
            in_ring: Cell::new(0),
            bgid,
        };
        for bid in 0..count {
            r.push(bid);
        }
        r
    }

    pub(crate) fn ring_addr(&self) -> u64 {
        self.ring.as_ptr() as u64
    }

    pub(crate) fn entries(&self) -> u16 {
        self.count
    }

    pub(crate) fn in_ring(&self) -> u16 {
        self.in_ring.get()
    }

    fn push(&self, bid: u16) {
        let tail = self.tail.get();
        let idx = (tail & (self.count - 1)) as usize;
        // SAFETY: idx < count, so the entry is inside the ring allocation. The
        // kernel only reads entries between its head and the shared tail, and
        // this slot is beyond the tail until the store below publishes it.
        let entry = unsafe { &mut *self.ring.as_ptr().add(idx) };
        // SAFETY: bid < count so the buffer lies inside `mem`.
        entry.set_addr(
            unsafe { self.mem.as_ptr().add(bid as usize * self.buf_size as usize) } as u64,
        );
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        let tail = tail.wrapping_add(1);
        self.tail.set(tail);
        self.in_ring.set(self.in_ring.get() + 1);
        // SAFETY: the tail field lives in the first entry's reserved u16,
        // which is 2-byte aligned and inside the ring allocation; the kernel
        // reads it with acquire semantics (io_uring buf_ring protocol, see
        // io_uring_buf_ring_advance in liburing), so publish with release.
        unsafe {
            let tail_ptr = BufRingEntry::tail(self.ring.as_ptr()) as *mut u16;
            AtomicU16::from_ptr(tail_ptr).store(tail, Ordering::Release);
        }
    }

    /// Records `n` bytes the kernel reported into `bid`; returns the offset
    /// they start at. The first report takes the driver's "current" hold.
    pub(crate) fn landed(&self, bid: u16, n: u32) -> u32 {
        let f = &self.fill[bid as usize];
        let start = f.get();
        if start == 0 {
            self.refs[bid as usize].set(self.refs[bid as usize].get() + 1);
            self.in_ring.set(self.in_ring.get() - 1);
        }
        f.set(start + n);
        start
    }

    /// Bytes the kernel has reported into `bid` so far.
    pub(crate) fn fill(&self, bid: u16) -> u32 {
        self.fill[bid as usize].get()
    }

    pub(crate) fn acquire(&self, bid: u16) {
        let r = &self.refs[bid as usize];
        r.set(r.get() + 1);
    }

    /// Drops one reference; the last one returns the buffer to the kernel.
    pub(crate) fn release(&self, bid: u16) {
        let r = &self.refs[bid as usize];
        let n = r.get() - 1;
        r.set(n);
        if n == 0 {
            self.fill[bid as usize].set(0);
            self.push(bid);
        }
    }

    /// Bytes `[off, off + len)` of buffer `bid`.
    ///
    /// # Safety
    /// The range must lie within what the kernel has reported into `bid`
    /// (`fill`), and the caller must hold a reference on `bid` for as long as
    /// the slice lives, so the buffer cannot be recycled under it.
    pub(crate) unsafe fn slice(&self, bid: u16, off: u32, len: u32) -> &[u8] {
        debug_assert!(off + len <= self.fill[bid as usize].get());
        // SAFETY: in bounds per the contract (fill <= buf_size); the kernel
        // writes only past `fill` while the buffer is current, and not at all
        // once it is held by frames.
        unsafe {
            std::slice::from_raw_parts(
                self.mem
                    .as_ptr()
                    .add(bid as usize * self.buf_size as usize + off as usize),
                len as usize,
            )
        }
    }
}

impl Drop for RecvRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts. The Driver drops its
        // last Rc only after the kernel is done with the ring (recv completed
        // and the group unregistered) and frames hold the others, so no one
        // can touch this memory any more.
        unsafe {
            dealloc(self.mem.as_ptr(), self.mem_layout);
            dealloc(self.ring.as_ptr().cast(), self.ring_layout);
        }
    }
}

/// Reassembly buffers for frames that straddle receive buffers (or exceed
/// one). A slot belongs to one frame at a time; freed slots are reused with
/// their capacity, so steady state does not allocate.
#[derive(Debug, Default)]
pub(crate) struct AssemblyPool {
    slots: RefCell<Vec<Vec<u8>>>,
    free: RefCell<Vec<u32>>,
}

impl AssemblyPool {
    /// A slot with length 0 and whatever capacity it kept.
    pub(crate) fn take(&self) -> (u32, bool) {
        if let Some(i) = self.free.borrow_mut().pop() {
            self.slots.borrow_mut()[i as usize].clear();
            return (i, false);
        }
        let mut slots = self.slots.borrow_mut();
        slots.push(Vec::new());
        // Reserve now so that returning a slot in RecvFrame::drop never allocates.
        self.free.borrow_mut().reserve(slots.len());
        ((slots.len() - 1) as u32, true)
    }

    /// Adds a free slot with `cap` bytes of capacity (done once per
    /// concurrently live connection, so a straddling frame up to `cap` never
    /// allocates, not even the first).
    pub(crate) fn preallocate(&self, cap: usize) {
        let mut slots = self.slots.borrow_mut();
        slots.push(Vec::with_capacity(cap));
        let mut free = self.free.borrow_mut();
        let missing = slots.len().saturating_sub(free.len());
        free.reserve(missing);
        free.push((slots.len() - 1) as u32);
    }

    /// Makes room for `additional` more bytes in `slot`; returns whether that
    /// allocated (only a frame larger than every preallocated slot does).
    pub(crate) fn reserve(&self, slot: u32, additional: usize) -> bool {
        self.with_slot(slot, |v| {
            let grow = v.capacity() - v.len() < additional;
            v.reserve_exact(additional);
            grow
        })
    }

    pub(crate) fn with_slot<R>(&self, slot: u32, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        f(&mut self.slots.borrow_mut()[slot as usize])
    }

    pub(crate) fn slot_ptr(&self, slot: u32) -> *const u8 {
        self.slots.borrow()[slot as usize].as_ptr()
    }

    pub(crate) fn give_back(&self, slot: u32) {
        self.free.borrow_mut().push(slot);
    }
}

enum Store {
    Ring {
        ring: Rc<RecvRing>,
        bid: u16,
        off: u32,
        len: u32,
    },
    Assembled {
        pool: Rc<AssemblyPool>,
        slot: u32,
        ptr: *const u8,
        len: u32,
    },
}

/// A received payload frame: a borrowed view into the receive buffer the
/// kernel wrote it into (or, for a frame that straddled two buffers, into a
/// reassembly buffer). No copy was made to produce it. The buffer returns to
/// the pool when the last frame referencing it drops; holding frames for long
/// starves that connection's receive ring (it stops reading: back-pressure).
///
/// `!Send`: the reference counts are shard-local.
pub struct RecvFrame {
    conn: ConnId,
    store: Store,
}

impl std::fmt::Debug for RecvFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvFrame")
            .field("conn", &self.conn)
            .field("len", &self.len())
            .field(
                "reassembled",
                &matches!(self.store, Store::Assembled { .. }),
            )
            .finish()
    }
}

impl RecvFrame {
    /// Takes a reference on `bid`. `off` is the frame's start (its header).
    pub(crate) fn from_ring(
        conn: ConnId,
        ring: &Rc<RecvRing>,
        bid: u16,
        off: u32,
        len: u32,
    ) -> Self {
        ring.acquire(bid);
        RecvFrame {
            conn,
            store: Store::Ring {
                ring: Rc::clone(ring),
                bid,
                off: off + HEADER_LEN as u32,
                len: len - HEADER_LEN as u32,
            },
        }
    }

    /// Hands out a filled reassembly slot holding a whole frame (header included).
    pub(crate) fn from_assembly(
        conn: ConnId,
        pool: &Rc<AssemblyPool>,
        slot: u32,
        len: u32,
    ) -> Self {
        let ptr = pool.slot_ptr(slot);
        RecvFrame {
            conn,
            store: Store::Assembled {
                pool: Rc::clone(pool),
                slot,
                // SAFETY: the slot holds `len >= HEADER_LEN` bytes.
                ptr: unsafe { ptr.add(HEADER_LEN) },
                len: len - HEADER_LEN as u32,
            },
        }
    }

    /// The connection it arrived on.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Ring { len, .. } | Store::Assembled { len, .. } => *len as usize,
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this frame had to be copied because it straddled receive buffers.
    pub fn was_reassembled(&self) -> bool {
        matches!(self.store, Store::Assembled { .. })
    }

    /// The payload bytes (header stripped, checksum already verified).
    pub fn payload(&self) -> &[u8] {
        match &self.store {
            Store::Ring {
                ring,
                bid,
                off,
                len,
            } => {
                // SAFETY: the range was verified to lie within the reported
                // fill when the frame was parsed, and this frame holds a
                // reference on `bid` until it drops.
                unsafe { ring.slice(*bid, *off, *len) }
            }
            // SAFETY: the slot is owned by this frame until drop (it is only
            // put back on the free list then), and the Vec is not touched
            // while owned, so `ptr` stays valid for `len` bytes.
            Store::Assembled { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts(*ptr, *len as usize)
            },
        }
    }
}

impl std::ops::Deref for RecvFrame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.payload()
    }
}

impl AsRef<[u8]> for RecvFrame {
    fn as_ref(&self) -> &[u8] {
        self.payload()
    }
}

impl Drop for RecvFrame {
    fn drop(&mut self) {
        match &self.store {
            Store::Ring { ring, bid, .. } => ring.release(*bid),
            Store::Assembled { pool, slot, .. } => pool.give_back(*slot),
        }
    }
}
