//! The worker: one flow table, one slice of the SNAT port space, and `process`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::counters::{bump, Counters, RuleHits, SNAT_PROTOS};
use super::events::{Action, DecisionEvent, EventSink};
use super::frag::FragCache;
use super::inspect::{self, HoldError, InspectPool, TxQueue, L7};
use super::query::{self, Answer, Inbox, Query, SnatReport, SnatUse};
use super::route::RouteTable;
use super::{DropReason, EngineConfig, Gso, IfaceId, Nanos, Offload, Packet, Verdict};
use crate::conntrack::{
    Dir, Flow, FlowKey, FlowTable, FlowVerdict, InspectKind, TcpState, TcpTrack, TimeoutClass,
};
use crate::nat::{AllocError, SnatPool, SnatRule};
use crate::policy::{proto, Decision, FlowQuery, Policy};
use crate::wire::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::ipv4::{self, Ipv4Packet, OptionScan};
use crate::wire::l4::{icmp_is_error, icmp_type, tcp_flags, IcmpMessage, TcpSegment, UdpDatagram};
use crate::wire::{checksum, gso, WireError};

/// Expired flows reclaimed per new flow: keeps expiry amortised without a scavenger thread.
const EXPIRE_PER_NEW_FLOW: usize = 2;
/// Closed flows (of each of the reset and TIME_WAIT lists, oldest first) a SYN that found no
/// SNAT port looks at for one toward its destination it may take over: bounds the work per
/// SYN whatever the table holds.
const TAKEOVER_WALK: usize = 64;

/// What the first pass over a packet learned.
#[derive(Clone, Copy, Debug)]
struct Parsed {
    l3: usize,
    l4: usize,
    end: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ttl: u8,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    icmp: Icmp,
    /// First fragment of a fragmented datagram (its later fragments need the translation).
    first_frag: bool,
    ident: u16,
    df: bool,
    /// TCP sequence and acknowledgement numbers.
    seq: u32,
    ack: u32,
    /// The transport payload (TCP data, UDP payload) is `payload..payload_end` of the frame.
    payload: usize,
    payload_end: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Icmp {
    None,
    EchoRequest,
    EchoReply,
    Error,
}

/// What stage 1 of the batch prefetch learned about a frame, for stage 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHint {
    key: FlowKey,
    hash: u32,
}

impl FlowHint {
    /// The flow-table hash of the tuple the frame will be looked up with.
    pub fn hash(&self) -> u32 {
        self.hash
    }
}

/// One dataplane worker. Owns its state; shares nothing mutable with other workers.
pub struct Worker {
    cfg: Arc<EngineConfig>,
    policy: Arc<dyn Policy>,
    index: usize,
    workers: usize,
    flows: FlowTable,
    snat: SnatPool,
    routes: RouteTable,
    frags: FragCache,
    counters: Arc<Counters>,
    local_addrs: Vec<Ipv4Addr>,
    inspect: InspectPool,
    txq: TxQueue,
    events: Option<EventSink>,
    /// Where reloaded policies come from, and the generation this worker runs.
    updates: Option<(Arc<super::updates::PolicyCell>, u64)>,
    /// Flows cut by the last adopted reload.
    pub last_reload_cut: usize,
    /// Per-rule hit counts under the running policy (also published in `counters`).
    hits: Arc<RuleHits>,
    /// Questions from the control plane (`tollgate flows`, `tollgate snat`).
    inbox: Option<Arc<Inbox>>,
    /// When the last asymmetric-route hint was logged (at most one per [`HINT_EVERY`]).
    last_hint: Option<Nanos>,
    /// Moves whenever the closed (reset or TIME_WAIT) TCP flows change: one enters or leaves
    /// those classes, is touched in them, or is removed.
    closed_epoch: u64,
    /// The destination (remote address, port) whose search for a closed flow to take over
    /// last failed, with `closed_epoch` then: until it moves, that destination fails at once
    /// (a SYN flood toward a saturated destination costs no walk per packet).
    takeover_failed: Option<(Ipv4Addr, u16, u64)>,
}

/// Asymmetric-route hints (mid-stream TCP with no flow) are logged at most this often per
/// worker; every such packet is still counted under `tcp_non_syn`.
const HINT_EVERY: Nanos = 100_000_000;

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("flows", &self.flows)
            .finish()
    }
}

fn wire_reason(e: WireError) -> DropReason {
    match e {
        WireError::Truncated => DropReason::Truncated,
        WireError::BadVersion | WireError::BadHeaderLength | WireError::BadTotalLength => {
            DropReason::BadIpHeader
        }
        WireError::BadDataOffset | WireError::BadUdpLength => DropReason::BadL4Header,
    }
}

impl Worker {
    /// Worker `index` of `workers`, with its own flow table and port slices.
    pub fn new(
        cfg: Arc<EngineConfig>,
        policy: Arc<dyn Policy>,
        index: usize,
        workers: usize,
        seed: u64,
    ) -> Self {
        Self::with_advice(cfg, policy, index, workers, seed, None)
    }

    /// Like [`Worker::new`]; `advise(addr, bytes)` sees the flow and mapping tables' large
    /// regions before they are first written (the daemon passes `io::mem::advise_hugepages`).
    pub fn with_advice(
        cfg: Arc<EngineConfig>,
        policy: Arc<dyn Policy>,
        index: usize,
        workers: usize,
        seed: u64,
        advise: Option<&dyn Fn(usize, usize)>,
    ) -> Self {
        let max = cfg.max_flows_per_worker;
        let seed = seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let local_addrs = cfg
            .interfaces
            .iter()
            .flat_map(|i| i.addrs.iter().copied())
            .collect();
        let counters = Arc::new(Counters::sized(
            cfg.interfaces.len(),
            cfg.nat.public_addrs.len(),
        ));
        let hits = RuleHits::new(policy.clone());
        counters.rule_hits.store(Some(hits.clone()));
        let mut snat = SnatPool::with_advice(
            &cfg.nat,
            index,
            workers,
            max as usize,
            seed.rotate_left(17),
            advise,
        );
        // DNAT rules' public ports are theirs alone. A reload that moves them needs a restart
        // (as the host tables do).
        for &(a, p, lo, hi) in policy.dnat_publics() {
            if let Some(i) = snat.addr_index(a) {
                snat.reserve(i, p, lo, hi);
            }
        }
        Worker {
            flows: FlowTable::with_advice(max, seed, cfg.timeouts, advise),
            snat,
            routes: RouteTable::from_config(&cfg),
            frags: FragCache::new(),
            counters,
            local_addrs,
            inspect: InspectPool::new((max as usize / 16).clamp(16, 1024)),
            txq: TxQueue::new(64),
            events: None,
            updates: None,
            last_reload_cut: 0,
            hits,
            inbox: None,
            last_hint: None,
            closed_epoch: 0,
            takeover_failed: None,
            cfg,
            policy,
            index,
            workers: workers.max(1),
        }
    }

    /// This worker's counters (shared with the control plane for scraping).
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
    /// Tracked flows.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }
    /// The SNAT allocator (utilisation, holders).
    pub fn snat(&self) -> &SnatPool {
        &self.snat
    }
    pub fn config(&self) -> &Arc<EngineConfig> {
        &self.cfg
    }
    /// Follows `cell`: a policy published there is adopted at the next `housekeeping` call.
    pub fn follow_policy(&mut self, cell: Arc<super::updates::PolicyCell>) {
        // Generation first, then the policy: a publish in between is adopted again later, never
        // missed (a policy published before the worker starts, e.g. by the resolver, counts).
        let g = cell.generation();
        let p = cell.current();
        self.updates = Some((cell, g));
        self.set_policy(p);
    }

    /// Shares the SNAT port ledger of all workers (one per daemon, see
    /// [`crate::nat::PortLedger`]): this worker may then borrow the others' free ports when its
    /// own slice is dry, and hands frames to the borrower of a port of its slice. Call before
    /// the first packet.
    pub fn share_ports(&mut self, ledger: Arc<crate::nat::PortLedger>) {
        if self.workers > 1 {
            self.snat.share_ports(ledger);
        }
    }

    /// Answers the control plane's questions posted to `inbox` between batches.
    pub fn set_inbox(&mut self, inbox: Arc<Inbox>) {
        self.inbox = Some(inbox);
    }

    /// Sends decision events to `sink` (see [`super::events::channel`]).
    pub fn set_event_sink(&mut self, sink: EventSink) {
        self.events = Some(sink);
    }
    /// Decision events dropped by the rate limit or a full ring.
    pub fn events_suppressed(&self) -> u64 {
        self.events.as_ref().map_or(0, |e| e.suppressed)
    }

