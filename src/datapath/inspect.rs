//! Holding the first payload of flows that only application rules can decide.
//!
//! The TCP handshake passes (SNATed as usual); the client's first data segments are copied
//! into a per-flow slot and held, reassembled by sequence number, until the name (TLS SNI,
//! HTTP Host, QUIC SNI) is read. Then the held segments are released in order, or the flow is
//! reset. Slots are preallocated: the pool size is the global budget, the slot size the
//! per-flow byte budget, and a slot older than the time budget is given up.
//!
//! A QUIC flow's datagrams are held whole (to be released byte for byte); each is decrypted as
//! it arrives (`wire::quic`, in the pool's one scratch buffer) and its CRYPTO data is placed by
//! offset into the slot's stream buffer, so the ClientHello may span several Initials.

use std::net::Ipv4Addr;

use super::{IfaceId, Nanos};
use crate::policy::AppProto;
use crate::wire::quic::{InitialReader, QuicResult};

/// Most segments (or datagrams) held per flow.
pub const MAX_HELD: usize = 8;
/// Bytes of stream reassembled per flow: a ClientHello with post-quantum key shares is ~1.8 KiB.
pub const STREAM_BUDGET: usize = 8192;
/// Longest a flow may wait for its name.
pub const TIME_BUDGET: Nanos = 10_000_000_000;
const FRAME_CAP: usize = 2048;

/// One flow under inspection.
#[derive(Debug)]
pub struct Slot {
    pub flow: u32,
    /// Sequence number of the first payload byte (client ISN + 1).
    pub isn: u32,
    pub started: Nanos,
    data: Box<[u8]>,
    /// Received byte ranges (offset, end) relative to `isn`, merged as they arrive.
    ranges: [(u32, u32); MAX_HELD],
    nranges: usize,
    frames: Box<[u8]>,
    frame_lens: [u16; MAX_HELD],
    pub held: usize,
    /// QUIC: keys and CRYPTO ranges of the client Initials (the bytes are in `data`).
    quic: InitialReader,
}

/// Why a segment could not be taken into a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldError {
    /// Beyond the per-flow byte budget or segment count.
    Budget,
    /// Bytes at sequence numbers already held differ from the held ones: the client would show
    /// the firewall one stream and the server (which keeps the first copy) another.
    Mismatch,
}

impl Slot {
    fn new() -> Self {
        Slot {
            flow: u32::MAX,
            isn: 0,
            started: 0,
            data: vec![0; STREAM_BUDGET].into_boxed_slice(),
            ranges: [(0, 0); MAX_HELD],
            nranges: 0,
            frames: vec![0; FRAME_CAP * MAX_HELD].into_boxed_slice(),
            frame_lens: [0; MAX_HELD],
            held: 0,
            quic: InitialReader::new(),
        }
    }

    /// Takes a segment: its payload at `seq` into the stream, its whole frame into the hold.
    ///
    /// Bytes at offsets already held must be identical to the held ones (a retransmission):
    /// if any differ the segment is refused with [`HoldError::Mismatch`] and nothing changes.
    /// Bytes before the stream start (sequence numbers the SYN used or earlier) are skipped, as
    /// the server skips them; a segment wholly before it is held without stream bytes. A
    /// segment that ends past the byte budget is refused with [`HoldError::Budget`].
    pub fn hold_segment(
        &mut self,
        seq: u32,
        payload: &[u8],
        frame: &[u8],
    ) -> Result<(), HoldError> {
        if self.held >= MAX_HELD || frame.len() > FRAME_CAP || payload.len() > FRAME_CAP {
            return Err(HoldError::Budget);
        }
        // Offset from the stream start, signed: sequence space wraps (RFC 9293 3.4).
        let rel = seq.wrapping_sub(self.isn) as i32;
        let (off, payload) = if rel < 0 {
            let skip = rel.unsigned_abs() as usize;
            (0, payload.get(skip..).unwrap_or(&[]))
        } else {
            (rel as usize, payload)
        };
        let end = off + payload.len();
        if end > STREAM_BUDGET {
            return Err(HoldError::Budget);
        }
        if !payload.is_empty() {
            self.check_overlap(off, payload)?;
        }
        self.hold_frame(frame)?;
        if !payload.is_empty() {
            // Copying over the held bytes is a no-op now: they are identical.
            self.data[off..end].copy_from_slice(payload);
            self.add_range(off as u32, end as u32);
        }
        Ok(())
    }

