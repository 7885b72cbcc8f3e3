//! The worker: one flow table, one slice of the SNAT port space, and `process`.
//!
//! A frame goes through stages, each in its own module as free functions over the state it
//! needs: [`parse`] (validate once), then for a flow the table knows, [`translate`]; for a new
//! one, [`admit`] (a plan, then its commit); a flow under an application rule, [`hold`];
//! replies the worker originates, [`reply`]. Between batches: [`control`] (reload, questions,
//! gauges) and [`owner`] (which worker a frame belongs to). This file holds the state and the
//! order the stages run in.

mod admit;
mod control;
mod hold;
mod owner;
mod parse;
mod reply;
mod tables;
mod translate;

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::counters::{bump, Counters, RuleHits};
use super::events::{Action, DecisionEvent, EventSink};
use super::frag::FragCache;
use super::inspect::{InspectPool, TxQueue};
use super::query::{Answer, Inbox, Query};
use super::route::RouteTable;
use super::{DropReason, EngineConfig, IfaceId, Nanos, Offload, Packet, Verdict};
use crate::conntrack::{Dir, FlowKey, FlowTable, FlowVerdict, TimeoutClass};
use crate::nat::SnatPool;
use crate::policy::Policy;
use crate::wire::emit::TcpControlRepr;
use crate::wire::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::gso;
use crate::wire::l4::tcp_flags;
use crate::wire::proto;
use admit::{Plan, Refused};
use parse::{Icmp, Parsed};
use reply::IcmpError;
use tables::{is_closed_class, Tables};

/// Expired flows reclaimed per new flow: keeps expiry amortised without a scavenger thread.
const EXPIRE_PER_NEW_FLOW: usize = 2;

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
    t: Tables,
    routes: RouteTable,
    frags: FragCache,
    local_addrs: Vec<Ipv4Addr>,
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
}

