//! The simulator: synthetic TCP connections through the real `Worker::process`, in virtual
//! time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use ipnet::Ipv4Net;

use super::report::{DestReport, FirstFailure, GroupReport, LatencyBucket, Outage, Report, Sample};
use super::scenario::{Arrival, CloseMix, DurationDist, Scenario};
use super::AllowAllPolicy;
use tollgate::conntrack::Timeouts;
use tollgate::datapath::{DropReason, EngineConfig, Iface, IfaceRole, Packet, Verdict, Worker};
use tollgate::nat::{NatConfig, Rng};
use tollgate::policy::proto;
use tollgate::wire::checksum;

const NS: u64 = 1_000_000_000;
const INSIDE_IF: u8 = 0;
const OUTSIDE_IF: u8 = 1;
/// First inside host: 198.18.0.10.
const FIRST_HOST: u32 = (198 << 24) | (18 << 16) | 10;
/// Client ephemeral ports (Linux default range).
const EPHEMERAL: (u16, u16) = (32768, 60999);
/// The engine's clock at virtual time 0: 2^40 ns (about 1100 s), a whole number of the flow
/// table's 2^26 ns ticks. A daemon's monotonic clock is far from zero when it starts; at 0 the
/// allocator would treat every never-used port as freed at time 0 and still cooling down.
pub const CLOCK_ORIGIN: u64 = 1 << 40;
/// Latency buckets: occupancy deciles 0-10 % ... 90-100 %, then "every port busy".
pub const LATENCY_BUCKETS: usize = 11;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// The public (SNAT) address number `i` (0-based): 203.0.113.1 and up.
pub fn public_addr(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, 1 + i)
}

/// The engine configuration a scenario runs with: one worker owning the whole port range,
/// inside 198.18.0.0/15, outside 203.0.113.0/24 with a gateway.
pub fn engine_config(s: &Scenario) -> EngineConfig {
    let publics: Vec<Ipv4Addr> = (0..s.public_ips).map(public_addr).collect();
    let net = |x: &str| x.parse::<Ipv4Net>().expect("literal");
    EngineConfig {
        interfaces: vec![
            Iface {
                name: "bench-in".into(),
                role: IfaceRole::Inside,
                addrs: vec![Ipv4Addr::new(198, 18, 0, 1)],
                gateway: None,
                connected: vec![net("198.18.0.0/15")],
                mtu: 1500,
            },
            Iface {
                name: "bench-out".into(),
                role: IfaceRole::Outside,
                addrs: publics.clone(),
                gateway: Some(Ipv4Addr::new(203, 0, 113, 254)),
                connected: vec![net("203.0.113.0/24")],
                mtu: 1500,
            },
        ],
        routes: vec![],
        inside_prefixes: vec![net("198.18.0.0/15")],
        nat: NatConfig {
            public_addrs: publics,
            port_min: s.port_min,
            port_max: s.port_max,
            mapping: s.mapping.mode(),
            port_sharing: s.mapping.port_sharing(),
            per_host_quota: s.per_host_quota,
            reuse_cooldown: s.reuse_cooldown_s,
            time_wait_reuse: s.time_wait_reuse,
            exempt: vec![],
        },
        timeouts: Timeouts {
            tcp_syn: s.timeouts.tcp_syn,
            tcp_established: s.timeouts.tcp_established,
            tcp_closing: s.timeouts.tcp_closing,
            tcp_time_wait: s.timeouts.tcp_time_wait,
            tcp_rst: s.timeouts.tcp_rst,
            ..Timeouts::default()
        },
        max_flows_per_worker: s.max_flows,
        mss_clamp: None,
        icmp_on_exhaustion: false,
        icmp_source: Ipv4Addr::new(198, 18, 0, 1),
    }
}

/// Called once per virtual second with the sample just taken (progress bar, table).
pub trait Observer {
    fn second(&mut self, _s: &Sample, _duration_s: u64) {}
}

/// An observer that shows nothing.
#[derive(Debug, Default)]
pub struct Silent;
impl Observer for Silent {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    Fin,
    Rst,
    Idle,
}

