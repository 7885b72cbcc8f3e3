//! The server name in the client Initial packets of a QUIC version 1 connection (RFC 9000
//! section 17.2.2, RFC 9001 section 5), read without allocating.
//!
//! Per datagram, [`InitialReader::push_datagram`] walks the coalesced long-header packets
//! (section 12.2), skips those that are not Initial, derives the client Initial keys from the
//! Destination Connection ID of the first Initial seen (RFC 9001 5.2), removes header protection
//! (AES-128 mask over a 16-byte sample, 5.4.3), decrypts the payload with AES-128-GCM in a
//! caller-provided scratch buffer (the datagram itself is never changed), and walks its frames:
//! PADDING, PING, ACK and CRYPTO; any other frame ends the walk of that packet. CRYPTO data is
//! placed by offset into a caller-provided buffer (out of order, over several packets and
//! datagrams); once its prefix holds a whole ClientHello, the SNI is read with
//! [`crate::wire::sni::handshake_sni`].
//!
//! Keys are always derived from the first client Initial's DCID: a client keeps those keys even
//! after it switches DCID (RFC 9001 5.2), and while a flow is held nothing reaches the server,
//! so no Retry or server Initial can intervene. QUIC version 2 and other versions are `NotQuic`.

use ring::aead::{self, quic as hpk};
use ring::hkdf;

use super::sni::{handshake_sni, SniResult};

/// QUIC version 1 (RFC 9000).
pub const VERSION_1: u32 = 0x0000_0001;
/// A client's datagram carrying an Initial is at least this long (RFC 9000 section 14.1).
pub const MIN_INITIAL_DATAGRAM: usize = 1200;
/// Disjoint CRYPTO byte ranges tracked at once (merged as they arrive).
pub const MAX_RANGES: usize = 16;

/// RFC 9001 section 5.2.
const INITIAL_SALT: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const TAG_LEN: usize = 16;
const SAMPLE_LEN: usize = 16;
const MAX_CID: usize = 20;
/// A client's first Destination Connection ID is at least 8 bytes (RFC 9000 section 7.2).
const MIN_CLIENT_DCID: usize = 8;

const TYPE_INITIAL: u8 = 0;
const TYPE_RETRY: u8 = 3;

const FRAME_PADDING: u64 = 0x00;
const FRAME_PING: u64 = 0x01;
const FRAME_ACK: u64 = 0x02;
const FRAME_ACK_ECN: u64 = 0x03;
const FRAME_CRYPTO: u64 = 0x06;

/// What the client Initials of a flow say about its server name so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuicResult {
    /// The ClientHello names a server; its `len` bytes were copied to the output buffer.
    Sni { len: usize, ech: bool },
    /// A complete ClientHello without a server_name extension.
    NoSni,
    /// The ClientHello is not complete yet (more Initials to come).
    NeedMore,
    /// The first datagram is not a QUIC version 1 long-header packet.
    NotQuic,
    /// The CRYPTO data does not fit the caller's buffer or range table.
    Budget,
    /// CRYPTO data differs from what was received at the same offset (RFC 9000 2.2): a client
    /// showing the firewall one ClientHello and the server another.
    Mismatch,
    /// It claims to be a QUIC v1 Initial but does not decrypt or parse.
    Malformed(&'static str),
}

/// The client Initial secrets of one connection (RFC 9001 section 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitialKeys {
    pub key: [u8; 16],
    pub iv: [u8; 12],
    pub hp: [u8; 16],
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context, into `out` (at most 255 B).
fn expand_label(prk: &hkdf::Prk, label: &[u8], out: &mut [u8]) {
    let len = (out.len() as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
    // `expand` fails only above 255 hash lengths of output; ours are at most 32 bytes.
    if let Ok(okm) = prk.expand(&info, Len(out.len())) {
        let _ = okm.fill(out);
    }
}

impl InitialKeys {
    /// The client's Initial key, IV and header-protection key for `dcid`.
    pub fn client(dcid: &[u8]) -> Self {
        let initial = hkdf::Salt::new(hkdf::HKDF_SHA256, &INITIAL_SALT).extract(dcid);
        let mut secret = [0u8; 32];
        expand_label(&initial, b"client in", &mut secret);
        let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &secret);
        let mut k = InitialKeys {
            key: [0; 16],
            iv: [0; 12],
            hp: [0; 16],
        };
        expand_label(&prk, b"quic key", &mut k.key);
        expand_label(&prk, b"quic iv", &mut k.iv);
        expand_label(&prk, b"quic hp", &mut k.hp);
        k
    }
}