    #[inline]
    fn emit(&mut self, now: Nanos, e: DecisionEvent) {
        if let Some(r) = e.rule {
            self.hits.hit(r);
        }
        if let Some(s) = &mut self.events {
            if !s.offer(now, e, &self.policy) {
                bump(&self.counters.events_suppressed, 1);
            }
        }
    }

    /// Swaps in a new policy (between batches) and re-decides every tracked flow: as in Azure
    /// Firewall, a flow the new rules deny is cut (its next packet draws a RST both ways for
    /// TCP, or is dropped) rather than left running. Flows allowed by application rules keep
    /// their verdict: their name was read once and is not kept. Returns the flows cut.
    pub fn set_policy(&mut self, p: Arc<dyn Policy>) -> usize {
        self.policy = p;
        let hits = RuleHits::new(self.policy.clone());
        if let Some(old) = self.counters.rule_hits.swap(Some(hits.clone())) {
            if let Ok(mut r) = self.counters.retired_hits.lock() {
                r.push(old);
            }
        }
        self.hits = hits;
        let revoked: Vec<u32> = self
            .flows
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
                matches!(self.policy.decide(&q), Decision::Deny { .. })
            })
            .map(|(i, _)| i)
            .collect();
        for &i in &revoked {
            let f = self.flows.get_mut(i);
            if let FlowVerdict::Allowed { rule } = f.verdict() {
                f.set_verdict(FlowVerdict::Revoked { rule });
            }
        }
        revoked.len()
    }

    /// Frames the worker wants sent besides the verdicts (released held segments, resets).
    /// Returns (length, interface, next hop) of a frame written into `buf`.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(usize, IfaceId, Ipv4Addr)> {
        let r = self.txq.pop(buf);
        if let Some((len, tx_if, _)) = r {
            bump(&self.counters.tx_packets, 1);
            bump(&self.counters.tx_bytes, len as u64);
            self.counters.tx_on(tx_if, len);
        }
        r
    }

    /// Flows waiting for their application-rule verdict.
    pub fn inspecting(&self) -> usize {
        self.inspect.in_use()
    }

    /// Reclaims up to `budget` expired flows; the I/O loop calls this between batches.
    pub fn housekeeping(&mut self, now: Nanos, budget: usize) -> usize {
        if let Some((cell, seen)) = &self.updates {
            let g = cell.generation();
            if g != *seen {
                let (p, cell) = (cell.current(), cell.clone());
                self.updates = Some((cell, g));
                self.last_reload_cut = self.set_policy(p);
            }
        }
        self.publish_gauges(now);
        // One atomic load when nobody asks; the Arc is cloned only to answer.
        if let Some(inbox) = self.inbox.as_ref().filter(|i| i.pending()).cloned() {
            inbox.serve(|q| self.answer(now, q));
        }
        let mut n = 0;
        while let Some((slot, idx)) = self.inspect.overdue(now) {
            if self.flows.get(idx).verdict().slot() == Some(slot) {
                self.remove_flow(idx, now);
                bump(&self.counters.drops[DropReason::InspectBudget as usize], 1);
            }
            // Freed by the flow's removal; a slot its flow no longer names is freed here.
            self.inspect.release(slot, idx);
        }
        while n < budget {
            match self.flows.oldest_expired(now) {
                Some(idx) => {
                    self.remove_flow(idx, now);
                    bump(&self.counters.flows_expired, 1);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// Publishes the heartbeat, flow count and busiest SNAT slice for the control plane.
    fn publish_gauges(&self, now: Nanos) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.counters;
        c.heartbeat_ns.store(now, Relaxed);
        c.flows.store(self.flows.len() as u64, Relaxed);
        for (g, class) in c.flows_by_class.iter().zip(TimeoutClass::ALL) {
            g.store(self.flows.class_len(class) as u64, Relaxed);
        }
        let mut worst = 0u64;
        for a in 0..self.snat.addrs().len() {
            for (j, p) in SNAT_PROTOS.into_iter().enumerate() {
                let (used, size) = self.snat.utilisation(a, p);
                if size > 0 {
                    // A worker that borrowed ports holds more than its slice: 1.
                    worst =
                        worst.max((u64::from(used) * 1_000_000 / u64::from(size)).min(1_000_000));
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

    /// Answers a control-plane question (between batches, never per packet: it may allocate).
    pub fn answer(&self, now: Nanos, q: Query) -> Answer {
        match q {
            Query::Flows(filter) => query::list_flows(
                self.index,
                self.flows.iter().map(|(_, f)| f),
                self.flows.len(),
                &filter,
                now,
                self.flows.timeouts(),
                &*self.policy,
            ),
            Query::Snat { top } => {
                let mut slices = Vec::new();
                for (a, &addr) in self.snat.addrs().iter().enumerate() {
                    for p in SNAT_PROTOS {
                        let (used, size) = self.snat.utilisation(a, p);
                        slices.push(SnatUse {
                            addr,
                            proto: p,
                            used,
                            size,
                        });
                    }
                }
                let public = |a: Ipv4Addr| self.cfg.nat.public_addrs.contains(&a);
                // A different sample start each time: successive scrapes see other slots.
                let offset = now.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17;
                let (destinations, census) =
                    query::busiest_destinations(&self.flows, public, top, offset);
                Answer::Snat(SnatReport {
                    slices,
                    hosts: query::top_n(self.snat.holders(), top),
                    destinations,
                    census,
                })
            }
        }
    }

    fn remove_flow(&mut self, idx: u32, now: Nanos) {
        self.drop_flow(idx, now, false);
    }

    /// Removes a flow and releases what it holds; `taken_over`: a closed flow whose public
    /// port a new flow has just been granted (see [`SnatPool::release_reclaimed`]).
    fn drop_flow(&mut self, idx: u32, now: Nanos, taken_over: bool) {
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

    /// A closed TCP flow (reset, or FIN both ways: TIME_WAIT) holding the reply tuple
    /// (`remote`:`rport` -> public address, port) that the new SYN `orig` may take over when
    /// no SNAT port is left for it: its slab index and public (address index, port). The
    /// endpoint's own mapping port first (then its flow keeps its endpoint-independent port),
    /// else the oldest reset flows, then the oldest TIME_WAIT flows, at most
    /// [`TAKEOVER_WALK`] of each: oldest first, so the connection that has been quiet longest
    /// goes. A destination whose walk found nothing fails at once until a closed flow changes.
    fn closed_holder(
        &mut self,
        orig: &FlowKey,
        remote: Ipv4Addr,
        rport: u16,
    ) -> Option<(u32, u8, u16)> {
        let publics = self.snat.addrs();
        let holds = |f: &Flow| {
            matches!(f.tcp.state, TcpState::TimeWait | TcpState::Closed)
                && f.reply.src() == remote
                && f.reply.sport() == rport
                && f.reply.proto() == proto::TCP
                && f.reply.dst() != f.orig.src()
                && publics.get(usize::from(f.snat_idx)) == Some(&f.reply.dst())
        };
        let snat = &self.snat;
        let usable = |f: &Flow| holds(f) && snat.reclaimable(&f.orig, f.snat_idx, f.reply.dport());
        if let Some((ai, port)) = self.snat.mapping_of(orig) {
            let addr = publics[usize::from(ai)];
            let k = FlowKey::new(remote, addr, rport, port, proto::TCP);
            if let Some((idx, Dir::Reply)) = self.flows.lookup(&k) {
                if usable(self.flows.get(idx)) {
                    return Some((idx, ai, port));
                }
            }
        }
        if self.takeover_failed == Some((remote, rport, self.closed_epoch)) {
            return None;
        }
        for class in [TimeoutClass::TcpClosed, TimeoutClass::TcpTimeWait] {
            let found = self
                .flows
                .oldest_in(class)
                .take(TAKEOVER_WALK)
                .find(|(_, f)| usable(f));
            if let Some((idx, f)) = found {
                return Some((idx, f.snat_idx, f.reply.dport()));
            }
        }
        self.takeover_failed = Some((remote, rport, self.closed_epoch));
        None
    }

    #[inline]
    fn is_local(&self, a: Ipv4Addr) -> bool {
        self.local_addrs.contains(&a)
    }
    #[inline]
    fn is_public(&self, a: Ipv4Addr) -> bool {
        self.cfg.nat.public_addrs.contains(&a)
    }
    #[inline]
    fn is_inside(&self, a: Ipv4Addr) -> bool {
        self.cfg.inside_prefixes.iter().any(|n| n.contains(&a))
    }

    /// The worker that owns the flow of a frame; None when any worker may take it:
    /// - to a SNAT address with a destination port (or ICMP id) in the SNAT range: the port's
    ///   owner; other TCP/UDP to a SNAT address: worker 0 (DNAT);
    /// - from a DNAT target: worker 0, where DNAT flows live; an ICMP error not to a SNAT
    ///   address: the worker of the frame it quotes, by these rules;
    /// - from an inside address to anywhere else, later fragments included, unless the flow
    ///   is untranslated (to a SNAT-exempt address, or from an exempt inside address to an
    ///   inside one): [`Worker::steer_worker`] of the source address, so all of a host's
    ///   mappings and its per-host quota live in one worker's tables. The steering program
    ///   (`io::steer`) sends these frames to the same worker, so they are rarely handed over.
    pub fn owner_of(&self, frame: &[u8]) -> Option<usize> {
        if self.workers == 1 {
            return None;
        }
        let e = ethernet::parse(frame).ok()?;
        if e.ethertype != ETHERTYPE_IPV4 {
            return None;
        }
        let ip = Ipv4Packet::new_checked(frame.get(e.l3_offset..)?).ok()?;
        if ip.frag_offset() != 0 {
            // no ports: an inside host's fragments go where its flows are
            return if self.is_public(ip.dst()) {
                None
            } else {
                self.inside_owner(ip.src(), ip.dst())
            };
        }
        let l4 = ip.payload();
        let (sport, dport) = match (ip.protocol(), l4) {
            (proto::TCP | proto::UDP, [a, b, c, d, ..]) => {
                (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))
            }
            _ => (0, 0),
        };
        // DNAT flows live on worker 0: their public port is outside the SNAT slices. A
        // target's port 0: the rule keeps the original port, so any port.
        let is_target = |a: Ipv4Addr, port: u16, p: u8| {
            self.policy
                .dnat_targets()
                .iter()
                .any(|&(ta, tp, tpr)| ta == a && tpr == p && (tp == port || tp == 0))
        };
        if is_target(ip.src(), sport, ip.protocol()) {
            return Some(0);
        }
        if !self.is_public(ip.dst()) {
            if ip.protocol() == proto::ICMP && l4.first().is_some_and(|t| icmp_is_error(*t)) {
                // An error goes to the flow of the frame it quotes: one to a DNAT target
                // (the inside server's port unreachable), or one of an inside host's flows in
                // either direction (an inside router's time exceeded, a host's own error).
                let q = l4.get(8..).unwrap_or(&[]);
                let ihl = usize::from(q.first().copied().unwrap_or(0) & 0x0f) * 4;
                if let (Some(qa), Some(&qproto)) = (q.get(12..20), q.get(9)) {
                    let qsrc = Ipv4Addr::new(qa[0], qa[1], qa[2], qa[3]);
                    let qdst = Ipv4Addr::new(qa[4], qa[5], qa[6], qa[7]);
                    let qdport = q
                        .get(ihl + 2..ihl + 4)
                        .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
                    if is_target(qdst, qdport, qproto) {
                        return Some(0);
                    }
                    return self
                        .inside_owner(qsrc, qdst)
                        .or_else(|| self.inside_owner(qdst, qsrc));
                }
            }
            return self.inside_owner(ip.src(), ip.dst());
        }
        if matches!(ip.protocol(), proto::TCP | proto::UDP) && !self.in_snat_range(dport) {
            return Some(0);
        }
        // (port, protocol) of the flow: for an error, the quoted packet's.
        let (port, flow_proto) = match ip.protocol() {
            p @ (proto::TCP | proto::UDP) if l4.len() >= 4 => {
                (u16::from_be_bytes([l4[2], l4[3]]), p)
            }
            proto::ICMP if l4.len() >= 8 => {
                if l4[0] == icmp_type::ECHO_REPLY {
                    (u16::from_be_bytes([l4[4], l4[5]]), proto::ICMP)
                } else if icmp_is_error(l4[0]) {
                    // The quoted packet left from our public port: its source port.
                    let q = &l4[8..];
                    let ihl = usize::from(q.first()? & 0x0f) * 4;
                    let qp = q.get(ihl..ihl + 6)?;
                    let qproto = *q.get(9)?;
                    if qproto == proto::ICMP {
                        (u16::from_be_bytes([qp[4], qp[5]]), qproto)
                    } else {
                        (u16::from_be_bytes([qp[0], qp[1]]), qproto)
                    }
                } else {
                    return None;
                }
            }
            _ => return None,
        };
        // A DNAT rule's public port (never a SNAT port: see `Policy::dnat_publics`).
        if self
            .policy
            .dnat_publics()
            .iter()
            .any(|&(a, pr, lo, hi)| a == ip.dst() && pr == flow_proto && (lo..=hi).contains(&port))
        {
            return Some(0);
        }
        let home = self.cfg.nat.owner_of_port(port, self.workers)?;
        // A port borrowed from its slice's worker (its owner, where steering sends the
        // frame): the borrower holds the flow.
        let lent = self
            .snat
            .addr_index(ip.dst())
            .and_then(|i| self.snat.lent_to(i, flow_proto, port));
        Some(lent.unwrap_or(home))
    }

    /// The worker of an inside host's frames to anywhere but a SNAT address (see
    /// [`Worker::owner_of`]); None when `src` is not inside or the flow is untranslated (an
    /// inside host and a SNAT-exempt peer, seen from either side: both directions must take
    /// the same rule, and the steering program's symmetric hash brings them together).
    fn inside_owner(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Option<usize> {
        let exempt = |a: Ipv4Addr| self.cfg.nat.is_exempt(a);
        if !self.is_inside(src) || exempt(dst) || (exempt(src) && self.is_inside(dst)) {
            return None;
        }
        Some(Self::steer_worker(src, self.workers))
    }

    /// The multiplier of [`Worker::steer_worker`] (2^32 / the golden ratio).
    pub const STEER_MUL: u32 = 0x9E37_79B1;

    /// The worker (of `workers`) of an inside address's outbound flows: Fibonacci hashing,
    /// the address times [`Worker::STEER_MUL`], whose upper 16 bits are scaled to `workers`
    /// (consecutive addresses spread evenly over any number of workers). The steering
    /// program computes the same in classic BPF (`io::steer`).
    pub fn steer_worker(src: Ipv4Addr, workers: usize) -> usize {
        let top = u32::from(src).wrapping_mul(Self::STEER_MUL) >> 16;
        (top.wrapping_mul(workers.clamp(1, 0xffff) as u32) >> 16) as usize
    }

    /// Stage 1 of a batched lookup: reads the tuple `process` will look up, without
    /// validating anything (a wrong guess only wastes a prefetch; `process` checks every
    /// field), and hands the index line its lookup reads first to `prefetch`.
    ///
    /// Run over a whole receive batch before processing it, then [`Worker::warm_flow`] over
    /// it, the random memory accesses of a batch's lookups overlap instead of queueing one
    /// after another: that is where the fast path's time goes once the table outgrows the
    /// caches (VPP's dual/quad loops do the same).
    #[inline]
    pub fn warm_index(&self, frame: &[u8], prefetch: impl Fn(*const u8)) -> Option<FlowHint> {
        let key = quick_key(frame)?;
        let hash = self.flows.hash_of(&key);
        prefetch(self.flows.index_line(hash));
        Some(FlowHint { key, hash })
    }

    /// Stage 2 of a batched lookup (the index line is in cache by now): prefetches the flow
    /// line the lookup will read or, for a likely new flow, the slab line the `misses`-th
    /// insert of the batch will write and the SNAT mapping line its allocation reads.
    #[inline]
    pub fn warm_flow(&self, hint: &FlowHint, misses: &mut usize, prefetch: impl Fn(*const u8)) {
        match self.flows.flow_line(hint.hash) {
            Some(p) => prefetch(p),
            None => {
                if let Some(p) = self.flows.next_free_line(*misses) {
                    prefetch(p);
                }
                if let Some(p) = self.snat.mapping_line(&hint.key) {
                    prefetch(p);
                }
                *misses += 1;
            }
        }
    }

    /// Decides and rewrites one frame. Never panics, whatever the bytes.
    pub fn process(&mut self, now: Nanos, pkt: &mut Packet<'_>) -> Verdict {
        let (rx_len, rx_if) = (pkt.len, pkt.rx_if);
        let v = self.decide(now, pkt);
        if v == Verdict::Segment {
            // counted segment by segment when they come back
            return v;
        }
        bump(&self.counters.rx_packets, 1);
        bump(&self.counters.rx_bytes, rx_len as u64);
        self.counters.rx_on(rx_if, rx_len);
        match v {
            Verdict::Forward { tx_if, .. } => {
                bump(&self.counters.tx_packets, 1);
                bump(&self.counters.tx_bytes, pkt.len as u64);
                self.counters.tx_on(tx_if, pkt.len);
            }
            Verdict::Reply { tx_if, .. } => {
                // built in place: nothing of the received frame's offload applies
                pkt.offload = Offload::NONE;
                bump(&self.counters.replies, 1);
                self.counters.tx_on(tx_if, pkt.len);
            }
            Verdict::Local => bump(&self.counters.local, 1),
            Verdict::Drop(r) => bump(&self.counters.drops[r as usize], 1),
            Verdict::Held | Verdict::Segment => {}
        }
        v
    }

    fn decide(&mut self, now: Nanos, pkt: &mut Packet<'_>) -> Verdict {
        let eth = match ethernet::parse(pkt.frame()) {
            Ok(e) => e,
            Err(_) => return Verdict::Drop(DropReason::Truncated),
        };
        match eth.ethertype {
            ETHERTYPE_IPV4 => {}
            ETHERTYPE_ARP => return Verdict::Local,
            ETHERTYPE_IPV6 => return Verdict::Drop(DropReason::Ipv6),
            _ => return Verdict::Drop(DropReason::UnsupportedEthertype),
        }
        let p = match self.parse(pkt, eth.l3_offset) {
            Ok(p) => p,
            Err(v) => return v,
        };
        // Trim Ethernet padding: the frame ends where the IP packet does.
        pkt.len = p.end;
        if p.dst.is_multicast() || p.dst.is_broadcast() {
            return Verdict::Local;
        }
        if self.is_local(p.dst) && !self.is_public(p.dst) {
            return Verdict::Local;
        }
        if p.icmp == Icmp::Error {
            return self.icmp_error(pkt, &p);
        }
        if pkt.offload != Offload::NONE {
            if let Err(r) = check_offload(pkt, &p) {
                return Verdict::Drop(r);
            }
        }
        if p.l4 == 0 {
            return self.later_fragment(now, pkt, &p);
        }
        let key = FlowKey::new(p.src, p.dst, p.sport, p.dport, p.proto);
        if let Some((idx, dir)) = self.flows.lookup(&key) {
            return self.forward_tracked(now, pkt, &p, idx, dir);
        }
        if pkt.offload.is_gso() {
            // A new flow is decided on its first segment, as the rules and inspection see it.
            return Verdict::Segment;
        }
        self.new_flow(now, pkt, &p, key)
    }

    /// Validates the IPv4 and transport headers. `l4 == 0` marks a non-first fragment.
    fn parse(&self, pkt: &Packet<'_>, l3: usize) -> Result<Parsed, Verdict> {
        let drop = |r| Err(Verdict::Drop(r));
        let frame = pkt.frame();
        let ip =
            Ipv4Packet::new_checked(&frame[l3..]).map_err(|e| Verdict::Drop(wire_reason(e)))?;
        if !ip.verify_checksum() {
            return drop(DropReason::BadIpChecksum);
        }
        // Every fragment carries the source route (its copied flag is set): checked before
        // fragments are told apart.
        match ipv4::scan_options(ip.options()) {
            OptionScan::Pass => {}
            OptionScan::SourceRoute => return drop(DropReason::IpSourceRoute),
            OptionScan::Malformed => return drop(DropReason::BadIpOptions),
        }
        let mut p = Parsed {
            l3,
            l4: l3 + ip.header_len(),
            end: l3 + ip.total_len(),
            src: ip.src(),
            dst: ip.dst(),
            proto: ip.protocol(),
            ttl: ip.ttl(),
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            icmp: Icmp::None,
            first_frag: ip.is_fragment() && ip.frag_offset() == 0,
            ident: ip.ident(),
            df: ip.dont_frag(),
            seq: 0,
            ack: 0,
            payload: 0,
            payload_end: 0,
        };
        if ip.frag_offset() != 0 {
            // RFC 1858: a fragment at offset 8 can only exist to overwrite TCP header fields.
            if ip.frag_offset() == 8 && p.proto == proto::TCP {
                return drop(DropReason::FragmentOverlap);
            }
            p.l4 = 0;
            return Ok(p);
        }
        let l4 = ip.payload();
        match p.proto {
            proto::TCP => {
                let t = TcpSegment::new_checked(l4).map_err(|e| Verdict::Drop(wire_reason(e)))?;
                p.sport = t.src_port();
                p.dport = t.dst_port();
                p.tcp_flags = t.flags();
                if !tcp_flags::plausible(p.tcp_flags) {
                    return drop(DropReason::TcpBadFlags);
                }
                p.seq = t.seq();
                p.ack = t.ack();
                p.payload = p.l4 + t.header_len();
                p.payload_end = p.end;
            }
            proto::UDP => {
                // A first fragment carries only part of the datagram the UDP length covers.
                if p.first_frag {
                    if l4.len() < 8 {
                        return drop(DropReason::Truncated);
                    }
                    p.sport = u16::from_be_bytes([l4[0], l4[1]]);
                    p.dport = u16::from_be_bytes([l4[2], l4[3]]);
                } else {
                    let u =
                        UdpDatagram::new_checked(l4).map_err(|e| Verdict::Drop(wire_reason(e)))?;
                    p.sport = u.src_port();
                    p.dport = u.dst_port();
                    // Bounded by the UDP length field (the IP payload may be padded).
                    p.payload = p.l4 + 8;
                    p.payload_end = p.payload + u.payload().len();
                }
            }
            proto::ICMP => {
                let m = IcmpMessage::new_checked(l4).map_err(|e| Verdict::Drop(wire_reason(e)))?;
                match m.msg_type() {
                    icmp_type::ECHO_REQUEST => {
                        p.icmp = Icmp::EchoRequest;
                        p.sport = m.echo_id();
                    }
                    icmp_type::ECHO_REPLY => {
                        p.icmp = Icmp::EchoReply;
                        p.dport = m.echo_id();
                    }
                    t if icmp_is_error(t) => p.icmp = Icmp::Error,
                    _ => {
                        if self.is_local(p.dst) {
                            return Err(Verdict::Local);
                        }
                        return drop(DropReason::UnsupportedIcmp);
                    }
                }
            }
            _ => {
                if self.is_local(p.dst) {
                    return Err(Verdict::Local);
                }
                return drop(DropReason::UnsupportedProtocol);
            }
        }
        Ok(p)
    }

    fn new_flow(&mut self, now: Nanos, pkt: &mut Packet<'_>, p: &Parsed, key: FlowKey) -> Verdict {
        for _ in 0..EXPIRE_PER_NEW_FLOW {
            match self.flows.oldest_expired(now) {
                Some(idx) => {
                    self.remove_flow(idx, now);
                    bump(&self.counters.flows_expired, 1);
                }
                None => break,
            }
        }
        let from_inside = self.is_inside(p.src);
        let to_public = self.is_public(p.dst);
        if !from_inside && !to_public {
            if p.proto == proto::TCP && p.tcp_flags & tcp_flags::SYN == 0 {
                return Verdict::Drop(DropReason::TcpNonSyn);
            }
            return Verdict::Drop(if self.is_inside(p.dst) {
                DropReason::Unsolicited
            } else {
                DropReason::UnknownSource
            });
        }
        if p.proto == proto::TCP
            && p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) != tcp_flags::SYN
        {
            if to_public && !self.in_snat_range(p.dport) {
                return Verdict::Local;
            }
            // A SYN-ACK or ACK from inside with no flow: the connection did not start through
            // the appliance (classically: in through a public load balancer, out via the UDR).
            if from_inside
                && p.tcp_flags & tcp_flags::RST == 0
                && self
                    .last_hint
                    .map_or(true, |t| now.saturating_sub(t) >= HINT_EVERY)
            {
                self.last_hint = Some(now);
                let e = DecisionEvent::new(now, key, Action::Deny);
                self.emit(now, e.with_reason(DropReason::TcpNonSyn));
            }
            return Verdict::Drop(DropReason::TcpNonSyn);
        }
        if p.proto == proto::ICMP && p.icmp != Icmp::EchoRequest {
            return if to_public {
                Verdict::Local
            } else {
                Verdict::Drop(DropReason::Unsolicited)
            };
        }
        if p.ttl <= 1 {
            return self.icmp_reply(
                pkt,
                p,
                icmp_type::TIME_EXCEEDED,
                0,
                0,
                DropReason::TtlExceeded,
            );
        }
        let q = FlowQuery {
            src: p.src,
            dst: p.dst,
            proto: p.proto,
            sport: p.sport,
            dport: p.dport,
        };
        let decision = self.policy.decide(&q);
        // Traffic to a public address is only ever admitted by a DNAT rule.
        if to_public && !matches!(decision, Decision::Dnat { .. }) {
            let port = if p.proto == proto::ICMP { 0 } else { p.dport };
            return if p.proto == proto::ICMP || !self.in_snat_range(port) {
                Verdict::Local
            } else {
                Verdict::Drop(DropReason::Unsolicited)
            };
        }
        let mut inspect_kind = None;
        let mut audit = false;
        let (rule, reply_src, mut reply_sport) = match decision {
            Decision::Allow { rule } => (rule, p.dst, p.dport),
            // An audit-mode collection would deny: log it as such and let the flow through.
            Decision::Deny { rule: Some(r) } if self.policy.is_audit(r) => {
                audit = true;
                (r, p.dst, p.dport)
            }
            Decision::Dnat { rule, to, to_port } => (rule, to, to_port),
            Decision::Deny { rule: Some(r) } => {
                let e = DecisionEvent::new(now, key, Action::Deny);
                self.emit(now, e.with_rule(Some(r)).with_reason(DropReason::RuleDeny));
                return Verdict::Drop(DropReason::RuleDeny);
            }
            Decision::Inspect if p.proto == proto::TCP => {
                inspect_kind = Some(InspectKind::Tcp);
                (0, p.dst, p.dport)
            }
            Decision::Inspect if p.proto == proto::UDP && p.payload != 0 => {
                inspect_kind = Some(InspectKind::Quic);
                (0, p.dst, p.dport)
            }
            Decision::Deny { rule: None } | Decision::Inspect => {
                let e = DecisionEvent::new(now, key, Action::Deny);
                self.emit(now, e.with_reason(DropReason::DefaultDeny));
                return Verdict::Drop(DropReason::DefaultDeny);
            }
        };
        if p.proto == proto::ICMP {
            reply_sport = 0;
        }
        // SNAT unless the flow arrives from outside (DNAT) or goes to an exempt prefix: the
        // rule `explain` prints too.
        let snat = self
            .cfg
            .nat
            .snat_rule(&self.cfg.inside_prefixes, p.src, reply_src)
            == SnatRule::Snat;
        let (reply, snat_idx) = if snat {
            let flows = &self.flows;
            let (rs, rsp, proto_) = (reply_src, reply_sport, p.proto);
            let taken = |addr: Ipv4Addr, port: u16| {
                flows.contains(&FlowKey::new(rs, addr, rsp, port, proto_))
            };
            let mut granted = self.snat.allocate(&key, now, taken);
            // Under pressure only (no free port, none shareable toward this destination): a
            // SYN may take over the port of a closed flow toward the same remote endpoint.
            let mut evict = None;
            if granted == Err(AllocError::OutOfPorts)
                && p.proto == proto::TCP
                && self.cfg.nat.time_wait_reuse
            {
                if let Some((old, ai, port)) = self.closed_holder(&key, reply_src, reply_sport) {
                    granted = self.snat.allocate_reclaimed(&key, ai, port);
                    evict = granted.is_ok().then_some(old);
                }
            }
            if let Some(old) = evict {
                // After the grant, so the port never looks free; before the insert, which
                // needs the reply tuple gone.
                self.drop_flow(old, now, true);
                bump(&self.counters.snat_time_wait_reused, 1);
            }
            match granted {
                Ok(g) => {
                    if g.moved {
                        bump(&self.counters.eim_collision_moved, 1);
                    }
                    (
                        FlowKey::new(reply_src, g.addr, reply_sport, g.port, p.proto),
                        g.addr_idx,
                    )
                }
                Err(e) => {
                    let r = match e {
                        AllocError::OutOfPorts => DropReason::OutOfPorts,
                        AllocError::HostQuota => DropReason::HostQuota,
                    };
                    let ev = DecisionEvent::new(now, key, Action::Deny);
                    self.emit(now, ev.with_rule(Some(rule)).with_reason(r));
                    if self.cfg.icmp_on_exhaustion {
                        return self.icmp_reply(pkt, p, icmp_type::DEST_UNREACHABLE, 13, 0, r);
                    }
                    return Verdict::Drop(r);
                }
            }
        } else {
            let (sport, dport) = if p.proto == proto::ICMP {
                (0, p.sport)
            } else {
                (reply_sport, p.sport)
            };
            (FlowKey::new(reply_src, p.src, sport, dport, p.proto), 0)
        };
        // A granted SNAT port was checked free toward this destination; without SNAT another
        // flow may already answer on this tuple.
        if !snat && self.flows.contains(&reply) {
            return Verdict::Drop(DropReason::Unsolicited);
        }
        let class = match p.proto {
            proto::TCP => TimeoutClass::TcpSyn,
            proto::UDP => TimeoutClass::Udp,
            _ => TimeoutClass::Icmp,
        };
        let idx = match self.flows.insert(key, reply, class, now) {
            Ok(i) => i,
            Err(_) => {
                if snat {
                    self.snat.release(&key, snat_idx, reply.dport(), now);
                }
                let ev = DecisionEvent::new(now, key, Action::Deny);
                self.emit(
                    now,
                    ev.with_rule(Some(rule)).with_reason(DropReason::MaxFlows),
                );
                return Verdict::Drop(DropReason::MaxFlows);
            }
        };
        // Counted once in the table, so created - removed is what the table holds.
        bump(&self.counters.flows_created, 1);
        let f = self.flows.get_mut(idx);
        f.set_verdict(FlowVerdict::Allowed { rule: rule as u16 });
        f.snat_idx = snat_idx;
        if p.proto == proto::TCP {
            f.tcp = TcpTrack::opened();
        }
        if let Some(kind) = inspect_kind {
            let Some(slot) = self.inspect.take(idx, p.seq.wrapping_add(1), now) else {
                self.remove_flow(idx, now);
                return Verdict::Drop(DropReason::InspectBudget);
            };
            self.flows
                .get_mut(idx)
                .set_verdict(FlowVerdict::Inspecting { kind, slot });
        }
        if inspect_kind.is_none() {
            let dnat = reply_src != p.dst
                || reply_sport != if p.proto == proto::ICMP { 0 } else { p.dport };
            let mut e = DecisionEvent::new(
                now,
                key,
                match (audit, dnat) {
                    (true, _) => Action::Audit,
                    (false, true) => Action::Dnat,
                    (false, false) => Action::Allow,
                },
            );
            e.rule = Some(rule);
            e.snat = snat.then(|| (reply.dst(), reply.dport()));
            e.dnat = dnat.then(|| (reply.src(), reply.sport()));
            self.emit(now, e);
        }
        self.forward_tracked(now, pkt, p, idx, Dir::Orig)
    }

    #[inline]
    fn in_snat_range(&self, port: u16) -> bool {
        port >= self.cfg.nat.port_min && port <= self.cfg.nat.port_max
    }

    fn forward_tracked(
        &mut self,
        now: Nanos,
        pkt: &mut Packet<'_>,
        p: &Parsed,
        idx: u32,
        dir: Dir,
    ) -> Verdict {
        if p.ttl <= 1 {
            return self.icmp_reply(
                pkt,
                p,
                icmp_type::TIME_EXCEEDED,
                0,
                0,
                DropReason::TtlExceeded,
            );
        }
        if let FlowVerdict::Revoked { .. } = self.flows.get(idx).verdict() {
            let e = DecisionEvent::new(now, self.flows.get(idx).orig, Action::Deny);
            self.emit(now, e.with_reason(DropReason::PolicyRevoked));
            return self.cut(now, pkt, p, idx, dir, p.seq, DropReason::PolicyRevoked);
        }
        let f = self.flows.get(idx);
        let after = match dir {
            Dir::Orig => f.reply.reversed(),
            Dir::Reply => f.orig.reversed(),
        };
        let Some((tx_if, next_hop)) = self.routes.lookup(after.dst()) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let mtu = usize::from(
            self.cfg
                .interfaces
                .get(usize::from(tx_if))
                .map_or(1500, |i| i.mtu),
        );
        // A super-frame leaves as its segments: each must fit (what the kernel's forwarding
        // checks with skb_gso_validate_network_len).
        let l3_len = if pkt.offload.is_gso() {
            gso::max_segment_l3_len(pkt.frame(), &pkt.offload).unwrap_or(p.end - p.l3)
        } else {
            p.end - p.l3
        };
        if l3_len > mtu {
            if p.df {
                return self.icmp_reply(
                    pkt,
                    p,
                    icmp_type::DEST_UNREACHABLE,
                    4,
                    mtu as u16,
                    DropReason::FragNeeded,
                );
            }
            return Verdict::Drop(DropReason::FragNeeded);
        }
        if matches!(f.verdict(), FlowVerdict::Inspecting { .. })
            && dir == Dir::Orig
            && p.payload != 0
            && p.payload < p.payload_end
        {
            if pkt.offload.is_gso() {
                // the hold reads and keeps segment-sized payloads
                return Verdict::Segment;
            }
            return self.inspect_payload(now, pkt, p, idx);
        }
        let mut class = f.class();
        if p.proto == proto::TCP {
            let was = class;
            let f = self.flows.get_mut(idx);
            f.tcp.on_segment(dir, p.tcp_flags);
            class = TimeoutClass::of_tcp(&f.tcp);
            if is_closed_class(was) || is_closed_class(class) {
                self.closed_epoch += 1;
            }
        }
        self.rewrite(pkt, p, &after);
        if p.first_frag {
            self.frags.insert(p, after.src(), after.dst(), now);
        }
        let f = self.flows.get_mut(idx);
        f.packets[dir as usize] = f.packets[dir as usize].wrapping_add(1);
        self.flows.touch(idx, class, now);
        Verdict::Forward { tx_if, next_hop }
    }

    /// Holds a first-payload packet of a flow under inspection, and decides when the name is
    /// known.
    fn inspect_payload(
        &mut self,
        now: Nanos,
        pkt: &mut Packet<'_>,
        p: &Parsed,
        idx: u32,
    ) -> Verdict {
        // A held frame is sent later without its offload metadata: complete a partial checksum
        // now (the sender's kernel would have; the bytes are what the server will check).
        if pkt.offload.csum_partial {
            let off = pkt.offload;
            if !gso::complete_checksum(&mut pkt.buf[..pkt.len], &off) {
                return Verdict::Drop(DropReason::BadOffload);
            }
            pkt.offload = Offload::NONE;
        }
        // The server must take this packet as the hold reads it: otherwise a client could show
        // the firewall bytes the server discards (a bad checksum, a fragment whose rest only the
        // server sees) and send others once the flow is released and no longer read.
        let verified = pkt
            .buf
            .get(p.l4..p.end)
            .is_some_and(|l4| l4_checksum_ok(l4, p));
        if p.first_frag || !verified {
            return Verdict::Drop(DropReason::InspectUnverifiable);
        }
        let f = *self.flows.get(idx);
        let FlowVerdict::Inspecting { kind, slot } = f.verdict() else {
            return Verdict::Drop(DropReason::InspectBudget);
        };
        let (payload, frame) = (&pkt.buf[p.payload..p.payload_end], &pkt.buf[..pkt.len]);
        let mut lower = [0u8; 256];
        let mut raw = [0u8; 256];
        let l7 = if kind == InspectKind::Tcp {
            let Some(slot) = self.inspect.get_mut(slot, idx) else {
                return self.deny_inspected(now, pkt, p, idx, DropReason::InspectBudget);
            };
            // Data on a SYN (TCP Fast Open) starts one past its sequence number and would hold
            // the handshake itself: not supported on inspected flows, reset as before.
            if p.tcp_flags & tcp_flags::SYN != 0 {
                return self.deny_inspected(now, pkt, p, idx, DropReason::InspectBudget);
            }
            match slot.hold_segment(p.seq, payload, frame) {
                Ok(()) => inspect::classify(slot.stream(), &mut raw),
                Err(HoldError::Budget) => {
                    return self.deny_inspected(now, pkt, p, idx, DropReason::InspectBudget)
                }
                Err(HoldError::Mismatch) => L7::Mismatch(None),
            }
        } else {
            // QUIC: the datagram is held whole; its Initials are decrypted as they arrive.
            match self
                .inspect
                .hold_datagram(slot, idx, frame, payload, &mut raw)
            {
                Ok(r) => inspect::classify_quic(r, &raw),
                Err(_) => L7::OverBudget,
            }
        };
        let q = FlowQuery {
            src: f.orig.src(),
            dst: f.orig.dst(),
            proto: f.orig.proto(),
            sport: f.orig.sport(),
            dport: f.orig.dport(),
        };
        let (decision, deny_reason, app, name) = match l7 {
            L7::NeedMore => return Verdict::Held,
            L7::OverBudget => {
                return self.deny_inspected(now, pkt, p, idx, DropReason::InspectBudget)
            }
            L7::Name(app, name) => {
                let name = inspect::lowercase(name, &mut lower);
                (
                    self.policy.decide_app(&q, app, Some(name)),
                    DropReason::AppDeny,
                    Some(app),
                    name,
                )
            }
            L7::NoName(app) => (
                self.policy.decide_app(&q, app, None),
                DropReason::NoSni,
                Some(app),
                "",
            ),
            L7::Unknown => (Decision::Deny { rule: None }, DropReason::AppDeny, None, ""),
            L7::Mismatch(app) => (
                Decision::Deny { rule: None },
                DropReason::InspectOverlapMismatch,
                app,
                "",
            ),
        };
        let mut e = DecisionEvent::new(now, f.orig, Action::Allow).with_name(name);
        e.app = app;
        let audited = match decision {
            Decision::Deny { rule: Some(r) } if self.policy.is_audit(r) => Some(r),
            _ => None,
        };
        if audited.is_some() {
            e.action = Action::Audit;
        }
        match audited
            .map(|rule| Decision::Allow { rule })
            .unwrap_or(decision)
        {
            Decision::Allow { rule } => {
                e.rule = Some(rule);
                e.snat = (f.reply.dst() != f.orig.src()).then(|| (f.reply.dst(), f.reply.dport()));
                self.emit(now, e);
                self.release_inspected(now, idx, rule, pkt.rx_if);
                Verdict::Held
            }
            d => {
                e.action = Action::Deny;
                e.reason = Some(deny_reason);
                e.rule = match d {
                    Decision::Deny { rule } => rule,
                    _ => None,
                };
                self.emit(now, e);
                self.deny_inspected(now, pkt, p, idx, deny_reason)
            }
        }
    }

    /// The name was allowed: the flow continues untouched and its held packets leave in order.
    fn release_inspected(&mut self, now: Nanos, idx: u32, rule: u32, rx_if: IfaceId) {
        let FlowVerdict::Inspecting { slot: slot_i, .. } = self.flows.get(idx).verdict() else {
            return;
        };
        // Read before the flow is marked allowed: the slot is checked against its owner.
        let held = self.inspect.get(slot_i, idx).map_or(0, |s| s.held);
        // The flow stays the slot's owner until the held frames are out (re-deciding them
        // below must find it allowed, not inspecting).
        self.flows
            .get_mut(idx)
            .set_verdict(FlowVerdict::Allowed { rule: rule as u16 });
        for i in 0..held {
            let Some(mut buf) = self.txq.take_buf() else {
                break;
            };
            let len = match self.inspect.get(slot_i, idx) {
                Some(s) => {
                    let fr = s.frame(i);
                    buf[..fr.len()].copy_from_slice(fr);
                    fr.len()
                }
                None => 0,
            };
            let mut pk = Packet::new(&mut buf, len, rx_if);
            let meta = match self.decide(now, &mut pk) {
                Verdict::Forward { tx_if, next_hop } => Some((pk.len, tx_if, next_hop)),
                _ => None,
            };
            self.txq.push(buf, meta);
        }
        self.inspect.release(slot_i, idx);
    }

    /// The name was denied (or never came): reset both ends of a TCP flow, drop a QUIC one.
    fn deny_inspected(
        &mut self,
        now: Nanos,
        pkt: &mut Packet<'_>,
        p: &Parsed,
        idx: u32,
        reason: DropReason,
    ) -> Verdict {
        // The server has seen the handshake only: its next expected sequence is the ISN + 1.
        let isn = match self.flows.get(idx).verdict() {
            FlowVerdict::Inspecting { slot, .. } => self.inspect.get(slot, idx).map(|s| s.isn),
            _ => None,
        }
        .unwrap_or(p.seq);
        self.cut(now, pkt, p, idx, Dir::Orig, isn, reason)
    }

    /// Ends a flow: for TCP, a RST back to the sender of `p` (in place of it) and a RST onward
    /// to the other end with sequence `onward_seq`; other protocols are just dropped.
    #[allow(clippy::too_many_arguments)]
    fn cut(
        &mut self,
        now: Nanos,
        pkt: &mut Packet<'_>,
        p: &Parsed,
        idx: u32,
        dir: Dir,
        onward_seq: u32,
        reason: DropReason,
    ) -> Verdict {
        let f = *self.flows.get(idx);
        self.remove_flow(idx, now);
        if p.proto != proto::TCP || p.tcp_flags & tcp_flags::RST != 0 {
            return Verdict::Drop(reason);
        }
        // Onward, as the other end would have received this packet after translation.
        let onward = match dir {
            Dir::Orig => f.reply.reversed(),
            Dir::Reply => f.orig.reversed(),
        };
        if let (Some(mut buf), Some((tx_if, hop))) =
            (self.txq.take_buf(), self.routes.lookup(onward.dst()))
        {
            buf[..p.l3].copy_from_slice(&pkt.buf[..p.l3]);
            let len = emit_tcp_rst(&mut buf, p.l3, &onward, onward_seq, 0, tcp_flags::RST);
            self.txq.push(buf, Some((len, tx_if, hop)));
        }
        let Some((tx_if, next_hop)) = self.routes.lookup(p.src) else {
            return Verdict::Drop(reason);
        };
        let back = FlowKey::new(p.dst, p.src, p.dport, p.sport, proto::TCP);
        let ack = p
            .seq
            .wrapping_add((p.payload_end.saturating_sub(p.payload)) as u32);
        pkt.len = emit_tcp_rst(
            pkt.buf,
            p.l3,
            &back,
            p.ack,
            ack,
            tcp_flags::RST | tcp_flags::ACK,
        );
        ethernet::swap_macs(pkt.buf);
        bump(&self.counters.drops[reason as usize], 1);
        Verdict::Reply { tx_if, next_hop }
    }

    /// Rewrites addresses, ports (or ICMP id) and TTL so the packet reads as `after`.
    fn rewrite(&self, pkt: &mut Packet<'_>, p: &Parsed, after: &FlowKey) {
        let (l4, end) = (p.l4, p.end);
        let (old_src, old_dst) = (u32::from(p.src), u32::from(p.dst));
        let (new_src, new_dst) = (u32::from(after.src()), u32::from(after.dst()));
        readdress(pkt, p, after.src(), after.dst());
        // check_offload made sure a partial checksum is this segment's TCP or UDP one.
        let partial = pkt.offload.csum_partial;
        let seg = &mut pkt.buf[l4..end];
        match p.proto {
            proto::TCP => {
                let Ok(mut t) = TcpSegment::new_checked(seg) else {
                    return;
                };
                if new_src != old_src || after.sport() != p.sport {
                    if partial {
                        t.rewrite_src_partial(old_src, new_src, after.sport());
                    } else {
                        t.rewrite_src(old_src, new_src, after.sport());
                    }
                }
                if new_dst != old_dst || after.dport() != p.dport {
                    if partial {
                        t.rewrite_dst_partial(old_dst, new_dst, after.dport());
                    } else {
                        t.rewrite_dst(old_dst, new_dst, after.dport());
                    }
                }
                if let Some(clamp) = self.cfg.mss_clamp {
                    if t.flags() & tcp_flags::SYN != 0 {
                        if partial {
                            t.clamp_mss_partial(clamp);
                        } else {
                            t.clamp_mss(clamp);
                        }
                    }
                }
            }
            proto::UDP => {
                if seg.len() < 8 {
                    return;
                }
                // First fragments fail the length check; the header rewrite is the same.
                let mut u = UdpView(seg, partial);
                if new_src != old_src || after.sport() != p.sport {
                    u.rewrite(0, old_src, new_src, after.sport());
                }
                if new_dst != old_dst || after.dport() != p.dport {
                    u.rewrite(2, old_dst, new_dst, after.dport());
                }
            }
            proto::ICMP => {
                let Ok(mut m) = IcmpMessage::new_checked(seg) else {
                    return;
                };
                let id = if p.icmp == Icmp::EchoRequest {
                    after.sport()
                } else {
                    after.dport()
                };
                if id != m.echo_id() {
                    m.set_echo_id(id);
                }
            }
            _ => {}
        }
    }

    /// A non-first fragment: translate its addresses as its first fragment's were.
    fn later_fragment(&mut self, now: Nanos, pkt: &mut Packet<'_>, p: &Parsed) -> Verdict {
        let Some((src, dst)) = self.frags.lookup(p, now) else {
            return Verdict::Drop(DropReason::FragmentNoFlow);
        };
        if p.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        let Some((tx_if, next_hop)) = self.routes.lookup(dst) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        readdress(pkt, p, src, dst);
        Verdict::Forward { tx_if, next_hop }
    }

    /// Translates an ICMP error (RFC 5508): the outer header and the quoted packet, without
    /// refreshing or removing the flow it names.
    fn icmp_error(&mut self, pkt: &mut Packet<'_>, p: &Parsed) -> Verdict {
        if p.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        let (q_off, q) = {
            let body = &pkt.buf[p.l4 + 8..p.end];
            match Quoted::parse(body) {
                Some(q) => (p.l4 + 8, q),
                None => return Verdict::Drop(DropReason::BadL4Header),
            }
        };
        // A packet answering the quoted one has the quoted tuple swapped.
        let key = FlowKey::new(q.dst, q.src, q.dport, q.sport, q.proto);
        let Some((idx, dir)) = self.flows.lookup(&key) else {
            return Verdict::Drop(DropReason::IcmpErrorNoFlow);
        };
        let f = *self.flows.get(idx);
        // The quoted packet went the other way; restore it as its sender sent it.
        let sent = match dir {
            Dir::Orig => f.reply,
            Dir::Reply => f.orig,
        };
        let far = match dir {
            Dir::Orig => f.orig.dst(),
            Dir::Reply => f.reply.src(),
        };
        let new_outer_dst = sent.src();
        let new_outer_src = if p.src == far {
            match dir {
                Dir::Orig => f.reply.dst(),
                Dir::Reply => f.orig.dst(),
            }
        } else {
            p.src
        };
        let Some((tx_if, next_hop)) = self.routes.lookup(new_outer_dst) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        q.rewrite(&mut pkt.buf[q_off..p.end], &sent);
        if let Ok(mut m) = IcmpMessage::new_checked(&mut pkt.buf[p.l4..p.end]) {
            m.fill_checksum();
        }
        readdress(pkt, p, new_outer_src, new_outer_dst);
        Verdict::Forward { tx_if, next_hop }
    }

    /// Replaces the packet with an ICMP error about it, sent back to its source. Counted under
    /// `reason` whether or not the reply can be sent.
    fn icmp_reply(
        &mut self,
        pkt: &mut Packet<'_>,
        p: &Parsed,
        typ: u8,
        code: u8,
        mtu: u16,
        reason: DropReason,
    ) -> Verdict {
        // Never an error about an error, a fragment tail, or to a non-unicast source.
        if p.icmp == Icmp::Error
            || p.l4 == 0
            || p.src.is_multicast()
            || p.src.is_broadcast()
            || p.src.is_unspecified()
        {
            return Verdict::Drop(reason);
        }
        let Some((tx_if, next_hop)) = self.routes.lookup(p.src) else {
            return Verdict::Drop(reason);
        };
        let source = if self.is_inside(p.src) {
            self.cfg.icmp_source
        } else {
            self.cfg
                .nat
                .public_addrs
                .first()
                .copied()
                .unwrap_or(self.cfg.icmp_source)
        };
        let quote_len = (p.l4 - p.l3 + 8).min(p.end - p.l3);
        let total = 20 + 8 + quote_len;
        if p.l3 + total > pkt.buf.len() {
            return Verdict::Drop(reason);
        }
        // The packet is still dropped: count it under its reason; the reply is counted too.
        bump(&self.counters.drops[reason as usize], 1);
        let mut quote = [0u8; 68];
        quote[..quote_len].copy_from_slice(&pkt.buf[p.l3..p.l3 + quote_len]);
        let out = &mut pkt.buf[p.l3..p.l3 + total];
        ipv4::emit_header(out, source, p.src, proto::ICMP, total as u16, 64);
        let icmp = &mut out[20..];
        icmp[0] = typ;
        icmp[1] = code;
        icmp[2..8].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
        icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
        icmp[8..8 + quote_len].copy_from_slice(&quote[..quote_len]);
        let c = checksum::checksum(icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        pkt.len = p.l3 + total;
        ethernet::swap_macs(pkt.buf);
        Verdict::Reply { tx_if, next_hop }
    }
}

/// The timeout classes of closed TCP flows (reset; FIN both ways), whose ports a new SYN may
/// take over under port pressure.
#[inline]
fn is_closed_class(c: TimeoutClass) -> bool {
    matches!(c, TimeoutClass::TcpClosed | TimeoutClass::TcpTimeWait)
}

/// The flow key of an IPv4 TCP/UDP/ICMP-echo frame, read without validation (see
/// [`Worker::warm_index`]); the same key `decide` builds for a valid first fragment or whole
/// datagram.
#[inline]
fn quick_key(frame: &[u8]) -> Option<FlowKey> {
    let eth = ethernet::parse(frame).ok()?;
    if eth.ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(eth.l3_offset..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff != 0 {
        return None;
    }
    let proto = *ip.get(9)?;
    let word =
        |i: usize| -> Option<u32> { Some(u32::from_be_bytes(ip.get(i..i + 4)?.try_into().ok()?)) };
    let (src, dst) = (Ipv4Addr::from(word(12)?), Ipv4Addr::from(word(16)?));
    let l4 = ip.get(ihl..ihl + 8)?;
    let port = |i: usize| u16::from_be_bytes([l4[i], l4[i + 1]]);
    let (sport, dport) = match proto {
        proto::TCP | proto::UDP => (port(0), port(2)),
        proto::ICMP => match l4[0] {
            icmp_type::ECHO_REQUEST => (port(4), 0),
            icmp_type::ECHO_REPLY => (0, port(4)),
            _ => return None,
        },
        _ => return None,
    };
    Some(FlowKey::new(src, dst, sport, dport, proto))
}

/// Rewrites the IPv4 source and destination (where they change) and decrements the TTL, each
/// with an incremental header checksum update.
fn readdress(pkt: &mut Packet<'_>, p: &Parsed, src: Ipv4Addr, dst: Ipv4Addr) {
    if let Ok(mut ip) = Ipv4Packet::new_checked(&mut pkt.buf[p.l3..p.end]) {
        if src != p.src {
            ip.set_src(src);
        }
        if dst != p.dst {
            ip.set_dst(dst);
        }
        ip.decrement_ttl();
    }
}

/// Writes an IPv4 + TCP segment with no payload at `l3` (the Ethernet header before it is the
/// caller's); returns the frame length.
fn emit_tcp_rst(buf: &mut [u8], l3: usize, k: &FlowKey, seq: u32, ack: u32, flags: u8) -> usize {
    let end = l3 + 40;
    if buf.len() < end {
        return 0;
    }
    ipv4::emit_header(&mut buf[l3..], k.src(), k.dst(), proto::TCP, 40, 64);
    let t = &mut buf[l3 + 20..end];
    t[0..2].copy_from_slice(&k.sport().to_be_bytes());
    t[2..4].copy_from_slice(&k.dport().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..20].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    let ps = checksum::pseudo_header(k.src().octets(), k.dst().octets(), proto::TCP, 20);
    let c = !checksum::fold(checksum::sum(t, ps));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    end
}

/// UDP header rewrite that works on first fragments too (no length check); `.1`: the checksum
/// is partial (the field holds the pseudo-header sum, and zero is not "none").
struct UdpView<'a>(&'a mut [u8], bool);

impl UdpView<'_> {
    /// Rewrites the port at `off` (0 = source, 2 = destination) and folds the address change.
    fn rewrite(&mut self, off: usize, old_addr: u32, new_addr: u32, port: u16) {
        let b = &mut *self.0;
        let old_port = u16::from_be_bytes([b[off], b[off + 1]]);
        let c = u16::from_be_bytes([b[6], b[7]]);
        if self.1 {
            let n = checksum::partial_update32(c, old_addr, new_addr);
            b[6..8].copy_from_slice(&n.to_be_bytes());
        } else if c != 0 {
            let mut n =
                checksum::update16(checksum::update32(c, old_addr, new_addr), old_port, port);
            if n == 0 {
                n = 0xffff;
            }
            b[6..8].copy_from_slice(&n.to_be_bytes());
        }
        b[off..off + 2].copy_from_slice(&port.to_be_bytes());
    }
}

/// The packet quoted inside an ICMP error: its header and the first 8 bytes of transport.
#[derive(Clone, Copy, Debug)]
struct Quoted {
    ihl: usize,
    len: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    sport: u16,
    dport: u16,
    echo: Option<u8>,
}

impl Quoted {
    fn parse(b: &[u8]) -> Option<Quoted> {
        if b.len() < 28 || b[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        if ihl < 20 || b.len() < ihl + 8 {
            return None;
        }
        let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
        let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
        let proto = b[9];
        let t = &b[ihl..];
        let (sport, dport, echo) = match proto {
            proto::TCP | proto::UDP => (
                u16::from_be_bytes([t[0], t[1]]),
                u16::from_be_bytes([t[2], t[3]]),
                None,
            ),
            proto::ICMP => {
                let id = u16::from_be_bytes([t[4], t[5]]);
                match t[0] {
                    icmp_type::ECHO_REQUEST => (id, 0, Some(t[0])),
                    icmp_type::ECHO_REPLY => (0, id, Some(t[0])),
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(Quoted {
            ihl,
            len: b.len(),
            src,
            dst,
            proto,
            sport,
            dport,
            echo,
        })
    }

    /// Rewrites the quoted header to read as `to`, keeping its checksums consistent.
    fn rewrite(&self, b: &mut [u8], to: &FlowKey) {
        if b.len() < self.len {
            return;
        }
        let mut hc = u16::from_be_bytes([b[10], b[11]]);
        let (os, od) = (u32::from(self.src), u32::from(self.dst));
        let (ns, nd) = (u32::from(to.src()), u32::from(to.dst()));
        hc = checksum::update32(checksum::update32(hc, os, ns), od, nd);
        b[10..12].copy_from_slice(&hc.to_be_bytes());
        b[12..16].copy_from_slice(&to.src().octets());
        b[16..20].copy_from_slice(&to.dst().octets());
        let t = &mut b[self.ihl..];
        match self.proto {
            proto::UDP | proto::TCP => {
                // The quoted transport checksum is only present for UDP within 8 bytes, and for
                // TCP when more than 8 bytes were quoted.
                let coff = if self.proto == proto::UDP { 6 } else { 16 };
                if t.len() >= coff + 2 {
                    let c = u16::from_be_bytes([t[coff], t[coff + 1]]);
                    if !(self.proto == proto::UDP && c == 0) {
                        let mut n = checksum::update32(checksum::update32(c, os, ns), od, nd);
                        n = checksum::update16(n, self.sport, to.sport());
                        n = checksum::update16(n, self.dport, to.dport());
                        t[coff..coff + 2].copy_from_slice(&n.to_be_bytes());
                    }
                }
                t[0..2].copy_from_slice(&to.sport().to_be_bytes());
                t[2..4].copy_from_slice(&to.dport().to_be_bytes());
            }
            _ => {
                let (old, new) = match self.echo {
                    Some(icmp_type::ECHO_REQUEST) => (self.sport, to.sport()),
                    _ => (self.dport, to.dport()),
                };
                let c = checksum::update16(u16::from_be_bytes([t[2], t[3]]), old, new);
                t[2..4].copy_from_slice(&c.to_be_bytes());
                t[4..6].copy_from_slice(&new.to_be_bytes());
            }
        }
    }
}

impl super::frag::FragId for Parsed {
    fn frag_key(&self) -> (u32, u32, u16, u8) {
        (
            u32::from(self.src),
            u32::from(self.dst),
            self.ident,
            self.proto,
        )
    }
}

/// Checks a frame's offload metadata against its parsed headers. A partial checksum must be
/// the TCP or UDP one (a non-GSO frame with another is completed here, as its transmitter
/// would have); a super-frame must be an unfragmented TCP (or UDP, for USO) packet.
fn check_offload(pkt: &mut Packet<'_>, p: &Parsed) -> Result<(), DropReason> {
    let off = pkt.offload;
    let gso_ok = match off.gso {
        Gso::None => true,
        Gso::TcpV4 { .. } => p.proto == proto::TCP,
        Gso::UdpL4 => p.proto == proto::UDP,
    };
    if !gso_ok || (off.is_gso() && (p.l4 == 0 || p.first_frag || off.gso_size == 0)) {
        return Err(DropReason::BadOffload);
    }
    if off.csum_partial {
        let field = match p.proto {
            proto::TCP => 16,
            proto::UDP => 6,
            _ => 0,
        };
        let ours = field != 0
            && p.l4 != 0
            && !p.first_frag
            && usize::from(off.csum_start) == p.l4
            && off.csum_offset == field;
        if !ours {
            if off.is_gso() || !gso::complete_checksum(&mut pkt.buf[..pkt.len], &off) {
                return Err(DropReason::BadOffload);
            }
            pkt.offload.csum_partial = false;
        }
    }
    Ok(())
}

/// Whether the TCP or UDP checksum of the unfragmented segment `l4` verifies (a UDP checksum of
/// zero means none was sent, which IPv4 receivers accept).
fn l4_checksum_ok(l4: &[u8], p: &Parsed) -> bool {
    let Ok(len) = u16::try_from(l4.len()) else {
        return false;
    };
    if p.proto == proto::UDP && l4.get(6..8) == Some(&[0, 0][..]) {
        return true;
    }
    let ps = checksum::pseudo_header(p.src.octets(), p.dst.octets(), p.proto, len);
    checksum::fold(checksum::sum(l4, ps)) == 0xffff
}
