//! A minimal DNS stub-resolver codec (RFC 1035): writes an A query into a caller's buffer and
//! reads the A records (with their TTLs) of the answer to it. Zero-allocation and panic-free on
//! any input: every read is bounds-checked, compression pointers must point backwards and are
//! followed at most [`MAX_JUMPS`] times, and a name is at most 255 bytes on the wire.
//!
//! An answer is taken only when it echoes the query's id and its question byte for byte: the
//! caller writes the name in a random mix of upper and lower case (DNS 0x20,
//! draft-vixie-dnsext-dns0x20) and [`Response::parse`] tells a case difference apart
//! ([`DnsError::CaseMismatch`]).
//!
//! The answer reader follows CNAME chains inside the answer section: an A record counts when its
//! owner is the question name or the target of a CNAME already accepted, and its TTL is capped
//! by the TTLs of the CNAMEs that led to it.

use std::net::Ipv4Addr;

/// Longest name on the wire (RFC 1035 2.3.4).
pub const MAX_NAME: usize = 255;
/// Compression pointers followed per name before giving up.
pub const MAX_JUMPS: usize = 16;
/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type CNAME.
pub const TYPE_CNAME: u16 = 5;
/// Class IN.
pub const CLASS_IN: u16 = 1;
/// Response code NXDOMAIN.
pub const RCODE_NXDOMAIN: u8 = 3;

/// Why a query could not be written or an answer not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("the buffer is too small")]
    BufferTooSmall,
    #[error("the name is not a valid host name")]
    BadName,
    #[error("the message is truncated or malformed")]
    Malformed,
    #[error("the message is not a response")]
    NotResponse,
    #[error("the response id does not match the query")]
    IdMismatch,
    #[error("the response is for another question")]
    QuestionMismatch,
    /// The question is the query's but its name's letters are in another case: the query
    /// name's case is random (DNS 0x20) and a genuine server echoes it byte for byte.
    #[error("the response echoes the question name in another case")]
    CaseMismatch,
    #[error("the response was truncated (TC bit)")]
    Truncated,
}

/// Writes a recursive A/IN query for `name` (dots between labels, optional trailing dot) with
/// `id` into `buf`; returns its length.
pub fn write_query(buf: &mut [u8], id: u16, name: &str) -> Result<usize, DnsError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(DnsError::BadName);
    }
    let need = 12 + name.len() + 2 + 4;
    if buf.len() < need {
        return Err(DnsError::BufferTooSmall);
    }
    let hdr = [
        (id >> 8) as u8,
        id as u8,
        0x01, // RD
        0x00,
        0,
        1, // QDCOUNT
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    buf[..12].copy_from_slice(&hdr);
    let mut at = 12;
    for label in name.split('.') {
        let l = label.as_bytes();
        if l.is_empty()
            || l.len() > 63
            || !l
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(DnsError::BadName);
        }
        buf[at] = l.len() as u8;
        buf[at + 1..at + 1 + l.len()].copy_from_slice(l);
        at += 1 + l.len();
    }
    buf[at] = 0;
    buf[at + 1..at + 5].copy_from_slice(&[0, TYPE_A as u8, 0, CLASS_IN as u8]);
    Ok(at + 5)
}

fn u16_at(m: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*m.get(at)?, *m.get(at + 1)?]))
}

fn u32_at(m: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *m.get(at)?,
        *m.get(at + 1)?,
        *m.get(at + 2)?,
        *m.get(at + 3)?,
    ]))
}

/// Skips the (possibly compressed) name at `at`; returns the offset after it.
fn skip_name(m: &[u8], mut at: usize) -> Option<usize> {
    let mut len = 0usize;
    loop {
        let b = *m.get(at)?;
        match b & 0xc0 {
            0x00 if b == 0 => return Some(at + 1),
            0x00 => {
                len += usize::from(b) + 1;
                if len > MAX_NAME {
                    return None;
                }
                at += 1 + usize::from(b);
            }
            0xc0 => {
                // Check the pointer target is readable; the name ends here on the wire.
                m.get(at + 1)?;
                return Some(at + 2);
            }
            _ => return None,
        }
    }
}

/// Iterates the labels of the name at `at`, following backward pointers.
struct Labels<'a> {
    m: &'a [u8],
    at: usize,
    jumps: usize,
    len: usize,
    done: bool,
}

impl<'a> Labels<'a> {
    fn new(m: &'a [u8], at: usize) -> Self {
        Labels {
            m,
            at,
            jumps: 0,
            len: 0,
            done: false,
        }
    }
}

/// A label, or a malformed name.
type Label<'a> = Result<&'a [u8], ()>;

