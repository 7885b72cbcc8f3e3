//! `tollgate bench snat-live`: SNAT port exhaustion with real connections through real
//! namespaces, Tollgate against the Linux kernel (ip_forward + nftables masquerade +
//! conntrack) on the same topology, in one run.
//!
//! The topology is the lab's ([`Lab`]): inside hosts 198.18.0.11 (node1), 198.18.0.12 (node2)
//! and, for more hosts, secondary addresses 198.18.0.32.. on them; the appliance namespace
//! (tg-in 198.18.0.1, tg-out 203.0.113.1) and the internet namespace with server A
//! 203.0.113.10 and server B 203.0.113.20 (a secondary address added here), which has no
//! route back to 198.18.0.0/15. The kernel runs first, then Tollgate once per mapping mode
//! asked for ([`LiveOptions::mappings`]: EIM with port sharing, strict EIM, APDM). For each:
//!
//! 1. Exhaustion: one client thread opens up to `flows` TCP connections (at most
//!    `concurrency` connects in flight, each bounded by `connect_timeout`) from the hosts in
//!    turn to server A, with a SNAT pool of `port_min..=port_max`, and keeps every
//!    established one open. Each attempt's outcome is what the client sees: established (and
//!    how fast: a connect slower than [`RETRANSMIT_THRESHOLD`] needed a SYN retransmission, so
//!    its first SYN was refused), or failed: timeout (silent drop), ECONNREFUSED (reset),
//!    EHOSTUNREACH/ENETUNREACH (ICMP unreachable). The server records the source ports it saw.
//! 2. Recovery: every flow is closed (FIN from the client, then the server), and a probe
//!    connection is started every [`PROBE_INTERVAL`] until one is established.
//! 3. Colliding source ports (optional): with the engine's default port range, two inside
//!    hosts open `collide_flows` connections each from the same source ports to the same
//!    server ip:port: interleaved (host A port p, then host B port p, back to back), host B
//!    only after all of host A's connections are established and held, and both at once from
//!    two client threads.
//! 4. Two servers (issue 21, optional): a fresh NAT with a pool of `two_servers` ports from
//!    `port_min`, and `two_servers` connections to server A and as many to server B,
//!    interleaved (A, B, A, B...), each from its own inside endpoint (an explicit source port
//!    per attempt, the hosts in turn), all held. Endpoints that share a public port toward
//!    different destinations carry all of them; one holder per port carries half.
//!
//! One thread issues every connect in order, so attempt order is SYN order: "held at the first
//! failure" is the number of established connections among the attempts before the first one
//! that failed. Nothing is assumed about the engines: every number is measured.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Mapping;
use crate::io::tcpprobe::{self, Connecting, NetnsHandle};
use crate::lab::{new_prefix, Lab, LabError};

/// A connect that took longer than this needed a SYN retransmission (Linux retransmits an
/// unanswered SYN after 1 s): its first SYN was dropped or refused on the way.
pub const RETRANSMIT_THRESHOLD: Duration = Duration::from_millis(500);

/// How often the recovery phase starts a probe connection.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The server every connection goes to (server A of the two-server case).
pub const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 8000);

/// Server B of the two-server case (a secondary address of the internet namespace).
pub const SERVER_B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 20), 8000);

/// The appliance's public (SNAT) address in the lab.
pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

/// The longest [`Bench::kernel_off`] waits for the kernel's connection table to empty when it
/// cannot flush it (TIME_WAIT of the bench plus the kernel's 10 s CLOSE timeout).
const CONNTRACK_DRAIN_MAX: Duration = Duration::from_secs(20);

/// How long `tollgate run` may take to report its workers running (generous: on a loaded
/// machine, building the tables and opening the rings took over 15 s once).
const APPLIANCE_START_MAX: Duration = Duration::from_secs(45);

/// Tollgate's management endpoint inside the appliance namespace.
const MGMT: &str = "127.0.0.1:9109";

/// First source port of the colliding-ports phase (below the kernel's ephemeral range).
const COLLIDE_PORT_BASE: u16 = 20000;

/// First source port of the two-server case: attempt k comes from port base + k, so every
/// attempt has an inside endpoint of its own (with port 0 the kernel may give one host the
/// same source port toward both servers: one endpoint, which EIM maps once).
const TWO_SERVERS_PORT_BASE: u16 = 30000;

/// What to run.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// The small SNAT pool of the exhaustion phase (both engines).
    pub port_min: u16,
    pub port_max: u16,
    /// Connections attempted in the exhaustion phase.
    pub flows: usize,
    /// Inside hosts the attempts rotate over (1..=64).
    pub hosts: usize,
    /// Connects in flight at most.
    pub concurrency: usize,
    /// A connect not established within this is a timeout.
    pub connect_timeout: Duration,
    /// TCP TIME_WAIT of the NAT (Tollgate `tcp_time_wait`, kernel
    /// `nf_conntrack_tcp_timeout_time_wait`), seconds.
    pub time_wait_s: u32,
    /// Give up waiting for recovery after this (plus the idle timeout in idle mode).
    pub recovery_max: Duration,
    /// Idle recovery: the NAT's TCP established timeout, seconds (Tollgate `tcp_established`,
    /// kernel `nf_conntrack_tcp_timeout_established`); the flows are left open and idle.
    /// None: close every flow instead.
    pub idle_timeout_s: Option<u32>,
    /// Connections per host in the colliding-ports phase (0: skip it).
    pub collide_flows: usize,
    /// Tollgate worker threads.
    pub workers: usize,
    /// Tollgate answers exhaustion with ICMP 3/13.
    pub icmp_on_exhaustion: bool,
    /// Tollgate's mapping modes: one Tollgate run each, in this order.
    pub mappings: Vec<Mapping>,
    /// Run the single-server phases (exhaustion, recovery, colliding ports).
    pub single: bool,
    /// The two-server case: a pool of this many ports from `port_min`, this many connections
    /// to server A and as many to server B, interleaved, each from its own inside endpoint
    /// (0: skip it).
    pub two_servers: usize,
    /// Which engines to run.
    pub kernel: bool,
    pub tollgate: bool,
    /// The `tollgate` binary that `run`s the appliance.
    pub exe: PathBuf,
}

impl LiveOptions {
    /// The defaults of `tollgate bench snat-live`.
    pub fn new(exe: PathBuf) -> LiveOptions {
        LiveOptions {
            port_min: 1024,
            port_max: 2047,
            flows: 1100,
            hosts: 2,
            concurrency: 64,
            connect_timeout: Duration::from_millis(1500),
            time_wait_s: 5,
            recovery_max: Duration::from_secs(30),
            idle_timeout_s: None,
            collide_flows: 2000,
            workers: 1,
            icmp_on_exhaustion: true,
            mappings: vec![Mapping::default()],
            single: true,
            two_servers: 64,
            kernel: true,
            tollgate: true,
            exe,
        }
    }

    /// Ports in the exhaustion pool.
    pub fn pool(&self) -> usize {
        usize::from(self.port_max.saturating_sub(self.port_min)) + 1
    }

    fn check(&self) -> Result<(), LiveError> {
        let bad = |s: &str| Err(LiveError::Options(s.to_string()));
        if self.port_min < 1024 || self.port_min > self.port_max {
            return bad("the port range must be within 1024-65535, low-high");
        }
        if !(1..=64).contains(&self.hosts) {
            return bad("--hosts takes 1 to 64");
        }
        if self.flows == 0 || self.flows > 60_000 {
            return bad("--flows takes 1 to 60000");
        }
        if self.concurrency == 0 || self.concurrency > 4096 {
            return bad("--concurrency takes 1 to 4096");
        }
        if self.collide_flows > 30_000 {
            return bad("--collide-flows takes 0 to 30000");
        }
        if !self.kernel && !self.tollgate {
            return bad("nothing to run: both engines are off");
        }
        if self.tollgate && self.mappings.is_empty() {
            return bad("no Tollgate mapping mode to run");
        }
        if self.two_servers > 2048 {
            return bad("--two-servers takes 0 to 2048");
        }
        if usize::from(self.port_min) + self.two_servers > 65536 {
            return bad("the two-server pool (from the low end of --ports) ends beyond 65535");
        }
        if !self.single && self.two_servers == 0 {
            return bad("nothing to run: the single-server phases and the two-server case are off");
        }
        Ok(())
    }
}

/// Why a live run failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{0}")]
    Lab(#[from] LabError),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("invalid options: {0}")]
    Options(String),
    #[error("the generated Tollgate configuration is invalid: {0}")]
    Config(String),
    #[error("tollgate did not start: {0}")]
    Appliance(String),
    #[error("setting up the kernel NAT failed: {0}")]
    Kernel(String),
    #[error("the run was interrupted")]
    Interrupted,
}

