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

use crate::datapath::{Counters, DropReason};

/// SNAT use above which the appliance reports itself degraded (Azure Firewall's threshold).
pub const DEGRADED_PPM: u64 = 950_000;
/// A worker whose heartbeat has not moved for this long is stalled.
pub const STALLED_AFTER: Duration = Duration::from_secs(5);

/// The workers' counters, registered once each as they start.
#[derive(Debug, Default)]
pub struct Registry {
    workers: Mutex<Vec<Arc<Counters>>>,
    expected: std::sync::atomic::AtomicUsize,
}

impl Registry {
    /// A registry that is ready once `workers` have registered.
    pub fn new(workers: usize) -> Arc<Self> {
        let r = Registry::default();
        r.expected.store(workers, Relaxed);
        Arc::new(r)
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
struct Beats(Vec<(u64, Instant)>);

impl Beats {
    fn health(&mut self, reg: &Registry, now: Instant) -> Health {
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
            let ws = reg.snapshot();
            let ready = ws.len() >= reg.expected.load(Relaxed)
                && ws.iter().all(|c| c.heartbeat_ns.load(Relaxed) != 0);
            if ready {
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
    out
}

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
    }
}
