//! Offload metadata of a frame (what its sender left for the NIC, as a virtio_net_hdr says) and
//! software segmentation of GSO super-frames.
//!
//! A Linux sender (TSO/GSO on a veth, a bridge, GRO on a NIC) hands the next hop TCP segments of
//! up to 64 KiB whose checksum is *partial*: the L4 checksum field holds only the folded
//! pseudo-header sum, and whoever finally transmits computes the rest. The dataplane translates
//! such a super-frame once (its headers are those of every segment) and passes the metadata on,
//! so the kernel or the NIC cuts it where the egress needs it; [`segment`] cuts it in software
//! where the frame must fit a fixed-size buffer.

/// GSO kind of a super-frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gso {
    /// A single frame.
    #[default]
    None,
    /// TCP over IPv4, cut every `gso_size` payload bytes; `ecn`: CWR only on the first segment.
    TcpV4 { ecn: bool },
    /// UDP (USO, `UDP_SEGMENT`): one datagram every `gso_size` payload bytes.
    UdpL4,
}

/// What a received frame's sender left to offload, and what a transmitted frame asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// GSO kind; [`Gso::None`] for an ordinary frame.
    pub gso: Gso,
    /// Payload bytes per segment (the MSS for TCP) when `gso` is not [`Gso::None`].
    pub gso_size: u16,
    /// The L4 checksum is partial: its field holds the folded (not complemented) pseudo-header
    /// sum; the sum from `csum_start` (an offset from the start of the frame) to the end of the
    /// IP packet, complemented, belongs at `csum_start + csum_offset`.
    pub csum_partial: bool,
    /// Where the checksummed region starts (the L4 header), from the start of the frame.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start` (16 for TCP, 6 for UDP).
    pub csum_offset: u16,
}

impl Offload {
    /// No offload: a complete frame with a complete checksum.
    pub const NONE: Offload = Offload {
        gso: Gso::None,
        gso_size: 0,
        csum_partial: false,
        csum_start: 0,
        csum_offset: 0,
    };

    /// True for a GSO super-frame.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso != Gso::None
    }
}

use super::checksum::{fold, pseudo_header, sum};
use super::WireError;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
const TCP_MIN_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;

/// Where the IPv4 packet of a frame lies.
#[derive(Clone, Copy, Debug)]
struct Ip {
    /// Offset of the IPv4 header in the frame (14, or 18 behind one VLAN tag).
    l3: usize,
    /// IPv4 header length, options included.
    ihl: usize,
    /// End of the IPv4 packet in the frame (`l3 + total_len`); bytes after it are padding.
    end: usize,
    proto: u8,
    frag: u16,
}

/// Where the headers and the payload of a GSO super-frame lie.
#[derive(Clone, Copy, Debug)]
struct Layout {
    ip: Ip,
    /// Offset of the L4 header.
    l4: usize,
    /// L4 header length (TCP options included; 8 for UDP).
    l4_len: usize,
    gso_size: usize,
}

impl Layout {
    /// End of the headers every segment repeats (Ethernet, IPv4, L4).
    fn headers_end(&self) -> usize {
        self.l4 + self.l4_len
    }
    fn payload_len(&self) -> usize {
        self.ip.end - self.headers_end()
    }
    fn segments(&self) -> usize {
        // A super-frame without payload (a bare ACK marked GSO) still leaves as one frame.
        self.payload_len().div_ceil(self.gso_size).max(1)
    }
    fn max_chunk(&self) -> usize {
        self.gso_size.min(self.payload_len())
    }
}

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    match b.get(at..at.checked_add(2)?)? {
        [h, l] => Some(u16::from_be_bytes([*h, *l])),
        _ => None,
    }
}

/// Reads Ethernet (one optional 802.1Q / 802.1ad tag) and the IPv4 header, checking that the
/// whole IPv4 packet is in `frame`.
fn parse_ip(frame: &[u8]) -> Result<Ip, WireError> {
    let outer = be16(frame, 12).ok_or(WireError::Truncated)?;
    let (l3, ethertype) = if outer == ETHERTYPE_VLAN || outer == ETHERTYPE_QINQ {
        (18, be16(frame, 16).ok_or(WireError::Truncated)?)
    } else {
        (14, outer)
    };
    if ethertype != ETHERTYPE_IPV4 {
        return Err(WireError::BadVersion);
    }
    let h = frame.get(l3..l3 + 20).ok_or(WireError::Truncated)?;
    if h[0] >> 4 != 4 {
        return Err(WireError::BadVersion);
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(WireError::BadHeaderLength);
    }
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if total < ihl {
        return Err(WireError::BadTotalLength);
    }
    if l3 + total > frame.len() {
        return Err(WireError::Truncated);
    }
    Ok(Ip {
        l3,
        ihl,
        end: l3 + total,
        proto: h[9],
        frag: u16::from_be_bytes([h[6], h[7]]),
    })
}