/// Reads a variable-length integer (RFC 9000 section 16) at `*pos`.
fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *b.get(*pos)?;
    let n = 1usize << (first >> 6);
    let bytes = b.get(*pos..pos.checked_add(n)?)?;
    let mut v = u64::from(first & 0x3f);
    for &x in &bytes[1..] {
        v = (v << 8) | u64::from(x);
    }
    *pos += n;
    Some(v)
}

/// One long-header packet located in a datagram.
struct Long {
    ty: u8,
    /// Offset of the (protected) packet number.
    pn_at: usize,
    /// End of this packet in the datagram.
    end: usize,
    dcid: ([u8; MAX_CID], usize),
}

/// Why a datagram could not be read.
enum Fail {
    NotQuic,
    Budget,
    Mismatch,
    Malformed(&'static str),
}

/// Parses the long header at `d[at..]` (version 1 already checked by the caller).
fn long_header(d: &[u8], at: usize) -> Result<Long, Fail> {
    use Fail::Malformed as M;
    let trunc = "a long header is truncated";
    let first = d[at];
    let ty = (first >> 4) & 3;
    let mut p = at + 5;
    let dl = usize::from(*d.get(p).ok_or(M(trunc))?);
    if dl > MAX_CID {
        return Err(M("a connection ID is longer than 20 bytes"));
    }
    let dcid_bytes = d.get(p + 1..p + 1 + dl).ok_or(M(trunc))?;
    let mut dcid = [0u8; MAX_CID];
    dcid[..dl].copy_from_slice(dcid_bytes);
    p += 1 + dl;
    let sl = usize::from(*d.get(p).ok_or(M(trunc))?);
    if sl > MAX_CID {
        return Err(M("a connection ID is longer than 20 bytes"));
    }
    p += 1 + sl;
    if p > d.len() {
        return Err(M(trunc));
    }
    if ty == TYPE_RETRY {
        // A Retry has no length and comes from servers only: nothing after it is readable.
        return Ok(Long {
            ty,
            pn_at: d.len(),
            end: d.len(),
            dcid: (dcid, dl),
        });
    }
    if ty == TYPE_INITIAL {
        let tok = varint(d, &mut p).ok_or(M(trunc))?;
        p = usize::try_from(tok)
            .ok()
            .and_then(|t| p.checked_add(t))
            .filter(|&e| e <= d.len())
            .ok_or(M("the token is longer than the datagram"))?;
    }
    let len = varint(d, &mut p).ok_or(M(trunc))?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| p.checked_add(l))
        .filter(|&e| e <= d.len())
        .ok_or(M("a packet length runs past the datagram"))?;
    Ok(Long {
        ty,
        pn_at: p,
        end,
        dcid: (dcid, dl),
    })
}

/// The state of one flow's client Initials: the first DCID's keys and the CRYPTO ranges
/// received. Small and `Copy`-free of references: it lives in the flow's inspection slot; the
/// CRYPTO bytes themselves live in the caller's buffer.
#[derive(Clone, Debug)]
pub struct InitialReader {
    keys: Option<InitialKeys>,
    /// Received CRYPTO byte ranges (start, end), sorted, merged, disjoint.
    ranges: [(u32, u32); MAX_RANGES],
    nranges: usize,
}

impl Default for InitialReader {
    fn default() -> Self {
        Self::new()
    }
}

impl InitialReader {
    pub const fn new() -> Self {
        InitialReader {
            keys: None,
            ranges: [(0, 0); MAX_RANGES],
            nranges: 0,
        }
    }

    /// Forgets everything (a slot reused for another flow).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Whether a client Initial has been decrypted for this flow.
    pub fn seen_initial(&self) -> bool {
        self.keys.is_some()
    }

    /// Bytes of CRYPTO data received without a gap from offset 0.
    pub fn contiguous(&self) -> usize {
        match self.ranges[..self.nranges].first() {
            Some(&(0, e)) => e as usize,
            _ => 0,
        }
    }

    /// Decrypts the client Initials in `datagram`, adds their CRYPTO data to `crypto`, and
    /// reads the SNI from the reassembled ClientHello into `out`. `scratch` must hold the
    /// longest packet (a datagram's length suffices); `crypto` is the per-flow CRYPTO buffer.
    pub fn push_datagram(
        &mut self,
        datagram: &[u8],
        scratch: &mut [u8],
        crypto: &mut [u8],
        out: &mut [u8; 256],
    ) -> QuicResult {
        match self.open_datagram(datagram, scratch, crypto) {
            Ok(()) => {}
            Err(Fail::NotQuic) => return QuicResult::NotQuic,
            Err(Fail::Budget) => return QuicResult::Budget,
            Err(Fail::Mismatch) => return QuicResult::Mismatch,
            Err(Fail::Malformed(m)) => return QuicResult::Malformed(m),
        }
        self.sni(crypto, out)
    }

