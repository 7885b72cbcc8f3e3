//! AF_PACKET backend: a TPACKET_V2 (or V3) mmap RX ring per interface, joined to a fanout
//! group per interface (one member per worker: PACKET_FANOUT_HASH, or PACKET_FANOUT_CBPF with
//! the steering program of [`super::steer`]), and a TPACKET_V2 mmap TX ring per interface with
//! PACKET_QDISC_BYPASS and PACKET_VNET_HDR (each frame becomes one linear skb, see
//! [`TxRing`]).
//!
//! TX uses V2 rather than V3: V3's TX ring is frame-based like V2 and brings nothing for
//! sending, while V2's header is the one every kernel since 2.6.27 documents for TX.
//!
//! The RX socket is a tap: the kernel still gets its own copy of every frame (ARP, SSH,
//! ICMP to the appliance). Frames the host sends (PACKET_OUTGOING, including our own TX) are
//! ignored, both by PACKET_IGNORE_OUTGOING and by checking `sll_pkttype`.

use std::cell::Cell;
use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Batch, IoStats, PacketIo, BIG_BUF_SIZE, BUF_SIZE};
use crate::datapath::IfaceId;
use crate::wire::gso::{Gso, Offload};

/// Ring geometry and socket options.
#[derive(Clone, Debug)]
pub struct AfPacketOptions {
    /// RX ring block size (a multiple of the page size).
    pub rx_block_size: u32,
    /// Number of RX blocks.
    pub rx_block_nr: u32,
    /// Milliseconds after which the kernel hands over a partly filled block.
    pub rx_block_timeout_ms: u32,
    /// TX ring frames (each [`TX_FRAME_SIZE`] bytes).
    pub tx_frame_nr: u32,
    /// Send with PACKET_QDISC_BYPASS (straight to the driver).
    pub qdisc_bypass: bool,
    /// Join a PACKET_FANOUT group per interface. With one worker there is nobody to spread
    /// frames over, and leaving the group out saves the kernel a demux (and a flow hash) per
    /// frame.
    pub fanout: bool,
    /// PACKET_FANOUT group id base; interface `i` uses `base + i`.
    pub fanout_base: u16,
    /// TPACKET version of the RX rings.
    pub rx_version: RxRingVersion,
    /// A classic BPF program choosing each frame's worker (PACKET_FANOUT_CBPF, see
    /// [`super::steer`]); None: PACKET_FANOUT_HASH. Workers must join in index order.
    pub steering: Option<Vec<super::steer::Insn>>,
    /// Where link events are told (for the control plane to log; a worker never logs).
    pub notices: super::IoNotices,
    /// Receive through AF_XDP sockets fed by these XDP programs instead of the RX rings (the
    /// `af_xdp` backend); None: the RX rings.
    pub xsk: Option<XskPlan>,
}

/// The `af_xdp` backend's receive side: the XDP program of each interface (index = IfaceId)
/// and how many workers share its receive queues (worker `w` binds queues `w`, `w + workers`,
/// ...).
#[derive(Clone, Debug)]
pub struct XskPlan {
    pub programs: Vec<std::sync::Arc<super::xdp::XdpProgram>>,
    pub workers: usize,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        AfPacketOptions {
            rx_block_size: 1 << 17,
            rx_block_nr: 32,
            rx_block_timeout_ms: 1,
            tx_frame_nr: 512,
            qdisc_bypass: true,
            fanout: true,
            fanout_base: (std::process::id() as u16).wrapping_mul(61),
            rx_version: RxRingVersion::V2,
            steering: None,
            notices: super::IoNotices::default(),
            xsk: None,
        }
    }
}

/// Size of one TX ring frame.
pub const TX_FRAME_SIZE: u32 = 2048;
const ETH_P_ALL: u16 = 0x0003;

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(last_err())
    } else {
        Ok(rc)
    }
}

pub(super) fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` is a valid, initialised `T` for the duration of the call and its exact size
    // is passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    check(rc).map(|_| ())
}

/// The kernel index of interface `name` (in the caller's network namespace).
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::other("interface name contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("interface {name} does not exist"),
        ))
    } else {
        Ok(idx)
    }
}

/// An interface ioctl (`request`: one of the SIOCGIF* reads) on `name`, in the caller's network
/// namespace; the filled `ifreq`.
fn if_ioctl(name: &str, request: libc::c_ulong) -> io::Result<libc::ifreq> {
    // SAFETY: plain socket(2) call; the result is checked and owned right away.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = ifreq_for(name)?;
    // SAFETY: the SIOCGIF* reads take ifr_name and write only inside `req`, which is a valid,
    // exclusively borrowed `ifreq`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut req) })?;
    Ok(req)
}

/// The receive queues of interface `name` in use (ETHTOOL_GCHANNELS: its RX plus combined
/// channels; veth counts RX, most NICs combined), in the caller's network namespace; 1 when the
/// driver does not say.
pub fn rx_queues(name: &str) -> u32 {
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    // struct ethtool_channels: cmd, max_rx, max_tx, max_other, max_combined, rx_count,
    // tx_count, other_count, combined_count
    let mut ch = [0u32; 9];
    ch[0] = ETHTOOL_GCHANNELS;
    let Ok(mut req) = ifreq_for(name) else {
        return 1;
    };
    req.ifr_ifru.ifru_data = ch.as_mut_ptr().cast();
    // SAFETY: plain socket(2) call; the result is checked and owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return 1;
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL with ETHTOOL_GCHANNELS writes one struct ethtool_channels (9 u32) at
    // ifr_data, which points at `ch`, live and exclusively borrowed for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc < 0 {
        return 1;
    }
    (ch[5] + ch[8]).max(1)
}

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::other(format!(
            "interface name {name} is too long"
        )));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

/// The MTU of interface `name` (SIOCGIFMTU, in the caller's network namespace).
pub fn mtu(name: &str) -> io::Result<u32> {
    let req = if_ioctl(name, libc::SIOCGIFMTU)?;
    // SAFETY: after a successful SIOCGIFMTU the union holds `ifru_mtu`.
    let m = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(m.max(0) as u32)
}

/// The MAC address of interface `name` (SIOCGIFHWADDR, in the caller's network namespace).
pub fn hw_addr(name: &str) -> io::Result<[u8; 6]> {
    let req = if_ioctl(name, libc::SIOCGIFHWADDR)?;
    // SAFETY: after a successful SIOCGIFHWADDR the union holds `ifru_hwaddr`.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

/// A shared memory mapping of a packet ring, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize) -> io::Result<Self> {
        // SAFETY: mapping a packet ring the kernel just set up on `fd`, of the size it was
        // configured with; a NULL hint lets the kernel choose the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED | libc::MAP_POPULATE,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            // MAP_LOCKED can fail under RLIMIT_MEMLOCK: retry without it.
            // SAFETY: as above.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    fd,
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(last_err());
            }
            return Ok(Mapping {
                ptr: ptr.cast(),
                len,
            });
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing borrows the mapping past
        // the owner's lifetime.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// Reads a ring status word shared with the kernel.
///
/// # Safety
/// `p` must point to a 4-byte-aligned status word inside a live ring mapping.
unsafe fn status_load(p: *const u32) -> u32 {
    // SAFETY: per the contract `p` is aligned and valid; the kernel writes it concurrently, so
    // it is accessed atomically (an AtomicU32 has the layout of a u32).
    unsafe { (*(p as *const AtomicU32)).load(Ordering::Acquire) }
}

/// Writes a ring status word shared with the kernel.
///
/// # Safety
/// As for [`status_load`].
unsafe fn status_store(p: *mut u32, v: u32) {
    // SAFETY: per the contract `p` is aligned and valid; Release orders our earlier reads or
    // writes of the slot before the kernel sees the new status.
    unsafe { (*(p as *const AtomicU32)).store(v, Ordering::Release) }
}

fn packet_socket(protocol: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked and owned right away.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            protocol.to_be() as libc::c_int,
        )
    })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: RawFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: `sockaddr_ll` is plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_ll = unsafe { zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = protocol.to_be();
    sa.sll_ifindex = ifindex as i32;
    // SAFETY: `sa` is a valid sockaddr_ll and its exact size is passed.
    check(unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// The interface index a packet socket is bound to (getsockname's `sll_ifindex`): -1 once
/// the kernel has unregistered that interface. None if getsockname fails.
fn bound_ifindex(fd: RawFd) -> Option<i32> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value for getsockname to fill.
    let mut sa: libc::sockaddr_ll = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sa` and `len` are live and `len` holds sa's size; the kernel writes at most
    // that many bytes.
    let rc = unsafe { libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_ll).cast(), &mut len) };
    (rc == 0).then_some(sa.sll_ifindex)
}

