//! Which worker owns a frame's flow, read before the frame is processed (the I/O layer hands
//! frames that arrived at the wrong worker over), and the steering hash it agrees with.

use std::net::Ipv4Addr;

use super::super::EngineConfig;
use crate::nat::SnatPool;
use crate::policy::Policy;
use crate::wire::ethernet::{self, ETHERTYPE_IPV4};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::l4::{icmp_is_error, icmp_type};
use crate::wire::{peek, proto};

/// The multiplier of [`steer_worker`] (2^32 / the golden ratio).
pub(super) const STEER_MUL: u32 = 0x9E37_79B1;

/// See [`super::Worker::steer_worker`].
pub(super) fn steer_worker(src: Ipv4Addr, workers: usize) -> usize {
    let top = u32::from(src).wrapping_mul(STEER_MUL) >> 16;
    (top.wrapping_mul(workers.clamp(1, 0xffff) as u32) >> 16) as usize
}

/// The worker (of `workers`, more than one) that owns the flow of `frame`; see
/// [`super::Worker::owner_of`] for the rules.
pub(super) fn owner_of(
    cfg: &EngineConfig,
    policy: &dyn Policy,
    snat: &SnatPool,
    workers: usize,
    frame: &[u8],
) -> Option<usize> {
    let e = ethernet::parse(frame).ok()?;
    if e.ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(frame.get(e.l3_offset..)?).ok()?;
    if ip.frag_offset() != 0 {
        // no ports: an inside host's fragments go where its flows are
        return if cfg.is_public(ip.dst()) {
            None
        } else {
            inside_owner(cfg, workers, ip.src(), ip.dst())
        };
    }
    let l4 = ip.payload();
    let (sport, dport) = match ip.protocol() {
        proto::TCP | proto::UDP => peek::ports(l4).unwrap_or((0, 0)),
        _ => (0, 0),
    };
    // DNAT flows live on worker 0: their public port is outside the SNAT slices. A
    // target's port 0: the rule keeps the original port, so any port.
    let is_target = |a: Ipv4Addr, port: u16, p: u8| {
        policy
            .dnat_targets()
            .iter()
            .any(|&(ta, tp, tpr)| ta == a && tpr == p && (tp == port || tp == 0))
    };
    if is_target(ip.src(), sport, ip.protocol()) {
        return Some(0);
    }
    if !cfg.is_public(ip.dst()) {
        if ip.protocol() == proto::ICMP && l4.first().is_some_and(|t| icmp_is_error(*t)) {
            // An error goes to the flow of the frame it quotes: one to a DNAT target
            // (the inside server's port unreachable), or one of an inside host's flows in
            // either direction (an inside router's time exceeded, a host's own error).
            let q = l4.get(8..).unwrap_or(&[]);
            if let Some((qsrc, qdst, qproto)) = peek::quoted_addrs(q) {
                let qdport = peek::quoted_l4(q)
                    .and_then(|t| peek::be16(t, 2))
                    .unwrap_or(0);
                if is_target(qdst, qdport, qproto) {
                    return Some(0);
                }
                return inside_owner(cfg, workers, qsrc, qdst)
                    .or_else(|| inside_owner(cfg, workers, qdst, qsrc));
            }
        }
        return inside_owner(cfg, workers, ip.src(), ip.dst());
    }
    if matches!(ip.protocol(), proto::TCP | proto::UDP) && !cfg.in_snat_range(dport) {
        return Some(0);
    }
    // (port, protocol) of the flow: for an error, the quoted packet's.
    let (port, flow_proto) = match ip.protocol() {
        p @ (proto::TCP | proto::UDP) if l4.len() >= 4 => (dport, p),
        proto::ICMP if l4.len() >= 8 => {
            if l4[0] == icmp_type::ECHO_REPLY {
                (peek::be16(l4, 4)?, proto::ICMP)
            } else if icmp_is_error(l4[0]) {
                // The quoted packet left from our public port: its source port.
                let q = &l4[8..];
                let qp = peek::quoted_l4(q)?.get(..6)?;
                let qproto = *q.get(9)?;
                if qproto == proto::ICMP {
                    (peek::be16(qp, 4)?, qproto)
                } else {
                    (peek::be16(qp, 0)?, qproto)
                }
            } else {
                return None;
            }
        }
        _ => return None,
    };
    // A DNAT rule's public port (never a SNAT port: see `Policy::dnat_publics`).
    if policy
        .dnat_publics()
        .iter()
        .any(|&(a, pr, lo, hi)| a == ip.dst() && pr == flow_proto && (lo..=hi).contains(&port))
    {
        return Some(0);
    }
    let home = cfg.nat.owner_of_port(port, workers)?;
    // A port borrowed from its slice's worker (its owner, where steering sends the
    // frame): the borrower holds the flow.
    let lent = snat
        .addr_index(ip.dst())
        .and_then(|i| snat.lent_to(i, flow_proto, port));
    Some(lent.unwrap_or(home))
}

/// The worker of an inside host's frames to anywhere but a SNAT address (see
/// [`super::Worker::owner_of`]); None when `src` is not inside or the flow is untranslated
/// (an inside host and a SNAT-exempt peer, seen from either side: both directions must take
/// the same rule, and the steering program's symmetric hash brings them together).
fn inside_owner(cfg: &EngineConfig, workers: usize, src: Ipv4Addr, dst: Ipv4Addr) -> Option<usize> {
    let exempt = |a: Ipv4Addr| cfg.nat.is_exempt(a);
    if !cfg.is_inside(src) || exempt(dst) || (exempt(src) && cfg.is_inside(dst)) {
        return None;
    }
    Some(steer_worker(src, workers))
}
