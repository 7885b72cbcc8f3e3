//! The flow index: open addressing with linear probing over 8-byte slots, each holding a
//! 32-bit hash tag and a slab entry. A hit reads one cache line of index (8 slots) and then the
//! flow; hashbrown needs its control bytes and its bucket as two separate lines. Load stays at
//! most 1/2, deletion shifts later entries back (no tombstones), and the memory is one `Vec`
//! that the caller may back with huge pages. The home slot is found by multiply-shift rather
//! than a mask, so the size is exactly twice the entries (a power of two would cost up to
//! twice the memory: 64 instead of 32 bytes per flow).

const EMPTY: u64 = u64::MAX;

/// Index from a 32-bit key hash to slab entries (`u32`, never `u32::MAX`).
#[derive(Debug)]
pub struct FlowIndex {
    slots: Vec<u64>,
    len: usize,
}

#[inline]
fn pack(h: u32, e: u32) -> u64 {
    (u64::from(h) << 32) | u64::from(e)
}

impl FlowIndex {
    /// Room for `entries` at load <= 1/2. `advise(addr, bytes)` sees the memory before it is
    /// first written (to ask for huge pages); the memory is then written once (pre-faulted).
    pub fn new(entries: usize, advise: Option<&dyn Fn(usize, usize)>) -> Self {
        let cap = (entries.max(4) * 2).min(u32::MAX as usize);
        let mut slots: Vec<u64> = Vec::with_capacity(cap);
        if let Some(a) = advise {
            a(slots.as_mut_ptr() as usize, cap * 8);
        }
        slots.resize(cap, EMPTY);
        FlowIndex { slots, len: 0 }
    }

    /// The slot a hash starts probing at: the hash scaled to the table size.
    #[inline]
    fn home_slot(&self, h: u32) -> usize {
        super::probe::home(h, self.slots.len())
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        super::probe::next(i, self.slots.len())
    }

    /// Bytes of memory the index holds.
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * 8
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Where a lookup of hash `h` starts reading: the caller may prefetch this line before it
    /// looks up (batched lookups overlap their cache misses this way).
    #[inline]
    pub fn home(&self, h: u32) -> *const u8 {
        self.slots[self.home_slot(h)..].as_ptr().cast()
    }

    /// The first entry stored with hash `h`, without comparing keys: a guess at the entry a
    /// lookup will read, for prefetching it (a 32-bit tag collision only wastes the prefetch).
    #[inline]
    pub fn first_tagged(&self, h: u32) -> Option<u32> {
        let mut i = self.home_slot(h);
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return None;
            }
            if (s >> 32) as u32 == h {
                return Some(s as u32);
            }
            i = self.next(i);
        }
    }

    /// The first entry with hash `h` for which `eq` holds.
    #[inline]
    pub fn find(&self, h: u32, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut i = self.home_slot(h);
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return None;
            }
            if (s >> 32) as u32 == h && eq(s as u32) {
                return Some(s as u32);
            }
            i = self.next(i);
        }
    }

    /// Inserts entry `e` with hash `h` (the caller knows it is absent). Never grows: the
    /// capacity was sized for the flow limit.
    #[inline]
    pub fn insert(&mut self, h: u32, e: u32) {
        debug_assert!(self.len < self.slots.len() / 2);
        let mut i = self.home_slot(h);
        while self.slots[i] != EMPTY {
            i = self.next(i);
        }
        self.slots[i] = pack(h, e);
        self.len += 1;
    }

    /// Removes entry `e` (stored with hash `h`); returns whether it was present.
    pub fn remove(&mut self, h: u32, e: u32) -> bool {
        let mut i = self.home_slot(h);
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return false;
            }
            if s == pack(h, e) {
                break;
            }
            i = self.next(i);
        }
        // Backward-shift: move later entries of the cluster into the hole when their home
        // position does not lie cyclically in (hole, j].
        let mut hole = i;
        let mut j = self.next(i);
        loop {
            let s = self.slots[j];
            if s == EMPTY {
                break;
            }
            let home = self.home_slot((s >> 32) as u32);
            if !super::probe::stays(hole, home, j) {
                self.slots[hole] = s;
                hole = j;
            }
            j = self.next(j);
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Matches a HashMap under random inserts and removes with colliding hashes.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((any::<bool>(), 0u32..64, 0u32..8), 0..400)) {
            let mut idx = FlowIndex::new(64, None);
            let mut model: HashMap<u32, u32> = HashMap::new();
            for (ins, e, h) in ops {
                // Small hash space: many collisions and wrapped clusters.
                let h = h.wrapping_mul(0x1000_0001) | (h << 29);
                if ins && !model.contains_key(&e) && model.len() < 64 {
                    idx.insert(h, e);
                    model.insert(e, h);
                } else if let Some(h) = model.remove(&e) {
                    prop_assert!(idx.remove(h, e));
                }
                for (&e, &h) in &model {
                    prop_assert_eq!(idx.find(h, |x| x == e), Some(e));
                }
                prop_assert_eq!(idx.len(), model.len());
            }
        }
    }
}