/// Joins the fanout group `id` (unless `o.fanout` is off): PACKET_FANOUT_HASH, or PACKET_FANOUT_CBPF with
/// `o.steering` as the group's program (every member sets the same one).
fn join_fanout(fd: RawFd, id: u16, o: &AfPacketOptions) -> io::Result<()> {
    if !o.fanout {
        return Ok(());
    }
    let Some(prog) = &o.steering else {
        let fanout: u32 = u32::from(id) | (libc::PACKET_FANOUT_HASH << 16);
        return setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &fanout);
    };
    let fanout: u32 = u32::from(id) | (libc::PACKET_FANOUT_CBPF << 16);
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &fanout)?;
    let mut filter: Vec<libc::sock_filter> = prog
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // The kernel copies the program during the call; `filter` outlives it.
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT_DATA, &fprog)
}

/// One TPACKET_V3 RX ring.
#[derive(Debug)]
struct RxRing {
    map: Mapping,
    fd: OwnedFd,
    block_size: usize,
    block_nr: usize,
    /// Block being read.
    cur: usize,
    /// Packets left in the current block (when `in_block`).
    left: u32,
    /// Offset of the next packet header inside the current block.
    next: usize,
    in_block: bool,
    /// PACKET_VNET_HDR: each frame comes with its offload metadata (see [`enable_rx_vnet`]).
    vnet: bool,
}

/// Asks for a virtio_net_hdr before each received frame (before the ring exists: the kernel
/// refuses it after). It says whether the frame is a GSO super-frame (kind, segment size) and
/// whether its checksum is partial (where the sum starts and goes), so both are passed on to
/// the transmitting side instead of being completed or cut here. With a V2 ring, a frame too
/// long for its slot is also queued whole on the socket (PACKET_COPY_THRESH; the slot says
/// TP_STATUS_COPY), where `deliver` reads it: super-frames of up to 64 KiB without 64 KiB
/// slots. The receive buffer bounds what waits there. False when the kernel refuses the
/// header: frames then come as before (checksums completed in software, super-frames cut and
/// counted as `rx_oversize`).
fn enable_rx_vnet(fd: RawFd, copies: bool) -> bool {
    if setsockopt(fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &1i32).is_err() {
        return false;
    }
    if copies {
        let _ = setsockopt(fd, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, &1i32);
        // Room for about a hundred waiting super-frames (their skbs' truesize counts).
        let size = 16i32 << 20;
        if setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size).is_err() {
            let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &size);
        }
    }
    true
}

impl RxRing {
    fn open(ifindex: u32, fanout_id: u16, o: &AfPacketOptions) -> io::Result<Self> {
        // Protocol 0: receive nothing until bound to the interface below.
        let fd = packet_socket(0)?;
        let raw = fd.as_raw_fd();
        setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &(libc::tpacket_versions::TPACKET_V3 as libc::c_int),
        )?;
        let vnet = enable_rx_vnet(raw, false);
        let req = libc::tpacket_req3 {
            tp_block_size: o.rx_block_size,
            tp_block_nr: o.rx_block_nr,
            tp_frame_size: TX_FRAME_SIZE,
            tp_frame_nr: o.rx_block_size / TX_FRAME_SIZE * o.rx_block_nr,
            tp_retire_blk_tov: o.rx_block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        // Best effort (kernel >= 4.20); sll_pkttype is checked anyway.
        let _ = setsockopt(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1i32);
        let len = o.rx_block_size as usize * o.rx_block_nr as usize;
        let map = Mapping::new(raw, len)?;
        bind(raw, ifindex, ETH_P_ALL)?;
        join_fanout(raw, fanout_id, o)?;
        Ok(RxRing {
            map,
            fd,
            block_size: o.rx_block_size as usize,
            block_nr: o.rx_block_nr as usize,
            cur: 0,
            left: 0,
            next: 0,
            in_block: false,
            vnet,
        })
    }

    fn block(&self) -> *mut libc::tpacket_block_desc {
        // SAFETY: `cur < block_nr`, so the offset stays inside the mapping.
        unsafe { self.map.ptr.add(self.cur * self.block_size).cast() }
    }

