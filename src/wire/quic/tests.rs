//! RFC 9001 Appendix A vectors and one test per failure mode.

use super::*;
use proptest::prelude::*;

/// RFC 9001 A.2: the protected client Initial (1200 bytes).
const RFC_PACKET: &[u8] = include_bytes!("../../../tests/fixtures/rfc9001_a2_client_initial.bin");
/// RFC 9001 A.2: its unprotected payload before padding (one CRYPTO frame).
const RFC_FRAME: &[u8] = include_bytes!("../../../tests/fixtures/rfc9001_a2_crypto_frame.bin");
const RFC_DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
/// A TLS record holding a ClientHello without server_name (OpenSSL, tests/fixtures).
const NOSNI_RECORD: &[u8] = include_bytes!("../../../tests/fixtures/clienthello_nosni.bin");

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The RFC's ClientHello handshake message (the CRYPTO frame's data).
fn rfc_hello() -> &'static [u8] {
    // 06 | offset 00 | length 40f1 (241) | data
    assert_eq!(&RFC_FRAME[..4], &[0x06, 0x00, 0x40, 0xf1]);
    &RFC_FRAME[4..]
}

fn crypto_frame(off: usize, data: &[u8]) -> Vec<u8> {
    let mut v = vec![0x06];
    v.extend_from_slice(&(0x8000_0000u32 | off as u32).to_be_bytes());
    v.extend_from_slice(&(0x4000u16 | data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn seal(dcid: &[u8], pn: u32, frames: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 1500];
    let n = seal_initial(
        &InitialKeys::client(dcid),
        dcid,
        b"scid",
        pn,
        2,
        frames,
        1200,
        &mut out,
    )
    .unwrap();
    out.truncate(n);
    out
}

struct Run {
    r: InitialReader,
    scratch: Vec<u8>,
    crypto: Vec<u8>,
    out: [u8; 256],
}

impl Run {
    fn new() -> Self {
        Run {
            r: InitialReader::new(),
            scratch: vec![0; 1500],
            crypto: vec![0; 8192],
            out: [0; 256],
        }
    }
    fn push(&mut self, d: &[u8]) -> QuicResult {
        self.r
            .push_datagram(d, &mut self.scratch, &mut self.crypto, &mut self.out)
    }
    fn name(&self, r: QuicResult) -> String {
        match r {
            QuicResult::Sni { len, .. } => String::from_utf8_lossy(&self.out[..len]).into_owned(),
            other => format!("{other:?}"),
        }
    }
}

fn sni_of(datagrams: &[&[u8]]) -> String {
    let mut run = Run::new();
    let mut last = QuicResult::NeedMore;
    for d in datagrams {
        last = run.push(d);
    }
    run.name(last)
}

#[test]
fn rfc9001_a1_client_initial_keys() {
    let k = InitialKeys::client(&RFC_DCID);
    assert_eq!(k.key.to_vec(), hex("1f369613dd76d5467730efcbe3b1a22d"));
    assert_eq!(k.iv.to_vec(), hex("fa044b2f42a3fd3b46fb255c"));
    assert_eq!(k.hp.to_vec(), hex("9f50449e04a0e810283a1e9933adedd2"));
}

#[test]
fn rfc9001_a2_client_initial_decrypts_to_the_client_hello_for_example_com() {
    assert_eq!(RFC_PACKET.len(), 1200);
    let mut run = Run::new();
    let r = run.push(RFC_PACKET);
    assert_eq!(
        r,
        QuicResult::Sni {
            len: 11,
            ech: false
        }
    );
    assert_eq!(run.name(r), "example.com");
    // The CRYPTO stream is exactly the RFC's ClientHello.
    assert_eq!(run.r.contiguous(), rfc_hello().len());
    assert_eq!(&run.crypto[..rfc_hello().len()], rfc_hello());
}

#[test]
fn the_sealer_reproduces_the_rfc_packet() {
    // Same header as A.2: packet number 2 in 4 bytes, empty SCID, no token.
    let mut out = [0u8; 1500];
    let n = seal_initial(
        &InitialKeys::client(&RFC_DCID),
        &RFC_DCID,
        b"",
        2,
        4,
        RFC_FRAME,
        1200,
        &mut out,
    )
    .unwrap();
    assert_eq!(&out[..n], RFC_PACKET);
}

#[test]
fn truncated_datagrams_are_refused_and_never_panic() {
    for n in 0..RFC_PACKET.len() {
        let r = Run::new().push(&RFC_PACKET[..n]);
        match r {
            QuicResult::NeedMore => assert_eq!(n, 0),
            QuicResult::NotQuic => assert!((1..5).contains(&n), "{n}"),
            QuicResult::Malformed(_) => {}
            other => panic!("prefix of {n}: {other:?}"),
        }
    }
    // A long datagram whose packet claims more bytes than it has.
    let full = {
        let mut out = vec![0u8; 1500];
        let n = seal_initial(
            &InitialKeys::client(&RFC_DCID),
            &RFC_DCID,
            b"",
            0,
            1,
            &crypto_frame(0, rfc_hello()),
            1400,
            &mut out,
        )
        .unwrap();
        out.truncate(n);
        out
    };
    assert_eq!(
        Run::new().push(&full[..1300]),
        QuicResult::Malformed("a packet length runs past the datagram")
    );
}

#[test]
fn other_versions_are_not_quic_v1() {
    for v in [0u32, 0x6b33_43cf, 0xff00_001d, 2] {
        let mut p = RFC_PACKET.to_vec();
        p[1..5].copy_from_slice(&v.to_be_bytes());
        assert_eq!(Run::new().push(&p), QuicResult::NotQuic, "version {v:#x}");
    }
    // Short headers, DNS-looking junk and an empty datagram.
    assert_eq!(Run::new().push(&[0x40; 1200]), QuicResult::NotQuic);
    assert_eq!(Run::new().push(b"\x12\x34\x01\x00"), QuicResult::NotQuic);
    assert_eq!(Run::new().push(b""), QuicResult::NeedMore);
}

#[test]
fn a_bad_tag_or_a_flipped_bit_does_not_decrypt() {
    for at in [RFC_PACKET.len() - 1, 600, 30] {
        let mut p = RFC_PACKET.to_vec();
        p[at] ^= 0x01;
        assert_eq!(
            Run::new().push(&p),
            QuicResult::Malformed("an Initial does not decrypt (bad AEAD tag)"),
            "byte {at}"
        );
    }
    // Keys from another DCID.
    let mut p = RFC_PACKET.to_vec();
    p[6] ^= 0xff;
    assert!(matches!(Run::new().push(&p), QuicResult::Malformed(_)));
}

#[test]
fn a_short_first_dcid_is_refused() {
    let p = seal(&[1, 2, 3, 4], 0, &crypto_frame(0, rfc_hello()));
    assert_eq!(
        Run::new().push(&p),
        QuicResult::Malformed(
            "the client's first Destination Connection ID is shorter than 8 bytes"
        )
    );
    // Over 20 bytes is not a v1 connection ID at all.
    let mut p = RFC_PACKET.to_vec();
    p[5] = 21;
    assert!(matches!(Run::new().push(&p), QuicResult::Malformed(_)));
}

#[test]
fn a_small_datagram_is_refused() {
    let mut out = [0u8; 1500];
    let n = seal_initial(
        &InitialKeys::client(&RFC_DCID),
        &RFC_DCID,
        b"",
        0,
        1,
        &crypto_frame(0, rfc_hello()),
        0,
        &mut out,
    )
    .unwrap();
    assert!(n < 1200);
    assert_eq!(
        Run::new().push(&out[..n]),
        QuicResult::Malformed("a client Initial in a datagram shorter than 1200 bytes")
    );
}

#[test]
fn reserved_bits_must_be_zero() {
    let mut out = [0u8; 1500];
    let frames = crypto_frame(0, rfc_hello());
    let keys = InitialKeys::client(&RFC_DCID);
    let n = seal_inner(&keys, &RFC_DCID, b"", 0, 1, &frames, 1200, 2, &mut out).unwrap();
    assert_eq!(
        Run::new().push(&out[..n]),
        QuicResult::Malformed("the reserved bits of an Initial are set")
    );
}

#[test]
fn crypto_frames_out_of_order_in_one_packet() {
    let h = rfc_hello();
    let mut frames = Vec::new();
    frames.extend(crypto_frame(200, &h[200..]));
    frames.push(0x01); // PING
    frames.extend(crypto_frame(90, &h[90..200]));
    frames.extend([0, 0, 0]); // PADDING
    frames.extend(crypto_frame(0, &h[..90]));
    assert_eq!(sni_of(&[&seal(&RFC_DCID, 0, &frames)]), "example.com");
}

#[test]
fn a_hello_split_over_two_packets_in_two_datagrams_either_order() {
    let h = rfc_hello();
    let a = seal(&RFC_DCID, 0, &crypto_frame(0, &h[..120]));
    let b = seal(&RFC_DCID, 1, &crypto_frame(120, &h[120..]));
    let mut run = Run::new();
    assert_eq!(run.push(&a), QuicResult::NeedMore);
    let r = run.push(&b);
    assert_eq!(run.name(r), "example.com");
    let mut run = Run::new();
    assert_eq!(run.push(&b), QuicResult::NeedMore);
    let r = run.push(&a);
    assert_eq!(run.name(r), "example.com");
}

#[test]
fn later_initials_use_the_first_dcid_keys() {
    // After the client adopts a new DCID its Initials keep the original keys (RFC 9001 5.2).
    let h = rfc_hello();
    let keys = InitialKeys::client(&RFC_DCID);
    let a = seal(&RFC_DCID, 0, &crypto_frame(0, &h[..100]));
    let mut out = vec![0u8; 1500];
    let n = seal_initial(
        &keys,
        b"newdcid!",
        b"",
        1,
        1,
        &crypto_frame(100, &h[100..]),
        1200,
        &mut out,
    )
    .unwrap();
    assert_eq!(sni_of(&[&a, &out[..n]]), "example.com");
}

#[test]
fn coalesced_packets_in_one_datagram() {
    let h = rfc_hello();
    let keys = InitialKeys::client(&RFC_DCID);
    let mut d = vec![0u8; 1400];
    let n1 = seal_initial(
        &keys,
        &RFC_DCID,
        b"",
        0,
        1,
        &crypto_frame(0, &h[..100]),
        0,
        &mut d,
    )
    .unwrap();
    let n2 = seal_initial(
        &keys,
        &RFC_DCID,
        b"",
        1,
        1,
        &crypto_frame(100, &h[100..]),
        0,
        &mut d[n1..],
    )
    .unwrap();
    let mut n = n1 + n2;
    // A 0-RTT packet (type 1) after them: skipped by its length.
    let zrtt_len = 1200 - n - 16;
    d[n] = 0xd0;
    d[n + 1..n + 5].copy_from_slice(&VERSION_1.to_be_bytes());
    d[n + 5] = 8;
    d[n + 6..n + 14].copy_from_slice(&RFC_DCID);
    d[n + 14] = 0;
    let body = zrtt_len - 15 - 2;
    d[n + 15..n + 17].copy_from_slice(&(0x4000u16 | body as u16).to_be_bytes());
    n += zrtt_len;
    d.truncate(n.max(1200));
    assert_eq!(sni_of(&[&d]), "example.com");
    // Two Initials in one datagram, second first in offset order.
    let mut e = vec![0u8; 1400];
    let m1 = seal_initial(
        &keys,
        &RFC_DCID,
        b"",
        0,
        1,
        &crypto_frame(100, &h[100..]),
        0,
        &mut e,
    )
    .unwrap();
    let m2 = seal_initial(
        &keys,
        &RFC_DCID,
        b"",
        1,
        1,
        &crypto_frame(0, &h[..100]),
        1200 - m1,
        &mut e[m1..],
    )
    .unwrap();
    e.truncate(m1 + m2);
    assert_eq!(sni_of(&[&e]), "example.com");
}

#[test]
fn ack_frames_are_skipped_other_frames_stop_the_walk() {
    let h = rfc_hello();
    let mut f = vec![0x03, 0x05, 0x00, 0x01, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00];
    f.extend(crypto_frame(0, h));
    assert_eq!(sni_of(&[&seal(&RFC_DCID, 0, &f)]), "example.com");
    // A STREAM frame (not allowed in an Initial): the CRYPTO after it is not read.
    let mut f = vec![0x08, 0x00, 0x00];
    f.extend(crypto_frame(0, h));
    let mut run = Run::new();
    assert_eq!(run.push(&seal(&RFC_DCID, 0, &f)), QuicResult::NeedMore);
}

#[test]
fn a_hello_without_server_name() {
    let hs = &NOSNI_RECORD[5..];
    assert_eq!(hs[0], 1, "a ClientHello");
    assert!(hs.len() < 1100);
    assert_eq!(
        sni_of(&[&seal(&RFC_DCID, 0, &crypto_frame(0, hs))]),
        "NoSni"
    );
}

#[test]
fn changed_crypto_data_at_a_received_offset_is_refused() {
    let h = rfc_hello();
    let a = seal(&RFC_DCID, 0, &crypto_frame(0, &h[..150]));
    // A resend of the same bytes is fine; different bytes are an evasion attempt.
    let same = seal(&RFC_DCID, 1, &crypto_frame(100, &h[100..150]));
    let mut other = h[100..150].to_vec();
    other[10] ^= 1;
    let changed = seal(&RFC_DCID, 2, &crypto_frame(100, &other));
    let mut run = Run::new();
    assert_eq!(run.push(&a), QuicResult::NeedMore);
    assert_eq!(run.push(&same), QuicResult::NeedMore);
    assert_eq!(run.push(&changed), QuicResult::Mismatch);
}

#[test]
fn crypto_beyond_the_buffer_or_too_many_gaps_is_over_budget() {
    let p = seal(&RFC_DCID, 0, &crypto_frame(8190, b"abc"));
    assert_eq!(Run::new().push(&p), QuicResult::Budget);
    let mut f = Vec::new();
    for i in 0..=MAX_RANGES {
        f.extend(crypto_frame(100 + 10 * i, b"x"));
    }
    assert_eq!(Run::new().push(&seal(&RFC_DCID, 0, &f)), QuicResult::Budget);
    // A scratch buffer smaller than the packet.
    let mut r = InitialReader::new();
    let (mut s, mut c, mut o) = ([0u8; 600], [0u8; 8192], [0u8; 256]);
    assert!(matches!(
        r.push_datagram(RFC_PACKET, &mut s, &mut c, &mut o),
        QuicResult::Malformed(_)
    ));
}

#[test]
fn ranges_merge() {
    let mut r = InitialReader::new();
    let mut c = [0u8; 64];
    for (off, len) in [(10, 5), (30, 5), (0, 3), (20, 2), (3, 7), (15, 5), (22, 8)] {
        r.take_crypto(off, &vec![7u8; len], &mut c).ok().unwrap();
    }
    assert_eq!(r.contiguous(), 35);
    assert_eq!(r.nranges, 1);
}

proptest! {
    #[test]
    fn any_split_order_and_datagram_spread_reads_the_same(
        cuts in proptest::collection::vec(1usize..240, 0..12),
        order in proptest::collection::vec(any::<u32>(), 13),
        per_dgram in 1usize..4,
    ) {
        let h = rfc_hello();
        let mut cuts = cuts;
        cuts.push(0);
        cuts.push(h.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces: Vec<Vec<u8>> = cuts.windows(2).map(|w| crypto_frame(w[0], &h[w[0]..w[1]])).collect();
        // Shuffle by the random keys.
        let mut keyed: Vec<(u32, Vec<u8>)> = pieces.drain(..).enumerate().map(|(i, p)| (order[i % order.len()], p)).collect();
        keyed.sort_by_key(|k| k.0);
        let frames: Vec<Vec<u8>> = keyed.into_iter().map(|k| k.1).collect();
        let datagrams: Vec<Vec<u8>> = frames
            .chunks(per_dgram)
            .enumerate()
            .map(|(i, c)| seal(&RFC_DCID, i as u32, &c.concat()))
            .collect();
        let refs: Vec<&[u8]> = datagrams.iter().map(|d| d.as_slice()).collect();
        prop_assert_eq!(sni_of(&refs), "example.com");
    }

    #[test]
    fn mutations_and_junk_never_panic(
        flips in proptest::collection::vec((0usize..1200, any::<u8>()), 0..6),
        junk in proptest::collection::vec(any::<u8>(), 0..1400),
    ) {
        let mut p = RFC_PACKET.to_vec();
        for (i, b) in flips {
            p[i] = b;
        }
        let mut run = Run::new();
        let _ = run.push(&p);
        let _ = run.push(&junk);
        let _ = Run::new().push(&junk);
    }
}
