//! The state a flow's admission, removal and expiry change together: flow table, SNAT
//! allocator, inspection slots, and the closed-flow bookkeeping of port takeover.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::super::counters::{bump, Counters};
use super::super::inspect::InspectPool;
use super::super::Nanos;
use crate::conntrack::{FlowTable, TimeoutClass};
use crate::nat::SnatPool;

pub(super) struct Tables {
    pub flows: FlowTable,
    pub snat: SnatPool,
    pub inspect: InspectPool,
    /// The worker's counters (the same `Arc` the control plane scrapes).
    pub counters: Arc<Counters>,
    /// Moves whenever the closed (reset or TIME_WAIT) TCP flows change: one enters or leaves
    /// those classes, is touched in them, or is removed.
    pub closed_epoch: u64,
    /// The destination (remote address, port) whose search for a closed flow to take over
    /// last failed, with `closed_epoch` then: until it moves, that destination fails at once
    /// (a SYN flood toward a saturated destination costs no walk per packet).
    pub takeover_failed: Option<(Ipv4Addr, u16, u64)>,
}

impl Tables {
    /// Removes a flow and releases what it holds.
    pub fn remove(&mut self, idx: u32, now: Nanos) {
        self.drop_flow(idx, now, false);
    }

    /// Removes a flow and releases what it holds; `taken_over`: a closed flow whose public
    /// port a new flow has just been granted (see [`SnatPool::release_reclaimed`]).
    pub fn drop_flow(&mut self, idx: u32, now: Nanos, taken_over: bool) {
        let f = self.flows.remove(idx);
        bump(&self.counters.flows_removed, 1);
        if is_closed_class(f.class()) {
            self.closed_epoch += 1;
        }
        if let Some(slot) = f.verdict().slot() {
            self.inspect.release(slot, idx);
        }
        if f.reply.dst() != f.orig.src() {
            if taken_over {
                self.snat
                    .release_reclaimed(&f.orig, f.snat_idx, f.reply.dport(), now);
            } else {
                self.snat.release(&f.orig, f.snat_idx, f.reply.dport(), now);
            }
        }
    }

    /// Removes up to `budget` expired flows, oldest first; returns how many.
    pub fn expire(&mut self, now: Nanos, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            match self.flows.oldest_expired(now) {
                Some(idx) => {
                    self.remove(idx, now);
                    bump(&self.counters.flows_expired, 1);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }
}

/// The timeout classes of closed TCP flows (reset; FIN both ways), whose ports a new SYN may
/// take over under port pressure.
#[inline]
pub(super) fn is_closed_class(c: TimeoutClass) -> bool {
    matches!(c, TimeoutClass::TcpClosed | TimeoutClass::TcpTimeWait)
}