/// What the client saw for one connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Established after this long.
    Established(Duration),
    /// Failed after this long, with this kind.
    Failed(FailKind, Duration),
}

/// How a connect failed, as the client sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// No answer within the connect timeout (the SYNs were dropped silently).
    Timeout,
    /// ECONNREFUSED: a TCP reset.
    Rst,
    /// EHOSTUNREACH: ICMP host unreachable or administratively prohibited (3/1, 3/13...).
    IcmpHostUnreachable,
    /// ENETUNREACH: ICMP network unreachable.
    IcmpNetUnreachable,
    /// EADDRNOTAVAIL / EADDRINUSE on the client itself (no local port).
    LocalPort,
    /// Anything else.
    Other,
}

impl FailKind {
    fn of(e: &io::Error) -> FailKind {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => FailKind::Rst,
            Some(libc::EHOSTUNREACH) => FailKind::IcmpHostUnreachable,
            Some(libc::ENETUNREACH) => FailKind::IcmpNetUnreachable,
            Some(libc::ETIMEDOUT) => FailKind::Timeout,
            Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => FailKind::LocalPort,
            _ => FailKind::Other,
        }
    }

    /// Short name (JSON key, table).
    pub fn as_str(self) -> &'static str {
        match self {
            FailKind::Timeout => "timeout",
            FailKind::Rst => "rst",
            FailKind::IcmpHostUnreachable => "icmp_host_unreachable",
            FailKind::IcmpNetUnreachable => "icmp_net_unreachable",
            FailKind::LocalPort => "local_port",
            FailKind::Other => "other",
        }
    }
}

/// One inside host: the namespace it lives in (index) and its address.
#[derive(Clone, Copy, Debug)]
struct Host {
    ns: usize,
    addr: Ipv4Addr,
}

/// One attempt.
#[derive(Clone, Debug)]
struct Attempt {
    host: usize,
    dst: SocketAddrV4,
    outcome: Outcome,
}

/// One planned connect: from `at` (number `host` of the hosts in play), source port `sport`
/// (0: the kernel's choice), to `dst`.
#[derive(Clone, Copy, Debug)]
struct Try {
    host: usize,
    at: Host,
    sport: u16,
    dst: SocketAddrV4,
}

/// The client: one thread, sockets in several namespaces.
struct Client<'a> {
    ns: &'a [NetnsHandle],
    current: Option<usize>,
}

impl Client<'_> {
    fn start(&mut self, h: Host, sport: u16, dst: SocketAddrV4) -> io::Result<Connecting> {
        if self.current != Some(h.ns) {
            self.ns[h.ns].enter()?;
            self.current = Some(h.ns);
        }
        Connecting::start(SocketAddrV4::new(h.addr, sport), dst)
    }

    /// Opens `flows` connections to [`SERVER`], host `k % hosts` for attempt k, source port
    /// `port_base + k / hosts` (or the kernel's choice), keeping the established ones.
    fn ramp(
        &mut self,
        hosts: &[Host],
        flows: usize,
        port_base: Option<u16>,
        concurrency: usize,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> io::Result<(Vec<Attempt>, Vec<TcpStream>)> {
        let plan: Vec<Try> = (0..flows)
            .map(|k| {
                let host = k % hosts.len();
                Try {
                    host,
                    at: hosts[host],
                    sport: port_base.map_or(0, |b| b + (k / hosts.len()) as u16),
                    dst: SERVER,
                }
            })
            .collect();
        self.ramp_plan(&plan, concurrency, timeout, stop)
    }

    /// Makes the attempts of `plan` in order (at most `concurrency` in flight), keeping the
    /// established connections.
    fn ramp_plan(
        &mut self,
        plan: &[Try],
        concurrency: usize,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> io::Result<(Vec<Attempt>, Vec<TcpStream>)> {
        let flows = plan.len();
        let mut attempts: Vec<Option<Attempt>> = vec![None; flows];
        let mut streams = Vec::new();
        let mut inflight: Vec<(usize, Connecting, Instant)> = Vec::new();
        let mut next = 0usize;
        while next < flows || !inflight.is_empty() {
            if stop.load(Ordering::Relaxed) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
            }
            while inflight.len() < concurrency && next < flows {
                let p = plan[next];
                let t = Instant::now();
                match self.start(p.at, p.sport, p.dst) {
                    Ok(c) => inflight.push((next, c, t)),
                    // Out of descriptors: a limit of this machine, not a NAT result.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                        return Err(e)
                    }
                    Err(e) => {
                        attempts[next] = Some(Attempt {
                            host: p.host,
                            dst: p.dst,
                            outcome: Outcome::Failed(FailKind::of(&e), t.elapsed()),
                        })
                    }
                }
                next += 1;
            }
            if inflight.is_empty() {
                continue;
            }
            let now = Instant::now();
            let wait = inflight
                .iter()
                .map(|(_, _, t)| (*t + timeout).saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::ZERO)
                .min(Duration::from_millis(50));
            let refs: Vec<&Connecting> = inflight.iter().map(|(_, c, _)| c).collect();
            let ready = tcpprobe::poll_connecting(&refs, wait)?;
            let mut done = vec![false; inflight.len()];
            for i in ready {
                done[i] = true;
            }
            let now = Instant::now();
            let mut keep = Vec::with_capacity(inflight.len());
            for (i, (k, c, t)) in inflight.drain(..).enumerate() {
                let outcome = if done[i] {
                    match c.result() {
                        Ok(()) => {
                            streams.push(c.into_stream());
                            Outcome::Established(now - t)
                        }
                        Err(e) => Outcome::Failed(FailKind::of(&e), now - t),
                    }
                } else if now - t >= timeout {
                    Outcome::Failed(FailKind::Timeout, now - t)
                } else {
                    keep.push((k, c, t));
                    continue;
                };
                attempts[k] = Some(Attempt {
                    host: plan[k].host,
                    dst: plan[k].dst,
                    outcome,
                });
            }
            inflight = keep;
        }
        Ok((attempts.into_iter().flatten().collect(), streams))
    }

    /// Starts a probe from `host` every [`PROBE_INTERVAL`] until one is established or `max`
    /// passes; returns (time from `t0` to the first establishment, probes started).
    fn recover(
        &mut self,
        host: Host,
        t0: Instant,
        timeout: Duration,
        max: Duration,
        stop: &AtomicBool,
    ) -> io::Result<(Option<Duration>, usize)> {
        let mut inflight: Vec<(Connecting, Instant)> = Vec::new();
        let mut probes = 0usize;
        let mut next_probe = Instant::now();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
            }
            let now = Instant::now();
            if now - t0 > max {
                return Ok((None, probes));
            }
            if now >= next_probe {
                probes += 1;
                next_probe = now + PROBE_INTERVAL;
                // An immediate local error is a failed probe like any other.
                if let Ok(c) = self.start(host, 0, SERVER) {
                    inflight.push((c, now));
                }
            }
            inflight.retain(|(_, t)| now - *t < timeout);
            if inflight.is_empty() {
                std::thread::sleep(next_probe.saturating_duration_since(Instant::now()));
                continue;
            }
            let refs: Vec<&Connecting> = inflight.iter().map(|(c, _)| c).collect();
            let wait = next_probe.saturating_duration_since(Instant::now());
            let ready = tcpprobe::poll_connecting(&refs, wait)?;
            let at = Instant::now();
            let mut ok = false;
            for i in ready.iter().rev() {
                let (c, _) = inflight.swap_remove(*i);
                if c.result().is_ok() {
                    ok = true;
                }
            }
            if ok {
                return Ok((Some(at - t0), probes));
            }
        }
    }
}

