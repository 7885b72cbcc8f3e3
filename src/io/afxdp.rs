//! AF_XDP receive sockets (XSK): the receive side of the `af_xdp` backend.
//!
//! One socket per (worker, interface, receive queue the worker owns), each with its own UMEM
//! of [`FRAMES`] chunks of [`CHUNK`] bytes, a fill ring holding every chunk the kernel may
//! write into and an RX ring of received descriptors. The XDP program ([`super::xdp`])
//! redirects the frames meant for the workers to the socket of the frame's receive queue.
//!
//! A frame sent by a local stack over veth reaches XDP with its TCP/UDP checksum left to
//! offload, and nothing in XDP says so: [`super::csum::fix_if_partial`] recognises that form
//! (the folded pseudo-header sum) and completes it (`rx_csum_fixed`); a NIC's frames never
//! have it.
//!
//! Reading copies each frame into the worker's [`Batch`] (as the AF_PACKET rings do) and hands
//! its chunk straight back to the fill ring, so the kernel never runs out of chunks while the
//! worker keeps up. When it does not, the kernel drops at the socket (`rx_queue_full`,
//! counted in `rx_ring_drops`) after the XDP program ran, before any skb exists: the cheapest
//! drop the host has.
//!
//! The bind asks for zero-copy and the kernel falls back to copy mode where the driver cannot
//! (veth, and generic XDP): [`Xsk::zerocopy`] says which. `XDP_USE_NEED_WAKEUP` is set, so a
//! driver that needs a kick to refill gets one (a `recvfrom` when the fill ring's flag says so)
//! and no system call is made otherwise. Transmission stays on the AF_PACKET TX ring
//! ([`super::afpacket`]), which takes super-frames whole with their GSO metadata: an XSK TX ring
//! has no GSO, and on veth its copy mode builds the same skb an AF_PACKET send does.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Batch, IoStats, BUF_SIZE};
use crate::datapath::IfaceId;

/// UMEM chunk size: a 1518-byte frame after the kernel's 256 bytes of XDP headroom.
pub const CHUNK: u32 = 2048;
/// UMEM chunks per socket (4 MiB): all of them sit in the fill ring when the worker is idle.
pub const FRAMES: u32 = 2048;
/// RX ring descriptors.
const RX_SIZE: u32 = 1024;
/// The fill ring holds every chunk.
const FILL_SIZE: u32 = FRAMES;
/// The completion ring is required by the kernel even with no TX ring.
const COMP_SIZE: u32 = 64;

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