    /// Whether `payload` at `off` agrees with every byte already held that it overlaps.
    fn check_overlap(&self, off: usize, payload: &[u8]) -> Result<(), HoldError> {
        let end = off + payload.len();
        for &(s, e) in &self.ranges[..self.nranges] {
            let (s, e) = (s as usize, e as usize);
            let (o_start, o_end) = (s.max(off), e.min(end));
            if o_start < o_end && self.data[o_start..o_end] != payload[o_start - off..o_end - off] {
                return Err(HoldError::Mismatch);
            }
        }
        Ok(())
    }

    /// Takes a whole frame into the hold (a datagram, or a segment).
    pub fn hold_frame(&mut self, frame: &[u8]) -> Result<(), HoldError> {
        if self.held >= MAX_HELD || frame.len() > FRAME_CAP {
            return Err(HoldError::Budget);
        }
        let at = self.held * FRAME_CAP;
        self.frames[at..at + frame.len()].copy_from_slice(frame);
        self.frame_lens[self.held] = frame.len() as u16;
        self.held += 1;
        Ok(())
    }

    /// Holds a QUIC datagram whole and reads its client Initials: CRYPTO data into the
    /// stream buffer by offset, the SNI (copied to `out`) once the ClientHello is complete.
    /// `scratch` is where packets are decrypted (at least a datagram long).
    pub fn hold_datagram(
        &mut self,
        frame: &[u8],
        payload: &[u8],
        scratch: &mut [u8],
        out: &mut [u8; 256],
    ) -> Result<QuicResult, HoldError> {
        self.hold_frame(frame)?;
        Ok(self
            .quic
            .push_datagram(payload, scratch, &mut self.data, out))
    }

    fn add_range(&mut self, s: u32, e: u32) {
        if self.nranges < MAX_HELD {
            self.ranges[self.nranges] = (s, e);
            self.nranges += 1;
        }
        // Merge: sort by start, coalesce overlapping or adjacent ranges.
        let r = &mut self.ranges[..self.nranges];
        r.sort_unstable();
        let mut w = 0;
        for i in 1..r.len() {
            if r[i].0 <= r[w].1 {
                r[w].1 = r[w].1.max(r[i].1);
            } else {
                w += 1;
                r[w] = r[i];
            }
        }
        self.nranges = if r.is_empty() { 0 } else { w + 1 };
    }

    /// Bytes of stream received without a gap from the start.
    pub fn contiguous(&self) -> usize {
        match self.ranges[..self.nranges].first() {
            Some(&(0, e)) => e as usize,
            _ => 0,
        }
    }

    /// The contiguous stream prefix.
    pub fn stream(&self) -> &[u8] {
        &self.data[..self.contiguous()]
    }

    /// Held frame `i`.
    pub fn frame(&self, i: usize) -> &[u8] {
        let at = i * FRAME_CAP;
        &self.frames[at..at + usize::from(self.frame_lens[i])]
    }
}

/// The preallocated slots of one worker.
#[derive(Debug)]
pub struct InspectPool {
    slots: Vec<Slot>,
    free: Vec<u16>,
    /// Where QUIC packets are decrypted, one at a time.
    scratch: Box<[u8]>,
}

