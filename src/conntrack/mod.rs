//! Connection tracking: the per-worker flow table, TCP state, timeouts, LRU expiry.
//!
//! No clock is read here: every call takes `now` in nanoseconds of a monotonic clock.

/// Per-state idle timeouts, in seconds.
///
/// Defaults follow the RFC minimums: TCP established 2 h 4 min (RFC 5382 REQ-5), transitory
/// TCP 4 min, UDP 5 min (RFC 4787 REQ-5 requires >= 2 min, recommends 5), ICMP 60 s (RFC 5508
/// REQ-1). Azure's own SNAT idle timeout is 4 min: set `tcp_established = 240` to match it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn: u32,
    pub tcp_established: u32,
    pub tcp_closing: u32,
    pub tcp_time_wait: u32,
    pub tcp_rst: u32,
    pub udp: u32,
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: 240,
            tcp_established: 7440,
            tcp_closing: 240,
            tcp_time_wait: 120,
            tcp_rst: 10,
            udp: 300,
            icmp: 60,
        }
    }
}

mod index;
mod key;
pub(crate) mod probe;
mod table;
pub mod tcp;

pub use key::FlowKey;
pub use table::{
    Flow, FlowTable, FlowVerdict, InsertError, InspectKind, TimeoutClass, MAX_FLOWS_PER_WORKER,
};
pub use tcp::{Dir, TcpState, TcpTrack};
