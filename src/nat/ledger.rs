//! Who holds each SNAT port, shared by all workers, so that a worker whose own slice has run
//! dry borrows free ports from the other workers' slices instead of refusing a flow while the
//! pool still has ports.
//!
//! One 64-bit word per (public address, protocol, port): the low byte says who has the port
//! ([`HOME_FREE`]: free, with the worker whose slice it is in; [`HOME_USED`]: in use by that
//! worker; `LENT + w`: borrowed by worker `w`), the rest when it was last given back, so a
//! borrower honours the reuse cooldown as the owner does. Every change is one compare-and-swap
//! on that word, made when a flow is admitted or its port released, never per packet: the
//! owner claims a port it takes from its free list ([`PortLedger::claim_home`]; a failure
//! means the port is lent, and the owner leaves it in its list for later), a dry worker
//! claims a free port of another slice ([`PortLedger::borrow`]), and the holder hands it back
//! ([`PortLedger::free`]). The packet path only reads: a frame from outside to a borrowed port
//! arrives (steered by port) at the slice's owner, which hands it to the borrower
//! ([`PortLedger::lent_to`]).

use std::sync::atomic::{AtomicU64, Ordering};

use super::NatConfig;
use crate::time::Nanos;

/// Free, with the worker whose slice holds the port.
const HOME_FREE: u64 = 0;
/// In use by the slice's own worker.
const HOME_USED: u64 = 1;
/// `LENT + w`: borrowed by worker `w`.
const LENT: u64 = 2;
/// Protocol slots (TCP, UDP, ICMP), as in the pool.
const SLOTS: usize = 3;

#[inline]
fn word(tag: u64, freed: Nanos) -> u64 {
    // Time in 256 ns units in the upper 56 bits: 2^56 of them is over 500 years.
    ((freed >> 8) << 8) | tag
}

/// True if a port whose word is `w` was given back at or before `cutoff` (now minus the
/// cooldown); a port never given back (time 0) needs no rest.
#[inline]
fn rested(w: u64, cutoff: Nanos) -> bool {
    let freed = (w >> 8) << 8;
    freed == 0 || freed <= cutoff
}

/// The shared port-holder table of all workers' pools (see the module comment).
#[derive(Debug)]
pub struct PortLedger {
    port_min: u16,
    ports: u32,
    workers: usize,
    words: Box<[AtomicU64]>,
}