/// Asymmetric-route hints (mid-stream TCP with no flow) are logged at most this often per
/// worker; every such packet is still counted under `tcp_non_syn`.
const HINT_EVERY: Nanos = 100_000_000;

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("flows", &self.t.flows)
            .finish()
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
            t: Tables {
                flows: FlowTable::with_advice(max, seed, cfg.timeouts, advise),
                snat,
                inspect: InspectPool::new((max as usize / 16).clamp(16, 1024)),
                counters,
                closed_epoch: 0,
                takeover_failed: None,
            },
            routes: RouteTable::from_config(&cfg),
            frags: FragCache::new(),
            local_addrs,
            txq: TxQueue::new(64),
            events: None,
            updates: None,
            last_reload_cut: 0,
            hits,
            inbox: None,
            last_hint: None,
            cfg,
            policy,
            index,
            workers: workers.max(1),
        }
    }

    /// This worker's counters (shared with the control plane for scraping).
    pub fn counters(&self) -> &Arc<Counters> {
        &self.t.counters
    }
    /// Tracked flows.
    pub fn flows(&self) -> &FlowTable {
        &self.t.flows
    }
    pub fn flow_count(&self) -> usize {
        self.t.flows.len()
    }
    /// The SNAT allocator (utilisation, holders).
    pub fn snat(&self) -> &SnatPool {
        &self.t.snat
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
            self.t.snat.share_ports(ledger);
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
                bump(&self.t.counters.events_suppressed, 1);
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
        if let Some(old) = self.t.counters.rule_hits.swap(Some(hits.clone())) {
            if let Ok(mut r) = self.t.counters.retired_hits.lock() {
                r.push(old);
            }
        }
        self.hits = hits;
        control::revoke_denied(&mut self.t.flows, &*self.policy)
    }

    /// Frames the worker wants sent besides the verdicts (released held segments, resets).
    /// Returns (length, interface, next hop) of a frame written into `buf`.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(usize, IfaceId, Ipv4Addr)> {
        let r = self.txq.pop(buf);
        if let Some((len, tx_if, _)) = r {
            let c = &self.t.counters;
            bump(&c.tx_packets, 1);
            bump(&c.tx_bytes, len as u64);
            c.tx_on(tx_if, len);
        }
        r
    }

    /// Flows waiting for their application-rule verdict.
    pub fn inspecting(&self) -> usize {
        self.t.inspect.in_use()
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
        control::publish_gauges(&self.t.counters, &self.t.flows, &self.t.snat, now);
        // One atomic load when nobody asks; the Arc is cloned only to answer.
        if let Some(inbox) = self.inbox.as_ref().filter(|i| i.pending()).cloned() {
            inbox.serve(|q| self.answer(now, q));
        }
        let t = &mut self.t;
        while let Some((slot, idx)) = t.inspect.overdue(now) {
            if t.flows.get(idx).verdict().slot() == Some(slot) {
                t.remove(idx, now);
                bump(&t.counters.drops[DropReason::InspectBudget as usize], 1);
            }
            // Freed by the flow's removal; a slot its flow no longer names is freed here.
            t.inspect.release(slot, idx);
        }
        t.expire(now, budget)
    }

    /// Answers a control-plane question (between batches, never per packet: it may allocate).
    pub fn answer(&self, now: Nanos, q: Query) -> Answer {
        control::answer(
            self.index,
            &self.t.flows,
            &self.t.snat,
            &self.cfg,
            &*self.policy,
            now,
            q,
        )
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
        owner::owner_of(&self.cfg, &*self.policy, &self.t.snat, self.workers, frame)
    }

    /// The multiplier of [`Worker::steer_worker`] (2^32 / the golden ratio).
    pub const STEER_MUL: u32 = owner::STEER_MUL;

    /// The worker (of `workers`) of an inside address's outbound flows: Fibonacci hashing,
    /// the address times [`Worker::STEER_MUL`], whose upper 16 bits are scaled to `workers`
    /// (consecutive addresses spread evenly over any number of workers). The steering
    /// program computes the same in classic BPF (`io::steer`).
    pub fn steer_worker(src: Ipv4Addr, workers: usize) -> usize {
        owner::steer_worker(src, workers)
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
        let key = parse::quick_key(frame)?;
        let hash = self.t.flows.hash_of(&key);
        prefetch(self.t.flows.index_line(hash));
        Some(FlowHint { key, hash })
    }

    /// Stage 2 of a batched lookup (the index line is in cache by now): prefetches the flow
    /// line the lookup will read or, for a likely new flow, the slab line the `misses`-th
    /// insert of the batch will write and the SNAT mapping line its allocation reads.
    #[inline]
    pub fn warm_flow(&self, hint: &FlowHint, misses: &mut usize, prefetch: impl Fn(*const u8)) {
        match self.t.flows.flow_line(hint.hash) {
            Some(p) => prefetch(p),
            None => {
                if let Some(p) = self.t.flows.next_free_line(*misses) {
                    prefetch(p);
                }
                if let Some(p) = self.t.snat.mapping_line(&hint.key) {
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
        let c = &self.t.counters;
        bump(&c.rx_packets, 1);
        bump(&c.rx_bytes, rx_len as u64);
        c.rx_on(rx_if, rx_len);
        match v {
            Verdict::Forward { tx_if, .. } => {
                bump(&c.tx_packets, 1);
                bump(&c.tx_bytes, pkt.len as u64);
                c.tx_on(tx_if, pkt.len);
            }
            Verdict::Reply { tx_if, .. } => {
                // built in place: nothing of the received frame's offload applies
                pkt.offload = Offload::NONE;
                bump(&c.replies, 1);
                c.tx_on(tx_if, pkt.len);
            }
            Verdict::Local => bump(&c.local, 1),
            Verdict::Drop(r) => bump(&c.drops[r as usize], 1),
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
        let p = match parse::parse(pkt.frame(), eth.l3_offset, &self.local_addrs) {
            Ok(p) => p,
            Err(v) => return v,
        };
        // Trim Ethernet padding: the frame ends where the IP packet does.
        pkt.len = p.end;
        if p.dst.is_multicast() || p.dst.is_broadcast() {
            return Verdict::Local;
        }
        if self.local_addrs.contains(&p.dst) && !self.cfg.is_public(p.dst) {
            return Verdict::Local;
        }
        if p.icmp == Icmp::Error {
            return translate::icmp_error(&self.t.flows, &self.routes, pkt, &p);
        }
        if pkt.offload != Offload::NONE {
            if let Err(r) = parse::check_offload(pkt, &p) {
                return Verdict::Drop(r);
            }
        }
        if p.l4 == 0 {
            return translate::later_fragment(&self.frags, &self.routes, now, pkt, &p);
        }
        let key = FlowKey::new(p.src, p.dst, p.sport, p.dport, p.proto);
        if let Some((idx, dir)) = self.t.flows.lookup(&key) {
            return self.forward_tracked(now, pkt, &p, idx, dir);
        }
        if pkt.offload.is_gso() {
            // A new flow is decided on its first segment, as the rules and inspection see it.
            return Verdict::Segment;
        }
        self.new_flow(now, pkt, &p, key)
    }

    /// The first packet of a flow the table does not know: plan, log, commit, forward.
    fn new_flow(&mut self, now: Nanos, pkt: &mut Packet<'_>, p: &Parsed, key: FlowKey) -> Verdict {
        self.t.expire(now, EXPIRE_PER_NEW_FLOW);
        let intent = match admit::plan(&self.cfg, &*self.policy, p) {
            Plan::Admit(intent) => intent,
            Plan::Refuse(v) => return v,
            Plan::Deny { rule, reason } => {
                let e = DecisionEvent::new(now, key, Action::Deny);
                self.emit(now, e.with_rule(rule).with_reason(reason));
                return Verdict::Drop(reason);
            }
            Plan::NonSyn { hint } => {
                if hint
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
            Plan::TtlExceeded => return self.icmp_reply(pkt, p, IcmpError::TTL_EXCEEDED),
        };
        match admit::commit(&mut self.t, &self.cfg, now, key, p, &intent) {
            Ok(a) => {
                if let Some(e) = a.event {
                    self.emit(now, e);
                }
                self.forward_tracked(now, pkt, p, a.idx, Dir::Orig)
            }
            Err(Refused {
                reason,
                logged,
                unreachable,
            }) => {
                if logged {
                    let e = DecisionEvent::new(now, key, Action::Deny);
                    self.emit(now, e.with_rule(Some(intent.rule)).with_reason(reason));
                }
                if unreachable {
                    return self.icmp_reply(pkt, p, IcmpError::prohibited(reason));
                }
                Verdict::Drop(reason)
            }
        }
    }

    fn icmp_reply(&mut self, pkt: &mut Packet<'_>, p: &Parsed, e: IcmpError) -> Verdict {
        reply::icmp_error(&self.cfg, &self.routes, &self.t.counters, pkt, p, e)
    }

    /// A packet of a tracked flow: checks, then translation (or the hold).
    fn forward_tracked(
        &mut self,
        now: Nanos,
        pkt: &mut Packet<'_>,
        p: &Parsed,
        idx: u32,
        dir: Dir,
    ) -> Verdict {
        if p.ttl <= 1 {
            return self.icmp_reply(pkt, p, IcmpError::TTL_EXCEEDED);
        }
        if let FlowVerdict::Revoked { .. } = self.t.flows.get(idx).verdict() {
            let e = DecisionEvent::new(now, self.t.flows.get(idx).orig, Action::Deny);
            self.emit(now, e.with_reason(DropReason::PolicyRevoked));
            return self.cut(now, pkt, p, idx, dir, p.seq, DropReason::PolicyRevoked);
        }
        let f = self.t.flows.get(idx);
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
                return self.icmp_reply(pkt, p, IcmpError::frag_needed(mtu as u16));
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
            let f = self.t.flows.get_mut(idx);
            f.tcp.on_segment(dir, p.tcp_flags);
            class = TimeoutClass::of_tcp(&f.tcp);
            if is_closed_class(was) || is_closed_class(class) {
                self.t.closed_epoch += 1;
            }
        }
        translate::rewrite(self.cfg.mss_clamp, pkt, p, &after);
        if p.first_frag {
            self.frags.insert(p, after.src(), after.dst(), now);
        }
        let f = self.t.flows.get_mut(idx);
        f.packets[dir as usize] = f.packets[dir as usize].wrapping_add(1);
        self.t.flows.touch(idx, class, now);
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
        if let Err(r) = hold::check(pkt, p) {
            return Verdict::Drop(r);
        }
        let f = *self.t.flows.get(idx);
        match hold::hold(&mut self.t.inspect, &*self.policy, now, pkt, p, idx, &f) {
            hold::Outcome::Held => Verdict::Held,
            hold::Outcome::Drop(r) => Verdict::Drop(r),
            hold::Outcome::Allow { rule, event } => {
                self.emit(now, event);
                self.release_inspected(now, idx, rule, pkt.rx_if);
                Verdict::Held
            }
            hold::Outcome::Deny { reason, event } => {
                if let Some(e) = event {
                    self.emit(now, e);
                }
                self.deny_inspected(now, pkt, p, idx, reason)
            }
        }
    }

    /// The name was allowed: the flow continues untouched and its held packets leave in order
    /// (each decided again, as the allowed flow it now is).
    fn release_inspected(&mut self, now: Nanos, idx: u32, rule: u32, rx_if: IfaceId) {
        let FlowVerdict::Inspecting { slot: slot_i, .. } = self.t.flows.get(idx).verdict() else {
            return;
        };
        // Read before the flow is marked allowed: the slot is checked against its owner.
        let held = self.t.inspect.get(slot_i, idx).map_or(0, |s| s.held);
        // The flow stays the slot's owner until the held frames are out (re-deciding them
        // below must find it allowed, not inspecting).
        self.t
            .flows
            .get_mut(idx)
            .set_verdict(FlowVerdict::Allowed { rule: rule as u16 });
        for i in 0..held {
            let Some(mut buf) = self.txq.take_buf() else {
                break;
            };
            let len = match self.t.inspect.get(slot_i, idx) {
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
        self.t.inspect.release(slot_i, idx);
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
        let isn = match self.t.flows.get(idx).verdict() {
            FlowVerdict::Inspecting { slot, .. } => self.t.inspect.get(slot, idx).map(|s| s.isn),
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
        let f = *self.t.flows.get(idx);
        self.t.remove(idx, now);
        // Onward, as the other end would have received this packet after translation.
        let onward = match dir {
            Dir::Orig => f.reply.reversed(),
            Dir::Reply => f.orig.reversed(),
        };
        let onward = TcpControlRepr {
            src: onward.src(),
            dst: onward.dst(),
            sport: onward.sport(),
            dport: onward.dport(),
            seq: onward_seq,
            ack: 0,
            flags: tcp_flags::RST,
        };
        reply::resets(
            &self.routes,
            &mut self.txq,
            &self.t.counters,
            pkt,
            p,
            onward,
            reason,
        )
    }
}
