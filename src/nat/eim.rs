//! The endpoint-independent mapping table: inside (address, port, protocol) -> public
//! (address, port), with a count of the flows that share it.
//!
//! Open addressing with linear probing over 16-byte slots that hold the whole mapping, so a
//! lookup reads one cache line (hashbrown reads its control bytes and its bucket as two), and
//! that line can be prefetched from the hash alone ([`EimTable::home`]) before a batch of new
//! flows is processed. A mapping is held by at least one flow, and the table has 3 slots per 2
//! flows the worker may track, so load stays at most 2/3 (24 bytes per flow; a power-of-two
//! size would cost up to twice that); the home slot is found by multiply-shift instead of a
//! mask. Deletion shifts later entries back, so there are no tombstones. Allocated and written
//! once up front: nothing allocates later.
//!
//! An inside endpoint has at most one *primary* entry: its endpoint-independent mapping, the
//! one new flows toward any destination reuse. When that mapping's reply tuple toward a
//! destination is taken (another holder of a shared port already talks to it), the flow gets
//! another port, recorded as a *secondary* entry of the same endpoint: found only by its exact
//! public (address, port), never by the lookup of new flows, so the primary is neither
//! replaced nor shadowed. There is at most one entry per (endpoint, public address, port):
//! a flow that lands on a port its endpoint already holds adds a reference to that entry.
//! Every flow holds one reference on exactly one entry, so the table never holds more entries
//! than flows, and port sharing costs no memory (the flag sits in what was padding).

use crate::conntrack::probe;

/// One mapping. `refs == 0` marks an empty slot (a live mapping is held by a flow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct Mapping {
    pub inside: u32,
    pub port: u16,
    pub proto: u8,
    pub addr_idx: u8,
    pub public_port: u16,
    /// The endpoint's endpoint-independent mapping (false: a flow's detour off it).
    pub primary: bool,
    _pad: u8,
    /// Flows holding this entry.
    pub refs: u32,
}

const _: () = assert!(std::mem::size_of::<Mapping>() == 16);

impl Mapping {
    /// A primary mapping held by one flow.
    pub fn new(inside: u32, port: u16, proto: u8, addr_idx: u8, public_port: u16) -> Self {
        Mapping {
            inside,
            port,
            proto,
            addr_idx,
            public_port,
            primary: true,
            _pad: 0,
            refs: 1,
        }
    }
    /// The same entry as a secondary one (a detour of one endpoint's flows off its mapping).
    pub fn secondary(mut self) -> Self {
        self.primary = false;
        self
    }
    #[inline]
    fn is(&self, inside: u32, port: u16, proto: u8) -> bool {
        self.refs != 0 && self.inside == inside && self.port == port && self.proto == proto
    }
}

/// The table. Hashes are computed by the caller (seeded: attackers choose inside ports).
#[derive(Debug)]
pub struct EimTable {
    slots: Vec<Mapping>,
    len: usize,
}

impl EimTable {
    /// Room for `entries` mappings at load <= 2/3 (0 entries: a minimal table, for APDM).
    /// `advise(addr, bytes)` sees the memory before it is first written (huge pages); it is
    /// then written once, so the packet path takes no page fault here.
    pub fn new(entries: usize, advise: Option<&dyn Fn(usize, usize)>) -> Self {
        let cap = (entries.max(5) * 3 / 2).min(u32::MAX as usize);
        let mut slots: Vec<Mapping> = Vec::with_capacity(cap);
        if let Some(a) = advise {
            a(
                slots.as_mut_ptr() as usize,
                cap * std::mem::size_of::<Mapping>(),
            );
        }
        slots.resize(cap, Mapping::default());
        EimTable { slots, len: 0 }
    }

    /// The slot a hash starts probing at: the top 32 bits scaled to the table size.
    #[inline]
    fn home_slot(&self, h: u64) -> usize {
        probe::home((h >> 32) as u32, self.slots.len())
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        probe::next(i, self.slots.len())
    }

