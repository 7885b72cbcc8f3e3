//! Replies the worker originates in place of a packet: ICMP errors back to its source, and
//! the pair of TCP resets that cuts a flow. The bytes are `wire::emit`'s; this module picks
//! addresses, routes and what to count.

use super::super::counters::{bump, Counters};
use super::super::inspect::TxQueue;
use super::super::route::RouteTable;
use super::super::{DropReason, EngineConfig, Packet, Verdict};
use super::parse::{Icmp, Parsed};
use crate::wire::emit::{IcmpErrorRepr, TcpControlRepr};
use crate::wire::ethernet;
use crate::wire::l4::{icmp_type, tcp_flags};
use crate::wire::proto;

/// An ICMP error to answer a dropped packet with, and the reason it is dropped under.
#[derive(Clone, Copy, Debug)]
pub(super) struct IcmpError {
    pub icmp_type: u8,
    pub code: u8,
    /// Next-hop MTU (fragmentation needed only).
    pub mtu: u16,
    pub reason: DropReason,
}

impl IcmpError {
    /// Time exceeded in transit: the TTL ends here.
    pub const TTL_EXCEEDED: IcmpError = IcmpError {
        icmp_type: icmp_type::TIME_EXCEEDED,
        code: 0,
        mtu: 0,
        reason: DropReason::TtlExceeded,
    };

    /// Fragmentation needed and DF set (RFC 1191), with the next hop's MTU.
    pub fn frag_needed(mtu: u16) -> Self {
        IcmpError {
            icmp_type: icmp_type::DEST_UNREACHABLE,
            code: 4,
            mtu,
            reason: DropReason::FragNeeded,
        }
    }

    /// Communication administratively prohibited (RFC 1812), dropped under `reason`.
    pub fn prohibited(reason: DropReason) -> Self {
        IcmpError {
            icmp_type: icmp_type::DEST_UNREACHABLE,
            code: 13,
            mtu: 0,
            reason,
        }
    }
}

/// Replaces the packet with the ICMP error `e` about it, sent back to its source. Counted
/// under `e.reason` whether or not the reply can be sent.
pub(super) fn icmp_error(
    cfg: &EngineConfig,
    routes: &RouteTable,
    counters: &Counters,
    pkt: &mut Packet<'_>,
    p: &Parsed,
    e: IcmpError,
) -> Verdict {
    let reason = e.reason;
    // Never an error about an error, a fragment tail, or to a non-unicast source.
    if p.icmp == Icmp::Error
        || p.l4 == 0
        || p.src.is_multicast()
        || p.src.is_broadcast()
        || p.src.is_unspecified()
    {
        return Verdict::Drop(reason);
    }
    let Some((tx_if, next_hop)) = routes.lookup(p.src) else {
        return Verdict::Drop(reason);
    };
    let source = if cfg.is_inside(p.src) {
        cfg.icmp_source
    } else {
        cfg.nat
            .public_addrs
            .first()
            .copied()
            .unwrap_or(cfg.icmp_source)
    };
    // Its IP header and 8 bytes of transport (a header is at most 60 bytes: all fit).
    let quote_len = (p.l4 - p.l3 + 8).min(p.end - p.l3);
    let quote = &pkt.buf[p.l3..p.l3 + quote_len];
    let reply = IcmpErrorRepr::new(source, p.src, e.icmp_type, e.code, e.mtu, quote);
    if p.l3 + reply.len() > pkt.buf.len() {
        return Verdict::Drop(reason);
    }
    // The packet is still dropped: count it under its reason; the reply is counted too.
    bump(&counters.drops[reason as usize], 1);
    pkt.len = p.l3 + reply.emit(&mut pkt.buf[p.l3..]);
    ethernet::swap_macs(pkt.buf);
    Verdict::Reply { tx_if, next_hop }
}

/// For a TCP packet `p` of a flow being cut: queues `onward` (a RST to the other end, as it
/// would have received this packet after translation) and replaces the packet with a RST-ACK
/// back to its sender. Anything else (or a RST) is just dropped under `reason`.
pub(super) fn resets(
    routes: &RouteTable,
    txq: &mut TxQueue,
    counters: &Counters,
    pkt: &mut Packet<'_>,
    p: &Parsed,
    onward: TcpControlRepr,
    reason: DropReason,
) -> Verdict {
    if p.proto != proto::TCP || p.tcp_flags & tcp_flags::RST != 0 {
        return Verdict::Drop(reason);
    }
    if let (Some(mut buf), Some((tx_if, hop))) = (txq.take_buf(), routes.lookup(onward.dst)) {
        buf[..p.l3].copy_from_slice(&pkt.buf[..p.l3]);
        let len = onward.emit(&mut buf[p.l3..]);
        txq.push(buf, Some((p.l3 + len, tx_if, hop)));
    }
    let Some((tx_if, next_hop)) = routes.lookup(p.src) else {
        return Verdict::Drop(reason);
    };
    let back = TcpControlRepr {
        src: p.dst,
        dst: p.src,
        sport: p.dport,
        dport: p.sport,
        seq: p.ack,
        ack: p
            .seq
            .wrapping_add((p.payload_end.saturating_sub(p.payload)) as u32),
        flags: tcp_flags::RST | tcp_flags::ACK,
    };
    pkt.len = p.l3 + back.emit(&mut pkt.buf[p.l3..]);
    ethernet::swap_macs(pkt.buf);
    bump(&counters.drops[reason as usize], 1);
    Verdict::Reply { tx_if, next_hop }
}