#[derive(Clone, Copy, Debug)]
struct Conn {
    host: u32,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    public: Ipv4Addr,
    public_port: u16,
    close: Close,
}

/// The destinations of one group, flattened with cumulative weights.
#[derive(Debug)]
struct DestTable {
    /// (cumulative weight, first index in `dests`, count, named destination index or None).
    entries: Vec<(f64, usize, usize, Option<usize>)>,
    dests: Vec<(Ipv4Addr, u16)>,
}

/// Generated long-tail destinations: 192.0.2.16-250, 198.51.100.16-250, 203.0.113.16-250
/// on port 443, then the same on 80, 8443, 8080, 9443 and up.
fn tail_dest(i: u32) -> (Ipv4Addr, u16) {
    const PER_PORT: u32 = 3 * 235;
    const PORTS: [u16; 5] = [443, 80, 8443, 8080, 9443];
    let k = i % PER_PORT;
    let round = (i / PER_PORT) as usize;
    let port = PORTS.get(round).copied().unwrap_or(10000 + round as u16);
    let last = 16 + (k % 235) as u8;
    let a = match k / 235 {
        0 => Ipv4Addr::new(192, 0, 2, last),
        1 => Ipv4Addr::new(198, 51, 100, last),
        _ => Ipv4Addr::new(203, 0, 113, last),
    };
    (a, port)
}

struct GroupState {
    first_host: u32,
    hosts: u32,
    next_arrival: u64,
    dests: DestTable,
    opened: u64,
    attempts: u64,
    ok: u64,
    fail_ports: u64,
    fail_quota: u64,
    fail_maxflows: u64,
}

