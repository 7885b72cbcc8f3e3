//! Application-rule costs: reading the SNI (one segment, ~1.5 KiB, two segments), reading the
//! SNI of QUIC client Initials (key derivation, header protection, AES-128-GCM, CRYPTO
//! reassembly), and matching a name against 10, 1k and 10k application rules.
//!
//! cargo bench --bench l7

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tollgate::policy::{
    Action, AppProto, FlowQuery, FqdnPattern, Policy, RuleKind, RuleSpec, Ruleset,
};
use tollgate::wire::quic::{InitialKeys, InitialReader, QuicResult};
use tollgate::wire::sni::{client_hello_sni, SniResult};

const HELLO: &[u8] = include_bytes!("../tests/fixtures/clienthello_allowed.bin");
const RFC_INITIAL: &[u8] = include_bytes!("../tests/fixtures/rfc9001_a2_client_initial.bin");
const AIOQUIC_INITIAL: &[u8] = include_bytes!("../tests/fixtures/quic_initial_allowed.bin");
const AIOQUIC_SPLIT: [&[u8]; 2] = [
    include_bytes!("../tests/fixtures/quic_initial_split_0.bin"),
    include_bytes!("../tests/fixtures/quic_initial_split_1.bin"),
];

/// The fixture with a padding extension (RFC 7685) that brings it to about 1.5 KiB, the size of
/// a ClientHello with a post-quantum key share.
fn padded_hello(extra: usize) -> Vec<u8> {
    let mut v = HELLO.to_vec();
    let add = 4 + extra;
    let bump16 = |v: &mut Vec<u8>, at: usize| {
        let n = u16::from_be_bytes([v[at], v[at + 1]]) as usize + add;
        v[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
    };
    bump16(&mut v, 3); // record length
    let hs = ((v[6] as usize) << 16 | (v[7] as usize) << 8 | v[8] as usize) + add;
    v[6..9].copy_from_slice(&[(hs >> 16) as u8, (hs >> 8) as u8, hs as u8]);
    // Walk to the extensions length: header 5 + 4, version 2, random 32, session id, suites, compression.
    let mut p = 9 + 2 + 32;
    p += 1 + v[p] as usize;
    p += 2 + u16::from_be_bytes([v[p], v[p + 1]]) as usize;
    p += 1 + v[p] as usize;
    bump16(&mut v, p);
    v.extend_from_slice(&21u16.to_be_bytes());
    v.extend_from_slice(&(extra as u16).to_be_bytes());
    v.resize(v.len() + extra, 0);
    v
}

fn sni(c: &mut Criterion) {
    let mut g = c.benchmark_group("sni");
    let big = padded_hello(1000);
    let mut out = [0u8; 256];
    assert!(matches!(
        client_hello_sni(&big, &mut out),
        SniResult::Sni { .. }
    ));
    g.bench_function(BenchmarkId::new("one_segment", HELLO.len()), |b| {
        b.iter(|| client_hello_sni(black_box(HELLO), &mut out))
    });
    g.bench_function(BenchmarkId::new("one_segment", big.len()), |b| {
        b.iter(|| client_hello_sni(black_box(&big), &mut out))
    });
    // As the datapath sees a hello in two segments: a NeedMore on the first, then the whole.
    let cut = 1400.min(big.len() - 1);
    g.bench_function(BenchmarkId::new("two_segments", big.len()), |b| {
        b.iter(|| {
            assert_eq!(
                client_hello_sni(black_box(&big[..cut]), &mut out),
                SniResult::NeedMore
            );
            client_hello_sni(black_box(&big), &mut out)
        })
    });
    g.finish();
}

/// One flow's worth of work per iteration: a fresh reader (so key derivation is included), every
/// datagram decrypted and its CRYPTO data placed, then the SNI read.
fn quic_flow(datagrams: &[&[u8]], scratch: &mut [u8], crypto: &mut [u8]) -> QuicResult {
    let mut r = InitialReader::new();
    let mut out = [0u8; 256];
    let mut last = QuicResult::NeedMore;
    for d in datagrams {
        last = r.push_datagram(black_box(d), scratch, crypto, &mut out);
    }
    last
}

fn quic(c: &mut Criterion) {
    let mut g = c.benchmark_group("quic_initial");
    let (mut scratch, mut crypto) = (vec![0u8; 2048], vec![0u8; 8192]);
    assert_eq!(RFC_INITIAL.len(), 1200);
    assert_eq!(AIOQUIC_INITIAL.len(), 1200);
    for (label, d) in [("rfc9001", RFC_INITIAL), ("aioquic", AIOQUIC_INITIAL)] {
        assert!(matches!(
            quic_flow(&[d], &mut scratch, &mut crypto),
            QuicResult::Sni { .. }
        ));
        g.bench_function(
            BenchmarkId::new(format!("decrypt_sni_{label}"), d.len()),
            |b| b.iter(|| quic_flow(&[d], &mut scratch, &mut crypto)),
        );
    }
    assert!(matches!(
        quic_flow(&AIOQUIC_SPLIT, &mut scratch, &mut crypto),
        QuicResult::Sni { .. }
    ));
    g.bench_function(BenchmarkId::new("decrypt_sni_two_datagrams", 2400), |b| {
        b.iter(|| quic_flow(&AIOQUIC_SPLIT, &mut scratch, &mut crypto))
    });
    g.bench_function("initial_keys_hkdf", |b| {
        b.iter(|| InitialKeys::client(black_box(&[0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08])))
    });
    g.finish();
}

fn ruleset(n: usize) -> Ruleset {
    let rules = (0..n)
        .map(|i| {
            let mut r = RuleSpec::new(
                "g",
                "apps",
                &format!("r{i}"),
                RuleKind::Application,
                Action::Allow,
            );
            r.sources = vec!["198.18.0.0/15".parse().unwrap()];
            r.app_protocols = vec![(AppProto::Https, 443)];
            let pat = if i % 2 == 0 {
                format!("svc{i}.example{}.com", i % 97)
            } else {
                format!("*.tenant{i}.example.net")
            };
            r.fqdns = vec![FqdnPattern::parse(&pat).unwrap()];
            r
        })
        .collect();
    Ruleset::compile(rules, vec![Ipv4Addr::new(203, 0, 113, 1)])
}

fn fqdn(c: &mut Criterion) {
    let mut g = c.benchmark_group("fqdn_match");
    let q = FlowQuery {
        src: Ipv4Addr::new(198, 18, 0, 11),
        dst: Ipv4Addr::new(203, 0, 113, 10),
        proto: 6,
        sport: 40000,
        dport: 443,
    };
    for n in [10usize, 1_000, 10_000] {
        let rs = ruleset(n);
        // A name that matches the last wildcard rule, and one that matches nothing.
        let hit = format!(
            "api.tenant{}.example.net",
            if n % 2 == 0 { n - 1 } else { n - 2 }
        );
        assert!(matches!(
            rs.decide_app(&q, AppProto::Https, Some(&hit)),
            tollgate::policy::Decision::Allow { .. }
        ));
        g.bench_with_input(BenchmarkId::new("hit", n), &n, |b, _| {
            b.iter(|| rs.decide_app(black_box(&q), AppProto::Https, Some(black_box(&hit))))
        });
        g.bench_with_input(BenchmarkId::new("miss", n), &n, |b, _| {
            b.iter(|| {
                rs.decide_app(
                    black_box(&q),
                    AppProto::Https,
                    Some(black_box("nothing.example.org")),
                )
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = sni, quic, fqdn
}
criterion_main!(benches);
