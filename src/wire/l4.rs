//! TCP, UDP and ICMP header views and the rewrites NAT needs.
//!
//! Every rewrite updates the transport checksum incrementally (RFC 1624), pseudo-header
//! included, so a NATed packet costs a few word operations whatever its length.

use super::{checksum, WireError};

pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;

    /// Whether a flag combination can come from a real connection (RFC 9293): not SYN with
    /// FIN or RST, not FIN without ACK, and at least one of SYN, ACK, RST. PSH, URG, ECE and
    /// CWR do not matter. The rest are scans (NULL, FIN, Xmas) and fingerprinting probes.
    #[inline]
    pub fn plausible(flags: u8) -> bool {
        let has = |f: u8| flags & f != 0;
        if has(SYN) && (has(FIN) || has(RST)) {
            return false;
        }
        if has(FIN) && !has(ACK) {
            return false;
        }
        has(SYN) || has(ACK) || has(RST)
    }
}

/// A TCP segment. After `new_checked`, the header with options is in bounds.
#[derive(Debug)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Checks that the fixed header and the options the data offset claims are present.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < 20 {
            return Err(WireError::Truncated);
        }
        let off = usize::from(b[12] >> 4) * 4;
        if off < 20 || off > b.len() {
            return Err(WireError::BadDataOffset);
        }
        Ok(TcpSegment { buf })
    }
    #[inline]
    pub fn src_port(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[0], b[1]])
    }
    #[inline]
    pub fn dst_port(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }
    #[inline]
    pub fn seq(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
    #[inline]
    pub fn ack(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[13]
    }
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[12] >> 4) * 4
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[16], b[17]])
    }
    /// The segment's payload.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    #[inline]
    fn put_checksum(&mut self, c: u16) {
        self.buf.as_mut()[16..18].copy_from_slice(&c.to_be_bytes());
    }
    /// Rewrites the source port and folds an address change `old_addr -> new_addr` of the
    /// pseudo-header into the checksum.
    #[inline]
    pub fn rewrite_src(&mut self, old_addr: u32, new_addr: u32, port: u16) {
        let mut c = checksum::update32(self.checksum(), old_addr, new_addr);
        c = checksum::update16(c, self.src_port(), port);
        self.buf.as_mut()[0..2].copy_from_slice(&port.to_be_bytes());
        self.put_checksum(c);
    }
    /// Rewrites the destination port and folds the pseudo-header address change in.
    #[inline]
    pub fn rewrite_dst(&mut self, old_addr: u32, new_addr: u32, port: u16) {
        let mut c = checksum::update32(self.checksum(), old_addr, new_addr);
        c = checksum::update16(c, self.dst_port(), port);
        self.buf.as_mut()[2..4].copy_from_slice(&port.to_be_bytes());
        self.put_checksum(c);
    }
    /// [`Self::rewrite_src`] for a segment whose checksum is partial (see
    /// [`checksum::partial_update32`]): the address goes into the field, the port does not.
    #[inline]
    pub fn rewrite_src_partial(&mut self, old_addr: u32, new_addr: u32, port: u16) {
        let c = checksum::partial_update32(self.checksum(), old_addr, new_addr);
        self.buf.as_mut()[0..2].copy_from_slice(&port.to_be_bytes());
        self.put_checksum(c);
    }
    /// [`Self::rewrite_dst`] for a segment whose checksum is partial.
    #[inline]
    pub fn rewrite_dst_partial(&mut self, old_addr: u32, new_addr: u32, port: u16) {
        let c = checksum::partial_update32(self.checksum(), old_addr, new_addr);
        self.buf.as_mut()[2..4].copy_from_slice(&port.to_be_bytes());
        self.put_checksum(c);
    }
    /// Lowers the MSS option to `clamp` if it is larger. Returns true if it changed.
    pub fn clamp_mss(&mut self, clamp: u16) -> bool {
        self.clamp_mss_with(clamp, false)
    }
    /// [`Self::clamp_mss`] for a segment whose checksum is partial (the field stays as is).
    pub fn clamp_mss_partial(&mut self, clamp: u16) -> bool {
        self.clamp_mss_with(clamp, true)
    }
    fn clamp_mss_with(&mut self, clamp: u16, partial: bool) -> bool {
        let hl = self.header_len();
        let mut i = 20;
        while i < hl {
            let b = self.buf.as_ref();
            match b[i] {
                0 => return false,
                1 => i += 1,
                kind => {
                    if i + 1 >= hl {
                        return false;
                    }
                    let len = usize::from(b[i + 1]);
                    if len < 2 || i + len > hl {
                        return false;
                    }
                    if kind == 2 && len == 4 {
                        let mss = u16::from_be_bytes([b[i + 2], b[i + 3]]);
                        if mss <= clamp {
                            return false;
                        }
                        let c = checksum::update16(self.checksum(), mss, clamp);
                        self.buf.as_mut()[i + 2..i + 4].copy_from_slice(&clamp.to_be_bytes());
                        if !partial {
                            self.put_checksum(c);
                        }
                        return true;
                    }
                    i += len;
                }
            }
        }
        false
    }
}