impl<'a> Iterator for Labels<'a> {
    type Item = Label<'a>;
    fn next(&mut self) -> Option<Label<'a>> {
        if self.done {
            return None;
        }
        loop {
            let Some(&b) = self.m.get(self.at) else {
                self.done = true;
                return Some(Err(()));
            };
            match b & 0xc0 {
                0x00 if b == 0 => {
                    self.done = true;
                    return None;
                }
                0x00 => {
                    let l = usize::from(b);
                    self.len += l + 1;
                    let label = self.m.get(self.at + 1..self.at + 1 + l);
                    match label {
                        Some(s) if self.len <= MAX_NAME => {
                            self.at += 1 + l;
                            return Some(Ok(s));
                        }
                        _ => {
                            self.done = true;
                            return Some(Err(()));
                        }
                    }
                }
                0xc0 => {
                    let Some(&lo) = self.m.get(self.at + 1) else {
                        self.done = true;
                        return Some(Err(()));
                    };
                    let target = (usize::from(b & 0x3f) << 8) | usize::from(lo);
                    self.jumps += 1;
                    // Only backward pointers: no loops, and a bounded number of them.
                    if target >= self.at || self.jumps > MAX_JUMPS {
                        self.done = true;
                        return Some(Err(()));
                    }
                    self.at = target;
                }
                _ => {
                    self.done = true;
                    return Some(Err(()));
                }
            }
        }
    }
}

/// Whether the names at offsets `a` and `b` of `m` are equal (ASCII case-insensitive); a
/// malformed name equals nothing.
fn names_eq(m: &[u8], a: usize, b: usize) -> bool {
    let mut x = Labels::new(m, a);
    let mut y = Labels::new(m, b);
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(Ok(p)), Some(Ok(q))) if p.eq_ignore_ascii_case(q) => {}
            _ => return false,
        }
    }
}

/// A checked response to one A query; [`Response::addresses`] iterates its A records.
#[derive(Clone, Copy, Debug)]
pub struct Response<'a> {
    m: &'a [u8],
    /// The response code (0 = NOERROR, 3 = NXDOMAIN, 2 = SERVFAIL ...).
    pub rcode: u8,
    qname: usize,
    answers_at: usize,
    ancount: u16,
}

impl<'a> Response<'a> {
    /// Checks that `m` answers `query` (the bytes [`write_query`] wrote): same id, QR set, the
    /// same single question, its name byte for byte ([`DnsError::CaseMismatch`] when only the
    /// case of letters differs: the caller randomises it, DNS 0x20), and then not truncated
    /// ([`DnsError::Truncated`] only for an answer that passed every other check, so a forged
    /// TC answer cannot send the caller to TCP).
    pub fn parse(m: &'a [u8], query: &[u8]) -> Result<Response<'a>, DnsError> {
        if m.len() < 12 || query.len() < 12 {
            return Err(DnsError::Malformed);
        }
        if m[0..2] != query[0..2] {
            return Err(DnsError::IdMismatch);
        }
        if m[2] & 0x80 == 0 {
            return Err(DnsError::NotResponse);
        }
        let qd = u16_at(m, 4).ok_or(DnsError::Malformed)?;
        let an = u16_at(m, 6).ok_or(DnsError::Malformed)?;
        if qd != 1 {
            return Err(DnsError::QuestionMismatch);
        }
        let qend = skip_name(m, 12).ok_or(DnsError::Malformed)?;
        let qtail = m.get(qend..qend + 4).ok_or(DnsError::Malformed)?;
        let want_end = skip_name(query, 12).ok_or(DnsError::Malformed)?;
        let want = query.get(12..want_end).ok_or(DnsError::Malformed)?;
        let got = m.get(12..qend).ok_or(DnsError::Malformed)?;
        if query.get(want_end..want_end + 4) != Some(qtail) || !want.eq_ignore_ascii_case(got) {
            return Err(DnsError::QuestionMismatch);
        }
        if want != got {
            return Err(DnsError::CaseMismatch);
        }
        if m[2] & 0x02 != 0 {
            return Err(DnsError::Truncated);
        }
        Ok(Response {
            m,
            rcode: m[3] & 0x0f,
            qname: 12,
            answers_at: qend + 4,
            ancount: an,
        })
    }

    /// The A records answering the question: (address, TTL in seconds). Stops at the first
    /// malformed record.
    pub fn addresses(&self) -> Addresses<'a> {
        Addresses {
            m: self.m,
            at: self.answers_at,
            left: self.ancount,
            target: self.qname,
            chain_ttl: u32::MAX,
        }
    }
}

/// Iterator over the A records of a [`Response`].
#[derive(Clone, Debug)]
pub struct Addresses<'a> {
    m: &'a [u8],
    at: usize,
    left: u16,
    /// Offset of the name A records must be owned by (the question, then CNAME targets).
    target: usize,
    chain_ttl: u32,
}

