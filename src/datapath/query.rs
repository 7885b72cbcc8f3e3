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
use crate::conntrack::{Flow, FlowKey, FlowVerdict, TimeoutClass, Timeouts};
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
    /// Destinations (address, port, protocol) by SNATed flows toward them, most first.
    pub destinations: Vec<((Ipv4Addr, u16, u8), u32)>,
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
            s.answer = Some((ticket, f(q)));
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

/// The busiest destinations of SNATed flows (`public` tells a SNAT address), most first.
pub fn busiest_destinations<'a>(
    flows: impl Iterator<Item = &'a Flow>,
    public: impl Fn(Ipv4Addr) -> bool,
    top: usize,
) -> Vec<((Ipv4Addr, u16, u8), u32)> {
    let mut by: HashMap<(Ipv4Addr, u16, u8), u32> = HashMap::new();
    for f in flows {
        if f.class() == TimeoutClass::TcpClosed || !public(f.reply.dst()) {
            continue;
        }
        *by.entry((f.orig.dst(), f.orig.dport(), f.orig.proto()))
            .or_default() += 1;
    }
    top_n(by.into_iter(), top)
}

/// The `n` largest by count, ties by key (a stable order for tests and humans).
pub fn top_n<K: Ord + Copy>(it: impl Iterator<Item = (K, u32)>, n: usize) -> Vec<(K, u32)> {
    let mut v: Vec<(K, u32)> = it.collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
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

    #[test]
    fn top_n_orders_by_count_then_key() {
        let v = top_n([(3u8, 5), (1, 7), (2, 5), (4, 1)].into_iter(), 3);
        assert_eq!(v, vec![(1, 7), (2, 5), (3, 5)]);
    }
}
