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
//! 3. Held by frames: each [`RecvFrame`] view pointing into it (a frame, its
//!    clones and slices) holds a reference. Such a buffer is counted as held
//!    (`RecvRing::retire`) until the last view drops.
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
    /// Per buffer: the kernel is done with it but frames still hold it
    /// (counted in `held_buffers` and `held_bytes`).
    held: Box<[Cell<bool>]>,
    /// Buffers that frames keep out of the ring after the kernel filled them.
    held_buffers: Cell<u16>,
    /// Bytes the kernel landed in those buffers.
    held_bytes: Cell<u64>,
    /// Buffers in the ring that the kernel has not started on.
    in_ring: Cell<u16>,
    pub(crate) bgid: u16,
    pub(crate) account: Rc<RecvAccount>,
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
    pub(crate) fn new(bgid: u16, buf_size: u32, count: u16, account: Rc<RecvAccount>) -> RecvRing {
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
            held: (0..count).map(|_| Cell::new(false)).collect(),
            held_buffers: Cell::new(0),
            held_bytes: Cell::new(0),
            in_ring: Cell::new(0),
            bgid,
            account,
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
            let fill = self.fill[bid as usize].replace(0) as u64;
            if self.held[bid as usize].replace(false) {
                self.held_buffers.set(self.held_buffers.get() - 1);
                self.held_bytes.set(self.held_bytes.get() - fill);
                let a = &self.account;
                a.held_buffers.set(a.held_buffers.get() - 1);
                a.held_bytes.set(a.held_bytes.get() - fill);
            }
            self.push(bid);
        }
    }

    /// The driver drops its "current" hold on `bid` (the kernel is done
    /// writing it). Frames still referencing it now keep it from the ring:
    /// that is what `held_buffers` counts.
    pub(crate) fn retire(&self, bid: u16) {
        if self.refs[bid as usize].get() > 1 {
            let fill = self.fill[bid as usize].get() as u64;
            self.held[bid as usize].set(true);
            self.held_buffers.set(self.held_buffers.get() + 1);
            self.held_bytes.set(self.held_bytes.get() + fill);
            let a = &self.account;
            a.held_buffers.set(a.held_buffers.get() + 1);
            a.held_bytes.set(a.held_bytes.get() + fill);
        }
        self.release(bid);
    }

    /// Buffers frames keep out of the ring, and the bytes landed in them.
    pub(crate) fn held(&self) -> (u16, u64) {
        (self.held_buffers.get(), self.held_bytes.get())
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
/// one). A slot belongs to one frame (and its clones and slices) at a time,
/// counted like a ring buffer; freed slots are reused with their capacity, so
/// steady state does not allocate.
#[derive(Debug)]
pub(crate) struct AssemblyPool {
    slots: RefCell<Vec<Vec<u8>>>,
    /// Per slot: references held by frames (0 while the parser fills it).
    refs: RefCell<Vec<u32>>,
    free: RefCell<Vec<u32>>,
    account: Rc<RecvAccount>,
}

impl AssemblyPool {
    pub(crate) fn new(account: Rc<RecvAccount>) -> AssemblyPool {
        AssemblyPool {
            slots: RefCell::default(),
            refs: RefCell::default(),
            free: RefCell::default(),
            account,
        }
    }

    /// A slot with length 0 and whatever capacity it kept.
    pub(crate) fn take(&self) -> (u32, bool) {
        if let Some(i) = self.free.borrow_mut().pop() {
            self.slots.borrow_mut()[i as usize].clear();
            return (i, false);
        }
        let mut slots = self.slots.borrow_mut();
        slots.push(Vec::new());
        self.refs.borrow_mut().push(0);
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
        self.refs.borrow_mut().push(0);
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

    fn slot_ptr(&self, slot: u32) -> *const u8 {
        self.slots.borrow()[slot as usize].as_ptr()
    }

    /// Returns a slot no frame references (the parser's, on an error or a
    /// close mid-frame).
    pub(crate) fn give_back(&self, slot: u32) {
        debug_assert_eq!(self.refs.borrow()[slot as usize], 0);
        self.free.borrow_mut().push(slot);
    }

    /// A frame takes the filled slot over (`len` bytes held).
    fn hand_out(&self, slot: u32, len: u32) {
        self.refs.borrow_mut()[slot as usize] = 1;
        self.account
            .held_asm_bytes
            .set(self.account.held_asm_bytes.get() + len as u64);
    }

    fn acquire(&self, slot: u32) {
        self.refs.borrow_mut()[slot as usize] += 1;
    }

    fn release(&self, slot: u32) {
        let left = {
            let mut refs = self.refs.borrow_mut();
            refs[slot as usize] -= 1;
            refs[slot as usize]
        };
        if left == 0 {
            let len = self.with_slot(slot, |v| v.len()) as u64;
            self.account
                .held_asm_bytes
                .set(self.account.held_asm_bytes.get() - len);
            self.free.borrow_mut().push(slot);
        }
    }
}

/// The driver-wide receive counters that frames update when they are cloned,
/// copied out or dropped (shard-local `Cell`s, read by `Driver::stats`).
#[derive(Debug, Default)]
pub(crate) struct RecvAccount {
    /// Receive buffers (all connections) that frames keep out of their ring.
    pub(crate) held_buffers: Cell<u64>,
    /// Bytes landed in them.
    pub(crate) held_bytes: Cell<u64>,
    /// Reassembly bytes held by frames.
    pub(crate) held_asm_bytes: Cell<u64>,
    /// Frames copied out with `to_vec` or `detach`.
    pub(crate) copied_frames: Cell<u64>,
    /// Bytes copied out by them.
    pub(crate) copied_bytes: Cell<u64>,
}

impl RecvAccount {
    fn count_copy(&self, len: usize) {
        self.copied_frames.set(self.copied_frames.get() + 1);
        self.copied_bytes.set(self.copied_bytes.get() + len as u64);
    }
}

/// Where a frame's bytes live. Each variant holds one counted reference.
enum Store {
    /// In a receive buffer of the connection's ring.
    Ring { ring: Rc<RecvRing>, bid: u16 },
    /// In a reassembly slot (the frame straddled two receive buffers).
    Assembled {
        pool: Rc<AssemblyPool>,
        slot: u32,
        base: *const u8,
    },
    /// In an owned heap copy made by [`RecvFrame::detach`].
    Heap {
        data: Rc<[u8]>,
        account: Rc<RecvAccount>,
    },
}

/// A received payload frame, or a sub-range of one: a view into the receive
/// buffer the kernel wrote it into (or, for a frame that straddled two
/// buffers, into a reassembly buffer). No copy was made to produce it.
///
/// - **Cheap to share.** [`Clone`] and [`slice`](RecvFrame::slice) only bump
///   a shard-local reference count on the buffer: no allocation, no copy.
///   That is what lets the membership Engine keep a payload (a slice of the
///   frame that carried it) until it is stable, and hand it on to delivery.
/// - **Holding pins the buffer.** The buffer returns to the connection's
///   receive ring when the last view into it drops. Views held for long pin
///   whole buffers; when the ring runs dry the driver stops reading that
///   connection and reports [`Event::RecvPressure`](crate::Event::RecvPressure)
///   (TCP then back-pressures the sender), and resumes by itself once views
///   are dropped.
/// - **Copies are explicit and counted.** [`to_vec`](RecvFrame::to_vec) and
///   [`detach`](RecvFrame::detach) copy the bytes out (and count it in
///   [`Stats::copied_out_frames`](crate::Stats::copied_out_frames)), freeing the
///   receive buffer from this view.
///
/// **Not `Send`, not `Sync`**: the reference counts are plain `Cell`s of the
/// shard that owns the [`Driver`](crate::Driver) (no atomics on the hot path),
/// so a frame, and a `Delivery` holding one, stays on its shard. To hand the
/// bytes to another thread, copy them with [`to_vec`](RecvFrame::to_vec).
///
/// ```compile_fail
/// fn needs_send<T: Send>() {}
/// needs_send::<concord_transport::RecvFrame>();
/// ```
pub struct RecvFrame {
    conn: ConnId,
    store: Store,
    /// Start of the view: offset in the ring buffer, the reassembly slot or
    /// the heap copy.
    off: u32,
    len: u32,
}

impl std::fmt::Debug for RecvFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let store = match self.store {
            Store::Ring { .. } => "ring",
            Store::Assembled { .. } => "reassembled",
            Store::Heap { .. } => "detached",
        };
        f.debug_struct("RecvFrame")
            .field("conn", &self.conn)
            .field("len", &self.len)
            .field("store", &store)
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
            },
            off: off + HEADER_LEN as u32,
            len: len - HEADER_LEN as u32,
        }
    }

    /// Hands out a filled reassembly slot holding a whole frame (header included).
    pub(crate) fn from_assembly(
        conn: ConnId,
        pool: &Rc<AssemblyPool>,
        slot: u32,
        len: u32,
    ) -> Self {
        pool.hand_out(slot, len);
        RecvFrame {
            conn,
            store: Store::Assembled {
                pool: Rc::clone(pool),
                slot,
                base: pool.slot_ptr(slot),
            },
            off: HEADER_LEN as u32,
            len: len - HEADER_LEN as u32,
        }
    }

    /// The connection it arrived on.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Payload length (of this view).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this frame had to be copied because it straddled receive buffers.
    pub fn was_reassembled(&self) -> bool {
        matches!(self.store, Store::Assembled { .. })
    }

    /// Whether this view is an owned copy ([`detach`](RecvFrame::detach)).
    pub fn is_detached(&self) -> bool {
        matches!(self.store, Store::Heap { .. })
    }

    /// The payload bytes (header stripped, checksum already verified).
    pub fn payload(&self) -> &[u8] {
        match &self.store {
            Store::Ring { ring, bid } => {
                // SAFETY: the range was verified to lie within the reported
                // fill when the frame was parsed (a slice only narrows it),
                // and this view holds a reference on `bid` until it drops.
                unsafe { ring.slice(*bid, self.off, self.len) }
            }
            // SAFETY: the slot is referenced by this view until drop (it is
            // only put back on the free list when the last reference goes),
            // and the Vec is not touched while referenced, so `base` stays
            // valid for the frame's length, which covers [off, off + len).
            Store::Assembled { base, .. } => unsafe {
                std::slice::from_raw_parts(base.add(self.off as usize), self.len as usize)
            },
            Store::Heap { data, .. } => {
                &data[self.off as usize..self.off as usize + self.len as usize]
            }
        }
    }

    /// A view of `range` of this payload, sharing its buffer (a reference
    /// count, no copy, no allocation).
    ///
    /// # Panics
    /// If `range` is out of bounds or decreasing, like slice indexing; see
    /// [`try_slice`](RecvFrame::try_slice).
    pub fn slice(&self, range: impl std::ops::RangeBounds<usize>) -> RecvFrame {
        let (start, end) = self.bounds(range);
        self.try_slice(start..end).unwrap_or_else(|| {
            panic!(
                "RecvFrame::slice {start}..{end} out of bounds of a {}-byte payload",
                self.len
            )
        })
    }

    /// Like [`slice`](RecvFrame::slice), `None` when `range` is out of bounds.
    pub fn try_slice(&self, range: impl std::ops::RangeBounds<usize>) -> Option<RecvFrame> {
        let (start, end) = self.bounds(range);
        if start > end || end > self.len as usize {
            return None;
        }
        let mut view = self.clone();
        view.off += start as u32;
        view.len = (end - start) as u32;
        Some(view)
    }

    fn bounds(&self, range: impl std::ops::RangeBounds<usize>) -> (usize, usize) {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.len as usize,
        };
        (start, end)
    }

    fn account(&self) -> &RecvAccount {
        match &self.store {
            Store::Ring { ring, .. } => &ring.account,
            Store::Assembled { pool, .. } => &pool.account,
            Store::Heap { account, .. } => account,
        }
    }

    /// An owned copy of the payload, e.g. to hand it to another thread.
    /// Counted in [`Stats::copied_out_frames`](crate::Stats::copied_out_frames)
    /// and `copied_out_bytes`.
    pub fn to_vec(&self) -> Vec<u8> {
        self.account().count_copy(self.len as usize);
        self.payload().to_vec()
    }

    /// Copies the payload into an owned, refcounted heap buffer (one
    /// allocation, counted like [`to_vec`](RecvFrame::to_vec)) and returns a
    /// view of it; the receive buffer is released from this view. For a
    /// payload that will be held far longer than the traffic around it,
    /// which would otherwise pin a whole receive buffer. Detaching a
    /// detached view copies nothing.
    pub fn detach(self) -> RecvFrame {
        if let Store::Heap { .. } = self.store {
            return self;
        }
        let account = match &self.store {
            Store::Ring { ring, .. } => Rc::clone(&ring.account),
            Store::Assembled { pool, .. } => Rc::clone(&pool.account),
            Store::Heap { .. } => unreachable!("returned above"),
        };
        account.count_copy(self.len as usize);
        let data: Rc<[u8]> = Rc::from(self.payload());
        RecvFrame {
            conn: self.conn,
            store: Store::Heap { data, account },
            off: 0,
            len: self.len,
        }
    }
}