/// Checks a super-frame of GSO kind `tcp` (else UDP) as a kernel would before cutting it.
fn parse_gso(frame: &[u8], tcp: bool, gso_size: u16) -> Result<Layout, WireError> {
    let ip = parse_ip(frame)?;
    // A fragment's total length is not the datagram's: it cannot be cut into datagrams.
    if ip.frag & 0x3fff != 0 {
        return Err(WireError::BadTotalLength);
    }
    let l4 = ip.l3 + ip.ihl;
    let l4_len = if tcp {
        if ip.proto != PROTO_TCP {
            return Err(WireError::BadDataOffset);
        }
        if ip.end < l4 + TCP_MIN_HEADER_LEN {
            return Err(WireError::BadTotalLength);
        }
        let doff = usize::from(frame[l4 + 12] >> 4) * 4;
        if doff < TCP_MIN_HEADER_LEN || l4 + doff > ip.end {
            return Err(WireError::BadDataOffset);
        }
        doff
    } else {
        if ip.proto != PROTO_UDP {
            return Err(WireError::BadUdpLength);
        }
        if ip.end < l4 + UDP_HEADER_LEN {
            return Err(WireError::BadTotalLength);
        }
        UDP_HEADER_LEN
    };
    if gso_size == 0 {
        // No segment length can agree with the packet.
        return Err(WireError::BadTotalLength);
    }
    Ok(Layout {
        ip,
        l4,
        l4_len,
        gso_size: usize::from(gso_size),
    })
}

/// Cuts a GSO super-frame into the frames Linux's software GSO would send, each written in
/// `scratch` and passed to `emit`; returns how many were emitted.
///
/// Segment i repeats the headers with its own IPv4 length, identification (original + i) and
/// checksum. TCP: sequence number advanced by the payload before it, FIN and PSH only on the
/// last segment, CWR only on the first (Linux does so whatever [`Gso::TcpV4`]'s `ecn` says).
/// UDP: each segment is a datagram of its own. L4 checksums are computed in full, since the
/// super-frame's field may be partial or complete, and its UDP length is not trusted: the IPv4
/// total length gives the extent. Bytes after the IPv4 packet (padding) are dropped.
///
/// A [`Gso::None`] frame (any ethertype) is emitted as it is, but a partial checksum is
/// completed as [`complete_checksum`] does. A super-frame whose payload fits one segment comes
/// out as that segment: the same frame, with complete checksums.
///
/// Nothing is emitted unless every segment fits `scratch`. Errors use the existing variants
/// (a new one would need an arm where the datapath maps them to drop reasons):
/// `Truncated` for a frame shorter than its headers or total length, or a `scratch` shorter
/// than a segment; `BadVersion`: not IPv4; `BadHeaderLength`: IPv4 header below 20 bytes;
/// `BadTotalLength`: total length below the headers, a fragment, or `gso_size` 0;
/// `BadDataOffset`: bad TCP header, or not TCP where TCP GSO was asked; `BadUdpLength`: not
/// UDP where UDP GSO was asked.
pub fn segment(
    frame: &[u8],
    off: &Offload,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, WireError> {
    let tcp = match off.gso {
        Gso::None => {
            let out = scratch.get_mut(..frame.len()).ok_or(WireError::Truncated)?;
            out.copy_from_slice(frame);
            if off.csum_partial {
                complete(out, off)?;
            }
            emit(out);
            return Ok(1);
        }
        Gso::TcpV4 { .. } => true,
        Gso::UdpL4 => false,
    };
    let lay = parse_gso(frame, tcp, off.gso_size)?;
    let hdr_end = lay.headers_end();
    if hdr_end + lay.max_chunk() > scratch.len() {
        return Err(WireError::Truncated);
    }
    let Layout { ip, l4, l4_len, .. } = lay;
    let l3 = ip.l3;
    let src = addr(frame, l3 + 12);
    let dst = addr(frame, l3 + 16);
    let ident = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]);
    let seq = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let payload = &frame[hdr_end..ip.end];
    let n = lay.segments();
    for i in 0..n {
        let from = i * lay.gso_size;
        let chunk = &payload[from..payload.len().min(from + lay.gso_size)];
        let seg = &mut scratch[..hdr_end + chunk.len()];
        seg[..hdr_end].copy_from_slice(&frame[..hdr_end]);
        seg[hdr_end..].copy_from_slice(chunk);

        // Lengths fit u16: each is at most the super-frame's IPv4 total length.
        let l4_total = (l4_len + chunk.len()) as u16;
        put16(seg, l3 + 2, (ip.ihl + l4_len + chunk.len()) as u16);
        put16(seg, l3 + 4, ident.wrapping_add(i as u16));
        put16(seg, l3 + 10, 0);
        let ip_sum = !fold(sum(&seg[l3..l3 + ip.ihl], 0));
        put16(seg, l3 + 10, ip_sum);

        let l4_sum = if tcp {
            let s = seq.wrapping_add(from as u32);
            seg[l4 + 4..l4 + 8].copy_from_slice(&s.to_be_bytes());
            if i + 1 < n {
                seg[l4 + 13] &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                seg[l4 + 13] &= !TCP_CWR;
            }
            put16(seg, l4 + 16, 0);
            !fold(sum(
                &seg[l4..],
                pseudo_header(src, dst, PROTO_TCP, l4_total),
            ))
        } else {
            put16(seg, l4 + 4, l4_total);
            put16(seg, l4 + 6, 0);
            udp_nonzero(!fold(sum(
                &seg[l4..],
                pseudo_header(src, dst, PROTO_UDP, l4_total),
            )))
        };
        let field = if tcp { l4 + 16 } else { l4 + 6 };
        put16(seg, field, l4_sum);
        emit(seg);
    }
    Ok(n)
}

