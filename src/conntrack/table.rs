//! The per-worker flow table: a slab of flows, one hash index holding both directions of each
//! flow, and intrusive LRU lists (one per timeout class) so expiry is O(1) and needs no
//! scavenger thread. Everything is allocated up front: inserting never allocates.

use std::hash::BuildHasher;

use super::index::FlowIndex;

use super::key::FlowKey;
use super::tcp::{Dir, TcpTrack};
use super::Timeouts;
use crate::time::Nanos;

const NIL: u32 = u32::MAX;
const NS: u64 = 1_000_000_000;
/// A touched flow moves to its list's tail at most this often: bounded lateness (a flow lives
/// between its timeout and its timeout plus this) in exchange for not writing three cache
/// lines on every packet.
const RELINK_GRANULARITY: Nanos = NS;

/// The timeout class of a flow; each class is one LRU list with one timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TimeoutClass {
    TcpSyn,
    TcpEstablished,
    TcpClosing,
    TcpTimeWait,
    TcpClosed,
    Udp,
    Icmp,
}

impl TimeoutClass {
    pub const COUNT: usize = 7;
    pub const ALL: [TimeoutClass; Self::COUNT] = [
        TimeoutClass::TcpSyn,
        TimeoutClass::TcpEstablished,
        TimeoutClass::TcpClosing,
        TimeoutClass::TcpTimeWait,
        TimeoutClass::TcpClosed,
        TimeoutClass::Udp,
        TimeoutClass::Icmp,
    ];

    /// The class for a TCP flow in `t`'s state.
    pub fn of_tcp(t: &TcpTrack) -> Self {
        use super::tcp::TcpState::*;
        match t.state {
            SynSent => TimeoutClass::TcpSyn,
            Established => TimeoutClass::TcpEstablished,
            Closing => TimeoutClass::TcpClosing,
            TimeWait => TimeoutClass::TcpTimeWait,
            Closed => TimeoutClass::TcpClosed,
        }
    }

    fn seconds(self, t: &Timeouts) -> u32 {
        match self {
            TimeoutClass::TcpSyn => t.tcp_syn,
            TimeoutClass::TcpEstablished => t.tcp_established,
            TimeoutClass::TcpClosing => t.tcp_closing,
            TimeoutClass::TcpTimeWait => t.tcp_time_wait,
            TimeoutClass::TcpClosed => t.tcp_rst,
            TimeoutClass::Udp => t.udp,
            TimeoutClass::Icmp => t.icmp,
        }
    }
}

/// Time in the flow table is kept in ticks of 2^26 ns (67 ms): a u32 lasts nine years.
const TICK_SHIFT: u32 = 26;
const TICK: Nanos = 1 << TICK_SHIFT;

#[inline]
fn ticks(now: Nanos) -> u32 {
    (now >> TICK_SHIFT) as u32
}

/// One tracked flow: the tuple of its first packet (`orig`) and the tuple its answers arrive
/// with (`reply`). A packet matching `orig` is rewritten to look like `reply` reversed, and the
/// other way round: SNAT, DNAT, both (hairpin) or neither (SNAT-exempt) fall out of this.
///
/// Exactly one cache line, so a lookup hit touches one line of the slab.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct Flow {
    pub orig: FlowKey,
    pub reply: FlowKey,
    /// When the flow was last moved to its list's tail, in ticks.
    relinked_at: u32,
    /// When the flow was created, in whole seconds of the caller's clock.
    pub created_secs: u32,
    prev: u32,
    next: u32,
    pub packets: [u32; 2],
    /// The rule that allowed the flow, or the inspection deciding it: see [`FlowVerdict`].
    verdict: PackedVerdict,
    pub tcp: TcpTrack,
    class: TimeoutClass,
    /// Index of the SNAT address (when `reply.dst()` is one), for the port allocator.
    pub snat_idx: u8,
}

