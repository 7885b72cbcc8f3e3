//! Translations for later fragments of a datagram whose first fragment was translated.
//!
//! Later fragments carry no transport header, so they cannot be looked up in the flow table;
//! the first fragment leaves its translated addresses here, keyed by (src, dst, id, proto).
//! A fixed, direct-mapped array: no allocation, old entries are simply overwritten.

use std::net::Ipv4Addr;

use super::Nanos;

const SLOTS: usize = 1024;
const LIFETIME: Nanos = 5_000_000_000;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    key: (u32, u32, u16, u8),
    to: (u32, u32),
    expires: Nanos,
}

/// The fragment translation cache of one worker.
#[derive(Debug)]
pub struct FragCache {
    slots: Box<[Slot; SLOTS]>,
}

/// What identifies the fragments of one datagram.
pub trait FragId {
    fn frag_key(&self) -> (u32, u32, u16, u8);
}

impl FragCache {
    pub fn new() -> Self {
        FragCache {
            slots: Box::new([Slot::default(); SLOTS]),
        }
    }

    fn slot(key: (u32, u32, u16, u8)) -> usize {
        let h = (u64::from(key.0) << 32 | u64::from(key.1)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (u64::from(key.2) << 8 | u64::from(key.3)).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        (h >> 54) as usize % SLOTS
    }

    /// Remembers that datagram `id` now travels as `src -> dst`.
    pub fn insert(&mut self, id: &impl FragId, src: Ipv4Addr, dst: Ipv4Addr, now: Nanos) {
        let key = id.frag_key();
        self.slots[Self::slot(key)] = Slot {
            key,
            to: (u32::from(src), u32::from(dst)),
            expires: now + LIFETIME,
        };
    }

    /// The translated (src, dst) for a later fragment of datagram `id`.
    pub fn lookup(&self, id: &impl FragId, now: Nanos) -> Option<(Ipv4Addr, Ipv4Addr)> {
        let key = id.frag_key();
        let s = &self.slots[Self::slot(key)];
        (s.key == key && s.expires > now).then(|| (Ipv4Addr::from(s.to.0), Ipv4Addr::from(s.to.1)))
    }
}

impl Default for FragCache {
    fn default() -> Self {
        Self::new()
    }
}