/// A server: accepts and holds every connection to its address in the internet namespace,
/// recording the source address of each (after SNAT).
struct Server {
    held: Arc<Mutex<(Vec<TcpStream>, Vec<SocketAddrV4>)>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &str, addr: SocketAddrV4) -> io::Result<Server> {
        let held: Arc<Mutex<(Vec<TcpStream>, Vec<SocketAddrV4>)>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = NetnsHandle::open(ns)?;
        let (h, s) = (held.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let l = handle.enter().and_then(|()| tcpprobe::listen(addr, 4096));
            let l = match l {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, SocketAddr::V4(peer))) => {
                        if let Ok(mut g) = h.lock() {
                            g.0.push(c);
                            g.1.push(peer);
                        }
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        rx.recv()
            .map_err(|_| io::Error::other("the server thread exited"))??;
        Ok(Server {
            held,
            stop,
            thread: Some(thread),
        })
    }

    /// The peers seen since the last call (and forgets them).
    fn take_peers(&self) -> Vec<SocketAddrV4> {
        self.held
            .lock()
            .map(|mut g| std::mem::take(&mut g.1))
            .unwrap_or_default()
    }

    /// Closes every held connection (FIN).
    fn close_all(&self) {
        if let Ok(mut g) = self.held.lock() {
            g.0.clear();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The exhaustion phase as the client saw it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Exhaustion {
    pub attempted: usize,
    pub established: usize,
    pub failed: usize,
    /// Established, but only after a SYN retransmission (the first SYN was refused).
    pub established_after_retransmit: usize,
    /// Established connections among the attempts before the first failed one (None: no
    /// attempt failed).
    pub held_at_first_failure: Option<usize>,
    /// Established connections among the attempts before the first whose first SYN was
    /// refused (failed, or established only after a retransmission).
    pub held_at_first_refusal: Option<usize>,
    /// The first failure's kind.
    pub first_failure: Option<FailKind>,
    /// Failures by kind.
    pub failures: BTreeMap<String, usize>,
    /// Milliseconds to fail, median, by kind.
    pub failure_ms_median: BTreeMap<String, f64>,
    /// Connect time of the established ones, milliseconds.
    pub connect_ms_p50: f64,
    pub connect_ms_p99: f64,
    /// Established connections per inside host.
    pub per_host_established: Vec<usize>,
    /// Distinct pool ports the server saw as source ports; pool ports never seen.
    pub pool_ports_used: usize,
    pub pool_ports_unused: usize,
    /// Connections the server saw from another address or outside the pool (must be 0).
    pub server_saw_outside_pool: usize,
    pub wall_s: f64,
}

/// Recovery after every flow was closed.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Recovery {
    /// `close`: every flow was closed (FIN), timed from then; `idle`: the flows stayed open
    /// and idle, timed from the end of the exhaustion ramp.
    pub mode: String,
    /// Seconds to the first established probe (None: not within the limit).
    pub after_s: Option<f64>,
    /// The source address and port the server saw for that probe.
    pub probe_source: Option<String>,
    pub probes: usize,
    pub limit_s: f64,
}

/// The colliding-source-ports phase.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Collision {
    /// Connections per host, from source ports `port_base..port_base + flows`.
    pub flows_per_host: usize,
    pub port_base: u16,
    /// The port range of the engine in this phase.
    pub nat_ports: String,
    /// Per host (A, B): established, failed, established only after a retransmission.
    pub established: [usize; 2],
    pub failed: [usize; 2],
    pub established_after_retransmit: [usize; 2],
    /// Failures by kind, host B.
    pub second_host_failures: BTreeMap<String, usize>,
    /// [`CollideOrder`]: `interleaved`, `after` or `parallel`.
    pub order: String,
    pub wall_s: f64,
}

/// The two-server case (issue 21): `per_server` connections to server A and as many to
/// server B, interleaved, each from its own inside endpoint, through a pool of `pool` ports.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TwoServers {
    /// The pool, LOW-HIGH, and its size.
    pub ports: String,
    pub pool: usize,
    pub per_server: usize,
    /// The attempts as in the exhaustion phase (held at the first refusal and failure, kinds,
    /// pool ports the servers saw).
    pub exhaustion: Exhaustion,
    /// Established connections to server A and to server B.
    pub established_to: [usize; 2],
    /// Pool ports the servers saw toward both A and B (a public port carrying one endpoint's
    /// flow to A and another endpoint's flow to B).
    pub ports_toward_both: usize,
    /// Tollgate: the `out_of_ports` drop counter. Kernel: SYNs that entered the NAT from the
    /// inside and did not leave it.
    pub nat_refusals: Option<u64>,
}

/// How the two hosts of the colliding-ports phase take turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollideOrder {
    /// One client thread: host A port p, then host B port p, back to back.
    Interleaved,
    /// Host B starts once all of host A's connections are established (and held).
    After,
    /// Two client threads at once, one per host, each walking the same ports.
    Parallel,
}

impl CollideOrder {
    pub const ALL: [CollideOrder; 3] = [
        CollideOrder::Interleaved,
        CollideOrder::After,
        CollideOrder::Parallel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CollideOrder::Interleaved => "interleaved",
            CollideOrder::After => "after",
            CollideOrder::Parallel => "parallel",
        }
    }
}

/// What the engine itself counted.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct EngineCounters {
    /// Tollgate: the `out_of_ports` drop counter (/metrics). Kernel: SYNs that entered the NAT
    /// from the inside and did not leave it (nftables counters before and after masquerade).
    pub nat_refusals: Option<u64>,
    /// Tollgate: ICMP errors and resets it originated.
    pub replies: Option<u64>,
    /// Tollgate: decision-log entries with reason `out_of_ports`.
    pub decision_log_out_of_ports: Option<u64>,
    /// Kernel: SYNs from the inside seen before the NAT.
    pub syns_in: Option<u64>,
}

/// One engine's run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EngineReport {
    /// `kernel` or `tollgate`.
    pub engine: String,
    /// Tollgate's mapping mode (`EIM-shared`, `EIM-strict`, `APDM`); None for the kernel.
    pub mapping: Option<String>,
    pub description: String,
    pub pool: usize,
    /// The single-server phases (None when they were not run).
    pub exhaustion: Option<Exhaustion>,
    pub counters: EngineCounters,
    pub recovery: Option<Recovery>,
    /// The colliding-source-ports phase in each [`CollideOrder`] (empty when off).
    pub collision: Vec<Collision>,
    /// The two-server case (None when off).
    pub two_servers: Option<TwoServers>,
    /// Tollgate: flows held at the first refused SYN of the exhaustion phase, this run /
    /// the kernel's.
    pub ratio_held_at_first_refusal: Option<f64>,
    /// Tollgate: flows held at the first failed connect, this run / the kernel's.
    pub ratio_held_at_first_failure: Option<f64>,
}

impl EngineReport {
    /// The column name: `kernel` or `tollgate EIM-shared`...
    pub fn label(&self) -> String {
        match &self.mapping {
            Some(m) => format!("{} {m}", self.engine),
            None => self.engine.clone(),
        }
    }
}

/// The whole run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LiveReport {
    pub prefix: String,
    pub ports: String,
    pub pool: usize,
    pub flows: usize,
    pub hosts: usize,
    pub concurrency: usize,
    pub connect_timeout_s: f64,
    pub time_wait_s: u32,
    pub workers: usize,
    pub server: String,
    /// Server B of the two-server case.
    pub server_b: String,
    /// The single-server phases ran.
    pub single: bool,
    /// Connections per server (and pool size) of the two-server case; 0: not run.
    pub two_servers: usize,
    pub kernel: Option<EngineReport>,
    /// One Tollgate run per mapping mode, in the order asked for.
    pub tollgate: Vec<EngineReport>,
    pub wall_s: f64,
}

impl LiveReport {
    /// The Tollgate run with this mapping mode.
    pub fn tollgate(&self, m: Mapping) -> Option<&EngineReport> {
        self.tollgate
            .iter()
            .find(|r| r.mapping.as_deref() == Some(m.short()))
    }