/// An mmap'ed region, unmapped on drop.
#[derive(Debug)]
struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    fn map(fd: RawFd, len: usize, offset: i64, anon: bool) -> io::Result<Region> {
        let (flags, fd) = if anon {
            (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            )
        } else {
            (libc::MAP_SHARED | libc::MAP_POPULATE, fd)
        };
        // SAFETY: a fresh mapping of `len` bytes that nothing else refers to; the kernel
        // validates `fd` and `offset`, and failure is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(last_err());
        }
        Ok(Region {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`, unmapped only here.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A single-producer single-consumer ring shared with the kernel.
#[derive(Debug)]
struct Ring {
    region: Region,
    producer: usize,
    consumer: usize,
    flags: usize,
    desc: usize,
    mask: u32,
}

impl Ring {
    fn map(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        elem: usize,
        pgoff: i64,
    ) -> io::Result<Ring> {
        let len = off.desc as usize + size as usize * elem;
        Ok(Ring {
            region: Region::map(fd, len, pgoff, false)?,
            producer: off.producer as usize,
            consumer: off.consumer as usize,
            flags: off.flags as usize,
            desc: off.desc as usize,
            mask: size - 1,
        })
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is one of the kernel-given offsets of a 4-byte aligned u32 inside the
        // mapping, which lives as long as `self`; the kernel writes it concurrently, hence the
        // atomic.
        unsafe { &*(self.region.ptr.add(off) as *const AtomicU32) }
    }

    fn producer(&self) -> &AtomicU32 {
        self.word(self.producer)
    }

    fn consumer(&self) -> &AtomicU32 {
        self.word(self.consumer)
    }

    fn needs_wakeup(&self) -> bool {
        self.word(self.flags).load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// The address of element `i` (masked) of elements of `elem` bytes.
    fn elem(&self, i: u32, elem: usize) -> *mut u8 {
        // SAFETY: (i & mask) < size, and the mapping holds `size` elements after `desc`.
        unsafe {
            self.region
                .ptr
                .add(self.desc + (i & self.mask) as usize * elem)
        }
    }
}

/// An XDP socket option (the AF_PACKET backend's setter at level SOL_XDP).
fn sockopt<T>(fd: RawFd, name: libc::c_int, val: &T) -> io::Result<()> {
    super::afpacket::setsockopt(fd, libc::SOL_XDP, name, val)
}

fn getsockopt<T>(fd: RawFd, name: libc::c_int) -> io::Result<T> {
    // SAFETY: every type read here (kernel uapi structs of integers) is valid zeroed.
    let mut v: T = unsafe { zeroed() };
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a live, exclusively borrowed `T` of `len` bytes for the kernel to fill.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_XDP, name, (&mut v as *mut T).cast(), &mut len) };
    if rc < 0 {
        return Err(last_err());
    }
    Ok(v)
}

/// One AF_XDP socket, receive only.
#[derive(Debug)]
pub struct Xsk {
    // Field order is drop order: the rings and the UMEM are unmapped before the socket closes.
    rx: Ring,
    fill: Ring,
    umem: Region,
    fd: OwnedFd,
    /// Our copies of the RX consumer and fill producer indexes (we alone write them).
    rx_cons: u32,
    fill_prod: u32,
    /// The receive queue the socket is bound to.
    pub queue: u32,
    /// True when the driver moves frames into the UMEM itself (zero-copy).
    pub zerocopy: bool,
    drops_seen: std::cell::Cell<u64>,
}

// SAFETY: the mappings are owned by this value alone; moving it moves that ownership.
unsafe impl Send for Xsk {}

impl Xsk {
    /// A socket bound to `queue` of interface `ifindex`, its fill ring full.
    pub fn open(ifindex: u32, queue: u32) -> io::Result<Xsk> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(last_err());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let raw = fd.as_raw_fd();
        let umem = Region::map(-1, (FRAMES * CHUNK) as usize, 0, true)?;
        // SAFETY: a zeroed uapi struct of integers is valid.
        let mut reg: libc::xdp_umem_reg = unsafe { zeroed() };
        reg.addr = umem.ptr as u64;
        reg.len = umem.len as u64;
        reg.chunk_size = CHUNK;
        sockopt(raw, libc::XDP_UMEM_REG, &reg)
            .map_err(|e| io::Error::new(e.kind(), format!("XDP_UMEM_REG: {e}")))?;
        sockopt(raw, libc::XDP_UMEM_FILL_RING, &FILL_SIZE)?;
        sockopt(raw, libc::XDP_UMEM_COMPLETION_RING, &COMP_SIZE)?;
        sockopt(raw, libc::XDP_RX_RING, &RX_SIZE)?;
        let off: libc::xdp_mmap_offsets = getsockopt(raw, libc::XDP_MMAP_OFFSETS)?;
        let rx = Ring::map(
            raw,
            &off.rx,
            RX_SIZE,
            size_of::<libc::xdp_desc>(),
            libc::XDP_PGOFF_RX_RING,
        )?;
        let fill = Ring::map(
            raw,
            &off.fr,
            FILL_SIZE,
            size_of::<u64>(),
            libc::XDP_UMEM_PGOFF_FILL_RING as i64,
        )?;
        let mut x = Xsk {
            rx,
            fill,
            umem,
            fd,
            rx_cons: 0,
            fill_prod: 0,
            queue,
            zerocopy: false,
            drops_seen: std::cell::Cell::new(0),
        };
        x.rx_cons = x.rx.consumer().load(Ordering::Relaxed);
        x.fill_prod = x.fill.producer().load(Ordering::Relaxed);
        for i in 0..FRAMES {
            x.give(u64::from(i * CHUNK));
        }
        x.fill.producer().store(x.fill_prod, Ordering::Release);
        // SAFETY: a zeroed sockaddr_xdp is valid; every field the kernel reads is set.
        let mut sa: libc::sockaddr_xdp = unsafe { zeroed() };
        sa.sxdp_family = libc::AF_XDP as u16;
        sa.sxdp_flags = libc::XDP_USE_NEED_WAKEUP;
        sa.sxdp_ifindex = ifindex;
        sa.sxdp_queue_id = queue;
        // SAFETY: `sa` is a live sockaddr_xdp whose exact size is passed.
        let rc = unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = last_err();
            return Err(io::Error::new(
                e.kind(),
                format!("bind to queue {queue}: {e}"),
            ));
        }
        let o: libc::xdp_options = getsockopt(raw, libc::XDP_OPTIONS)?;
        x.zerocopy = o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0;
        Ok(x)
    }

    /// The socket, for poll(2) and the XDP program's map.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Puts chunk `addr` in the fill ring (published by the caller's producer store).
    fn give(&mut self, addr: u64) {
        let p = self.fill.elem(self.fill_prod, size_of::<u64>()) as *mut u64;
        // SAFETY: the fill ring holds every chunk, so slot `fill_prod` is free (the kernel has
        // consumed it before handing its chunk back through the RX ring); `p` is 8-aligned.
        unsafe { p.write(addr) };
        self.fill_prod = self.fill_prod.wrapping_add(1);
    }

    /// Whether a received frame is waiting.
    pub fn ready(&self) -> bool {
        self.rx.producer().load(Ordering::Acquire) != self.rx_cons
    }

    /// Copies received frames into `batch` (as interface `iface`) until it is full or the
    /// ring is empty, and hands their chunks back to the kernel. Returns how many.
    pub fn read(&mut self, iface: IfaceId, batch: &mut Batch, stats: &mut IoStats) -> usize {
        let prod = self.rx.producer().load(Ordering::Acquire);
        let avail = prod.wrapping_sub(self.rx_cons);
        let mut got = 0;
        for _ in 0..avail {
            if batch.is_full() {
                break;
            }
            let d =
                self.rx.elem(self.rx_cons, size_of::<libc::xdp_desc>()) as *const libc::xdp_desc;
            // SAFETY: the slot lies between our consumer and the kernel's producer (read
            // with Acquire above), so the kernel has written it and will not touch it until
            // our consumer store below.
            let desc = unsafe { d.read() };
            let (addr, len) = (desc.addr as usize, desc.len as usize);
            if addr + len <= self.umem.len {
                // SAFETY: the chunk is ours until given back below, and in the UMEM's bounds.
                let frame = unsafe { std::slice::from_raw_parts(self.umem.ptr.add(addr), len) };
                if len > BUF_SIZE {
                    stats.rx_oversize += 1;
                } else if batch.push_with(iface, |buf| {
                    buf[..len].copy_from_slice(frame);
                    if super::csum::fix_if_partial(&mut buf[..len]) {
                        stats.rx_csum_fixed += 1;
                    }
                    len
                }) {
                    got += 1;
                }
            } else {
                stats.rx_oversize += 1;
            }
            self.rx_cons = self.rx_cons.wrapping_add(1);
            self.give(desc.addr & !u64::from(CHUNK - 1));
        }
        if avail > 0 {
            self.rx.consumer().store(self.rx_cons, Ordering::Release);
            self.fill
                .producer()
                .store(self.fill_prod, Ordering::Release);
            if self.fill.needs_wakeup() {
                self.kick();
            }
        }
        got
    }

    /// A zero-length, non-blocking `recvfrom`: the wakeup need_wakeup asks for.
    fn kick(&self) {
        // SAFETY: a zero-length, non-blocking recvfrom on our own socket; it reads nothing
        // into memory.
        unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Frames the kernel dropped at this socket since the last call (its RX ring full, or no
    /// chunk in the fill ring).
    pub fn kernel_drops(&self) -> u64 {
        let Ok(s) = getsockopt::<libc::xdp_statistics>(self.fd(), libc::XDP_STATISTICS) else {
            return 0;
        };
        let total = s.rx_dropped + s.rx_ring_full;
        total.wrapping_sub(self.drops_seen.replace(total))
    }
}
