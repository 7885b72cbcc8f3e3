//! Engine benchmarks (one core): the established fast path at 1k / 64k / 1M flows, the new-flow
//! path, and SNAT port allocation at rising occupancy. Memory per flow is printed.
//!
//! cargo bench --bench engine

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ipnet::Ipv4Net;
use tollgate::conntrack::FlowKey;
use tollgate::datapath::query::Query;
use tollgate::datapath::{EngineConfig, FlowHint, Packet, Verdict, Worker};
use tollgate::io::prefetch::prefetch;
use tollgate::nat::{NatConfig, SnatPool};
use tollgate::policy::{AppProto, Decision, FlowQuery, Policy, RuleRef};
use tollgate::wire::checksum;

#[path = "../tests/engine_util/kit.rs"]
mod kit;
use kit::WorkerKit;

/// Benchmark-only policy: allows everything. Hand-written, not compiled from TOML, so that the
/// new-flow figures are the engine's alone (the classifier has its own benchmark).
struct AllowAll;
impl Policy for AllowAll {
    fn decide(&self, _: &FlowQuery) -> Decision {
        Decision::Allow { rule: 0 }
    }
    fn decide_app(&self, _: &FlowQuery, _: AppProto, _: Option<&str>) -> Decision {
        Decision::Allow { rule: 0 }
    }
    fn describe(&self, _: u32) -> Option<RuleRef<'_>> {
        None
    }
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

/// The lab configuration sized for the bench: every inside host of 198.18.0.0/15 on the inside
/// link, `public` SNAT addresses from 203.0.113.100, the default SNAT exemptions.
fn config(max_flows: u32, public: usize) -> EngineConfig {
    let mut c = kit::lab_engine_config();
    c.interfaces[0].connected = vec![net("198.18.0.0/15")];
    c.nat.public_addrs = (0..public)
        .map(|i| Ipv4Addr::new(203, 0, 113, 100 + i as u8))
        .collect();
    c.nat.exempt = NatConfig::default().exempt;
    c.max_flows_per_worker = max_flows;
    c
}

/// A 64-byte UDP frame from 198.18.0.11:5000 to 203.0.113.10:53 (a template to patch).
fn template() -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 22];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&50u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 18, 0, 11]);
    ip[16..20].copy_from_slice(&[203, 0, 113, 10]);
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&5000u16.to_be_bytes());
    f[36..38].copy_from_slice(&53u16.to_be_bytes());
    f[38..40].copy_from_slice(&30u16.to_be_bytes());
    f
}

/// Writes flow `i`'s source (198.18.x.y, port) into `buf` (a copy of the template).
#[inline]
fn patch(buf: &mut [u8], tpl: &[u8], i: u32) {
    buf[..tpl.len()].copy_from_slice(tpl);
    let host = 0xc612_0000u32 | (i >> 10); // 198.18.0.0/15: up to 128k hosts
    let port = 10_000 + (i & 1023) as u16;
    let old = u32::from_be_bytes([tpl[26], tpl[27], tpl[28], tpl[29]]);
    let c = checksum::update32(u16::from_be_bytes([tpl[24], tpl[25]]), old, host);
    buf[24..26].copy_from_slice(&c.to_be_bytes());
    buf[26..30].copy_from_slice(&host.to_be_bytes());
    buf[34..36].copy_from_slice(&port.to_be_bytes());
}

