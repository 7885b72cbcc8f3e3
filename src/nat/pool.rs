//! One worker's SNAT allocator over all public addresses.

use std::hash::BuildHasher;
use std::net::Ipv4Addr;

use hashbrown::HashMap;

use super::eim::{EimTable, Mapping};

use super::rng::Rng;
use super::slice::PortSlice;
use super::{MappingMode, NatConfig};
use crate::conntrack::FlowKey;
use crate::datapath::Nanos;
use crate::policy::proto;

/// Random probes among busy ports before an APDM allocation falls back to a full scan.
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
    quota: Option<u32>,
    cooldown: Nanos,
    rng: Rng,
    hasher: foldhash::fast::FixedState,
    eim: EimTable,
    held: HashMap<u32, u32, foldhash::fast::FixedState>,
    /// APDM: releases per protocol so far, and the destination (address, port, protocol) whose
    /// reuse scan last failed with the release count then. Until something is released, that
    /// destination fails at once instead of rescanning every port (a SYN flood toward one
    /// destination would otherwise cost a full scan per packet).
    releases: [u64; 3],
    scan_failed: [Option<(u32, u16, u64)>; 3],
}

impl std::fmt::Debug for SnatPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnatPool")
            .field("addrs", &self.addrs)
            .field("mode", &self.mode)
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
            releases: [0; 3],
            scan_failed: [None; 3],
        }
    }

    pub fn addrs(&self) -> &[Ipv4Addr] {
        &self.addrs
    }
    pub fn mode(&self) -> MappingMode {
        self.mode
    }

    /// Index of `a` among the public addresses.
    #[inline]
    pub fn addr_index(&self, a: Ipv4Addr) -> Option<usize> {
        self.addrs.iter().position(|&x| x == a)
    }

    /// (ports in use, ports in this worker's slice) for address `idx` and protocol `p`.
    pub fn utilisation(&self, idx: usize, p: u8) -> (u32, u32) {
        let s = &self.slices[idx][proto_slot(p)];
        (s.in_use(), s.size())
    }

    /// Ports (EIM) or sessions (APDM) held by an inside host.
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
    /// flow limit, the slices by the port range (per public address and protocol).
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
    pub fn allocate(
        &mut self,
        orig: &FlowKey,
        now: Nanos,
        taken: impl Fn(Ipv4Addr, u16) -> bool,
    ) -> Result<Grant, AllocError> {
        let inside = u32::from(orig.src());
        let p = orig.proto();
        let slot = proto_slot(p);
        if self.mode == MappingMode::EndpointIndependent {
            let h = self.eim_hash(inside, orig.sport(), p);
            let found = self.eim.find_mut(h, inside, orig.sport(), p);
            if let Some(m) = found {
                if !taken(self.addrs[usize::from(m.addr_idx)], m.public_port) {
                    m.refs += 1;
                    return Ok(Grant {
                        addr_idx: m.addr_idx,
                        addr: self.addrs[usize::from(m.addr_idx)],
                        port: m.public_port,
                    });
                }
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
            if let Some(port) = self.slices[i][slot].take_free(now, self.cooldown, &mut self.rng) {
                grant = Some(Grant {
                    addr_idx: i as u8,
                    addr: self.addrs[i],
                    port,
                });
                break;
            }
        }
        if grant.is_none() && self.mode == MappingMode::AddressAndPortDependent {
            let dest = (u32::from(orig.dst()), orig.dport());
            let known_full = self.scan_failed[slot]
                .is_some_and(|(a, p, r)| (a, p) == dest && r == self.releases[slot]);
            if !known_full {
                grant = self.reuse_busy_port(first, slot, &taken);
                if grant.is_none() {
                    self.scan_failed[slot] = Some((dest.0, dest.1, self.releases[slot]));
                }
            }
        }
        let g = grant.ok_or(AllocError::OutOfPorts)?;
        *self.held.entry(inside).or_insert(0) += 1;
        if self.mode == MappingMode::EndpointIndependent {
            let m = Mapping::new(inside, orig.sport(), p, g.addr_idx, g.port);
            let h = self.eim_hash(inside, orig.sport(), p);
            if !self.eim.insert(h, m) {
                // Unreachable with the table sized for the flow limit; give the port back
                // rather than hand out a mapping that is not recorded.
                self.give_back(inside, g.addr_idx, g.port, slot, now);
                return Err(AllocError::OutOfPorts);
            }
        }
        Ok(g)
    }

    /// APDM: a port already in use may serve another destination if the reply tuple is free.
    fn reuse_busy_port(
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
            let usable = |s: &PortSlice, port: u16| s.users(port) > 0 && !taken(addr, port);
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
                self.slices[i][slot].add_user(port);
                return Some(Grant {
                    addr_idx: i as u8,
                    addr,
                    port,
                });
            }
        }
        None
    }

    /// Releases the mapping of a removed flow whose original tuple was `orig` and whose public
    /// side was (`addr_idx`, `port`).
    pub fn release(&mut self, orig: &FlowKey, addr_idx: u8, port: u16, now: Nanos) {
        let inside = u32::from(orig.src());
        let p = orig.proto();
        let slot = proto_slot(p);
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
        if let Some(s) = self.slices.get_mut(usize::from(addr_idx)) {
            s[slot].release(port, now);
        }
        self.releases[slot] += 1;
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
}
