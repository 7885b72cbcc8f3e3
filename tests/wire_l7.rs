//! The SNI and Host readers on real ClientHellos (made by OpenSSL through Python's ssl module,
//! see tests/fixtures/gen_clienthello.py), under any record fragmentation, and on junk.

use proptest::prelude::*;
use tollgate::wire::sni::{client_hello_sni, SniResult};

const HELLO: &[u8] = include_bytes!("fixtures/clienthello_allowed.bin");
const HELLO_NOSNI: &[u8] = include_bytes!("fixtures/clienthello_nosni.bin");

fn sni(stream: &[u8]) -> (SniResult, String) {
    let mut out = [0u8; 256];
    let r = client_hello_sni(stream, &mut out);
    let name = match r {
        SniResult::Sni { len, .. } => String::from_utf8_lossy(&out[..len]).into_owned(),
        _ => String::new(),
    };
    (r, name)
}

/// Re-frames the handshake bytes of a one-record ClientHello into records of the given sizes.
fn refragment(hello: &[u8], sizes: &[usize]) -> Vec<u8> {
    let hs = &hello[5..];
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < hs.len() {
        let n = sizes[k % sizes.len()].clamp(1, hs.len() - i);
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&hs[i..i + n]);
        i += n;
        k += 1;
    }
    out
}

#[test]
fn real_client_hellos() {
    assert_eq!(sni(HELLO).1, "allowed.example");
    assert!(matches!(sni(HELLO).0, SniResult::Sni { ech: false, .. }));
    assert_eq!(sni(HELLO_NOSNI).0, SniResult::NoSni);
}

#[test]
fn every_prefix_needs_more() {
    for n in 0..HELLO.len() {
        assert_eq!(
            sni(&HELLO[..n]).0,
            SniResult::NeedMore,
            "prefix of {n} bytes"
        );
    }
}

#[test]
fn not_tls_is_recognised() {
    assert_eq!(sni(b"GET / HTTP/1.1\r\n").0, SniResult::NotTls);
    assert_eq!(sni(b"\x16\x02junk").0, SniResult::NotTls);
}

proptest! {
    #[test]
    fn any_record_fragmentation_reads_the_same(sizes in proptest::collection::vec(1usize..600, 1..20)) {
        let s = refragment(HELLO, &sizes);
        prop_assert_eq!(sni(&s).1, "allowed.example");
        let s = refragment(HELLO_NOSNI, &sizes);
        prop_assert_eq!(sni(&s).0, SniResult::NoSni);
    }

    #[test]
    fn junk_and_mutations_never_panic(flips in proptest::collection::vec((0usize..517, any::<u8>()), 0..8), junk in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = sni(&junk);
        let mut m = HELLO.to_vec();
        for (i, b) in flips {
            m[i] = b;
        }
        let _ = sni(&m);
        let _ = tollgate::wire::host::request_host(&junk);
    }
}