fn populated(n: u32, huge: bool) -> Worker {
    // 1M flows need 16+ public addresses of 64k ports each under EIM.
    let public = (n as usize / 60_000 + 1).min(40);
    let advise: Option<&dyn Fn(usize, usize)> = if huge {
        Some(&tollgate::io::mem::advise_hugepages)
    } else {
        None
    };
    let mut w = WorkerKit::new()
        .config(config(n + 1024, public))
        .policy(Arc::new(AllowAll))
        .seed(7)
        .build_advised(advise);
    let tpl = template();
    let mut buf = vec![0u8; 2048];
    for i in 0..n {
        patch(&mut buf, &tpl, i);
        let mut p = Packet::new(&mut buf, tpl.len(), 0);
        assert!(matches!(w.process(0, &mut p), Verdict::Forward { .. }));
    }
    assert_eq!(w.flow_count(), n as usize);
    w
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

/// One receive batch as the runtime runs it: every frame's index line prefetched, then every
/// frame's flow line, then each frame processed (frames of `len` bytes in 2 KiB slots).
fn run_batch(
    w: &mut Worker,
    bufs: &mut [u8],
    hashes: &mut [Option<FlowHint>],
    len: usize,
    now: u64,
) {
    for (h, f) in hashes.iter_mut().zip(bufs.chunks_exact(2048)) {
        *h = w.warm_index(&f[..len], prefetch);
    }
    let mut misses = 0;
    for h in hashes.iter().flatten() {
        w.warm_flow(h, &mut misses, prefetch);
    }
    for f in bufs.chunks_exact_mut(2048) {
        let mut p = Packet::new(f, len, 0);
        black_box(w.process(now, &mut p));
    }
}

fn fast_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("fast_path");
    g.throughput(Throughput::Elements(1));
    for &(n, huge) in &[
        (1_000u32, false),
        (65_536, false),
        (1_000_000, false),
        (1_000_000, true),
    ] {
        let before = rss_bytes();
        let mut w = populated(n, huge);
        let after = rss_bytes();
        // Memory per flow, from what the tables allocate for their flow limit (the RSS delta
        // is printed as a cross-check; the allocator reuses freed memory between cases).
        let cap = w.flows().capacity() as f64;
        let (slab, index, free) = w.flows().memory_bytes();
        let (eim, slices) = w.snat().memory_bytes();
        eprintln!(
            "flows={n}: per flow of the limit {:.1} B: slab {:.1} + index {:.1} + free list {:.1} + EIM mappings {:.1}; \
             port slices {:.1} MiB for {} public addresses; resident memory grew {:.1} MiB",
            (slab + index + free + eim) as f64 / cap,
            slab as f64 / cap,
            index as f64 / cap,
            free as f64 / cap,
            eim as f64 / cap,
            slices as f64 / (1 << 20) as f64,
            w.snat().addrs().len(),
            (after - before) as f64 / (1 << 20) as f64,
        );
        // Visit flows in a scrambled order so the table is exercised like real traffic.
        let order: Vec<u32> = (0..n)
            .map(|i| (u64::from(i) * 2_654_435_761 % u64::from(n)) as u32)
            .collect();
        let tpl = template();
        let mut buf = vec![0u8; 2048];
        let mut k = 0usize;
        let name = if huge {
            "established_udp_hugepages"
        } else {
            "established_udp"
        };
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            b.iter(|| {
                patch(&mut buf, &tpl, order[k]);
                k = (k + 1) % order.len();
                let mut p = Packet::new(&mut buf, tpl.len(), 0);
                black_box(w.process(1, &mut p))
            })
        });
        // As the runtime runs it: a receive batch of BATCH frames, each frame's index line
        // and then flow line prefetched across the batch, then each frame processed.
        let mut bufs = vec![0u8; BATCH * 2048];
        let mut hashes = [None; BATCH];
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_with_input(
            BenchmarkId::new(format!("{name}_batch{BATCH}"), n),
            &n,
            |b, _| {
                b.iter(|| {
                    for (i, f) in bufs.chunks_exact_mut(2048).enumerate() {
                        patch(f, &tpl, order[(k + i) % order.len()]);
                    }
                    k = (k + BATCH) % order.len();
                    run_batch(&mut w, &mut bufs, &mut hashes, tpl.len(), 1);
                })
            },
        );
    }
    g.finish();
}

/// Frames per receive batch in the batched benchmarks: the runtime's default batch.
const BATCH: usize = 64;

fn new_flows(c: &mut Criterion) {
    let mut g = c.benchmark_group("new_flow");
    g.throughput(Throughput::Elements(1));
    const CAP: u32 = 1 << 20;
    g.bench_function("udp_miss_policy_alloc_insert", |b| {
        let tpl = template();
        let mut buf = vec![0u8; 2048];
        // Steady state: one worker; between samples its flows expire outside the timer.
        let mut w = WorkerKit::new()
            .config(config(CAP, 20))
            .policy(Arc::new(AllowAll))
            .seed(9)
            .build();
        let mut now = 0u64;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let batch = (iters - done).min(u64::from(CAP) - 1) as u32;
                now += 400 * 1_000_000_000;
                w.housekeeping(now, usize::MAX);
                assert_eq!(w.flow_count(), 0);
                let t = Instant::now();
                for i in 0..batch {
                    patch(&mut buf, &tpl, i);
                    let mut p = Packet::new(&mut buf, tpl.len(), 0);
                    black_box(w.process(now, &mut p));
                }
                total += t.elapsed();
                done += u64::from(batch);
            }
            total
        })
    });
    // The same in receive batches of BATCH frames with the batch prefetch, as the runtime
    // runs it.
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(format!("udp_miss_policy_alloc_insert_batch{BATCH}"), |b| {
        let tpl = template();
        let mut bufs = vec![0u8; BATCH * 2048];
        let mut hashes = [None; BATCH];
        let mut w = WorkerKit::new()
            .config(config(CAP, 20))
            .policy(Arc::new(AllowAll))
            .seed(9)
            .build();
        let mut now = 0u64;
        let per_round = (CAP - 1) / BATCH as u32;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let rounds = (iters - done).min(u64::from(per_round)) as u32;
                now += 400 * 1_000_000_000;
                w.housekeeping(now, usize::MAX);
                assert_eq!(w.flow_count(), 0);
                let t = Instant::now();
                for r in 0..rounds {
                    for (i, f) in bufs.chunks_exact_mut(2048).enumerate() {
                        patch(f, &tpl, r * BATCH as u32 + i as u32);
                    }
                    run_batch(&mut w, &mut bufs, &mut hashes, tpl.len(), now);
                }
                total += t.elapsed();
                done += u64::from(rounds);
            }
            total
        })
    });
    g.finish();
}