    /// Reads the SNI from the CRYPTO data received so far.
    pub fn sni(&self, crypto: &[u8], out: &mut [u8; 256]) -> QuicResult {
        let n = self.contiguous().min(crypto.len());
        match handshake_sni(&crypto[..n], out) {
            SniResult::Sni { len, ech } => QuicResult::Sni { len, ech },
            SniResult::NoSni => QuicResult::NoSni,
            SniResult::NeedMore => QuicResult::NeedMore,
            SniResult::NotTls => QuicResult::Malformed("the CRYPTO data is not TLS"),
            SniResult::Malformed(m) => QuicResult::Malformed(m),
        }
    }

    fn open_datagram(
        &mut self,
        d: &[u8],
        scratch: &mut [u8],
        crypto: &mut [u8],
    ) -> Result<(), Fail> {
        let mut at = 0;
        while at < d.len() {
            let first = d[at];
            if first & 0x80 == 0 {
                // A short header takes the rest of the datagram.
                if at == 0 && !self.seen_initial() {
                    return Err(Fail::NotQuic);
                }
                break;
            }
            let version = match d.get(at + 1..at + 5) {
                Some(v) => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                None if at == 0 => return Err(Fail::NotQuic),
                None => return Err(Fail::Malformed("a long header is truncated")),
            };
            if version != VERSION_1 {
                if at == 0 {
                    return Err(Fail::NotQuic);
                }
                return Err(Fail::Malformed(
                    "packets of another version are coalesced with version 1",
                ));
            }
            let pkt = long_header(d, at)?;
            if pkt.ty == TYPE_INITIAL {
                if d.len() < MIN_INITIAL_DATAGRAM {
                    return Err(Fail::Malformed(
                        "a client Initial in a datagram shorter than 1200 bytes",
                    ));
                }
                let keys = match self.keys {
                    Some(k) => k,
                    None => {
                        let (id, n) = &pkt.dcid;
                        if *n < MIN_CLIENT_DCID {
                            return Err(Fail::Malformed(
                                "the client's first Destination Connection ID is shorter than 8 bytes",
                            ));
                        }
                        let k = InitialKeys::client(&id[..*n]);
                        self.keys = Some(k);
                        k
                    }
                };
                self.open_initial(&d[at..pkt.end], pkt.pn_at - at, &keys, scratch, crypto)?;
            } else if at == 0 && !self.seen_initial() && pkt.ty == TYPE_RETRY {
                return Err(Fail::NotQuic);
            }
            if pkt.end <= at {
                break;
            }
            at = pkt.end;
        }
        Ok(())
    }