/// What decided a flow, or what is still deciding it (owned by the datapath).
///
/// A rule id and an inspection slot number are both small integers; each lives only in its
/// own variant, so one can never be read as the other (a revoked flow once released the
/// inspection slot numbered like its rule, which another flow held).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowVerdict {
    /// Allowed by rule `rule` (DNAT, network or application rule).
    Allowed { rule: u16 },
    /// Held for application inspection in slot `slot` of the worker's pool: no rule yet.
    Inspecting { kind: InspectKind, slot: u16 },
    /// Allowed by `rule` until a reloaded policy denied it: cut at its next packet.
    Revoked { rule: u16 },
}

/// What an inspected flow's first payload is read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InspectKind {
    /// A TCP stream: TLS ClientHello or HTTP request head.
    Tcp,
    /// QUIC Initial datagrams.
    Quic,
}

impl FlowVerdict {
    /// The rule that allowed the flow (None while it is inspected).
    pub fn rule(self) -> Option<u16> {
        match self {
            FlowVerdict::Allowed { rule } | FlowVerdict::Revoked { rule } => Some(rule),
            FlowVerdict::Inspecting { .. } => None,
        }
    }
    /// The inspection slot the flow holds (None once it is decided).
    pub fn slot(self) -> Option<u16> {
        match self {
            FlowVerdict::Inspecting { slot, .. } => Some(slot),
            _ => None,
        }
    }
}

/// [`FlowVerdict`] in three bytes (a Rust enum with a u16 would take four, and a flow is
/// exactly one cache line); only [`Flow::verdict`] and [`Flow::set_verdict`] read and write it.
#[derive(Clone, Copy, Debug)]
struct PackedVerdict {
    tag: u8,
    value: [u8; 2],
}

impl PackedVerdict {
    const ALLOWED: u8 = 0;
    const INSPECT_TCP: u8 = 1;
    const INSPECT_QUIC: u8 = 2;
    const REVOKED: u8 = 3;

    const fn pack(v: FlowVerdict) -> Self {
        let (tag, n) = match v {
            FlowVerdict::Allowed { rule } => (Self::ALLOWED, rule),
            FlowVerdict::Inspecting {
                kind: InspectKind::Tcp,
                slot,
            } => (Self::INSPECT_TCP, slot),
            FlowVerdict::Inspecting {
                kind: InspectKind::Quic,
                slot,
            } => (Self::INSPECT_QUIC, slot),
            FlowVerdict::Revoked { rule } => (Self::REVOKED, rule),
        };
        PackedVerdict {
            tag,
            value: n.to_ne_bytes(),
        }
    }

    #[inline]
    fn unpack(self) -> FlowVerdict {
        let n = u16::from_ne_bytes(self.value);
        match self.tag {
            Self::INSPECT_TCP => FlowVerdict::Inspecting {
                kind: InspectKind::Tcp,
                slot: n,
            },
            Self::INSPECT_QUIC => FlowVerdict::Inspecting {
                kind: InspectKind::Quic,
                slot: n,
            },
            Self::REVOKED => FlowVerdict::Revoked { rule: n },
            _ => FlowVerdict::Allowed { rule: n },
        }
    }
}

const _: () = assert!(std::mem::size_of::<Flow>() == 64);

impl Flow {
    const DEAD: Flow = Flow {
        orig: FlowKey::ZERO,
        reply: FlowKey::ZERO,
        relinked_at: 0,
        created_secs: 0,
        prev: NIL,
        next: NIL,
        packets: [0; 2],
        verdict: PackedVerdict::pack(FlowVerdict::Allowed { rule: 0 }),
        tcp: TcpTrack::NEW,
        class: TimeoutClass::Udp,
        snat_idx: 0,
    };

    /// What decided the flow, or what is deciding it.
    #[inline]
    pub fn verdict(&self) -> FlowVerdict {
        self.verdict.unpack()
    }
    #[inline]
    pub fn set_verdict(&mut self, v: FlowVerdict) {
        self.verdict = PackedVerdict::pack(v);
    }