    /// Reads frames into `batch` until it is full or the ring has no complete block.
    fn read(&mut self, iface: IfaceId, batch: &mut Batch, stats: &mut IoStats) -> usize {
        let mut got = 0;
        while !batch.is_full() {
            let blk = self.block();
            if !self.in_block {
                // SAFETY: `blk` points to a block descriptor in the live mapping; its
                // block_status is a 4-byte-aligned u32 shared with the kernel.
                let status =
                    unsafe { status_load(std::ptr::addr_of!((*blk).hdr.bh1.block_status)) };
                if status & libc::TP_STATUS_USER == 0 {
                    break;
                }
                // SAFETY: the block belongs to user space now (TP_STATUS_USER was seen with
                // Acquire), so its header is stable.
                let h = unsafe { &(*blk).hdr.bh1 };
                self.left = h.num_pkts;
                self.next = h.offset_to_first_pkt as usize;
                self.in_block = true;
            }
            if self.left == 0 {
                // SAFETY: as above; handing the block back to the kernel with Release.
                unsafe {
                    status_store(
                        std::ptr::addr_of_mut!((*blk).hdr.bh1.block_status),
                        libc::TP_STATUS_KERNEL,
                    )
                };
                self.in_block = false;
                self.cur = (self.cur + 1) % self.block_nr;
                continue;
            }
            if self.next + size_of::<libc::tpacket3_hdr>() > self.block_size {
                // A corrupt offset: give the block back rather than read outside it.
                self.left = 0;
                continue;
            }
            // SAFETY: `next` was checked to leave room for a header inside this block, which
            // user space owns until it is handed back.
            let hdr = unsafe { &*(blk.cast::<u8>().add(self.next) as *const libc::tpacket3_hdr) };
            let sll_off = libc_tpacket_align(size_of::<libc::tpacket3_hdr>());
            // SAFETY: the kernel stores a sockaddr_ll right after the aligned tpacket3_hdr.
            let pkttype = unsafe {
                (*(blk.cast::<u8>().add(self.next + sll_off) as *const libc::sockaddr_ll))
                    .sll_pkttype
            };
            let mac = self.next + hdr.tp_mac as usize;
            let snap = hdr.tp_snaplen as usize;
            let status = hdr.tp_status;
            let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
                let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    hdr.hv1.tp_vlan_tpid
                } else {
                    0x8100
                };
                (tpid, hdr.hv1.tp_vlan_tci as u16)
            });
            if mac + snap <= self.block_size && mac >= VNET_HDR_LEN {
                // SAFETY: `mac + snap` was checked to lie inside this user-owned block, and
                // with a vnet header the kernel wrote it right before the frame.
                let (data, vnet) = unsafe {
                    let base = blk.cast::<u8>();
                    (
                        std::slice::from_raw_parts(base.add(mac), snap),
                        self.vnet.then(|| {
                            parse_vnet(std::slice::from_raw_parts(
                                base.add(mac - VNET_HDR_LEN),
                                VNET_HDR_LEN,
                            ))
                        }),
                    )
                };
                let slot = Slot {
                    data,
                    tp_len: hdr.tp_len,
                    status,
                    vlan,
                    pkttype,
                    vnet,
                };
                match deliver(iface, batch, stats, &slot, self.fd.as_raw_fd()) {
                    Delivered::NoRoom => break,
                    Delivered::Added => got += 1,
                    Delivered::Skipped => {}
                }
            } else {
                stats.rx_oversize += 1;
            }
            self.left -= 1;
            self.next += hdr.tp_next_offset as usize;
        }
        got
    }

    /// Whether a block is being read or the next one is handed over (no system call).
    fn ready(&self) -> bool {
        if self.in_block {
            return true;
        }
        let blk = self.block();
        // SAFETY: `blk` is a block descriptor in the live mapping (see `read`).
        let status = unsafe { status_load(std::ptr::addr_of!((*blk).hdr.bh1.block_status)) };
        status & libc::TP_STATUS_USER != 0
    }

    fn kernel_drops(&self) -> u64 {
        // SAFETY: plain old data; all-zero is valid.
        let mut st: libc::tpacket_stats_v3 = unsafe { zeroed() };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            0
        } else {
            u64::from(st.tp_drops)
        }
    }
}

/// What became of a ring slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivered {
    /// Added to the batch.
    Added,
    /// Not for us (our own transmissions) or counted and dropped: the slot is done.
    Skipped,
    /// The batch has no buffer of the size needed: leave the slot for the next batch.
    NoRoom,
}

/// The virtio_net_hdr (legacy layout, 10 bytes, native byte order) of PACKET_VNET_HDR.
const VNET_HDR_LEN: usize = 10;
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_GSO_NONE: u8 = 0;
const VNET_GSO_TCPV4: u8 = 1;
const VNET_GSO_UDP_L4: u8 = 5;
const VNET_GSO_ECN: u8 = 0x80;

/// Reads a received frame's virtio_net_hdr. A GSO kind the dataplane does not translate (TCPv6,
/// UFO) is reported as none: such a frame is then too long for its egress and dropped there as
/// `frag_needed`, counted.
fn parse_vnet(v: &[u8]) -> Offload {
    let u = |i: usize| u16::from_ne_bytes([v[i], v[i + 1]]);
    let gso = match v[1] & !VNET_GSO_ECN {
        VNET_GSO_TCPV4 => Gso::TcpV4 {
            ecn: v[1] & VNET_GSO_ECN != 0,
        },
        VNET_GSO_UDP_L4 => Gso::UdpL4,
        _ => Gso::None,
    };
    Offload {
        gso,
        gso_size: if gso == Gso::None { 0 } else { u(4) },
        csum_partial: v[0] & VNET_F_NEEDS_CSUM != 0,
        csum_start: u(6),
        csum_offset: u(8),
    }
}

/// The virtio_net_hdr that asks the kernel for `o` on a frame whose headers end at `hdr_len`.
fn emit_vnet(o: &Offload, hdr_len: usize) -> [u8; VNET_HDR_LEN] {
    let mut v = [0u8; VNET_HDR_LEN];
    if o.csum_partial {
        v[0] = VNET_F_NEEDS_CSUM;
        v[6..8].copy_from_slice(&o.csum_start.to_ne_bytes());
        v[8..10].copy_from_slice(&o.csum_offset.to_ne_bytes());
    }
    v[1] = match o.gso {
        Gso::None => VNET_GSO_NONE,
        Gso::TcpV4 { ecn: false } => VNET_GSO_TCPV4,
        Gso::TcpV4 { ecn: true } => VNET_GSO_TCPV4 | VNET_GSO_ECN,
        Gso::UdpL4 => VNET_GSO_UDP_L4,
    };
    if o.is_gso() {
        v[4..6].copy_from_slice(&o.gso_size.to_ne_bytes());
    }
    v[2..4].copy_from_slice(&(hdr_len.min(usize::from(u16::MAX)) as u16).to_ne_bytes());
    v
}

