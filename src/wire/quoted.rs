//! The datagram quoted inside an ICMP error (RFC 792): its IPv4 header and the first 8 bytes
//! of its transport header, read to find the flow the error is about and rewritten when the
//! error is translated (RFC 5508).

use std::net::Ipv4Addr;

use super::checksum;
use super::l4::icmp_type;
use super::proto;

/// A parsed quote. For ICMP echo, the id is `sport` of a request and `dport` of a reply (as in
/// a flow key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quoted {
    /// IPv4 header length of the quoted datagram.
    pub ihl: usize,
    /// Bytes of the quote parsed.
    pub len: usize,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// The ICMP type of a quoted echo request or reply.
    pub echo: Option<u8>,
}

impl Quoted {
    /// Parses the body of an ICMP error (after its 8-byte header): a TCP, UDP or ICMP echo
    /// datagram; None for anything else or too short.
    pub fn parse(b: &[u8]) -> Option<Quoted> {
        if b.len() < 28 || b[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        if ihl < 20 || b.len() < ihl + 8 {
            return None;
        }
        let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
        let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
        let proto = b[9];
        let t = &b[ihl..];
        let (sport, dport, echo) = match proto {
            proto::TCP | proto::UDP => (
                u16::from_be_bytes([t[0], t[1]]),
                u16::from_be_bytes([t[2], t[3]]),
                None,
            ),
            proto::ICMP => {
                let id = u16::from_be_bytes([t[4], t[5]]);
                match t[0] {
                    icmp_type::ECHO_REQUEST => (id, 0, Some(t[0])),
                    icmp_type::ECHO_REPLY => (0, id, Some(t[0])),
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(Quoted {
            ihl,
            len: b.len(),
            src,
            dst,
            proto,
            sport,
            dport,
            echo,
        })
    }

    /// Rewrites the quote in `b` (the bytes it was parsed from) to read as `src:sport ->
    /// dst:dport` (for echo, the id is `sport` of a request, `dport` of a reply), keeping its
    /// checksums consistent.
    pub fn rewrite(&self, b: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) {
        if b.len() < self.len {
            return;
        }
        let mut hc = u16::from_be_bytes([b[10], b[11]]);
        let (os, od) = (u32::from(self.src), u32::from(self.dst));
        let (ns, nd) = (u32::from(src), u32::from(dst));
        hc = checksum::update32(checksum::update32(hc, os, ns), od, nd);
        b[10..12].copy_from_slice(&hc.to_be_bytes());
        b[12..16].copy_from_slice(&src.octets());
        b[16..20].copy_from_slice(&dst.octets());
        let t = &mut b[self.ihl..];
        match self.proto {
            proto::UDP | proto::TCP => {
                // The quoted transport checksum is only present for UDP within 8 bytes, and for
                // TCP when more than 8 bytes were quoted.
                let coff = if self.proto == proto::UDP { 6 } else { 16 };
                if t.len() >= coff + 2 {
                    let c = u16::from_be_bytes([t[coff], t[coff + 1]]);
                    if !(self.proto == proto::UDP && c == 0) {
                        let mut n = checksum::update32(checksum::update32(c, os, ns), od, nd);
                        n = checksum::update16(n, self.sport, sport);
                        n = checksum::update16(n, self.dport, dport);
                        t[coff..coff + 2].copy_from_slice(&n.to_be_bytes());
                    }
                }
                t[0..2].copy_from_slice(&sport.to_be_bytes());
                t[2..4].copy_from_slice(&dport.to_be_bytes());
            }
            _ => {
                let (old, new) = match self.echo {
                    Some(icmp_type::ECHO_REQUEST) => (self.sport, sport),
                    _ => (self.dport, dport),
                };
                let c = checksum::update16(u16::from_be_bytes([t[2], t[3]]), old, new);
                t[2..4].copy_from_slice(&c.to_be_bytes());
                t[4..6].copy_from_slice(&new.to_be_bytes());
            }
        }
    }
}

/// A UDP header rewrite that works on first fragments too (no length check against the
/// payload, which a first fragment carries only part of).
#[derive(Debug)]
pub struct UdpHeaderMut<'a> {
    b: &'a mut [u8],
    /// The checksum is partial (the field holds the pseudo-header sum, and zero is not "none").
    partial: bool,
}

impl<'a> UdpHeaderMut<'a> {
    /// None when `b` is shorter than a UDP header.
    pub fn new(b: &'a mut [u8], partial: bool) -> Option<Self> {
        (b.len() >= 8).then_some(UdpHeaderMut { b, partial })
    }

    /// Rewrites the source address and port (the address lives in the pseudo-header).
    pub fn rewrite_src(&mut self, old_addr: u32, new_addr: u32, port: u16) {
        self.rewrite(0, old_addr, new_addr, port);
    }

    /// Rewrites the destination address and port.
    pub fn rewrite_dst(&mut self, old_addr: u32, new_addr: u32, port: u16) {
        self.rewrite(2, old_addr, new_addr, port);
    }

    fn rewrite(&mut self, off: usize, old_addr: u32, new_addr: u32, port: u16) {
        let b = &mut *self.b;
        let old_port = u16::from_be_bytes([b[off], b[off + 1]]);
        let c = u16::from_be_bytes([b[6], b[7]]);
        if self.partial {
            let n = checksum::partial_update32(c, old_addr, new_addr);
            b[6..8].copy_from_slice(&n.to_be_bytes());
        } else if c != 0 {
            let mut n =
                checksum::update16(checksum::update32(c, old_addr, new_addr), old_port, port);
            if n == 0 {
                n = 0xffff;
            }
            b[6..8].copy_from_slice(&n.to_be_bytes());
        }
        b[off..off + 2].copy_from_slice(&port.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::{self, Ipv4Packet};

    const IN: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
    const PUB: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const FAR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

    /// A UDP datagram `src:sport -> dst:dport` with a real checksum over 4 payload bytes.
    fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> [u8; 32] {
        let mut b = [0u8; 32];
        ipv4::emit_header(&mut b, src, dst, proto::UDP, 32, 63);
        b[20..22].copy_from_slice(&sport.to_be_bytes());
        b[22..24].copy_from_slice(&dport.to_be_bytes());
        b[24..26].copy_from_slice(&12u16.to_be_bytes());
        b[28..32].copy_from_slice(b"ping");
        let ps = checksum::pseudo_header(src.octets(), dst.octets(), proto::UDP, 12);
        let c = !checksum::fold(checksum::sum(&b[20..32], ps));
        b[26..28].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn parses_and_rewrites_a_udp_quote() {
        let mut b = udp(PUB, FAR, 40_000, 53);
        let q = Quoted::parse(&b).unwrap();
        assert_eq!((q.src, q.dst, q.proto), (PUB, FAR, proto::UDP));
        assert_eq!((q.sport, q.dport, q.ihl, q.echo), (40_000, 53, 20, None));
        q.rewrite(&mut b, IN, FAR, 5555, 53);
        // The rewritten quote is the datagram as the inside host sent it.
        assert_eq!(b, udp(IN, FAR, 5555, 53));
        assert!(Ipv4Packet::new_checked(&b[..]).unwrap().verify_checksum());
    }

    #[test]
    fn parses_an_echo_quote_and_rejects_others() {
        let mut b = [0u8; 28];
        ipv4::emit_header(&mut b, PUB, FAR, proto::ICMP, 28, 1);
        b[20] = icmp_type::ECHO_REQUEST;
        b[24..26].copy_from_slice(&77u16.to_be_bytes());
        let c = checksum::checksum(&b[20..]);
        b[22..24].copy_from_slice(&c.to_be_bytes());
        let q = Quoted::parse(&b).unwrap();
        assert_eq!(
            (q.sport, q.dport, q.echo),
            (77, 0, Some(icmp_type::ECHO_REQUEST))
        );
        q.rewrite(&mut b, IN, FAR, 9, 0);
        assert_eq!(&b[24..26], &9u16.to_be_bytes());
        assert_eq!(checksum::fold(checksum::sum(&b[20..], 0)), 0xffff);
        b[20] = icmp_type::TIME_EXCEEDED;
        assert_eq!(Quoted::parse(&b), None);
        assert_eq!(Quoted::parse(&b[..27]), None);
    }

    #[test]
    fn udp_header_rewrite_keeps_the_checksum() {
        let mut b = udp(IN, FAR, 5555, 53);
        let mut u = UdpHeaderMut::new(&mut b[20..], false).unwrap();
        u.rewrite_src(u32::from(IN), u32::from(PUB), 40_000);
        let want = udp(PUB, FAR, 40_000, 53);
        assert_eq!(&b[20..], &want[20..]);
        assert!(UdpHeaderMut::new(&mut [0u8; 7], false).is_none());
    }
}