/// A small frame builder: Ethernet + IPv4 (20 bytes) + TCP (20 bytes) + zero payload, with
/// correct checksums.
fn tcp_frame(
    buf: &mut [u8],
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    payload: usize,
) -> usize {
    let total = 20 + 20 + payload;
    let len = 14 + total;
    let b = &mut buf[..len];
    b.fill(0);
    b[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    b[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut b[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = proto::TCP;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut b[34..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[8..12].copy_from_slice(&(if flags & ACK != 0 { 2000u32 } else { 0 }).to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let acc = checksum::pseudo_header(
        src.octets(),
        dst.octets(),
        proto::TCP,
        (20 + payload) as u16,
    );
    let c = !checksum::fold(checksum::sum(t, acc));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    len
}

fn uniform(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn exp_sample(rng: &mut Rng, mean: f64) -> f64 {
    -mean * (1.0 - uniform(rng)).ln()
}

/// The rate of group `g` at virtual second `t`, and when it next changes.
fn rate_at(g: &super::scenario::Group, t: f64) -> (f64, Option<f64>) {
    let mut rate = g.rate;
    let mut next = None;
    let mut phases: Vec<_> = g.phases.clone();
    phases.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    for p in &phases {
        if p.at_s <= t {
            rate = p.rate;
        } else {
            next = Some(p.at_s);
            break;
        }
    }
    (rate, next)
}

/// The next arrival of group `g` strictly after `t` (ns), or u64::MAX for none.
fn next_arrival(g: &super::scenario::Group, t_ns: u64, rng: &mut Rng, end: u64) -> u64 {
    let mut t = t_ns as f64 / NS as f64;
    loop {
        let (rate, change) = rate_at(g, t);
        let gap = if rate <= 0.0 {
            f64::INFINITY
        } else {
            match g.arrival {
                Arrival::Fixed => 1.0 / rate,
                Arrival::Poisson => exp_sample(rng, 1.0 / rate),
            }
        };
        match change {
            // The rate changes before the next arrival: restart there (memoryless for
            // Poisson; a fixed schedule restarts its spacing at the boundary).
            Some(c) if t + gap > c => t = c,
            _ => {
                if !gap.is_finite() {
                    return u64::MAX;
                }
                let ns = ((t + gap) * NS as f64).round() as u64;
                let ns = ns.max(t_ns + 1);
                return if ns >= end { u64::MAX } else { ns };
            }
        }
        if t * NS as f64 >= end as f64 {
            return u64::MAX;
        }
    }
}

fn pick_close(rng: &mut Rng, c: &CloseMix) -> Close {
    let x = uniform(rng) * (c.fin + c.rst + c.idle);
    if x < c.fin {
        Close::Fin
    } else if x < c.fin + c.rst {
        Close::Rst
    } else {
        Close::Idle
    }
}

/// Runs a scenario to the end and reports what happened.
pub fn run(s: &Scenario, obs: &mut dyn Observer) -> Report {
    let cfg = engine_config(s);
    let mut worker = Worker::new(Arc::new(cfg), Arc::new(AllowAllPolicy), 0, 1, s.seed);
    let mut rng = Rng::new(s.seed.wrapping_mul(31).wrapping_add(7));
    let end = (s.duration_s * NS as f64) as u64;
    let n_ips = usize::from(s.public_ips);
    let ports_total = s.ports_per_ip() * u32::from(s.public_ips);

    // Destinations: named ones get an index for per-destination accounting.
    let mut named: Vec<(Ipv4Addr, u16)> = Vec::new();
    let mut next_tail = 0u32;
    let mut first_host = FIRST_HOST;
    let mut groups: Vec<GroupState> = Vec::new();
    for g in &s.groups {
        let mut dests = DestTable {
            entries: Vec::new(),
            dests: Vec::new(),
        };
        let mut cum = 0.0;
        for d in &g.dest {
            cum += d.weight;
            let start = dests.dests.len();
            if let Some(a) = d.addr {
                let key = (a, d.port);
                let idx = named.iter().position(|&n| n == key).unwrap_or_else(|| {
                    named.push(key);
                    named.len() - 1
                });
                dests.dests.push(key);
                dests.entries.push((cum, start, 1, Some(idx)));
            } else {
                for _ in 0..d.tail {
                    dests.dests.push(tail_dest(next_tail));
                    next_tail += 1;
                }
                dests.entries.push((cum, start, d.tail as usize, None));
            }
        }
        groups.push(GroupState {
            first_host,
            hosts: g.hosts,
            next_arrival: 0,
            dests,
            opened: 0,
            attempts: 0,
            ok: 0,
            fail_ports: 0,
            fail_quota: 0,
            fail_maxflows: 0,
        });
        first_host += g.hosts;
    }
    for (gs, g) in groups.iter_mut().zip(&s.groups) {
        let (r, _) = rate_at(g, 0.0);
        gs.next_arrival = if r > 0.0 && g.arrival == Arrival::Fixed {
            0
        } else {
            next_arrival(g, 0, &mut rng, end)
        };
    }
    let total_hosts = (first_host - FIRST_HOST) as usize;
    let mut starved = vec![false; total_hosts];
    let mut attempted = vec![false; total_hosts];
    let mut next_sport = vec![EPHEMERAL.0; total_hosts];

    let mut conns: Vec<Conn> = Vec::new();
    let mut free_slots: Vec<u32> = Vec::new();
    let mut live: HashMap<(u32, u16), u32> = HashMap::new();
    let mut closes: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();

    let mut buf = vec![0u8; 2048];
    let mut latency: Vec<Vec<u32>> = vec![Vec::new(); LATENCY_BUCKETS];
    let mut samples: Vec<Sample> = Vec::new();
    let mut first_exhaustion: Option<FirstFailure> = None;
    let mut first_quota: Option<FirstFailure> = None;
    let mut outages: Vec<Outage> = Vec::new();
    let mut outage_start: Option<u64> = None;
    let mut last_failure: Option<u64> = None;
    let mut last_gap: Option<f64> = None;
    let mut dest_peak = vec![0u32; named.len()];
    let mut unexpected = 0u64;
    let mut late_close_drops = 0u64;
    let mut offered_total = 0u64;
    let mut failures_total = 0u64;
    let mut cur = Sample::new(0, n_ips, named.len());

    let hk_every = u64::from(s.housekeeping_ms.max(1)) * 1_000_000;
    let mut next_hk = hk_every;
    let mut next_sample = NS;
    let wall = Instant::now();

    let in_use_total = |w: &Worker| -> u32 {
        (0..n_ips)
            .map(|i| w.snat().utilisation(i, proto::TCP).0)
            .sum()
    };

    // Runs one frame; the verdict and (for forwarded frames) the translated source.
    macro_rules! send {
        ($now:expr, $rx:expr, $src:expr, $sp:expr, $dst:expr, $dp:expr, $fl:expr, $pl:expr) => {{
            let len = tcp_frame(&mut buf, $src, $sp, $dst, $dp, $fl, $pl);
            let mut p = Packet::new(&mut buf, len, $rx);
            worker.process(CLOCK_ORIGIN + $now, &mut p)
        }};
    }

    loop {
        let t_arr = groups
            .iter()
            .map(|g| g.next_arrival)
            .min()
            .unwrap_or(u64::MAX);
        let t_close = closes.peek().map_or(u64::MAX, |Reverse((t, _))| *t);
        let now = t_arr.min(t_close).min(next_hk).min(next_sample);
        if now >= end {
            break;
        }
        if now == next_sample {
            // Sample the second that just ended.
            cur.t_s = now / NS;
            cur.engine_flows = worker.flow_count() as u64;
            cur.open_conns = live.len() as u64;
            for i in 0..n_ips {
                let (u, sz) = worker.snat().utilisation(i, proto::TCP);
                cur.ports_in_use[i] = u;
                cur.utilisation[i] = f64::from(u) / f64::from(sz.max(1));
            }
            if !named.is_empty() {
                for (_, f) in worker.flows().iter() {
                    let k = (f.orig.dst(), f.orig.dport());
                    if let Some(i) = named.iter().position(|&n| n == k) {
                        cur.dest_flows[i] += 1;
                    }
                }
                for (p, &c) in dest_peak.iter_mut().zip(&cur.dest_flows) {
                    *p = (*p).max(c);
                }
            }
            obs.second(&cur, end.div_ceil(NS));
            samples.push(std::mem::replace(
                &mut cur,
                Sample::new(now / NS, n_ips, named.len()),
            ));
            next_sample += NS;
            continue;
        }
        if now == next_hk {
            worker.housekeeping(CLOCK_ORIGIN + now, s.housekeeping_budget as usize);
            next_hk += hk_every;
            continue;
        }
        if now == t_close {
            let Some(Reverse((_, slot))) = closes.pop() else {
                continue;
            };
            let c = conns[slot as usize];
            let host = Ipv4Addr::from(FIRST_HOST + c.host);
            let mut ok = true;
            match c.close {
                Close::Fin => {
                    let v1 = send!(now, INSIDE_IF, host, c.sport, c.dst, c.dport, FIN | ACK, 0);
                    let v2 = send!(
                        now,
                        OUTSIDE_IF,
                        c.dst,
                        c.dport,
                        c.public,
                        c.public_port,
                        FIN | ACK,
                        0
                    );
                    let v3 = send!(now, INSIDE_IF, host, c.sport, c.dst, c.dport, ACK, 0);
                    ok = [v1, v2, v3]
                        .iter()
                        .all(|v| matches!(v, Verdict::Forward { .. }));
                }
                Close::Rst => {
                    let v = send!(now, INSIDE_IF, host, c.sport, c.dst, c.dport, RST | ACK, 0);
                    ok = matches!(v, Verdict::Forward { .. });
                }
                Close::Idle => {}
            }
            if !ok {
                late_close_drops += 1;
            }
            live.remove(&(c.host, c.sport));
            free_slots.push(slot);
            continue;
        }
        // An arrival.
        let gi = groups
            .iter()
            .position(|g| g.next_arrival == now)
            .expect("an arrival is due");
        let gspec = &s.groups[gi];
        let g = &mut groups[gi];
        g.next_arrival = next_arrival(gspec, now, &mut rng, end);
        if gspec.max_connections.is_some_and(|m| g.opened >= m) {
            g.next_arrival = u64::MAX;
            continue;
        }
        g.opened += 1;
        let host_rel = g.first_host - FIRST_HOST + rng.below(g.hosts.max(1));
        let x = uniform(&mut rng) * g.dests.entries.last().map_or(1.0, |e| e.0);
        let e = g
            .dests
            .entries
            .iter()
            .find(|e| x < e.0)
            .copied()
            .unwrap_or_else(|| *g.dests.entries.last().expect("validated"));
        let (dst, dport) = g.dests.dests[e.1 + rng.below(e.2 as u32) as usize];
        // A client port the host does not use for a live connection.
        let h = host_rel as usize;
        let mut sport = next_sport[h];
        for _ in 0..(EPHEMERAL.1 - EPHEMERAL.0) {
            let cand = sport;
            sport = if sport >= EPHEMERAL.1 {
                EPHEMERAL.0
            } else {
                sport + 1
            };
            if !live.contains_key(&(host_rel, cand)) {
                next_sport[h] = sport;
                sport = cand;
                break;
            }
        }
        let host = Ipv4Addr::from(FIRST_HOST + host_rel);
        attempted[h] = true;
        g.attempts += 1;
        offered_total += 1;
        cur.offered += 1;

        let busy = in_use_total(&worker);
        let bucket = if busy >= ports_total {
            LATENCY_BUCKETS - 1
        } else {
            ((u64::from(busy) * 10) / u64::from(ports_total.max(1))) as usize
        };
        let len = tcp_frame(&mut buf, host, sport, dst, dport, SYN, 0);
        let mut p = Packet::new(&mut buf, len, INSIDE_IF);
        let t0 = Instant::now();
        let v = worker.process(CLOCK_ORIGIN + now, &mut p);
        let dt = t0.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32;
        latency[bucket].push(dt);
        match v {
            Verdict::Forward { .. } => {
                let public = Ipv4Addr::new(buf[26], buf[27], buf[28], buf[29]);
                let public_port = u16::from_be_bytes([buf[34], buf[35]]);
                g.ok += 1;
                cur.ok += 1;
                if let Some(start) = outage_start.take() {
                    outages.push(Outage {
                        start_s: start as f64 / NS as f64,
                        end_s: Some(now as f64 / NS as f64),
                        duration_s: Some((now - start) as f64 / NS as f64),
                    });
                }
                if let Some(lf) = last_failure.take() {
                    last_gap = Some((now - lf) as f64 / NS as f64);
                }
                let v = send!(
                    now,
                    OUTSIDE_IF,
                    dst,
                    dport,
                    public,
                    public_port,
                    SYN | ACK,
                    0
                );
                let mut fine = matches!(v, Verdict::Forward { .. });
                let v = send!(now, INSIDE_IF, host, sport, dst, dport, ACK, 0);
                fine &= matches!(v, Verdict::Forward { .. });
                for _ in 0..gspec.data_packets {
                    let v = send!(now, INSIDE_IF, host, sport, dst, dport, PSH | ACK, 100);
                    fine &= matches!(v, Verdict::Forward { .. });
                    let v = send!(now, OUTSIDE_IF, dst, dport, public, public_port, ACK, 0);
                    fine &= matches!(v, Verdict::Forward { .. });
                }
                if !fine {
                    unexpected += 1;
                }
                let close = pick_close(&mut rng, &gspec.close);
                let c = Conn {
                    host: host_rel,
                    sport,
                    dst,
                    dport,
                    public,
                    public_port,
                    close,
                };
                let slot = match free_slots.pop() {
                    Some(i) => {
                        conns[i as usize] = c;
                        i
                    }
                    None => {
                        conns.push(c);
                        (conns.len() - 1) as u32
                    }
                };
                live.insert((host_rel, sport), slot);
                let d = match gspec.duration_dist {
                    DurationDist::Fixed => gspec.duration_s,
                    DurationDist::Exp => exp_sample(&mut rng, gspec.duration_s),
                };
                if d.is_finite() {
                    let at = now + (d * NS as f64).round() as u64;
                    if at < end {
                        closes.push(Reverse((at.max(now + 1), slot)));
                    }
                }
            }
            Verdict::Drop(
                r @ (DropReason::OutOfPorts | DropReason::HostQuota | DropReason::MaxFlows),
            ) => {
                starved[h] = true;
                failures_total += 1;
                let ff = FirstFailure {
                    t_s: now as f64 / NS as f64,
                    reason: r.as_str().to_string(),
                    engine_flows: worker.flow_count() as u64,
                    open_conns: live.len() as u64,
                    ports_in_use: busy,
                    offered_before: offered_total - 1,
                };
                match r {
                    DropReason::HostQuota => {
                        g.fail_quota += 1;
                        cur.fail_quota += 1;
                        first_quota.get_or_insert(ff);
                    }
                    _ => {
                        if r == DropReason::OutOfPorts {
                            g.fail_ports += 1;
                            cur.fail_ports += 1;
                        } else {
                            g.fail_maxflows += 1;
                            cur.fail_maxflows += 1;
                        }
                        first_exhaustion.get_or_insert(ff);
                        outage_start.get_or_insert(now);
                        last_failure = Some(now);
                    }
                }
            }
            _ => unexpected += 1,
        }
    }
    if let Some(start) = outage_start {
        outages.push(Outage {
            start_s: start as f64 / NS as f64,
            end_s: None,
            duration_s: None,
        });
    }
    let wall_s = wall.elapsed().as_secs_f64();

    let latency = latency
        .into_iter()
        .enumerate()
        .map(|(i, mut v)| {
            v.sort_unstable();
            let pct = |q: f64| -> Option<u32> {
                if v.is_empty() {
                    None
                } else {
                    Some(v[((v.len() - 1) as f64 * q).round() as usize])
                }
            };
            LatencyBucket {
                occupancy: if i == LATENCY_BUCKETS - 1 {
                    "100% (all busy)".into()
                } else {
                    format!("{}-{}%", i * 10, i * 10 + 10)
                },
                samples: v.len() as u64,
                p50_ns: pct(0.5),
                p99_ns: pct(0.99),
            }
        })
        .collect();
    let group_reports = s
        .groups
        .iter()
        .zip(&groups)
        .map(|(spec, g)| {
            let range = (g.first_host - FIRST_HOST) as usize
                ..(g.first_host - FIRST_HOST + g.hosts) as usize;
            GroupReport {
                name: spec.name.clone(),
                hosts: g.hosts,
                hosts_active: attempted[range.clone()].iter().filter(|&&a| a).count() as u32,
                hosts_starved: starved[range].iter().filter(|&&a| a).count() as u32,
                attempts: g.attempts,
                ok: g.ok,
                fail_out_of_ports: g.fail_ports,
                fail_host_quota: g.fail_quota,
                fail_max_flows: g.fail_maxflows,
            }
        })
        .collect();
    let capacity = u64::from(ports_total);
    let dests = named
        .iter()
        .zip(&dest_peak)
        .map(|(&(a, p), &peak)| DestReport {
            dest: format!("{a}:{p}"),
            peak_flows: u64::from(peak),
            peak_share_of_ports: peak as f64 / capacity.max(1) as f64,
        })
        .collect();
    Report {
        scenario: s.name.clone(),
        mapping: s.mapping.short().to_string(),
        public_ips: s.public_ips,
        ports_per_ip: s.ports_per_ip(),
        per_host_quota: s.per_host_quota,
        duration_s: s.duration_s,
        wall_s,
        offered: offered_total,
        succeeded: groups.iter().map(|g| g.ok).sum(),
        failures: failures_total,
        unexpected_verdicts: unexpected,
        late_close_drops,
        time_wait_reused: worker.counters().snat_time_wait_reused.load(Relaxed),
        peak_engine_flows: samples.iter().map(|x| x.engine_flows).max().unwrap_or(0),
        first_exhaustion,
        first_quota_failure: first_quota,
        hosts: total_hosts as u32,
        hosts_starved: starved.iter().filter(|&&x| x).count() as u32,
        groups: group_reports,
        dests,
        latency,
        outages,
        last_failure_to_success_s: last_gap,
        samples,
    }
}
