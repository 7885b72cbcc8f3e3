//! Compressed rule bitsets and per-field interval maps.
//!
//! A rule set is stored as a two-level bitset: `S` summary words (bit `w` set when data word `w`
//! is non-zero) followed by only the non-zero data words. All sets of one classifier live in one
//! arena (`Vec<u64>`) and are named by their offset. Intersecting sets walks the AND of the
//! summaries, so the cost follows the number of words where every field has a candidate, not the
//! rule count; the lowest set bit of the intersection is the first matching rule.

use std::collections::HashMap;

/// Arena of compressed sets over `n_rules` rules.
#[derive(Debug, Clone)]
pub struct SetArena {
    /// Number of data words (`ceil(n_rules / 64)`).
    words: usize,
    /// Number of summary words (`ceil(words / 64)`), at least 1.
    summary: usize,
    data: Vec<u64>,
    dedup: HashMap<Vec<u64>, u32>,
}

/// A set in a [`SetArena`] (its offset).
pub type SetId = u32;

impl SetArena {
    /// An arena for sets over `n_rules` rules. The empty set is always `SetArena::EMPTY`.
    pub fn new(n_rules: usize) -> SetArena {
        let words = n_rules.div_ceil(64);
        let summary = words.div_ceil(64).max(1);
        let mut a = SetArena {
            words,
            summary,
            data: Vec::new(),
            dedup: HashMap::new(),
        };
        let empty = a.insert_dense(&vec![0; words]);
        debug_assert_eq!(empty, Self::EMPTY);
        a
    }

    /// The empty set.
    pub const EMPTY: SetId = 0;

    /// Words of a dense bitset over this arena's rules.
    pub fn dense_words(&self) -> usize {
        self.words
    }

    /// Stores a dense bitset (`dense.len() == dense_words()`), deduplicated.
    pub fn insert_dense(&mut self, dense: &[u64]) -> SetId {
        let mut enc = vec![0u64; self.summary];
        for (w, &word) in dense.iter().enumerate() {
            if word != 0 {
                enc[w / 64] |= 1 << (w % 64);
                enc.push(word);
            }
        }
        if let Some(&id) = self.dedup.get(&enc) {
            return id;
        }
        let id = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        self.data.extend_from_slice(&enc);
        self.dedup.insert(enc, id);
        id
    }

    /// Stores the set of the given rule indices.
    pub fn insert_list(&mut self, rules: &[u32]) -> SetId {
        let mut dense = vec![0u64; self.words];
        for &r in rules {
            if let Some(w) = dense.get_mut(r as usize / 64) {
                *w |= 1 << (r % 64);
            }
        }
        self.insert_dense(&dense)
    }

    /// Drops the build-time dedup table.
    pub fn finish(&mut self) {
        self.dedup = HashMap::new();
        self.data.shrink_to_fit();
    }

    /// Memory held by the sets, in bytes.
    pub fn bytes(&self) -> usize {
        self.data.len() * 8
    }

    /// The lowest rule present in every set of `sets` (at most [`MAX_SETS`]). No allocation.
    pub fn first_common(&self, sets: &[SetId]) -> Option<u32> {
        let n = sets.len();
        if n == 0 || n > MAX_SETS {
            return None;
        }
        let mut off = [0usize; MAX_SETS];
        let mut base = [0usize; MAX_SETS];
        for (o, &s) in off.iter_mut().zip(sets) {
            *o = s as usize;
        }
        let data = &self.data[..];
        let mut sw = [0u64; MAX_SETS];
        let mut dense = [false; MAX_SETS];
        for s in 0..self.summary {
            // Summary bits a set with every data word non-zero has in this summary word.
            let tail = self.words - s * 64;
            let full = if tail >= 64 {
                !0u64
            } else {
                (1u64 << tail) - 1
            };
            let mut m = !0u64;
            for i in 0..n {
                sw[i] = data.get(off[i] + s).copied().unwrap_or(0);
                dense[i] = sw[i] == full;
                m &= sw[i];
            }
            if m == full && dense[..n].iter().all(|&d| d) {
                // Every set stores every data word here: AND the runs directly.
                let cnt = full.count_ones() as usize;
                let mut runs: [&[u64]; MAX_SETS] = [&[]; MAX_SETS];
                for i in 0..n {
                    let start = off[i] + self.summary + base[i];
                    runs[i] = data.get(start..start + cnt).unwrap_or(&[]);
                }
                for k in 0..cnt {
                    let mut acc = !0u64;
                    for r in &runs[..n] {
                        acc &= r.get(k).copied().unwrap_or(0);
                    }
                    if acc != 0 {
                        let w = s * 64 + k;
                        return u32::try_from(w * 64 + acc.trailing_zeros() as usize).ok();
                    }
                }
                m = 0;
            }
            while m != 0 {
                let b = m.trailing_zeros();
                let below = (1u64 << b) - 1;
                let mut acc = !0u64;
                for i in 0..n {
                    // Rank of data word b among this set's stored words (all stored: b itself).
                    let rank = if dense[i] {
                        b as usize
                    } else {
                        (sw[i] & below).count_ones() as usize
                    };
                    acc &= data
                        .get(off[i] + self.summary + base[i] + rank)
                        .copied()
                        .unwrap_or(0);
                    if acc == 0 {
                        break;
                    }
                }
                if acc != 0 {
                    let w = s * 64 + b as usize;
                    return u32::try_from(w * 64 + acc.trailing_zeros() as usize).ok();
                }
                m &= m - 1;
            }
            for i in 0..n {
                base[i] += sw[i].count_ones() as usize;
            }
        }
        None
    }
}

