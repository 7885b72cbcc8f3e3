//! Rewriting a forwarded packet: addresses, ports or ICMP id, TTL, MSS, with incremental
//! checksum updates; later fragments as their first was; ICMP errors with their quote.

use std::net::Ipv4Addr;

use super::super::frag::FragCache;
use super::super::route::RouteTable;
use super::super::{DropReason, Nanos, Packet, Verdict};
use super::parse::{Icmp, Parsed};
use crate::conntrack::{Dir, FlowKey, FlowTable};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::l4::{tcp_flags, IcmpMessage, TcpSegment};
use crate::wire::proto;
use crate::wire::quoted::{Quoted, UdpHeaderMut};

/// Rewrites addresses, ports (or ICMP id) and TTL so the packet reads as `after`, and clamps
/// the MSS of a SYN to `mss_clamp`.
pub(super) fn rewrite(mss_clamp: Option<u16>, pkt: &mut Packet<'_>, p: &Parsed, after: &FlowKey) {
    let (l4, end) = (p.l4, p.end);
    let (old_src, old_dst) = (u32::from(p.src), u32::from(p.dst));
    let (new_src, new_dst) = (u32::from(after.src()), u32::from(after.dst()));
    readdress(pkt, p, after.src(), after.dst());
    // check_offload made sure a partial checksum is this segment's TCP or UDP one.
    let partial = pkt.offload.csum_partial;
    let seg = &mut pkt.buf[l4..end];
    match p.proto {
        proto::TCP => {
            let Ok(mut t) = TcpSegment::new_checked(seg) else {
                return;
            };
            if new_src != old_src || after.sport() != p.sport {
                if partial {
                    t.rewrite_src_partial(old_src, new_src, after.sport());
                } else {
                    t.rewrite_src(old_src, new_src, after.sport());
                }
            }
            if new_dst != old_dst || after.dport() != p.dport {
                if partial {
                    t.rewrite_dst_partial(old_dst, new_dst, after.dport());
                } else {
                    t.rewrite_dst(old_dst, new_dst, after.dport());
                }
            }
            if let Some(clamp) = mss_clamp {
                if t.flags() & tcp_flags::SYN != 0 {
                    if partial {
                        t.clamp_mss_partial(clamp);
                    } else {
                        t.clamp_mss(clamp);
                    }
                }
            }
        }
        proto::UDP => {
            // First fragments fail the length check; the header rewrite is the same.
            let Some(mut u) = UdpHeaderMut::new(seg, partial) else {
                return;
            };
            if new_src != old_src || after.sport() != p.sport {
                u.rewrite_src(old_src, new_src, after.sport());
            }
            if new_dst != old_dst || after.dport() != p.dport {
                u.rewrite_dst(old_dst, new_dst, after.dport());
            }
        }
        proto::ICMP => {
            let Ok(mut m) = IcmpMessage::new_checked(seg) else {
                return;
            };
            let id = if p.icmp == Icmp::EchoRequest {
                after.sport()
            } else {
                after.dport()
            };
            if id != m.echo_id() {
                m.set_echo_id(id);
            }
        }
        _ => {}
    }
}

/// Rewrites the IPv4 source and destination (where they change) and decrements the TTL, each
/// with an incremental header checksum update.
pub(super) fn readdress(pkt: &mut Packet<'_>, p: &Parsed, src: Ipv4Addr, dst: Ipv4Addr) {
    if let Ok(mut ip) = Ipv4Packet::new_checked(&mut pkt.buf[p.l3..p.end]) {
        if src != p.src {
            ip.set_src(src);
        }
        if dst != p.dst {
            ip.set_dst(dst);
        }
        ip.decrement_ttl();
    }
}

/// A non-first fragment: translate its addresses as its first fragment's were.
pub(super) fn later_fragment(
    frags: &FragCache,
    routes: &RouteTable,
    now: Nanos,
    pkt: &mut Packet<'_>,
    p: &Parsed,
) -> Verdict {
    let Some((src, dst)) = frags.lookup(p, now) else {
        return Verdict::Drop(DropReason::FragmentNoFlow);
    };
    if p.ttl <= 1 {
        return Verdict::Drop(DropReason::TtlExceeded);
    }
    let Some((tx_if, next_hop)) = routes.lookup(dst) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    readdress(pkt, p, src, dst);
    Verdict::Forward { tx_if, next_hop }
}

/// Translates an ICMP error (RFC 5508): the outer header and the quoted packet, without
/// refreshing or removing the flow it names.
pub(super) fn icmp_error(
    flows: &FlowTable,
    routes: &RouteTable,
    pkt: &mut Packet<'_>,
    p: &Parsed,
) -> Verdict {
    if p.ttl <= 1 {
        return Verdict::Drop(DropReason::TtlExceeded);
    }
    let q_off = p.l4 + 8;
    let Some(q) = Quoted::parse(&pkt.buf[q_off..p.end]) else {
        return Verdict::Drop(DropReason::BadL4Header);
    };
    // A packet answering the quoted one has the quoted tuple swapped.
    let key = FlowKey::new(q.dst, q.src, q.dport, q.sport, q.proto);
    let Some((idx, dir)) = flows.lookup(&key) else {
        return Verdict::Drop(DropReason::IcmpErrorNoFlow);
    };
    let f = *flows.get(idx);
    // The quoted packet went the other way; restore it as its sender sent it.
    let sent = match dir {
        Dir::Orig => f.reply,
        Dir::Reply => f.orig,
    };
    let far = match dir {
        Dir::Orig => f.orig.dst(),
        Dir::Reply => f.reply.src(),
    };
    let new_outer_dst = sent.src();
    let new_outer_src = if p.src == far {
        match dir {
            Dir::Orig => f.reply.dst(),
            Dir::Reply => f.orig.dst(),
        }
    } else {
        p.src
    };
    let Some((tx_if, next_hop)) = routes.lookup(new_outer_dst) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    q.rewrite(
        &mut pkt.buf[q_off..p.end],
        sent.src(),
        sent.dst(),
        sent.sport(),
        sent.dport(),
    );
    if let Ok(mut m) = IcmpMessage::new_checked(&mut pkt.buf[p.l4..p.end]) {
        m.fill_checksum();
    }
    readdress(pkt, p, new_outer_src, new_outer_dst);
    Verdict::Forward { tx_if, next_hop }
}