/// A UDP datagram. After `new_checked`, the 8-byte header is in bounds and the length field
/// fits the IP payload.
#[derive(Debug)]
pub struct UdpDatagram<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < 8 {
            return Err(WireError::Truncated);
        }
        let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
        if len < 8 || len > b.len() {
            return Err(WireError::BadUdpLength);
        }
        Ok(UdpDatagram { buf })
    }
    #[inline]
    pub fn src_port(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[0], b[1]])
    }
    #[inline]
    pub fn dst_port(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[6], b[7]])
    }
    /// The payload, bounded by the UDP length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
        &b[8..len]
    }
}

/// A zero UDP checksum means "none" (RFC 768) and must stay zero; a computed zero is sent as
/// all ones.
#[inline]
fn udp_update(c: u16, f: impl FnOnce(u16) -> u16) -> u16 {
    if c == 0 {
        return 0;
    }
    match f(c) {
        0 => 0xffff,
        v => v,
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpDatagram<T> {
    #[inline]
    fn put_checksum(&mut self, c: u16) {
        self.buf.as_mut()[6..8].copy_from_slice(&c.to_be_bytes());
    }
    /// Rewrites the source port and folds the pseudo-header address change in.
    #[inline]
    pub fn rewrite_src(&mut self, old_addr: u32, new_addr: u32, port: u16) {
        let old_port = self.src_port();
        let c = udp_update(self.checksum(), |c| {
            checksum::update16(checksum::update32(c, old_addr, new_addr), old_port, port)
        });
        self.buf.as_mut()[0..2].copy_from_slice(&port.to_be_bytes());
        self.put_checksum(c);
    }
    /// Rewrites the destination port and folds the pseudo-header address change in.
    #[inline]
    pub fn rewrite_dst(&mut self, old_addr: u32, new_addr: u32, port: u16) {
        let old_port = self.dst_port();
        let c = udp_update(self.checksum(), |c| {
            checksum::update16(checksum::update32(c, old_addr, new_addr), old_port, port)
        });
        self.buf.as_mut()[2..4].copy_from_slice(&port.to_be_bytes());
        self.put_checksum(c);
    }
}

/// ICMP types the dataplane handles.
pub mod icmp_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// True for the ICMP error types whose body quotes the offending packet (RFC 5508 section 4).
#[inline]
pub fn icmp_is_error(t: u8) -> bool {
    matches!(
        t,
        icmp_type::DEST_UNREACHABLE
            | icmp_type::SOURCE_QUENCH
            | icmp_type::TIME_EXCEEDED
            | icmp_type::PARAMETER_PROBLEM
    )
}

/// An ICMP message. After `new_checked`, the 8-byte header is in bounds.
#[derive(Debug)]
pub struct IcmpMessage<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> IcmpMessage<T> {
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < 8 {
            return Err(WireError::Truncated);
        }
        Ok(IcmpMessage { buf })
    }
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    #[inline]
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }
    /// The echo identifier (meaningful for echo request and reply).
    #[inline]
    pub fn echo_id(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[4], b[5]])
    }
    /// The quoted packet of an error message.
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buf.as_ref()[8..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpMessage<T> {
    /// Rewrites the echo identifier, updating the checksum (ICMP has no pseudo-header).
    #[inline]
    pub fn set_echo_id(&mut self, id: u16) {
        let c = checksum::update16(self.checksum(), self.echo_id(), id);
        let b = self.buf.as_mut();
        b[4..6].copy_from_slice(&id.to_be_bytes());
        b[2..4].copy_from_slice(&c.to_be_bytes());
    }
    /// The quoted packet, mutable.
    #[inline]
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[8..]
    }
    /// Recomputes the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        let b = self.buf.as_mut();
        b[2..4].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(b);
        b[2..4].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    //! Byte fixtures with checksums computed independently (Python, full RFC 1071 sums over the
    //! pseudo-header): 198.18.0.11 -> 203.0.113.10, SNATed to 203.0.113.1.
    use super::*;

    const INSIDE: u32 = u32::from_be_bytes([198, 18, 0, 11]);
    const SERVER: u32 = u32::from_be_bytes([203, 0, 113, 10]);
    const PUBLIC: u32 = u32::from_be_bytes([203, 0, 113, 1]);
    const TARGET: u32 = u32::from_be_bytes([198, 18, 0, 20]);

    /// SYN 40000 -> 443, seq 0x01020304, window 65535, MSS 1460.
    const TCP_SYN: [u8; 24] = [
        0x9c, 0x40, 0x01, 0xbb, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xff,
        0xff, 0xf3, 0xfc, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
    ];
    /// [`TCP_SYN`] from 203.0.113.1:1024.
    const TCP_SYN_SNAT: [u8; 24] = [
        0x04, 0x00, 0x01, 0xbb, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xff,
        0xff, 0x16, 0x59, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
    ];
    /// [`TCP_SYN`] to 198.18.0.20:80.
    const TCP_SYN_DNAT: [u8; 24] = [
        0x9c, 0x40, 0x00, 0x50, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xff,
        0xff, 0x6b, 0x4c, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
    ];
    /// [`TCP_SYN`] with MSS 1200.
    const TCP_SYN_MSS1200: [u8; 24] = [
        0x9c, 0x40, 0x01, 0xbb, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xff,
        0xff, 0xf5, 0x00, 0x00, 0x00, 0x02, 0x04, 0x04, 0xb0,
    ];
    /// 5353 -> 53, payload "query".
    const UDP: [u8; 13] = [
        0x14, 0xe9, 0x00, 0x35, 0x00, 0x0d, 0x98, 0xa5, 0x71, 0x75, 0x65, 0x72, 0x79,
    ];
    /// [`UDP`] from 203.0.113.1:1024.
    const UDP_SNAT: [u8; 13] = [
        0x04, 0x00, 0x00, 0x35, 0x00, 0x0d, 0x33, 0xaa, 0x71, 0x75, 0x65, 0x72, 0x79,
    ];
    /// [`UDP`] to 198.18.0.20:5353.
    const UDP_DNAT: [u8; 13] = [
        0x14, 0xe9, 0x14, 0xe9, 0x00, 0x0d, 0xf9, 0xd5, 0x71, 0x75, 0x65, 0x72, 0x79,
    ];
    /// Echo request, id 0x1234, seq 1, payload "abcdefgh".
    const ECHO: [u8; 16] = [
        0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68,
    ];
    /// [`ECHO`] with id 0x0400.
    const ECHO_ID_0400: [u8; 16] = [
        0x08, 0x00, 0x62, 0x69, 0x04, 0x00, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68,
    ];

    #[test]
    fn a_tcp_fixture_reads_field_by_field() {
        let t = TcpSegment::new_checked(&TCP_SYN[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (40000, 443));
        assert_eq!((t.seq(), t.ack()), (0x0102_0304, 0));
        assert_eq!(t.flags(), tcp_flags::SYN);
        assert_eq!(t.header_len(), 24);
        assert_eq!(t.checksum(), 0xf3fc);
        assert!(t.payload().is_empty());
        let mut v = TCP_SYN.to_vec();
        v.extend_from_slice(b"hi");
        assert_eq!(TcpSegment::new_checked(&v[..]).unwrap().payload(), b"hi");
    }

    #[test]
    fn tcp_rewrites_give_the_exact_bytes_of_a_full_recomputation() {
        let mut b = TCP_SYN;
        TcpSegment::new_checked(&mut b[..])
            .unwrap()
            .rewrite_src(INSIDE, PUBLIC, 1024);
        assert_eq!(b, TCP_SYN_SNAT);
        // And back, as the return path un-NATs.
        TcpSegment::new_checked(&mut b[..])
            .unwrap()
            .rewrite_src(PUBLIC, INSIDE, 40000);
        assert_eq!(b, TCP_SYN);

        let mut b = TCP_SYN;
        TcpSegment::new_checked(&mut b[..])
            .unwrap()
            .rewrite_dst(SERVER, TARGET, 80);
        assert_eq!(b, TCP_SYN_DNAT);
    }

    #[test]
    fn partial_rewrites_fold_only_the_address_into_the_field() {
        // CHECKSUM_PARTIAL: the field holds the pseudo-header sum, not complemented.
        let field = checksum::fold(checksum::pseudo_header(
            INSIDE.to_be_bytes(),
            SERVER.to_be_bytes(),
            6,
            24,
        ));
        let want = checksum::fold(checksum::pseudo_header(
            PUBLIC.to_be_bytes(),
            SERVER.to_be_bytes(),
            6,
            24,
        ));
        let mut b = TCP_SYN;
        b[16..18].copy_from_slice(&field.to_be_bytes());
        let mut t = TcpSegment::new_checked(&mut b[..]).unwrap();
        t.rewrite_src_partial(INSIDE, PUBLIC, 1024);
        assert_eq!((t.src_port(), t.checksum()), (1024, want));
        t.rewrite_dst_partial(SERVER, SERVER, 8443);
        assert_eq!((t.dst_port(), t.checksum()), (8443, want));
        assert!(!t.clamp_mss_partial(1500));
        assert!(t.clamp_mss_partial(1200));
        assert_eq!(t.checksum(), want, "a partial field covers no L4 byte");
        assert_eq!(&b[20..24], &[2, 4, 0x04, 0xb0]);
    }

    #[test]
    fn mss_is_clamped_down_never_up() {
        let mut b = TCP_SYN;
        let mut t = TcpSegment::new_checked(&mut b[..]).unwrap();
        assert!(!t.clamp_mss(1460));
        assert!(!t.clamp_mss(1500));
        assert_eq!(b, TCP_SYN);
        let mut t = TcpSegment::new_checked(&mut b[..]).unwrap();
        assert!(t.clamp_mss(1200));
        assert_eq!(b, TCP_SYN_MSS1200);
    }

    #[test]
    fn mss_clamping_walks_options_and_stops_at_bad_ones() {
        // NOP, NOP, then MSS in a 28-byte header.
        let mut b = [0u8; 28];
        b[..20].copy_from_slice(&TCP_SYN[..20]);
        b[12] = 7 << 4;
        b[20..28].copy_from_slice(&[1, 1, 2, 4, 0x05, 0xb4, 0, 0]);
        assert!(TcpSegment::new_checked(&mut b[..]).unwrap().clamp_mss(1200));
        assert_eq!(&b[22..26], &[2, 4, 0x04, 0xb0]);
        // END before MSS, a zero length, a length past the header, a kind in the last byte,
        // and an MSS option of the wrong length: nothing is changed.
        for opts in [
            [0, 0, 2, 4, 0x05, 0xb4, 0, 0],
            [8, 0, 2, 4, 0x05, 0xb4, 0, 0],
            [8, 9, 2, 4, 0x05, 0xb4, 0, 0],
            [1, 1, 1, 1, 1, 1, 1, 2],
            [2, 5, 0x05, 0xb4, 0, 0, 0, 0],
        ] {
            b[20..28].copy_from_slice(&opts);
            let before = b;
            assert!(!TcpSegment::new_checked(&mut b[..]).unwrap().clamp_mss(1200));
            assert_eq!(b, before, "{opts:?}");
        }
    }

    #[test]
    fn tcp_checks_reject_short_and_inconsistent_segments() {
        for n in 0..20 {
            assert_eq!(
                TcpSegment::new_checked(&TCP_SYN[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        // The data offset claims options that are not there.
        assert_eq!(
            TcpSegment::new_checked(&TCP_SYN[..22]).unwrap_err(),
            WireError::BadDataOffset
        );
        for off in [0u8, 4, 7, 15] {
            let mut b = TCP_SYN;
            b[12] = off << 4;
            assert_eq!(
                TcpSegment::new_checked(&b[..]).unwrap_err(),
                WireError::BadDataOffset,
                "offset {off}"
            );
        }
    }

    #[test]
    fn no_tcp_input_panics_a_checked_view() {
        // Every data offset and every flag byte over every prefix of a 60-byte header.
        let mut b = [0xffu8; 60];
        b[..24].copy_from_slice(&TCP_SYN);
        for n in 0..=b.len() {
            for byte12 in 0..=255u8 {
                let mut v = b;
                v[12] = byte12;
                if let Ok(mut t) = TcpSegment::new_checked(&mut v[..n]) {
                    let _ = (t.src_port(), t.seq(), t.ack(), t.flags(), t.payload().len());
                    t.clamp_mss(536);
                    t.clamp_mss_partial(500);
                    t.rewrite_src(INSIDE, PUBLIC, 1);
                    t.rewrite_dst_partial(SERVER, TARGET, 2);
                }
            }
        }
    }

    #[test]
    fn only_flag_combinations_of_real_connections_are_plausible() {
        use tcp_flags::*;
        for ok in [
            SYN,
            SYN | ACK,
            ACK,
            ACK | PSH,
            FIN | ACK,
            RST,
            RST | ACK,
            SYN | PSH,
        ] {
            assert!(plausible(ok), "{ok:#04x}");
        }
        for scan in [
            0,
            FIN,
            FIN | PSH | 0x20,
            SYN | FIN,
            SYN | RST,
            PSH,
            0x20 | 0x40 | 0x80,
        ] {
            assert!(!plausible(scan), "{scan:#04x}");
        }
    }

    #[test]
    fn a_udp_fixture_reads_field_by_field() {
        let u = UdpDatagram::new_checked(&UDP[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port()), (5353, 53));
        assert_eq!(u.checksum(), 0x98a5);
        assert_eq!(u.payload(), b"query");
        // Bytes past the UDP length (Ethernet padding) are not payload.
        let mut v = UDP.to_vec();
        v.extend_from_slice(&[0; 4]);
        assert_eq!(
            UdpDatagram::new_checked(&v[..]).unwrap().payload(),
            b"query"
        );
    }

    #[test]
    fn udp_rewrites_give_the_exact_bytes_of_a_full_recomputation() {
        let mut b = UDP;
        UdpDatagram::new_checked(&mut b[..])
            .unwrap()
            .rewrite_src(INSIDE, PUBLIC, 1024);
        assert_eq!(b, UDP_SNAT);
        let mut b = UDP;
        UdpDatagram::new_checked(&mut b[..])
            .unwrap()
            .rewrite_dst(SERVER, TARGET, 5353);
        assert_eq!(b, UDP_DNAT);
    }

    #[test]
    fn a_zero_udp_checksum_stays_zero_and_a_computed_zero_is_sent_as_ones() {
        let mut b = UDP;
        b[6..8].copy_from_slice(&[0, 0]);
        let mut u = UdpDatagram::new_checked(&mut b[..]).unwrap();
        u.rewrite_src(INSIDE, PUBLIC, 1024);
        u.rewrite_dst(SERVER, TARGET, 99);
        assert_eq!(u.checksum(), 0, "no checksum stays no checksum");
        // From 203.0.113.1:14250 the full sum is 0xffff: its checksum is 0, sent as 0xffff.
        let mut b = UDP;
        let mut u = UdpDatagram::new_checked(&mut b[..]).unwrap();
        u.rewrite_src(INSIDE, PUBLIC, 14250);
        assert_eq!(u.checksum(), 0xffff);
        let mut pseudo =
            checksum::pseudo_header(PUBLIC.to_be_bytes(), SERVER.to_be_bytes(), 17, 13);
        pseudo = checksum::sum(&b, pseudo);
        assert_eq!(checksum::fold(pseudo), 0xffff, "and it verifies");
    }

    #[test]
    fn udp_checks_reject_short_and_inconsistent_datagrams() {
        for n in 0..8 {
            assert_eq!(
                UdpDatagram::new_checked(&UDP[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        // The length field claims more than the buffer holds.
        assert_eq!(
            UdpDatagram::new_checked(&UDP[..12]).unwrap_err(),
            WireError::BadUdpLength
        );
        for len in [0u16, 7, 14, 0xffff] {
            let mut b = UDP;
            b[4..6].copy_from_slice(&len.to_be_bytes());
            assert_eq!(
                UdpDatagram::new_checked(&b[..]).unwrap_err(),
                WireError::BadUdpLength,
                "length {len}"
            );
        }
        let mut b = UDP;
        b[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert!(UdpDatagram::new_checked(&b[..])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn an_icmp_echo_fixture_reads_and_rewrites_exactly() {
        let m = IcmpMessage::new_checked(&ECHO[..]).unwrap();
        assert_eq!((m.msg_type(), m.code()), (icmp_type::ECHO_REQUEST, 0));
        assert_eq!((m.checksum(), m.echo_id()), (0x5435, 0x1234));
        assert_eq!(m.body(), &ECHO[8..]);
        let mut b = ECHO;
        IcmpMessage::new_checked(&mut b[..])
            .unwrap()
            .set_echo_id(0x0400);
        assert_eq!(b, ECHO_ID_0400);
        // A body edited in place, then the checksum recomputed over the whole message.
        let mut b = ECHO;
        let mut m = IcmpMessage::new_checked(&mut b[..]).unwrap();
        m.body_mut().copy_from_slice(b"\x04\x00\x00\x01abcd");
        m.fill_checksum();
        assert_eq!(checksum::checksum(&b), 0);
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&ECHO[..4]);
        b[4..].copy_from_slice(&ECHO_ID_0400[4..]);
        IcmpMessage::new_checked(&mut b[..])
            .unwrap()
            .fill_checksum();
        assert_eq!(b, ECHO_ID_0400);
    }

    #[test]
    fn icmp_checks_reject_short_messages_and_errors_are_told_apart() {
        for n in 0..8 {
            assert_eq!(
                IcmpMessage::new_checked(&ECHO[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        let m = IcmpMessage::new_checked(&ECHO[..8]).unwrap();
        assert!(m.body().is_empty());
        for t in 0..=255u8 {
            let quotes = matches!(t, 3 | 4 | 11 | 12);
            assert_eq!(icmp_is_error(t), quotes, "type {t}");
        }
    }
}
