//! One worker's SNAT allocator over all public addresses.
//!
//! Accounting, per (public address, protocol) port: `users` in its [`PortSlice`] is the number
//! of flows on it (APDM) or of mapping-table entries on it (EIM; one entry per inside
//! endpoint holding the port, whatever its flow count). Per EIM entry, `refs` is the number of
//! flows using it. Per inside host, `held` is its sessions (APDM) or its entries (EIM). A
//! flow's release drops exactly what its allocation took: one `refs` of the entry named by the
//! flow's own (endpoint, public address, port), and the port user and the host's count only
//! when that entry goes. A port kept for a DNAT rule ([`SnatPool::reserve`]) is in use for
//! good and joined by no flow.

use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::sync::Arc;

use hashbrown::HashMap;

use super::eim::{EimTable, Mapping};
use super::ledger::PortLedger;

use super::rng::Rng;
use super::slice::PortSlice;
use super::{MappingMode, NatConfig};
use crate::conntrack::FlowKey;
use crate::time::Nanos;
use crate::wire::proto;

/// Random probes among busy ports before a reuse (APDM, or EIM with port sharing) falls back
/// to a full scan.
const APDM_PROBES: u32 = 32;

/// Why no SNAT mapping could be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("no SNAT port is left on any public address")]
    OutOfPorts,
    #[error("the inside host holds its whole port quota")]
    HostQuota,
}

/// A granted SNAT mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub addr_idx: u8,
    pub addr: Ipv4Addr,
    pub port: u16,
    /// EIM: the endpoint has a mapping, but its reply tuple toward this destination was taken
    /// (another holder of the shared port talks to it), so this flow got another port; the
    /// mapping stays as it was (counted as `eim_collision_moved`).
    pub moved: bool,
}

fn proto_slot(p: u8) -> usize {
    match p {
        proto::TCP => 0,
        proto::UDP => 1,
        _ => 2,
    }
}

/// Per-address, per-protocol port slices owned by one worker.
pub struct SnatPool {
    addrs: Vec<Ipv4Addr>,
    /// `slices[addr][proto_slot]`.
    slices: Vec<[PortSlice; 3]>,
    mode: MappingMode,
    /// EIM: endpoints without a mapping may take a port other endpoints hold.
    sharing: bool,
    quota: Option<u32>,
    cooldown: Nanos,
    rng: Rng,
    hasher: foldhash::fast::FixedState,
    eim: EimTable,
    held: HashMap<u32, u32, foldhash::fast::FixedState>,
    /// Reuse (APDM, shared EIM): per protocol, a count of the events that may make a busy port
    /// usable toward a destination (every flow release, every port taken from the free
    /// list), and the destination (address, port) whose reuse scan last failed with the count
    /// then. Until the count moves, that destination fails at once instead of rescanning
    /// every port (a SYN flood toward one destination would otherwise cost a full scan per
    /// packet).
    reuse_epoch: [u64; 3],
    scan_failed: [Option<(u32, u16, u64)>; 3],
    /// With more than one worker: the holders of every port of every worker, so a worker
    /// whose slice is dry borrows another's free ports (see [`PortLedger`]).
    ledger: Option<Arc<PortLedger>>,
    /// This pool's worker, and every worker's (base, count) port range.
    worker: usize,
    ranges: Vec<(u16, u16)>,
    /// Ports borrowed from other workers' slices, by (address, protocol slot, port): their
    /// users, counted as a slice counts its own. Sized for the whole range up front.
    borrowed: HashMap<(u8, u8, u16), u32, foldhash::fast::FixedState>,
    /// `borrowed` ports per address and protocol slot.
    borrowed_n: Vec<[u32; 3]>,
    /// Per protocol, when a borrow last found nothing: the next scan waits [`BORROW_RETRY`]
    /// (a SYN flood at exhaustion would otherwise scan every worker's range per packet).
    borrow_failed: [Option<Nanos>; 3],
    /// Ports of this slice kept for DNAT rules ([`SnatPool::reserve`]).
    reserved: Vec<(u8, u8, u16)>,
}

/// How long after a borrow found no free port the next one is tried.
const BORROW_RETRY: Nanos = 1_000_000;

impl std::fmt::Debug for SnatPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnatPool")
            .field("addrs", &self.addrs)
            .field("mode", &self.mode)
            .field("sharing", &self.sharing)
            .finish()
    }
}

impl SnatPool {
    /// The pool of worker `worker` of `workers`; `expected_flows` sizes the mapping tables.
    pub fn new(
        cfg: &NatConfig,
        worker: usize,
        workers: usize,
        expected_flows: usize,
        seed: u64,
    ) -> Self {
        Self::with_advice(cfg, worker, workers, expected_flows, seed, None)
    }