/// How a slot's frame reaches the batch: from the ring (`data`, possibly cut to the slot), or,
/// when the kernel queued a whole copy (TP_STATUS_COPY), from the socket.
struct Slot<'a> {
    data: &'a [u8],
    tp_len: u32,
    status: u32,
    vlan: Option<(u16, u16)>,
    pkttype: u8,
    /// The frame's virtio_net_hdr, when the socket has PACKET_VNET_HDR.
    vnet: Option<Offload>,
}

/// Copies one received frame into the batch (re-inserting a VLAN tag the driver stripped and,
/// without a vnet header, completing an offloaded checksum). A frame the ring cut is read
/// whole from the socket when the kernel queued a copy (`fd`); otherwise it is `rx_oversize`.
fn deliver(
    iface: IfaceId,
    batch: &mut Batch,
    stats: &mut IoStats,
    slot: &Slot<'_>,
    fd: RawFd,
) -> Delivered {
    let data = slot.data;
    let snap = data.len();
    let extra = if slot.vlan.is_some() { 4 } else { 0 };
    let whole = snap >= slot.tp_len as usize;
    let copied = !whole && slot.status & libc::TP_STATUS_COPY != 0;
    if slot.pkttype == libc::PACKET_OUTGOING {
        // our own (or the host's) transmissions: never re-process
        if copied {
            discard_copy(fd);
        }
        return Delivered::Skipped;
    }
    let len = slot.tp_len as usize + extra;
    let big = len > BUF_SIZE;
    if (!whole && !copied) || snap < 14 || len > BIG_BUF_SIZE {
        if copied {
            discard_copy(fd);
        }
        stats.rx_oversize += 1;
        return Delivered::Skipped;
    }
    let mut off = slot.vnet.unwrap_or(Offload::NONE);
    if slot.vlan.is_some() && off.csum_partial {
        off.csum_start = off.csum_start.saturating_add(4);
    }
    let csum = slot.vnet.is_none() && slot.status & libc::TP_STATUS_CSUMNOTREADY != 0;
    let mut lost = false;
    let r = batch.push_offload(iface, off, big, |buf| {
        let n = if copied {
            match recv_copy(fd, buf, slot.tp_len as usize) {
                Some(n) => n,
                None => {
                    lost = true;
                    return None;
                }
            }
        } else {
            buf[..snap].copy_from_slice(data);
            snap
        };
        let n = match slot.vlan {
            Some((tpid, tci)) if n + 4 <= buf.len() => {
                buf.copy_within(12..n, 16);
                buf[12..14].copy_from_slice(&tpid.to_be_bytes());
                buf[14..16].copy_from_slice(&tci.to_be_bytes());
                n + 4
            }
            _ => n,
        };
        if csum && super::csum::fix_l4_checksum(&mut buf[..n]) {
            stats.rx_csum_fixed += 1;
        }
        Some(n)
    });
    match r {
        None => Delivered::NoRoom,
        Some(false) => {
            if lost {
                stats.rx_oversize += 1;
            }
            Delivered::Skipped
        }
        Some(true) => {
            if off.is_gso() {
                stats.rx_gso += 1;
            }
            Delivered::Added
        }
    }
}

/// Drops the next frame the kernel queued on the socket (the copy of a slot we skip), so the
/// queue stays in step with the ring.
fn discard_copy(fd: RawFd) {
    // SAFETY: a zero-length receive writes nothing; MSG_TRUNC discards the datagram.
    unsafe {
        libc::recv(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        );
    }
}

/// Reads the next whole frame the kernel queued on the socket (the copy of a frame the ring
/// cut), dropping its virtio_net_hdr (the ring slot's is the same frame's); its length, or None
/// when nothing whole was there.
fn recv_copy(fd: RawFd, buf: &mut [u8], expect: usize) -> Option<usize> {
    let mut vnet = [0u8; VNET_HDR_LEN];
    let mut iov = [
        libc::iovec {
            iov_base: vnet.as_mut_ptr().cast(),
            iov_len: VNET_HDR_LEN,
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
    ];
    // SAFETY: msghdr is plain old data; all-zero is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: both iovecs point into live, exclusively borrowed buffers of the lengths given.
    let rc = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if rc < VNET_HDR_LEN as isize || msg.msg_flags & libc::MSG_TRUNC != 0 {
        return None;
    }
    let n = rc as usize - VNET_HDR_LEN;
    (n == expect).then_some(n)
}

/// One TPACKET_V2 RX ring: per-frame ownership, so a frame is readable (and poll() wakes) as
/// soon as the kernel writes it, where V3 hands over whole blocks (when full, or after the
/// block timeout of at least 1 ms): V2 is the low-latency choice.
#[derive(Debug)]
struct RxRingV2 {
    map: Mapping,
    fd: OwnedFd,
    frame_nr: usize,
    cur: usize,
    /// PACKET_VNET_HDR and PACKET_COPY_THRESH (see [`enable_rx_vnet`]).
    vnet: bool,
}

impl RxRingV2 {
    fn open(ifindex: u32, fanout_id: u16, o: &AfPacketOptions) -> io::Result<Self> {
        let fd = packet_socket(0)?;
        let raw = fd.as_raw_fd();
        setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &(libc::tpacket_versions::TPACKET_V2 as libc::c_int),
        )?;
        let vnet = enable_rx_vnet(raw, true);
        let frames_per_block = o.rx_block_size / TX_FRAME_SIZE;
        let req = libc::tpacket_req {
            tp_block_size: o.rx_block_size,
            tp_block_nr: o.rx_block_nr,
            tp_frame_size: TX_FRAME_SIZE,
            tp_frame_nr: frames_per_block * o.rx_block_nr,
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        let _ = setsockopt(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1i32);
        let map = Mapping::new(raw, o.rx_block_size as usize * o.rx_block_nr as usize)?;
        bind(raw, ifindex, ETH_P_ALL)?;
        join_fanout(raw, fanout_id, o)?;
        Ok(RxRingV2 {
            map,
            fd,
            frame_nr: req.tp_frame_nr as usize,
            cur: 0,
            vnet,
        })
    }

    fn read(&mut self, iface: IfaceId, batch: &mut Batch, stats: &mut IoStats) -> usize {
        let fs = TX_FRAME_SIZE as usize;
        let mut got = 0;
        while !batch.is_full() {
            // SAFETY: `cur < frame_nr` and frames tile the mapping (the block size is a
            // multiple of the frame size), so the slot lies inside it.
            let slot = unsafe { self.map.ptr.add(self.cur * fs) };
            let hdr = slot.cast::<libc::tpacket2_hdr>();
            // SAFETY: `hdr` is the 16-byte-aligned header of a slot in the live mapping.
            let status = unsafe { status_load(std::ptr::addr_of!((*hdr).tp_status)) };
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            // SAFETY: the slot belongs to user space until its status is handed back.
            let h = unsafe { &*hdr };
            let sll_off = libc_tpacket_align(size_of::<libc::tpacket2_hdr>());
            // SAFETY: the kernel stores a sockaddr_ll right after the aligned header.
            let pkttype = unsafe { (*(slot.add(sll_off) as *const libc::sockaddr_ll)).sll_pkttype };
            let mac = h.tp_mac as usize;
            let snap = h.tp_snaplen as usize;
            if mac + snap <= fs && mac >= VNET_HDR_LEN {
                let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
                    let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        h.tp_vlan_tpid
                    } else {
                        0x8100
                    };
                    (tpid, h.tp_vlan_tci)
                });
                // SAFETY: `mac + snap` was checked to lie inside this user-owned slot, and with
                // a vnet header the kernel wrote it right before the frame.
                let (data, vnet) = unsafe {
                    (
                        std::slice::from_raw_parts(slot.add(mac), snap),
                        self.vnet.then(|| {
                            parse_vnet(std::slice::from_raw_parts(
                                slot.add(mac - VNET_HDR_LEN),
                                VNET_HDR_LEN,
                            ))
                        }),
                    )
                };
                let s = Slot {
                    data,
                    tp_len: h.tp_len,
                    status,
                    vlan,
                    pkttype,
                    vnet,
                };
                match deliver(iface, batch, stats, &s, self.fd.as_raw_fd()) {
                    // the slot stays ours; the next batch starts with it
                    Delivered::NoRoom => break,
                    Delivered::Added => got += 1,
                    Delivered::Skipped => {}
                }
            } else {
                stats.rx_oversize += 1;
            }
            // SAFETY: as above; hands the slot back to the kernel with Release.
            unsafe {
                status_store(
                    std::ptr::addr_of_mut!((*hdr).tp_status),
                    libc::TP_STATUS_KERNEL,
                )
            };
            self.cur = (self.cur + 1) % self.frame_nr;
        }
        got
    }

    /// Whether the next slot holds a frame (one load of its status word, no system call).
    fn ready(&self) -> bool {
        // SAFETY: as in `read`: `cur < frame_nr`, the slot and its header lie in the mapping.
        let hdr = unsafe { self.map.ptr.add(self.cur * TX_FRAME_SIZE as usize) }
            .cast::<libc::tpacket2_hdr>();
        // SAFETY: `hdr` is the aligned header of a slot in the live mapping.
        let status = unsafe { status_load(std::ptr::addr_of!((*hdr).tp_status)) };
        status & libc::TP_STATUS_USER != 0
    }

    fn kernel_drops(&self) -> u64 {
        // SAFETY: plain old data; all-zero is valid.
        let mut st: libc::tpacket_stats = unsafe { zeroed() };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            0
        } else {
            u64::from(st.tp_drops)
        }
    }
}

