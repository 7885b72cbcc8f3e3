//! One worker's slice of the port space of one public address, for one protocol.

use super::rng::Rng;
use crate::time::Nanos;

/// How many of the oldest free ports a pick chooses among: enough that the next port cannot be
/// guessed, few enough that the choice stays O(1) and still favours long-free ports.
const PICK_WINDOW: u32 = 64;
/// Free time of a port that was never handed out: it needs no rest.
const NEVER_FREED: Nanos = Nanos::MAX;
/// `users` of a port kept for a DNAT rule ([`PortSlice::reserve`]): in use for good, never
/// shared with a flow, never released.
const RESERVED: u32 = u32::MAX;

/// Free ports wait in a FIFO in the order they were freed (first in a random permutation), so
/// a freed port rests as long as possible before reuse; allocation picks at random among the
/// oldest [`PICK_WINDOW`] free ports. Both operations are O(1) whatever the occupancy.
#[derive(Debug)]
pub struct PortSlice {
    base: u16,
    /// Flows (APDM) or mappings (EIM) using each port; 0 = free.
    users: Vec<u32>,
    ring: Vec<u16>,
    /// When the port at the same ring position was freed: kept beside the ring so the
    /// cooldown check reads the cache lines the pick reads anyway.
    ring_freed: Vec<Nanos>,
    head: u32,
    free: u32,
}

impl PortSlice {
    /// Bytes of memory the slice holds.
    pub fn memory_bytes(&self) -> usize {
        self.users.capacity() * 4 + self.ring.capacity() * 2 + self.ring_freed.capacity() * 8
    }

    /// Ports `base .. base + count`, shuffled by `rng`.
    pub fn new(base: u16, count: u16, rng: &mut Rng) -> Self {
        let n = u32::from(count);
        let mut ring: Vec<u16> = (0..count).map(|i| base + i).collect();
        for i in (1..ring.len()).rev() {
            let j = rng.below(i as u32 + 1) as usize;
            ring.swap(i, j);
        }
        PortSlice {
            base,
            // Written, not calloc'ed: the pages are faulted in now, not on the packet path.
            users: (0..count).map(|_| 0).collect(),
            ring,
            ring_freed: (0..count).map(|_| NEVER_FREED).collect(),
            head: 0,
            free: n,
        }
    }