impl Iterator for Addresses<'_> {
    type Item = (Ipv4Addr, u32);
    fn next(&mut self) -> Option<(Ipv4Addr, u32)> {
        while self.left > 0 {
            self.left -= 1;
            let owner = self.at;
            let end = skip_name(self.m, owner)?;
            let ty = u16_at(self.m, end)?;
            let class = u16_at(self.m, end + 2)?;
            let ttl = u32_at(self.m, end + 4)?;
            let rdlen = usize::from(u16_at(self.m, end + 8)?);
            let rdata = end + 10;
            let rd = self.m.get(rdata..rdata + rdlen)?;
            self.at = rdata + rdlen;
            // RFC 2181 8: a TTL with the top bit set is treated as zero.
            let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
            if class != CLASS_IN || !names_eq(self.m, owner, self.target) {
                continue;
            }
            match (ty, rd) {
                (TYPE_A, &[a, b, c, d]) => {
                    return Some((Ipv4Addr::new(a, b, c, d), ttl.min(self.chain_ttl)));
                }
                (TYPE_CNAME, _) => {
                    skip_name(self.m, rdata).filter(|&e| e <= self.at)?;
                    self.target = rdata;
                    self.chain_ttl = self.chain_ttl.min(ttl);
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str) -> Vec<u8> {
        let mut b = [0u8; 512];
        let n = write_query(&mut b, 0xbeef, name).expect("query");
        b[..n].to_vec()
    }

    /// A response to `q` with the given answer records (owner as raw bytes).
    fn response(q: &[u8], rcode: u8, answers: &[(&[u8], u16, u32, &[u8])]) -> Vec<u8> {
        let mut m = q.to_vec();
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for (owner, ty, ttl, rd) in answers {
            m.extend_from_slice(owner);
            m.extend_from_slice(&ty.to_be_bytes());
            m.extend_from_slice(&CLASS_IN.to_be_bytes());
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            m.extend_from_slice(rd);
        }
        m
    }

    const PTR_Q: &[u8] = &[0xc0, 12];

    #[test]
    fn query_layout() {
        let q = query("api.Example.");
        assert_eq!(
            q,
            [
                0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'a', b'p', b'i', 7, b'E', b'x', b'a',
                b'm', b'p', b'l', b'e', 0, 0, 1, 0, 1
            ]
        );
        let mut small = [0u8; 20];
        assert_eq!(
            write_query(&mut small, 1, "api.example"),
            Err(DnsError::BufferTooSmall)
        );
        let mut b = [0u8; 512];
        for bad in [
            "",
            ".",
            "a..b",
            "a b",
            &"x".repeat(64),
            &format!("{}a", "a.".repeat(127)),
        ] {
            assert_eq!(write_query(&mut b, 1, bad), Err(DnsError::BadName), "{bad}");
        }
    }

    #[test]
    fn a_records_with_ttls() {
        let q = query("api.example");
        let m = response(
            &q,
            0,
            &[
                (PTR_Q, TYPE_A, 5, &[203, 0, 113, 10]),
                (PTR_Q, TYPE_A, 7, &[203, 0, 113, 11]),
            ],
        );
        let r = Response::parse(&m, &q).expect("parse");
        assert_eq!(r.rcode, 0);
        let v: Vec<_> = r.addresses().collect();
        assert_eq!(
            v,
            [
                (Ipv4Addr::new(203, 0, 113, 10), 5),
                (Ipv4Addr::new(203, 0, 113, 11), 7)
            ]
        );
    }

    #[test]
    fn cname_chain_followed_and_caps_ttl() {
        let q = query("www.example");
        // www.example CNAME api.example (ttl 3); api.example A; other.example A (not ours).
        let mut rd = vec![3, b'a', b'p', b'i'];
        rd.extend_from_slice(&[0xc0, 16]); // "example" of the question
        let base = response(&q, 0, &[(PTR_Q, TYPE_CNAME, 3, &rd)]);
        let cname_target = (base.len() - rd.len()) as u16;
        let owner = [0xc0 | (cname_target >> 8) as u8, cname_target as u8];
        let other = [5, b'o', b't', b'h', b'e', b'r', 0xc0, 16];
        let m = response(
            &q,
            0,
            &[
                (PTR_Q, TYPE_CNAME, 3, &rd),
                (&owner, TYPE_A, 60, &[203, 0, 113, 10]),
                (&other, TYPE_A, 60, &[198, 51, 100, 66]),
            ],
        );
        let r = Response::parse(&m, &q).expect("parse");
        let v: Vec<_> = r.addresses().collect();
        assert_eq!(v, [(Ipv4Addr::new(203, 0, 113, 10), 3)]);
    }

    #[test]
    fn nxdomain_and_mismatches() {
        let q = query("nope.example");
        let m = response(&q, RCODE_NXDOMAIN, &[]);
        let r = Response::parse(&m, &q).expect("parse");
        assert_eq!(r.rcode, RCODE_NXDOMAIN);
        assert_eq!(r.addresses().count(), 0);

        let mut bad = m.clone();
        bad[1] ^= 1;
        assert_eq!(Response::parse(&bad, &q).err(), Some(DnsError::IdMismatch));
        let mut bad = m.clone();
        bad[2] &= 0x7f;
        assert_eq!(Response::parse(&bad, &q).err(), Some(DnsError::NotResponse));
        let mut bad = m.clone();
        bad[2] |= 0x02;
        assert_eq!(Response::parse(&bad, &q).err(), Some(DnsError::Truncated));
        let other = query("api.example");
        assert_eq!(
            Response::parse(&response(&other, 0, &[]), &q).err(),
            Some(DnsError::QuestionMismatch)
        );
        // Same name in another case: rejected (the query's case is random, DNS 0x20, and a
        // genuine server echoes it byte for byte).
        let upper = query("NOPE.EXAMPLE");
        let mut m2 = response(&upper, 0, &[]);
        m2[0..2].copy_from_slice(&q[0..2]);
        assert_eq!(Response::parse(&m2, &q).err(), Some(DnsError::CaseMismatch));
        let mixed = query("nOpE.eXaMpLe");
        let mut m3 = response(&mixed, 0, &[]);
        assert!(Response::parse(&m3, &mixed).is_ok(), "the same mixed case");
        m3[13] ^= 0x20; // 'n' -> 'N' in the echoed question
        assert_eq!(
            Response::parse(&m3, &mixed).err(),
            Some(DnsError::CaseMismatch),
            "one letter's case differs"
        );
        // Another type or class in the echoed question: another question.
        let mut bad = m.clone();
        let t = q.len() - 3;
        bad[t] = 28; // AAAA
        assert_eq!(
            Response::parse(&bad, &q).err(),
            Some(DnsError::QuestionMismatch)
        );
        // TC is reported only for an answer that is otherwise ours: a forged TC answer with
        // another id or question is just that mismatch.
        let mut bad = m.clone();
        bad[2] |= 0x02;
        bad[0] ^= 1;
        assert_eq!(Response::parse(&bad, &q).err(), Some(DnsError::IdMismatch));
        let mut bad = m2.clone();
        bad[2] |= 0x02;
        assert_eq!(
            Response::parse(&bad, &q).err(),
            Some(DnsError::CaseMismatch)
        );
    }

    #[test]
    fn pointer_loops_and_truncation_never_panic() {
        let q = query("api.example");
        // Owner is a pointer to itself: rejected, no record yielded.
        let at = q.len() as u16;
        let looped = [0xc0 | (at >> 8) as u8, at as u8];
        let m = response(&q, 0, &[(&looped, TYPE_A, 5, &[1, 2, 3, 4])]);
        let r = Response::parse(&m, &q).expect("parse");
        assert_eq!(r.addresses().count(), 0);
        // Every truncation of a valid answer: no panic, never more records than the whole.
        let good = response(&q, 0, &[(PTR_Q, TYPE_A, 5, &[203, 0, 113, 10])]);
        for n in 0..good.len() {
            if let Ok(r) = Response::parse(&good[..n], &q) {
                assert_eq!(r.addresses().count(), 0);
            }
        }
        // A wrong-sized A rdata and other classes are skipped.
        let m = response(&q, 0, &[(PTR_Q, TYPE_A, 5, &[1, 2, 3])]);
        assert_eq!(Response::parse(&m, &q).expect("p").addresses().count(), 0);
        // Huge TTLs (top bit) count as zero.
        let m = response(&q, 0, &[(PTR_Q, TYPE_A, 0x8000_0000, &[1, 2, 3, 4])]);
        let v: Vec<_> = Response::parse(&m, &q).expect("p").addresses().collect();
        assert_eq!(v, [(Ipv4Addr::new(1, 2, 3, 4), 0)]);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let q = query("api.example");
        let mut seed = 0x1234_5678u32;
        let mut buf = [0u8; 96];
        for _ in 0..20_000 {
            for b in buf.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *b = seed as u8;
            }
            buf[..q.len()].copy_from_slice(&q);
            buf[2] = 0x81;
            buf[6] = 0;
            buf[7] = (seed % 5) as u8;
            let n = (seed as usize >> 8) % buf.len();
            if let Ok(r) = Response::parse(&buf[..n], &q) {
                assert!(r.addresses().count() <= 5);
            }
        }
    }
}