    pub fn class(&self) -> TimeoutClass {
        self.class
    }
    /// The key for direction `d`.
    #[inline]
    pub fn key(&self, d: Dir) -> &FlowKey {
        match d {
            Dir::Orig => &self.orig,
            Dir::Reply => &self.reply,
        }
    }
    /// Seconds of idleness left at `now` (approximate to the relink granularity).
    pub fn expires_in(&self, now: Nanos, t: &Timeouts) -> u64 {
        deadline(self.relinked_at, self.class, t).saturating_sub(now) / NS
    }
}

/// When a flow relinked at `relinked` (ticks) in `class` expires: at least its timeout after
/// its last packet, at most that plus the relink granularity and one tick.
#[inline]
fn deadline(relinked: u32, class: TimeoutClass, t: &Timeouts) -> Nanos {
    (u64::from(relinked) << TICK_SHIFT)
        + u64::from(class.seconds(t)) * NS
        + RELINK_GRANULARITY
        + TICK
}

#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
    len: u32,
}

/// Why a flow could not be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("the flow table is full")]
    Full,
}

/// The most flows one table holds: the index stores `slab entry << 1 | direction` in 32 bits
/// and keeps its load at most 1/2 within a 32-bit slot count.
pub const MAX_FLOWS_PER_WORKER: u32 = 1 << 30;

/// The flow table of one worker. Not shared: no locks.
pub struct FlowTable {
    flows: Vec<Flow>,
    free: Vec<u32>,
    /// Entries are `slab index << 1 | direction`.
    index: FlowIndex,
    hasher: foldhash::fast::FixedState,
    lists: [List; TimeoutClass::COUNT],
    timeouts: Timeouts,
    max: u32,
    /// One past the highest slab index ever used: every live flow lies below it, so a walk of
    /// the table reads `high_water` slots, not the whole slab of `max`.
    high_water: u32,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("len", &self.len())
            .field("max", &self.max)
            .finish()
    }
}

impl FlowTable {
    /// A table for at most `max` flows, with a hash seeded by `seed` (attackers choose tuples).
    ///
    /// The slab is filled (and so faulted in) here, once: the packet path never takes a page
    /// fault or an allocation to admit a flow.
    pub fn new(max: u32, seed: u64, timeouts: Timeouts) -> Self {
        Self::with_advice(max, seed, timeouts, None)
    }

