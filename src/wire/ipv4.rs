//! IPv4 header view (RFC 791), options and fragments included.

use std::net::Ipv4Addr;

use super::{checksum, WireError};

mod field {
    pub const VER_IHL: usize = 0;
    pub const LENGTH: core::ops::Range<usize> = 2..4;
    pub const IDENT: core::ops::Range<usize> = 4..6;
    pub const FLAGS_FRAG: core::ops::Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: core::ops::Range<usize> = 10..12;
    pub const SRC: core::ops::Range<usize> = 12..16;
    pub const DST: core::ops::Range<usize> = 16..20;
}

/// Minimum IPv4 header length.
pub const MIN_HEADER_LEN: usize = 20;
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;

/// A view of an IPv4 packet. After [`Ipv4Packet::new_checked`], the header (with options) and
/// `total_len` bytes are in bounds, so no accessor panics.
#[derive(Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks version, header length and total length against the buffer.
    /// The buffer may be longer than the packet (Ethernet padding).
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let ihl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if ihl < MIN_HEADER_LEN {
            return Err(WireError::BadHeaderLength);
        }
        let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if total < ihl {
            return Err(WireError::BadTotalLength);
        }
        if total > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4Packet { buf })
    }

    #[inline]
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    /// Header length in bytes, options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }
    #[inline]
    pub fn total_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[2], self.b()[3]]))
    }
    #[inline]
    pub fn ident(&self) -> u16 {
        let b = self.b();
        u16::from_be_bytes([b[field::IDENT.start], b[field::IDENT.start + 1]])
    }
    #[inline]
    fn flags_frag(&self) -> u16 {
        let b = self.b();
        u16::from_be_bytes([b[field::FLAGS_FRAG.start], b[field::FLAGS_FRAG.start + 1]])
    }
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }
    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> usize {
        usize::from(self.flags_frag() & 0x1fff) * 8
    }
    /// True for any fragment, first included.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | 0x1fff) != 0
    }
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTO]
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.b()[10], self.b()[11]])
    }
    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }
    /// True when the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(&self.b()[..self.header_len()], 0)) == 0xffff
    }
    /// The options (`20..header_len`), empty for a plain header.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.b()[MIN_HEADER_LEN..self.header_len()]
    }
    /// The payload (`header_len..total_len`).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    fn bm(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    #[inline]
    fn put_checksum(&mut self, c: u16) {
        self.bm()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
    /// Rewrites the source address, updating the header checksum incrementally.
    #[inline]
    pub fn set_src(&mut self, a: Ipv4Addr) {
        let old = u32::from(self.src());
        let c = checksum::update32(self.checksum(), old, u32::from(a));
        self.bm()[field::SRC].copy_from_slice(&a.octets());
        self.put_checksum(c);
    }
    /// Rewrites the destination address, updating the header checksum incrementally.
    #[inline]
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        let old = u32::from(self.dst());
        let c = checksum::update32(self.checksum(), old, u32::from(a));
        self.bm()[field::DST].copy_from_slice(&a.octets());
        self.put_checksum(c);
    }
    /// Decrements the TTL, updating the checksum (the TTL shares a word with the protocol).
    #[inline]
    pub fn decrement_ttl(&mut self) {
        let ttl = self.ttl();
        let proto = self.protocol();
        let old = u16::from_be_bytes([ttl, proto]);
        let new = u16::from_be_bytes([ttl.wrapping_sub(1), proto]);
        let c = checksum::update16(self.checksum(), old, new);
        self.bm()[field::TTL] = ttl.wrapping_sub(1);
        self.put_checksum(c);
    }
    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        self.put_checksum(0);
        let c = checksum::checksum(&self.b()[..hl]);
        self.put_checksum(c);
    }
    /// The payload, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &mut self.bm()[h..t]
    }
}

/// Option types (RFC 791 3.1; the copied flag, class and number in one byte).
pub mod option {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const RECORD_ROUTE: u8 = 7;
    pub const TIMESTAMP: u8 = 68;
    pub const LOOSE_SOURCE_ROUTE: u8 = 131;
    pub const STRICT_SOURCE_ROUTE: u8 = 137;
}

/// What an IPv4 option list holds, as far as forwarding cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionScan {
    /// No option, or only options forwarded as they are.
    Pass,
    /// A loose or strict source route (RFC 7126 4.3, 4.4).
    SourceRoute,
    /// The list does not parse: a length below the option's minimum or past the header, a
    /// type with no room for its length, a route or timestamp pointer before its data.
    Malformed,
}