    /// Like [`SnatPool::new`]; `advise` sees the mapping table's memory first (huge pages).
    pub fn with_advice(
        cfg: &NatConfig,
        worker: usize,
        workers: usize,
        expected_flows: usize,
        seed: u64,
        advise: Option<&dyn Fn(usize, usize)>,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let (base, count) = cfg.worker_range(worker, workers);
        let slices = cfg
            .public_addrs
            .iter()
            .map(|_| {
                [
                    PortSlice::new(base, count, &mut rng),
                    PortSlice::new(base, count, &mut rng),
                    PortSlice::new(base, count, &mut rng),
                ]
            })
            .collect();
        let hasher = foldhash::fast::FixedState::with_seed(rng.next_u64());
        SnatPool {
            addrs: cfg.public_addrs.clone(),
            slices,
            mode: cfg.mapping,
            sharing: cfg.eim_sharing(),
            quota: cfg.per_host_quota,
            cooldown: u64::from(cfg.reuse_cooldown) * 1_000_000_000,
            rng,
            hasher,
            eim: EimTable::new(
                if cfg.mapping == MappingMode::EndpointIndependent {
                    expected_flows
                } else {
                    0
                },
                advise,
            ),
            held: HashMap::with_capacity_and_hasher(4096, hasher),
            reuse_epoch: [0; 3],
            scan_failed: [None; 3],
            ledger: None,
            worker,
            ranges: (0..workers.max(1))
                .map(|w| cfg.worker_range(w, workers))
                .collect(),
            borrowed: HashMap::with_hasher(hasher),
            borrowed_n: vec![[0; 3]; cfg.public_addrs.len()],
            borrow_failed: [None; 3],
            reserved: Vec::new(),
        }
    }

    /// Keeps ports `lo..=hi` of address `idx`, protocol `p`, out of SNAT for good (a DNAT
    /// rule's public side), as far as they lie in this worker's slice; the other workers'
    /// pools reserve the rest, and none borrows them. Call before [`SnatPool::share_ports`].
    pub fn reserve(&mut self, idx: usize, p: u8, lo: u16, hi: u16) {
        let slot = proto_slot(p);
        let Some(s) = self.slices.get_mut(idx) else {
            return;
        };
        for port in lo..=hi {
            if s[slot].reserve(port) {
                self.reserved.push((idx as u8, slot as u8, port));
            }
        }
    }

    /// Shares `ledger` with the other workers' pools: from now on this pool claims its ports
    /// there, may borrow theirs when its slice is dry, and lends its free ones. Call before
    /// the first allocation; all pools of one daemon get the same ledger.
    pub fn share_ports(&mut self, ledger: Arc<PortLedger>) {
        if ledger.workers() != self.ranges.len() {
            return;
        }
        // The most this pool can borrow: every other worker's ports, per address and protocol.
        let others = self.ranges.iter().map(|r| usize::from(r.1)).sum::<usize>()
            - usize::from(self.ranges[self.worker].1);
        self.borrowed.reserve(others * self.addrs.len() * 3);
        for &(i, sl, port) in &self.reserved {
            ledger.claim_home(usize::from(i), usize::from(sl), port, 0);
        }
        self.ledger = Some(ledger);
    }

    /// The worker that borrowed `port` of address `idx` (protocol `p`), if another worker's
    /// flow holds it (for steering a frame from outside; one atomic load).
    #[inline]
    pub fn lent_to(&self, idx: usize, p: u8, port: u16) -> Option<usize> {
        self.ledger.as_ref()?.lent_to(idx, proto_slot(p), port)
    }

    /// Ports this pool has borrowed from other workers (all addresses and protocols).
    pub fn borrowed_ports(&self) -> usize {
        self.borrowed.len()
    }

    pub fn addrs(&self) -> &[Ipv4Addr] {
        &self.addrs
    }
    pub fn mode(&self) -> MappingMode {
        self.mode
    }
    /// EIM with port sharing.
    pub fn port_sharing(&self) -> bool {
        self.sharing
    }
    /// EIM mapping-table entries held (0 with APDM): 0 once every flow is released.
    pub fn mappings(&self) -> usize {
        self.eim.len()
    }

    /// Index of `a` among the public addresses.
    #[inline]
    pub fn addr_index(&self, a: Ipv4Addr) -> Option<usize> {
        self.addrs.iter().position(|&x| x == a)
    }

    /// (ports in use, ports in this worker's slice) for address `idx` and protocol `p`.
    /// Ports borrowed from other slices count as in use here (and as free in their owner's
    /// slice), so the sums over workers are the pool's; a borrower's ratio may pass 1.
    pub fn utilisation(&self, idx: usize, p: u8) -> (u32, u32) {
        let slot = proto_slot(p);
        let s = &self.slices[idx][slot];
        (s.in_use() + self.borrowed_n[idx][slot], s.size())
    }

    /// Mappings (EIM: (endpoint, public address, port) entries) or sessions (APDM) held by an
    /// inside host: what `per_host_quota` caps.
    pub fn held_by(&self, host: Ipv4Addr) -> u32 {
        self.held.get(&u32::from(host)).copied().unwrap_or(0)
    }

