//! Stage 1 of a frame: validate its headers once and keep what the later stages read.

use std::net::Ipv4Addr;

use super::super::{DropReason, Gso, Packet, Verdict};
use crate::conntrack::FlowKey;
use crate::wire::ethernet::{self, ETHERTYPE_IPV4};
use crate::wire::ipv4::{self, Ipv4Packet, OptionScan};
use crate::wire::l4::{icmp_is_error, icmp_type, tcp_flags, IcmpMessage, TcpSegment, UdpDatagram};
use crate::wire::{checksum, gso, peek, proto, WireError};

/// What the first pass over a packet learned.
#[derive(Clone, Copy, Debug)]
pub(super) struct Parsed {
    pub l3: usize,
    /// Offset of the transport header; 0 marks a non-first fragment.
    pub l4: usize,
    pub end: usize,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp: Icmp,
    /// First fragment of a fragmented datagram (its later fragments need the translation).
    pub first_frag: bool,
    pub ident: u16,
    pub df: bool,
    /// TCP sequence and acknowledgement numbers.
    pub seq: u32,
    pub ack: u32,
    /// The transport payload (TCP data, UDP payload) is `payload..payload_end` of the frame.
    pub payload: usize,
    pub payload_end: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Icmp {
    None,
    EchoRequest,
    EchoReply,
    Error,
}

pub(super) fn wire_reason(e: WireError) -> DropReason {
    match e {
        WireError::Truncated => DropReason::Truncated,
        WireError::BadVersion | WireError::BadHeaderLength | WireError::BadTotalLength => {
            DropReason::BadIpHeader
        }
        WireError::BadDataOffset | WireError::BadUdpLength => DropReason::BadL4Header,
    }
}

/// Validates the IPv4 and transport headers of the IPv4 packet at `l3` of `frame`.
/// `local_addrs`: the appliance's own addresses (what it does not handle is theirs).
pub(super) fn parse(frame: &[u8], l3: usize, local_addrs: &[Ipv4Addr]) -> Result<Parsed, Verdict> {
    let drop = |r| Err(Verdict::Drop(r));
    let ip = Ipv4Packet::new_checked(&frame[l3..]).map_err(|e| Verdict::Drop(wire_reason(e)))?;
    if !ip.verify_checksum() {
        return drop(DropReason::BadIpChecksum);
    }
    // Every fragment carries the source route (its copied flag is set): checked before
    // fragments are told apart.
    match ipv4::scan_options(ip.options()) {
        OptionScan::Pass => {}
        OptionScan::SourceRoute => return drop(DropReason::IpSourceRoute),
        OptionScan::Malformed => return drop(DropReason::BadIpOptions),
    }
    let mut p = Parsed {
        l3,
        l4: l3 + ip.header_len(),
        end: l3 + ip.total_len(),
        src: ip.src(),
        dst: ip.dst(),
        proto: ip.protocol(),
        ttl: ip.ttl(),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp: Icmp::None,
        first_frag: ip.is_fragment() && ip.frag_offset() == 0,
        ident: ip.ident(),
        df: ip.dont_frag(),
        seq: 0,
        ack: 0,
        payload: 0,
        payload_end: 0,
    };
    if ip.frag_offset() != 0 {
        // RFC 1858: a fragment at offset 8 can only exist to overwrite TCP header fields.
        if ip.frag_offset() == 8 && p.proto == proto::TCP {
            return drop(DropReason::FragmentOverlap);
        }
        p.l4 = 0;
        return Ok(p);
    }
    let l4 = ip.payload();
    let dst = p.dst;
    let to_us = || local_addrs.contains(&dst);
    match p.proto {
        proto::TCP => {
            let t = TcpSegment::new_checked(l4).map_err(|e| Verdict::Drop(wire_reason(e)))?;
            p.sport = t.src_port();
            p.dport = t.dst_port();
            p.tcp_flags = t.flags();
            if !tcp_flags::plausible(p.tcp_flags) {
                return drop(DropReason::TcpBadFlags);
            }
            p.seq = t.seq();
            p.ack = t.ack();
            p.payload = p.l4 + t.header_len();
            p.payload_end = p.end;
        }
        proto::UDP => {
            // A first fragment carries only part of the datagram the UDP length covers.
            if p.first_frag {
                let Some((sport, dport)) = peek::udp_ports(l4) else {
                    return drop(DropReason::Truncated);
                };
                p.sport = sport;
                p.dport = dport;
            } else {
                let u = UdpDatagram::new_checked(l4).map_err(|e| Verdict::Drop(wire_reason(e)))?;
                p.sport = u.src_port();
                p.dport = u.dst_port();
                // Bounded by the UDP length field (the IP payload may be padded).
                p.payload = p.l4 + 8;
                p.payload_end = p.payload + u.payload().len();
            }
        }
        proto::ICMP => {
            let m = IcmpMessage::new_checked(l4).map_err(|e| Verdict::Drop(wire_reason(e)))?;
            match m.msg_type() {
                icmp_type::ECHO_REQUEST => {
                    p.icmp = Icmp::EchoRequest;
                    p.sport = m.echo_id();
                }
                icmp_type::ECHO_REPLY => {
                    p.icmp = Icmp::EchoReply;
                    p.dport = m.echo_id();
                }
                t if icmp_is_error(t) => p.icmp = Icmp::Error,
                _ if to_us() => return Err(Verdict::Local),
                _ => return drop(DropReason::UnsupportedIcmp),
            }
        }
        _ if to_us() => return Err(Verdict::Local),
        _ => return drop(DropReason::UnsupportedProtocol),
    }
    Ok(p)
}

/// The flow key of an IPv4 TCP/UDP/ICMP-echo frame, read without validation (see
/// [`super::Worker::warm_index`]); the same key `decide` builds for a valid first fragment or
/// whole datagram.
#[inline]
pub(super) fn quick_key(frame: &[u8]) -> Option<FlowKey> {
    let eth = ethernet::parse(frame).ok()?;
    if eth.ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let t = peek::tuple(frame.get(eth.l3_offset..)?)?;
    Some(FlowKey::new(t.src, t.dst, t.sport, t.dport, t.proto))
}

impl super::super::frag::FragId for Parsed {
    fn frag_key(&self) -> (u32, u32, u16, u8) {
        (
            u32::from(self.src),
            u32::from(self.dst),
            self.ident,
            self.proto,
        )
    }
}

/// Checks a frame's offload metadata against its parsed headers. A partial checksum must be
/// the TCP or UDP one (a non-GSO frame with another is completed here, as its transmitter
/// would have); a super-frame must be an unfragmented TCP (or UDP, for USO) packet.
pub(super) fn check_offload(pkt: &mut Packet<'_>, p: &Parsed) -> Result<(), DropReason> {
    let off = pkt.offload;
    let gso_ok = match off.gso {
        Gso::None => true,
        Gso::TcpV4 { .. } => p.proto == proto::TCP,
        Gso::UdpL4 => p.proto == proto::UDP,
    };
    if !gso_ok || (off.is_gso() && (p.l4 == 0 || p.first_frag || off.gso_size == 0)) {
        return Err(DropReason::BadOffload);
    }
    if off.csum_partial {
        let field = match p.proto {
            proto::TCP => 16,
            proto::UDP => 6,
            _ => 0,
        };
        let ours = field != 0
            && p.l4 != 0
            && !p.first_frag
            && usize::from(off.csum_start) == p.l4
            && off.csum_offset == field;
        if !ours {
            if off.is_gso() || !gso::complete_checksum(&mut pkt.buf[..pkt.len], &off) {
                return Err(DropReason::BadOffload);
            }
            pkt.offload.csum_partial = false;
        }
    }
    Ok(())
}

/// Whether the TCP or UDP checksum of the unfragmented segment `l4` verifies (a UDP checksum of
/// zero means none was sent, which IPv4 receivers accept).
pub(super) fn l4_checksum_ok(l4: &[u8], p: &Parsed) -> bool {
    let Ok(len) = u16::try_from(l4.len()) else {
        return false;
    };
    if p.proto == proto::UDP && l4.get(6..8) == Some(&[0, 0][..]) {
        return true;
    }
    let ps = checksum::pseudo_header(p.src.octets(), p.dst.octets(), p.proto, len);
    checksum::fold(checksum::sum(l4, ps)) == 0xffff
}
