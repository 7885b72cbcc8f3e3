//! Ethernet II frames, with one optional 802.1Q tag.

use super::WireError;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;

/// The parts of an Ethernet header the dataplane needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetInfo {
    /// Ethertype after any 802.1Q tag.
    pub ethertype: u16,
    /// Offset of the L3 header (14, or 18 with a VLAN tag).
    pub l3_offset: usize,
    /// The VLAN id, if the frame was tagged.
    pub vlan: Option<u16>,
}

/// Reads the Ethernet header (and one 802.1Q tag) of `frame`.
#[inline]
pub fn parse(frame: &[u8]) -> Result<EthernetInfo, WireError> {
    if frame.len() < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype != ETHERTYPE_VLAN {
        return Ok(EthernetInfo {
            ethertype,
            l3_offset: HEADER_LEN,
            vlan: None,
        });
    }
    if frame.len() < HEADER_LEN + 4 {
        return Err(WireError::Truncated);
    }
    let tci = u16::from_be_bytes([frame[14], frame[15]]);
    Ok(EthernetInfo {
        ethertype: u16::from_be_bytes([frame[16], frame[17]]),
        l3_offset: HEADER_LEN + 4,
        vlan: Some(tci & 0x0fff),
    })
}

/// Writes destination and source MAC addresses.
#[inline]
pub fn set_macs(frame: &mut [u8], dst: [u8; 6], src: [u8; 6]) {
    if frame.len() >= 12 {
        frame[0..6].copy_from_slice(&dst);
        frame[6..12].copy_from_slice(&src);
    }
}

/// Swaps destination and source MACs (for a reply sent back where a frame came from).
#[inline]
pub fn swap_macs(frame: &mut [u8]) {
    if frame.len() >= 12 {
        for i in 0..6 {
            frame.swap(i, i + 6);
        }
    }
}

/// ARP over Ethernet/IPv4: the fields a neighbour table needs.
pub mod arp {
    use super::WireError;
    use std::net::Ipv4Addr;

    pub const OP_REQUEST: u16 = 1;
    pub const OP_REPLY: u16 = 2;

    /// An ARP packet for IPv4 over Ethernet.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Arp {
        pub op: u16,
        pub sender_mac: [u8; 6],
        pub sender_ip: Ipv4Addr,
        pub target_mac: [u8; 6],
        pub target_ip: Ipv4Addr,
    }

    /// Parses the ARP payload of a frame (after the Ethernet header).
    pub fn parse(b: &[u8]) -> Result<Arp, WireError> {
        if b.len() < 28 {
            return Err(WireError::Truncated);
        }
        // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4.
        if b[0..6] != [0, 1, 8, 0, 6, 4] {
            return Err(WireError::BadHeaderLength);
        }
        let mac =
            |o: usize| -> [u8; 6] { [b[o], b[o + 1], b[o + 2], b[o + 3], b[o + 4], b[o + 5]] };
        Ok(Arp {
            op: u16::from_be_bytes([b[6], b[7]]),
            sender_mac: mac(8),
            sender_ip: Ipv4Addr::new(b[14], b[15], b[16], b[17]),
            target_mac: mac(18),
            target_ip: Ipv4Addr::new(b[24], b[25], b[26], b[27]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untagged_frame_and_its_macs() {
        let mut f = [0u8; 14];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(
            parse(&f),
            Ok(EthernetInfo {
                ethertype: ETHERTYPE_ARP,
                l3_offset: HEADER_LEN,
                vlan: None
            })
        );
        for n in 0..HEADER_LEN {
            assert_eq!(parse(&f[..n]), Err(WireError::Truncated));
        }
        swap_macs(&mut f);
        assert_eq!(&f[..12], &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        set_macs(&mut f, [0xaa; 6], [0xbb; 6]);
        assert_eq!(&f[..12], &[[0xaa; 6], [0xbb; 6]].concat()[..]);
        // Too short for two MACs: left alone, no panic.
        let mut short = [7u8; 11];
        swap_macs(&mut short);
        set_macs(&mut short, [0; 6], [0; 6]);
        assert_eq!(short, [7; 11]);
    }

    #[test]
    fn an_arp_request_reads_field_by_field() {
        // Who has 198.18.0.1? Tell 198.18.0.11 (02:00:00:00:00:0b).
        let req = [
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0b,
            198, 18, 0, 11, 0, 0, 0, 0, 0, 0, 198, 18, 0, 1,
        ];
        assert_eq!(
            arp::parse(&req),
            Ok(arp::Arp {
                op: arp::OP_REQUEST,
                sender_mac: [2, 0, 0, 0, 0, 0x0b],
                sender_ip: std::net::Ipv4Addr::new(198, 18, 0, 11),
                target_mac: [0; 6],
                target_ip: std::net::Ipv4Addr::new(198, 18, 0, 1),
            })
        );
        for n in 0..28 {
            assert_eq!(arp::parse(&req[..n]), Err(WireError::Truncated));
        }
        for at in 0..6 {
            let mut m = req;
            m[at] ^= 0x01;
            assert_eq!(arp::parse(&m), Err(WireError::BadHeaderLength), "byte {at}");
        }
    }

    #[test]
    fn vlan_tag_is_skipped() {
        let mut f = [0u8; 22];
        f[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        f[14..16].copy_from_slice(&0x2064u16.to_be_bytes());
        f[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let e = parse(&f).unwrap();
        assert_eq!(
            e,
            EthernetInfo {
                ethertype: ETHERTYPE_IPV4,
                l3_offset: 18,
                vlan: Some(100)
            }
        );
        assert_eq!(parse(&f[..15]), Err(WireError::Truncated));
    }
}