    /// Hosts holding ports, with their count (for `tollgate snat`; not on the packet path).
    pub fn holders(&self) -> impl Iterator<Item = (Ipv4Addr, u32)> + '_ {
        self.held.iter().map(|(&h, &n)| (Ipv4Addr::from(h), n))
    }

    /// The mapping-table line an allocation for the new flow `orig` will read first (EIM
    /// only), for the batch prefetch.
    #[inline]
    pub fn mapping_line(&self, orig: &FlowKey) -> Option<*const u8> {
        (self.mode == MappingMode::EndpointIndependent).then(|| {
            self.eim
                .home(self.eim_hash(u32::from(orig.src()), orig.sport(), orig.proto()))
        })
    }

    /// Bytes of memory held, as (EIM mapping table, port slices): the table is sized for the
    /// flow limit, the slices by the port range (per public address and protocol). A mapping
    /// is a 16-byte slot and the table has 3 slots per 2 flows (24 bytes per flow of the
    /// limit, with or without port sharing); a port costs 14 bytes per public address and
    /// protocol (users 4, free ring 2, free time 8).
    pub fn memory_bytes(&self) -> (usize, usize) {
        let slices = self
            .slices
            .iter()
            .flatten()
            .map(PortSlice::memory_bytes)
            .sum();
        (self.eim.memory_bytes(), slices)
    }

    #[inline]
    fn eim_hash(&self, inside: u32, port: u16, p: u8) -> u64 {
        self.hasher.hash_one((inside, port, p))
    }

    /// Allocates a public (address, port) for the new flow `orig` (inside -> outside).
    /// `taken(addr, port)` tells whether the reply tuple toward `orig`'s destination would
    /// collide with an existing flow (the flow table answers it).
    ///
    /// EIM: an endpoint's mapping serves every destination whose reply tuple is free; a flow
    /// whose tuple is taken, and an endpoint without a mapping, get a free port (paired
    /// address first), or with port sharing (as APDM) a busy port whose tuple toward this
    /// destination is free: bounded random probes, then one scan, and a destination whose
    /// scan failed fails at once until a flow is released or a free port is taken.
    pub fn allocate(
        &mut self,
        orig: &FlowKey,
        now: Nanos,
        taken: impl Fn(Ipv4Addr, u16) -> bool,
    ) -> Result<Grant, AllocError> {
        let inside = u32::from(orig.src());
        let p = orig.proto();
        let slot = proto_slot(p);
        let eim = self.mode == MappingMode::EndpointIndependent;
        let h = if eim {
            self.eim_hash(inside, orig.sport(), p)
        } else {
            0
        };
        // EIM: the endpoint's mapping, unless its reply tuple is taken (then `moved`).
        let mut moved = false;
        if eim {
            if let Some(m) = self.eim.find_mut(h, inside, orig.sport(), p) {
                let addr = self.addrs[usize::from(m.addr_idx)];
                if !taken(addr, m.public_port) {
                    m.refs += 1;
                    return Ok(Grant {
                        addr_idx: m.addr_idx,
                        addr,
                        port: m.public_port,
                        moved: false,
                    });
                }
                moved = true;
            }
        }
        if let Some(q) = self.quota {
            if self.held_by(orig.src()) >= q {
                return Err(AllocError::HostQuota);
            }
        }
        let n = self.addrs.len();
        if n == 0 {
            return Err(AllocError::OutOfPorts);
        }
        // Paired pooling (RFC 4787 REQ-2): an inside host prefers one public address.
        let first = (self.hasher.hash_one(inside) % n as u64) as usize;
        let mut grant = None;
        for k in 0..n {
            let i = (first + k) % n;
            if let Some(port) = self.take_own(i, slot, now) {
                self.reuse_epoch[slot] += 1;
                grant = Some(Grant {
                    addr_idx: i as u8,
                    addr: self.addrs[i],
                    port,
                    moved,
                });
                break;
            }
        }
        // The slice is dry: a free port of another worker's slice before sharing a busy one.
        if grant.is_none() {
            if let Some((i, port)) = self.borrow(first, slot, now) {
                self.reuse_epoch[slot] += 1;
                grant = Some(Grant {
                    addr_idx: i as u8,
                    addr: self.addrs[i],
                    port,
                    moved,
                });
            }
        }
        let mut shared = false;
        if grant.is_none() && (!eim || self.sharing) {
            let dest = (u32::from(orig.dst()), orig.dport());
            let known_full = self.scan_failed[slot]
                .is_some_and(|(a, p, r)| (a, p) == dest && r == self.reuse_epoch[slot]);
            if !known_full {
                grant = self.find_busy_port(first, slot, &taken);
                if grant.is_none() {
                    self.scan_failed[slot] = Some((dest.0, dest.1, self.reuse_epoch[slot]));
                }
            }
            shared = grant.is_some();
        }
        let mut g = grant.ok_or(AllocError::OutOfPorts)?;
        g.moved = moved;
        if !eim {
            if shared {
                self.add_user(g.addr_idx, slot, g.port);
            }
            *self.held.entry(inside).or_insert(0) += 1;
            return Ok(g);
        }
        // EIM: record the entry. A busy port may be one this endpoint already holds (a
        // secondary entry left by an earlier detour): one entry per (endpoint, port), so the
        // flow joins it; it becomes the endpoint's mapping if the endpoint has none.
        if shared {
            if let Some(e) =
                self.eim
                    .find_exact_mut(h, inside, orig.sport(), p, (g.addr_idx, g.port))
            {
                e.refs += 1;
                e.primary |= !moved;
                return Ok(g);
            }
            self.add_user(g.addr_idx, slot, g.port);
        }
        *self.held.entry(inside).or_insert(0) += 1;
        let mut m = Mapping::new(inside, orig.sport(), p, g.addr_idx, g.port);
        if moved {
            m = m.secondary();
        }
        if !self.eim.insert(h, m) {
            // Unreachable with the table sized for the flow limit; give the port back
            // rather than hand out a mapping that is not recorded.
            self.give_back(inside, g.addr_idx, g.port, slot, now);
            return Err(AllocError::OutOfPorts);
        }
        Ok(g)
    }

    /// A free port of this worker's slice of address `i`. With a ledger, the port is claimed
    /// there first: one that is lent (or given back too recently by its borrower) goes to
    /// the back of the free list and the next is tried, each at most once.
    fn take_own(&mut self, i: usize, slot: usize, now: Nanos) -> Option<u16> {
        let Some(l) = self.ledger.clone() else {
            return self.slices[i][slot].take_free(now, self.cooldown, &mut self.rng);
        };
        for _ in 0..self.slices[i][slot].free_count() {
            let port = self.slices[i][slot].take_free(now, self.cooldown, &mut self.rng)?;
            if l.claim_home(i, slot, port, now.saturating_sub(self.cooldown)) {
                return Some(port);
            }
            self.slices[i][slot].release(port, now);
        }
        None
    }

    /// A free port borrowed from another worker's slice (paired address first), recorded as
    /// held here; None without a ledger, or within [`BORROW_RETRY`] of a borrow that found
    /// none.
    fn borrow(&mut self, first: usize, slot: usize, now: Nanos) -> Option<(usize, u16)> {
        let l = self.ledger.clone()?;
        if self.borrow_failed[slot].is_some_and(|t| now < t.saturating_add(BORROW_RETRY)) {
            return None;
        }
        let n = self.addrs.len();
        let start = self.rng.next_u64() as u32;
        for k in 0..n {
            let i = (first + k) % n;
            if let Some(port) = l.borrow(
                self.worker,
                i,
                slot,
                &self.ranges,
                start,
                now.saturating_sub(self.cooldown),
            ) {
                self.borrowed.insert((i as u8, slot as u8, port), 1);
                self.borrowed_n[i][slot] += 1;
                self.borrow_failed[slot] = None;
                return Some((i, port));
            }
        }
        self.borrow_failed[slot] = Some(now);
        None
    }

    /// Users of a port held here (own or borrowed); 0 if free or another worker's.
    fn port_users(&self, i: usize, slot: usize, port: u16) -> u32 {
        let s = &self.slices[i][slot];
        if s.contains(port) {
            s.users(port)
        } else {
            self.borrowed
                .get(&(i as u8, slot as u8, port))
                .copied()
                .unwrap_or(0)
        }
    }

    /// One more user of a port already held here (own or borrowed).
    fn add_user(&mut self, addr_idx: u8, slot: usize, port: u16) {
        let s = &mut self.slices[usize::from(addr_idx)][slot];
        if s.contains(port) {
            s.add_user(port);
        } else if let Some(u) = self.borrowed.get_mut(&(addr_idx, slot as u8, port)) {
            *u += 1;
        }
    }

    /// A port already in use that may serve this destination too (its reply tuple is free),
    /// paired address first: random probes, then a scan from a random start.
    fn find_busy_port(
        &mut self,
        first: usize,
        slot: usize,
        taken: &impl Fn(Ipv4Addr, u16) -> bool,
    ) -> Option<Grant> {
        let n = self.addrs.len();
        for k in 0..n {
            let i = (first + k) % n;
            let addr = self.addrs[i];
            let s = &self.slices[i][slot];
            let (base, size) = (s.base(), s.size());
            if size == 0 {
                continue;
            }
            // Never a DNAT rule's port: it is in use, but by no flow to share it with.
            let usable = |s: &PortSlice, port: u16| s.shareable(port) && !taken(addr, port);
            let mut found = None;
            for _ in 0..APDM_PROBES {
                let port = base + self.rng.below(size) as u16;
                if usable(s, port) {
                    found = Some(port);
                    break;
                }
            }
            if found.is_none() {
                let start = self.rng.below(size);
                found = (0..size)
                    .map(|j| base + ((start + j) % size) as u16)
                    .find(|&port| usable(s, port));
            }
            if let Some(port) = found {
                return Some(Grant {
                    addr_idx: i as u8,
                    addr,
                    port,
                    moved: false,
                });
            }
        }
        // Borrowed ports serve other destinations too.
        self.borrowed
            .keys()
            .find(|&&(i, sl, port)| {
                usize::from(sl) == slot && !taken(self.addrs[usize::from(i)], port)
            })
            .map(|&(i, _, port)| Grant {
                addr_idx: i,
                addr: self.addrs[usize::from(i)],
                port,
                moved: false,
            })
    }

    /// EIM: the public (address index, port) of the endpoint of `orig` (inside address, port,
    /// protocol) — its endpoint-independent mapping — if it has one; None with APDM.
    pub fn mapping_of(&self, orig: &FlowKey) -> Option<(u8, u16)> {
        if self.mode != MappingMode::EndpointIndependent {
            return None;
        }
        let inside = u32::from(orig.src());
        let h = self.eim_hash(inside, orig.sport(), orig.proto());
        self.eim
            .find(h, inside, orig.sport(), orig.proto())
            .map(|m| (m.addr_idx, m.public_port))
    }

    /// Whether the flow `orig`, on public (`addr_idx`, `port`), may hand that port over to a
    /// new flow when it is evicted (see [`SnatPool::allocate_reclaimed`]). Always with port
    /// sharing and APDM; strict EIM keeps one holder per port, so only when the flow is the
    /// port's last user (its endpoint has no other flow on it and nobody else holds it).
    pub fn reclaimable(&self, orig: &FlowKey, addr_idx: u8, port: u16) -> bool {
        if self.mode != MappingMode::EndpointIndependent || self.sharing {
            return true;
        }
        let inside = u32::from(orig.src());
        let h = self.eim_hash(inside, orig.sport(), orig.proto());
        let slot = proto_slot(orig.proto());
        let sole_user = usize::from(addr_idx) < self.slices.len()
            && self.port_users(usize::from(addr_idx), slot, port) == 1;
        sole_user
            && self
                .eim
                .find_exact(h, inside, orig.sport(), orig.proto(), (addr_idx, port))
                .is_some_and(|m| m.refs == 1)
    }

    /// Grants the busy public (`addr_idx`, `port`) to the new flow `orig` (a TCP SYN) when
    /// [`SnatPool::allocate`] found no port, because the flow holding that port's reply tuple
    /// toward `orig`'s destination has closed and the caller evicts it right after with
    /// [`SnatPool::release_reclaimed`] (in that order, so the port never looks free). Accounted
    /// like a shared port: a user for a new entry (EIM: joined if the endpoint already holds
    /// one on that port; a secondary entry, `moved`, if the endpoint's mapping is elsewhere),
    /// the per-host quota applying as to any new mapping.
    pub fn allocate_reclaimed(
        &mut self,
        orig: &FlowKey,
        addr_idx: u8,
        port: u16,
    ) -> Result<Grant, AllocError> {
        let inside = u32::from(orig.src());
        let p = orig.proto();
        let slot = proto_slot(p);
        let i = usize::from(addr_idx);
        let Some(&addr) = self.addrs.get(i) else {
            return Err(AllocError::OutOfPorts);
        };
        if self.port_users(i, slot, port) == 0 || self.slices[i][slot].is_reserved(port) {
            // Not the port of a live flow: nothing to take over.
            return Err(AllocError::OutOfPorts);
        }
        let eim = self.mode == MappingMode::EndpointIndependent;
        let mut g = Grant {
            addr_idx,
            addr,
            port,
            moved: false,
        };
        let h = self.eim_hash(inside, orig.sport(), p);
        if eim {
            g.moved = self
                .eim
                .find(h, inside, orig.sport(), p)
                .is_some_and(|m| (m.addr_idx, m.public_port) != (addr_idx, port));
            if let Some(e) = self
                .eim
                .find_exact_mut(h, inside, orig.sport(), p, (addr_idx, port))
            {
                e.refs += 1;
                e.primary |= !g.moved;
                return Ok(g);
            }
        }
        if let Some(q) = self.quota {
            if self.held_by(orig.src()) >= q {
                return Err(AllocError::HostQuota);
            }
        }
        self.add_user(addr_idx, slot, port);
        *self.held.entry(inside).or_insert(0) += 1;
        if eim {
            let mut m = Mapping::new(inside, orig.sport(), p, addr_idx, port);
            if g.moved {
                m = m.secondary();
            }
            if !self.eim.insert(h, m) {
                // Unreachable with the table sized for the flow limit (see `allocate`). The
                // closed flow still holds the port, so this is never its last user.
                self.give_back(inside, addr_idx, port, slot, 0);
                return Err(AllocError::OutOfPorts);
            }
        }
        Ok(g)
    }

    /// [`SnatPool::release`] for a closed flow whose port [`SnatPool::allocate_reclaimed`] has
    /// just handed to a new flow. The reply tuple it frees is taken again at once by the new
    /// flow, so a failed reuse scan stays valid: the reuse count does not move (otherwise
    /// every takeover would make the next SYN toward a saturated destination rescan the
    /// whole slice).
    pub fn release_reclaimed(&mut self, orig: &FlowKey, addr_idx: u8, port: u16, now: Nanos) {
        let slot = proto_slot(orig.proto());
        let epoch = self.reuse_epoch[slot];
        self.release(orig, addr_idx, port, now);
        self.reuse_epoch[slot] = epoch;
    }

    /// Releases the mapping of a removed flow whose original tuple was `orig` and whose public
    /// side was (`addr_idx`, `port`).
    pub fn release(&mut self, orig: &FlowKey, addr_idx: u8, port: u16, now: Nanos) {
        let inside = u32::from(orig.src());
        let p = orig.proto();
        let slot = proto_slot(p);
        // Any flow's end may free its reply tuple on a busy port: a failed reuse scan toward
        // its destination is stale.
        self.reuse_epoch[slot] += 1;
        if self.mode == MappingMode::EndpointIndependent {
            let h = self.eim_hash(inside, orig.sport(), p);
            let hasher = &self.hasher;
            match self
                .eim
                .release(h, inside, orig.sport(), p, (addr_idx, port), |m| {
                    hasher.hash_one((m.inside, m.port, m.proto))
                }) {
                Some(0) => {}
                Some(_) | None => return,
            }
        }
        self.give_back(inside, addr_idx, port, slot, now);
    }

    /// Returns a port to its slice and the inside host's count.
    fn give_back(&mut self, inside: u32, addr_idx: u8, port: u16, slot: usize, now: Nanos) {
        let a = usize::from(addr_idx);
        if let Some(s) = self.slices.get_mut(a) {
            let s = &mut s[slot];
            if s.contains(port) {
                let last = s.users(port) == 1;
                s.release(port, now);
                if let (true, Some(l)) = (last, &self.ledger) {
                    l.free(a, slot, port, now);
                }
            } else if let Some(u) = self.borrowed.get_mut(&(addr_idx, slot as u8, port)) {
                *u -= 1;
                if *u == 0 {
                    self.borrowed.remove(&(addr_idx, slot as u8, port));
                    self.borrowed_n[a][slot] -= 1;
                    if let Some(l) = &self.ledger {
                        l.free(a, slot, port, now);
                    }
                }
            }
        }
        if let Some(c) = self.held.get_mut(&inside) {
            *c -= 1;
            if *c == 0 {
                self.held.remove(&inside);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_destination_with_no_port_left_fails_without_rescanning_until_a_release() {
        let cfg = NatConfig {
            public_addrs: vec![Ipv4Addr::new(203, 0, 113, 1)],
            port_min: 3000,
            port_max: 3003,
            mapping: MappingMode::AddressAndPortDependent,
            reuse_cooldown: 0,
            ..NatConfig::default()
        };
        let mut pool = SnatPool::new(&cfg, 0, 1, 64, 1);
        let dst = Ipv4Addr::new(203, 0, 113, 10);
        let key = |sport| FlowKey::new(Ipv4Addr::new(198, 18, 0, 11), dst, sport, 443, 6);
        let used = std::cell::RefCell::new(Vec::new());
        for sport in 0..4 {
            let g = pool
                .allocate(&key(sport), 0, |_, p| used.borrow().contains(&p))
                .unwrap();
            used.borrow_mut().push(g.port);
        }
        let probes = Cell::new(0);
        let taken = |_: Ipv4Addr, p: u16| {
            probes.set(probes.get() + 1);
            used.borrow().contains(&p)
        };
        assert_eq!(
            pool.allocate(&key(10), 0, taken),
            Err(AllocError::OutOfPorts)
        );
        let first = probes.get();
        assert!(first >= 4, "the first failure scans");
        assert_eq!(
            pool.allocate(&key(11), 0, taken),
            Err(AllocError::OutOfPorts)
        );
        assert_eq!(probes.get(), first, "the second fails without probing");
        // Another destination may still reuse every port.
        let other = FlowKey::new(
            Ipv4Addr::new(198, 18, 0, 11),
            Ipv4Addr::new(203, 0, 113, 20),
            12,
            443,
            6,
        );
        assert!(pool.allocate(&other, 0, |_, _| false).is_ok());
        // After a release the destination is scanned again and gets the freed port.
        let freed = used.borrow_mut().remove(0);
        pool.release(&key(0), 0, freed, 0);
        let g = pool
            .allocate(&key(13), 0, |_, p| used.borrow().contains(&p))
            .unwrap();
        assert_eq!(g.port, freed);
    }

    /// Found by fuzzing (fuzz/fuzz_targets/worker.rs): a port kept for a DNAT rule counts as
    /// in use, and the reuse of busy ports took it like a port with flows on it.
    #[test]
    fn reuse_never_takes_a_port_kept_for_a_dnat_rule() {
        for (mapping, port_sharing) in [
            (MappingMode::AddressAndPortDependent, true),
            (MappingMode::EndpointIndependent, true),
        ] {
            let cfg = NatConfig {
                public_addrs: vec![Ipv4Addr::new(203, 0, 113, 1)],
                port_min: 3000,
                port_max: 3003,
                mapping,
                port_sharing,
                reuse_cooldown: 0,
                ..NatConfig::default()
            };
            let mut pool = SnatPool::new(&cfg, 0, 1, 64, 1);
            pool.reserve(0, proto::TCP, 3002, 3002);
            assert_eq!(pool.utilisation(0, proto::TCP), (1, 4));
            let flows = Flows::new();
            let mut got = Vec::new();
            // Three inside hosts (distinct endpoints) toward each of two destinations: the
            // three free ports, then each of them again toward the second destination.
            for dst in [10, 20] {
                for inside in 1..=4 {
                    match flows.open(&mut pool, inside, dst) {
                        Ok(g) => got.push(g.port),
                        Err(e) => assert_eq!((inside, e), (4, AllocError::OutOfPorts)),
                    }
                }
            }
            assert_eq!(got.len(), 6, "{mapping:?}");
            assert!(!got.contains(&3002), "{mapping:?}: {got:?}");
            assert_eq!(pool.utilisation(0, proto::TCP), (4, 4));
            // Nor may a takeover claim it.
            let k = flow(5, 30);
            assert_eq!(
                pool.allocate_reclaimed(&k, 0, 3002),
                Err(AllocError::OutOfPorts)
            );
        }
    }

    /// A fake flow table for the allocator: the (public port, destination) pairs in use.
    struct Flows(std::cell::RefCell<std::collections::HashSet<(u16, u32)>>);

    impl Flows {
        fn new() -> Self {
            Flows(Default::default())
        }
        fn taken(&self, dst: u32) -> impl Fn(Ipv4Addr, u16) -> bool + '_ {
            move |_, p| self.0.borrow().contains(&(p, dst))
        }
        /// Allocates for `inside:1000 -> dst:443` and records the flow.
        fn open(&self, pool: &mut SnatPool, inside: u8, dst: u8) -> Result<Grant, AllocError> {
            let k = flow(inside, dst);
            let d = u32::from(k.dst());
            let g = pool.allocate(&k, 0, self.taken(d))?;
            assert!(
                self.0.borrow_mut().insert((g.port, d)),
                "duplicate outside tuple"
            );
            Ok(g)
        }
        fn close(&self, pool: &mut SnatPool, inside: u8, dst: u8, g: Grant) {
            let k = flow(inside, dst);
            assert!(self.0.borrow_mut().remove(&(g.port, u32::from(k.dst()))));
            pool.release(&k, g.addr_idx, g.port, 0);
        }
    }

    fn flow(inside: u8, dst: u8) -> FlowKey {
        FlowKey::new(
            Ipv4Addr::new(198, 18, 0, inside),
            Ipv4Addr::new(203, 0, 113, dst),
            1000,
            443,
            6,
        )
    }

    fn shared_pool(ports: u16) -> SnatPool {
        let cfg = NatConfig {
            public_addrs: vec![Ipv4Addr::new(203, 0, 113, 1)],
            port_min: 3000,
            port_max: 3000 + ports - 1,
            reuse_cooldown: 0,
            ..NatConfig::default()
        };
        assert!(cfg.eim_sharing(), "the default");
        SnatPool::new(&cfg, 0, 1, 64, 1)
    }

    #[test]
    fn a_detour_is_a_secondary_entry_joined_and_promoted_when_its_port_comes_round_again() {
        let mut pool = shared_pool(2);
        let f = Flows::new();
        let (x, y, z) = (3, 1, 2);
        let ya = f.open(&mut pool, y, 11).unwrap();
        let zb = f.open(&mut pool, z, 12).unwrap();
        let (a, b) = (ya.port, zb.port);
        // X shares a (b is taken toward .12), then collides toward .11 on a: detour to b.
        let x12 = f.open(&mut pool, x, 12).unwrap();
        assert_eq!((x12.port, x12.moved), (a, false));
        let x11 = f.open(&mut pool, x, 11).unwrap();
        assert_eq!((x11.port, x11.moved), (b, true));
        let x13 = f.open(&mut pool, x, 13).unwrap();
        assert_eq!((x13.port, x13.moved), (a, false), "the mapping is still a");
        assert_eq!(
            (pool.mappings(), pool.held_by(Ipv4Addr::new(198, 18, 0, x))),
            (4, 2)
        );
        assert_eq!(
            (pool.slices[0][0].users(a), pool.slices[0][0].users(b)),
            (2, 2)
        );
        // X's mapping ends (its flows on a close); the detour on b lives on.
        f.close(&mut pool, x, 12, x12);
        f.close(&mut pool, x, 13, x13);
        assert_eq!((pool.mappings(), pool.slices[0][0].users(a)), (3, 1));
        // Y talks to .14 from a; X to .14 can only get b, where it already holds an entry:
        // it joins that entry, which becomes its mapping (no new entry, no new user).
        let y14 = f.open(&mut pool, y, 14).unwrap();
        let x14 = f.open(&mut pool, x, 14).unwrap();
        assert_eq!((x14.port, x14.moved), (b, false));
        assert_eq!((pool.mappings(), pool.slices[0][0].users(b)), (3, 2));
        assert_eq!(pool.held_by(Ipv4Addr::new(198, 18, 0, x)), 1);
        let x15 = f.open(&mut pool, x, 15).unwrap();
        assert_eq!((x15.port, x15.moved), (b, false), "the mapping is now b");
        // Everything closes: nothing is left.
        for (i, d, g) in [
            (y, 11, ya),
            (z, 12, zb),
            (x, 11, x11),
            (y, 14, y14),
            (x, 14, x14),
            (x, 15, x15),
        ] {
            f.close(&mut pool, i, d, g);
        }
        assert_eq!(pool.mappings(), 0);
        assert_eq!(pool.holders().count(), 0);
        assert_eq!(pool.utilisation(0, 6), (0, 2));
    }

    #[test]
    fn a_shared_eim_scan_that_failed_is_retried_after_any_flow_ends() {
        let mut pool = shared_pool(2);
        let f = Flows::new();
        let ya = f.open(&mut pool, 1, 11).unwrap();
        let _zb = f.open(&mut pool, 2, 11).unwrap();
        // Both ports are taken toward .11: a third endpoint fails, and again without a scan.
        let probes = Cell::new(0);
        let taken = |_: Ipv4Addr, p: u16| {
            probes.set(probes.get() + 1);
            f.0.borrow()
                .contains(&(p, u32::from(Ipv4Addr::new(203, 0, 113, 11))))
        };
        assert_eq!(
            pool.allocate(&flow(3, 11), 0, taken),
            Err(AllocError::OutOfPorts)
        );
        let first = probes.get();
        assert!(first >= 2);
        assert_eq!(
            pool.allocate(&flow(3, 11), 0, taken),
            Err(AllocError::OutOfPorts)
        );
        assert_eq!(probes.get(), first, "no rescan");
        // Y's flow to .11 ends while Y keeps its mapping (a flow to .12): no port is freed,
        // but a is usable toward .11 again, and the next attempt scans and finds it.
        let y12 = f.open(&mut pool, 1, 12).unwrap();
        assert_eq!(y12.port, ya.port);
        f.close(&mut pool, 1, 11, ya);
        assert_eq!(pool.utilisation(0, 6), (2, 2));
        assert_eq!(f.open(&mut pool, 3, 11).unwrap().port, ya.port);
    }

    #[test]
    fn a_taken_over_port_changes_hands_without_looking_free_and_a_failed_scan_stands() {
        let mut pool = shared_pool(2);
        let f = Flows::new();
        let a = f.open(&mut pool, 1, 11).unwrap();
        let _b = f.open(&mut pool, 2, 11).unwrap();
        let probes = Cell::new(0);
        let taken = |_: Ipv4Addr, p: u16| {
            probes.set(probes.get() + 1);
            f.0.borrow()
                .contains(&(p, u32::from(Ipv4Addr::new(203, 0, 113, 11))))
        };
        // Both ports are taken toward .11: endpoint 3 is refused after one scan.
        assert_eq!(
            pool.allocate(&flow(3, 11), 0, taken),
            Err(AllocError::OutOfPorts)
        );
        let scanned = probes.get();
        // Endpoint 1's flow has closed: endpoint 3 takes its port over, then it is evicted.
        let g = pool.allocate_reclaimed(&flow(3, 11), a.addr_idx, a.port);
        assert_eq!(g.map(|g| (g.port, g.moved)), Ok((a.port, false)));
        assert_eq!(pool.slices[0][0].users(a.port), 2, "both, for a moment");
        pool.release_reclaimed(&flow(1, 11), a.addr_idx, a.port, 0);
        assert_eq!(pool.slices[0][0].users(a.port), 1);
        assert_eq!(pool.utilisation(0, 6), (2, 2), "the port never went free");
        assert_eq!(pool.mappings(), 2);
        assert_eq!(pool.held_by(Ipv4Addr::new(198, 18, 0, 1)), 0);
        assert_eq!(pool.held_by(Ipv4Addr::new(198, 18, 0, 3)), 1);
        // Endpoint 3's mapping is that port, toward any destination.
        assert_eq!(pool.mapping_of(&flow(3, 12)), Some((0, a.port)));
        // The tuple toward .11 changed hands, nothing else: still no port toward .11, and
        // no rescan to find that out.
        assert_eq!(
            pool.allocate(&flow(4, 11), 0, taken),
            Err(AllocError::OutOfPorts)
        );
        assert_eq!(probes.get(), scanned, "no rescan");
    }

    #[test]
    fn a_takeover_joins_the_endpoints_own_entry_and_respects_the_quota() {
        let cfg = NatConfig {
            public_addrs: vec![Ipv4Addr::new(203, 0, 113, 1)],
            port_min: 3000,
            port_max: 3001,
            reuse_cooldown: 0,
            per_host_quota: Some(1),
            ..NatConfig::default()
        };
        let mut pool = SnatPool::new(&cfg, 0, 1, 64, 1);
        let f = Flows::new();
        let a = f.open(&mut pool, 1, 11).unwrap();
        let b = f.open(&mut pool, 2, 12).unwrap();
        // Endpoint 2 (mapping b) takes over a toward .11: a second entry, over its quota.
        assert_eq!(
            pool.allocate_reclaimed(&flow(2, 11), a.addr_idx, a.port),
            Err(AllocError::HostQuota)
        );
        // Endpoint 1 holds the entry on a (its mapping): joining it is no new mapping.
        let g = pool
            .allocate_reclaimed(&flow(1, 13), a.addr_idx, a.port)
            .unwrap();
        assert_eq!((g.port, g.moved), (a.port, false));
        assert_eq!((pool.mappings(), pool.slices[0][0].users(a.port)), (2, 1));
        // Toward b, endpoint 1 would be a detour off its mapping: over the quota too.
        assert_eq!(
            pool.allocate_reclaimed(&flow(1, 12), b.addr_idx, b.port),
            Err(AllocError::HostQuota)
        );
        // A free port is never taken over.
        let mut cfg2 = cfg.clone();
        cfg2.port_max = 3002;
        let mut pool2 = SnatPool::new(&cfg2, 0, 1, 64, 1);
        let used: Vec<u16> = (0..2)
            .map(|i| pool2.allocate(&flow(i, 11), 0, |_, _| false).unwrap().port)
            .collect();
        let free = (3000..=3002).find(|p| !used.contains(p)).unwrap();
        assert_eq!(
            pool2.allocate_reclaimed(&flow(5, 11), 0, free),
            Err(AllocError::OutOfPorts)
        );
    }

    #[test]
    fn strict_eim_hands_over_only_a_port_the_closed_flow_holds_alone() {
        let cfg = NatConfig {
            public_addrs: vec![Ipv4Addr::new(203, 0, 113, 1)],
            port_min: 3000,
            port_max: 3001,
            reuse_cooldown: 0,
            port_sharing: false,
            ..NatConfig::default()
        };
        let mut pool = SnatPool::new(&cfg, 0, 1, 64, 1);
        let f = Flows::new();
        let a = f.open(&mut pool, 1, 11).unwrap();
        let a12 = f.open(&mut pool, 1, 12).unwrap();
        assert_eq!(a12.port, a.port);
        let b = f.open(&mut pool, 2, 11).unwrap();
        // Endpoint 1 still talks to .12 from a: handing a over would make two holders.
        assert!(!pool.reclaimable(&flow(1, 11), a.addr_idx, a.port));
        assert!(pool.reclaimable(&flow(2, 11), b.addr_idx, b.port));
        // With sharing (or APDM) any closed flow's port may be handed over.
        let mut shared = shared_pool(2);
        let g = Flows::new();
        let x = g.open(&mut shared, 1, 11).unwrap();
        g.open(&mut shared, 1, 12).unwrap();
        assert!(shared.reclaimable(&flow(1, 11), x.addr_idx, x.port));
    }

    #[test]
    fn strict_eim_never_shares_a_port() {
        let cfg = NatConfig {
            public_addrs: vec![Ipv4Addr::new(203, 0, 113, 1)],
            port_min: 3000,
            port_max: 3001,
            reuse_cooldown: 0,
            port_sharing: false,
            ..NatConfig::default()
        };
        let mut pool = SnatPool::new(&cfg, 0, 1, 64, 1);
        let f = Flows::new();
        f.open(&mut pool, 1, 11).unwrap();
        f.open(&mut pool, 2, 11).unwrap();
        assert_eq!(f.open(&mut pool, 3, 12), Err(AllocError::OutOfPorts));
        assert_eq!(pool.utilisation(0, 6), (2, 2));
    }
}