    pub fn base(&self) -> u16 {
        self.base
    }
    /// Ports in the slice.
    pub fn size(&self) -> u32 {
        self.users.len() as u32
    }
    /// Ports on the free list (some may be lent to another worker: see `nat::ledger`).
    pub fn free_count(&self) -> u32 {
        self.free
    }
    /// Ports with at least one user.
    pub fn in_use(&self) -> u32 {
        self.size() - self.free
    }
    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        port >= self.base && u32::from(port - self.base) < self.size()
    }
    /// Users of `port` (0 if free or outside the slice; a reserved port has no flow but is
    /// never free: see [`PortSlice::shareable`]).
    #[inline]
    pub fn users(&self, port: u16) -> u32 {
        if self.contains(port) {
            self.users[usize::from(port - self.base)]
        } else {
            0
        }
    }
    /// Whether `port` is held by flows (or mappings) that another may join: in use, and not
    /// kept for a DNAT rule.
    #[inline]
    pub fn shareable(&self, port: u16) -> bool {
        let u = self.users(port);
        u != 0 && u != RESERVED
    }
    /// Whether `port` is kept for a DNAT rule.
    #[inline]
    pub fn is_reserved(&self, port: u16) -> bool {
        self.users(port) == RESERVED
    }

    #[inline]
    fn ring_at(&self, i: u32) -> usize {
        ((self.head + i) % self.size()) as usize
    }

    /// Takes a free port that has rested at least `cooldown`; None if there is none.
    #[inline]
    pub fn take_free(&mut self, now: Nanos, cooldown: Nanos, rng: &mut Rng) -> Option<u16> {
        if self.free == 0 {
            return None;
        }
        let cool = |s: &Self, i: u32| {
            let f = s.ring_freed[s.ring_at(i)];
            f == NEVER_FREED || f.saturating_add(cooldown) <= now
        };
        if !cool(self, 0) {
            return None;
        }
        // The ring is in free-time order: if the window's last entry is cool, all are.
        let mut window = self.free.min(PICK_WINDOW);
        if !cool(self, window - 1) {
            window = 1;
        }
        let j = rng.below(window);
        let (h, jj) = (self.ring_at(0), self.ring_at(j));
        self.ring.swap(h, jj);
        self.ring_freed.swap(h, jj);
        let port = self.ring[h];
        self.head = (self.head + 1) % self.size();
        self.free -= 1;
        self.users[usize::from(port - self.base)] = 1;
        Some(port)
    }

    /// Takes `port` off the free list for good (a DNAT rule's public port); false if it is
    /// not free here. O(free): at start-up only.
    pub fn reserve(&mut self, port: u16) -> bool {
        if !self.contains(port) || self.users[usize::from(port - self.base)] != 0 {
            return false;
        }
        let Some(k) = (0..self.free).find(|&k| self.ring[self.ring_at(k)] == port) else {
            return false;
        };
        let (h, j) = (self.ring_at(0), self.ring_at(k));
        self.ring.swap(h, j);
        self.ring_freed.swap(h, j);
        self.head = (self.head + 1) % self.size();
        self.free -= 1;
        self.users[usize::from(port - self.base)] = RESERVED;
        true
    }

    /// Adds a user to a port already in use (APDM reuse toward another destination); never
    /// to a reserved one.
    #[inline]
    pub fn add_user(&mut self, port: u16) {
        let u = &mut self.users[usize::from(port - self.base)];
        debug_assert!(*u != RESERVED, "port {port} is kept for a DNAT rule");
        if *u != RESERVED {
            *u += 1;
        }
    }

    /// Drops one user; the port returns to the free FIFO when it has none left.
    #[inline]
    pub fn release(&mut self, port: u16, now: Nanos) {
        if !self.contains(port) {
            return;
        }
        let i = usize::from(port - self.base);
        match self.users[i] {
            0 | RESERVED => {}
            1 => {
                self.users[i] = 0;
                let tail = self.ring_at(self.free);
                self.ring[tail] = port;
                self.ring_freed[tail] = now;
                self.free += 1;
            }
            _ => self.users[i] -= 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_port_is_handed_out_once_then_none() {
        let mut rng = Rng::new(7);
        let mut s = PortSlice::new(1000, 100, &mut rng);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let p = s.take_free(0, 0, &mut rng).unwrap();
            assert!((1000..1100).contains(&p));
            assert!(seen.insert(p), "port {p} handed out twice");
        }
        assert_eq!(s.take_free(0, 0, &mut rng), None);
        assert_eq!(s.in_use(), 100);
    }

    #[test]
    fn freed_ports_rest_for_the_cooldown() {
        let mut rng = Rng::new(7);
        let mut s = PortSlice::new(1000, 2, &mut rng);
        let a = s.take_free(0, 0, &mut rng).unwrap();
        let _b = s.take_free(0, 0, &mut rng).unwrap();
        s.release(a, 10);
        assert_eq!(s.take_free(11, 5, &mut rng), None);
        assert_eq!(s.take_free(15, 5, &mut rng), Some(a));
    }

    #[test]
    fn fresh_ports_need_no_cooldown() {
        let mut rng = Rng::new(7);
        let mut s = PortSlice::new(1000, 2, &mut rng);
        assert!(
            s.take_free(0, 2_000_000_000, &mut rng).is_some(),
            "at the clock's start"
        );
    }

    #[test]
    fn a_reserved_port_is_in_use_for_good_and_never_shareable() {
        let mut rng = Rng::new(1);
        let mut s = PortSlice::new(1000, 2, &mut rng);
        assert!(s.reserve(1001));
        assert!(!s.reserve(1001), "once");
        let p = s.take_free(0, 0, &mut rng).unwrap();
        assert_eq!(p, 1000);
        assert_eq!(s.take_free(0, 0, &mut rng), None);
        assert!(s.shareable(1000));
        assert!(!s.shareable(1001) && s.is_reserved(1001));
        s.release(1001, 1);
        assert_eq!(s.in_use(), 2, "a release does not free a reserved port");
        s.release(1000, 1);
        assert_eq!(s.in_use(), 1);
    }

    #[test]
    fn shared_port_frees_after_last_user() {
        let mut rng = Rng::new(1);
        let mut s = PortSlice::new(1000, 1, &mut rng);
        let p = s.take_free(0, 0, &mut rng).unwrap();
        s.add_user(p);
        s.release(p, 1);
        assert_eq!(s.in_use(), 1);
        s.release(p, 1);
        assert_eq!(s.in_use(), 0);
    }
}
