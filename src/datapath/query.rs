//! Questions the control plane asks a running worker (`tollgate flows`, `tollgate snat`, the
//! busiest SNAT destinations in `/metrics`), answered on the worker's own thread between
//! batches. The flow table stays unshared: the worker checks one atomic per loop iteration and
//! takes the inbox's lock only when a question is waiting, so the packet path never locks.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::Nanos;
use crate::conntrack::{Flow, FlowKey, FlowTable, FlowVerdict, TimeoutClass, Timeouts};
use crate::policy::{proto, Policy};

/// Which flows `tollgate flows` lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// The inside (original) source must lie in this prefix.
    pub src: Option<Ipv4Net>,
    /// The original destination must lie in this prefix.
    pub dst: Option<Ipv4Net>,
    /// `syn_sent`, `established`, `closing`, `time_wait`, `closed`, `udp`, `icmp`, `inspecting`,
    /// `revoked` (a reload denied it: cut at its next packet).
    pub state: Option<String>,
    /// IP protocol number.
    pub proto: Option<u8>,
    /// At most this many flows come back per worker (the total matched is counted anyway).
    pub limit: usize,
}

/// A question for a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    Flows(FlowFilter),
    /// SNAT use: per address and protocol, the top `top` inside hosts and destinations.
    Snat {
        top: usize,
    },
}

/// One tracked flow as `tollgate flows` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    pub worker: usize,
    /// The first packet's tuple (inside host -> destination).
    pub orig: FlowKey,
    /// The tuple answers arrive with (its destination is the SNAT address and port).
    pub reply: FlowKey,
    pub state: &'static str,
    /// Packets seen in the original and the reply direction.
    pub packets: [u32; 2],
    pub age_secs: u64,
    pub expires_in_secs: u64,
    /// `group/collection/rule` of the rule that admitted it (None while inspecting).
    pub rule: Option<String>,
}

/// SNAT use of one public address and protocol, on one worker's slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnatUse {
    pub addr: Ipv4Addr,
    pub proto: u8,
    pub used: u32,
    pub size: u32,
}

/// A worker's SNAT report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnatReport {
    pub slices: Vec<SnatUse>,
    /// Inside hosts by ports (EIM) or sessions (APDM) held, most first.
    pub hosts: Vec<(Ipv4Addr, u32)>,
    /// Destinations (address, port, protocol) by SNATed flows toward them, most first: exact
    /// when `census` saw every flow, else estimated from its sample.
    pub destinations: Vec<(Destination, u32)>,
    /// How much of the flow table `destinations` comes from.
    pub census: Census,
}

/// A destination of SNATed flows: address, port, protocol.
pub type Destination = (Ipv4Addr, u16, u8);

/// Flow-table slots one SNAT report reads per worker, at most. A report is answered on the
/// packet thread, so its cost must not grow with the table: at 1M flows a full walk stalled
/// the worker for tens of milliseconds per scrape (docs/operability.md has the figures).
pub const CENSUS_PROBES: u32 = 16_384;

/// What a bounded look at a flow table saw (summed over workers in a merged report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Slots read.
    pub slots_read: u32,
    /// Live flows among them.
    pub flows_seen: u32,
    /// Live flows in the table(s).
    pub flows: u32,
}

impl Census {
    /// Every flow was seen: the counts are exact.
    pub fn exact(&self) -> bool {
        self.flows_seen == self.flows
    }

    /// Sums two workers' looks.
    pub fn plus(self, o: Census) -> Census {
        Census {
            slots_read: self.slots_read + o.slots_read,
            flows_seen: self.flows_seen + o.flows_seen,
            flows: self.flows + o.flows,
        }
    }
}

/// What a worker answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Flows {
        flows: Vec<FlowInfo>,
        /// Flows that matched the filter, including those beyond the limit.
        matched: usize,
        /// Flows the worker tracks.
        total: usize,
    },
    Snat(SnatReport),
}

#[derive(Debug, Default)]
struct Slot {
    query: Option<(u64, Query)>,
    answer: Option<(u64, Answer)>,
}