    /// Bytes of memory the table holds.
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Mapping>()
    }

    /// Entries held (primary and secondary).
    pub fn len(&self) -> usize {
        self.len
    }

    /// The line a lookup of hash `h` reads first, for prefetching.
    #[inline]
    pub fn home(&self, h: u64) -> *const u8 {
        self.slots[self.home_slot(h)..].as_ptr().cast()
    }

    /// The first slot of (inside, port, proto)'s cluster that `want` accepts, if any.
    #[inline]
    fn position(
        &self,
        h: u64,
        inside: u32,
        port: u16,
        proto: u8,
        want: impl Fn(&Mapping) -> bool,
    ) -> Option<usize> {
        let mut i = self.home_slot(h);
        loop {
            let s = &self.slots[i];
            if s.refs == 0 {
                return None;
            }
            if s.is(inside, port, proto) && want(s) {
                return Some(i);
            }
            i = self.next(i);
        }
    }

    /// The primary mapping of (inside, port, proto): the one new flows reuse.
    #[inline]
    pub fn find_mut(&mut self, h: u64, inside: u32, port: u16, proto: u8) -> Option<&mut Mapping> {
        let i = self.position(h, inside, port, proto, |m| m.primary)?;
        Some(&mut self.slots[i])
    }

    /// The primary mapping of (inside, port, proto), read only.
    #[inline]
    pub fn find(&self, h: u64, inside: u32, port: u16, proto: u8) -> Option<&Mapping> {
        let i = self.position(h, inside, port, proto, |m| m.primary)?;
        Some(&self.slots[i])
    }

    /// The entry of (inside, port, proto) on public (`addr_idx`, `public_port`), read only.
    #[inline]
    pub fn find_exact(
        &self,
        h: u64,
        inside: u32,
        port: u16,
        proto: u8,
        (addr_idx, public_port): (u8, u16),
    ) -> Option<&Mapping> {
        let i = self.position(h, inside, port, proto, |m| {
            m.addr_idx == addr_idx && m.public_port == public_port
        })?;
        Some(&self.slots[i])
    }

    /// The entry of (inside, port, proto) on public (`addr_idx`, `public_port`), primary or
    /// not.
    #[inline]
    pub fn find_exact_mut(
        &mut self,
        h: u64,
        inside: u32,
        port: u16,
        proto: u8,
        (addr_idx, public_port): (u8, u16),
    ) -> Option<&mut Mapping> {
        let i = self.position(h, inside, port, proto, |m| {
            m.addr_idx == addr_idx && m.public_port == public_port
        })?;
        Some(&mut self.slots[i])
    }

    /// Inserts `m` (hash `h`). The caller keeps the invariants: at most one primary entry per
    /// endpoint and one entry per (endpoint, public address, port); [`EimTable::release`]
    /// tells an endpoint's entries apart by their public side. False when `m` holds no
    /// reference or the table is full, which the sizing rules out (it is never grown on the
    /// packet path).
    #[inline]
    pub fn insert(&mut self, h: u64, m: Mapping) -> bool {
        if m.refs == 0 || self.len + 1 >= self.slots.len() {
            return false;
        }
        let mut i = self.home_slot(h);
        while self.slots[i].refs != 0 {
            i = self.next(i);
        }
        self.slots[i] = m;
        self.len += 1;
        true
    }

    /// Drops one reference to the mapping of (inside, port, proto) to public
    /// (`addr_idx`, `public_port`); removes it when that was the last. `hash_of(m)` recomputes
    /// a stored mapping's hash (to shift entries back). Returns the references left, or None
    /// when there was no such mapping.
    pub fn release(
        &mut self,
        h: u64,
        inside: u32,
        port: u16,
        proto: u8,
        (addr_idx, public_port): (u8, u16),
        hash_of: impl Fn(&Mapping) -> u64,
    ) -> Option<u32> {
        let i = self.position(h, inside, port, proto, |m| {
            m.addr_idx == addr_idx && m.public_port == public_port
        })?;
        if self.slots[i].refs > 1 {
            self.slots[i].refs -= 1;
            return Some(self.slots[i].refs);
        }
        // Backward shift: move later entries of the cluster into the hole unless their home
        // lies cyclically in (hole, j].
        let mut hole = i;
        let mut j = self.next(i);
        loop {
            let s = self.slots[j];
            if s.refs == 0 {
                break;
            }
            let home = self.home_slot(hash_of(&s));
            if !probe::stays(hole, home, j) {
                self.slots[hole] = s;
                hole = j;
            }
            j = self.next(j);
        }
        self.slots[hole] = Mapping::default();
        self.len -= 1;
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A deliberately weak hash (few distinct homes, near the end of the 24-slot table) so
    /// clusters form and wrap around.
    fn weak(inside: u32, port: u16, proto: u8) -> u64 {
        let slot = (u64::from(inside) * 31 + u64::from(port) * 7 + u64::from(proto)) % 5 + 18;
        // The home slot is (h >> 32) * 24 >> 32: aim at `slot`'s range.
        ((slot << 32) / 24 + 1) << 32
    }

    proptest! {
        /// Behaves like a map with reference counts under random acquires and releases.
        #[test]
        fn behaves_like_a_counted_map(ops in proptest::collection::vec((any::<bool>(), 0u32..6, 0u16..6, prop_oneof![Just(6u8), Just(17u8)]), 0..400)) {
            let mut t = EimTable::new(16, None);
            let mut model: HashMap<(u32, u16, u8), (u16, u32)> = HashMap::new();
            for (n, (acquire, inside, port, proto)) in ops.into_iter().enumerate() {
                let h = weak(inside, port, proto);
                let key = (inside, port, proto);
                if acquire {
                    if let Some(m) = t.find_mut(h, inside, port, proto) {
                        m.refs += 1;
                        model.get_mut(&key).unwrap().1 += 1;
                    } else if model.len() < 16 {
                        prop_assert!(!model.contains_key(&key));
                        let public = 1000 + n as u16;
                        prop_assert!(t.insert(h, Mapping::new(inside, port, proto, 0, public)));
                        model.insert(key, (public, 1));
                    }
                } else {
                    let public = model.get(&key).map_or(0, |e| e.0);
                    let left = t.release(h, inside, port, proto, (0, public), |m| weak(m.inside, m.port, m.proto));
                    match model.get_mut(&key) {
                        Some(e) => {
                            e.1 -= 1;
                            prop_assert_eq!(left, Some(e.1));
                            if e.1 == 0 {
                                model.remove(&key);
                            }
                        }
                        None => prop_assert_eq!(left, None),
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                for (&(i, p, pr), &(public, refs)) in &model {
                    let m = *t.find_mut(weak(i, p, pr), i, p, pr).unwrap();
                    prop_assert_eq!((m.public_port, m.refs), (public, refs));
                }
            }
        }
    }

    #[test]
    fn the_weak_hash_aims_near_the_end_so_clusters_wrap() {
        let t = EimTable::new(16, None);
        assert_eq!(t.slots.len(), 24);
        for inside in 0..6 {
            for port in 0..6 {
                let s = t.home_slot(weak(inside, port, 6));
                assert!((18..23).contains(&s), "{s}");
            }
        }
    }

    #[test]
    fn two_mappings_of_one_endpoint_are_released_by_their_own_port() {
        let mut t = EimTable::new(8, None);
        let h = weak(1, 1000, 6);
        let hash = |m: &Mapping| weak(m.inside, m.port, m.proto);
        assert!(t.insert(h, Mapping::new(1, 1000, 6, 0, 5000)));
        t.find_mut(h, 1, 1000, 6).unwrap().refs += 1;
        // The first one's reply tuple was taken: a secondary entry for the same endpoint,
        // which the lookup of new flows does not see.
        assert!(t.insert(h, Mapping::new(1, 1000, 6, 0, 6000).secondary()));
        assert_eq!(t.find_mut(h, 1, 1000, 6).unwrap().public_port, 5000);
        assert_eq!(
            t.find_exact_mut(h, 1, 1000, 6, (0, 6000)).unwrap().refs,
            1,
            "found by its exact public side"
        );
        assert_eq!(t.release(h, 1, 1000, 6, (0, 6000), hash), Some(0));
        assert_eq!(t.release(h, 1, 1000, 6, (0, 6000), hash), None);
        assert_eq!(t.find_mut(h, 1, 1000, 6).unwrap().refs, 2);
        assert_eq!(t.release(h, 1, 1000, 6, (0, 5000), hash), Some(1));
        assert_eq!(t.release(h, 1, 1000, 6, (0, 5000), hash), Some(0));
        assert!(t.find_mut(h, 1, 1000, 6).is_none());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_lookup_of_new_flows_skips_secondaries_before_the_primary() {
        let mut t = EimTable::new(8, None);
        let h = weak(2, 2000, 17);
        // The endpoint's mapping ended while a detour lived on; a new mapping came later.
        assert!(t.insert(h, Mapping::new(2, 2000, 17, 0, 7000).secondary()));
        assert!(
            t.find_mut(h, 2, 2000, 17).is_none(),
            "no mapping: only a detour"
        );
        assert!(t.insert(h, Mapping::new(2, 2000, 17, 0, 7001)));
        assert_eq!(t.find_mut(h, 2, 2000, 17).unwrap().public_port, 7001);
        assert!(!t.find_exact_mut(h, 2, 2000, 17, (0, 7000)).unwrap().primary);
        assert!(t.find_exact_mut(h, 2, 2000, 17, (1, 7000)).is_none());
    }

    #[test]
    fn refuses_to_fill_the_last_slot() {
        let mut t = EimTable::new(1, None); // 7 slots
        for i in 0..6 {
            assert!(t.insert(0, Mapping::new(i, 1, 6, 0, 1)));
        }
        assert!(!t.insert(0, Mapping::new(99, 1, 6, 0, 1)));
        assert!(t.find_mut(0, 99, 1, 6).is_none());
    }
}
