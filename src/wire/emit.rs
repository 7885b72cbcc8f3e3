//! Packets the appliance originates, built from a small description (smoltcp's `Repr::emit`):
//! the datapath says what to send, this module knows where the bytes go.
//!
//! Each `emit` writes an IPv4 header and what follows it at the start of `buf` (the Ethernet
//! header before it is the caller's), fills every checksum and returns the bytes written, or
//! 0 when `buf` is too short (nothing is written then).

use std::net::Ipv4Addr;

use super::{checksum, ipv4, proto};

/// TTL of the packets the appliance originates.
const TTL: u8 = 64;
const IPV4_LEN: usize = 20;
const TCP_LEN: usize = 20;
const ICMP_LEN: usize = 8;

/// A TCP segment with no options and no payload (a RST, a RST-ACK) in an IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpControlRepr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

impl TcpControlRepr {
    /// Bytes `emit` writes.
    pub const LEN: usize = IPV4_LEN + TCP_LEN;

    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let Some(b) = buf.get_mut(..Self::LEN) else {
            return 0;
        };
        ipv4::emit_header(b, self.src, self.dst, proto::TCP, Self::LEN as u16, TTL);
        let t = &mut b[IPV4_LEN..];
        t[0..2].copy_from_slice(&self.sport.to_be_bytes());
        t[2..4].copy_from_slice(&self.dport.to_be_bytes());
        t[4..8].copy_from_slice(&self.seq.to_be_bytes());
        t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        t[12] = ((TCP_LEN / 4) as u8) << 4;
        t[13] = self.flags;
        // window, checksum, urgent pointer
        t[14..20].fill(0);
        let ps = checksum::pseudo_header(
            self.src.octets(),
            self.dst.octets(),
            proto::TCP,
            TCP_LEN as u16,
        );
        let c = !checksum::fold(checksum::sum(t, ps));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        Self::LEN
    }
}

/// An ICMP error (RFC 792) quoting the start of the datagram it answers: its IP header and the
/// first 8 bytes of its payload, at most 68 bytes (RFC 1812 4.3.2.3 allows more; one header
/// and 8 bytes is what every receiver needs to find the socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpErrorRepr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub icmp_type: u8,
    pub code: u8,
    /// Next-hop MTU of a "fragmentation needed" (RFC 1191); 0 otherwise.
    pub mtu: u16,
    quote: [u8; Self::MAX_QUOTE],
    quote_len: usize,
}

impl IcmpErrorRepr {
    /// The longest quote kept: a 60-byte IP header and 8 bytes of transport.
    pub const MAX_QUOTE: usize = 68;

    /// An error about `quote` (copied, so the reply may be built over the datagram it quotes);
    /// a longer quote is cut to [`Self::MAX_QUOTE`] bytes.
    pub fn new(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        icmp_type: u8,
        code: u8,
        mtu: u16,
        quote: &[u8],
    ) -> Self {
        let quote_len = quote.len().min(Self::MAX_QUOTE);
        let mut q = [0u8; Self::MAX_QUOTE];
        q[..quote_len].copy_from_slice(&quote[..quote_len]);
        IcmpErrorRepr {
            src,
            dst,
            icmp_type,
            code,
            mtu,
            quote: q,
            quote_len,
        }
    }

    /// The quoted bytes.
    pub fn quote(&self) -> &[u8] {
        &self.quote[..self.quote_len]
    }

    /// Bytes `emit` writes.
    pub fn len(&self) -> usize {
        IPV4_LEN + ICMP_LEN + self.quote_len
    }