/// Walks an option list (the bytes after the 20-byte header). The list ends at END or at the
/// header's end; what follows END is padding. A malformed list is reported as such even when
/// a source route follows the bad option (nothing past a bad length can be trusted); a
/// source route before it is reported as a source route. Never panics, reads nothing past
/// `opts`.
pub fn scan_options(opts: &[u8]) -> OptionScan {
    let mut at = 0;
    while let Some(&ty) = opts.get(at) {
        match ty {
            option::END => break,
            option::NOP => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = opts.get(at + 1) else {
            return OptionScan::Malformed;
        };
        let len = usize::from(len);
        if len < 2 || at + len > opts.len() {
            return OptionScan::Malformed;
        }
        // The pointer (third byte) counts from 1 and points into the option's data.
        let ptr = opts.get(at + 2).map_or(0, |&p| usize::from(p));
        match ty {
            option::LOOSE_SOURCE_ROUTE | option::STRICT_SOURCE_ROUTE => {
                return if len < 3 || ptr < 4 {
                    OptionScan::Malformed
                } else {
                    OptionScan::SourceRoute
                };
            }
            option::RECORD_ROUTE if len < 3 || ptr < 4 => return OptionScan::Malformed,
            option::TIMESTAMP if len < 4 || ptr < 5 => return OptionScan::Malformed,
            _ => {}
        }
        at += len;
    }
    OptionScan::Pass
}

/// Writes a fresh 20-byte IPv4 header (no options) into `b[..20]` with its checksum.
pub fn emit_header(b: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, proto: u8, total_len: u16, ttl: u8) {
    let b = &mut b[..MIN_HEADER_LEN];
    b[0] = 0x45;
    b[1] = 0;
    b[field::LENGTH].copy_from_slice(&total_len.to_be_bytes());
    b[field::IDENT].copy_from_slice(&[0, 0]);
    b[field::FLAGS_FRAG].copy_from_slice(&FLAG_DF.to_be_bytes());
    b[field::TTL] = ttl;
    b[field::PROTO] = proto;
    b[field::CHECKSUM].copy_from_slice(&[0, 0]);
    b[field::SRC].copy_from_slice(&src.octets());
    b[field::DST].copy_from_slice(&dst.octets());
    let c = checksum::checksum(b);
    b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 28];
        emit_header(
            &mut b,
            Ipv4Addr::new(198, 18, 0, 11),
            Ipv4Addr::new(203, 0, 113, 10),
            17,
            28,
            64,
        );
        b
    }

    #[test]
    fn option_lists_are_read_to_their_end_and_no_further() {
        use OptionScan::*;
        assert_eq!(scan_options(&[]), Pass);
        assert_eq!(scan_options(&[1, 1, 1, 0]), Pass);
        // After END: padding, whatever it holds.
        assert_eq!(scan_options(&[0, 131, 0, 0]), Pass);
        assert_eq!(scan_options(&[7, 7, 4, 0, 0, 0, 0, 0]), Pass);
        assert_eq!(scan_options(&[1, 131, 7, 4, 1, 2, 3, 4]), SourceRoute);
        assert_eq!(scan_options(&[137, 3, 4, 0]), SourceRoute);
        assert_eq!(scan_options(&[137, 3, 3, 0]), Malformed);
        assert_eq!(scan_options(&[7, 1, 0, 0]), Malformed);
        assert_eq!(scan_options(&[7, 5, 4, 0]), Malformed);
        assert_eq!(scan_options(&[1, 1, 1, 7]), Malformed);
        assert_eq!(scan_options(&[68, 4, 4, 0]), Malformed);
        // A source route before a bad option is a source route; after it, unreadable.
        assert_eq!(scan_options(&[131, 3, 4, 7, 0]), SourceRoute);
        assert_eq!(scan_options(&[7, 0, 131, 3, 4]), Malformed);
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                scan_options(&[a, b]);
                scan_options(&[a, b, 4]);
                scan_options(&[1, a, b]);
            }
        }
    }

    #[test]
    fn checked_rejects_bad_headers() {
        let b = sample();
        assert!(Ipv4Packet::new_checked(&b[..]).is_ok());
        assert_eq!(
            Ipv4Packet::new_checked(&b[..19]).unwrap_err(),
            WireError::Truncated
        );
        let mut v = b.clone();
        v[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).unwrap_err(),
            WireError::BadHeaderLength
        );
        let mut v = b.clone();
        v[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).unwrap_err(),
            WireError::BadVersion
        );
        let mut v = b.clone();
        v[3] = 200;
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).unwrap_err(),
            WireError::Truncated
        );
        let mut v = b;
        v[0] = 0x4f; // IHL 60 > total 28
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).unwrap_err(),
            WireError::BadTotalLength
        );
    }

    /// 198.18.0.11 -> 203.0.113.10, TCP, 44 bytes, ident 0x1c46, DF, TTL 64; the checksum
    /// computed independently (Python, RFC 1071).
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x2c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x1c, 0x5e, 0xc6, 0x12, 0x00,
        0x0b, 0xcb, 0x00, 0x71, 0x0a,
    ];
    /// [`HEADER`] from 203.0.113.1 with TTL 63.
    const HEADER_SNAT: [u8; 20] = [
        0x45, 0x00, 0x00, 0x2c, 0x1c, 0x46, 0x40, 0x00, 0x3f, 0x06, 0xa7, 0x79, 0xcb, 0x00, 0x71,
        0x01, 0xcb, 0x00, 0x71, 0x0a,
    ];

    fn packet(header: &[u8], total: usize) -> Vec<u8> {
        let mut v = header.to_vec();
        v.extend((header.len()..total).map(|i| i as u8));
        v
    }

    #[test]
    fn a_header_fixture_reads_field_by_field() {
        let b = packet(&HEADER, 44);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.header_len(), p.total_len(), p.ident()), (20, 44, 0x1c46));
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!((p.ttl(), p.protocol(), p.checksum()), (64, 6, 0x1c5e));
        assert_eq!(p.src(), Ipv4Addr::new(198, 18, 0, 11));
        assert_eq!(p.dst(), Ipv4Addr::new(203, 0, 113, 10));
        assert!(p.verify_checksum());
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &b[20..44]);
        // Ethernet padding after the packet is not payload.
        let mut padded = b.clone();
        padded.extend_from_slice(&[0; 6]);
        let p = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), &b[20..44]);
    }

    #[test]
    fn fragments_and_options_read_as_sent() {
        // MF, offset 185 * 8, ident 0xbeef.
        let frag = [
            0x45, 0x00, 0x00, 0x1c, 0xbe, 0xef, 0x20, 0xb9, 0x40, 0x11, 0x99, 0x00, 0xc6, 0x12,
            0x00, 0x0b, 0xcb, 0x00, 0x71, 0x0a,
        ];
        let b = packet(&frag, 28);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert!(p.more_frags() && !p.dont_frag() && p.is_fragment());
        assert_eq!((p.ident(), p.frag_offset()), (0xbeef, 1480));
        // IHL 6: NOP, NOP, NOP, END.
        let opts = [
            0x46, 0x00, 0x00, 0x20, 0x00, 0x07, 0x40, 0x00, 0x40, 0x11, 0x35, 0x9d, 0xc6, 0x12,
            0x00, 0x0b, 0xcb, 0x00, 0x71, 0x0a, 0x01, 0x01, 0x01, 0x00,
        ];
        let b = packet(&opts, 32);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(scan_options(p.options()), OptionScan::Pass);
        assert_eq!(p.payload(), &b[24..32]);
    }

    #[test]
    fn rewrites_give_the_exact_bytes_of_a_full_recomputation() {
        let mut b = packet(&HEADER, 44);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src(Ipv4Addr::new(203, 0, 113, 1));
        p.decrement_ttl();
        assert_eq!(&b[..20], &HEADER_SNAT);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_dst(Ipv4Addr::new(198, 18, 0, 20));
        p.set_dst(Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(&b[..20], &HEADER_SNAT);
        // A scribbled checksum is restored by a full recomputation.
        b[10] ^= 0x5a;
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert_eq!(&b[..20], &HEADER_SNAT);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.payload_mut()[0] = 0xaa;
        assert_eq!(b[20], 0xaa);
    }

    #[test]
    fn emit_writes_the_exact_header() {
        // DF, ident 0, UDP, 28 bytes, TTL 64.
        let want = [
            0x45, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x38, 0xa9, 0xc6, 0x12,
            0x00, 0x0b, 0xcb, 0x00, 0x71, 0x0a,
        ];
        assert_eq!(&sample()[..20], &want);
        assert!(
            sample()[20..].iter().all(|&b| b == 0),
            "nothing past the header"
        );
    }

    #[test]
    fn no_header_byte_panics_a_checked_view() {
        let b = packet(&HEADER, 44);
        for n in 0..=b.len() {
            for at in [0usize, 2, 3, 6] {
                for v in 0..=255u8 {
                    let mut m = b.clone();
                    m[at] = v;
                    if let Ok(mut p) = Ipv4Packet::new_checked(&mut m[..n]) {
                        let _ = (p.options().len(), p.payload().len(), p.frag_offset());
                        p.verify_checksum();
                        p.decrement_ttl();
                        p.fill_checksum();
                        let _ = p.payload_mut().len();
                    }
                }
            }
        }
    }

    #[test]
    fn rewrites_keep_checksum_valid() {
        let mut b = sample();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert!(p.verify_checksum());
        p.set_src(Ipv4Addr::new(203, 0, 113, 1));
        p.decrement_ttl();
        p.set_dst(Ipv4Addr::new(198, 51, 100, 7));
        assert!(p.verify_checksum());
        assert_eq!(p.ttl(), 63);
    }
}
