//! Packet I/O backends. The only layer allowed `unsafe`, each block with a `// SAFETY:` comment.
//!
//! Every backend is batch-oriented ([`PacketIo`]): frames are received a batch at a time into
//! preallocated buffers ([`Batch`]), transmitted frames are queued and handed to the kernel with
//! one flush per batch. Backends:
//! - [`afpacket`]: AF_PACKET sockets, a TPACKET_V3 mmap RX ring in a PACKET_FANOUT_HASH group per
//!   interface and a TPACKET_V2 mmap TX ring with PACKET_QDISC_BYPASS.
//! - [`memio`]: an in-memory backend for tests.
//!
//! [`mem`] holds memory advice for the dataplane's large tables (huge pages); [`prefetch`] the
//! cache hint the batched lookups use.
//! - [`pcap`]: a wrapper that writes every received and transmitted frame to a classic pcap file.
//!
//! [`tcpprobe`] holds the real TCP clients and servers of the live SNAT benchmark.
//!
//! [`neigh`] keeps a lock-free snapshot of the kernel's neighbour table; [`runtime`] runs the
//! worker threads (one `Worker` each), with SPSC hand-off of return traffic between workers.
#![allow(unsafe_code)]

pub mod afpacket;
pub mod caps;
mod csum;
pub mod mem;
pub mod memio;
pub mod neigh;
pub mod netns;
pub mod pcap;
pub mod prefetch;
pub mod runtime;
pub mod steer;
pub mod tcpprobe;

use std::io;

use crate::datapath::IfaceId;

/// Size of one frame buffer: room for a 1518-byte tagged frame and for replies built in place.
pub const BUF_SIZE: usize = 2048;

/// Preallocated receive buffers for one batch: no allocation per packet.
#[derive(Debug)]
pub struct Batch {
    slab: Vec<u8>,
    lens: Vec<usize>,
    ifs: Vec<IfaceId>,
    n: usize,
}

impl Batch {
    /// A batch of `cap` buffers of [`BUF_SIZE`] bytes.
    pub fn new(cap: usize) -> Self {
        Batch {
            slab: vec![0; cap * BUF_SIZE],
            lens: vec![0; cap],
            ifs: vec![0; cap],
            n: 0,
        }
    }

    /// How many buffers the batch has.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Number of frames received into the batch.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when no frame is in the batch.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// True when every buffer holds a frame.
    pub fn is_full(&self) -> bool {
        self.n == self.lens.len()
    }

    /// Forgets the frames (keeps the buffers).
    pub fn clear(&mut self) {
        self.n = 0;
    }

    /// Appends a frame (truncated to [`BUF_SIZE`]); false when the batch is full.
    pub fn push(&mut self, rx_if: IfaceId, frame: &[u8]) -> bool {
        self.push_with(rx_if, |buf| {
            let n = frame.len().min(buf.len());
            buf[..n].copy_from_slice(&frame[..n]);
            n
        })
    }

    /// Appends a frame written by `fill` into the next buffer (it returns the frame length).
    pub fn push_with(&mut self, rx_if: IfaceId, fill: impl FnOnce(&mut [u8]) -> usize) -> bool {
        if self.is_full() {
            return false;
        }
        let i = self.n;
        let buf = &mut self.slab[i * BUF_SIZE..(i + 1) * BUF_SIZE];
        let len = fill(buf).min(BUF_SIZE);
        self.lens[i] = len;
        self.ifs[i] = rx_if;
        self.n += 1;
        true
    }

    /// Frame `i`: (rx interface, whole buffer, frame length).
    pub fn get_mut(&mut self, i: usize) -> (IfaceId, &mut [u8], usize) {
        let buf = &mut self.slab[i * BUF_SIZE..(i + 1) * BUF_SIZE];
        (self.ifs[i], buf, self.lens[i])
    }

    /// Frame `i` as received.
    pub fn frame(&self, i: usize) -> (IfaceId, &[u8]) {
        (
            self.ifs[i],
            &self.slab[i * BUF_SIZE..i * BUF_SIZE + self.lens[i]],
        )
    }
}

/// Counters a backend keeps about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Frames larger than a buffer or cut by the ring and not recovered in full: not forwarded.
    pub rx_oversize: u64,
    /// GSO/GRO super-frames received whole (counted once each, not per segment).
    pub rx_gso: u64,
    /// Super-frames handed to the kernel whole, with their GSO metadata (it or the NIC cuts them).
    pub tx_gso: u64,
    /// Super-frames cut into segments in software (to fit a hand-off or hold slot, or for an
    /// egress that cannot take them).
    pub gso_segmented: u64,
    /// Frames whose checksum the kernel left to offload (fixed in software before processing).
    pub rx_csum_fixed: u64,
    /// Frames the kernel dropped because the RX ring was full (PACKET_STATISTICS).
    pub rx_ring_drops: u64,
    /// Frames not sent because the TX ring was full.
    pub tx_ring_full: u64,
    /// Frames the kernel refused (TP_STATUS_WRONG_FORMAT) or send errors.
    pub tx_errors: u64,
    /// Errors the kernel reported on a ring socket, link down (ENETDOWN) above all: read and
    /// cleared, so a worker sleeps again instead of spinning on them. The rings carry on when
    /// the link comes back.
    pub link_errors: u64,
}

/// Reads and clears a socket's pending error (SO_ERROR): 0 when there is none.
fn take_socket_error(fd: std::os::fd::RawFd) -> io::Result<libc::c_int> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are live and `len` holds err's size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(err)
}

/// A batch-oriented packet I/O backend for one worker.
pub trait PacketIo: Send {
    /// Receives frames into `batch` (appending until it is full or nothing is ready) without
    /// blocking; returns how many were added.
    fn rx_batch(&mut self, batch: &mut Batch) -> io::Result<usize>;
    /// Queues `frame` for transmission on `tx_if`; false when the queue is full (the frame is
    /// dropped and counted).
    fn tx_push(&mut self, tx_if: IfaceId, frame: &[u8]) -> bool;
    /// Hands every queued frame to the kernel: at most one system call per interface.
    fn tx_flush(&mut self) -> io::Result<()>;
    /// Waits up to `timeout_ms` for frames to become readable (or for `extra_fd` to become
    /// readable, if given, e.g. a hand-off eventfd).
    fn wait(&mut self, timeout_ms: i32, extra_fd: Option<i32>) -> io::Result<()>;
    /// Whether a frame is ready to be received, checked without a system call where the
    /// backend can (busy polling calls it in a loop). The default, true, makes the caller
    /// simply try [`PacketIo::rx_batch`] again.
    fn rx_ready(&self) -> bool {
        true
    }
    /// The backend's own counters, summed over its interfaces.
    fn stats(&self) -> IoStats;
    /// The counters of one interface (`IoStats::default()` when the backend does not keep
    /// them apart). Called between batches to publish them live, never per packet.
    fn iface_stats(&self, _iface: IfaceId) -> IoStats {
        IoStats::default()
    }
    /// The MAC address of interface `iface` (source MAC of transmitted frames).
    fn mac(&self, iface: IfaceId) -> [u8; 6];
}
