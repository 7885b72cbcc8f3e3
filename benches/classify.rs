//! New-flow classification cost against the rule count (10, 1k, 10k rules).
//!
//! Rules look like real egress policies: sources are a handful of inside prefixes or `*`,
//! destinations are public prefixes of mixed lengths, TCP/UDP with common ports and ranges, a
//! few deny collections, and a tail of application rules. Flows mix hits (a destination inside a
//! random rule) and misses (default deny or inspection).

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ipnet::Ipv4Net;
use tollgate::policy::{
    proto, Action, AppProto, FlowQuery, FqdnPattern, Policy, Protocols, RuleKind, RuleSpec, Ruleset,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PORTS: [u16; 8] = [443, 80, 53, 123, 22, 8443, 9000, 5432];

fn rules(n: usize, rng: &mut Rng) -> Vec<RuleSpec> {
    let inside: [Ipv4Net; 4] = [
        "198.18.0.0/24".parse().unwrap(),
        "198.18.1.0/24".parse().unwrap(),
        "198.18.0.0/15".parse().unwrap(),
        "0.0.0.0/0".parse().unwrap(),
    ];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let app = i % 10 == 9;
        let deny = i % 17 == 3;
        let kind = if app {
            RuleKind::Application
        } else {
            RuleKind::Network
        };
        let action = if deny { Action::Deny } else { Action::Allow };
        let mut r = RuleSpec::new(
            "g",
            &format!("c{}", i / 100),
            &format!("r{i}"),
            kind,
            action,
        );
        r.sources = vec![inside[rng.below(4) as usize]];
        if app {
            r.app_protocols = vec![(AppProto::Https, 443)];
            r.fqdns = vec![FqdnPattern::parse(&format!("*.svc{i}.example")).unwrap()];
        } else {
            let len = [16u8, 20, 24, 24, 28, 32][rng.below(6) as usize];
            let addr = Ipv4Addr::from((rng.next() as u32 & 0x7fff_ffff) | 0x0100_0000);
            r.destinations = vec![Ipv4Net::new(addr, len).unwrap().trunc()];
            r.protocols = if rng.below(3) == 0 {
                Protocols {
                    udp: true,
                    ..Protocols::default()
                }
            } else {
                Protocols {
                    tcp: true,
                    ..Protocols::default()
                }
            };
            let p = PORTS[rng.below(8) as usize];
            r.ports = if rng.below(5) == 0 {
                vec![(p, p + 100)]
            } else {
                vec![(p, p)]
            };
        }
        out.push(r);
    }
    out
}

fn flows(rules: &[RuleSpec], rng: &mut Rng) -> Vec<FlowQuery> {
    (0..4096)
        .map(|_| {
            let src = Ipv4Addr::new(198, 18, rng.below(2) as u8, rng.below(250) as u8 + 1);
            let net: Vec<&RuleSpec> = rules
                .iter()
                .filter(|r| r.kind == RuleKind::Network)
                .collect();
            let (dst, p, dport) = if rng.below(2) == 0 && !net.is_empty() {
                let r = net[rng.below(net.len() as u64) as usize];
                let d = r.destinations[0];
                let host = u32::from(d.network()) + (rng.next() as u32 & !u32::from(d.netmask()));
                let pr = if r.protocols.udp {
                    proto::UDP
                } else {
                    proto::TCP
                };
                (Ipv4Addr::from(host), pr, r.ports[0].0)
            } else {
                let d = Ipv4Addr::from(rng.next() as u32 | 0x0100_0000);
                (d, proto::TCP, PORTS[rng.below(8) as usize])
            };
            FlowQuery {
                src,
                dst,
                proto: p,
                sport: 40000,
                dport,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    for n in [10usize, 1_000, 10_000] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
        let rs = rules(n, &mut rng);
        let fl = flows(&rs, &mut rng);
        let t0 = std::time::Instant::now();
        let set = Ruleset::compile(rs, vec![Ipv4Addr::new(203, 0, 113, 1)]);
        eprintln!(
            "compile {n} rules: {:?}, {} KiB of rule sets",
            t0.elapsed(),
            set.compiled_bytes() / 1024
        );
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &set, |b, set| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(set.decide(black_box(&fl[i])))
            })
        });
    }
    g.finish();
}

/// The adversarial shape: every field's rule set is dense but their intersection is empty, so a
/// miss scans every data word (157 for 10k rules) instead of skipping through the summaries.
fn bench_worst(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide_worst_miss");
    g.throughput(Throughput::Elements(1));
    for n in [10usize, 10_000] {
        let rs: Vec<RuleSpec> = (0..n)
            .map(|i| {
                let mut r =
                    RuleSpec::new("g", "c", &format!("r{i}"), RuleKind::Network, Action::Allow);
                let half = (i % 2) as u8;
                r.sources = vec![Ipv4Net::new(Ipv4Addr::new(198, 18, half, 0), 24).unwrap()];
                r.destinations =
                    vec![Ipv4Net::new(Ipv4Addr::new(203, 0, 113 - half, 0), 24).unwrap()];
                r.protocols = Protocols {
                    tcp: true,
                    ..Protocols::default()
                };
                r.ports = vec![(1, 65535)];
                r
            })
            .collect();
        let set = Ruleset::compile(rs, vec![]);
        // Source matches the even rules, destination the odd ones: no rule matches.
        let q = FlowQuery {
            src: Ipv4Addr::new(198, 18, 0, 9),
            dst: Ipv4Addr::new(203, 0, 112, 9),
            proto: proto::TCP,
            sport: 40000,
            dport: 443,
        };
        g.bench_with_input(BenchmarkId::from_parameter(n), &set, |b, set| {
            b.iter(|| black_box(set.decide(black_box(&q))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_worst);
criterion_main!(benches);
