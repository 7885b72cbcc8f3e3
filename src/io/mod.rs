//! Packet I/O backends. The only layer allowed `unsafe`, each block with a `// SAFETY:` comment.
//!
//! Every backend is batch-oriented ([`PacketIo`]): frames are received a batch at a time into
//! preallocated buffers ([`Batch`]), transmitted frames are queued and handed to the kernel with
//! one flush per batch. Backends:
//! - [`afpacket`]: AF_PACKET sockets, a TPACKET_V3 mmap RX ring in a PACKET_FANOUT_HASH group per
//!   interface and a TPACKET_V2 mmap TX ring with PACKET_QDISC_BYPASS.
//! - the `af_xdp` backend: the same, but receiving through AF_XDP sockets ([`afxdp`]) that the
//!   XDP program ([`xdp`]) feeds; transmission stays on the AF_PACKET TX ring.
//! - [`memio`]: an in-memory backend for tests.
//!
//! [`mem`] holds memory advice for the dataplane's large tables (huge pages); [`prefetch`] the
//! cache hint the batched lookups use.
//! - [`pcap`]: a wrapper that writes every received and transmitted frame to a classic pcap file.
//!
//! [`dnssock`] holds the socket calls of the control plane's resolver (a bound TCP socket reused
//! across connections). The live benchmark's TCP clients and servers are in the `tollgate-lab`
//! crate (`lab/`), not in the appliance.
//!
//! [`neigh`] keeps a lock-free snapshot of the kernel's neighbour table; [`runtime`] runs the
//! worker threads (one `Worker` each), with SPSC hand-off of return traffic between workers.
//!
//! Nothing here writes to stderr or logs: what the operator must hear of goes to
//! [`IoNotices`], which the control plane logs.
#![allow(unsafe_code)]

pub mod afpacket;
pub mod afxdp;
pub mod caps;
mod csum;
pub mod dnssock;
pub mod mem;
pub mod memio;
pub mod neigh;
pub mod netns;
mod notices;
pub mod pcap;
pub mod prefetch;
pub mod runtime;
pub mod steer;
pub mod xdp;

use std::io;

pub use notices::IoNotices;

use crate::datapath::IfaceId;
use crate::wire::gso::Offload;

/// Which packet I/O the workers use (`[appliance] backend`, `tollgate run --backend`,
/// `TOLLGATE_BACKEND`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// AF_XDP where the XDP program attaches to every data interface and their drivers give
    /// AF_XDP sockets zero-copy, else AF_PACKET; the daemon says at start which it took and
    /// why.
    #[default]
    Auto,
    /// AF_XDP or nothing: the daemon fails to start when the program does not attach.
    AfXdp,
    /// AF_PACKET rings with the `netdev` ingress drop.
    AfPacket,
}

impl Backend {
    /// From its configuration name.
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "auto" => Some(Backend::Auto),
            "af_xdp" => Some(Backend::AfXdp),
            "af_packet" => Some(Backend::AfPacket),
            _ => None,
        }
    }

    /// Its configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::AfXdp => "af_xdp",
            Backend::AfPacket => "af_packet",
        }
    }
}

/// Size of one frame buffer: room for a 1518-byte tagged frame and for replies built in place.
pub const BUF_SIZE: usize = 2048;

/// Size of a buffer for a GSO/GRO super-frame: the largest IPv4 packet (65,535 bytes) with its
/// Ethernet header and a VLAN tag, rounded up.
pub const BIG_BUF_SIZE: usize = 65_536 + 512;

/// Super-frame buffers per batch. A batch that has used them all takes no further super-frame
/// (it waits for the next batch), so this bounds memory (8 x 66 KiB per worker), not throughput.
pub const BIG_SLOTS: usize = 8;

/// Preallocated receive buffers for one batch: no allocation per packet. Ordinary frames go to
/// [`BUF_SIZE`] buffers, super-frames to one of [`BIG_SLOTS`] buffers of [`BIG_BUF_SIZE`].
#[derive(Debug)]
pub struct Batch {
    slab: Vec<u8>,
    big: Vec<u8>,
    lens: Vec<usize>,
    ifs: Vec<IfaceId>,
    offloads: Vec<Offload>,
    /// Per frame: its big buffer, or `NO_BIG` when it is in `slab[i]`.
    big_of: Vec<u8>,
    n: usize,
    big_used: usize,
}

const NO_BIG: u8 = u8::MAX;