    /// Never: an error always has its headers (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let total = self.len();
        let Some(b) = buf.get_mut(..total) else {
            return 0;
        };
        ipv4::emit_header(b, self.src, self.dst, proto::ICMP, total as u16, TTL);
        let icmp = &mut b[IPV4_LEN..];
        icmp[0] = self.icmp_type;
        icmp[1] = self.code;
        // checksum, unused
        icmp[2..6].fill(0);
        icmp[6..8].copy_from_slice(&self.mtu.to_be_bytes());
        icmp[ICMP_LEN..].copy_from_slice(self.quote());
        let c = checksum::checksum(icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::Ipv4Packet;
    use crate::wire::l4::{icmp_type, tcp_flags, IcmpMessage, TcpSegment};

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
    const B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

    #[test]
    fn tcp_control_emits_and_parses_back() {
        let r = TcpControlRepr {
            src: A,
            dst: B,
            sport: 40_000,
            dport: 443,
            seq: 0xdead_beef,
            ack: 7,
            flags: tcp_flags::RST | tcp_flags::ACK,
        };
        let mut buf = [0xaau8; 64];
        assert_eq!(r.emit(&mut buf), TcpControlRepr::LEN);
        let ip = Ipv4Packet::new_checked(&buf[..TcpControlRepr::LEN]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src(), ip.dst(), ip.protocol()), (A, B, proto::TCP));
        assert_eq!((ip.total_len(), ip.ttl(), ip.dont_frag()), (40, TTL, true));
        let l4 = ip.payload();
        let t = TcpSegment::new_checked(l4).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (40_000, 443));
        assert_eq!((t.seq(), t.ack(), t.flags()), (0xdead_beef, 7, r.flags));
        assert_eq!(t.header_len(), 20);
        assert!(t.payload().is_empty());
        let ps = checksum::pseudo_header(A.octets(), B.octets(), proto::TCP, 20);
        assert_eq!(checksum::fold(checksum::sum(l4, ps)), 0xffff);
        assert_eq!(buf[40], 0xaa, "nothing written past the segment");
    }

    #[test]
    fn short_buffers_are_left_alone() {
        let r = TcpControlRepr {
            src: A,
            dst: B,
            sport: 1,
            dport: 2,
            seq: 3,
            ack: 4,
            flags: tcp_flags::RST,
        };
        let mut buf = [0u8; 39];
        assert_eq!(r.emit(&mut buf), 0);
        assert_eq!(buf, [0u8; 39]);
        let e = IcmpErrorRepr::new(A, B, icmp_type::TIME_EXCEEDED, 0, 0, &[1; 28]);
        let mut buf = [0u8; 55];
        assert_eq!(e.emit(&mut buf), 0);
        assert_eq!(buf, [0u8; 55]);
    }

    #[test]
    fn icmp_error_emits_and_parses_back() {
        // The datagram answered: a UDP packet from B to A with 4 bytes of payload.
        let mut dgram = [0u8; 32];
        ipv4::emit_header(&mut dgram, B, A, proto::UDP, 32, 1);
        dgram[20..28].copy_from_slice(&[0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0, 0]);
        let e = IcmpErrorRepr::new(A, B, icmp_type::DEST_UNREACHABLE, 4, 1400, &dgram[..28]);
        assert_eq!(e.len(), 56);
        let mut buf = [0u8; 80];
        assert_eq!(e.emit(&mut buf), 56);
        let ip = Ipv4Packet::new_checked(&buf[..56]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src(), ip.dst(), ip.protocol()), (A, B, proto::ICMP));
        let m = IcmpMessage::new_checked(ip.payload()).unwrap();
        assert_eq!((m.msg_type(), m.code()), (icmp_type::DEST_UNREACHABLE, 4));
        assert_eq!(&ip.payload()[6..8], &1400u16.to_be_bytes());
        assert_eq!(checksum::fold(checksum::sum(ip.payload(), 0)), 0xffff);
        assert_eq!(&ip.payload()[8..], &dgram[..28]);
    }

    #[test]
    fn icmp_error_quotes_at_most_68_bytes() {
        let e = IcmpErrorRepr::new(A, B, icmp_type::TIME_EXCEEDED, 0, 0, &[7; 100]);
        assert_eq!(e.quote().len(), IcmpErrorRepr::MAX_QUOTE);
        let mut buf = [0u8; 128];
        assert_eq!(e.emit(&mut buf), 20 + 8 + 68);
        assert_eq!(&buf[6..8], &[0x40, 0], "DF set, not a fragment");
        assert_eq!(&buf[24..28], &[0; 4], "unused word zero");
    }
}