impl PortLedger {
    /// The ledger for `cfg`'s public addresses and port range, shared by `workers` workers.
    /// Memory: 8 bytes per port, public address and protocol (1.5 MiB per address for the
    /// whole 64 K range).
    pub fn new(cfg: &NatConfig, workers: usize) -> Self {
        let ports = cfg.port_count();
        let n = cfg.public_addrs.len() * SLOTS * ports as usize;
        PortLedger {
            port_min: cfg.port_min,
            ports,
            workers: workers.max(1),
            words: (0..n).map(|_| AtomicU64::new(HOME_FREE)).collect(),
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Bytes of memory held.
    pub fn memory_bytes(&self) -> usize {
        self.words.len() * 8
    }

    #[inline]
    fn at(&self, addr: usize, slot: usize, port: u16) -> Option<&AtomicU64> {
        let off = u32::from(port.checked_sub(self.port_min)?);
        if off >= self.ports {
            return None;
        }
        self.words
            .get((addr * SLOTS + slot) * self.ports as usize + off as usize)
    }

    /// The worker that borrowed `port`, if it is lent (the packet path: one load).
    #[inline]
    pub fn lent_to(&self, addr: usize, slot: usize, port: u16) -> Option<usize> {
        let tag = self.at(addr, slot, port)?.load(Ordering::Acquire) & 0xff;
        (tag >= LENT).then(|| (tag - LENT) as usize)
    }

    /// The owner takes `port` from its free list: false if it is lent (the owner keeps it in
    /// its list and tries another), or was given back after `cutoff` (now minus the cooldown).
    #[inline]
    pub fn claim_home(&self, addr: usize, slot: usize, port: u16, cutoff: Nanos) -> bool {
        let Some(a) = self.at(addr, slot, port) else {
            return true;
        };
        let w = a.load(Ordering::Acquire);
        if w & 0xff != HOME_FREE || !rested(w, cutoff) {
            return false;
        }
        a.compare_exchange(w, word(HOME_USED, 0), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The port's holder gives it back (its last user is gone), at `now`.
    #[inline]
    pub fn free(&self, addr: usize, slot: usize, port: u16, now: Nanos) {
        if let Some(a) = self.at(addr, slot, port) {
            a.store(word(HOME_FREE, now), Ordering::Release);
        }
    }

    /// Worker `me`, whose own slice has no free port, borrows a free port given back at or
    /// before `cutoff` from another worker's range `(base, count)` of `ranges`, scanning from
    /// `start` (a random offset, so borrowers do not all contend for the same ports).
    pub fn borrow(
        &self,
        me: usize,
        addr: usize,
        slot: usize,
        ranges: &[(u16, u16)],
        start: u32,
        cutoff: Nanos,
    ) -> Option<u16> {
        for (w, &(base, count)) in ranges.iter().enumerate() {
            if w == me || count == 0 {
                continue;
            }
            let count = u32::from(count);
            let start = start % count;
            for j in 0..count {
                let port = base + ((start + j) % count) as u16;
                let Some(a) = self.at(addr, slot, port) else {
                    continue;
                };
                let v = a.load(Ordering::Relaxed);
                if v & 0xff != HOME_FREE || !rested(v, cutoff) {
                    continue;
                }
                if a.compare_exchange(
                    v,
                    word(LENT + me as u64, 0),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
                {
                    return Some(port);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn cfg() -> NatConfig {
        NatConfig {
            public_addrs: vec![Ipv4Addr::new(203, 0, 113, 1)],
            port_min: 1000,
            port_max: 1003,
            ..NatConfig::default()
        }
    }

    #[test]
    fn a_port_is_held_by_one_worker_at_a_time() {
        let l = PortLedger::new(&cfg(), 2);
        let ranges = [(1000, 2), (1002, 2)];
        // Worker 1 borrows both of worker 0's ports; worker 0 can then claim neither.
        let a = l.borrow(1, 0, 0, &ranges, 0, 0).unwrap();
        let b = l.borrow(1, 0, 0, &ranges, 0, 0).unwrap();
        assert_ne!(a, b);
        assert_eq!(l.borrow(1, 0, 0, &ranges, 0, 0), None);
        assert!(!l.claim_home(0, 0, a, 0));
        assert_eq!(l.lent_to(0, 0, a), Some(1));
        // Given back, it is the owner's again, after the cooldown.
        l.free(0, 0, a, 5_000);
        assert_eq!(l.lent_to(0, 0, a), None);
        assert!(!l.claim_home(0, 0, a, 6_000 - 2_000));
        assert!(l.claim_home(0, 0, a, 8_000 - 2_000));
        assert!(!l.claim_home(0, 0, a, 8_000 - 2_000), "claimed once");
        // Another protocol's port of the same number is unaffected.
        assert!(l.claim_home(0, 1, a, 0));
    }

    #[test]
    fn concurrent_claims_never_hand_a_port_out_twice() {
        let c = NatConfig {
            port_max: 1000 + 511,
            ..cfg()
        };
        let l = std::sync::Arc::new(PortLedger::new(&c, 2));
        let ranges = [(1000u16, 256u16), (1256, 256)];
        let owner = {
            let l = l.clone();
            std::thread::spawn(move || {
                (1000..1256u16)
                    .filter(|&p| l.claim_home(0, 0, p, 0))
                    .collect::<Vec<_>>()
            })
        };
        let mut lent = Vec::new();
        while let Some(p) = l.borrow(1, 0, 0, &ranges, 7, 0) {
            lent.push(p);
        }
        let mut all = owner.join().unwrap();
        all.extend(&lent);
        all.sort_unstable();
        let n = all.len();
        all.dedup();
        assert_eq!(
            (n, all.len()),
            (256, 256),
            "every port of worker 0 exactly once"
        );
    }
}