/// An RX ring of either version.
#[derive(Debug)]
enum Rx {
    V3(RxRing),
    V2(RxRingV2),
    /// The AF_XDP sockets of the receive queues this worker owns (none: it owns no queue of
    /// this interface and gets its frames from the other workers' hand-offs), and a watch
    /// socket ([`watch_socket`]) that hears of the link going down or the interface going.
    Xsk(Vec<super::afxdp::Xsk>, OwnedFd),
}

/// An AF_PACKET socket bound to `ifindex` that receives nothing (a protocol no one sends, and
/// a filter that takes nothing): the kernel reports ENETDOWN on it when the link goes down and
/// resets its binding when the interface is removed, as it does for the RX rings, so the
/// AF_XDP receive side is watched the same way.
fn watch_socket(ifindex: u32) -> io::Result<OwnedFd> {
    const UNUSED_ETHERTYPE: u16 = 0x88b5; // IEEE 802 local experimental
    let fd = packet_socket(UNUSED_ETHERTYPE)?;
    let nothing = [libc::sock_filter {
        code: 0x06, // BPF_RET | BPF_K
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: nothing.as_ptr().cast_mut(),
    };
    setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        &prog,
    )?;
    bind(fd.as_raw_fd(), ifindex, UNUSED_ETHERTYPE)?;
    Ok(fd)
}

impl Rx {
    /// The AF_PACKET socket bound to the interface (the watch socket for AF_XDP).
    fn fd(&self) -> Option<RawFd> {
        match self {
            Rx::V3(r) => Some(r.fd.as_raw_fd()),
            Rx::V2(r) => Some(r.fd.as_raw_fd()),
            Rx::Xsk(_, watch) => Some(watch.as_raw_fd()),
        }
    }
    /// Every socket to poll.
    fn poll_fds(&self) -> Vec<RawFd> {
        match self {
            Rx::Xsk(v, watch) => v
                .iter()
                .map(|x| x.fd())
                .chain([watch.as_raw_fd()])
                .collect(),
            r => r.fd().into_iter().collect(),
        }
    }
    fn read(&mut self, iface: IfaceId, batch: &mut Batch, stats: &mut IoStats) -> usize {
        match self {
            Rx::V3(r) => r.read(iface, batch, stats),
            Rx::V2(r) => r.read(iface, batch, stats),
            Rx::Xsk(v, _) => {
                let mut got = 0;
                for x in v.iter_mut() {
                    got += x.read(iface, batch, stats);
                    if batch.is_full() {
                        break;
                    }
                }
                got
            }
        }
    }
    fn ready(&self) -> bool {
        match self {
            Rx::V3(r) => r.ready(),
            Rx::V2(r) => r.ready(),
            Rx::Xsk(v, _) => v.iter().any(|x| x.ready()),
        }
    }
    fn kernel_drops(&self) -> u64 {
        match self {
            Rx::V3(r) => r.kernel_drops(),
            Rx::V2(r) => r.kernel_drops(),
            Rx::Xsk(v, _) => v.iter().map(|x| x.kernel_drops()).sum(),
        }
    }
}

/// Which TPACKET version the RX rings use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxRingVersion {
    /// Block-based: fewer wake-ups under load, but a block reaches user space only when it is
    /// full or its timeout (>= 1 ms) expires: up to 1 ms of latency per hop at low rates.
    V3,
    /// Frame-based: each frame is readable as soon as it is written.
    V2,
}

fn libc_tpacket_align(x: usize) -> usize {
    (x + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1)
}