    /// Like [`FlowTable::new`]; `advise(addr, bytes)` sees each large region before it is
    /// first written, so the I/O layer can back it with huge pages (fewer TLB misses).
    pub fn with_advice(
        max: u32,
        seed: u64,
        timeouts: Timeouts,
        advise: Option<&dyn Fn(usize, usize)>,
    ) -> Self {
        let max = max.clamp(1, MAX_FLOWS_PER_WORKER);
        let mut flows: Vec<Flow> = Vec::with_capacity(max as usize);
        if let Some(a) = advise {
            a(
                flows.as_mut_ptr() as usize,
                max as usize * std::mem::size_of::<Flow>(),
            );
        }
        flows.resize(max as usize, Flow::DEAD);
        for (i, f) in flows.iter_mut().enumerate() {
            f.prev = i as u32;
            f.next = i as u32;
        }
        FlowTable {
            flows,
            free: (0..max).rev().collect(),
            index: FlowIndex::new(2 * max as usize, advise),
            hasher: foldhash::fast::FixedState::with_seed(seed),
            lists: [List {
                head: NIL,
                tail: NIL,
                len: 0,
            }; TimeoutClass::COUNT],
            timeouts,
            max,
            high_water: 0,
        }
    }

    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
    }
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }
    /// Flows currently tracked.
    pub fn len(&self) -> usize {
        self.max as usize - self.free.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn capacity(&self) -> usize {
        self.max as usize
    }
    /// Bytes of memory the table holds, as (flow slab, index, free list): all of it allocated
    /// up front for `capacity()` flows.
    pub fn memory_bytes(&self) -> (usize, usize, usize) {
        (
            self.flows.capacity() * std::mem::size_of::<Flow>(),
            self.index.memory_bytes(),
            self.free.capacity() * 4,
        )
    }
    /// Flows per timeout class.
    pub fn class_len(&self, c: TimeoutClass) -> usize {
        self.lists[c as usize].len as usize
    }

    #[inline]
    fn hash(&self, k: &FlowKey) -> u32 {
        (self.hasher.hash_one(k.words()) >> 32) as u32
    }

    /// The hash of tuple `k`, for the batch prefetch hooks below.
    #[inline]
    pub fn hash_of(&self, k: &FlowKey) -> u32 {
        self.hash(k)
    }

    /// The index line a lookup of hash `h` reads first (stage 1 of a batched lookup: the
    /// caller prefetches it for every packet of a batch, then looks them up).
    #[inline]
    pub fn index_line(&self, h: u32) -> *const u8 {
        self.index.home(h)
    }

    /// The flow line a lookup of hash `h` will most likely read (stage 2, once the index line
    /// is in cache); None when no entry carries the hash (a miss: a new flow).
    #[inline]
    pub fn flow_line(&self, h: u32) -> Option<*const u8> {
        let e = self.index.first_tagged(h)?;
        self.flows
            .get((e >> 1) as usize)
            .map(|f| (f as *const Flow).cast())
    }

    /// The slab line the `n`-th next insert will write (free slots are taken from the top of
    /// a stack), for prefetching ahead of a batch of new flows.
    #[inline]
    pub fn next_free_line(&self, n: usize) -> Option<*const u8> {
        let i = *self.free.get(self.free.len().checked_sub(n + 1)?)?;
        self.flows
            .get(i as usize)
            .map(|f| (f as *const Flow).cast())
    }

    /// Finds the flow a packet with tuple `k` belongs to, and its direction.
    #[inline]
    pub fn lookup(&self, k: &FlowKey) -> Option<(u32, Dir)> {
        let flows = &self.flows;
        self.index
            .find(self.hash(k), |e| {
                flows[(e >> 1) as usize].key(dir_of(e)) == k
            })
            .map(|e| (e >> 1, dir_of(e)))
    }

    /// True if some flow already uses tuple `k` in either direction.
    #[inline]
    pub fn contains(&self, k: &FlowKey) -> bool {
        self.lookup(k).is_some()
    }

    #[inline]
    pub fn get(&self, idx: u32) -> &Flow {
        &self.flows[idx as usize]
    }
    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> &mut Flow {
        &mut self.flows[idx as usize]
    }

    /// Inserts a flow. The caller guarantees neither tuple is present (it looked them up).
    pub fn insert(
        &mut self,
        orig: FlowKey,
        reply: FlowKey,
        class: TimeoutClass,
        now: Nanos,
    ) -> Result<u32, InsertError> {
        let flow = Flow {
            orig,
            reply,
            relinked_at: ticks(now),
            created_secs: (now / NS) as u32,
            class,
            ..Flow::DEAD
        };
        let Some(idx) = self.free.pop() else {
            return Err(InsertError::Full);
        };
        self.flows[idx as usize] = flow;
        self.high_water = self.high_water.max(idx + 1);
        let (ho, hr) = (self.hash(&orig), self.hash(&reply));
        self.index.insert(ho, idx << 1);
        if reply != orig {
            self.index.insert(hr, (idx << 1) | 1);
        }
        self.push_back(idx, class);
        Ok(idx)
    }

    /// Records activity: moves the flow to the tail of `class`'s list when its class changed
    /// or its position is older than the relink granularity.
    #[inline]
    pub fn touch(&mut self, idx: u32, class: TimeoutClass, now: Nanos) {
        let f = &self.flows[idx as usize];
        let t = ticks(now);
        if f.class == class && t.wrapping_sub(f.relinked_at) < (RELINK_GRANULARITY / TICK) as u32 {
            return;
        }
        self.unlink(idx);
        let f = &mut self.flows[idx as usize];
        f.relinked_at = t;
        f.class = class;
        self.push_back(idx, class);
    }

    /// Removes the flow and returns a copy of it (the caller releases its NAT resources).
    pub fn remove(&mut self, idx: u32) -> Flow {
        self.unlink(idx);
        let f = self.flows[idx as usize];
        self.unindex(&f.orig, idx << 1);
        if f.reply != f.orig {
            self.unindex(&f.reply, (idx << 1) | 1);
        }
        self.free.push(idx);
        // Mark the slot dead so iteration skips it.
        self.flows[idx as usize].prev = idx;
        self.flows[idx as usize].next = idx;
        f
    }

    fn unindex(&mut self, k: &FlowKey, entry: u32) {
        let h = self.hash(k);
        self.index.remove(h, entry);
    }

    /// The oldest flow whose timeout has passed, if any, in any class.
    pub fn oldest_expired(&self, now: Nanos) -> Option<u32> {
        for c in TimeoutClass::ALL {
            let head = self.lists[c as usize].head;
            if head == NIL {
                continue;
            }
            let f = &self.flows[head as usize];
            if deadline(f.relinked_at, c, &self.timeouts) <= now {
                return Some(head);
            }
        }
        None
    }

    /// The flows of `class`, oldest (least recently touched) first. Lazy: a caller that takes
    /// a few reads only those.
    pub fn oldest_in(&self, class: TimeoutClass) -> impl Iterator<Item = (u32, &Flow)> + '_ {
        let mut i = self.lists[class as usize].head;
        std::iter::from_fn(move || {
            if i == NIL {
                return None;
            }
            let idx = i;
            let f = &self.flows[idx as usize];
            i = f.next;
            Some((idx, f))
        })
    }

    /// Live flows, for the flow view and tests (not for the packet path).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Flow)> {
        self.flows[..self.high_water as usize]
            .iter()
            .enumerate()
            .filter(|(i, f)| !Self::is_dead(*i, f))
            .map(|(i, f)| (i as u32, f))
    }

    fn is_dead(i: usize, f: &Flow) -> bool {
        f.prev == i as u32 && f.next == i as u32
    }

    /// A bounded look at the table for statistics: at most `probes` slots read. When every
    /// slot that can hold a flow fits in `probes`, all of them (an exact census); otherwise a
    /// systematic sample: every `high_water / probes`-th slot from a start in `[0, stride)`
    /// given by `offset`, so the sample spreads over the whole slab and a burst of flows
    /// admitted together (neighbouring slots) is sampled in proportion. `visit` sees each live
    /// flow read; the return value is the number of slots read.
    pub fn census(&self, probes: u32, offset: u64, mut visit: impl FnMut(&Flow)) -> u32 {
        let hw = u64::from(self.high_water);
        let probes = u64::from(probes.max(1));
        if hw <= probes {
            for (i, f) in self.flows[..hw as usize].iter().enumerate() {
                if !Self::is_dead(i, f) {
                    visit(f);
                }
            }
            return hw as u32;
        }
        // Slot k * hw / probes + start, k < probes: evenly spaced, never past high_water.
        let start = offset % (hw / probes);
        for k in 0..probes {
            let i = (k * hw / probes + start) as usize;
            let f = &self.flows[i];
            if !Self::is_dead(i, f) {
                visit(f);
            }
        }
        probes as u32
    }

    fn push_back(&mut self, idx: u32, class: TimeoutClass) {
        let l = &mut self.lists[class as usize];
        let old_tail = l.tail;
        l.tail = idx;
        if old_tail == NIL {
            l.head = idx;
        }
        l.len += 1;
        let f = &mut self.flows[idx as usize];
        f.prev = old_tail;
        f.next = NIL;
        f.class = class;
        if old_tail != NIL {
            self.flows[old_tail as usize].next = idx;
        }
    }

    fn unlink(&mut self, idx: u32) {
        let (prev, next, class) = {
            let f = &self.flows[idx as usize];
            (f.prev, f.next, f.class)
        };
        let l = &mut self.lists[class as usize];
        if prev == NIL {
            l.head = next;
        } else {
            self.flows[prev as usize].next = next;
        }
        if next == NIL {
            l.tail = prev;
        } else {
            self.flows[next as usize].prev = prev;
        }
        l.len -= 1;
    }
}

