//! The management endpoint: `/healthz` for a load balancer probe, `/readyz`, and Prometheus
//! `/metrics`. A plain HTTP/1.1 server on its own thread, on the configured management address
//! (loopback by default); it only reads the workers' atomics, never touches the packet path.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use crate::datapath::query::Inboxes;
use crate::datapath::{Counters, DropReason, RuleHits, SNAT_PROTOS};
use crate::io::runtime::LiveIoStats;
use crate::io::IoStats;

fn kind_str(k: &str) -> &'static str {
    match k {
        "dnat" => "dnat",
        "network" => "network",
        "application" => "application",
        _ => "other",
    }
}

/// Prometheus label value escaping (backslash, quote, newline).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// SNAT use above which the appliance reports itself degraded (Azure Firewall's threshold).
pub const DEGRADED_PPM: u64 = 950_000;
/// A worker whose heartbeat has not moved for this long is stalled.
pub const STALLED_AFTER: Duration = Duration::from_secs(5);

/// Rule names as exported: group, collection, rule, kind.
type RuleName = (String, String, String, &'static str);

/// The workers' counters, registered once each as they start, and what the control plane
/// needs to export them.
#[derive(Debug, Default)]
pub struct Registry {
    workers: Mutex<Vec<Arc<Counters>>>,
    expected: std::sync::atomic::AtomicUsize,
    /// The workers' inboxes (flow and SNAT questions).
    pub inboxes: Arc<Inboxes>,
    /// Data interface names by interface id.
    ifaces: Mutex<Vec<String>>,
    /// Public SNAT addresses, in the pool's order.
    snat_addrs: Mutex<Vec<std::net::Ipv4Addr>>,
    /// Hits of rules under policies the workers have left behind (reloads), by name.
    retired_hits: Mutex<BTreeMap<RuleName, u64>>,
    /// The I/O counters the workers publish while they run, per worker and interface.
    live_io: std::sync::OnceLock<Arc<LiveIoStats>>,
}

impl Registry {
    /// A registry that is ready once `workers` have registered.
    pub fn new(workers: usize) -> Arc<Self> {
        let r = Registry::default();
        r.expected.store(workers, Relaxed);
        Arc::new(r)
    }
    /// Names the data interfaces and SNAT addresses for the per-interface and per-address
    /// metrics.
    pub fn describe(&self, ifaces: Vec<String>, snat_addrs: Vec<std::net::Ipv4Addr>) {
        if let Ok(mut i) = self.ifaces.lock() {
            *i = ifaces;
        }
        if let Ok(mut a) = self.snat_addrs.lock() {
            *a = snat_addrs;
        }
    }
    /// Where the workers publish their I/O counters (set once, before they start).
    pub fn set_live_io(&self, live: Arc<LiveIoStats>) {
        let _ = self.live_io.set(live);
    }
    /// Each data interface's I/O counters, summed over the workers, by name (the described
    /// interfaces, in order); empty when no worker publishes them.
    pub fn io_stats(&self) -> Vec<(String, IoStats)> {
        let Some(live) = self.live_io.get() else {
            return Vec::new();
        };
        let ifaces = self.ifaces.lock().map(|v| v.clone()).unwrap_or_default();
        ifaces
            .into_iter()
            .enumerate()
            .take(usize::from(crate::datapath::IfaceId::MAX) + 1)
            .map(|(i, name)| (name, live.iface(i as crate::datapath::IfaceId)))
            .collect()
    }
    /// Per-rule hit totals across workers and reloads, by name (rules with hits only).
    pub fn rule_hits(&self) -> BTreeMap<RuleName, u64> {
        let ws = self.snapshot();
        let Ok(mut retired) = self.retired_hits.lock() else {
            return BTreeMap::new();
        };
        let add = |m: &mut BTreeMap<RuleName, u64>, h: &RuleHits| {
            for (i, c) in h.counts.iter().enumerate() {
                let v = c.load(Relaxed);
                if v == 0 {
                    continue;
                }
                if let Some(r) = h.policy.describe(i as u32) {
                    let k = (
                        r.group.to_string(),
                        r.collection.to_string(),
                        r.rule.to_string(),
                        kind_str(r.kind),
                    );
                    *m.entry(k).or_default() += v;
                }
            }
        };
        for c in &ws {
            let old: Vec<Arc<RuleHits>> = c
                .retired_hits
                .lock()
                .map(|mut v| std::mem::take(&mut *v))
                .unwrap_or_default();
            for h in old {
                add(&mut retired, &h);
            }
        }
        let mut total = retired.clone();
        for c in &ws {
            if let Some(h) = c.rule_hits.load_full() {
                add(&mut total, &h);
            }
        }
        total
    }
    /// Called once per worker at startup (not on the packet path).
    pub fn register(&self, c: Arc<Counters>) {
        if let Ok(mut w) = self.workers.lock() {
            w.push(c);
        }
    }
    fn snapshot(&self) -> Vec<Arc<Counters>> {
        self.workers.lock().map(|w| w.clone()).unwrap_or_default()
    }
    /// Every registered worker's counters.
    pub fn all(&self) -> Vec<Arc<Counters>> {
        self.snapshot()
    }
    /// Every worker has registered and published a heartbeat.
    pub fn ready(&self) -> bool {
        let ws = self.snapshot();
        ws.len() >= self.expected.load(Relaxed)
            && ws.iter().all(|c| c.heartbeat_ns.load(Relaxed) != 0)
    }
}

/// What `/healthz` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Some SNAT slice is more than 95% used.
    Degraded,
    /// A worker stopped, or the dataplane is not up.
    Unhealthy,
}