/// One TPACKET_V2 TX ring.
#[derive(Debug)]
struct TxRing {
    map: Mapping,
    fd: OwnedFd,
    frame_nr: usize,
    head: usize,
    pending: usize,
    /// PACKET_VNET_HDR is on: each frame carries a virtio_net_hdr whose `hdr_len` (the whole
    /// frame) has the kernel copy it into the skb's linear part. Without it the kernel copies
    /// only the Ethernet header and attaches the rest as ring pages, which a veth (or any path
    /// that must own the data) copies again into a freshly allocated page, and every receiver
    /// reads its headers out of that non-linear skb. Measured on the lab topology: 64-byte UDP
    /// +9% packets/s, TCP +29% Gb/s (docs/benchmarks.md).
    vnet: bool,
    /// The longest frame the device takes (its MTU at open, plus the Ethernet header and a VLAN
    /// tag): with a vnet header the kernel no longer checks it, so `tx_push` does.
    max_frame: usize,
    /// A socket without a ring, with PACKET_VNET_HDR, for super-frames longer than a ring
    /// frame: one sendmsg each, the kernel (or the NIC) cuts it where the device needs.
    /// None when the kernel refused the vnet header.
    big: Option<OwnedFd>,
}

impl TxRing {
    fn open(ifindex: u32, mtu: u32, o: &AfPacketOptions) -> io::Result<Self> {
        let fd = packet_socket(0)?;
        let raw = fd.as_raw_fd();
        setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &(libc::tpacket_versions::TPACKET_V2 as libc::c_int),
        )?;
        if o.qdisc_bypass {
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &1i32)?;
        }
        // Before the ring exists (the kernel refuses it after).
        let mut vnet = setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &1i32).is_ok();
        let frames_per_block = 16u32;
        let block_nr = o.tx_frame_nr.div_ceil(frames_per_block);
        let req = libc::tpacket_req {
            tp_block_size: TX_FRAME_SIZE * frames_per_block,
            tp_block_nr: block_nr,
            tp_frame_size: TX_FRAME_SIZE,
            tp_frame_nr: block_nr * frames_per_block,
        };
        if let Err(e) = setsockopt(raw, libc::SOL_PACKET, libc::PACKET_TX_RING, &req) {
            // Kernels before 4.7 take the vnet flag but refuse a ring with it (EINVAL): send
            // without, as before (no ring exists yet, so the flag can still be cleared).
            if !vnet || e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &0i32)?;
            vnet = false;
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_TX_RING, &req)?;
        }
        let map = Mapping::new(raw, (req.tp_block_size * block_nr) as usize)?;
        // Protocol 0 in bind: this socket only sends, it never receives a copy of traffic.
        bind(raw, ifindex, 0)?;
        let big = if vnet {
            let fd = packet_socket(0)?;
            let b = fd.as_raw_fd();
            if o.qdisc_bypass {
                setsockopt(b, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &1i32)?;
            }
            let size = 4i32 << 20;
            if setsockopt(b, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &size).is_err() {
                let _ = setsockopt(b, libc::SOL_SOCKET, libc::SO_SNDBUF, &size);
            }
            setsockopt(b, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &1i32)
                .ok()
                .map(|_| bind(b, ifindex, 0))
                .transpose()?
                .map(|_| fd)
        } else {
            None
        };
        Ok(TxRing {
            map,
            fd,
            frame_nr: req.tp_frame_nr as usize,
            head: 0,
            pending: 0,
            vnet,
            max_frame: mtu as usize + 14 + 4,
            big,
        })
    }

    /// Whether `frame` fits a ring frame (with its vnet header).
    fn fits(&self, frame: &[u8]) -> bool {
        let vnet_len = if self.vnet { VNET_HDR_LEN } else { 0 };
        frame.len()
            <= TX_FRAME_SIZE as usize
                - libc_tpacket_align(size_of::<libc::tpacket2_hdr>())
                - vnet_len
    }

    /// Sends a super-frame through the ringless socket, after the ring's queued frames (so a
    /// flow's frames leave in order). False when it was not sent (counted).
    fn send_big(&mut self, frame: &[u8], o: &Offload, stats: &mut IoStats) -> bool {
        let Some(fd) = self.big.as_ref().map(|f| f.as_raw_fd()) else {
            stats.tx_errors += 1;
            return false;
        };
        self.flush(stats);
        let vnet = emit_vnet(o, headers_len(frame, o));
        let iov = [
            libc::iovec {
                iov_base: vnet.as_ptr() as *mut libc::c_void,
                iov_len: VNET_HDR_LEN,
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: msghdr is plain old data; all-zero is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len() as _;
        // SAFETY: both iovecs point into live buffers of the lengths given, which the kernel
        // only reads (sendmsg does not write through msg_iov).
        let rc = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
        if rc < 0 {
            match last_err().raw_os_error() {
                Some(libc::EAGAIN | libc::ENOBUFS) => stats.tx_ring_full += 1,
                _ => stats.tx_errors += 1,
            }
            return false;
        }
        if o.is_gso() {
            stats.tx_gso += 1;
        }
        true
    }

    fn push(&mut self, frame: &[u8], o: &Offload, stats: &mut IoStats) -> bool {
        let hdr_off = libc_tpacket_align(size_of::<libc::tpacket2_hdr>());
        let vnet_len = if self.vnet { VNET_HDR_LEN } else { 0 };
        let data_off = hdr_off + vnet_len;
        if frame.len() > TX_FRAME_SIZE as usize - data_off || (!self.vnet && *o != Offload::NONE) {
            stats.tx_errors += 1;
            return false;
        }
        // SAFETY: `head < frame_nr`, so the slot lies inside the mapping.
        let slot = unsafe { self.map.ptr.add(self.head * TX_FRAME_SIZE as usize) };
        let hdr = slot.cast::<libc::tpacket2_hdr>();
        // SAFETY: `hdr` is the 16-byte-aligned header of a slot in the live mapping.
        let status = unsafe { status_load(std::ptr::addr_of!((*hdr).tp_status)) };
        if status == libc::TP_STATUS_WRONG_FORMAT {
            stats.tx_errors += 1;
        } else if status != libc::TP_STATUS_AVAILABLE {
            stats.tx_ring_full += 1;
            // SEND_REQUEST: a frame the kernel handed back after a failed transmit (the device
            // dropped it, ENOBUFS) waits for the next send() call; without one the ring would
            // stay full for good (issue 22: a veth peer's full ring wedged forwarding). Make
            // sure the next flush makes that call.
            if status & libc::TP_STATUS_SEND_REQUEST != 0 {
                self.pending = self.pending.max(1);
            }
            return false;
        }
        // SAFETY: the slot is available (the kernel does not touch it until we set
        // SEND_REQUEST); the data fits in the slot as checked above.
        unsafe {
            if self.vnet {
                // hdr_len = the whole frame (fits a u16, checked above): one linear skb
                let v = emit_vnet(o, frame.len());
                std::ptr::copy_nonoverlapping(v.as_ptr(), slot.add(hdr_off), VNET_HDR_LEN);
            }
            std::ptr::copy_nonoverlapping(frame.as_ptr(), slot.add(data_off), frame.len());
            (*hdr).tp_len = (vnet_len + frame.len()) as u32;
            status_store(
                std::ptr::addr_of_mut!((*hdr).tp_status),
                libc::TP_STATUS_SEND_REQUEST,
            );
        }
        self.head = (self.head + 1) % self.frame_nr;
        self.pending += 1;
        if o.is_gso() {
            stats.tx_gso += 1;
        }
        true
    }

    /// Sends the queued frames; true when the kernel said the device is down or gone.
    fn flush(&mut self, stats: &mut IoStats) -> bool {
        if self.pending == 0 {
            return false;
        }
        self.pending = 0;
        // SAFETY: sendto with no buffer and no address asks the kernel to send the ring's
        // SEND_REQUEST frames; nothing is read from user pointers.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc < 0 {
            let e = last_err().raw_os_error();
            if e != Some(libc::EAGAIN) && e != Some(libc::ENOBUFS) {
                stats.tx_errors += 1;
            } else {
                // the kernel stopped at a frame it could not send and left it (and those after
                // it) as SEND_REQUEST: the next flush asks again
                self.pending = 1;
            }
            return matches!(e, Some(libc::ENETDOWN | libc::ENXIO | libc::ENODEV));
        }
        false
    }
}