/// Completes a partial L4 checksum in place: the sum from `off.csum_start` to the end of the
/// IPv4 packet, complemented, stored at `csum_start + csum_offset` (a UDP 0 becomes 0xffff,
/// since 0 would mean "no checksum").
///
/// The field must hold the folded pseudo-header sum, as Linux leaves it for CHECKSUM_PARTIAL
/// (see [`partial_pseudo_sum`]): the pseudo-header is then counted through the field, not added
/// here. Returns false, leaving the frame unchanged, if the frame is not Ethernet/IPv4 or the
/// region or the field lies outside the L4 part of the IPv4 packet (so bad metadata can never
/// overwrite the IPv4 header). The flags in `off` are not looked at.
pub fn complete_checksum(frame: &mut [u8], off: &Offload) -> bool {
    complete(frame, off).is_ok()
}

fn complete(frame: &mut [u8], off: &Offload) -> Result<(), WireError> {
    let ip = parse_ip(frame)?;
    let start = usize::from(off.csum_start);
    let field = start + usize::from(off.csum_offset);
    if start < ip.l3 + ip.ihl || field + 2 > ip.end {
        return Err(WireError::Truncated);
    }
    let mut c = !fold(sum(&frame[start..ip.end], 0));
    if ip.proto == PROTO_UDP {
        c = udp_nonzero(c);
    }
    put16(frame, field, c);
    Ok(())
}

/// The IPv4 length of the largest segment [`segment`] would cut from `frame` (the IPv4 total
/// length for a frame that is not GSO), for an MTU check before cutting; None if the headers
/// do not parse or [`segment`] would refuse them.
pub fn max_segment_l3_len(frame: &[u8], off: &Offload) -> Option<usize> {
    let tcp = match off.gso {
        Gso::None => return parse_ip(frame).ok().map(|ip| ip.end - ip.l3),
        Gso::TcpV4 { .. } => true,
        Gso::UdpL4 => false,
    };
    let lay = parse_gso(frame, tcp, off.gso_size).ok()?;
    Some(lay.ip.ihl + lay.l4_len + lay.max_chunk())
}

/// The value Linux leaves in the L4 checksum field of a CHECKSUM_PARTIAL packet: the folded,
/// not complemented, pseudo-header sum (`~tcp_v4_check(len, saddr, daddr, 0)`). `l4_len` is the
/// L4 header plus payload.
pub fn partial_pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u16 {
    fold(pseudo_header(src, dst, proto, l4_len))
}

/// Callers pass offsets already checked against `b`.
#[inline]
fn addr(b: &[u8], at: usize) -> [u8; 4] {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    a
}

