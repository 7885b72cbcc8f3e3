//! Per-worker counters: written by one worker only (a relaxed load and store, no locked
//! read-modify-write), read by the control plane at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use super::DropReason;
use crate::policy::Policy;

/// How many times each rule of one policy decided a new flow, on one worker. A reload gives
/// the worker a fresh table (rule numbers change with the file); the old one is retired to
/// the control plane, which keeps the totals by rule name so counters never go backwards.
pub struct RuleHits {
    pub policy: Arc<dyn Policy>,
    pub counts: Box<[AtomicU64]>,
}

impl std::fmt::Debug for RuleHits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleHits")
            .field("rules", &self.counts.len())
            .finish()
    }
}

impl RuleHits {
    pub fn new(policy: Arc<dyn Policy>) -> Arc<Self> {
        let n = policy.rule_count();
        Arc::new(RuleHits {
            policy,
            counts: (0..n).map(|_| AtomicU64::new(0)).collect(),
        })
    }
    /// Counts one decision by `rule` (only its worker writes).
    #[inline]
    pub fn hit(&self, rule: u32) {
        if let Some(c) = self.counts.get(rule as usize) {
            bump(c, 1);
        }
    }
}

/// Frames and bytes through one data interface.
#[derive(Debug, Default)]
pub struct IfaceCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
}

/// SNAT protocols in the per-address gauges, in their order.
pub const SNAT_PROTOS: [u8; 3] = [6, 17, 1];

/// Counters of one worker.
#[derive(Debug)]
pub struct Counters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Frames left to the kernel (ARP, traffic to the appliance itself).
    pub local: AtomicU64,
    /// ICMP errors and resets the appliance originated.
    pub replies: AtomicU64,
    pub flows_created: AtomicU64,
    /// Flows reclaimed after their timeout (a subset of `flows_removed`).
    pub flows_expired: AtomicU64,
    /// Flows taken out of the table for any reason: expiry, a takeover of a closed flow's
    /// port, a reset or revocation, the inspection budget. created - removed = tracked.
    pub flows_removed: AtomicU64,
    /// SNAT flows of an inside endpoint that has an endpoint-independent mapping but got
    /// another public port, because another holder of the shared port already talks to the
    /// flow's destination (the mapping itself is kept).
    pub eim_collision_moved: AtomicU64,
    /// New TCP flows that found no SNAT port and took over the port of a closed flow (TIME_WAIT
    /// or reset) toward the same remote address and port, which was evicted
    /// (`[snat] time_wait_reuse`).
    pub snat_time_wait_reused: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
    /// Gauges the worker publishes between batches (in `housekeeping`), never per packet:
    /// the caller's clock at the last publication (a stalled worker stops moving it),
    pub heartbeat_ns: AtomicU64,
    /// tracked flows,
    pub flows: AtomicU64,
    /// and the busiest SNAT slice's use, in parts per million of its ports.
    pub snat_util_ppm: AtomicU64,
    /// tracked flows per timeout class (state and protocol), in `TimeoutClass::ALL` order.
    pub flows_by_class: [AtomicU64; crate::conntrack::TimeoutClass::COUNT],
    /// Decision events not logged (rate limit or full ring).
    pub events_suppressed: AtomicU64,
    /// Per data interface (by [`super::IfaceId`]): what arrived on it and what left by it.
    pub ifaces: Box<[IfaceCounters]>,
    /// Ports in use and slice sizes per (public address, protocol in [`SNAT_PROTOS`] order),
    /// published between batches.
    pub snat_used: Box<[AtomicU64]>,
    pub snat_size: Box<[AtomicU64]>,
    /// Rule hits under the policy the worker runs, and the tables of policies it left.
    pub rule_hits: ArcSwapOption<RuleHits>,
    pub retired_hits: Mutex<Vec<Arc<RuleHits>>>,
}

impl Default for Counters {
    fn default() -> Self {
        Self::sized(0, 0)
    }
}

impl Counters {
    /// Counters for a worker with `ifaces` data interfaces and `addrs` public addresses.
    pub fn sized(ifaces: usize, addrs: usize) -> Self {
        let n = addrs * SNAT_PROTOS.len();
        Counters {
            rx_packets: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            local: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            flows_created: AtomicU64::new(0),
            flows_expired: AtomicU64::new(0),
            flows_removed: AtomicU64::new(0),
            eim_collision_moved: AtomicU64::new(0),
            snat_time_wait_reused: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            heartbeat_ns: AtomicU64::new(0),
            flows: AtomicU64::new(0),
            snat_util_ppm: AtomicU64::new(0),
            flows_by_class: std::array::from_fn(|_| AtomicU64::new(0)),
            events_suppressed: AtomicU64::new(0),
            ifaces: (0..ifaces).map(|_| IfaceCounters::default()).collect(),
            snat_used: (0..n).map(|_| AtomicU64::new(0)).collect(),
            snat_size: (0..n).map(|_| AtomicU64::new(0)).collect(),
            rule_hits: ArcSwapOption::empty(),
            retired_hits: Mutex::new(Vec::new()),
        }
    }
}

/// Adds `n` to a counter that only the calling thread writes.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Counters {
    /// Counts a frame received on `i`.
    #[inline]
    pub fn rx_on(&self, i: super::IfaceId, len: usize) {
        if let Some(c) = self.ifaces.get(usize::from(i)) {
            bump(&c.rx_packets, 1);
            bump(&c.rx_bytes, len as u64);
        }
    }
    /// Counts a frame sent on `i`.
    #[inline]
    pub fn tx_on(&self, i: super::IfaceId, len: usize) {
        if let Some(c) = self.ifaces.get(usize::from(i)) {
            bump(&c.tx_packets, 1);
            bump(&c.tx_bytes, len as u64);
        }
    }
    /// Drops counted under `r`.
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r as usize].load(Relaxed)
    }
    /// Sum of all drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(|d| d.load(Relaxed)).sum()
    }
}