/// Tracks when each worker's heartbeat last moved.
#[derive(Debug, Default)]
pub struct Beats(Vec<(u64, Instant)>);

impl Beats {
    /// The appliance's health at `now` (call it regularly: a stall is a heartbeat that has not
    /// moved between calls for [`STALLED_AFTER`]).
    pub fn health(&mut self, reg: &Registry, now: Instant) -> Health {
        let ws = reg.snapshot();
        if ws.len() < reg.expected.load(Relaxed) {
            return Health::Unhealthy;
        }
        self.0.resize(ws.len(), (u64::MAX, now));
        let mut h = Health::Healthy;
        for (c, (last, seen)) in ws.iter().zip(self.0.iter_mut()) {
            let hb = c.heartbeat_ns.load(Relaxed);
            if hb != *last {
                *last = hb;
                *seen = now;
            } else if now.duration_since(*seen) > STALLED_AFTER {
                return Health::Unhealthy;
            }
            if c.snat_util_ppm.load(Relaxed) > DEGRADED_PPM {
                h = Health::Degraded;
            }
        }
        h
    }
}

/// Serves the endpoints on `addr` until `stop` is set.
pub fn spawn(
    addr: SocketAddr,
    reg: Arc<Registry>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("tollgate-mgmt".into())
        .spawn(move || {
            crate::io::caps::enter_control_thread();
            let mut beats = Beats::default();
            while !stop.load(Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = handle(s, &reg, &mut beats);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
}

fn handle(mut s: TcpStream, reg: &Registry, beats: &mut Beats) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf)?;
    let req = String::from_utf8_lossy(&buf[..n]);
    let path = req.split_whitespace().nth(1).unwrap_or("/");
    let (status, body, ctype) = match path {
        "/healthz" => match beats.health(reg, Instant::now()) {
            Health::Healthy => ("200 OK", "healthy\n".to_string(), "text/plain"),
            Health::Degraded => ("200 OK", "degraded\n".to_string(), "text/plain"),
            Health::Unhealthy => (
                "503 Service Unavailable",
                "unhealthy\n".to_string(),
                "text/plain",
            ),
        },
        "/readyz" => {
            if reg.ready() {
                ("200 OK", "ready\n".to_string(), "text/plain")
            } else {
                (
                    "503 Service Unavailable",
                    "starting\n".to_string(),
                    "text/plain",
                )
            }
        }
        "/metrics" => ("200 OK", metrics(reg), "text/plain; version=0.0.4"),
        _ => ("404 Not Found", "not found\n".to_string(), "text/plain"),
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The Prometheus text exposition of every worker's counters, summed at scrape time.
pub fn metrics(reg: &Registry) -> String {
    let ws = reg.snapshot();
    let mut out = String::new();
    let sum = |f: &dyn Fn(&Counters) -> u64| ws.iter().map(|c| f(c)).sum::<u64>();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    counter(
        "tollgate_rx_packets_total",
        "Frames received by the dataplane.",
        sum(&|c| c.rx_packets.load(Relaxed)),
    );
    counter(
        "tollgate_rx_bytes_total",
        "Bytes received by the dataplane.",
        sum(&|c| c.rx_bytes.load(Relaxed)),
    );
    counter(
        "tollgate_tx_packets_total",
        "Frames forwarded or released.",
        sum(&|c| c.tx_packets.load(Relaxed)),
    );
    counter(
        "tollgate_tx_bytes_total",
        "Bytes forwarded or released.",
        sum(&|c| c.tx_bytes.load(Relaxed)),
    );
    counter(
        "tollgate_local_packets_total",
        "Frames left to the kernel (ARP, traffic to the appliance).",
        sum(&|c| c.local.load(Relaxed)),
    );
    counter(
        "tollgate_replies_total",
        "ICMP errors and resets the appliance originated.",
        sum(&|c| c.replies.load(Relaxed)),
    );
    counter(
        "tollgate_flows_created_total",
        "Flows admitted.",
        sum(&|c| c.flows_created.load(Relaxed)),
    );
    counter(
        "tollgate_flows_expired_total",
        "Flows reclaimed after their timeout.",
        sum(&|c| c.flows_expired.load(Relaxed)),
    );
    counter(
        "tollgate_snat_eim_collision_moved_total",
        "SNAT flows given another public port than their endpoint's mapping: another holder of the shared port already talks to that destination.",
        sum(&|c| c.eim_collision_moved.load(Relaxed)),
    );
    counter(
        "tollgate_snat_time_wait_reused_total",
        "New TCP flows that found no SNAT port left and took over the port of a closed flow (TIME_WAIT or reset) toward the same remote address and port, evicting it.",
        sum(&|c| c.snat_time_wait_reused.load(Relaxed)),
    );
    let _ = writeln!(out, "# HELP tollgate_drops_total Packets dropped, by reason.\n# TYPE tollgate_drops_total counter");
    for r in DropReason::ALL {
        let v = sum(&|c| c.drop_count(*r));
        let _ = writeln!(out, "tollgate_drops_total{{reason=\"{}\"}} {v}", r.as_str());
    }
    let _ = writeln!(
        out,
        "# HELP tollgate_flows Flows tracked, per worker.\n# TYPE tollgate_flows gauge"
    );
    for (i, c) in ws.iter().enumerate() {
        let _ = writeln!(
            out,
            "tollgate_flows{{worker=\"{i}\"}} {}",
            c.flows.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP tollgate_snat_utilisation_ratio Use of the busiest SNAT port slice (address and protocol) of each worker.\n# TYPE tollgate_snat_utilisation_ratio gauge"
    );
    for (i, c) in ws.iter().enumerate() {
        let ppm = c.snat_util_ppm.load(Relaxed);
        let _ = writeln!(
            out,
            "tollgate_snat_utilisation_ratio{{worker=\"{i}\"}} {}.{:06}",
            ppm / 1_000_000,
            ppm % 1_000_000
        );
    }
    extended_metrics(reg, &ws, &mut out);
    out
}

/// Per-interface traffic, per-address SNAT use, rule hits and the busiest SNAT destinations.
fn extended_metrics(reg: &Registry, ws: &[Arc<Counters>], out: &mut String) {
    let ifaces = reg.ifaces.lock().map(|v| v.clone()).unwrap_or_default();
    for (name, help, dir, pick) in [
        (
            "tollgate_interface_packets_total",
            "Frames by data interface and direction.",
            "rx",
            0,
        ),
        ("tollgate_interface_packets_total", "", "tx", 2),
        (
            "tollgate_interface_bytes_total",
            "Bytes by data interface and direction.",
            "rx",
            1,
        ),
        ("tollgate_interface_bytes_total", "", "tx", 3),
    ] {
        if !help.is_empty() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        }
        for (i, ifname) in ifaces.iter().enumerate() {
            let v: u64 = ws
                .iter()
                .filter_map(|c| c.ifaces.get(i))
                .map(|c| match pick {
                    0 => c.rx_packets.load(Relaxed),
                    1 => c.rx_bytes.load(Relaxed),
                    2 => c.tx_packets.load(Relaxed),
                    _ => c.tx_bytes.load(Relaxed),
                })
                .sum();
            let _ = writeln!(
                out,
                "{name}{{interface=\"{}\",direction=\"{dir}\"}} {v}",
                esc(ifname)
            );
        }
    }
    // The I/O counters per interface, each under its own name (see `IoStats::FIELDS`).
    let io = reg.io_stats();
    if !io.is_empty() {
        for (k, (field, help)) in IoStats::FIELDS.iter().enumerate() {
            let name = format!("tollgate_io_{field}_total");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (ifname, s) in &io {
                let _ = writeln!(
                    out,
                    "{name}{{interface=\"{}\"}} {}",
                    esc(ifname),
                    s.values()[k]
                );
            }
        }
    }
    let _ = writeln!(out, "# HELP tollgate_flows_by_state Flows tracked, by protocol and state (all workers).\n# TYPE tollgate_flows_by_state gauge");
    for (i, class) in crate::conntrack::TimeoutClass::ALL.iter().enumerate() {
        use crate::conntrack::TimeoutClass as C;
        let (p, st) = match class {
            C::TcpSyn => ("tcp", "syn_sent"),
            C::TcpEstablished => ("tcp", "established"),
            C::TcpClosing => ("tcp", "closing"),
            C::TcpTimeWait => ("tcp", "time_wait"),
            C::TcpClosed => ("tcp", "closed"),
            C::Udp => ("udp", "active"),
            C::Icmp => ("icmp", "active"),
        };
        let v: u64 = ws.iter().map(|c| c.flows_by_class[i].load(Relaxed)).sum();
        let _ = writeln!(
            out,
            "tollgate_flows_by_state{{protocol=\"{p}\",state=\"{st}\"}} {v}"
        );
    }
    let addrs = reg.snat_addrs.lock().map(|v| v.clone()).unwrap_or_default();
    let pname = |p: u8| match p {
        6 => "tcp",
        17 => "udp",
        _ => "icmp",
    };
    let per_slice: [(&str, &str, SliceGauge); 2] = [
        (
            "tollgate_snat_ports_used",
            "SNAT ports (EIM) or port slots (APDM) in use, per public address, protocol and worker.",
            |c| &c.snat_used,
        ),
        (
            "tollgate_snat_ports",
            "SNAT ports available, per public address, protocol and worker.",
            |c| &c.snat_size,
        ),
    ];
    for (name, help, field) in per_slice {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (a, addr) in addrs.iter().enumerate() {
            for (j, &p) in SNAT_PROTOS.iter().enumerate() {
                for (w, c) in ws.iter().enumerate() {
                    let k = a * SNAT_PROTOS.len() + j;
                    let v = field(c).get(k).map_or(0, |x| x.load(Relaxed));
                    let _ = writeln!(
                        out,
                        "{name}{{address=\"{addr}\",protocol=\"{}\",worker=\"{w}\"}} {v}",
                        pname(p)
                    );
                }
            }
        }
    }
    let _ = writeln!(out, "# HELP tollgate_snat_address_utilisation_ratio Share of a public address's SNAT ports in use (all workers), per protocol.\n# TYPE tollgate_snat_address_utilisation_ratio gauge");
    for (a, addr) in addrs.iter().enumerate() {
        for (j, &p) in SNAT_PROTOS.iter().enumerate() {
            let k = a * SNAT_PROTOS.len() + j;
            let used: u64 = ws
                .iter()
                .filter_map(|c| c.snat_used.get(k))
                .map(|x| x.load(Relaxed))
                .sum();
            let size: u64 = ws
                .iter()
                .filter_map(|c| c.snat_size.get(k))
                .map(|x| x.load(Relaxed))
                .sum();
            let r = if size == 0 {
                0.0
            } else {
                used as f64 / size as f64
            };
            let _ = writeln!(out, "tollgate_snat_address_utilisation_ratio{{address=\"{addr}\",protocol=\"{}\"}} {r:.6}", pname(p));
        }
    }
    let _ = writeln!(out, "# HELP tollgate_rule_hits_total New-flow decisions by rule (kept across reloads by name).\n# TYPE tollgate_rule_hits_total counter");
    for ((g, c, r, k), v) in reg.rule_hits() {
        let _ = writeln!(
            out,
            "tollgate_rule_hits_total{{group=\"{}\",collection=\"{}\",rule=\"{}\",kind=\"{k}\"}} {v}",
            esc(&g),
            esc(&c),
            esc(&r)
        );
    }
    let (m, _, _) = super::admin::ask_snat(&reg.inboxes, TOP_DESTINATIONS);
    let _ = writeln!(out, "# HELP tollgate_snat_destination_flows SNATed flows toward the busiest destinations (top {TOP_DESTINATIONS}).\n# TYPE tollgate_snat_destination_flows gauge");
    for ((a, port, p), n) in m.destinations {
        let _ = writeln!(
            out,
            "tollgate_snat_destination_flows{{destination=\"{a}:{port}\",protocol=\"{}\"}} {n}",
            pname(p)
        );
    }
}

/// Which per-slice SNAT gauge of a worker's counters.
type SliceGauge = fn(&Counters) -> &[std::sync::atomic::AtomicU64];

/// Destinations listed in `tollgate_snat_destination_flows`.
pub const TOP_DESTINATIONS: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_heartbeats_and_snat_use() {
        let reg = Registry::new(1);
        let mut b = Beats::default();
        let t0 = Instant::now();
        assert_eq!(b.health(&reg, t0), Health::Unhealthy, "no worker yet");
        let c = Arc::new(Counters::default());
        reg.register(c.clone());
        c.heartbeat_ns.store(1, Relaxed);
        assert_eq!(b.health(&reg, t0), Health::Healthy);
        c.snat_util_ppm.store(960_000, Relaxed);
        assert_eq!(
            b.health(&reg, t0 + Duration::from_secs(1)),
            Health::Degraded
        );
        assert_eq!(
            b.health(&reg, t0 + Duration::from_secs(7)),
            Health::Unhealthy,
            "heartbeat stalled"
        );
        c.heartbeat_ns.store(2, Relaxed);
        assert_eq!(
            b.health(&reg, t0 + Duration::from_secs(8)),
            Health::Degraded
        );
    }

    #[test]
    fn metrics_sum_workers_and_name_every_reason() {
        let reg = Registry::new(2);
        for n in [3, 4] {
            let c = Arc::new(Counters::default());
            c.flows_created.store(n, Relaxed);
            c.drops[DropReason::OutOfPorts as usize].store(n, Relaxed);
            reg.register(c);
        }
        let m = metrics(&reg);
        assert!(m.contains("\ntollgate_flows_created_total 7\n"), "{m}");
        assert!(m.contains("tollgate_drops_total{reason=\"out_of_ports\"} 7\n"));
        assert_eq!(
            m.matches("tollgate_drops_total{").count(),
            DropReason::COUNT
        );
        assert!(
            !m.contains("tollgate_io_"),
            "no I/O counters published: none shown"
        );
    }

    #[test]
    fn metrics_show_every_io_counter_per_interface() {
        let reg = Registry::new(2);
        reg.describe(vec!["tg-in".into(), "tg-out".into()], Vec::new());
        let live = Arc::new(LiveIoStats::new(2, 2));
        reg.set_live_io(live.clone());
        let s = |n| IoStats {
            rx_oversize: n,
            link_errors: 1,
            ..IoStats::default()
        };
        live.store(0, 0, &s(5));
        live.store(1, 0, &s(7));
        live.store(1, 1, &s(0));
        assert_eq!(
            reg.io_stats()[0],
            ("tg-in".to_string(), {
                let mut t = s(5);
                t.add(&s(7));
                t
            })
        );
        let m = metrics(&reg);
        assert!(
            m.contains("\ntollgate_io_rx_oversize_total{interface=\"tg-in\"} 12\n"),
            "{m}"
        );
        assert!(m.contains("\ntollgate_io_rx_oversize_total{interface=\"tg-out\"} 0\n"));
        assert!(m.contains("\ntollgate_io_link_errors_total{interface=\"tg-in\"} 2\n"));
        assert!(m.contains(
            "# HELP tollgate_io_rx_oversize_total Received frames dropped because they did not fit"
        ));
        for (field, _) in IoStats::FIELDS {
            let name = format!("tollgate_io_{field}_total");
            assert!(m.contains(&format!("# TYPE {name} counter\n")), "{name}");
            assert_eq!(
                m.matches(&format!("\n{name}{{interface=")).count(),
                2,
                "{name}"
            );
        }
    }
}
