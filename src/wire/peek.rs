//! Unvalidated reads of a frame's addressing, for steering and prefetching: a wrong answer
//! only sends a frame to the wrong worker or warms the wrong cache line, and the datapath
//! validates every field it acts on. Every read is bounds-checked (`None` when short).

use std::net::Ipv4Addr;

use super::l4::icmp_type;
use super::proto;

/// The 5-tuple a flow is looked up with (for ICMP echo: the id is `sport` of a request and
/// `dport` of a reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// The big-endian u16 at `at`.
#[inline]
pub fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

#[inline]
fn addr(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(u32::from_be_bytes(
        b.get(at..at + 4)?.try_into().ok()?,
    )))
}

/// Source and destination ports of a TCP or UDP header (its first 4 bytes).
#[inline]
pub fn ports(l4: &[u8]) -> Option<(u16, u16)> {
    Some((be16(l4, 0)?, be16(l4, 2)?))
}

/// Ports of a whole UDP header (8 bytes): what a first fragment of a datagram has of it.
#[inline]
pub fn udp_ports(l4: &[u8]) -> Option<(u16, u16)> {
    l4.get(..8).and_then(ports)
}

/// The tuple of the IPv4 packet `ip` if it is an unfragmented or first-fragment TCP, UDP or
/// ICMP echo packet with 8 bytes of transport header.
#[inline]
pub fn tuple(ip: &[u8]) -> Option<Tuple> {
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if be16(ip, 6)? & 0x1fff != 0 {
        return None;
    }
    let proto = *ip.get(9)?;
    let (src, dst) = (addr(ip, 12)?, addr(ip, 16)?);
    let l4 = ip.get(ihl..ihl + 8)?;
    let (sport, dport) = match proto {
        proto::TCP | proto::UDP => ports(l4)?,
        proto::ICMP => match l4[0] {
            icmp_type::ECHO_REQUEST => (be16(l4, 4)?, 0),
            icmp_type::ECHO_REPLY => (0, be16(l4, 4)?),
            _ => return None,
        },
        _ => return None,
    };
    Some(Tuple {
        src,
        dst,
        proto,
        sport,
        dport,
    })
}

/// Source, destination and protocol of the datagram an ICMP error quotes (`body`: the error
/// after its 8-byte header).
#[inline]
pub fn quoted_addrs(body: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8)> {
    Some((addr(body, 12)?, addr(body, 16)?, *body.get(9)?))
}

/// The transport header (and what follows) of the datagram an ICMP error quotes, located by
/// the quoted header length.
#[inline]
pub fn quoted_l4(body: &[u8]) -> Option<&[u8]> {
    let ihl = usize::from(body.first()? & 0x0f) * 4;
    body.get(ihl..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
    const B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

    fn packet(proto: u8, l4: &[u8]) -> Vec<u8> {
        let len = 20 + l4.len();
        let mut b = vec![0u8; len];
        ipv4::emit_header(&mut b, A, B, proto, len as u16, 64);
        b[20..].copy_from_slice(l4);
        b
    }

    #[test]
    fn reads_tcp_udp_and_echo_tuples() {
        let tcp = packet(proto::TCP, &[0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 0]);
        let t = tuple(&tcp).unwrap();
        assert_eq!((t.src, t.dst, t.proto), (A, B, proto::TCP));
        assert_eq!((t.sport, t.dport), (40_000, 443));
        let echo = packet(proto::ICMP, &[icmp_type::ECHO_REQUEST, 0, 0, 0, 0, 7, 0, 1]);
        assert_eq!(tuple(&echo).map(|t| (t.sport, t.dport)), Some((7, 0)));
        let reply = packet(proto::ICMP, &[icmp_type::ECHO_REPLY, 0, 0, 0, 0, 7, 0, 1]);
        assert_eq!(tuple(&reply).map(|t| (t.sport, t.dport)), Some((0, 7)));
    }

    #[test]
    fn refuses_what_has_no_tuple() {
        let tcp = packet(proto::TCP, &[0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 0]);
        assert_eq!(tuple(&tcp[..27]), None);
        let mut frag = tcp.clone();
        frag[7] = 1; // offset 8 bytes
        assert_eq!(tuple(&frag), None);
        assert_eq!(tuple(&packet(47, &[0; 8])), None);
        let err = packet(
            proto::ICMP,
            &[icmp_type::TIME_EXCEEDED, 0, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(tuple(&err), None);
        assert_eq!(tuple(&[]), None);
        assert_eq!(udp_ports(&[0, 1, 0, 2, 0, 8, 0]), None);
        assert_eq!(udp_ports(&[0, 1, 0, 2, 0, 8, 0, 0]), Some((1, 2)));
    }

    #[test]
    fn reads_a_quote() {
        let udp = packet(proto::UDP, &[0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
        assert_eq!(quoted_addrs(&udp), Some((A, B, proto::UDP)));
        assert_eq!(quoted_l4(&udp).and_then(ports), Some((12345, 53)));
        assert_eq!(quoted_addrs(&udp[..19]), None);
        assert_eq!(quoted_l4(&[]), None);
    }
}
