//! Per-worker counters: written by one worker only (a relaxed load and store, no locked
//! read-modify-write), read by the control plane at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::DropReason;

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
    pub flows_expired: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
    /// Gauges the worker publishes between batches (in `housekeeping`), never per packet:
    /// the caller's clock at the last publication (a stalled worker stops moving it),
    pub heartbeat_ns: AtomicU64,
    /// tracked flows,
    pub flows: AtomicU64,
    /// and the busiest SNAT slice's use, in parts per million of its ports.
    pub snat_util_ppm: AtomicU64,
    /// Decision events not logged (rate limit or full ring).
    pub events_suppressed: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rx_packets: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            local: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            flows_created: AtomicU64::new(0),
            flows_expired: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            heartbeat_ns: AtomicU64::new(0),
            flows: AtomicU64::new(0),
            snat_util_ppm: AtomicU64::new(0),
            events_suppressed: AtomicU64::new(0),
        }
    }
}

/// Adds `n` to a counter that only the calling thread writes.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Counters {
    /// Drops counted under `r`.
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r as usize].load(Relaxed)
    }
    /// Sum of all drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(|d| d.load(Relaxed)).sum()
    }
}
