//! Offload metadata of a frame (what its sender left for the NIC, as a virtio_net_hdr says) and
//! software segmentation of GSO super-frames.
//!
//! A Linux sender (TSO/GSO on a veth, a bridge, GRO on a NIC) hands the next hop TCP segments of
//! up to 64 KiB whose checksum is *partial*: the L4 checksum field holds only the folded
//! pseudo-header sum, and whoever finally transmits computes the rest. The dataplane translates
//! such a super-frame once (its headers are those of every segment) and passes the metadata on,
//! so the kernel or the NIC cuts it where the egress needs it; [`segment`] cuts it in software
//! where the frame must fit a fixed-size buffer.

/// GSO kind of a super-frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gso {
    /// A single frame.
    #[default]
    None,
    /// TCP over IPv4, cut every `gso_size` payload bytes; `ecn`: CWR only on the first segment.
    TcpV4 { ecn: bool },
    /// UDP (USO, `UDP_SEGMENT`): one datagram every `gso_size` payload bytes.
    UdpL4,
}

/// What a received frame's sender left to offload, and what a transmitted frame asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// GSO kind; [`Gso::None`] for an ordinary frame.
    pub gso: Gso,
    /// Payload bytes per segment (the MSS for TCP) when `gso` is not [`Gso::None`].
    pub gso_size: u16,
    /// The L4 checksum is partial: its field holds the folded (not complemented) pseudo-header
    /// sum; the sum from `csum_start` (an offset from the start of the frame) to the end of the
    /// IP packet, complemented, belongs at `csum_start + csum_offset`.
    pub csum_partial: bool,
    /// Where the checksummed region starts (the L4 header), from the start of the frame.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start` (16 for TCP, 6 for UDP).
    pub csum_offset: u16,
}

impl Offload {
    /// No offload: a complete frame with a complete checksum.
    pub const NONE: Offload = Offload {
        gso: Gso::None,
        gso_size: 0,
        csum_partial: false,
        csum_start: 0,
        csum_offset: 0,
    };

    /// True for a GSO super-frame.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso != Gso::None
    }
}