    /// Every engine run, the kernel first.
    pub fn engines(&self) -> Vec<&EngineReport> {
        self.kernel.iter().chain(&self.tollgate).collect()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn summarise(
    attempts: &[Attempt],
    hosts: usize,
    peers: &[SocketAddrV4],
    lo: u16,
    hi: u16,
) -> Exhaustion {
    let mut e = Exhaustion {
        attempted: attempts.len(),
        per_host_established: vec![0; hosts],
        ..Exhaustion::default()
    };
    let mut connect = Vec::new();
    let mut fail_ms: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut held = 0usize;
    for a in attempts {
        match a.outcome {
            Outcome::Established(d) => {
                if d >= RETRANSMIT_THRESHOLD {
                    e.established_after_retransmit += 1;
                    if e.held_at_first_refusal.is_none() {
                        e.held_at_first_refusal = Some(held);
                    }
                }
                e.established += 1;
                e.per_host_established[a.host] += 1;
                connect.push(ms(d));
                held += 1;
            }
            Outcome::Failed(k, d) => {
                e.failed += 1;
                *e.failures.entry(k.as_str().into()).or_default() += 1;
                fail_ms.entry(k.as_str().into()).or_default().push(ms(d));
                if e.held_at_first_failure.is_none() {
                    e.held_at_first_failure = Some(held);
                    e.first_failure = Some(k);
                }
                if e.held_at_first_refusal.is_none() {
                    e.held_at_first_refusal = Some(held);
                }
            }
        }
    }
    e.connect_ms_p50 = percentile(&mut connect, 0.5);
    e.connect_ms_p99 = percentile(&mut connect, 0.99);
    for (k, mut v) in fail_ms {
        e.failure_ms_median.insert(k, percentile(&mut v, 0.5));
    }
    let mut used = BTreeSet::new();
    for p in peers {
        if *p.ip() == PUBLIC && (lo..=hi).contains(&p.port()) {
            used.insert(p.port());
        } else {
            e.server_saw_outside_pool += 1;
        }
    }
    e.pool_ports_used = used.len();
    e.pool_ports_unused = usize::from(hi - lo) + 1 - used.len();
    e
}

/// The running benchmark: the lab, its namespaces open, the servers.
struct Bench {
    lab: Lab,
    hosts: Vec<Host>,
    server: Server,
    server_b: Server,
    opts: LiveOptions,
    stop: Arc<AtomicBool>,
}

impl Bench {
    fn up(opts: &LiveOptions, stop: Arc<AtomicBool>) -> Result<Bench, LiveError> {
        let lab = Lab::up(&new_prefix())?;
        let mut hosts = Vec::new();
        let mut extra = Vec::new();
        for i in 0..opts.hosts {
            let (nsi, addr) = match i {
                0 => (0, Ipv4Addr::new(198, 18, 0, 11)),
                1 => (1, Ipv4Addr::new(198, 18, 0, 12)),
                _ => (i % 2, Ipv4Addr::new(198, 18, 0, 30 + i as u8)),
            };
            if i >= 2 {
                let node = if nsi == 0 { "node1" } else { "node2" };
                lab.ip(node, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
                extra.push(addr.to_string());
            }
            hosts.push(Host { ns: nsi, addr });
        }
        lab.ip(
            "inet",
            &[
                "addr",
                "add",
                &format!("{}/24", SERVER_B.ip()),
                "dev",
                "eth0",
            ],
        )?;
        let server = Server::start(&lab.ns("inet"), SERVER)?;
        let server_b = Server::start(&lab.ns("inet"), SERVER_B)?;
        lab.warm_neighbours();
        let _ = lab.sh(
            "app",
            &format!("ping -c1 -W1 {} >/dev/null 2>&1", SERVER_B.ip()),
        );
        if !extra.is_empty() {
            let _ = lab.sh(
                "app",
                &format!(
                    "for h in {}; do ping -c1 -W1 $h >/dev/null 2>&1 & done; wait",
                    extra.join(" ")
                ),
            );
        }
        Ok(Bench {
            lab,
            hosts,
            server,
            server_b,
            opts: opts.clone(),
            stop,
        })
    }

    fn interrupted(&self) -> Result<(), LiveError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(LiveError::Interrupted);
        }
        Ok(())
    }

    fn app(&self, cmd: &str) -> Result<String, LiveError> {
        let o = self.lab.sh("app", cmd)?;
        if !o.status.success() {
            return Err(LiveError::Kernel(format!(
                "`{cmd}`: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Starts a client on a thread of its own (it moves between namespaces).
    fn spawn_client<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client<'_>) -> io::Result<T> + Send + 'static,
    ) -> JoinHandle<io::Result<T>> {
        let names = [self.lab.ns("node1"), self.lab.ns("node2")];
        std::thread::spawn(move || -> io::Result<T> {
            let ns = names
                .iter()
                .map(|n| NetnsHandle::open(n))
                .collect::<io::Result<Vec<_>>>()?;
            let mut c = Client {
                ns: &ns,
                current: None,
            };
            f(&mut c)
        })
    }

    fn join_client<T>(t: JoinHandle<io::Result<T>>) -> Result<T, LiveError> {
        match t.join() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => Err(LiveError::Interrupted),
            Ok(Err(e)) => Err(LiveError::Io(e)),
            Err(_) => Err(LiveError::Io(io::Error::other(
                "the client thread panicked",
            ))),
        }
    }

    /// Runs a client and waits for it.
    fn client<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client<'_>) -> io::Result<T> + Send + 'static,
    ) -> Result<T, LiveError> {
        Self::join_client(self.spawn_client(f))
    }

    /// Exhaustion: the report and the connections still open.
    fn exhaust(&self) -> Result<(Exhaustion, Vec<TcpStream>, Instant), LiveError> {
        let o = &self.opts;
        let hosts = self.hosts.clone();
        let stop = self.stop.clone();
        let (flows, conc, timeout) = (o.flows, o.concurrency, o.connect_timeout);
        let t0 = Instant::now();
        let (attempts, streams) =
            self.client(move |c| c.ramp(&hosts, flows, None, conc, timeout, &stop))?;
        let ended = Instant::now();
        let wall = ended - t0;
        // Let the server accept the last handshakes.
        std::thread::sleep(Duration::from_millis(200));
        let peers = self.server.take_peers();
        let mut ex = summarise(&attempts, o.hosts, &peers, o.port_min, o.port_max);
        ex.wall_s = wall.as_secs_f64();
        self.interrupted()?;
        Ok((ex, streams, ended))
    }

    /// Recovery: close every flow and probe (mode close), or leave them open and idle until
    /// the NAT forgets them and probe from the end of the ramp (mode idle).
    fn recover(&self, streams: Vec<TcpStream>, ramp_end: Instant) -> Result<Recovery, LiveError> {
        let idle = self.opts.idle_timeout_s;
        let (t0, held) = if idle.is_some() {
            (ramp_end, streams)
        } else {
            drop(streams);
            std::thread::sleep(Duration::from_millis(20));
            self.server.close_all();
            (Instant::now(), Vec::new())
        };
        let host = self.hosts[0];
        let stop = self.stop.clone();
        let timeout = self.opts.connect_timeout;
        let max = self.opts.recovery_max + Duration::from_secs(u64::from(idle.unwrap_or(0)));
        let _ = self.server.take_peers();
        let r = self.client(move |c| c.recover(host, t0, timeout, max, &stop));
        std::thread::sleep(Duration::from_millis(50));
        let probe_source = self.server.take_peers().first().map(|p| p.to_string());
        // Flows the NAT forgot: resets, whatever the NAT does with them.
        for s in held {
            tcpprobe::abort(s);
        }
        std::thread::sleep(Duration::from_millis(50));
        self.server.close_all();
        let _ = self.server.take_peers();
        let (after, probes) = r?;
        Ok(Recovery {
            mode: if idle.is_some() { "idle" } else { "close" }.into(),
            after_s: after.map(|d| d.as_secs_f64()),
            probe_source,
            probes,
            limit_s: max.as_secs_f64(),
        })
    }

    /// Two hosts, the same source ports, in one of three orders.
    fn collide(&self, nat_ports: &str, order: CollideOrder) -> Result<Collision, LiveError> {
        let o = &self.opts;
        let a = Host {
            ns: 0,
            addr: Ipv4Addr::new(198, 18, 0, 11),
        };
        let b = Host {
            ns: 1,
            addr: Ipv4Addr::new(198, 18, 0, 12),
        };
        let stop = self.stop.clone();
        let (m, conc, timeout) = (o.collide_flows, o.concurrency, o.connect_timeout);
        let base = Some(COLLIDE_PORT_BASE);
        let t0 = Instant::now();
        let (attempts, streams) = match order {
            CollideOrder::Interleaved => {
                self.client(move |c| c.ramp(&[a, b], 2 * m, base, conc, timeout, &stop))?
            }
            CollideOrder::After => self.client(move |c| {
                let (mut att, mut st) = c.ramp(&[a], m, base, conc, timeout, &stop)?;
                let (att_b, st_b) = c.ramp(&[b], m, base, conc, timeout, &stop)?;
                att.extend(att_b.into_iter().map(|x| Attempt { host: 1, ..x }));
                st.extend(st_b);
                Ok((att, st))
            })?,
            CollideOrder::Parallel => {
                let stop_b = stop.clone();
                let ta = self.spawn_client(move |c| c.ramp(&[a], m, base, conc, timeout, &stop));
                let tb = self.spawn_client(move |c| c.ramp(&[b], m, base, conc, timeout, &stop_b));
                let ra = Self::join_client(ta);
                let (att_b, st_b) = Self::join_client(tb)?;
                let (mut att, mut st) = ra?;
                att.extend(att_b.into_iter().map(|x| Attempt { host: 1, ..x }));
                st.extend(st_b);
                (att, st)
            }
        };
        let wall = t0.elapsed();
        // Resets, so no TIME_WAIT is left on the clients' ports.
        for s in streams {
            tcpprobe::abort(s);
        }
        std::thread::sleep(Duration::from_millis(100));
        self.server.close_all();
        let _ = self.server.take_peers();
        let mut c = Collision {
            flows_per_host: o.collide_flows,
            port_base: COLLIDE_PORT_BASE,
            nat_ports: nat_ports.to_string(),
            order: order.as_str().into(),
            wall_s: wall.as_secs_f64(),
            ..Collision::default()
        };
        for a in &attempts {
            match a.outcome {
                Outcome::Established(d) => {
                    c.established[a.host] += 1;
                    if d >= RETRANSMIT_THRESHOLD {
                        c.established_after_retransmit[a.host] += 1;
                    }
                }
                Outcome::Failed(k, _) => {
                    c.failed[a.host] += 1;
                    if a.host == 1 {
                        *c.second_host_failures.entry(k.as_str().into()).or_default() += 1;
                    }
                }
            }
        }
        Ok(c)
    }

    /// Both orders of the colliding-ports phase (none when it is off).
    fn collisions(&self, nat_ports: &str) -> Result<Vec<Collision>, LiveError> {
        if self.opts.collide_flows == 0 {
            return Ok(Vec::new());
        }
        CollideOrder::ALL
            .iter()
            .map(|o| self.collide(nat_ports, *o))
            .collect()
    }

    /// The two-server case, through a NAT already set up with the pool
    /// `port_min..port_min + two_servers`. `refusals` reads the NAT's own count afterwards.
    fn two_servers(&self, refusals: &dyn Fn() -> Option<u64>) -> Result<TwoServers, LiveError> {
        let o = &self.opts;
        let n = o.two_servers;
        let (lo, hi) = (o.port_min, o.port_min + (n - 1) as u16);
        let plan: Vec<Try> = (0..2 * n)
            .map(|k| {
                let host = (k / 2) % self.hosts.len();
                Try {
                    host,
                    at: self.hosts[host],
                    sport: TWO_SERVERS_PORT_BASE + k as u16,
                    dst: if k % 2 == 0 { SERVER } else { SERVER_B },
                }
            })
            .collect();
        let stop = self.stop.clone();
        let (conc, timeout) = (o.concurrency, o.connect_timeout);
        let _ = (self.server.take_peers(), self.server_b.take_peers());
        let t0 = Instant::now();
        let (attempts, streams) = self.client(move |c| c.ramp_plan(&plan, conc, timeout, &stop))?;
        let wall = t0.elapsed();
        // Let the servers accept the last handshakes.
        std::thread::sleep(Duration::from_millis(200));
        let (peers_a, peers_b) = (self.server.take_peers(), self.server_b.take_peers());
        let nat_refusals = refusals();
        for s in streams {
            tcpprobe::abort(s);
        }
        std::thread::sleep(Duration::from_millis(100));
        self.server.close_all();
        self.server_b.close_all();
        let ports = |peers: &[SocketAddrV4]| -> BTreeSet<u16> {
            peers
                .iter()
                .filter(|p| *p.ip() == PUBLIC && (lo..=hi).contains(&p.port()))
                .map(|p| p.port())
                .collect()
        };
        let ports_toward_both = ports(&peers_a).intersection(&ports(&peers_b)).count();
        let mut peers = peers_a;
        peers.extend(peers_b);
        let mut exhaustion = summarise(&attempts, self.hosts.len(), &peers, lo, hi);
        exhaustion.wall_s = wall.as_secs_f64();
        let mut established_to = [0usize; 2];
        for a in &attempts {
            if matches!(a.outcome, Outcome::Established(_)) {
                established_to[usize::from(a.dst != SERVER)] += 1;
            }
        }
        self.interrupted()?;
        Ok(TwoServers {
            ports: format!("{lo}-{hi}"),
            pool: n,
            per_server: n,
            exhaustion,
            established_to,
            ports_toward_both,
            nat_refusals,
        })
    }

    // ---- the kernel ----

    fn kernel_nat(&self, range: Option<(u16, u16)>) -> Result<(), LiveError> {
        // The port range applies to TCP (what the benchmark sends); other protocols masquerade
        // with the kernel's defaults.
        let to = range.map_or(String::new(), |(a, b)| {
            format!(" meta l4proto tcp masquerade to :{a}-{b}\n    oifname \"tg-out\"")
        });
        let rules = format!(
            "table ip tgsnatlive {{\n\
             \x20 chain syns_in {{\n\
             \x20   type filter hook forward priority 0; policy accept;\n\
             \x20   iifname \"tg-in\" tcp flags & (syn | ack) == syn counter\n\
             \x20 }}\n\
             \x20 chain masq {{\n\
             \x20   type nat hook postrouting priority srcnat; policy accept;\n\
             \x20   oifname \"tg-out\"{to} masquerade\n\
             \x20 }}\n\
             }}\n\
             table netdev tgsnatlive {{\n\
             \x20 chain syns_out {{\n\
             \x20   type filter hook egress device \"tg-out\" priority 0; policy accept;\n\
             \x20   tcp flags & (syn | ack) == syn counter\n\
             \x20 }}\n\
             }}\n"
        );
        let path = self.lab.dir.join("kernel-nat.nft");
        std::fs::write(&path, rules)?;
        let _ = self.lab.sh(
            "app",
            "nft delete table ip tgsnatlive 2>/dev/null; nft delete table netdev tgsnatlive 2>/dev/null",
        );
        self.app(&format!("nft -f {}", path.display()))?;
        let tw = self.opts.time_wait_s;
        self.app(&format!(
            "sysctl -qw net.ipv4.ip_forward=1 net.netfilter.nf_conntrack_tcp_timeout_time_wait={tw}"
        ))?;
        // Idle mode, or the default (5 days) so a previous run's setting never lingers.
        let est = self.opts.idle_timeout_s.unwrap_or(432_000);
        self.app(&format!(
            "sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_established={est}"
        ))?;
        Ok(())
    }

    fn kernel_counter(&self, family: &str, chain: &str) -> Option<u64> {
        let t = self
            .app(&format!("nft list chain {family} tgsnatlive {chain}"))
            .ok()?;
        let i = t.find("counter packets ")? + "counter packets ".len();
        t[i..].split_whitespace().next()?.parse().ok()
    }

    /// Removes the kernel's NAT and empties its connection table, so the next phase starts
    /// clean: a closed flow's entry (TIME_WAIT, CLOSE) would keep its public port taken toward
    /// its server. `conntrack -F` flushes it at once; without the conntrack tool, this waits
    /// until the entries have expired (at most [`CONNTRACK_DRAIN_MAX`]).
    fn kernel_off(&self) {
        let _ = self.lab.sh(
            "app",
            "nft delete table ip tgsnatlive; nft delete table netdev tgsnatlive; sysctl -qw net.ipv4.ip_forward=0; \
             conntrack -F >/dev/null 2>&1",
        );
        let t0 = Instant::now();
        while t0.elapsed() < CONNTRACK_DRAIN_MAX && !self.stop.load(Ordering::Relaxed) {
            let n = self
                .app("cat /proc/sys/net/netfilter/nf_conntrack_count")
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok());
            if n.map_or(true, |n| n == 0) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn run_kernel(&self) -> Result<EngineReport, LiveError> {
        let o = &self.opts;
        let mut counters = EngineCounters::default();
        let (mut exhaustion, mut recovery, mut collision) = (None, None, Vec::new());
        if o.single {
            self.kernel_nat(Some((o.port_min, o.port_max)))?;
            let r = self.exhaust();
            // Read before the recovery probes add SYNs of their own.
            let syns_in = self.kernel_counter("ip", "syns_in");
            let syns_out = self.kernel_counter("netdev", "syns_out");
            let r = r.and_then(|(ex, streams, end)| Ok((ex, self.recover(streams, end)?)));
            match r {
                Ok((ex, rec)) => {
                    exhaustion = Some(ex);
                    recovery = Some(rec);
                }
                Err(e) => {
                    self.kernel_off();
                    return Err(e);
                }
            }
            counters = EngineCounters {
                nat_refusals: syns_in.zip(syns_out).map(|(i, o)| i.saturating_sub(o)),
                syns_in,
                ..EngineCounters::default()
            };
            if o.collide_flows > 0 {
                self.kernel_nat(None)?;
                let c = self.collisions("masquerade (default range)");
                self.kernel_off();
                collision = c?;
            } else {
                self.kernel_off();
            }
        }
        let two_servers = if o.two_servers > 0 {
            let hi = o.port_min + (o.two_servers - 1) as u16;
            self.kernel_nat(Some((o.port_min, hi)))?;
            let t = self.two_servers(&|| {
                let i = self.kernel_counter("ip", "syns_in")?;
                let out = self.kernel_counter("netdev", "syns_out")?;
                Some(i.saturating_sub(out))
            });
            self.kernel_off();
            Some(t?)
        } else {
            None
        };
        Ok(EngineReport {
            engine: "kernel".into(),
            mapping: None,
            description: format!(
                "ip_forward=1 + nftables masquerade to :{}-{} + conntrack (TIME_WAIT {} s)",
                o.port_min, o.port_max, o.time_wait_s
            ),
            pool: o.pool(),
            exhaustion,
            counters,
            recovery,
            collision,
            two_servers,
            ratio_held_at_first_refusal: None,
            ratio_held_at_first_failure: None,
        })
    }

    // ---- Tollgate ----

    fn tollgate_config(&self, ports: &str, mapping: Mapping) -> String {
        let o = &self.opts;
        let mapping = match mapping {
            Mapping::EndpointIndependent => {
                "mapping = \"endpoint-independent\"\nport_sharing = true"
            }
            Mapping::EndpointIndependentStrict => {
                "mapping = \"endpoint-independent\"\nport_sharing = false"
            }
            Mapping::AddressAndPortDependent => "mapping = \"address-and-port-dependent\"",
        };
        format!(
            r#"# generated by tollgate bench snat-live
[appliance]
inside_prefixes = ["198.18.0.0/15"]
icmp_source = "198.18.0.1"
workers = {workers}
management = "{MGMT}"

[[interface]]
name = "tg-in"
role = "inside"
addresses = ["198.18.0.1/24"]

[[interface]]
name = "tg-out"
role = "outside"
addresses = ["203.0.113.1/24"]
gateway = "203.0.113.254"

[snat]
addresses = ["{PUBLIC}"]
ports = "{ports}"
{mapping}
icmp_on_exhaustion = {icmp}

[conntrack.timeouts]
tcp_time_wait = {tw}{est}

[[group]]
name = "bench"
priority = 100

  [[group.collection]]
  name = "egress"
  priority = 100
  kind = "network"
  action = "allow"

    [[group.collection.rule]]
    name = "to-servers"
    sources = ["198.18.0.0/15"]
    destinations = ["{ip}", "{ip_b}"]
    protocols = ["tcp"]
    destination_ports = ["{port}"]
"#,
            workers = o.workers,
            icmp = o.icmp_on_exhaustion,
            tw = o.time_wait_s,
            est = o
                .idle_timeout_s
                .map_or(String::new(), |t| format!("\ntcp_established = {t}")),
            ip = SERVER.ip(),
            ip_b = SERVER_B.ip(),
            port = SERVER.port(),
        )
    }

    /// Starts `tollgate run` with the pool `ports`; returns its log path.
    fn tollgate_start(
        &mut self,
        ports: &str,
        mapping: Mapping,
        tag: &str,
    ) -> Result<PathBuf, LiveError> {
        let text = self.tollgate_config(ports, mapping);
        tollgate::config::load_str(&text, "snat-live.toml")
            .map_err(|e| LiveError::Config(e.to_string()))?;
        let cfg = self.lab.dir.join(format!("tollgate-{tag}.toml"));
        std::fs::write(&cfg, text)?;
        let log = self.lab.dir.join(format!("tollgate-{tag}.log"));
        let exe = self.opts.exe.to_string_lossy().into_owned();
        let cfg_s = cfg.to_string_lossy().into_owned();
        let w = self.opts.workers.to_string();
        self.lab.spawn(
            "appliance",
            "app",
            &[&exe, "run", "--config", &cfg_s, "--workers", &w],
            &log,
        )?;
        if !self.lab.wait_spawned_appliance(APPLIANCE_START_MAX) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            self.lab.stop("appliance", Duration::from_secs(2));
            return Err(LiveError::Appliance(text.trim().to_string()));
        }
        Ok(log)
    }

    fn metrics(&self) -> Option<String> {
        let name = self.lab.ns("app");
        std::thread::spawn(move || -> io::Result<String> {
            NetnsHandle::open(&name)?.enter()?;
            let addr: SocketAddr = MGMT.parse().map_err(io::Error::other)?;
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: tollgate\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .join()
        .ok()?
        .ok()
    }

    fn run_tollgate(&mut self, mapping: Mapping) -> Result<EngineReport, LiveError> {
        let o = self.opts.clone();
        let ports = format!("{}-{}", o.port_min, o.port_max);
        let tag = mapping.short().to_ascii_lowercase();
        let mut counters = EngineCounters::default();
        let (mut exhaustion, mut recovery, mut collision) = (None, None, Vec::new());
        if o.single {
            let log = self.tollgate_start(&ports, mapping, &format!("exhaustion-{tag}"))?;
            let r = self.exhaust();
            // Read before the recovery probes add refusals of their own (the decision log is
            // drained every 100 ms).
            std::thread::sleep(Duration::from_millis(300));
            let m = self.metrics();
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            let r = r.and_then(|(ex, streams, end)| Ok((ex, self.recover(streams, end)?)));
            self.lab.stop("appliance", Duration::from_secs(5));
            let (ex, rec) = r?;
            exhaustion = Some(ex);
            recovery = Some(rec);
            counters = EngineCounters {
                nat_refusals: m.as_deref().and_then(|m| metric(m, OUT_OF_PORTS)),
                replies: m
                    .as_deref()
                    .and_then(|m| metric(m, "tollgate_replies_total")),
                decision_log_out_of_ports: Some(
                    log_text
                        .lines()
                        .filter(|l| l.starts_with('{') && l.contains("\"reason\":\"out_of_ports\""))
                        .count() as u64,
                ),
                syns_in: None,
            };
            self.interrupted()?;
            if o.collide_flows > 0 {
                self.tollgate_start("1024-65535", mapping, &format!("collision-{tag}"))?;
                let c = self.collisions("1024-65535 (default)");
                self.lab.stop("appliance", Duration::from_secs(5));
                collision = c?;
            }
        }
        let two_servers = if o.two_servers > 0 {
            let hi = o.port_min + (o.two_servers - 1) as u16;
            let pool = format!("{}-{hi}", o.port_min);
            self.tollgate_start(&pool, mapping, &format!("two-servers-{tag}"))?;
            let t = self.two_servers(&|| metric(&self.metrics()?, OUT_OF_PORTS));
            self.lab.stop("appliance", Duration::from_secs(5));
            Some(t?)
        } else {
            None
        };
        Ok(EngineReport {
            engine: "tollgate".into(),
            mapping: Some(mapping.short().into()),
            description: format!(
                "tollgate run, {} worker(s), ports {ports}, {}, icmp_on_exhaustion = {}, tcp_time_wait {} s",
                o.workers, mapping.short(), o.icmp_on_exhaustion, o.time_wait_s
            ),
            pool: o.pool(),
            exhaustion,
            counters,
            recovery,
            collision,
            two_servers,
            ratio_held_at_first_refusal: None,
            ratio_held_at_first_failure: None,
        })
    }
}

/// Tollgate's counter of SYNs refused for want of a port.
const OUT_OF_PORTS: &str = "tollgate_drops_total{reason=\"out_of_ports\"}";

/// The value of a Prometheus sample line `name value`.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Runs the live benchmark: builds the namespaces, runs the kernel then Tollgate, tears
/// everything down (also on error or when `stop` is set).
pub fn run(
    opts: &LiveOptions,
    stop: Arc<AtomicBool>,
    progress: &mut dyn FnMut(&str),
) -> Result<LiveReport, LiveError> {
    opts.check()?;
    // Client and server ends of every held connection, plus slack.
    let want = 2 * opts
        .flows
        .max(2 * opts.collide_flows)
        .max(2 * opts.two_servers) as u64
        + 256;
    let have = tcpprobe::raise_nofile(want)?;
    if have < want {
        return Err(LiveError::Options(format!(
            "{want} open files are needed and the limit is {have} (raise it with ulimit -n)"
        )));
    }
    let t0 = Instant::now();
    let mut b = Bench::up(opts, stop)?;
    progress(&format!(
        "namespaces {}* up; servers {SERVER} and {SERVER_B}",
        b.lab.ns("")
    ));
    let kernel = if opts.kernel {
        progress("kernel: nftables masquerade + conntrack ...");
        Some(b.run_kernel()?)
    } else {
        None
    };
    let mut tollgate = Vec::new();
    if opts.tollgate {
        for &m in &opts.mappings {
            b.interrupted()?;
            progress(&format!("tollgate: tollgate run, {} ...", m.short()));
            tollgate.push(b.run_tollgate(m)?);
        }
    }
    let held = |r: Option<&EngineReport>, f: fn(&Exhaustion) -> Option<usize>| {
        r.and_then(|r| f(r.exhaustion.as_ref()?))
    };
    for t in &mut tollgate {
        let ratio = |f: fn(&Exhaustion) -> Option<usize>| -> Option<f64> {
            let k = held(kernel.as_ref(), f)?;
            let v = held(Some(t), f)?;
            (k > 0).then(|| v as f64 / k as f64)
        };
        let (a, f) = (
            ratio(|e| e.held_at_first_refusal),
            ratio(|e| e.held_at_first_failure),
        );
        t.ratio_held_at_first_refusal = a;
        t.ratio_held_at_first_failure = f;
    }
    let report = LiveReport {
        prefix: b.lab.prefix.clone(),
        ports: format!("{}-{}", opts.port_min, opts.port_max),
        pool: opts.pool(),
        flows: opts.flows,
        hosts: opts.hosts,
        concurrency: opts.concurrency,
        connect_timeout_s: opts.connect_timeout.as_secs_f64(),
        time_wait_s: opts.time_wait_s,
        workers: opts.workers,
        server: SERVER.to_string(),
        server_b: SERVER_B.to_string(),
        single: opts.single,
        two_servers: opts.two_servers,
        kernel,
        tollgate,
        wall_s: t0.elapsed().as_secs_f64(),
    };
    b.lab.down();
    Ok(report)
}

fn opt<T: std::fmt::Display>(v: Option<T>, none: &str) -> String {
    v.map_or(none.to_string(), |v| v.to_string())
}

fn kinds(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lays out named rows under column headers, the first column left for the names.
fn layout(s: &mut String, heads: &[String], rows: &[(String, Vec<String>)]) {
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..heads.len())
        .map(|j| {
            rows.iter()
                .map(|r| r.1[j].len())
                .chain([heads[j].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |s: &mut String, name: &str, cells: &[String]| {
        let mut l = format!("{name:<w0$}");
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(l, "  {c:<w$}");
        }
        let _ = writeln!(s, "{}", l.trim_end());
    };
    line(s, "", heads);
    for (n, cells) in rows {
        line(s, n, cells);
    }
}

/// The header line of the two-server case.
fn two_servers_head(r: &LiveReport) -> String {
    let lo = r.ports.split('-').next().unwrap_or("?");
    let hi = lo
        .parse::<usize>()
        .map_or("?".to_string(), |l| (l + r.two_servers - 1).to_string());
    format!(
        "two servers: {n} connections to {} and {n} to {}, interleaved, each from its own inside \
         endpoint ({} host(s)), pool {lo}-{hi} ({n} ports)",
        r.server,
        r.server_b,
        r.hosts,
        n = r.two_servers
    )
}

impl LiveReport {
    /// The side-by-side table: the kernel, then Tollgate in each mapping mode.
    pub fn table(&self) -> String {
        let mut s = String::new();
        if self.single {
            let _ = writeln!(
                s,
                "SNAT exhaustion, live: {} flows from {} host(s) to {}, pool {} ({} ports), \
                 {} connects in flight, connect timeout {:.1} s, TIME_WAIT {} s, Tollgate workers {}",
                self.flows,
                self.hosts,
                self.server,
                self.ports,
                self.pool,
                self.concurrency,
                self.connect_timeout_s,
                self.time_wait_s,
                self.workers
            );
        }
        if self.two_servers > 0 {
            let _ = writeln!(s, "{}", two_servers_head(self));
        }
        let e = self.engines();
        let heads: Vec<String> = e.iter().map(|r| r.label()).collect();
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let mut row = |name: &str, f: &dyn Fn(&EngineReport) -> String| {
            rows.push((name.to_string(), e.iter().map(|r| f(r)).collect()));
        };
        fn x<'a>(f: &'a dyn Fn(&Exhaustion) -> String) -> impl Fn(&EngineReport) -> String + 'a {
            move |r| r.exhaustion.as_ref().map_or("-".into(), f)
        }
        if self.single {
            row(
                "held at the first refused SYN",
                &x(&|e| opt(e.held_at_first_refusal, "none refused")),
            );
            row(
                "held at the first failed connect",
                &x(&|e| opt(e.held_at_first_failure, "none failed")),
            );
            row(
                "first failure seen by the client",
                &x(&|e| opt(e.first_failure.map(|k| k.as_str()), "-")),
            );
            row(
                "established / attempted",
                &x(&|e| format!("{} / {}", e.established, e.attempted)),
            );
            row(
                "established only after a SYN retransmit",
                &x(&|e| e.established_after_retransmit.to_string()),
            );
            row("failed connects, by kind", &x(&|e| kinds(&e.failures)));
            row(
                "time to fail (median ms), by kind",
                &x(&|e| {
                    if e.failure_ms_median.is_empty() {
                        return "-".into();
                    }
                    e.failure_ms_median
                        .iter()
                        .map(|(k, v)| format!("{k} {v:.1}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }),
            );
            row(
                "pool ports used / unused (server side)",
                &x(&|e| format!("{} / {}", e.pool_ports_used, e.pool_ports_unused)),
            );
            row(
                "connect time p50 / p99 (ms)",
                &x(&|e| format!("{:.2} / {:.2}", e.connect_ms_p50, e.connect_ms_p99)),
            );
            row("refusals the NAT counted", &|r| {
                let n = opt(r.counters.nat_refusals, "n/a");
                if r.engine == "tollgate" {
                    format!("out_of_ports {n}")
                } else {
                    format!("{n} SYNs dropped at masquerade")
                }
            });
            row("ICMP errors sent / decision-log out_of_ports", &|r| {
                if r.engine == "tollgate" {
                    format!(
                        "{} / {}",
                        opt(r.counters.replies, "n/a"),
                        opt(r.counters.decision_log_out_of_ports, "n/a")
                    )
                } else {
                    "- (no counter, no log)".into()
                }
            });
            row(
                "recovery (s): after closing all | idle: from ramp end",
                &|r| match &r.recovery {
                    Some(Recovery {
                        after_s: Some(v),
                        probes,
                        ..
                    }) => format!("{v:.2} ({probes} probes)"),
                    Some(rec) => format!("not within {:.0} s", rec.limit_s),
                    None => "-".into(),
                },
            );
        }
        let collided = e.iter().any(|r| !r.collision.is_empty());
        for (i, order) in [(0, "interleaved"), (1, "B after A"), (2, "parallel")] {
            if !collided {
                break;
            }
            row(
                &format!("colliding ports ({order}): A / B established"),
                &|r| {
                    r.collision.get(i).map_or("-".into(), |c| {
                        format!(
                            "{} / {} of {} ({})",
                            c.established[0], c.established[1], c.flows_per_host, c.nat_ports
                        )
                    })
                },
            );
            row(
                &format!("colliding ports ({order}): B retransmitted / failed"),
                &|r| {
                    r.collision.get(i).map_or("-".into(), |c| {
                        format!(
                            "{} / {} ({})",
                            c.established_after_retransmit[1],
                            c.failed[1],
                            kinds(&c.second_host_failures)
                        )
                    })
                },
            );
        }
        if self.two_servers > 0 {
            fn t<'a>(
                f: &'a dyn Fn(&TwoServers) -> String,
            ) -> impl Fn(&EngineReport) -> String + 'a {
                move |r| r.two_servers.as_ref().map_or("-".into(), f)
            }
            row(
                "two servers: established (to A / to B)",
                &t(&|t| {
                    format!(
                        "{} of {} ({} / {})",
                        t.exhaustion.established,
                        t.exhaustion.attempted,
                        t.established_to[0],
                        t.established_to[1]
                    )
                }),
            );
            row(
                "two servers: held at the first refused SYN",
                &t(&|t| opt(t.exhaustion.held_at_first_refusal, "none refused")),
            );
            row(
                "two servers: held at the first failed connect",
                &t(&|t| opt(t.exhaustion.held_at_first_failure, "none failed")),
            );
            row(
                "two servers: failed connects, by kind",
                &t(&|t| kinds(&t.exhaustion.failures)),
            );
            row(
                "two servers: established only after a SYN retransmit",
                &t(&|t| t.exhaustion.established_after_retransmit.to_string()),
            );
            row(
                "two servers: pool ports used / used toward both",
                &t(&|t| format!("{} / {}", t.exhaustion.pool_ports_used, t.ports_toward_both)),
            );
            row("two servers: refusals the NAT counted", &|r| {
                r.two_servers.as_ref().map_or("-".into(), |t| {
                    let n = opt(t.nat_refusals, "n/a");
                    if r.engine == "tollgate" {
                        format!("out_of_ports {n}")
                    } else {
                        format!("{n} SYNs dropped")
                    }
                })
            });
        }
        layout(&mut s, &heads, &rows);
        if self.single && self.kernel.is_some() {
            let r = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.3}"));
            for t in &self.tollgate {
                let _ = writeln!(
                    s,
                    "ratio of flows held, {} / kernel: {} at the first refused SYN, {} at the first failed connect",
                    t.label(),
                    r(t.ratio_held_at_first_refusal),
                    r(t.ratio_held_at_first_failure)
                );
            }
        }
        let _ = writeln!(s, "wall time {:.1} s", self.wall_s);
        s
    }
}

/// The median of the values present, and how many runs had one.
fn median(v: &[Option<f64>]) -> Option<(f64, usize)> {
    let mut x: Vec<f64> = v.iter().flatten().copied().collect();
    if x.is_empty() {
        return None;
    }
    let n = x.len();
    x.sort_by(f64::total_cmp);
    let m = if n % 2 == 1 {
        x[n / 2]
    } else {
        (x[n / 2 - 1] + x[n / 2]) / 2.0
    };
    Some((m, n))
}

/// Medians over several runs of the same options: one line per measure, the kernel and
/// Tollgate in each mapping mode side by side, with the spread (min-max). A value absent in
/// some runs (no failure, no recovery) says in how many runs it was present.
pub fn median_table(reports: &[LiveReport]) -> String {
    let mut s = String::new();
    let Some(first) = reports.first() else {
        return s;
    };
    let _ = write!(s, "medians of {} runs", reports.len());
    if first.single {
        let _ = write!(
            s,
            ": {} flows from {} host(s), pool {} ({} ports), Tollgate workers {}",
            first.flows, first.hosts, first.ports, first.pool, first.workers
        );
    }
    let _ = writeln!(s);
    if first.two_servers > 0 {
        let _ = writeln!(s, "{}", two_servers_head(first));
    }
    type Get = dyn Fn(&EngineReport) -> Option<f64>;
    // Column j is the j-th engine of every run (the same options: the same engines).
    let columns = first.engines().len();
    let cell = |get: &Get, j: usize| -> String {
        let v: Vec<Option<f64>> = reports
            .iter()
            .map(|r| r.engines().get(j).and_then(|e| get(e)))
            .collect();
        let present: Vec<f64> = v.iter().flatten().copied().collect();
        match median(&v) {
            None => "none".into(),
            Some((m, n)) => {
                let lo = present.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = present.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let fmt = |x: f64| {
                    if x.fract() == 0.0 && x.abs() < 1e9 {
                        format!("{x:.0}")
                    } else {
                        format!("{x:.2}")
                    }
                };
                let mut c = if lo == hi {
                    fmt(m)
                } else {
                    format!("{} ({}-{})", fmt(m), fmt(lo), fmt(hi))
                };
                if n < v.len() {
                    let _ = write!(c, " [{n}/{} runs]", v.len());
                }
                c
            }
        }
    };
    fn n(x: usize) -> Option<f64> {
        Some(x as f64)
    }
    let ex = |f: fn(&Exhaustion) -> Option<f64>| -> Box<Get> {
        Box::new(move |r: &EngineReport| r.exhaustion.as_ref().and_then(f))
    };
    let two = |f: fn(&TwoServers) -> Option<f64>| -> Box<Get> {
        Box::new(move |r: &EngineReport| r.two_servers.as_ref().and_then(f))
    };
    let mut rows: Vec<(String, Box<Get>)> = Vec::new();
    if first.single {
        rows.extend([
            (
                "held at the first refused SYN".to_string(),
                ex(|e| e.held_at_first_refusal.map(|x| x as f64)),
            ),
            (
                "held at the first failed connect".into(),
                ex(|e| e.held_at_first_failure.map(|x| x as f64)),
            ),
            ("established".into(), ex(|e| n(e.established))),
            ("failed connects".into(), ex(|e| n(e.failed))),
            (
                "established only after a SYN retransmit".into(),
                ex(|e| n(e.established_after_retransmit)),
            ),
            (
                "pool ports unused (server side)".into(),
                ex(|e| n(e.pool_ports_unused)),
            ),
            (
                "time to fail, median of the run (ms)".into(),
                ex(|e| {
                    median(
                        &e.failure_ms_median
                            .values()
                            .map(|v| Some(*v))
                            .collect::<Vec<_>>(),
                    )
                    .map(|x| x.0)
                }),
            ),
            (
                "connect time p50 (ms)".into(),
                ex(|e| Some(e.connect_ms_p50)),
            ),
            (
                "connect time p99 (ms)".into(),
                ex(|e| Some(e.connect_ms_p99)),
            ),
            (
                "refusals the NAT counted".into(),
                Box::new(|r: &EngineReport| {
                    r.exhaustion.as_ref()?;
                    r.counters.nat_refusals.map(|x| x as f64)
                }),
            ),
            (
                "recovery (s): after closing all | idle: from ramp end".into(),
                Box::new(|r: &EngineReport| r.recovery.as_ref()?.after_s),
            ),
        ]);
    }
    let collided = reports
        .iter()
        .any(|r| r.engines().iter().any(|e| !e.collision.is_empty()));
    for (i, order) in CollideOrder::ALL.iter().enumerate() {
        if !collided {
            break;
        }
        rows.push((
            format!("colliding ports ({}): host B established", order.as_str()),
            Box::new(move |r: &EngineReport| r.collision.get(i).map(|c| c.established[1] as f64)),
        ));
    }
    if first.two_servers > 0 {
        rows.extend([
            (
                "two servers: established".to_string(),
                two(|t| n(t.exhaustion.established)),
            ),
            (
                "two servers: held at the first refused SYN".into(),
                two(|t| t.exhaustion.held_at_first_refusal.map(|x| x as f64)),
            ),
            (
                "two servers: held at the first failed connect".into(),
                two(|t| t.exhaustion.held_at_first_failure.map(|x| x as f64)),
            ),
            (
                "two servers: failed connects".into(),
                two(|t| n(t.exhaustion.failed)),
            ),
            (
                "two servers: established only after a SYN retransmit".into(),
                two(|t| n(t.exhaustion.established_after_retransmit)),
            ),
            (
                "two servers: pool ports used toward both".into(),
                two(|t| n(t.ports_toward_both)),
            ),
            (
                "two servers: refusals the NAT counted".into(),
                two(|t| t.nat_refusals.map(|x| x as f64)),
            ),
        ]);
    }
    let heads: Vec<String> = first.engines().iter().map(|e| e.label()).collect();
    let cells: Vec<(String, Vec<String>)> = rows
        .iter()
        .map(|(name, get)| {
            (
                name.clone(),
                (0..columns).map(|j| cell(get.as_ref(), j)).collect(),
            )
        })
        .collect();
    layout(&mut s, &heads, &cells);
    if first.single && first.kernel.is_some() {
        for (j, t) in first.tollgate.iter().enumerate() {
            let ratio = |f: fn(&EngineReport) -> Option<f64>| {
                median(
                    &reports
                        .iter()
                        .map(|r| r.tollgate.get(j).and_then(f))
                        .collect::<Vec<_>>(),
                )
                .map_or("n/a".to_string(), |(m, _)| format!("{m:.3}"))
            };
            let _ = writeln!(
                s,
                "ratio of flows held, {} / kernel (median): {} at the first refused SYN, {} at the first failed connect",
                t.label(),
                ratio(|r| r.ratio_held_at_first_refusal),
                ratio(|r| r.ratio_held_at_first_failure)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_skip_absent_values() {
        assert_eq!(
            median(&[Some(3.0), None, Some(1.0), Some(2.0)]),
            Some((2.0, 3))
        );
        assert_eq!(median(&[Some(1.0), Some(4.0)]), Some((2.5, 2)));
        assert_eq!(median(&[None, None]), None);
    }

    fn est(ms: u64) -> Attempt {
        Attempt {
            host: 0,
            dst: SERVER,
            outcome: Outcome::Established(Duration::from_millis(ms)),
        }
    }

    #[test]
    fn summary_counts_held_before_the_first_refusal_and_failure() {
        let fail = Attempt {
            host: 0,
            dst: SERVER,
            outcome: Outcome::Failed(FailKind::Timeout, Duration::from_millis(1500)),
        };
        let a = vec![est(1), est(1), est(1100), est(1), fail, est(1)];
        let peers = [
            SocketAddrV4::new(PUBLIC, 1024),
            SocketAddrV4::new(PUBLIC, 1025),
            SocketAddrV4::new(PUBLIC, 1025),
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 11), 1026),
        ];
        let e = summarise(&a, 1, &peers, 1024, 1031);
        assert_eq!(e.established, 5);
        assert_eq!(e.failed, 1);
        assert_eq!(e.established_after_retransmit, 1);
        assert_eq!(e.held_at_first_refusal, Some(2));
        assert_eq!(e.held_at_first_failure, Some(4));
        assert_eq!(e.first_failure, Some(FailKind::Timeout));
        assert_eq!(e.pool_ports_used, 2);
        assert_eq!(e.pool_ports_unused, 6);
        assert_eq!(e.server_saw_outside_pool, 1);
    }

    #[test]
    fn metric_lines_are_parsed() {
        let m = "# HELP x\ntollgate_drops_total{reason=\"out_of_ports\"} 76\ntollgate_replies_total 80\n";
        assert_eq!(
            metric(m, "tollgate_drops_total{reason=\"out_of_ports\"}"),
            Some(76)
        );
        assert_eq!(metric(m, "tollgate_replies_total"), Some(80));
        assert_eq!(metric(m, "tollgate_nope"), None);
    }

    #[test]
    fn errno_kinds() {
        let k = |e| FailKind::of(&io::Error::from_raw_os_error(e));
        assert_eq!(k(libc::ECONNREFUSED), FailKind::Rst);
        assert_eq!(k(libc::EHOSTUNREACH), FailKind::IcmpHostUnreachable);
        assert_eq!(k(libc::ETIMEDOUT), FailKind::Timeout);
    }
}