/// Most sets [`SetArena::first_common`] intersects at once.
pub const MAX_SETS: usize = 4;

/// Maps every key of a `key_bits`-bit space to the set of rules whose ranges cover it: the key
/// space is cut into elementary intervals at every range edge, each with its set. A radix index
/// on the top bits of the key makes a lookup a table read plus a search of a few entries.
#[derive(Debug, Clone)]
pub struct IntervalMap {
    starts: Vec<u32>,
    sets: Vec<SetId>,
    shift: u32,
    index: Vec<u32>,
}

impl IntervalMap {
    /// Builds the map from `(lo, hi_inclusive, rule)` ranges over keys `< 2^key_bits`.
    pub fn build(arena: &mut SetArena, key_bits: u32, ranges: &[(u32, u32, u32)]) -> IntervalMap {
        let max_key: u64 = (1u64 << key_bits) - 1;
        // (position, rule, +1/-1)
        let mut events: Vec<(u64, u32, bool)> = Vec::with_capacity(ranges.len() * 2);
        for &(lo, hi, r) in ranges {
            let (lo, hi) = (u64::from(lo), u64::from(hi).min(max_key));
            if lo > hi {
                continue;
            }
            events.push((lo, r, true));
            if hi < max_key {
                events.push((hi + 1, r, false));
            }
        }
        events.sort_unstable_by_key(|e| e.0);
        let mut counts: HashMap<u32, u32> = HashMap::new();
        let mut dense = vec![0u64; arena.dense_words()];
        let mut starts = vec![0u32];
        let mut sets = Vec::new();
        let mut i = 0;
        // interval starting at 0
        let mut pos = 0u64;
        loop {
            while i < events.len() && events[i].0 == pos {
                let (_, r, add) = events[i];
                let c = counts.entry(r).or_insert(0);
                if add {
                    *c += 1;
                } else {
                    *c = c.saturating_sub(1);
                }
                let bit = 1u64 << (r % 64);
                if let Some(w) = dense.get_mut(r as usize / 64) {
                    if *c > 0 {
                        *w |= bit;
                    } else {
                        *w &= !bit;
                    }
                }
                i += 1;
            }
            let id = arena.insert_dense(&dense);
            if sets.last() == Some(&id) {
                starts.pop();
            } else {
                sets.push(id);
            }
            if i >= events.len() {
                break;
            }
            pos = events[i].0;
            starts.push(pos as u32);
        }
        // starts and sets are aligned: each start begins the interval with that set.
        debug_assert_eq!(starts.len(), sets.len());
        let n = starts.len();
        let want = (usize::BITS - n.leading_zeros()).clamp(1, 16).min(key_bits);
        let shift = key_bits - want;
        let buckets = 1usize << want;
        let mut index = Vec::with_capacity(buckets + 1);
        for b in 0..buckets {
            let base = (b as u64) << shift;
            let j = starts.partition_point(|&s| u64::from(s) <= base);
            index.push(j.saturating_sub(1) as u32);
        }
        index.push((n - 1) as u32);
        IntervalMap {
            starts,
            sets,
            shift,
            index,
        }
    }

    /// The set of rules covering `key`.
    #[inline]
    pub fn get(&self, key: u32) -> SetId {
        let b = (key >> self.shift) as usize;
        let lo = self.index.get(b).copied().unwrap_or(0) as usize;
        let hi = self.index.get(b + 1).copied().unwrap_or(0) as usize;
        let hi = hi.max(lo);
        let window = self.starts.get(lo..=hi).unwrap_or(&[]);
        let j = lo + window.partition_point(|&s| s <= key).saturating_sub(1);
        self.sets.get(j).copied().unwrap_or(SetArena::EMPTY)
    }

    /// Number of elementary intervals.
    pub fn intervals(&self) -> usize {
        self.starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_map_and_intersection() {
        let mut a = SetArena::new(200);
        let m = IntervalMap::build(
            &mut a,
            16,
            &[(10, 20, 0), (15, 30, 130), (0, 65535, 199), (15, 15, 5)],
        );
        let f = IntervalMap::build(&mut a, 16, &[(0, 65535, 130), (0, 65535, 199)]);
        assert_eq!(a.first_common(&[m.get(12), f.get(0)]), Some(199));
        assert_eq!(a.first_common(&[m.get(15), f.get(0)]), Some(130));
        assert_eq!(a.first_common(&[m.get(15)]), Some(0));
        assert_eq!(a.first_common(&[m.get(31)]), Some(199));
        assert_eq!(a.first_common(&[m.get(21), m.get(9)]), Some(199));
        let e = IntervalMap::build(&mut a, 32, &[]);
        assert_eq!(a.first_common(&[e.get(u32::MAX)]), None);
        let full = IntervalMap::build(&mut a, 32, &[(0, u32::MAX, 7)]);
        assert_eq!(a.first_common(&[full.get(u32::MAX), full.get(0)]), Some(7));
    }
}