impl Batch {
    /// A batch of `cap` buffers of [`BUF_SIZE`] bytes (and [`BIG_SLOTS`] big ones).
    pub fn new(cap: usize) -> Self {
        Batch {
            slab: vec![0; cap * BUF_SIZE],
            big: vec![0; BIG_SLOTS * BIG_BUF_SIZE],
            lens: vec![0; cap],
            ifs: vec![0; cap],
            offloads: vec![Offload::NONE; cap],
            big_of: vec![NO_BIG; cap],
            n: 0,
            big_used: 0,
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

    /// True when a super-frame can still be added.
    pub fn has_big(&self) -> bool {
        !self.is_full() && self.big_used < BIG_SLOTS
    }

    /// Forgets the frames (keeps the buffers).
    pub fn clear(&mut self) {
        self.n = 0;
        self.big_used = 0;
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
        self.push_offload(rx_if, Offload::NONE, false, |b| Some(fill(b))) == Some(true)
    }

    /// Appends a frame with its offload metadata, written by `fill` into a [`BUF_SIZE`] buffer
    /// or, with `big`, a [`BIG_BUF_SIZE`] one. `fill` returns the frame length, or None to add
    /// nothing. None when no buffer of that size is left; Some(false) when `fill` said None.
    pub fn push_offload(
        &mut self,
        rx_if: IfaceId,
        offload: Offload,
        big: bool,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<bool> {
        if self.is_full() || (big && self.big_used >= BIG_SLOTS) {
            return None;
        }
        let i = self.n;
        let (buf, which) = if big {
            let k = self.big_used;
            (
                &mut self.big[k * BIG_BUF_SIZE..(k + 1) * BIG_BUF_SIZE],
                k as u8,
            )
        } else {
            (&mut self.slab[i * BUF_SIZE..(i + 1) * BUF_SIZE], NO_BIG)
        };
        let cap = buf.len();
        let Some(len) = fill(buf) else {
            return Some(false);
        };
        self.lens[i] = len.min(cap);
        self.ifs[i] = rx_if;
        self.offloads[i] = offload;
        self.big_of[i] = which;
        if big {
            self.big_used += 1;
        }
        self.n += 1;
        Some(true)
    }

    fn range(&self, i: usize) -> std::ops::Range<usize> {
        match self.big_of[i] {
            NO_BIG => i * BUF_SIZE..(i + 1) * BUF_SIZE,
            k => usize::from(k) * BIG_BUF_SIZE..(usize::from(k) + 1) * BIG_BUF_SIZE,
        }
    }

    /// Frame `i`: (rx interface, whole buffer, frame length).
    pub fn get_mut(&mut self, i: usize) -> (IfaceId, &mut [u8], usize) {
        let r = self.range(i);
        let buf = if self.big_of[i] == NO_BIG {
            &mut self.slab[r]
        } else {
            &mut self.big[r]
        };
        (self.ifs[i], buf, self.lens[i])
    }

    /// Frame `i`'s offload metadata.
    pub fn offload(&self, i: usize) -> Offload {
        self.offloads[i]
    }

    /// Frame `i` as received.
    pub fn frame(&self, i: usize) -> (IfaceId, &[u8]) {
        let r = self.range(i);
        let buf = if self.big_of[i] == NO_BIG {
            &self.slab[r]
        } else {
            &self.big[r]
        };
        (self.ifs[i], &buf[..self.lens[i]])
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
    /// Frames the XDP program had for a worker but that arrived on a receive queue with no
    /// AF_XDP socket (af_xdp backend): dropped.
    pub xdp_no_socket: u64,
    /// Errors the kernel reported on a ring socket, link down (ENETDOWN) above all: read and
    /// cleared, so a worker sleeps again instead of spinning on them. The rings carry on when
    /// the link comes back.
    pub link_errors: u64,
}

impl IoStats {
    /// How many counters an `IoStats` has: the length of [`IoStats::FIELDS`] and of
    /// [`IoStats::values`].
    pub const COUNT: usize = 10;

    /// Every counter's name and a one-line description, in the order of [`IoStats::values`]:
    /// the one list the exit summary, `tollgate stats` and `/metrics`
    /// (`tollgate_io_<name>_total{interface}`) iterate, so a new counter shows everywhere. A
    /// field added to the struct without an entry here does not compile (`values` destructures
    /// the struct whole into an array of [`IoStats::COUNT`], `from_values` builds it whole).
    pub const FIELDS: [(&'static str, &'static str); Self::COUNT] = [
        (
            "rx_oversize",
            "Received frames dropped because they did not fit a receive buffer (larger than the appliance takes, or cut by the ring).",
        ),
        (
            "rx_gso",
            "GSO/GRO super-frames received whole (counted once each, not per segment).",
        ),
        (
            "tx_gso",
            "Super-frames handed to the kernel whole, with their GSO metadata.",
        ),
        (
            "gso_segmented",
            "Super-frames cut into segments in software.",
        ),
        (
            "rx_csum_fixed",
            "Received frames whose checksum the kernel left to offload, completed in software.",
        ),
        (
            "rx_ring_drops",
            "Frames the kernel dropped because the receive ring was full.",
        ),
        (
            "tx_ring_full",
            "Frames not sent because the transmit ring was full.",
        ),
        (
            "tx_errors",
            "Frames the kernel refused or that could not be sent (above the device MTU, send errors).",
        ),
        (
            "xdp_no_socket",
            "Frames for a worker that arrived on a receive queue without an AF_XDP socket (af_xdp backend), dropped by the XDP program.",
        ),
        (
            "link_errors",
            "Errors the kernel reported on a ring socket (the link down, above all).",
        ),
    ];

    /// The counters in the order of [`IoStats::FIELDS`].
    pub fn values(&self) -> [u64; Self::COUNT] {
        let IoStats {
            rx_oversize,
            rx_gso,
            tx_gso,
            gso_segmented,
            rx_csum_fixed,
            rx_ring_drops,
            tx_ring_full,
            tx_errors,
            xdp_no_socket,
            link_errors,
        } = *self;
        [
            rx_oversize,
            rx_gso,
            tx_gso,
            gso_segmented,
            rx_csum_fixed,
            rx_ring_drops,
            tx_ring_full,
            tx_errors,
            xdp_no_socket,
            link_errors,
        ]
    }

    /// The inverse of [`IoStats::values`].
    pub fn from_values(v: [u64; Self::COUNT]) -> Self {
        IoStats {
            rx_oversize: v[0],
            rx_gso: v[1],
            tx_gso: v[2],
            gso_segmented: v[3],
            rx_csum_fixed: v[4],
            rx_ring_drops: v[5],
            tx_ring_full: v[6],
            tx_errors: v[7],
            xdp_no_socket: v[8],
            link_errors: v[9],
        }
    }

    /// Adds `o`'s counters to these (wrapping, like the kernel's).
    pub fn add(&mut self, o: &IoStats) {
        let (a, b) = (self.values(), o.values());
        *self = IoStats::from_values(std::array::from_fn(|i| a[i].wrapping_add(b[i])));
    }

    /// (name, value) of every counter, in the order of [`IoStats::FIELDS`].
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> {
        Self::FIELDS
            .iter()
            .zip(self.values())
            .map(|(&(name, _), v)| (name, v))
    }
}

/// Raises the soft limit on open descriptors to at least `want` (up to the hard limit);
/// returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a live rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if r.rlim_cur >= want {
        return Ok(r.rlim_cur);
    }
    r.rlim_cur = want.min(r.rlim_max);
    // SAFETY: `r` is a valid rlimit with rlim_cur <= rlim_max.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r.rlim_cur)
}

/// Reads and clears a socket's pending error (SO_ERROR): 0 when there is none.
pub fn take_socket_error(fd: std::os::fd::RawFd) -> io::Result<libc::c_int> {
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

/// Sends `frame` through `io.tx_push` with its offload done in software: a partial checksum
/// completed, a super-frame cut into its segments. False when anything was not queued (or the
/// super-frame is malformed: counted in `tx_errors` by the caller's backend only if it sends).
pub fn gso_fallback<B: PacketIo + ?Sized>(
    io: &mut B,
    tx_if: IfaceId,
    frame: &mut [u8],
    offload: &Offload,
) -> bool {
    if offload.is_gso() {
        let mut scratch = [0u8; BUF_SIZE];
        let mut ok = true;
        let r = crate::wire::gso::segment(frame, offload, &mut scratch, |seg| {
            ok &= io.tx_push(tx_if, seg);
        });
        io.count_segmented(tx_if);
        return ok && r.is_ok();
    }
    if offload.csum_partial && !crate::wire::gso::complete_checksum(frame, offload) {
        return false;
    }
    io.tx_push(tx_if, frame)
}

/// A batch-oriented packet I/O backend for one worker.
pub trait PacketIo: Send {
    /// Receives frames into `batch` (appending until it is full or nothing is ready) without
    /// blocking; returns how many were added.
    fn rx_batch(&mut self, batch: &mut Batch) -> io::Result<usize>;
    /// Queues `frame` for transmission on `tx_if`; false when the queue is full (the frame is
    /// dropped and counted).
    fn tx_push(&mut self, tx_if: IfaceId, frame: &[u8]) -> bool;
    /// Queues `frame` with its offload metadata: a partial checksum left for the kernel or NIC
    /// to complete, a super-frame for it to cut. The default completes the checksum or cuts the
    /// super-frame in software ([`gso_fallback`]) and queues the result with
    /// [`PacketIo::tx_push`]; true when every frame was queued.
    fn tx_push_offload(&mut self, tx_if: IfaceId, frame: &mut [u8], offload: &Offload) -> bool {
        gso_fallback(self, tx_if, frame, offload)
    }
    /// Counts a super-frame of interface `iface` cut in software (`gso_segmented`).
    fn count_segmented(&mut self, _iface: IfaceId) {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stats_fields_values_and_sums_agree() {
        let v: [u64; IoStats::COUNT] = std::array::from_fn(|i| i as u64 + 1);
        let s = IoStats::from_values(v);
        assert_eq!(s.values(), v);
        assert_eq!(s.rx_oversize, 1);
        assert_eq!(s.link_errors, IoStats::COUNT as u64);
        // the names are the field names, in order, and unique
        let names: Vec<&str> = s.named().map(|(n, _)| n).collect();
        assert_eq!(names[0], "rx_oversize");
        assert_eq!(names[IoStats::COUNT - 1], "link_errors");
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), IoStats::COUNT);
        assert!(IoStats::FIELDS.iter().all(|(_, help)| !help.is_empty()));
        let mut t = s;
        t.add(&s);
        assert_eq!(t.values(), v.map(|x| 2 * x));
        assert_eq!(
            std::mem::size_of::<IoStats>(),
            IoStats::COUNT * 8,
            "every field is a listed u64 counter"
        );
    }
}
