//! Minimal virtio-mmio (version 2): discovery, split virtqueues, and a polled virtio-blk driver.

use core::ptr::{addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

const MAGIC: usize = 0x000;
const VERSION: usize = 0x004;
const DEVICE_ID: usize = 0x008;
const DEVICE_FEATURES: usize = 0x010;
const DEVICE_FEATURES_SEL: usize = 0x014;
const DRIVER_FEATURES: usize = 0x020;
const DRIVER_FEATURES_SEL: usize = 0x024;
const QUEUE_SEL: usize = 0x030;
const QUEUE_NUM_MAX: usize = 0x034;
const QUEUE_NUM: usize = 0x038;
const QUEUE_READY: usize = 0x044;
const QUEUE_NOTIFY: usize = 0x050;
const STATUS: usize = 0x070;
const QUEUE_DESC: usize = 0x080;
const QUEUE_DRIVER: usize = 0x090;
const QUEUE_DEVICE: usize = 0x0a0;
const CONFIG: usize = 0x100;

const STATUS_ACK: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;

/// Feature bit 5 means "read-only" for block and "has MAC" for net.
const F_BIT5: u32 = 1 << 5;

/// One virtio-mmio window.
#[derive(Clone, Copy)]
pub struct Mmio {
    pub base: usize,
}

impl Mmio {
    fn r32(self, off: usize) -> u32 {
        // SAFETY: the window was announced by the VMM on the command line and is identity-mapped.
        unsafe { read_volatile((self.base + off) as *const u32) }
    }
    fn w32(self, off: usize, v: u32) {
        // SAFETY: as for r32.
        unsafe { write_volatile((self.base + off) as *mut u32, v) }
    }
    fn config_u64(self) -> u64 {
        // SAFETY: config space accepts 64-bit reads.
        unsafe { read_volatile((self.base + CONFIG) as *const u64) }
    }
    pub fn is_virtio(self) -> bool {
        self.r32(MAGIC) == 0x7472_6976
    }
    pub fn version(self) -> u32 {
        self.r32(VERSION)
    }
    pub fn device_id(self) -> u32 {
        self.r32(DEVICE_ID)
    }
    pub fn features_lo(self) -> u32 {
        self.w32(DEVICE_FEATURES_SEL, 0);
        self.r32(DEVICE_FEATURES)
    }
    pub fn block_capacity(self) -> u64 {
        self.config_u64()
    }
    pub fn block_read_only(self) -> bool {
        self.features_lo() & F_BIT5 != 0
    }
    pub fn net_mac(self) -> Option<[u8; 6]> {
        if self.features_lo() & F_BIT5 == 0 {
            return None;
        }
        let raw = self.config_u64().to_le_bytes();
        Some([raw[0], raw[1], raw[2], raw[3], raw[4], raw[5]])
    }
    pub fn vsock_cid(self) -> u64 {
        self.config_u64()
    }
}

/// Entries per virtqueue.
pub const QSIZE: usize = 8;

/// One descriptor.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// Descriptor flag: the chain continues at `next`.
pub const DESC_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const DESC_WRITE: u16 = 2;

/// One split virtqueue: descriptors, the driver's (avail) ring, the device's (used) ring.
#[repr(C, align(4096))]
pub struct Virtq {
    pub desc: [Desc; QSIZE],
    pub avail_flags: u16,
    pub avail_idx: u16,
    pub avail_ring: [u16; QSIZE],
    _pad: [u8; 1024],
    pub used_flags: u16,
    pub used_idx: u16,
    pub used_ring: [[u32; 2]; QSIZE],
}

const EMPTY_DESC: Desc = Desc { addr: 0, len: 0, flags: 0, next: 0 };

/// A virtqueue before setup.
pub const EMPTY_VIRTQ: Virtq = Virtq {
    desc: [EMPTY_DESC; QSIZE],
    avail_flags: 0,
    avail_idx: 0,
    avail_ring: [0; QSIZE],
    _pad: [0; 1024],
    used_flags: 0,
    used_idx: 0,
    used_ring: [[0; 2]; QSIZE],
};

impl Virtq {
    /// Offers descriptor `head` to the device (the caller notifies).
    pub fn offer(&mut self, head: u16) {
        let idx = self.avail_idx;
        self.avail_ring[idx as usize % QSIZE] = head;
        fence(Ordering::SeqCst);
        // SAFETY: the device reads the avail index; publish it volatile after the ring entry.
        unsafe { write_volatile(addr_of_mut!(self.avail_idx), idx.wrapping_add(1)) };
        fence(Ordering::SeqCst);
    }

    /// The device's used index, read volatile.
    pub fn used(&mut self) -> u16 {
        // SAFETY: written by the device; a volatile read of an aligned u16 of ours.
        unsafe { read_volatile(addr_of_mut!(self.used_idx)) }
    }

    /// Used element `at` (modulo the ring): (descriptor head, bytes written).
    pub fn used_elem(&mut self, at: u16) -> (u32, u32) {
        fence(Ordering::SeqCst);
        let slot = addr_of_mut!(self.used_ring[at as usize % QSIZE]);
        // SAFETY: as for `used`.
        let elem = unsafe { read_volatile(slot) };
        (elem[0], elem[1])
    }
}

/// Resets the device and negotiates VIRTIO_F_VERSION_1 plus the low feature bits in `keep_lo`
/// the device offers; returns the status to build on, or `None` if the device refuses.
pub fn negotiate(dev: Mmio, keep_lo: u32) -> Option<u32> {
    dev.w32(STATUS, 0);
    dev.w32(STATUS, STATUS_ACK);
    dev.w32(STATUS, STATUS_ACK | STATUS_DRIVER);
    let lo = dev.features_lo();
    dev.w32(DEVICE_FEATURES_SEL, 1);
    if dev.r32(DEVICE_FEATURES) & 1 == 0 {
        return None;
    }
    dev.w32(DRIVER_FEATURES_SEL, 0);
    dev.w32(DRIVER_FEATURES, lo & keep_lo);
    dev.w32(DRIVER_FEATURES_SEL, 1);
    dev.w32(DRIVER_FEATURES, 1);
    let status = STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK;
    dev.w32(STATUS, status);
    (dev.r32(STATUS) & STATUS_FEATURES_OK != 0).then_some(status)
}

/// Hands queue `index` to the device.
pub fn add_queue(dev: Mmio, index: u32, q: &mut Virtq) -> bool {
    dev.w32(QUEUE_SEL, index);
    if (dev.r32(QUEUE_NUM_MAX) as usize) < QSIZE {
        return false;
    }
    dev.w32(QUEUE_NUM, QSIZE as u32);
    let desc = q.desc.as_ptr() as u64;
    let avail = addr_of_mut!(q.avail_flags) as u64;
    let used = addr_of_mut!(q.used_flags) as u64;
    for (off, addr) in [(QUEUE_DESC, desc), (QUEUE_DRIVER, avail), (QUEUE_DEVICE, used)] {
        dev.w32(off, addr as u32);
        dev.w32(off + 4, (addr >> 32) as u32);
    }
    dev.w32(QUEUE_READY, 1);
    true
}

/// Tells the device the driver is ready.
pub fn driver_ok(dev: Mmio, status: u32) {
    dev.w32(STATUS, status | STATUS_DRIVER_OK);
}

/// Tells the device that queue `index` has new buffers.
pub fn notify(dev: Mmio, index: u32) {
    dev.w32(QUEUE_NOTIFY, index);
}

/// A block device's queue and its one request's buffers.
#[repr(C, align(4096))]
struct BlockSlot {
    q: Virtq,
    header: [u64; 2],
    data: [u8; 512],
    status: u8,
}

const MAX_BLOCK: usize = 8;
const EMPTY_SLOT: BlockSlot = BlockSlot { q: EMPTY_VIRTQ, header: [0; 2], data: [0; 512], status: 0 };

static mut SLOTS: [BlockSlot; MAX_BLOCK] = [EMPTY_SLOT; MAX_BLOCK];
static mut READY: [bool; MAX_BLOCK] = [false; MAX_BLOCK];

/// Outcome of one block request.
pub enum BlockResult {
    Ok,
    IoErr,
    Unsupported,
    DeviceFailed,
    Timeout,
}

impl BlockResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            BlockResult::Ok => "ok",
            BlockResult::IoErr => "ioerr",
            BlockResult::Unsupported => "unsupported",
            BlockResult::DeviceFailed => "init-failed",
            BlockResult::Timeout => "timeout",
        }
    }
}

