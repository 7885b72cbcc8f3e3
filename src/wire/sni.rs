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
