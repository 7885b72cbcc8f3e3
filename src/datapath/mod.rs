//! The per-packet decision: `Worker::process(now, packet) -> Verdict`.
//!
//! A `Worker` owns one flow table and its slices of the SNAT port space; it does no I/O.
//! The I/O layer hands it Ethernet frames in a buffer with spare capacity and acts on the
//! verdict: forward the (rewritten) frame, send the reply built in its place, or leave it.

mod config;
mod counters;
pub mod events;
mod frag;
mod inspect;
pub mod query;
mod reason;
mod route;
pub mod updates;
mod worker;

pub use config::{EngineConfig, Iface, IfaceId, IfaceRole, Route};
pub use counters::{Counters, RuleHits, SNAT_PROTOS};
pub use reason::DropReason;
pub use route::RouteTable;
pub use worker::{FlowHint, Worker};

use std::net::Ipv4Addr;

pub use crate::wire::gso::{Gso, Offload};

pub use crate::time::Nanos;

/// An Ethernet frame in a caller-owned buffer.
///
/// `buf` is the whole buffer (its length is the capacity: replies such as ICMP errors are built
/// in place and may be longer than the received frame); the frame is `buf[..len]`.
#[derive(Debug)]
pub struct Packet<'a> {
    pub buf: &'a mut [u8],
    pub len: usize,
    /// Interface the frame arrived on.
    pub rx_if: IfaceId,
    /// What the sender left to offload (a GSO super-frame, a partial checksum). The engine
    /// keeps it true of the frame it returns: a rewrite of a partial checksum stays partial, a
    /// reply built in place has none. The caller transmits the frame with it.
    pub offload: Offload,
}

impl<'a> Packet<'a> {
    /// Wraps a received frame of `len` bytes in `buf`.
    pub fn new(buf: &'a mut [u8], len: usize, rx_if: IfaceId) -> Self {
        let len = len.min(buf.len());
        Packet {
            buf,
            len,
            rx_if,
            offload: Offload::NONE,
        }
    }

    /// Wraps a received frame that carries offload metadata.
    pub fn with_offload(buf: &'a mut [u8], len: usize, rx_if: IfaceId, offload: Offload) -> Self {
        Packet {
            offload,
            ..Packet::new(buf, len, rx_if)
        }
    }

    /// The frame as it stands.
    pub fn frame(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What to do with a packet after [`Worker::process`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send `buf[..len]` on `tx_if`, to the MAC of `next_hop`; the caller fills both MACs.
    Forward { tx_if: IfaceId, next_hop: Ipv4Addr },
    /// The buffer now holds a reply the appliance originates (ICMP error, TCP RST): send it like
    /// a forwarded frame.
    Reply { tx_if: IfaceId, next_hop: Ipv4Addr },
    /// For the appliance itself (ARP, SSH, DHCP, management, pings to its own address): the
    /// kernel has its own copy of the frame; the dataplane leaves it.
    Local,
    /// The packet is held for inspection (first payload of an application-rule flow); it may be
    /// released later through [`Worker::poll_transmit`].
    Held,
    /// Dropped, counted under the reason.
    Drop(DropReason),
    /// A GSO super-frame the engine will not take as one (a new flow, a flow under
    /// inspection): the caller cuts it into its segments ([`crate::wire::gso::segment`]) and
    /// processes each. Nothing was changed or counted.
    Segment,
}
