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
