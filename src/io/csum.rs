//! Software completion of L4 checksums the kernel left to offload (TP_STATUS_CSUMNOTREADY:
//! a locally generated frame on a veth carries only the pseudo-header sum).

/// RFC 1071 sum of `data` as big-endian 16-bit words (an odd last byte padded with zero),
/// plus `acc`, folded to at most 0xffff. Eight bytes a step, as two 32-bit words into a 64-bit
/// accumulator: 2^16 = 1 (mod 0xffff), so wider words and folding by halves keep the sum; this
/// runs over every TCP segment of 1,460 bytes the veth left to offload.
fn sum16(data: &[u8], acc: u32) -> u32 {
    let mut s = u64::from(acc);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        s += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        s += u64::from(u32::from_be_bytes([c[4], c[5], c[6], c[7]]));
    }
    let mut rest = chunks.remainder();
    while let [a, b, tail @ ..] = rest {
        s += u64::from(u16::from_be_bytes([*a, *b]));
        rest = tail;
    }
    if let [b] = rest {
        s += u64::from(*b) << 8;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u32
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Where a complete, unfragmented IPv4 TCP/UDP packet's parts are in `frame` (optionally
/// 802.1Q-tagged): (IPv4 header, protocol, L4 header, L4 length, checksum field).
fn l4_of(frame: &[u8]) -> Option<(usize, u8, usize, usize, usize)> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes(frame.get(off..off + 2)?.try_into().ok()?);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        off += 4;
        ethertype = u16::from_be_bytes(frame.get(off..off + 2)?.try_into().ok()?);
    }
    if ethertype != 0x0800 {
        return None;
    }
    let ip = off + 2;
    let vihl = *frame.get(ip)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || frame.len() < ip + ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
    let frag = u16::from_be_bytes([frame[ip + 6], frame[ip + 7]]);
    if total < ihl || frame.len() < ip + total || frag & 0x3fff != 0 {
        return None;
    }
    let proto = frame[ip + 9];
    let l4 = ip + ihl;
    let l4_len = total - ihl;
    let field = match proto {
        6 if l4_len >= 20 => l4 + 16,
        17 if l4_len >= 8 => l4 + 6,
        _ => return None,
    };
    Some((ip, proto, l4, l4_len, field))
}

/// Recomputes the TCP or UDP checksum of an IPv4 frame (optionally 802.1Q-tagged) in place.
/// Returns false (and leaves the frame) when it is not a complete unfragmented IPv4 TCP/UDP
/// packet.
pub fn fix_l4_checksum(frame: &mut [u8]) -> bool {
    let Some((ip, proto, l4, l4_len, field)) = l4_of(frame) else {
        return false;
    };
    frame[field] = 0;
    frame[field + 1] = 0;
    let mut acc = sum16(&frame[ip + 12..ip + 20], 0);
    acc += u32::from(proto) + l4_len as u32;
    acc = sum16(&frame[l4..l4 + l4_len], acc);
    let mut c = fold(acc);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Completes the TCP or UDP checksum of a frame that arrived with no word on its checksum
/// state (AF_XDP has no CHECKSUM_PARTIAL flag), when the field holds what Linux leaves for
/// offload: the folded pseudo-header sum, not complemented. A frame whose checksum is already
/// right is left alone (the pseudo-header form can be a complete checksum by chance: the whole
/// sum is checked before anything is written), and so is a wrong one in any other form: a
/// router forwards it as it came. True when the checksum was completed.
pub fn fix_if_partial(frame: &mut [u8]) -> bool {
    let Some((ip, proto, l4, l4_len, field)) = l4_of(frame) else {
        return false;
    };
    let stored = u16::from_be_bytes([frame[field], frame[field + 1]]);
    if proto == 17 && stored == 0 {
        return false; // no UDP checksum
    }
    let pseudo = sum16(&frame[ip + 12..ip + 20], 0) + u32::from(proto) + l4_len as u32;
    if stored != !fold(pseudo) {
        return false;
    }
    if fold(sum16(&frame[l4..l4 + l4_len], pseudo)) == 0 {
        return false; // already complete
    }
    fix_l4_checksum(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_checksum_matches_a_known_packet() {
        // 198.18.0.11:1000 -> 203.0.113.10:7, payload "hi"
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        f.extend_from_slice(&[
            0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 11, 203, 0, 113, 10,
        ]);
        f.extend_from_slice(&[0x03, 0xe8, 0, 7, 0, 10, 0xaa, 0xbb, b'h', b'i']);
        assert!(fix_l4_checksum(&mut f));
        // verify: the sum over pseudo-header + segment folds to zero
        let mut acc = sum16(&f[26..34], 0) + 17 + 10;
        acc = sum16(&f[34..44], acc);
        assert_eq!(fold(acc), 0);
    }

    /// The 16-bit-at-a-time sum RFC 1071 describes, for comparison.
    fn sum16_reference(data: &[u8], mut acc: u64) -> u64 {
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [b] = chunks.remainder() {
            acc += u64::from(*b) << 8;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc
    }

    proptest::proptest! {
        #[test]
        fn the_wide_sum_folds_like_the_16_bit_one(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..2000),
            acc in 0u32..0x1_0000,
        ) {
            let fast = sum16(&data, acc);
            proptest::prop_assert!(fast <= 0xffff);
            proptest::prop_assert_eq!(u64::from(fast), sum16_reference(&data, u64::from(acc)));
        }
    }

    #[test]
    fn sums_of_all_ones_and_zeros() {
        assert_eq!(sum16(&[], 0), 0);
        assert_eq!(sum16(&[0; 1500], 0), 0);
        // 0xffff words: negative zero stays 0xffff, never folds to +0
        assert_eq!(sum16(&[0xff; 1500], 0), 0xffff);
        assert_eq!(sum16(&[0xff; 7], 0), sum16_reference(&[0xff; 7], 0) as u32);
    }

    #[test]
    fn a_partial_checksum_is_completed_and_a_complete_one_left() {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        f.extend_from_slice(&[
            0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 11, 203, 0, 113, 10,
        ]);
        f.extend_from_slice(&[0x03, 0xe8, 0, 7, 0, 10, 0, 0, b'h', b'i']);
        let mut done = f.clone();
        assert!(fix_l4_checksum(&mut done));
        // as Linux leaves it for offload: the folded pseudo-header sum, not complemented
        let pseudo = sum16(&f[26..34], 0) + 17 + 10;
        let partial = !fold(pseudo);
        f[40..42].copy_from_slice(&partial.to_be_bytes());
        let mut p = f.clone();
        assert!(fix_if_partial(&mut p));
        assert_eq!(p, done);
        // complete, wrong in another form, or absent (UDP 0): left as they are
        let mut c = done.clone();
        assert!(!fix_if_partial(&mut c));
        assert_eq!(c, done);
        let mut w = done.clone();
        w[40] ^= 0x55;
        let before = w.clone();
        assert!(!fix_if_partial(&mut w));
        assert_eq!(w, before);
        let mut z = done.clone();
        z[40..42].copy_from_slice(&[0, 0]);
        assert!(!fix_if_partial(&mut z));
    }

    #[test]
    fn garbage_is_left_alone() {
        let mut f = vec![0xffu8; 30];
        assert!(!fix_l4_checksum(&mut f));
        assert!(!fix_l4_checksum(&mut []));
        assert!(!fix_if_partial(&mut f));
    }
}