fn allocation(c: &mut Criterion) {
    let mut g = c.benchmark_group("port_alloc");
    g.throughput(Throughput::Elements(1));
    let cfg = config(1 << 17, 1).nat;
    let size = cfg.port_count();
    for &pct in &[1u32, 50, 90, 99] {
        let mut pool = SnatPool::new(&cfg, 0, 1, 1 << 17, 3);
        let remote = Ipv4Addr::new(203, 0, 113, 10);
        let filled = size * pct / 100;
        for i in 0..filled {
            let k = FlowKey::new(
                Ipv4Addr::from(0xc612_0000 | (i >> 10)),
                remote,
                (i & 1023) as u16,
                443,
                6,
            );
            pool.allocate(&k, 0, |_, _| false).unwrap();
        }
        assert_eq!(pool.utilisation(0, 6).0, filled);
        let mut i = 0u32;
        g.bench_with_input(
            BenchmarkId::new("eim_alloc_release", format!("{pct}%")),
            &pct,
            |b, _| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let k = FlowKey::new(
                        Ipv4Addr::new(198, 19, 255, 1),
                        remote,
                        (i % 60000) as u16,
                        443,
                        6,
                    );
                    let gnt = pool.allocate(&k, 0, |_, _| false).unwrap();
                    pool.release(&k, gnt.addr_idx, gnt.port, 0);
                    black_box(gnt)
                })
            },
        );
    }
    g.finish();
}

/// A `/metrics` scrape's work on the packet thread: the SNAT report (port use, top hosts, the
/// busiest destinations) of a worker holding `n` flows toward 4,096 destinations, in a table
/// sized for 1M + 1,024 flows. Each iteration is the time the worker stops forwarding.
fn scrape(c: &mut Criterion) {
    let mut g = c.benchmark_group("scrape");
    for &n in &[10_000u32, 1_000_000] {
        let mut w = WorkerKit::new()
            .config(config(1_000_000 + 1024, 17))
            .policy(Arc::new(AllowAll))
            .seed(7)
            .build();
        let tpl = template();
        let mut buf = vec![0u8; 2048];
        for i in 0..n {
            patch(&mut buf, &tpl, i);
            // Destination 198.51.100.(i % 256), port 1000 + (i / 256) % 16.
            let d = u32::from(Ipv4Addr::new(198, 51, 100, (i % 256) as u8));
            let old = u32::from_be_bytes([buf[30], buf[31], buf[32], buf[33]]);
            let cs = checksum::update32(u16::from_be_bytes([buf[24], buf[25]]), old, d);
            buf[24..26].copy_from_slice(&cs.to_be_bytes());
            buf[30..34].copy_from_slice(&d.to_be_bytes());
            buf[36..38].copy_from_slice(&(1000 + ((i / 256) % 16) as u16).to_be_bytes());
            let mut p = Packet::new(&mut buf, tpl.len(), 0);
            assert!(matches!(w.process(0, &mut p), Verdict::Forward { .. }));
        }
        assert_eq!(w.flow_count(), n as usize);
        let mut now = 1u64;
        g.bench_with_input(BenchmarkId::new("snat_report", n), &n, |b, _| {
            b.iter(|| {
                now += 1_000_003;
                black_box(w.answer(now, Query::Snat { top: 40 }))
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = fast_path, new_flows, allocation, scrape
}
criterion_main!(benches);