impl Clone for RecvFrame {
    /// Another view of the same bytes: bumps the buffer's reference count.
    fn clone(&self) -> Self {
        let store = match &self.store {
            Store::Ring { ring, bid } => {
                ring.acquire(*bid);
                Store::Ring {
                    ring: Rc::clone(ring),
                    bid: *bid,
                }
            }
            Store::Assembled { pool, slot, base } => {
                pool.acquire(*slot);
                Store::Assembled {
                    pool: Rc::clone(pool),
                    slot: *slot,
                    base: *base,
                }
            }
            Store::Heap { data, account } => Store::Heap {
                data: Rc::clone(data),
                account: Rc::clone(account),
            },
        };
        RecvFrame {
            conn: self.conn,
            store,
            off: self.off,
            len: self.len,
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

impl PartialEq for RecvFrame {
    /// Equal payload bytes (wherever they live).
    fn eq(&self, other: &Self) -> bool {
        self.payload() == other.payload()
    }
}

impl Eq for RecvFrame {}

impl Drop for RecvFrame {
    fn drop(&mut self) {
        match &self.store {
            Store::Ring { ring, bid } => ring.release(*bid),
            Store::Assembled { pool, slot, .. } => pool.release(*slot),
            Store::Heap { .. } => {}
        }
    }
}