#[inline]
fn dir_of(e: u32) -> Dir {
    if e & 1 == 0 {
        Dir::Orig
    } else {
        Dir::Reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn k(a: u8, p: u16) -> FlowKey {
        FlowKey::new(
            Ipv4Addr::new(198, 18, 0, a),
            Ipv4Addr::new(203, 0, 113, 10),
            p,
            80,
            6,
        )
    }

    #[test]
    fn a_verdict_reads_back_as_written() {
        let mut f = Flow::DEAD;
        for v in [
            FlowVerdict::Allowed { rule: 0 },
            FlowVerdict::Allowed { rule: u16::MAX },
            FlowVerdict::Inspecting {
                kind: InspectKind::Tcp,
                slot: 7,
            },
            FlowVerdict::Inspecting {
                kind: InspectKind::Quic,
                slot: 0x1234,
            },
            FlowVerdict::Revoked { rule: 7 },
        ] {
            f.set_verdict(v);
            assert_eq!(f.verdict(), v);
        }
        assert_eq!(FlowVerdict::Revoked { rule: 7 }.slot(), None);
        assert_eq!(FlowVerdict::Revoked { rule: 7 }.rule(), Some(7));
    }

    #[test]
    fn insert_lookup_remove_both_directions() {
        let mut t = FlowTable::new(4, 1, Timeouts::default());
        let o = k(11, 1000);
        let r = FlowKey::new(
            Ipv4Addr::new(203, 0, 113, 10),
            Ipv4Addr::new(203, 0, 113, 1),
            80,
            5000,
            6,
        );
        let i = t.insert(o, r, TimeoutClass::TcpSyn, 0).unwrap();
        assert_eq!(t.lookup(&o), Some((i, Dir::Orig)));
        assert_eq!(t.lookup(&r), Some((i, Dir::Reply)));
        assert_eq!(t.len(), 1);
        t.remove(i);
        assert_eq!(t.lookup(&o), None);
        assert_eq!(t.lookup(&r), None);
        assert_eq!(t.len(), 0);
        assert_eq!(t.iter().count(), 0);
    }

    #[test]
    fn full_table_refuses_and_expiry_order_is_lru() {
        let to = Timeouts {
            udp: 10,
            ..Timeouts::default()
        };
        let mut t = FlowTable::new(2, 1, to);
        let a = t
            .insert(k(1, 1), k(1, 1).reversed(), TimeoutClass::Udp, 0)
            .unwrap();
        let b = t
            .insert(k(2, 1), k(2, 1).reversed(), TimeoutClass::Udp, 0)
            .unwrap();
        assert_eq!(
            t.insert(k(3, 1), k(3, 1).reversed(), TimeoutClass::Udp, 0),
            Err(InsertError::Full)
        );
        // a is refreshed at 5 s: b becomes the oldest.
        t.touch(a, TimeoutClass::Udp, 5 * NS);
        assert_eq!(t.oldest_expired(10 * NS), None);
        assert_eq!(t.oldest_expired(11 * NS + NS / 10), Some(b));
        t.remove(b);
        assert_eq!(t.oldest_expired(11 * NS + NS / 10), None);
        assert_eq!(t.oldest_expired(16 * NS + NS / 10), Some(a));
    }

    #[test]
    fn a_class_lists_its_flows_oldest_first() {
        let mut t = FlowTable::new(4, 1, Timeouts::default());
        let ids: Vec<u32> = (1..=3)
            .map(|i| {
                t.insert(k(i, 1), k(i, 1).reversed(), TimeoutClass::TcpSyn, 0)
                    .unwrap()
            })
            .collect();
        for &i in &ids {
            t.touch(i, TimeoutClass::TcpTimeWait, NS);
        }
        // The first one is touched again later: it becomes the newest.
        t.touch(ids[0], TimeoutClass::TcpTimeWait, 3 * NS);
        let order: Vec<u32> = t
            .oldest_in(TimeoutClass::TcpTimeWait)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(order, vec![ids[1], ids[2], ids[0]]);
        assert_eq!(t.oldest_in(TimeoutClass::TcpSyn).count(), 0);
        t.remove(ids[2]);
        let order: Vec<u32> = t
            .oldest_in(TimeoutClass::TcpTimeWait)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(order, vec![ids[1], ids[0]]);
    }
}
