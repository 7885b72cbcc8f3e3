//! The server name of a TLS ClientHello at the start of a TCP stream (RFC 8446 section 4.1.2,
//! RFC 6066 section 3), read without allocating and whatever the record-layer fragmentation;
//! or at the start of bare handshake messages (QUIC CRYPTO data has no record layer, RFC 9001
//! section 4).

/// What the first bytes of a stream say about its server name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SniResult {
    /// The ClientHello names a server; its `len` bytes were copied to the output buffer.
    Sni { len: usize, ech: bool },
    /// A complete ClientHello without a server_name extension.
    NoSni,
    /// The ClientHello is not complete yet.
    NeedMore,
    /// The stream does not start with a TLS handshake record.
    NotTls,
    /// It claims to be TLS but its lengths or fields are inconsistent.
    Malformed(&'static str),
}

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ECH: u16 = 0xfe0d;

enum Stop {
    NeedMore,
    Malformed(&'static str),
}

/// Reads handshake bytes across TLS records, skipping the 5-byte record headers (or, without
/// `records`, straight through: `rec_end` is then never reached).
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    rec_end: usize,
    records: bool,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, Stop> {
        while self.pos == self.rec_end {
            let h = self
                .data
                .get(self.pos..self.pos + 5)
                .ok_or(Stop::NeedMore)?;
            if h[0] != HANDSHAKE {
                return Err(Stop::Malformed(
                    "a non-handshake record interrupts the ClientHello",
                ));
            }
            let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
            if len == 0 || len > 16384 + 256 {
                return Err(Stop::Malformed("a TLS record length is out of range"));
            }
            self.pos += 5;
            self.rec_end = self.pos + len;
        }
        let b = *self.data.get(self.pos).ok_or(Stop::NeedMore)?;
        self.pos += 1;
        Ok(b)
    }
    fn u16(&mut self) -> Result<u16, Stop> {
        Ok(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }
    fn u24(&mut self) -> Result<usize, Stop> {
        Ok((usize::from(self.byte()?) << 16) | usize::from(self.u16()?))
    }
    /// Skips `n` handshake bytes, a record at a time.
    fn skip(&mut self, mut n: usize) -> Result<(), Stop> {
        while n > 0 {
            if self.pos == self.rec_end {
                // Let `byte` read the next record header, then count that byte.
                self.byte()?;
                n -= 1;
                continue;
            }
            let take = n.min(self.rec_end - self.pos);
            if self.pos + take > self.data.len() {
                return Err(Stop::NeedMore);
            }
            self.pos += take;
            n -= take;
        }
        Ok(())
    }
}

/// Reads the SNI of the ClientHello that starts `stream`, copying the name into `out`.
pub fn client_hello_sni(stream: &[u8], out: &mut [u8; 256]) -> SniResult {
    match stream {
        [] => return SniResult::NeedMore,
        [b, ..] if *b != HANDSHAKE => return SniResult::NotTls,
        [_, v, ..] if *v != 3 => return SniResult::NotTls,
        _ => {}
    }
    let mut r = Reader {
        data: stream,
        pos: 0,
        rec_end: 0,
        records: true,
    };
    run(&mut r, out)
}

/// Reads the SNI of the ClientHello that starts `messages`, bare TLS handshake messages without
/// record headers (the CRYPTO stream of QUIC Initial packets). Never returns `NotTls`: anything
/// but a ClientHello first is `Malformed`.
pub fn handshake_sni(messages: &[u8], out: &mut [u8; 256]) -> SniResult {
    if messages.is_empty() {
        return SniResult::NeedMore;
    }
    let mut r = Reader {
        data: messages,
        pos: 0,
        rec_end: usize::MAX,
        records: false,
    };
    run(&mut r, out)
}

fn run(r: &mut Reader<'_>, out: &mut [u8; 256]) -> SniResult {
    match parse(r, out) {
        Ok(res) => res,
        Err(Stop::NeedMore) => SniResult::NeedMore,
        Err(Stop::Malformed(m)) => SniResult::Malformed(m),
    }
}

fn parse(r: &mut Reader<'_>, out: &mut [u8; 256]) -> Result<SniResult, Stop> {
    if r.byte()? != CLIENT_HELLO {
        return Err(Stop::Malformed(
            "the first handshake message is not a ClientHello",
        ));
    }
    let hs_len = r.u24()?;
    let start = consumed(r);
    let left = |r: &Reader<'_>| hs_len.checked_sub(consumed(r) - start);
    r.skip(2 + 32)?; // legacy_version, random
    let sid = usize::from(r.byte()?);
    if sid > 32 {
        return Err(Stop::Malformed("the session id is longer than 32 bytes"));
    }
    r.skip(sid)?;
    let suites = usize::from(r.u16()?);
    r.skip(suites)?;
    let comp = usize::from(r.byte()?);
    r.skip(comp)?;
    match left(r) {
        None => return Err(Stop::Malformed("the ClientHello is longer than its length")),
        Some(0) => return Ok(SniResult::NoSni),
        Some(_) => {}
    }
    let ext_total = usize::from(r.u16()?);
    if left(r) != Some(ext_total) {
        return Err(Stop::Malformed(
            "the extensions length disagrees with the ClientHello length",
        ));
    }
    let mut name_len = None;
    let mut ech = false;
    let mut rem = ext_total;
    while rem > 0 {
        if rem < 4 {
            return Err(Stop::Malformed("an extension header is truncated"));
        }
        let ty = r.u16()?;
        let len = usize::from(r.u16()?);
        rem -= 4;
        if len > rem {
            return Err(Stop::Malformed(
                "an extension is longer than the extensions block",
            ));
        }
        rem -= len;
        match ty {
            EXT_SERVER_NAME if name_len.is_none() => name_len = Some(server_name(r, len, out)?),
            EXT_ECH => {
                ech = true;
                r.skip(len)?;
            }
            _ => r.skip(len)?,
        }
    }
    Ok(match name_len {
        Some(len) => SniResult::Sni { len, ech },
        None => SniResult::NoSni,
    })
}

/// Bytes of handshake consumed so far (record headers excluded).
fn consumed(r: &Reader<'_>) -> usize {
    if !r.records {
        return r.pos;
    }
    // Each record header before `pos` is 5 bytes; count them by walking the headers.
    let mut n = 0;
    let mut p = 0;
    while p < r.pos {
        let len = usize::from(u16::from_be_bytes([r.data[p + 3], r.data[p + 4]]));
        let body_end = (p + 5 + len).min(r.pos);
        n += body_end.saturating_sub(p + 5);
        p += 5 + len;
    }
    n
}

/// Reads a server_name extension body of `len` bytes; returns the host name's length.
fn server_name(r: &mut Reader<'_>, len: usize, out: &mut [u8; 256]) -> Result<usize, Stop> {
    if len < 2 {
        return Err(Stop::Malformed("the server_name extension is truncated"));
    }
    let list = usize::from(r.u16()?);
    if list + 2 != len {
        return Err(Stop::Malformed(
            "the server name list length is inconsistent",
        ));
    }
    let mut rem = list;
    let mut found = None;
    while rem > 0 {
        if rem < 3 {
            return Err(Stop::Malformed("a server name entry is truncated"));
        }
        let kind = r.byte()?;
        let n = usize::from(r.u16()?);
        rem -= 3;
        if n > rem {
            return Err(Stop::Malformed("a server name is longer than its list"));
        }
        rem -= n;
        if kind == 0 && found.is_none() {
            if n == 0 || n > 253 {
                return Err(Stop::Malformed(
                    "the host name is empty or longer than 253 bytes",
                ));
            }
            for slot in out.iter_mut().take(n) {
                let c = r.byte()?;
                if !(c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_') {
                    return Err(Stop::Malformed(
                        "the host name has a character DNS does not allow",
                    ));
                }
                *slot = c;
            }
            found = Some(n);
        } else {
            r.skip(n)?;
        }
    }
    found.ok_or(Stop::Malformed(
        "the server_name extension has no host name",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWED: &[u8] = include_bytes!("../../tests/fixtures/clienthello_allowed.bin");
    const NOSNI: &[u8] = include_bytes!("../../tests/fixtures/clienthello_nosni.bin");

    /// A ClientHello handshake message (no record header): session id of `sid` bytes, one
    /// cipher suite, supported_versions, then server_name with `names` (type, name) and, with
    /// `ech`, an encrypted_client_hello extension.
    fn hello(names: &[(u8, &[u8])], ech: bool, sid: usize) -> Vec<u8> {
        let mut exts = vec![0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04];
        if !names.is_empty() {
            let mut list = Vec::new();
            for (kind, n) in names {
                list.push(*kind);
                list.extend_from_slice(&(n.len() as u16).to_be_bytes());
                list.extend_from_slice(n);
            }
            exts.extend_from_slice(&EXT_SERVER_NAME.to_be_bytes());
            exts.extend_from_slice(&(list.len() as u16 + 2).to_be_bytes());
            exts.extend_from_slice(&(list.len() as u16).to_be_bytes());
            exts.extend_from_slice(&list);
        }
        if ech {
            exts.extend_from_slice(&EXT_ECH.to_be_bytes());
            exts.extend_from_slice(&[0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0x5a; 32]);
        body.push(sid as u8);
        body.resize(body.len() + sid, 0x11);
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut m = vec![CLIENT_HELLO];
        m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        m.extend_from_slice(&body);
        m
    }

    /// `msg` in TLS records of at most `max` bytes each.
    fn records(msg: &[u8], max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in msg.chunks(max) {
            out.extend_from_slice(&[HANDSHAKE, 0x03, 0x01]);
            out.extend_from_slice(&(c.len() as u16).to_be_bytes());
            out.extend_from_slice(c);
        }
        out
    }

    fn sni(stream: &[u8]) -> (SniResult, Vec<u8>) {
        let mut out = [0u8; 256];
        let r = client_hello_sni(stream, &mut out);
        let name = match r {
            SniResult::Sni { len, .. } => out[..len].to_vec(),
            _ => Vec::new(),
        };
        (r, name)
    }

    #[test]
    fn the_recorded_client_hellos_read_as_their_generator_wrote_them() {
        assert_eq!(
            sni(ALLOWED),
            (
                SniResult::Sni {
                    len: 15,
                    ech: false
                },
                b"allowed.example".to_vec()
            )
        );
        assert_eq!(sni(NOSNI).0, SniResult::NoSni);
        // Without its record header, the same message through the bare-handshake reader.
        let mut out = [0u8; 256];
        assert_eq!(
            handshake_sni(&ALLOWED[5..], &mut out),
            SniResult::Sni {
                len: 15,
                ech: false
            }
        );
    }

    #[test]
    fn a_constructed_client_hello_gives_its_name_and_ech_flag() {
        let m = hello(&[(0, b"Allowed.Example")], false, 32);
        // The builder's layout, byte by byte where it matters: type, u24 length, version.
        assert_eq!(&m[..6], &[1, 0, 0, (m.len() - 4) as u8, 3, 3]);
        let (r, name) = sni(&records(&m, 16384));
        assert_eq!(
            r,
            SniResult::Sni {
                len: 15,
                ech: false
            }
        );
        assert_eq!(
            name, b"Allowed.Example",
            "copied as sent; the caller lowers case"
        );
        let m = hello(&[(0, b"a.example")], true, 0);
        assert_eq!(
            sni(&records(&m, 16384)).0,
            SniResult::Sni { len: 9, ech: true }
        );
        // Only the first host_name entry counts; other name types are skipped.
        let m = hello(
            &[(7, b"x"), (0, b"one.example"), (0, b"two.example")],
            false,
            0,
        );
        assert_eq!(sni(&records(&m, 16384)).1, b"one.example");
        assert_eq!(
            sni(&records(&hello(&[], true, 0), 16384)).0,
            SniResult::NoSni
        );
    }

    #[test]
    fn a_client_hello_without_extensions_has_no_name() {
        let mut m = hello(&[], false, 0);
        // Drop the extensions block (its length and the 7 bytes of supported_versions).
        m.truncate(m.len() - 9);
        let body = m.len() - 4;
        m[1..4].copy_from_slice(&(body as u32).to_be_bytes()[1..]);
        assert_eq!(sni(&records(&m, 16384)).0, SniResult::NoSni);
    }

    #[test]
    fn any_record_fragmentation_reads_the_same() {
        let m = hello(&[(0, b"allowed.example")], true, 32);
        let want = sni(&records(&m, 16384));
        for max in 1..m.len() {
            assert_eq!(sni(&records(&m, max)), want, "records of {max} bytes");
        }
    }

    #[test]
    fn every_prefix_needs_more() {
        let m = hello(&[(0, b"allowed.example")], false, 32);
        let mut out = [0u8; 256];
        for s in [records(&m, 40), records(&m, 16384)] {
            for n in 0..s.len() {
                assert_eq!(sni(&s[..n]).0, SniResult::NeedMore, "{n} of {}", s.len());
            }
        }
        for n in 0..m.len() {
            assert_eq!(handshake_sni(&m[..n], &mut out), SniResult::NeedMore, "{n}");
        }
    }

    #[test]
    fn other_protocols_are_not_tls() {
        assert_eq!(sni(b"GET / HTTP/1.1\r\n").0, SniResult::NotTls);
        assert_eq!(sni(&[HANDSHAKE, 2, 0]).0, SniResult::NotTls);
        assert_eq!(sni(b"").0, SniResult::NeedMore);
        // The bare reader has no record byte to tell: anything but a ClientHello is malformed.
        let mut out = [0u8; 256];
        assert!(matches!(
            handshake_sni(b"GET / HTTP/1.1\r\n", &mut out),
            SniResult::Malformed(_)
        ));
    }

    #[test]
    fn inconsistent_client_hellos_are_malformed() {
        let good = hello(&[(0, b"allowed.example")], false, 0);
        let ext_at = 2 + 32 + 1 + 4 + 2 + 4; // extensions length, after the fixed fields
        assert_eq!(
            u16::from_be_bytes([good[ext_at], good[ext_at + 1]]) as usize,
            good.len() - ext_at - 2
        );
        let edit = |at: usize, v: &[u8]| {
            let mut m = good.clone();
            m[at..at + v.len()].copy_from_slice(v);
            records(&m, 16384)
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not a ClientHello", edit(0, &[2])),
            (
                "session id of 33",
                records(&hello(&[(0, b"a.example")], false, 33), 16384),
            ),
            ("ClientHello length too short", edit(1, &[0, 0, 40])),
            ("extensions length disagrees", edit(ext_at, &[0, 1])),
            ("extension past the block", edit(ext_at + 4, &[0xff, 0xff])),
            (
                "empty host name",
                records(&hello(&[(0, b"")], false, 0), 16384),
            ),
            (
                "space in host name",
                records(&hello(&[(0, b"a b.example")], false, 0), 16384),
            ),
            (
                "no host name entry",
                records(&hello(&[(1, b"x")], false, 0), 16384),
            ),
            (
                "long host name",
                records(&hello(&[(0, &[b'a'; 254])], false, 0), 16384),
            ),
            (
                "server name list length",
                edit(ext_at + 2 + 7 + 4, &[0, 99]),
            ),
            ("empty record", vec![HANDSHAKE, 3, 1, 0, 0, 1]),
            ("oversized record", vec![HANDSHAKE, 3, 1, 0x41, 0x01, 1]),
        ];
        for (what, s) in cases {
            assert!(
                matches!(sni(&s).0, SniResult::Malformed(_)),
                "{what}: {:?}",
                sni(&s).0
            );
        }
        // An alert record in the middle of the ClientHello.
        let mut s = records(&good[..50], 16384);
        s.extend_from_slice(&[21, 3, 1, 0, 2, 2, 40]);
        assert!(matches!(sni(&s).0, SniResult::Malformed(_)));
    }

    #[test]
    fn no_single_byte_change_panics_or_yields_a_bad_name() {
        let m = records(&hello(&[(0, b"allowed.example")], true, 8), 64);
        let mut out = [0u8; 256];
        for i in 0..m.len() {
            for v in [0u8, 1, 2, 0x16, 0x7f, 0x80, 0xfe, 0xff] {
                let mut s = m.clone();
                s[i] = v;
                for r in [
                    client_hello_sni(&s, &mut out),
                    handshake_sni(&s[5..], &mut out),
                ] {
                    if let SniResult::Sni { len, .. } = r {
                        assert!((1..=253).contains(&len));
                        assert!(out[..len]
                            .iter()
                            .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(c)));
                    }
                }
            }
        }
    }
}
