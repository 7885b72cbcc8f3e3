//! The worker's side of the control plane, run between batches (never per packet; these may
//! allocate): re-deciding flows on reload, answering questions, publishing gauges.

use std::net::Ipv4Addr;

use super::super::counters::{Counters, SNAT_PROTOS};
use super::super::query::{self, Answer, Query, SnatReport, SnatUse};
use super::super::{EngineConfig, Nanos};
use crate::conntrack::{FlowTable, FlowVerdict, TimeoutClass};
use crate::nat::SnatPool;
use crate::policy::{Decision, FlowQuery, Policy};

/// Marks every allowed flow that `policy` now denies as revoked (its next packet cuts it);
/// returns how many. Flows allowed by application rules keep their verdict: their name was
/// read once and is not kept.
pub(super) fn revoke_denied(flows: &mut FlowTable, policy: &dyn Policy) -> usize {
    let revoked: Vec<u32> = flows
        .iter()
        .filter(|(_, f)| matches!(f.verdict(), FlowVerdict::Allowed { .. }))
        .filter(|(_, f)| {
            let q = FlowQuery {
                src: f.orig.src(),
                dst: f.orig.dst(),
                proto: f.orig.proto(),
                sport: f.orig.sport(),
                dport: f.orig.dport(),
            };
            matches!(policy.decide(&q), Decision::Deny { .. })
        })
        .map(|(i, _)| i)
        .collect();
    for &i in &revoked {
        let f = flows.get_mut(i);
        if let FlowVerdict::Allowed { rule } = f.verdict() {
            f.set_verdict(FlowVerdict::Revoked { rule });
        }
    }
    revoked.len()
}

/// Publishes the heartbeat, flow count and busiest SNAT slice for the control plane.
pub(super) fn publish_gauges(c: &Counters, flows: &FlowTable, snat: &SnatPool, now: Nanos) {
    use std::sync::atomic::Ordering::Relaxed;
    c.heartbeat_ns.store(now, Relaxed);
    c.flows.store(flows.len() as u64, Relaxed);
    for (g, class) in c.flows_by_class.iter().zip(TimeoutClass::ALL) {
        g.store(flows.class_len(class) as u64, Relaxed);
    }
    let mut worst = 0u64;
    for a in 0..snat.addrs().len() {
        for (j, p) in SNAT_PROTOS.into_iter().enumerate() {
            let (used, size) = snat.utilisation(a, p);
            if size > 0 {
                // A worker that borrowed ports holds more than its slice: 1.
                worst = worst.max((u64::from(used) * 1_000_000 / u64::from(size)).min(1_000_000));
            }
            let k = a * SNAT_PROTOS.len() + j;
            if let (Some(u), Some(s)) = (c.snat_used.get(k), c.snat_size.get(k)) {
                u.store(u64::from(used), Relaxed);
                s.store(u64::from(size), Relaxed);
            }
        }
    }
    c.snat_util_ppm.store(worst, Relaxed);
}

/// Answers a control-plane question about worker `index`'s tables.
pub(super) fn answer(
    index: usize,
    flows: &FlowTable,
    snat: &SnatPool,
    cfg: &EngineConfig,
    policy: &dyn Policy,
    now: Nanos,
    q: Query,
) -> Answer {
    match q {
        Query::Flows(filter) => query::list_flows(
            index,
            flows.iter().map(|(_, f)| f),
            flows.len(),
            &filter,
            now,
            flows.timeouts(),
            policy,
        ),
        Query::Snat { top } => {
            let mut slices = Vec::new();
            for (a, &addr) in snat.addrs().iter().enumerate() {
                for p in SNAT_PROTOS {
                    let (used, size) = snat.utilisation(a, p);
                    slices.push(SnatUse {
                        addr,
                        proto: p,
                        used,
                        size,
                    });
                }
            }
            let public = |a: Ipv4Addr| cfg.nat.public_addrs.contains(&a);
            // A different sample start each time: successive scrapes see other slots.
            let offset = now.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17;
            let (destinations, census) = query::busiest_destinations(flows, public, top, offset);
            Answer::Snat(SnatReport {
                slices,
                hosts: query::top_n(snat.holders(), top),
                destinations,
                census,
            })
        }
    }
}
