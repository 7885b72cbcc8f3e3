//! The QUIC Initial reader on arbitrary datagrams, and on arbitrary frames sealed into valid
//! Initials (so the frame walk, CRYPTO reassembly and ClientHello reader are reached too).
//!
//! Input: a mode byte, then
//! - even mode: the rest is one datagram;
//! - odd mode: chunks of a big-endian `u16` (length << 1 | raw) and that many bytes of frames,
//!   each sealed into a 1200-byte Initial (packet number = chunk index) and pushed as its own
//!   datagram, or pushed as raw bytes when `raw` is set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::wire::quic::{seal_initial, InitialKeys, InitialReader, QuicResult};

const DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

fn check(r: QuicResult) -> bool {
    if let QuicResult::Sni { len, .. } = r {
        assert!((1..=253).contains(&len));
    }
    r == QuicResult::NeedMore
}

fuzz_target!(|data: &[u8]| {
    let mut reader = InitialReader::new();
    let mut scratch = [0u8; 2048];
    let mut crypto = [0u8; 8192];
    let mut out = [0u8; 256];
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check(reader.push_datagram(rest, &mut scratch, &mut crypto, &mut out));
        return;
    }
    let keys = InitialKeys::client(&DCID);
    let mut sealed = [0u8; 2048];
    let mut rest = rest;
    let mut pn = 0u32;
    while rest.len() >= 2 {
        let h = u16::from_be_bytes([rest[0], rest[1]]);
        let n = usize::from(h >> 1).min(rest.len() - 2);
        let raw = h & 1 == 1;
        let chunk = &rest[2..2 + n];
        rest = &rest[2 + n..];
        let r = if raw {
            reader.push_datagram(chunk, &mut scratch, &mut crypto, &mut out)
        } else {
            let Some(len) = seal_initial(&keys, &DCID, b"", pn, 2, chunk, 1200, &mut sealed) else {
                continue;
            };
            reader.push_datagram(&sealed[..len], &mut scratch, &mut crypto, &mut out)
        };
        pn += 1;
        if !check(r) {
            break;
        }
    }
});