/// One worker's inbox: the control plane posts, the worker answers between batches.
#[derive(Debug, Default)]
pub struct Inbox {
    /// The ticket of the last question posted.
    asked: AtomicU64,
    /// The ticket of the last question answered.
    answered: AtomicU64,
    /// How long the worker spent answering the last question (ns): the packet thread's stall.
    served_ns: AtomicU64,
    slot: Mutex<Slot>,
}

impl Inbox {
    pub fn new() -> Arc<Self> {
        Arc::new(Inbox::default())
    }

    /// Worker side: is a question waiting? Two atomic loads, for the loop.
    #[inline]
    pub fn pending(&self) -> bool {
        self.asked.load(Ordering::Acquire) != self.answered.load(Ordering::Relaxed)
    }

    /// Worker side: takes the waiting question, answers it with `f`, marks it answered.
    pub fn serve(&self, f: impl FnOnce(Query) -> Answer) {
        let Ok(mut s) = self.slot.lock() else { return };
        if let Some((ticket, q)) = s.query.take() {
            let t0 = Instant::now();
            s.answer = Some((ticket, f(q)));
            self.served_ns
                .store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.answered.store(ticket, Ordering::Release);
        }
    }

    fn post(&self, q: Query) -> u64 {
        let Ok(mut s) = self.slot.lock() else {
            return 0;
        };
        let ticket = self.asked.load(Ordering::Relaxed) + 1;
        s.query = Some((ticket, q));
        s.answer = None;
        self.asked.store(ticket, Ordering::Release);
        ticket
    }

    fn take(&self, ticket: u64) -> Option<Answer> {
        if self.answered.load(Ordering::Acquire) != ticket {
            return None;
        }
        let mut s = self.slot.lock().ok()?;
        match s.answer.take() {
            Some((t, a)) if t == ticket => Some(a),
            other => {
                s.answer = other;
                None
            }
        }
    }
}

/// The control plane's handle on every worker's inbox. Questions are serialised: one at a
/// time across all callers (admin socket and metrics scrapes).
#[derive(Debug, Default)]
pub struct Inboxes {
    boxes: Mutex<Vec<Arc<Inbox>>>,
    asking: Mutex<()>,
}

