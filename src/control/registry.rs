//! What the daemon's endpoints share: the workers' counters as they register ([`Registry`]),
//! and the questions asked of every worker's inbox, merged ([`ask_snat`]). The management
//! endpoint ([`super::mgmt`]) and the admin socket ([`super::admin`]) both read it; neither
//! imports the other.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::datapath::query::{Answer, Inboxes, Query, SnatReport};
use crate::datapath::{Counters, RuleHits};
use crate::io::runtime::LiveIoStats;
use crate::io::IoStats;

/// How long a question waits for the workers (an idle worker answers within its poll timeout).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);

fn kind_str(k: &str) -> &'static str {
    match k {
        "dnat" => "dnat",
        "network" => "network",
        "application" => "application",
        _ => "other",
    }
}

/// Rule names as exported: group, collection, rule, kind.
type RuleName = (String, String, String, &'static str);

/// The workers' counters, registered once each as they start, and what the control plane
/// needs to export them.
#[derive(Debug, Default)]
pub struct Registry {
    pub(super) workers: Mutex<Vec<Arc<Counters>>>,
    pub(super) expected: std::sync::atomic::AtomicUsize,
    /// The workers' inboxes (flow and SNAT questions).
    pub inboxes: Arc<Inboxes>,
    /// Data interface names by interface id.
    pub(super) ifaces: Mutex<Vec<String>>,
    /// Public SNAT addresses, in the pool's order.
    pub(super) snat_addrs: Mutex<Vec<std::net::Ipv4Addr>>,
    /// Hits of rules under policies the workers have left behind (reloads), by name.
    pub(super) retired_hits: Mutex<BTreeMap<RuleName, u64>>,
    /// The I/O counters the workers publish while they run, per worker and interface.
    pub(super) live_io: std::sync::OnceLock<Arc<LiveIoStats>>,
}

impl Registry {
    /// A registry that is ready once `workers` have registered.
    pub fn new(workers: usize) -> Arc<Self> {
        let r = Registry::default();
        r.expected.store(workers, Relaxed);
        Arc::new(r)
    }
    /// Names the data interfaces and SNAT addresses for the per-interface and per-address
    /// metrics.
    pub fn describe(&self, ifaces: Vec<String>, snat_addrs: Vec<std::net::Ipv4Addr>) {
        if let Ok(mut i) = self.ifaces.lock() {
            *i = ifaces;
        }
        if let Ok(mut a) = self.snat_addrs.lock() {
            *a = snat_addrs;
        }
    }
    /// Where the workers publish their I/O counters (set once, before they start).
    pub fn set_live_io(&self, live: Arc<LiveIoStats>) {
        let _ = self.live_io.set(live);
    }
    /// Each data interface's I/O counters, summed over the workers, by name (the described
    /// interfaces, in order); empty when no worker publishes them.
    pub fn io_stats(&self) -> Vec<(String, IoStats)> {
        let Some(live) = self.live_io.get() else {
            return Vec::new();
        };
        let ifaces = self.ifaces.lock().map(|v| v.clone()).unwrap_or_default();
        ifaces
            .into_iter()
            .enumerate()
            .take(usize::from(crate::datapath::IfaceId::MAX) + 1)
            .map(|(i, name)| (name, live.iface(i as crate::datapath::IfaceId)))
            .collect()
    }
    /// Per-rule hit totals across workers and reloads, by name (rules with hits only).
    pub fn rule_hits(&self) -> BTreeMap<RuleName, u64> {
        let ws = self.snapshot();
        let Ok(mut retired) = self.retired_hits.lock() else {
            return BTreeMap::new();
        };
        let add = |m: &mut BTreeMap<RuleName, u64>, h: &RuleHits| {
            for (i, c) in h.counts.iter().enumerate() {
                let v = c.load(Relaxed);
                if v == 0 {
                    continue;
                }
                if let Some(r) = h.policy.describe(i as u32) {
                    let k = (
                        r.group.to_string(),
                        r.collection.to_string(),
                        r.rule.to_string(),
                        kind_str(r.kind),
                    );
                    *m.entry(k).or_default() += v;
                }
            }
        };
        for c in &ws {
            let old: Vec<Arc<RuleHits>> = c
                .retired_hits
                .lock()
                .map(|mut v| std::mem::take(&mut *v))
                .unwrap_or_default();
            for h in old {
                add(&mut retired, &h);
            }
        }
        let mut total = retired.clone();
        for c in &ws {
            if let Some(h) = c.rule_hits.load_full() {
                add(&mut total, &h);
            }
        }
        total
    }
    /// Called once per worker at startup (not on the packet path).
    pub fn register(&self, c: Arc<Counters>) {
        if let Ok(mut w) = self.workers.lock() {
            w.push(c);
        }
    }
    pub(super) fn snapshot(&self) -> Vec<Arc<Counters>> {
        self.workers.lock().map(|w| w.clone()).unwrap_or_default()
    }
    /// Every registered worker's counters.
    pub fn all(&self) -> Vec<Arc<Counters>> {
        self.snapshot()
    }
    /// Every worker has registered and published a heartbeat.
    pub fn ready(&self) -> bool {
        let ws = self.snapshot();
        ws.len() >= self.expected.load(Relaxed)
            && ws.iter().all(|c| c.heartbeat_ns.load(Relaxed) != 0)
    }
}

/// The workers' SNAT reports merged: per address and protocol, hosts and destinations summed.
pub fn merge_snat(reports: &[SnatReport], top: usize) -> SnatReport {
    let mut slices: BTreeMap<(Ipv4Addr, u8), (u32, u32)> = BTreeMap::new();
    let mut hosts: BTreeMap<Ipv4Addr, u32> = BTreeMap::new();
    let mut dests: BTreeMap<(Ipv4Addr, u16, u8), u32> = BTreeMap::new();
    let mut census = crate::datapath::query::Census::default();
    for r in reports {
        census = census.plus(r.census);
        for s in &r.slices {
            let e = slices.entry((s.addr, s.proto)).or_default();
            e.0 += s.used;
            e.1 += s.size;
        }
        for &(h, n) in &r.hosts {
            *hosts.entry(h).or_default() += n;
        }
        for &(d, n) in &r.destinations {
            *dests.entry(d).or_default() += n;
        }
    }
    use crate::datapath::query::{top_n, SnatUse};
    SnatReport {
        slices: slices
            .into_iter()
            .map(|((addr, proto), (used, size))| SnatUse {
                addr,
                proto,
                used,
                size,
            })
            .collect(),
        hosts: top_n(hosts.into_iter(), top),
        destinations: top_n(dests.into_iter(), top),
        census,
    }
}

/// Asks every worker for its SNAT report and merges them.
pub fn ask_snat(inboxes: &Inboxes, top: usize) -> (SnatReport, Vec<SnatReport>, usize) {
    let (answers, missing) = inboxes.ask(
        &Query::Snat {
            top: top.max(1) * 4,
        },
        ASK_TIMEOUT,
    );
    let per: Vec<SnatReport> = answers
        .into_iter()
        .filter_map(|a| match a {
            Answer::Snat(r) => Some(r),
            _ => None,
        })
        .collect();
    (merge_snat(&per, top), per, missing)
}