    /// Decrypts one Initial packet `pkt` (its number at `pn_at`) and takes its CRYPTO frames.
    fn open_initial(
        &mut self,
        pkt: &[u8],
        pn_at: usize,
        keys: &InitialKeys,
        scratch: &mut [u8],
        crypto: &mut [u8],
    ) -> Result<(), Fail> {
        use Fail::Malformed as M;
        if pkt.len() < pn_at + 4 + SAMPLE_LEN {
            return Err(M("an Initial is too short to sample for header protection"));
        }
        if pkt.len() > scratch.len() {
            return Err(M("an Initial is longer than the decryption buffer"));
        }
        let buf = &mut scratch[..pkt.len()];
        buf.copy_from_slice(pkt);
        let hp = hpk::HeaderProtectionKey::new(&hpk::AES_128, &keys.hp)
            .map_err(|_| M("the header protection key is unusable"))?;
        let mask = hp
            .new_mask(&buf[pn_at + 4..pn_at + 4 + SAMPLE_LEN])
            .map_err(|_| M("the header protection sample is unusable"))?;
        buf[0] ^= mask[0] & 0x0f;
        let pn_len = usize::from(buf[0] & 3) + 1;
        let mut pn = 0u64;
        for i in 0..pn_len {
            buf[pn_at + i] ^= mask[1 + i];
            pn = (pn << 8) | u64::from(buf[pn_at + i]);
        }
        let hdr_end = pn_at + pn_len;
        if pkt.len() < hdr_end + TAG_LEN {
            return Err(M("an Initial is shorter than its AEAD tag"));
        }
        // The first Initials of a connection carry small packet numbers: the truncated number
        // is the full one (RFC 9000 A.3 with no packet received yet).
        let mut nonce = keys.iv;
        for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
            *n ^= p;
        }
        let key = aead::UnboundKey::new(&aead::AES_128_GCM, &keys.key)
            .map_err(|_| M("the packet key is unusable"))?;
        let key = aead::LessSafeKey::new(key);
        let (header, body) = buf.split_at_mut(hdr_end);
        let plain = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&*header),
                body,
            )
            .map_err(|_| M("an Initial does not decrypt (bad AEAD tag)"))?;
        if header[0] & 0x0c != 0 {
            return Err(M("the reserved bits of an Initial are set"));
        }
        self.frames(plain, crypto)
    }

    /// Walks the frames of a decrypted Initial payload.
    fn frames(&mut self, f: &[u8], crypto: &mut [u8]) -> Result<(), Fail> {
        use Fail::Malformed as M;
        let trunc = "a frame is truncated";
        let mut p = 0;
        while p < f.len() {
            let ty = varint(f, &mut p).ok_or(M(trunc))?;
            match ty {
                // Runs of PADDING (most of a client Initial) are skipped in one pass.
                FRAME_PADDING => p += f[p..].iter().take_while(|&&b| b == 0).count(),
                FRAME_PING => {}
                FRAME_ACK | FRAME_ACK_ECN => {
                    let _largest = varint(f, &mut p).ok_or(M(trunc))?;
                    let _delay = varint(f, &mut p).ok_or(M(trunc))?;
                    let count = varint(f, &mut p).ok_or(M(trunc))?;
                    let _first = varint(f, &mut p).ok_or(M(trunc))?;
                    // Each range is at least two bytes: a count beyond the payload is bogus.
                    if count > (f.len() as u64) {
                        return Err(M(trunc));
                    }
                    for _ in 0..count * 2 {
                        varint(f, &mut p).ok_or(M(trunc))?;
                    }
                    if ty == FRAME_ACK_ECN {
                        for _ in 0..3 {
                            varint(f, &mut p).ok_or(M(trunc))?;
                        }
                    }
                }
                FRAME_CRYPTO => {
                    let off = varint(f, &mut p).ok_or(M(trunc))?;
                    let len = varint(f, &mut p).ok_or(M(trunc))?;
                    let end = usize::try_from(len)
                        .ok()
                        .and_then(|l| p.checked_add(l))
                        .filter(|&e| e <= f.len())
                        .ok_or(M("a CRYPTO frame is longer than its packet"))?;
                    self.take_crypto(off, &f[p..end], crypto)?;
                    p = end;
                }
                // CONNECTION_CLOSE or a frame not allowed in Initials: nothing more to read.
                _ => break,
            }
        }
        Ok(())
    }

    /// Places CRYPTO bytes at `off`. Bytes already received must not change (RFC 9000 2.2):
    /// a client that resends different data at an offset (to show the firewall one name and
    /// the server another) is refused.
    fn take_crypto(&mut self, off: u64, data: &[u8], crypto: &mut [u8]) -> Result<(), Fail> {
        if data.is_empty() {
            return Ok(());
        }
        let start = usize::try_from(off).map_err(|_| Fail::Budget)?;
        let end = start.checked_add(data.len()).ok_or(Fail::Budget)?;
        if end > crypto.len() || end > u32::MAX as usize {
            return Err(Fail::Budget);
        }
        // Compare where already received, copy into the gaps.
        let mut pos = start;
        for &(s, e) in &self.ranges[..self.nranges] {
            let (s, e) = (s as usize, e as usize);
            if e <= pos {
                continue;
            }
            if s >= end {
                break;
            }
            if s > pos {
                crypto[pos..s].copy_from_slice(&data[pos - start..s - start]);
            }
            let o_end = e.min(end);
            let o_start = s.max(pos);
            if crypto[o_start..o_end] != data[o_start - start..o_end - start] {
                return Err(Fail::Mismatch);
            }
            pos = o_end;
        }
        if pos < end {
            crypto[pos..end].copy_from_slice(&data[pos - start..]);
        }
        self.add_range(start as u32, end as u32)
    }

    fn add_range(&mut self, s: u32, e: u32) -> Result<(), Fail> {
        let r = &mut self.ranges;
        let n = self.nranges;
        // Index of the first range that ends at or after `s` (touching ranges merge).
        let mut i = 0;
        while i < n && r[i].1 < s {
            i += 1;
        }
        // Ranges i..j overlap or touch [s, e].
        let mut j = i;
        let (mut ns, mut ne) = (s, e);
        while j < n && r[j].0 <= e {
            ns = ns.min(r[j].0);
            ne = ne.max(r[j].1);
            j += 1;
        }
        if i == j {
            if n == MAX_RANGES {
                return Err(Fail::Budget);
            }
            r.copy_within(i..n, i + 1);
            r[i] = (ns, ne);
            self.nranges = n + 1;
        } else {
            r[i] = (ns, ne);
            r.copy_within(j..n, i + 1);
            self.nranges = n - (j - i - 1);
        }
        Ok(())
    }
}

