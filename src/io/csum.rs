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

/// Recomputes the TCP or UDP checksum of an IPv4 frame (optionally 802.1Q-tagged) in place.
/// Returns false (and leaves the frame) when it is not a complete unfragmented IPv4 TCP/UDP
/// packet.
pub fn fix_l4_checksum(frame: &mut [u8]) -> bool {
    let mut off = 12;
    let mut ethertype = match frame.get(off..off + 2) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => return false,
    };
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        off += 4;
        ethertype = match frame.get(off..off + 2) {
            Some(b) => u16::from_be_bytes([b[0], b[1]]),
            None => return false,
        };
    }
    if ethertype != 0x0800 {
        return false;
    }
    let ip = off + 2;
    let Some(&vihl) = frame.get(ip) else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || frame.len() < ip + ihl {
        return false;
    }
    let total = usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
    let frag = u16::from_be_bytes([frame[ip + 6], frame[ip + 7]]);
    if total < ihl || frame.len() < ip + total || frag & 0x3fff != 0 {
        return false;
    }
    let proto = frame[ip + 9];
    let l4 = ip + ihl;
    let l4_len = total - ihl;
    let field = match proto {
        6 if l4_len >= 20 => l4 + 16,
        17 if l4_len >= 8 => l4 + 6,
        _ => return false,
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
    fn garbage_is_left_alone() {
        let mut f = vec![0xffu8; 30];
        assert!(!fix_l4_checksum(&mut f));
        assert!(!fix_l4_checksum(&mut []));
    }
}