/// Callers pass offsets already checked against `b`.
#[inline]
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// A computed UDP checksum of 0 is sent as 0xffff (RFC 768: 0 means "none").
#[inline]
fn udp_nonzero(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::checksum;
    use etherparse::{NetHeaders, PacketHeaders, PayloadSlice, TransportHeader};
    use proptest::prelude::*;

    const SRC: [u8; 4] = [198, 18, 0, 11];
    const DST: [u8; 4] = [203, 0, 113, 10];
    const IDENT: u16 = 0xfffe;
    const ACK: u8 = 0x10;

    #[derive(Clone, Copy, Debug)]
    enum L4 {
        Tcp { opts: usize, flags: u8, seq: u32 },
        Udp,
    }

    /// An Ethernet/IPv4 TCP or UDP frame; the L4 checksum complete, or partial (the folded
    /// pseudo-header sum over the whole L4 length, as Linux leaves it).
    fn build(tag: Option<u16>, ip_opts: usize, l4: L4, payload: &[u8], partial: bool) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if let Some(t) = tag {
            f.extend_from_slice(&t.to_be_bytes());
            f.extend_from_slice(&[0x00, 0x64]);
        }
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let l3 = f.len();
        let ihl = 20 + ip_opts;
        let (proto, l4_hdr) = match l4 {
            L4::Tcp { opts, .. } => (PROTO_TCP, 20 + opts),
            L4::Udp => (PROTO_UDP, 8),
        };
        let total = (ihl + l4_hdr + payload.len()) as u16;
        f.push(0x40 | (ihl / 4) as u8);
        f.push(0);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&IDENT.to_be_bytes());
        f.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&SRC);
        f.extend_from_slice(&DST);
        f.extend(std::iter::repeat(1u8).take(ip_opts)); // NOPs
        let c = checksum(&f[l3..l3 + ihl]);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        let l4_at = f.len();
        let l4_len = (l4_hdr + payload.len()) as u16;
        match l4 {
            L4::Tcp { opts, flags, seq } => {
                f.extend_from_slice(&40000u16.to_be_bytes());
                f.extend_from_slice(&443u16.to_be_bytes());
                f.extend_from_slice(&seq.to_be_bytes());
                f.extend_from_slice(&0x0102_0304u32.to_be_bytes());
                f.push((((20 + opts) / 4) as u8) << 4);
                f.push(flags);
                f.extend_from_slice(&[0x01, 0xf5, 0, 0, 0, 0]); // window 501, checksum, urgent
                let mss = [2u8, 4, 0x05, 0xb4];
                f.extend((0..opts).map(|i| if opts >= 4 && i < 4 { mss[i] } else { 1 }));
            }
            L4::Udp => {
                f.extend_from_slice(&40000u16.to_be_bytes());
                f.extend_from_slice(&4433u16.to_be_bytes());
                f.extend_from_slice(&l4_len.to_be_bytes());
                f.extend_from_slice(&[0, 0]);
            }
        }
        f.extend_from_slice(payload);
        let field = l4_at + if proto == PROTO_TCP { 16 } else { 6 };
        let c = if partial {
            partial_pseudo_sum(SRC, DST, proto, l4_len)
        } else {
            let c = !fold(sum(&f[l4_at..], pseudo_header(SRC, DST, proto, l4_len)));
            if proto == PROTO_UDP {
                udp_nonzero(c)
            } else {
                c
            }
        };
        f[field..field + 2].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ (i >> 8) as u8).collect()
    }

    fn offload(frame: &[u8], gso: Gso, gso_size: u16, partial: bool) -> Offload {
        let l3 = if frame[12] == 0x08 { 14 } else { 18 };
        let csum_start = (l3 + usize::from(frame[l3] & 0x0f) * 4) as u16;
        let udp = frame[l3 + 9] == PROTO_UDP;
        Offload {
            gso,
            gso_size,
            csum_partial: partial,
            csum_start,
            csum_offset: if udp { 6 } else { 16 },
        }
    }

    fn run(frame: &[u8], off: &Offload) -> Result<Vec<Vec<u8>>, WireError> {
        let mut scratch = [0u8; 2048];
        let mut out = Vec::new();
        let n = segment(frame, off, &mut scratch, |s| out.push(s.to_vec()))?;
        assert_eq!(n, out.len());
        Ok(out)
    }

    /// Offsets of a segment's IPv4 and L4 headers, and of its payload.
    fn offsets(seg: &[u8]) -> (usize, usize, usize) {
        let l3 = if seg[12] == 0x08 { 14 } else { 18 };
        let l4 = l3 + usize::from(seg[l3] & 0x0f) * 4;
        let pay = if seg[l3 + 9] == PROTO_TCP {
            l4 + usize::from(seg[l4 + 12] >> 4) * 4
        } else {
            l4 + 8
        };
        (l3, l4, pay)
    }

    /// IPv4 and L4 checksums verify: each sum (with the pseudo-header for L4) folds to 0xffff.
    fn assert_checksums_verify(seg: &[u8]) {
        let (l3, l4, _) = offsets(seg);
        assert_eq!(fold(sum(&seg[l3..l4], 0)), 0xffff, "IPv4 header checksum");
        let end = l3 + usize::from(u16::from_be_bytes([seg[l3 + 2], seg[l3 + 3]]));
        let proto = seg[l3 + 9];
        let ph = pseudo_header(SRC, DST, proto, (end - l4) as u16);
        assert_eq!(fold(sum(&seg[l4..end], ph)), 0xffff, "L4 checksum");
    }

    fn be16_at(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    fn be32_at(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[test]
    fn tcp_super_frame_cuts_into_three_segments() {
        let payload = pattern(2500);
        let seq0 = 0xffff_fc00;
        let flags = ACK | TCP_FIN | TCP_PSH | TCP_CWR;
        let l4 = L4::Tcp {
            opts: 12,
            flags,
            seq: seq0,
        };
        let f = build(None, 0, l4, &payload, true);
        let off = offload(&f, Gso::TcpV4 { ecn: false }, 1000, true);
        assert_eq!(max_segment_l3_len(&f, &off), Some(20 + 32 + 1000));
        let segs = run(&f, &off).unwrap();
        assert_eq!(segs.len(), 3);
        let (l3, l4, pay) = offsets(&f);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let chunk = if i < 2 { 1000 } else { 500 };
            assert_eq!(s.len(), 14 + 20 + 32 + chunk);
            assert_eq!(usize::from(be16_at(s, l3 + 2)), 20 + 32 + chunk);
            assert_eq!(be16_at(s, l3 + 4), IDENT.wrapping_add(i as u16));
            assert_eq!(be16_at(s, l3 + 6), 0x4000, "DF kept, not a fragment");
            assert_eq!(be32_at(s, l4 + 4), seq0.wrapping_add(1000 * i as u32));
            let want = match i {
                0 => ACK | TCP_CWR,
                1 => ACK,
                _ => ACK | TCP_FIN | TCP_PSH,
            };
            assert_eq!(s[l4 + 13], want, "flags of segment {i}");
            assert_eq!(s[..l3], f[..l3], "Ethernet header");
            assert_eq!(s[l4 + 8..l4 + 13], f[l4 + 8..l4 + 13], "ack, data offset");
            assert_eq!(s[l4 + 14..l4 + 16], f[l4 + 14..l4 + 16], "window");
            assert_eq!(s[l4 + 18..pay], f[l4 + 18..pay], "urgent pointer, options");
            assert_checksums_verify(s);
            joined.extend_from_slice(&s[pay..]);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn udp_super_frame_cuts_into_datagrams() {
        let payload = pattern(3500);
        let mut f = build(None, 8, L4::Udp, &payload, true);
        let (l3, l4, pay) = offsets(&f);
        // The UDP length of the super-frame is not trusted; the IPv4 total length is.
        for udp_len in [8 + 3500, 0x1234, 0] {
            f[l4 + 4..l4 + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            let off = offload(&f, Gso::UdpL4, 1200, true);
            assert_eq!(max_segment_l3_len(&f, &off), Some(28 + 8 + 1200));
            let segs = run(&f, &off).unwrap();
            assert_eq!(segs.len(), 3);
            let mut joined = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                let chunk = if i < 2 { 1200 } else { 1100 };
                assert_eq!(s.len(), pay + chunk);
                assert_eq!(usize::from(be16_at(s, l3 + 2)), 28 + 8 + chunk);
                assert_eq!(be16_at(s, l3 + 4), IDENT.wrapping_add(i as u16));
                assert_eq!(usize::from(be16_at(s, l4 + 4)), 8 + chunk);
                assert_ne!(be16_at(s, l4 + 6), 0);
                assert_eq!(s[l3 + 20..l4], f[l3 + 20..l4], "IPv4 options");
                assert_checksums_verify(s);
                joined.extend_from_slice(&s[pay..]);
            }
            assert_eq!(joined, payload);
        }
    }

    #[test]
    fn vlan_tagged_super_frames_keep_their_tag() {
        for tag in [ETHERTYPE_VLAN, ETHERTYPE_QINQ] {
            let payload = pattern(1800);
            let l4 = L4::Tcp {
                opts: 0,
                flags: ACK | TCP_PSH,
                seq: 7,
            };
            let f = build(Some(tag), 0, l4, &payload, false);
            let off = offload(&f, Gso::TcpV4 { ecn: true }, 1448, true);
            let segs = run(&f, &off).unwrap();
            assert_eq!(segs.len(), 2);
            for s in &segs {
                assert_eq!(s[..18], f[..18]);
                assert_checksums_verify(s);
                let h = PacketHeaders::from_ethernet_slice(s).unwrap();
                assert!(h.vlan.is_some());
                assert!(matches!(h.net, Some(NetHeaders::Ipv4(..))));
            }
            assert_eq!(segs[0].len(), 18 + 40 + 1448);
            assert_eq!(segs[1].len(), 18 + 40 + 352);
            assert_eq!(segs[0][18 + 20 + 13], ACK);
            assert_eq!(segs[1][18 + 20 + 13], ACK | TCP_PSH);
        }
    }

    #[test]
    fn a_frame_that_fits_one_segment_only_gets_its_checksum_completed() {
        let payload = pattern(600);
        let l4 = L4::Tcp {
            opts: 12,
            flags: ACK | TCP_PSH | TCP_FIN | TCP_CWR,
            seq: 1,
        };
        let complete = build(None, 4, l4, &payload, false);
        let partial = build(None, 4, l4, &payload, true);
        for gso in [Gso::TcpV4 { ecn: false }, Gso::None] {
            let off = offload(&partial, gso, 1448, true);
            assert_eq!(run(&partial, &off).unwrap(), vec![complete.clone()]);
            assert_eq!(max_segment_l3_len(&partial, &off), Some(24 + 32 + 600));
        }
        // An empty payload still makes one segment.
        let bare = build(
            None,
            0,
            L4::Tcp {
                opts: 0,
                flags: ACK,
                seq: 9,
            },
            &[],
            true,
        );
        let off = offload(&bare, Gso::TcpV4 { ecn: false }, 1448, true);
        let want = build(
            None,
            0,
            L4::Tcp {
                opts: 0,
                flags: ACK,
                seq: 9,
            },
            &[],
            false,
        );
        assert_eq!(run(&bare, &off).unwrap(), vec![want]);
        // Gso::None: the frame as it is, padding and all; any ethertype when not partial.
        let mut padded = complete.clone();
        padded.extend_from_slice(&[0xee; 6]);
        assert_eq!(run(&padded, &Offload::NONE).unwrap(), vec![padded.clone()]);
        let arp = [0xffu8; 42];
        assert_eq!(run(&arp, &Offload::NONE).unwrap(), vec![arp.to_vec()]);
    }

    #[test]
    fn a_udp_checksum_of_zero_is_sent_as_ffff() {
        // Choose the last two payload bytes so that the full sum is 0xffff (checksum 0).
        let mut payload = pattern(100);
        payload[98..].copy_from_slice(&[0, 0]);
        let f = build(None, 0, L4::Udp, &payload, true);
        let (_, l4, _) = offsets(&f);
        let mut z = f.clone();
        z[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
        let s = fold(sum(&z[l4..], pseudo_header(SRC, DST, PROTO_UDP, 108)));
        payload[98..].copy_from_slice(&(!s).to_be_bytes());
        let mut f = build(None, 0, L4::Udp, &payload, true);
        let off = offload(&f, Gso::UdpL4, 1400, true);
        let segs = run(&f, &off).unwrap();
        assert_eq!(be16_at(&segs[0], l4 + 6), 0xffff);
        assert!(complete_checksum(&mut f, &off));
        assert_eq!(be16_at(&f, l4 + 6), 0xffff);
        assert_eq!(f, segs[0]);
    }

    #[test]
    fn complete_checksum_restores_the_full_sum() {
        let payload = pattern(777);
        for l4 in [
            L4::Tcp {
                opts: 8,
                flags: ACK,
                seq: 42,
            },
            L4::Udp,
        ] {
            let full = build(Some(ETHERTYPE_VLAN), 4, l4, &payload, false);
            let (l3, l4_at, _) = offsets(&full);
            let off = offload(&full, Gso::None, 0, true);
            let field = usize::from(off.csum_start + off.csum_offset);
            let l4_len = (full.len() - l4_at) as u16;
            let mut f = full.clone();
            let p = partial_pseudo_sum(SRC, DST, full[l3 + 9], l4_len);
            f[field..field + 2].copy_from_slice(&p.to_be_bytes());
            assert_ne!(f, full);
            assert_eq!(run(&f, &off).unwrap(), vec![full.clone()]);
            assert!(complete_checksum(&mut f, &off));
            assert_eq!(f, full);

            // Offsets outside the L4 part of the packet leave the frame as it is.
            let bad = [
                Offload {
                    csum_start: l4_at as u16 - 2,
                    csum_offset: 0,
                    ..off
                },
                Offload {
                    csum_offset: l4_len - 1,
                    ..off
                },
                Offload {
                    csum_start: u16::MAX,
                    csum_offset: u16::MAX,
                    ..off
                },
            ];
            for b in bad {
                let mut g = f.clone();
                assert!(!complete_checksum(&mut g, &b), "{b:?}");
                assert_eq!(g, f);
                assert_eq!(run(&f, &b), Err(WireError::Truncated));
            }
        }
    }

    #[test]
    fn malformed_super_frames_are_refused_before_anything_is_emitted() {
        let payload = pattern(3000);
        let tcp = build(
            None,
            0,
            L4::Tcp {
                opts: 4,
                flags: ACK,
                seq: 1,
            },
            &payload,
            true,
        );
        let udp = build(None, 0, L4::Udp, &payload, true);
        let t_off = offload(&tcp, Gso::TcpV4 { ecn: false }, 1000, true);
        let u_off = offload(&udp, Gso::UdpL4, 1000, true);
        let edit = |f: &[u8], at: usize, v: &[u8]| {
            let mut g = f.to_vec();
            g[at..at + v.len()].copy_from_slice(v);
            g
        };
        let cases: Vec<(&str, Vec<u8>, Offload, WireError)> = vec![
            (
                "IPv6 ethertype",
                edit(&tcp, 12, &[0x86, 0xdd]),
                t_off,
                WireError::BadVersion,
            ),
            (
                "IP version 6",
                edit(&tcp, 14, &[0x65]),
                t_off,
                WireError::BadVersion,
            ),
            (
                "ihl 4",
                edit(&tcp, 14, &[0x44]),
                t_off,
                WireError::BadHeaderLength,
            ),
            (
                "ihl beyond",
                edit(&tcp, 14, &[0x4f]),
                t_off,
                WireError::BadDataOffset,
            ),
            (
                "total < ihl",
                edit(&tcp, 16, &[0, 19]),
                t_off,
                WireError::BadTotalLength,
            ),
            (
                "total < tcp",
                edit(&tcp, 16, &[0, 39]),
                t_off,
                WireError::BadTotalLength,
            ),
            (
                "total < udp",
                edit(&udp, 16, &[0, 27]),
                u_off,
                WireError::BadTotalLength,
            ),
            (
                "total > frame",
                edit(&tcp, 16, &[0xff, 0xff]),
                t_off,
                WireError::Truncated,
            ),
            (
                "MF",
                edit(&tcp, 20, &[0x20, 0]),
                t_off,
                WireError::BadTotalLength,
            ),
            (
                "frag offset",
                edit(&tcp, 20, &[0x00, 1]),
                t_off,
                WireError::BadTotalLength,
            ),
            ("UDP as TCP", udp.clone(), t_off, WireError::BadDataOffset),
            ("TCP as UDP", tcp.clone(), u_off, WireError::BadUdpLength),
            (
                "doff 4",
                edit(&tcp, 46, &[0x40]),
                t_off,
                WireError::BadDataOffset,
            ),
            (
                "doff 0",
                edit(&tcp, 46, &[0x00]),
                t_off,
                WireError::BadDataOffset,
            ),
            (
                "gso_size 0",
                tcp.clone(),
                Offload {
                    gso_size: 0,
                    ..t_off
                },
                WireError::BadTotalLength,
            ),
            (
                "UDP gso_size 0",
                udp.clone(),
                Offload {
                    gso_size: 0,
                    ..u_off
                },
                WireError::BadTotalLength,
            ),
        ];
        for (name, f, off, want) in cases {
            let mut emitted = 0;
            let mut scratch = [0u8; 2048];
            let r = segment(&f, &off, &mut scratch, |_| emitted += 1);
            assert_eq!(r, Err(want), "{name}");
            assert_eq!(emitted, 0, "{name}");
            assert_eq!(max_segment_l3_len(&f, &off), None, "{name}");
        }
        // A doff of 15 words is in bounds for a long payload but not for a short one.
        let short = build(
            None,
            0,
            L4::Tcp {
                opts: 0,
                flags: ACK,
                seq: 1,
            },
            &[1, 2, 3],
            true,
        );
        let f = edit(&short, 46, &[0xf0]);
        assert_eq!(run(&f, &t_off), Err(WireError::BadDataOffset));
    }

    #[test]
    fn a_scratch_too_small_for_one_segment_emits_nothing() {
        let payload = pattern(3000);
        let f = build(
            None,
            0,
            L4::Tcp {
                opts: 12,
                flags: ACK,
                seq: 1,
            },
            &payload,
            true,
        );
        let off = offload(&f, Gso::TcpV4 { ecn: false }, 1448, true);
        let need = 14 + 20 + 32 + 1448;
        let mut scratch = [0u8; 2048];
        let mut emitted = 0;
        let r = segment(&f, &off, &mut scratch[..need - 1], |_| emitted += 1);
        assert_eq!((r, emitted), (Err(WireError::Truncated), 0));
        assert_eq!(
            segment(&f, &off, &mut scratch[..need], |_| emitted += 1),
            Ok(3)
        );
        assert_eq!(emitted, 3);
        let r = segment(&f, &Offload::NONE, &mut scratch, |_| emitted += 1);
        assert_eq!((r, emitted), (Err(WireError::Truncated), 3));
    }

    #[test]
    fn every_truncation_is_refused() {
        let payload = pattern(1500);
        let frames = [
            build(
                None,
                8,
                L4::Tcp {
                    opts: 12,
                    flags: ACK,
                    seq: 1,
                },
                &payload,
                true,
            ),
            build(Some(ETHERTYPE_QINQ), 0, L4::Udp, &payload, true),
            build(
                Some(ETHERTYPE_VLAN),
                40,
                L4::Tcp {
                    opts: 40,
                    flags: 0xff,
                    seq: 3,
                },
                &[],
                true,
            ),
        ];
        for f in &frames {
            let udp = f[offsets(f).0 + 9] == PROTO_UDP;
            let gso = if udp {
                Gso::UdpL4
            } else {
                Gso::TcpV4 { ecn: false }
            };
            let offs = [offload(f, gso, 500, true), offload(f, Gso::None, 0, true)];
            for off in &offs {
                assert!(run(f, off).is_ok());
                for n in 0..f.len() {
                    let t = &f[..n];
                    assert!(run(t, off).is_err(), "len {n} of {}", f.len());
                    assert_eq!(max_segment_l3_len(t, off), None);
                    let mut c = t.to_vec();
                    assert!(!complete_checksum(&mut c, off));
                    assert_eq!(c, t);
                }
            }
        }
    }

    #[test]
    fn segmenting_does_not_allocate() {
        let payload = pattern(9000);
        let tcp = build(
            Some(ETHERTYPE_VLAN),
            0,
            L4::Tcp {
                opts: 12,
                flags: ACK,
                seq: 1,
            },
            &payload,
            true,
        );
        let udp = build(None, 0, L4::Udp, &payload, true);
        let t_off = offload(&tcp, Gso::TcpV4 { ecn: false }, 1448, true);
        let u_off = offload(&udp, Gso::UdpL4, 1200, true);
        let mut copy = tcp.clone();
        let mut scratch = [0u8; 2048];
        let mut bytes = 0;
        let info = allocation_counter::measure(|| {
            for (f, off) in [(&tcp, &t_off), (&udp, &u_off)] {
                segment(f, off, &mut scratch, |s| bytes += s.len()).unwrap();
                std::hint::black_box(max_segment_l3_len(f, off));
                let _ = segment(&f[..100], off, &mut scratch, |_| {});
            }
            let none = Offload {
                gso: Gso::None,
                ..t_off
            };
            assert!(complete_checksum(&mut copy, &none));
        });
        assert_eq!(info.count_total, 0);
        assert!(bytes > 18000);
    }

    fn tag_strategy() -> impl Strategy<Value = Option<u16>> {
        prop_oneof![
            Just(None),
            Just(Some(ETHERTYPE_VLAN)),
            Just(Some(ETHERTYPE_QINQ))
        ]
    }

    /// Parses a segment with etherparse and checks its IPv4 header; returns its headers.
    fn etherparse_checked(s: &[u8], i: usize) -> (etherparse::Ipv4Header, TransportHeader, &[u8]) {
        let h = PacketHeaders::from_ethernet_slice(s).expect("etherparse parses the segment");
        let Some(NetHeaders::Ipv4(ip, _)) = h.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        assert_eq!(ip.identification, IDENT.wrapping_add(i as u16));
        assert!(!ip.more_fragments && ip.fragment_offset.value() == 0 && ip.dont_fragment);
        let payload = match h.payload {
            PayloadSlice::Tcp(p) | PayloadSlice::Udp(p) => p,
            other => panic!("no L4 payload: {other:?}"),
        };
        (ip, h.transport.expect("an L4 header"), payload)
    }

    proptest! {
        #[test]
        fn tcp_segments_agree_with_etherparse(
            plen in 1usize..=20000,
            // Headers are at most 18 + 60 + 60 bytes: every gso_size here fits a 2048 scratch.
            gso_size in 1u16..=1460,
            opt_words in 0usize..=10,
            ip_opt_words in 0usize..=10,
            flags in any::<u8>(),
            seq0 in any::<u32>(),
            partial in any::<bool>(),
            tag in tag_strategy(),
        ) {
            let payload = pattern(plen);
            let l4 = L4::Tcp { opts: opt_words * 4, flags, seq: seq0 };
            let f = build(tag, ip_opt_words * 4, l4, &payload, partial);
            let off = offload(&f, Gso::TcpV4 { ecn: false }, gso_size, partial);
            let segs = run(&f, &off).unwrap();
            let gso = usize::from(gso_size);
            prop_assert_eq!(segs.len(), plen.div_ceil(gso));
            let mut joined = Vec::with_capacity(plen);
            let mut max_l3 = 0;
            let mut next_seq = seq0;
            for (i, s) in segs.iter().enumerate() {
                let (ip, th, p) = etherparse_checked(s, i);
                let TransportHeader::Tcp(tcp) = th else { panic!("not TCP") };
                prop_assert_eq!(tcp.checksum, tcp.calc_checksum_ipv4(&ip, p).unwrap());
                prop_assert_eq!(tcp.sequence_number, next_seq);
                prop_assert_eq!(tcp.options.as_slice(), &f[offsets(&f).1 + 20..offsets(&f).2]);
                let last = i + 1 == segs.len();
                prop_assert_eq!(tcp.fin, last && flags & TCP_FIN != 0);
                prop_assert_eq!(tcp.psh, last && flags & TCP_PSH != 0);
                prop_assert_eq!(tcp.cwr, i == 0 && flags & TCP_CWR != 0);
                prop_assert_eq!((tcp.syn, tcp.rst, tcp.ack), (flags & 2 != 0, flags & 4 != 0, flags & ACK != 0));
                prop_assert_eq!((tcp.urg, tcp.ece), (flags & 0x20 != 0, flags & 0x40 != 0));
                prop_assert_eq!(p.len(), gso.min(plen - i * gso));
                next_seq = next_seq.wrapping_add(p.len() as u32);
                max_l3 = max_l3.max(usize::from(ip.total_len));
                joined.extend_from_slice(p);
            }
            prop_assert_eq!(&joined, &payload);
            prop_assert_eq!(max_segment_l3_len(&f, &off), Some(max_l3));
        }

        #[test]
        fn udp_segments_agree_with_etherparse(
            plen in 1usize..=20000,
            gso_size in 1u16..=1460,
            ip_opt_words in 0usize..=10,
            partial in any::<bool>(),
            tag in tag_strategy(),
        ) {
            let payload = pattern(plen);
            let f = build(tag, ip_opt_words * 4, L4::Udp, &payload, partial);
            let off = offload(&f, Gso::UdpL4, gso_size, partial);
            let segs = run(&f, &off).unwrap();
            let gso = usize::from(gso_size);
            prop_assert_eq!(segs.len(), plen.div_ceil(gso));
            let mut joined = Vec::with_capacity(plen);
            for (i, s) in segs.iter().enumerate() {
                let (ip, th, p) = etherparse_checked(s, i);
                let TransportHeader::Udp(udp) = th else { panic!("not UDP") };
                prop_assert_eq!(usize::from(udp.length), 8 + p.len());
                prop_assert_eq!(udp.checksum, udp.calc_checksum_ipv4(&ip, p).unwrap());
                prop_assert_eq!(p.len(), gso.min(plen - i * gso));
                joined.extend_from_slice(p);
            }
            prop_assert_eq!(&joined, &payload);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            kind in 0u8..3,
            gso_size in any::<u16>(),
            partial in any::<bool>(),
            csum_start in any::<u16>(),
            csum_offset in any::<u16>(),
            scratch_len in 0usize..400,
        ) {
            let gso = [Gso::None, Gso::TcpV4 { ecn: false }, Gso::UdpL4][usize::from(kind)];
            let off = Offload { gso, gso_size, csum_partial: partial, csum_start, csum_offset };
            let mut scratch = [0u8; 400];
            let _ = segment(&bytes, &off, &mut scratch[..scratch_len], |_| {});
            let _ = max_segment_l3_len(&bytes, &off);
            let mut c = bytes.clone();
            let _ = complete_checksum(&mut c, &off);
        }

        #[test]
        fn corrupted_headers_never_panic(
            edits in proptest::collection::vec((0usize..140, any::<u8>()), 1..6),
            udp in any::<bool>(),
            gso_size in 0u16..=600,
            tag in tag_strategy(),
        ) {
            let payload = pattern(1000);
            let l4 = if udp { L4::Udp } else { L4::Tcp { opts: 20, flags: ACK, seq: 5 } };
            let mut f = build(tag, 8, l4, &payload, true);
            let gso = if udp { Gso::UdpL4 } else { Gso::TcpV4 { ecn: false } };
            let off = offload(&f, gso, gso_size, true);
            for (at, v) in edits {
                f[at] = v;
            }
            let mut segs = 0;
            let mut scratch = [0u8; 2048];
            let r = segment(&f, &off, &mut scratch, |s| {
                // Whatever was accepted comes out with a valid IPv4 header checksum.
                let (l3, l4, _) = offsets(s);
                assert_eq!(fold(sum(&s[l3..l4], 0)), 0xffff);
                segs += 1;
            });
            if let Ok(n) = r {
                prop_assert_eq!(n, segs);
            }
            let _ = max_segment_l3_len(&f, &off);
            let _ = complete_checksum(&mut f, &Offload { gso: Gso::None, ..off });
        }
    }
}
