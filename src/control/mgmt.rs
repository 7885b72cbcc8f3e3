//! The management endpoint: `/healthz` for a load balancer probe, `/readyz`, and Prometheus
//! `/metrics`. An HTTP/1.1 server (hyper on a single-threaded tokio runtime) on its own thread,
//! on the configured management address (loopback by default): concurrent connections, bounded
//! in number and in time, so idle or slow clients cannot delay a probe. It only reads the
//! workers' atomics and asks their inboxes, never touches the packet path.

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::registry::Registry;
use crate::datapath::{Counters, DropReason, SNAT_PROTOS};
use crate::io::IoStats;

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
        }
        if pool_util_ppm(&ws) > DEGRADED_PPM {
            h = Health::Degraded;
        }
        h
    }
}

/// The busiest (public address, protocol) of the whole pool, all workers together (a worker
/// whose slice is dry borrows from the others, so one full slice is not a full pool); the
/// busiest worker's slice when the counters carry no per-address gauges.
fn pool_util_ppm(ws: &[Arc<Counters>]) -> u64 {
    let n = ws.iter().map(|c| c.snat_used.len()).max().unwrap_or(0);
    if n == 0 {
        return ws
            .iter()
            .map(|c| c.snat_util_ppm.load(Relaxed))
            .max()
            .unwrap_or(0);
    }
    (0..n)
        .map(|k| {
            let (used, size) = pool_use(ws, k);
            (used * 1_000_000).checked_div(size).unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// (ports in use, ports) of SNAT gauge `k` (public address x protocol), all workers together.
fn pool_use(ws: &[Arc<Counters>], k: usize) -> (u64, u64) {
    let sum = |g: fn(&Counters) -> &[std::sync::atomic::AtomicU64]| -> u64 {
        ws.iter()
            .filter_map(|c| g(c).get(k))
            .map(|x| x.load(Relaxed))
            .sum()
    };
    (sum(|c| &c.snat_used), sum(|c| &c.snat_size))
}

/// Connections served at once; more wait in the kernel's accept queue until one ends.
pub const MAX_CONNECTIONS: usize = 512;
/// A client must send a whole request head within this, or its connection is closed: idle
/// clients cannot hold the listener.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(2);
/// A connection lives at most this long, keep-alive included.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
/// Answering one request takes at most this (a scrape waits on the workers' inboxes).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Serves the endpoints on `addr` until `stop` is set.
pub fn spawn(
    addr: SocketAddr,
    reg: Arc<Registry>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    spawn_on(TcpListener::bind(addr)?, reg, stop)
}

/// Serves the endpoints on a bound listener until `stop` is set: an HTTP/1.1 server (hyper)
/// on a single-threaded tokio runtime of its own thread. Every connection is a task, at most
/// [`MAX_CONNECTIONS`] at once, with [`HEADER_DEADLINE`], [`CONNECTION_DEADLINE`] and
/// [`REQUEST_DEADLINE`]; `/metrics` is built on a blocking thread, so a slow scrape never
/// delays `/healthz`, which only reads atomics.
pub fn spawn_on(
    listener: TcpListener,
    reg: Arc<Registry>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(2)
        .thread_name("tollgate-mgmt-scrape")
        .build()?;
    std::thread::Builder::new()
        .name("tollgate-mgmt".into())
        .spawn(move || {
            crate::io::caps::enter_control_thread();
            rt.block_on(serve(listener, reg, stop));
        })
}

async fn serve(listener: TcpListener, reg: Arc<Registry>, stop: Arc<AtomicBool>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let beats = Arc::new(Mutex::new(Beats::default()));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    while !stop.load(Relaxed) {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
        {
            Ok(Ok((s, _))) => s,
            Ok(Err(_)) => {
                // EMFILE and the like: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(_) => continue, // look at `stop` again
        };
        let (reg, beats) = (reg.clone(), beats.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| {
                let (reg, beats) = (reg.clone(), beats.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(respond(req.uri().path(), reg, beats).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_DEADLINE)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
        });
    }
}

type Body = http_body_util::Full<hyper::body::Bytes>;

async fn respond(
    path: &str,
    reg: Arc<Registry>,
    beats: Arc<Mutex<Beats>>,
) -> hyper::Response<Body> {
    let text = "text/plain";
    let (status, body, ctype) = match path {
        "/healthz" => {
            let h = beats
                .lock()
                .map(|mut b| b.health(&reg, Instant::now()))
                .unwrap_or(Health::Unhealthy);
            match h {
                Health::Healthy => (200, "healthy\n".to_string(), text),
                Health::Degraded => (200, "degraded\n".to_string(), text),
                Health::Unhealthy => (503, "unhealthy\n".to_string(), text),
            }
        }
        "/readyz" => {
            if reg.ready() {
                (200, "ready\n".to_string(), text)
            } else {
                (503, "starting\n".to_string(), text)
            }
        }
        "/metrics" => {
            let scrape = tokio::task::spawn_blocking(move || metrics(&reg));
            match tokio::time::timeout(REQUEST_DEADLINE, scrape).await {
                Ok(Ok(m)) => (200, m, "text/plain; version=0.0.4"),
                _ => (503, "scrape timed out\n".to_string(), text),
            }
        }
        _ => (404, "not found\n".to_string(), text),
    };
    let mut r = hyper::Response::new(Body::from(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
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
        "tollgate_flows_removed_total",
        "Flows taken out of the table for any reason (expiry, takeover, reset, revocation, inspection budget): created - removed = tracked.",
        sum(&|c| c.flows_removed.load(Relaxed)),
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
    if let Some(n) = super::host::closed_drops() {
        counter(
            "tollgate_host_closed_drops_total",
            "Packets to the appliance's own addresses on a data interface that the closed host policy dropped ([host]): scans, unlisted management or SSH sources.",
            n,
        );
    }
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
            let (used, size) = pool_use(ws, k);
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
    let (m, _, _) = super::registry::ask_snat(&reg.inboxes, TOP_DESTINATIONS);
    let _ = writeln!(out, "# HELP tollgate_snat_destination_flows SNATed flows toward the busiest destinations (top {TOP_DESTINATIONS}; estimated when tollgate_snat_destination_census_flows seen < total).\n# TYPE tollgate_snat_destination_flows gauge");
    for ((a, port, p), n) in m.destinations {
        let _ = writeln!(
            out,
            "tollgate_snat_destination_flows{{destination=\"{a}:{port}\",protocol=\"{}\"}} {n}",
            pname(p)
        );
    }
    let _ = writeln!(
        out,
        "# HELP tollgate_snat_destination_census_flows Flows the destination counts come from: seen (exact when equal to total; else the counts are scaled up from a sample of at most {} slots per worker).\n# TYPE tollgate_snat_destination_census_flows gauge\ntollgate_snat_destination_census_flows{{of=\"seen\"}} {}\ntollgate_snat_destination_census_flows{{of=\"total\"}} {}",
        crate::datapath::query::CENSUS_PROBES,
        m.census.flows_seen,
        m.census.flows
    );
    let _ = writeln!(
        out,
        "# HELP tollgate_worker_query_seconds Longest time a worker spent on its packet thread answering the last control-plane question (this scrape's included).\n# TYPE tollgate_worker_query_seconds gauge\ntollgate_worker_query_seconds {:.6}",
        reg.inboxes.served_ns_max() as f64 / 1e9
    );
}

/// Which per-slice SNAT gauge of a worker's counters.
type SliceGauge = fn(&Counters) -> &[std::sync::atomic::AtomicU64];

/// Destinations listed in `tollgate_snat_destination_flows`.
pub const TOP_DESTINATIONS: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::runtime::LiveIoStats;

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

    /// Sends `GET path` on a new connection; the status line and how long the answer took.
    fn get(addr: SocketAddr, path: &str) -> (String, Duration) {
        use std::io::{Read, Write};
        let t = Instant::now();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        (out.lines().next().unwrap_or("").to_string(), t.elapsed())
    }

    #[test]
    fn healthz_answers_within_100_ms_with_200_idle_connections_open_and_metrics_scraped() {
        let reg = Registry::new(1);
        let c = Arc::new(Counters::sized(2, 1));
        reg.register(c.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = spawn_on(l, reg.clone(), stop.clone()).unwrap();
        // The worker's heartbeat moves, as a running worker's does.
        let beat = {
            let (c, stop) = (c.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 1;
                while !stop.load(Relaxed) {
                    c.heartbeat_ns.store(n, Relaxed);
                    n += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        // 200 clients connect and send nothing; 10 more send half a request head.
        let mut idle: Vec<_> = (0..200)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        for _ in 0..10 {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
            idle.push(s);
        }
        // The scraper stops before the server does (a request cut by the server's stop would
        // read as a failed scrape).
        let scraping = Arc::new(AtomicBool::new(true));
        let scraper = {
            let scraping = scraping.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while scraping.load(Relaxed) {
                    let (status, _) = get(addr, "/metrics");
                    assert!(status.contains("200"), "{status}");
                    n += 1;
                }
                n
            })
        };
        let mut worst = Duration::ZERO;
        for _ in 0..50 {
            let (status, took) = get(addr, "/healthz");
            assert!(status.contains("200"), "{status}");
            worst = worst.max(took);
            std::thread::sleep(Duration::from_millis(20));
        }
        scraping.store(false, Relaxed);
        let scrapes = scraper.join().unwrap();
        stop.store(true, Relaxed);
        beat.join().unwrap();
        h.join().unwrap();
        drop(idle);
        assert!(scrapes > 0, "metrics were scraped meanwhile");
        assert!(
            worst < Duration::from_millis(100),
            "slowest /healthz of 50: {worst:?}"
        );
    }

    #[test]
    fn one_full_slice_is_not_a_full_pool() {
        let reg = Registry::new(2);
        let mut b = Beats::default();
        let t0 = Instant::now();
        let ws: Vec<_> = (0..2).map(|_| Arc::new(Counters::sized(2, 1))).collect();
        for c in &ws {
            reg.register(c.clone());
            c.heartbeat_ns.store(1, Relaxed);
            for s in c.snat_size.iter() {
                s.store(512, Relaxed);
            }
        }
        // Worker 0's TCP slice is full (it borrows from worker 1 next): half the pool.
        ws[0].snat_used[0].store(512, Relaxed);
        ws[0].snat_util_ppm.store(1_000_000, Relaxed);
        assert_eq!(b.health(&reg, t0), Health::Healthy);
        ws[1].snat_used[0].store(500, Relaxed);
        assert_eq!(b.health(&reg, t0), Health::Degraded, "1,012 of 1,024");
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