/// Where a frame's headers end (what the kernel copies into the skb's linear part, the rest
/// going into pages): the L4 header's end for a partial checksum, else the whole frame up to
/// 128 bytes.
fn headers_len(frame: &[u8], o: &Offload) -> usize {
    let start = usize::from(o.csum_start);
    let l4 = match (o.csum_partial, o.csum_offset) {
        (true, 16) => frame
            .get(start + 12)
            .map(|b| start + usize::from(b >> 4) * 4),
        (true, _) => Some(start + 8),
        _ => None,
    };
    l4.unwrap_or(128).min(frame.len())
}

/// A worker that never sleeps checks its suspect interfaces every this many receive batches.
const SUSPECT_CHECK_EVERY: u32 = 1024;

/// AF_PACKET rings for one worker over every data interface.
#[derive(Debug)]
pub struct AfPacketIo {
    rx: Vec<Rx>,
    tx: Vec<TxRing>,
    macs: Vec<[u8; 6]>,
    names: Vec<String>,
    ifindexes: Vec<u32>,
    /// Interfaces the kernel reported down since their last received frame: each is checked
    /// for removal at every wait() and every [`SUSPECT_CHECK_EVERY`] receive batches.
    suspect: Vec<bool>,
    batches_since_check: u32,
    /// Per interface.
    stats: Vec<IoStats>,
    /// Per interface: the ring's PACKET_STATISTICS drops so far (the kernel resets them on
    /// each read).
    kernel_drops: Vec<Cell<u64>>,
    pollfds: Vec<libc::pollfd>,
    /// The interface of each receive socket in `pollfds` (in order, before any extra fd).
    poll_if: Vec<usize>,
    next_rx: usize,
    notices: super::IoNotices,
    /// Per interface, with AF_XDP: its XDP program, when this worker reports the program's
    /// own counters (the one owning queue 0).
    xdp_report: Vec<Option<std::sync::Arc<super::xdp::XdpProgram>>>,
}

// SAFETY: the ring mappings are owned exclusively by this value (no other alias to them exists
// in the process); moving it to another thread moves that exclusive ownership.
unsafe impl Send for AfPacketIo {}

impl AfPacketIo {
    /// Opens rings on `ifaces` (index = IfaceId) and joins each interface's fanout group.
    pub fn open(ifaces: &[String], o: &AfPacketOptions) -> io::Result<Self> {
        Self::open_worker(ifaces, o, 0)
    }

    /// As [`AfPacketIo::open`], for worker `worker` (which AF_XDP queues it binds).
    pub fn open_worker(ifaces: &[String], o: &AfPacketOptions, worker: usize) -> io::Result<Self> {
        let mut rx = Vec::new();
        let mut xdp_report = Vec::new();
        let mut tx = Vec::new();
        let mut macs = Vec::new();
        let mut ifindexes = Vec::new();
        for (i, name) in ifaces.iter().enumerate() {
            let idx = ifindex(name)?;
            ifindexes.push(idx);
            let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{name}: {e}"));
            let fanout = o.fanout_base.wrapping_add(i as u16);
            let prog = o
                .xsk
                .as_ref()
                .and_then(|x| x.programs.get(i).map(|p| (p, x.workers)));
            xdp_report.push(prog.filter(|_| worker == 0).map(|(p, _)| p.clone()));
            rx.push(match (prog, o.rx_version) {
                (Some((p, workers)), _) => {
                    let mut socks = Vec::new();
                    let mut q = worker as u32;
                    while q < p.queues {
                        let x = super::afxdp::Xsk::open(idx, q).map_err(ctx)?;
                        p.register(q, x.fd()).map_err(ctx)?;
                        socks.push(x);
                        q += workers.max(1) as u32;
                    }
                    Rx::Xsk(socks, watch_socket(idx).map_err(ctx)?)
                }
                (None, RxRingVersion::V3) => Rx::V3(RxRing::open(idx, fanout, o).map_err(ctx)?),
                (None, RxRingVersion::V2) => Rx::V2(RxRingV2::open(idx, fanout, o).map_err(ctx)?),
            });
            tx.push(TxRing::open(idx, mtu(name).map_err(ctx)?, o).map_err(ctx)?);
            macs.push(hw_addr(name)?);
        }
        let mut pollfds = Vec::new();
        let mut poll_if = Vec::new();
        for (i, r) in rx.iter().enumerate() {
            for fd in r.poll_fds() {
                pollfds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                poll_if.push(i);
            }
        }
        Ok(AfPacketIo {
            rx,
            tx,
            macs,
            names: ifaces.to_vec(),
            ifindexes,
            suspect: vec![false; ifaces.len()],
            batches_since_check: 0,
            stats: vec![IoStats::default(); ifaces.len()],
            kernel_drops: vec![Cell::new(0); ifaces.len()],
            pollfds,
            poll_if,
            next_rx: 0,
            notices: o.notices.clone(),
            xdp_report,
        })
    }