impl InspectPool {
    pub fn new(n: usize) -> Self {
        let n = n.min(usize::from(u16::MAX));
        InspectPool {
            slots: (0..n).map(|_| Slot::new()).collect(),
            free: (0..n as u16).rev().collect(),
            scratch: vec![0; FRAME_CAP].into_boxed_slice(),
        }
    }
    /// A free slot for `flow`, or None when the global budget is spent.
    pub fn take(&mut self, flow: u32, isn: u32, now: Nanos) -> Option<u16> {
        let i = self.free.pop()?;
        let s = &mut self.slots[usize::from(i)];
        s.flow = flow;
        s.isn = isn;
        s.started = now;
        s.nranges = 0;
        s.held = 0;
        s.quic.reset();
        Some(i)
    }
    /// Frees slot `i` if `flow` holds it; a slot held by another flow (or free) is left as
    /// it is. Returns whether the slot was freed.
    pub fn release(&mut self, i: u16, flow: u32) -> bool {
        match self.slots.get_mut(usize::from(i)) {
            Some(s) if s.flow == flow && flow != u32::MAX => {
                s.flow = u32::MAX;
                self.free.push(i);
                true
            }
            _ => false,
        }
    }
    /// [`Slot::hold_datagram`] on slot `i` (if `flow` holds it) with the pool's scratch buffer.
    pub fn hold_datagram(
        &mut self,
        i: u16,
        flow: u32,
        frame: &[u8],
        payload: &[u8],
        out: &mut [u8; 256],
    ) -> Result<QuicResult, HoldError> {
        let slot = self
            .slots
            .get_mut(usize::from(i))
            .filter(|s| s.flow == flow && flow != u32::MAX)
            .ok_or(HoldError::Budget)?;
        slot.hold_datagram(frame, payload, &mut self.scratch, out)
    }
    /// Slot `i` if `flow` holds it.
    pub fn get_mut(&mut self, i: u16, flow: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(usize::from(i))
            .filter(|s| s.flow == flow && flow != u32::MAX)
    }
    /// Slot `i` if `flow` holds it.
    pub fn get(&self, i: u16, flow: u32) -> Option<&Slot> {
        self.slots
            .get(usize::from(i))
            .filter(|s| s.flow == flow && flow != u32::MAX)
    }
    /// A slot older than the time budget, and the flow holding it.
    pub fn overdue(&self, now: Nanos) -> Option<(u16, u32)> {
        self.slots
            .iter()
            .position(|s| s.flow != u32::MAX && s.started + TIME_BUDGET <= now)
            .map(|i| (i as u16, self.slots[i].flow))
    }
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// Frames waiting to be sent besides a verdict (released holds, resets), in a fixed ring.
#[derive(Debug)]
pub struct TxQueue {
    bufs: Vec<Box<[u8]>>,
    meta: Vec<(usize, IfaceId, Ipv4Addr)>,
    head: usize,
    len: usize,
}

impl TxQueue {
    pub fn new(n: usize) -> Self {
        TxQueue {
            bufs: (0..n)
                .map(|_| vec![0u8; FRAME_CAP].into_boxed_slice())
                .collect(),
            meta: vec![(0, 0, Ipv4Addr::UNSPECIFIED); n],
            head: 0,
            len: 0,
        }
    }
    /// Borrows the next free buffer (None when full); commit it with [`TxQueue::push`].
    pub fn take_buf(&mut self) -> Option<Box<[u8]>> {
        if self.len == self.bufs.len() {
            return None;
        }
        let i = (self.head + self.len) % self.bufs.len();
        Some(std::mem::take(&mut self.bufs[i]))
    }
    /// Returns a buffer from [`TxQueue::take_buf`], queued for sending if `meta` is Some.
    pub fn push(&mut self, buf: Box<[u8]>, meta: Option<(usize, IfaceId, Ipv4Addr)>) {
        let i = (self.head + self.len) % self.bufs.len();
        self.bufs[i] = buf;
        if let Some(m) = meta {
            self.meta[i] = m;
            self.len += 1;
        }
    }
    /// Copies the oldest queued frame into `out`.
    pub fn pop(&mut self, out: &mut [u8]) -> Option<(usize, IfaceId, Ipv4Addr)> {
        if self.len == 0 {
            return None;
        }
        let (len, tx_if, hop) = self.meta[self.head];
        let n = len.min(out.len());
        out[..n].copy_from_slice(&self.bufs[self.head][..n]);
        self.head = (self.head + 1) % self.bufs.len();
        self.len -= 1;
        Some((n, tx_if, hop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_segments_reassemble() {
        let mut s = Slot::new();
        s.isn = u32::MAX - 2; // wraps
        s.hold_segment((u32::MAX - 2).wrapping_add(5), b"world", b"f2")
            .unwrap();
        assert_eq!(s.contiguous(), 0);
        s.hold_segment(u32::MAX - 2, b"hello", b"f1").unwrap();
        assert_eq!(s.stream(), b"helloworld");
        assert_eq!(s.held, 2);
        assert_eq!(s.frame(1), b"f1");
        // Retransmission of the first part changes nothing.
        s.hold_segment(u32::MAX - 2, b"hel", b"f3").unwrap();
        assert_eq!(s.stream(), b"helloworld");
    }

    #[test]
    fn overlapping_bytes_must_match_what_is_held() {
        let mut s = Slot::new();
        s.isn = u32::MAX - 1; // the overlap straddles the wrap
        s.hold_segment(u32::MAX - 1, b"hello", b"f1").unwrap();
        s.hold_segment((u32::MAX - 1).wrapping_add(9), b"ld!", b"f2")
            .unwrap();
        // Overlaps both held ranges and fills the gap between them; the last byte differs.
        assert_eq!(
            s.hold_segment((u32::MAX - 1).wrapping_add(3), b"lo worlD", b"f3"),
            Err(HoldError::Mismatch)
        );
        // Refused: nothing changed, neither stream nor hold.
        assert_eq!(s.stream(), b"hello");
        assert_eq!(s.held, 2);
        // The same span with the right bytes fills the gap.
        s.hold_segment((u32::MAX - 1).wrapping_add(3), b"lo world", b"f3")
            .unwrap();
        assert_eq!(s.stream(), b"hello world!");
        assert_eq!(s.held, 3);
        // A single changed byte anywhere inside the stream is refused.
        assert_eq!(
            s.hold_segment((u32::MAX - 1).wrapping_add(6), b"W", b"f4"),
            Err(HoldError::Mismatch)
        );
    }

    #[test]
    fn bytes_before_the_stream_start_are_skipped() {
        let mut s = Slot::new();
        s.isn = 5;
        // Three bytes at sequence 2..5 (before the start), then the stream.
        s.hold_segment(2, b"xyzabc", b"f1").unwrap();
        assert_eq!(s.stream(), b"abc");
        // Wholly before the start: held, no stream bytes, nothing compared.
        s.hold_segment(0, b"qqqqq", b"f2").unwrap();
        assert_eq!((s.stream(), s.held), (&b"abc"[..], 2));
        // Sequence numbers 2^31 or more ahead are behind (RFC 9293 comparison): skipped too.
        s.hold_segment(5u32.wrapping_add(1 << 31), b"zz", b"f3")
            .unwrap();
        assert_eq!(s.stream(), b"abc");
        // What follows the skipped part is compared like any other byte.
        assert_eq!(s.hold_segment(4, b"-abX", b"f4"), Err(HoldError::Mismatch));
        s.hold_segment(4, b"-abcd", b"f4").unwrap();
        assert_eq!(s.stream(), b"abcd");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        /// Against a byte-by-byte model: a segment is taken iff every byte it overlaps is the
        /// byte already received there; a refused one changes nothing; the stream is the model's
        /// gap-free prefix. Segments may start before the stream, overlap, and carry changes.
        #[test]
        fn holding_agrees_with_a_first_copy_model(
            isn in proptest::prelude::any::<u32>(),
            segs in proptest::collection::vec(
                (-8i32..64, 1usize..24, proptest::option::of((0usize..24, 1u8..=255))),
                1..MAX_HELD,
            ),
        ) {
            let truth: Vec<u8> = (0..96u8).collect();
            let mut model: Vec<Option<u8>> = vec![None; 96];
            let mut s = Slot::new();
            s.isn = isn;
            for (rel, len, change) in segs {
                let mut bytes: Vec<u8> =
                    (0..len).map(|i| truth[(rel + 8) as usize + i].wrapping_sub(8)).collect();
                if let Some((at, x)) = change {
                    let at = at % len;
                    bytes[at] ^= x;
                }
                // Byte k of the segment is at stream offset rel + k (skipped when negative).
                let placed: Vec<(usize, u8)> = bytes
                    .iter()
                    .enumerate()
                    .filter_map(|(k, &b)| usize::try_from(rel + k as i32).ok().map(|o| (o, b)))
                    .collect();
                let conflict = placed.iter().any(|&(o, b)| model[o].is_some_and(|m| m != b));
                let before = (s.stream().to_vec(), s.held);
                let r = s.hold_segment(isn.wrapping_add(rel as u32), &bytes, b"frame");
                if conflict {
                    proptest::prop_assert_eq!(r, Err(HoldError::Mismatch));
                    proptest::prop_assert_eq!((s.stream().to_vec(), s.held), before);
                } else {
                    proptest::prop_assert_eq!(r, Ok(()));
                    for (o, b) in placed {
                        model[o] = Some(b);
                    }
                }
                let prefix: Vec<u8> = model.iter().map_while(|b| *b).collect();
                proptest::prop_assert_eq!(s.stream(), &prefix[..]);
            }
        }
    }

    #[test]
    fn budgets_are_enforced() {
        let mut s = Slot::new();
        assert_eq!(
            s.hold_segment(STREAM_BUDGET as u32 - 1, b"xy", b"f"),
            Err(HoldError::Budget)
        );
        for i in 0..MAX_HELD as u32 {
            s.hold_segment(i, b"a", b"f").unwrap();
        }
        assert_eq!(s.hold_segment(9, b"a", b"f"), Err(HoldError::Budget));
        let mut p = InspectPool::new(1);
        assert!(p.take(1, 0, 0).is_some());
        assert!(p.take(2, 0, 0).is_none());
    }

    #[test]
    fn only_the_owner_releases_or_reads_a_slot() {
        let mut p = InspectPool::new(4);
        let a = p.take(10, 0, 0).unwrap();
        let b = p.take(11, 0, 0).unwrap();
        assert!(!p.release(a, 11), "flow 11 does not hold slot {a}");
        assert!(p.get(a, 11).is_none() && p.get_mut(a, 11).is_none());
        assert!(p.get(a, 10).is_some());
        assert_eq!(p.in_use(), 2);
        assert!(p.release(a, 10));
        assert!(!p.release(a, 10), "a free slot is not freed twice");
        assert!(p.get(a, 10).is_none(), "a freed slot is nobody's");
        assert!(!p.release(b, u32::MAX));
        assert_eq!(p.in_use(), 1);
    }
}

/// What the first payload of a held flow says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L7<'a> {
    /// A name to match application rules on.
    Name(AppProto, &'a [u8]),
    /// A complete TLS ClientHello (or QUIC Initial) without SNI, or an HTTP request without Host.
    NoName(AppProto),
    /// Not enough bytes yet.
    NeedMore,
    /// Neither TLS, HTTP nor QUIC: application rules cannot allow it.
    Unknown,
    /// The name would need more than the per-flow budget.
    OverBudget,
    /// Bytes resent at a position already held differ from the first copy (TCP sequence
    /// numbers, QUIC CRYPTO offsets): an evasion attempt.
    Mismatch(Option<AppProto>),
}

/// Lower-cases an ASCII name into `buf` and strips one trailing dot. Non-ASCII or over-long
/// names come back empty (they match nothing).
pub fn lowercase<'b>(name: &[u8], buf: &'b mut [u8; 256]) -> &'b str {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.len() > buf.len() || !name.is_ascii() {
        return "";
    }
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    std::str::from_utf8(&buf[..name.len()]).unwrap_or("")
}

/// Reads the name a held flow's first bytes carry: TLS SNI or HTTP Host for a TCP stream.
pub fn classify<'a>(stream: &'a [u8], out: &'a mut [u8; 256]) -> L7<'a> {
    use crate::wire::host::{request_host, HostResult};
    use crate::wire::sni::{client_hello_sni, SniResult};
    match client_hello_sni(stream, out) {
        SniResult::Sni { len, .. } => return L7::Name(AppProto::Https, &out[..len]),
        SniResult::NoSni => return L7::NoName(AppProto::Https),
        SniResult::NeedMore => return L7::NeedMore,
        SniResult::Malformed(_) => return L7::Unknown,
        SniResult::NotTls => {}
    }
    match request_host(stream) {
        HostResult::Host(h) => L7::Name(AppProto::Http, h),
        HostResult::NoHost => L7::NoName(AppProto::Http),
        HostResult::NeedMore => L7::NeedMore,
        HostResult::NotHttp => L7::Unknown,
    }
}

/// What the client Initials of a held QUIC flow say ([`Slot::hold_datagram`]); the name is in
/// `out`. Not QUIC v1, or an Initial that does not decrypt: application rules cannot allow it.
pub fn classify_quic(r: QuicResult, out: &[u8; 256]) -> L7<'_> {
    match r {
        QuicResult::Sni { len, .. } => L7::Name(AppProto::Quic, &out[..len.min(out.len())]),
        QuicResult::NoSni => L7::NoName(AppProto::Quic),
        QuicResult::NeedMore => L7::NeedMore,
        QuicResult::Budget => L7::OverBudget,
        QuicResult::Mismatch => L7::Mismatch(Some(AppProto::Quic)),
        QuicResult::NotQuic | QuicResult::Malformed(_) => L7::Unknown,
    }
}