fn init_block(dev: Mmio, slot: usize) -> bool {
    // SAFETY: single-threaded guest; slots are only touched here and in `block_io`.
    let ready = unsafe { &mut *addr_of_mut!(READY) };
    if ready[slot] {
        return true;
    }
    let Some(status) = negotiate(dev, F_BIT5) else { return false };
    // SAFETY: see above.
    let q = unsafe { &mut (*addr_of_mut!(SLOTS))[slot].q };
    if !add_queue(dev, 0, q) {
        return false;
    }
    driver_ok(dev, status);
    ready[slot] = true;
    true
}

/// Reads (`write == false`) or writes one 512-byte sector through queue 0, polling the used ring.
pub fn block_io(dev: Mmio, slot: usize, sector: u64, write: bool, buf: &mut [u8; 512]) -> BlockResult {
    if slot >= MAX_BLOCK || !init_block(dev, slot) {
        return BlockResult::DeviceFailed;
    }
    // SAFETY: see init_block.
    let s = unsafe { &mut (*addr_of_mut!(SLOTS))[slot] };
    s.header = [if write { 1 } else { 0 }, sector];
    if write {
        s.data = *buf;
    }
    s.status = 0xff;
    s.q.desc[0] = Desc { addr: s.header.as_ptr() as u64, len: 16, flags: DESC_NEXT, next: 1 };
    let data_flags = if write { DESC_NEXT } else { DESC_NEXT | DESC_WRITE };
    s.q.desc[1] = Desc { addr: s.data.as_ptr() as u64, len: 512, flags: data_flags, next: 2 };
    s.q.desc[2] = Desc { addr: addr_of_mut!(s.status) as u64, len: 1, flags: DESC_WRITE, next: 0 };
    let used_before = s.q.used();
    s.q.offer(0);
    notify(dev, 0);
    let mut spins: u64 = 0;
    while s.q.used() == used_before {
        spins += 1;
        if spins > 2_000_000_000 {
            return BlockResult::Timeout;
        }
        core::hint::spin_loop();
    }
    fence(Ordering::SeqCst);
    // SAFETY: written by the device before it advanced the used index.
    match unsafe { read_volatile(addr_of_mut!(s.status)) } {
        0 => {
            if !write {
                *buf = s.data;
            }
            BlockResult::Ok
        }
        1 => BlockResult::IoErr,
        _ => BlockResult::Unsupported,
    }
}