    /// Queues a frame (with its offload metadata; the socket has a vnet header unless `o` is
    /// none) on `tx_if`: in the ring when it fits, else through the ringless socket.
    fn push_frame(&mut self, tx_if: IfaceId, frame: &[u8], o: &Offload) -> bool {
        let i = tx_if as usize;
        let (Some(t), Some(st)) = (self.tx.get_mut(i), self.stats.get_mut(i)) else {
            if let Some(st) = self.stats.first_mut() {
                st.tx_errors += 1;
            }
            return false;
        };
        // What goes on the wire: each segment of a super-frame, else the frame.
        let on_wire = if o.is_gso() {
            let l2 = frame.len() - crate::wire::ethernet::parse(frame).map_or(0, |e| e.l3_offset);
            crate::wire::gso::max_segment_l3_len(frame, o)
                .map_or(frame.len(), |l3| l3 + (frame.len() - l2))
        } else {
            frame.len()
        };
        if on_wire > t.max_frame {
            // longer than the device's MTU (the configured one is larger)
            st.tx_errors += 1;
            return false;
        }
        if !t.fits(frame) {
            return t.send_big(frame, o, st);
        }
        if t.push(frame, o, st) {
            return true;
        }
        // Ring full: kick the kernel once and retry.
        let down = t.flush(st);
        let sent = t.push(frame, o, st);
        if down {
            self.link_event(i, "cannot send: device down");
        }
        sent
    }

    /// Interface `i` had a link error (seen on its RX socket or when sending): say so once per
    /// event (posted for the control plane to log), count it, and watch it for removal.
    fn link_event(&mut self, i: usize, what: &str) {
        self.stats[i].link_errors += 1;
        if !self.suspect[i] {
            self.notices.post(format!(
                "interface {}: {what} (counted in link_errors)",
                self.names[i]
            ));
        }
        self.suspect[i] = true;
    }

    /// Err when a suspect interface is gone: its RX socket no longer names the interface it
    /// was bound to (the kernel resets the binding to -1 when it unregisters the device, and
    /// says ENETDOWN for that just as for a link going down).
    fn check_suspects(&mut self) -> io::Result<()> {
        self.batches_since_check = 0;
        for i in 0..self.rx.len() {
            if !self.suspect[i] {
                continue;
            }
            if let Some(idx) = self.rx[i].fd().and_then(bound_ifindex) {
                if idx != self.ifindexes[i] as i32 {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("interface {} was removed", self.names[i]),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl PacketIo for AfPacketIo {
    fn rx_batch(&mut self, batch: &mut Batch) -> io::Result<usize> {
        let n = self.rx.len();
        let mut got = 0;
        // Start from a different interface each time so one busy side cannot starve the other.
        for k in 0..n {
            let i = (self.next_rx + k) % n;
            let here = self.rx[i].read(i as IfaceId, batch, &mut self.stats[i]);
            if here > 0 {
                self.suspect[i] = false;
            }
            got += here;
            if batch.is_full() {
                break;
            }
        }
        self.next_rx = (self.next_rx + 1) % n.max(1);
        if self.suspect.iter().any(|&s| s) {
            self.batches_since_check += 1;
            if self.batches_since_check >= SUSPECT_CHECK_EVERY {
                self.check_suspects()?;
            }
        }
        Ok(got)
    }

    fn tx_push(&mut self, tx_if: IfaceId, frame: &[u8]) -> bool {
        self.push_frame(tx_if, frame, &Offload::NONE)
    }

    fn tx_push_offload(&mut self, tx_if: IfaceId, frame: &mut [u8], o: &Offload) -> bool {
        if *o != Offload::NONE && !self.tx.get(tx_if as usize).is_some_and(|t| t.vnet) {
            // no vnet header on this kernel: nothing can carry the metadata
            return super::gso_fallback(self, tx_if, frame, o);
        }
        self.push_frame(tx_if, frame, o)
    }

    fn count_segmented(&mut self, iface: IfaceId) {
        if let Some(st) = self.stats.get_mut(usize::from(iface)) {
            st.gso_segmented += 1;
        }
    }

    fn tx_flush(&mut self) -> io::Result<()> {
        for i in 0..self.tx.len() {
            if self.tx[i].flush(&mut self.stats[i]) {
                self.link_event(i, "cannot send: device down");
            }
        }
        Ok(())
    }

    fn wait(&mut self, timeout_ms: i32, extra_fd: Option<i32>) -> io::Result<()> {
        self.pollfds.truncate(self.poll_if.len());
        if let Some(fd) = extra_fd {
            self.pollfds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: `pollfds` is a valid, exclusively borrowed array of the length passed.
        let rc = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if rc < 0 {
            let e = last_err();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            return Ok(());
        }
        for k in 0..self.poll_if.len() {
            let (i, revents, fd) = (self.poll_if[k], self.pollfds[k].revents, self.pollfds[k].fd);
            if revents & libc::POLLNVAL != 0 {
                return Err(io::Error::other(format!(
                    "{}: ring socket closed",
                    self.names[i]
                )));
            }
            if revents & libc::POLLERR == 0 {
                continue;
            }
            // Reading SO_ERROR clears it; poll() would report it again at once otherwise. The
            // kernel says ENETDOWN both for a link going down (the ring rebinds when it comes
            // back up) and for the interface going away (the ring is dead), and the removal
            // completes after the wake-up: check_suspects tells them apart, now and at every
            // later wait until a frame arrives on it again.
            if let Some(e) = super::take_socket_error(fd).ok().filter(|&e| e != 0) {
                self.link_event(i, &io::Error::from_raw_os_error(e).to_string());
            }
        }
        self.check_suspects()
    }

    fn rx_ready(&self) -> bool {
        self.rx.iter().any(Rx::ready)
    }

    fn stats(&self) -> IoStats {
        let mut sum = IoStats::default();
        for i in 0..self.rx.len() {
            sum.add(&self.iface_stats(i as IfaceId));
        }
        sum
    }

    fn iface_stats(&self, iface: IfaceId) -> IoStats {
        let i = usize::from(iface);
        let (Some(rx), Some(st), Some(kd)) =
            (self.rx.get(i), self.stats.get(i), self.kernel_drops.get(i))
        else {
            return IoStats::default();
        };
        kd.set(kd.get() + rx.kernel_drops());
        let xdp_no_socket = self
            .xdp_report
            .get(i)
            .and_then(|p| p.as_ref())
            .map_or(0, |p| p.no_socket_drops());
        IoStats {
            rx_ring_drops: kd.get(),
            xdp_no_socket,
            ..*st
        }
    }

    fn mac(&self, iface: IfaceId) -> [u8; 6] {
        self.macs.get(iface as usize).copied().unwrap_or([0; 6])
    }
}