impl Inboxes {
    pub fn new() -> Arc<Self> {
        Arc::new(Inboxes::default())
    }
    /// Registers a worker's inbox (at startup, in worker order is not required).
    pub fn register(&self, b: Arc<Inbox>) {
        if let Ok(mut v) = self.boxes.lock() {
            v.push(b);
        }
    }
    /// The longest time a worker spent answering its last question (ns): how long the
    /// control plane last held a packet thread.
    pub fn served_ns_max(&self) -> u64 {
        self.boxes
            .lock()
            .map(|v| {
                v.iter()
                    .map(|b| b.served_ns.load(Ordering::Relaxed))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// Asks every worker `q` and waits up to `timeout` for all answers; a worker that does not
    /// answer in time (stalled) is left out, and the count of missing answers is returned.
    pub fn ask(&self, q: &Query, timeout: Duration) -> (Vec<Answer>, usize) {
        let _one = self.asking.lock();
        let boxes = self.boxes.lock().map(|b| b.clone()).unwrap_or_default();
        let tickets: Vec<u64> = boxes.iter().map(|b| b.post(q.clone())).collect();
        let deadline = Instant::now() + timeout;
        let mut answers: Vec<Option<Answer>> = vec![None; boxes.len()];
        loop {
            for (i, b) in boxes.iter().enumerate() {
                if answers[i].is_none() {
                    answers[i] = b.take(tickets[i]);
                }
            }
            if answers.iter().all(Option::is_some) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let missing = answers.iter().filter(|a| a.is_none()).count();
        (answers.into_iter().flatten().collect(), missing)
    }
}

/// The state name `tollgate flows` shows and filters on.
pub fn state_name(f: &Flow) -> &'static str {
    match f.verdict() {
        FlowVerdict::Inspecting { .. } => return "inspecting",
        FlowVerdict::Revoked { .. } => return "revoked",
        FlowVerdict::Allowed { .. } => {}
    }
    match f.orig.proto() {
        proto::TCP => f.tcp.state.as_str(),
        proto::UDP => "udp",
        proto::ICMP => "icmp",
        _ => "other",
    }
}

/// Answers a [`Query::Flows`] over one worker's flows.
pub fn list_flows<'a>(
    worker: usize,
    flows: impl Iterator<Item = &'a Flow>,
    total: usize,
    filter: &FlowFilter,
    now: Nanos,
    timeouts: &Timeouts,
    policy: &dyn Policy,
) -> Answer {
    let now_secs = now / 1_000_000_000;
    let mut out = Vec::new();
    let mut matched = 0;
    for f in flows {
        let state = state_name(f);
        if filter.src.is_some_and(|n| !n.contains(&f.orig.src()))
            || filter.dst.is_some_and(|n| !n.contains(&f.orig.dst()))
            || filter.proto.is_some_and(|p| p != f.orig.proto())
            || filter.state.as_deref().is_some_and(|s| s != state)
        {
            continue;
        }
        matched += 1;
        if out.len() >= filter.limit {
            continue;
        }
        let rule = f
            .verdict()
            .rule()
            .and_then(|r| policy.describe(u32::from(r)))
            .map(|r| format!("{}/{}/{}", r.group, r.collection, r.rule));
        out.push(FlowInfo {
            worker,
            orig: f.orig,
            reply: f.reply,
            state,
            packets: f.packets,
            age_secs: now_secs.saturating_sub(u64::from(f.created_secs)),
            expires_in_secs: f.expires_in(now, timeouts),
            rule,
        });
    }
    Answer::Flows {
        flows: out,
        matched,
        total,
    }
}

/// The busiest destinations of SNATed flows (`public` tells a SNAT address), most first, from
/// a census of at most [`CENSUS_PROBES`] slots (`offset` picks the sample's start). Sampled
/// counts are scaled by live flows / flows seen: an estimate whose error shrinks with a
/// destination's share, which is what matters here (a destination near port exhaustion holds
/// a large share).
pub fn busiest_destinations(
    table: &FlowTable,
    public: impl Fn(Ipv4Addr) -> bool,
    top: usize,
    offset: u64,
) -> (Vec<(Destination, u32)>, Census) {
    // Sized once for the most keys a census can meet: no growth while counting.
    let cap = (table.len() as u32).min(CENSUS_PROBES) as usize;
    let mut by: HashMap<(Ipv4Addr, u16, u8), u32, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(cap, Default::default());
    let mut seen = 0u32;
    let slots_read = table.census(CENSUS_PROBES, offset, |f| {
        seen += 1;
        if f.class() == TimeoutClass::TcpClosed || !public(f.reply.dst()) {
            return;
        }
        *by.entry((f.orig.dst(), f.orig.dport(), f.orig.proto()))
            .or_default() += 1;
    });
    let census = Census {
        slots_read,
        flows_seen: seen,
        flows: table.len() as u32,
    };
    if !census.exact() && seen > 0 {
        let scale = |n: u32| {
            ((u64::from(n) * u64::from(census.flows) + u64::from(seen) / 2) / u64::from(seen))
                as u32
        };
        by.values_mut().for_each(|n| *n = scale(*n));
    }
    (top_n(by.into_iter(), top), census)
}

/// The `n` largest by count, ties by key (a stable order for tests and humans).
/// Linear in the input (a partial selection, then a sort of the `n` kept).
pub fn top_n<K: Ord + Copy>(it: impl Iterator<Item = (K, u32)>, n: usize) -> Vec<(K, u32)> {
    let mut v: Vec<(K, u32)> = it.collect();
    let order = |a: &(K, u32), b: &(K, u32)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
    if n == 0 {
        return Vec::new();
    }
    if v.len() > n {
        v.select_nth_unstable_by(n - 1, order);
        v.truncate(n);
    }
    v.sort_by(order);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ask_waits_for_every_worker_and_leaves_out_a_stalled_one() {
        let boxes = Inboxes::new();
        let (a, b) = (Inbox::new(), Inbox::new());
        boxes.register(a.clone());
        boxes.register(b.clone());
        let served = std::thread::spawn(move || {
            for _ in 0..500 {
                if a.pending() {
                    a.serve(|q| {
                        assert_eq!(q, Query::Snat { top: 3 });
                        Answer::Snat(SnatReport::default())
                    });
                    return true;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            false
        });
        let (answers, missing) = boxes.ask(&Query::Snat { top: 3 }, Duration::from_millis(300));
        assert!(served.join().unwrap());
        assert_eq!(answers, vec![Answer::Snat(SnatReport::default())]);
        assert_eq!(missing, 1, "worker b never answered");
        assert!(b.pending(), "b still has the question");
    }

    /// A table of `n` UDP flows from the inside, SNATed to 203.0.113.1: flow i goes to
    /// 198.51.100.1 when i % 10 < 6, to .2 when < 9, else to one of 1,000 others.
    fn table(n: u32, cap: u32) -> FlowTable {
        let mut t = FlowTable::new(cap, 1, Timeouts::default());
        for i in 0..n {
            let dst = match i % 10 {
                0..=5 => Ipv4Addr::new(198, 51, 100, 1),
                6..=8 => Ipv4Addr::new(198, 51, 100, 2),
                _ => Ipv4Addr::from(0xc000_0200 + (i / 10) % 1000),
            };
            let src = Ipv4Addr::from(0xc612_0000 + i / 1000);
            let port = 1024 + (i % 1000) as u16;
            let orig = FlowKey::new(src, dst, port, 53, proto::UDP);
            let reply = FlowKey::new(dst, Ipv4Addr::new(203, 0, 113, 1), 53, port, proto::UDP);
            t.insert(orig, reply, TimeoutClass::Udp, 0).unwrap();
        }
        t
    }

    fn public(a: Ipv4Addr) -> bool {
        a == Ipv4Addr::new(203, 0, 113, 1)
    }

    #[test]
    fn a_small_table_is_counted_exactly() {
        let t = table(5_000, 1 << 20);
        let (top, c) = busiest_destinations(&t, public, 2, 12345);
        assert!(c.exact());
        assert_eq!(c.slots_read, 5_000, "only up to the high-water mark");
        let d = |x| (Ipv4Addr::new(198, 51, 100, x), 53, proto::UDP);
        assert_eq!(top, vec![(d(1), 3_000), (d(2), 1_500)]);
    }

    #[test]
    fn a_large_table_is_sampled_within_bounds() {
        let n = 400_000;
        let t = table(n, n);
        let d = |x| (Ipv4Addr::new(198, 51, 100, x), 53, proto::UDP);
        for offset in [0u64, 7, 1 << 40] {
            let (top, c) = busiest_destinations(&t, public, 2, offset);
            assert!(!c.exact());
            assert_eq!(c.slots_read, CENSUS_PROBES, "bounded work");
            assert_eq!(c.flows, n);
            assert_eq!(top[0].0, d(1));
            assert_eq!(top[1].0, d(2));
            // 60% and 30% of the flows, within 5% of the truth.
            for (got, want) in [(top[0].1, n * 6 / 10), (top[1].1, n * 3 / 10)] {
                let err = (f64::from(got) - f64::from(want)).abs() / f64::from(want);
                assert!(err < 0.05, "estimate {got} for {want} (offset {offset})");
            }
        }
    }

    #[test]
    fn a_sparse_table_after_a_peak_stays_bounded() {
        let mut t = table(200_000, 200_000);
        // Keep every 50th flow: 4,000 flows spread over 200,000 slots.
        let idx: Vec<u32> = t.iter().map(|(i, _)| i).filter(|i| i % 50 != 0).collect();
        for i in idx {
            t.remove(i);
        }
        let (_, c) = busiest_destinations(&t, public, 2, 3);
        assert_eq!(c.slots_read, CENSUS_PROBES);
        assert_eq!(c.flows, 4_000);
        assert!(c.flows_seen > 0 && c.flows_seen < 4_000);
    }

    #[test]
    fn top_n_orders_by_count_then_key() {
        let v = top_n([(3u8, 5), (1, 7), (2, 5), (4, 1)].into_iter(), 3);
        assert_eq!(v, vec![(1, 7), (2, 5), (3, 5)]);
        assert_eq!(top_n([(1u8, 1)].into_iter(), 0), vec![]);
        assert_eq!(
            top_n([(2u8, 1), (1, 1)].into_iter(), 5),
            vec![(1, 1), (2, 1)]
        );
        let many: Vec<(u32, u32)> = (0..1000).map(|i| (i, (i * 7919) % 1000)).collect();
        let mut sorted = many.clone();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(top_n(many.into_iter(), 10), sorted[..10].to_vec());
    }
}