/// Reads the SNI from a sequence of datagrams at once (tests, benches, fuzzing): each datagram
/// in turn, stopping at the first answer that is not `NeedMore`.
pub fn initial_sni(
    datagrams: &[&[u8]],
    scratch: &mut [u8],
    crypto: &mut [u8],
    out: &mut [u8; 256],
) -> QuicResult {
    let mut r = InitialReader::new();
    let mut last = QuicResult::NeedMore;
    for d in datagrams {
        last = r.push_datagram(d, scratch, crypto, out);
        if last != QuicResult::NeedMore {
            break;
        }
    }
    last
}

/// Builds a protected client Initial into `out` (for tests, benches and fuzz seeds; the
/// datapath never sends one): header for `dcid`/`scid`, packet number `pn` in `pn_len` bytes,
/// `frames` then PADDING up to a datagram of `pad_to` bytes, sealed with `keys`. Returns the
/// length, or None if `out` is too small or the arguments are out of range.
#[allow(clippy::too_many_arguments)]
pub fn seal_initial(
    keys: &InitialKeys,
    dcid: &[u8],
    scid: &[u8],
    pn: u32,
    pn_len: usize,
    frames: &[u8],
    pad_to: usize,
    out: &mut [u8],
) -> Option<usize> {
    seal_inner(keys, dcid, scid, pn, pn_len, frames, pad_to, 0, out)
}

#[allow(clippy::too_many_arguments)]
fn seal_inner(
    keys: &InitialKeys,
    dcid: &[u8],
    scid: &[u8],
    pn: u32,
    pn_len: usize,
    frames: &[u8],
    pad_to: usize,
    reserved: u8,
    out: &mut [u8],
) -> Option<usize> {
    if !(1..=4).contains(&pn_len) || dcid.len() > MAX_CID || scid.len() > MAX_CID {
        return None;
    }
    let hdr = 1 + 4 + 1 + dcid.len() + 1 + scid.len() + 1 + 2 + pn_len;
    let payload = frames
        .len()
        .max(pad_to.saturating_sub(hdr + TAG_LEN))
        .max(4 + SAMPLE_LEN - pn_len);
    let total = hdr + payload + TAG_LEN;
    let length = pn_len + payload + TAG_LEN;
    if total > out.len() || length > 0x3fff {
        return None;
    }
    out[0] = 0xc0 | ((reserved & 3) << 2) | (pn_len as u8 - 1);
    out[1..5].copy_from_slice(&VERSION_1.to_be_bytes());
    let mut p = 5;
    for cid in [dcid, scid] {
        out[p] = cid.len() as u8;
        out[p + 1..p + 1 + cid.len()].copy_from_slice(cid);
        p += 1 + cid.len();
    }
    out[p] = 0; // token length
    out[p + 1..p + 3].copy_from_slice(&(0x4000 | length as u16).to_be_bytes());
    p += 3;
    let pn_at = p;
    out[p..p + pn_len].copy_from_slice(&pn.to_be_bytes()[4 - pn_len..]);
    p += pn_len;
    out[p..p + frames.len()].copy_from_slice(frames);
    out[p + frames.len()..p + payload].fill(0);
    let mut nonce = keys.iv;
    for (n, b) in nonce[4..].iter_mut().zip(u64::from(pn).to_be_bytes()) {
        *n ^= b;
    }
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &keys.key).ok()?);
    let (header, rest) = out.split_at_mut(hdr);
    let tag = key
        .seal_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(&*header),
            &mut rest[..payload],
        )
        .ok()?;
    rest[payload..payload + TAG_LEN].copy_from_slice(tag.as_ref());
    let hp = hpk::HeaderProtectionKey::new(&hpk::AES_128, &keys.hp).ok()?;
    let mask = hp.new_mask(&out[pn_at + 4..pn_at + 4 + SAMPLE_LEN]).ok()?;
    out[0] ^= mask[0] & 0x0f;
    for i in 0..pn_len {
        out[pn_at + i] ^= mask[1 + i];
    }
    Some(total)
}

#[cfg(test)]
mod tests;
