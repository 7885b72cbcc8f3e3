//! Issue 21: endpoint-independent mapping and per-host quotas hold across workers. A real STUN
//! client and server (coturn's `turnutils_natdiscovery` and `turnserver`, Debian package
//! `coturn`) through `tollgate run` with 1, 2 and 4 workers, in the lab's namespaces:
//!
//! ```text
//!  node1 198.18.0.11 (STUN client) ─┐                             ┌ inet: turnserver on
//!  node2 198.18.0.12 (quota host)  ─┴ sw ─ [app: tollgate run] ───┤ 203.0.113.10 and .11,
//!                                          SNAT to 203.0.113.1    └ ports 3478 and 3479
//! ```
//! RFC 5780 mapping discovery sends from one socket to the server's address and to its
//! alternate address (203.0.113.11, from OTHER-ADDRESS) and compares the reflexive addresses:
//! one public port for both is endpoint-independent mapping. With the steering by the whole
//! 5-tuple, those two flows of one endpoint landed on two workers (their destinations differ
//! in the last bit, and so did the hash) and got two public ports: "address dependent".
//! Then node2, with `per_host_quota = 4`, opens 8 UDP flows (8 source ports, one datagram
//! each to 203.0.113.10:9000-9007, sent three times): exactly 4 must arrive, whatever the
//! worker count (by the 5-tuple, each worker allowed 4 of its own: 8 of 8 arrived with 2
//! and with 4 workers).
//!
//! First the kernel (ip_forward + nftables masquerade in `app`) as the baseline, which must
//! report endpoint-independent mapping, or the test's plumbing is broken.
//!
//! The second test is issue 21's case, in one run of `tollgate run` with the default mapping
//! (endpoint-independent with port sharing) and a 64-port pool: 128 real TCP connections from
//! 128 inside endpoints (node1 and node2, a source port each), 64 to 203.0.113.10:8000 and 64
//! to 203.0.113.20:8000, interleaved, all established and held; then, with all 128 held, the
//! STUN client still reports endpoint-independent mapping.
//!
//! Needs root (skips otherwise) and coturn (fails with the apt-get line when it is missing);
//! only the lab's addresses plus 203.0.113.11 and 203.0.113.20, only in the lab's namespaces
//! (unique prefix), removed on every exit path, every process stopped by its PID.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use tollgate_lab::io::tcpprobe::{self, Connecting, NetnsHandle};
use tollgate_lab::lab::{new_prefix, Lab};

/// One test at a time: each runs an appliance and coturn, and the second one's connects are
/// timed; two at once on a loaded 2-core machine only add noise.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The appliance's configuration: inside -> the STUN ports and the quota test's ports, SNAT to
/// 203.0.113.1 with endpoint-independent mapping and a per-host quota of 4.
const CONFIG: &str = r#"
[appliance]
inside_prefixes = ["198.18.0.0/15"]
icmp_source = "198.18.0.1"
management = "127.0.0.1:9090"

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
addresses = ["203.0.113.1"]
ports = "1024-65535"
mapping = "endpoint-independent"
per_host_quota = 4

[[group]]
name = "stun"
priority = 100

  [[group.collection]]
  name = "egress"
  priority = 100
  kind = "network"
  action = "allow"

    [[group.collection.rule]]
    name = "stun"
    sources = ["198.18.0.0/15"]
    destinations = ["203.0.113.0/24"]
    protocols = ["udp"]
    destination_ports = ["3478-3479"]

    [[group.collection.rule]]
    name = "quota-test"
    sources = ["198.18.0.0/15"]
    destinations = ["203.0.113.10"]
    protocols = ["udp"]
    destination_ports = ["9000-9007"]
"#;

/// The per-host quota of [`CONFIG`], and the flows node2 tries.
const QUOTA: usize = 4;
const FLOWS: usize = 8;

/// In `inet`: prints `got <port> from <addr>:<port>` for each datagram to 203.0.113.10:9000-9007.
const RECEIVER_PY: &str = r#"
import select, socket, sys
socks = []
for p in range(9000, 9008):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("203.0.113.10", p))
    socks.append(s)
print("listening", flush=True)
while True:
    r, _, _ = select.select(socks, [], [])
    for s in r:
        data, peer = s.recvfrom(2048)
        print("got %d from %s:%d" % (s.getsockname()[1], peer[0], peer[1]), flush=True)
"#;

/// In `node2`: 8 sockets (source ports 7001-7008), the i-th sends a datagram to
/// 203.0.113.10:9000+i three times, 50 ms apart (one flow per socket). The odd source ports
/// first: the 5-tuple hash of before issue 21 put 4 of these flows on each of 2 workers (with
/// 7001+i to 9000+i, all 8 on one, and the quota held by luck).
const SENDER_PY: &str = r#"
import socket, time
socks = []
for port in (7001, 7003, 7005, 7007, 7002, 7004, 7006, 7008):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("198.18.0.12", port))
    socks.append(s)
for _ in range(3):
    for i, s in enumerate(socks):
        s.sendto(b"quota", ("203.0.113.10", 9000 + i))
        time.sleep(0.005)
    time.sleep(0.05)
"#;

/// One run's outcome.
struct Outcome {
    through: String,
    natdiscovery: String,
    /// Destination ports (9000-9007) node2's datagrams reached.
    quota_ports: Vec<u16>,
    /// Exit counters of `tollgate run` (empty for the kernel).
    counters: String,
    flows_per_worker: String,
}

impl Outcome {
    fn mapping(&self) -> &str {
        self.natdiscovery
            .lines()
            .find(|l| l.contains("Mapping!"))
            .unwrap_or("(no mapping verdict)")
            .trim()
    }
    fn filtering(&self) -> &str {
        self.natdiscovery
            .lines()
            .find(|l| l.contains("Filtering!"))
            .unwrap_or("(no filtering verdict)")
            .trim()
    }
    fn counter(&self, name: &str) -> u64 {
        self.counters
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    }
    fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} / {}; quota {QUOTA}: {} of {FLOWS} flows through {:?}",
            self.through,
            self.mapping(),
            self.filtering(),
            self.quota_ports.len(),
            self.quota_ports
        );
        if !self.counters.is_empty() {
            let _ = write!(
                s,
                "; drop.host_quota {}, handoff_out {}; {}",
                self.counter("drop.host_quota "),
                self.counter("handoff_out "),
                self.flows_per_worker
            );
        }
        s
    }
}

/// The lab's namespaces with a second server address (203.0.113.11, RFC 5780's alternate),
/// turnserver listening on both, and the quota test's receiver.
fn setup() -> Lab {
    let have = |tool: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        have("turnserver") && have("turnutils_natdiscovery"),
        "coturn is missing: apt-get install coturn (./dev.sh test installs it)"
    );
    let mut lab = Lab::up(&new_prefix()).expect("lab up");
    let (ok, why) = sh(&lab, "inet", "ip addr add 203.0.113.11/24 dev eth0");
    assert!(ok, "{why}");
    let dir = lab.dir.clone();
    let (pid, db) = (dir.join("turn.pid"), dir.join("turndb"));
    let log = dir.join("turnserver.log");
    lab.spawn(
        "turnserver",
        "inet",
        &[
            "turnserver",
            "-n",
            "--no-auth",
            "--stun-only",
            "-L",
            "203.0.113.10",
            "-L",
            "203.0.113.11",
            "-p",
            "3478",
            "--alt-listening-port",
            "3479",
            "--no-tcp",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--log-file",
            "stdout",
            "--simple-log",
            "--pidfile",
            &pid.to_string_lossy(),
            "--userdb",
            &db.to_string_lossy(),
        ],
        &log,
    )
    .expect("spawn turnserver");
    let receiver = dir.join("receiver.py");
    std::fs::write(&receiver, RECEIVER_PY).expect("receiver script");
    std::fs::write(dir.join("sender.py"), SENDER_PY).expect("sender script");
    let rlog = dir.join("receiver.log");
    lab.spawn(
        "receiver",
        "inet",
        &["python3", "-u", &receiver.to_string_lossy()],
        &rlog,
    )
    .expect("spawn receiver");
    // turnserver listens on both addresses, ports 3478 and 3479; the receiver is up
    let t0 = Instant::now();
    loop {
        let (_, socks) = sh(&lab, "inet", "ss -Hnlu");
        let listening = ["203.0.113.10:3478", "203.0.113.10:3479"]
            .iter()
            .chain(&["203.0.113.11:3478", "203.0.113.11:3479"])
            .all(|a| socks.contains(a));
        let receiving = std::fs::read_to_string(&rlog).is_ok_and(|t| t.contains("listening"));
        if listening && receiving {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "turnserver or the receiver did not come up:\n{socks}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.warm_neighbours();
    let _ = sh(&lab, "app", "ping -c1 -W1 203.0.113.11 >/dev/null 2>&1");
    lab
}

/// RFC 5780 mapping and filtering discovery from node1, then node2's quota test; `through`
/// names what forwards (for the report).
fn probe(lab: &Lab, through: &str) -> Outcome {
    let (_, natdiscovery) = sh(
        lab,
        "node1",
        "timeout 60 turnutils_natdiscovery -m -f 203.0.113.10",
    );
    let rlog = lab.dir.join("receiver.log");
    let before = std::fs::read_to_string(&rlog).unwrap_or_default().len();
    let sender = lab.dir.join("sender.py");
    let (ok, why) = sh(
        lab,
        "node2",
        &format!("timeout 20 python3 {}", sender.display()),
    );
    assert!(ok, "quota sender: {why}");
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&rlog).unwrap_or_default();
    let mut quota_ports: Vec<u16> = text[before..]
        .lines()
        .filter_map(|l| l.strip_prefix("got ")?.split(' ').next()?.parse().ok())
        .collect();
    quota_ports.sort_unstable();
    quota_ports.dedup();
    Outcome {
        through: through.to_string(),
        natdiscovery,
        quota_ports,
        counters: String::new(),
        flows_per_worker: String::new(),
    }
}

/// The kernel in `app`: forwarding on, masquerade to 203.0.113.1; undone after.
fn kernel_baseline(lab: &Lab) -> Outcome {
    let (ok, why) = sh(
        lab,
        "app",
        "sysctl -qw net.ipv4.ip_forward=1 && nft -f - <<'EOF'
table ip tgstun {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"tg-out\" masquerade
  }
}
EOF",
    );
    assert!(ok, "kernel baseline setup: {why}");
    let out = probe(lab, "kernel (ip_forward + masquerade)");
    let (ok, why) = sh(
        lab,
        "app",
        "nft delete table ip tgstun && sysctl -qw net.ipv4.ip_forward=0",
    );
    assert!(ok, "kernel baseline teardown: {why}");
    out
}

fn through_tollgate(lab: &mut Lab, workers: usize) -> Outcome {
    let config = lab.dir.join("stun.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let w = workers.to_string();
    let (_, log) = start_appliance(
        lab,
        &[
            exe,
            "run",
            "--config",
            &config.to_string_lossy(),
            "--workers",
            &w,
        ],
    );
    let mut out = probe(lab, &format!("tollgate, {workers} worker(s)"));
    // tracked flows per worker (the gauges are published between batches)
    std::thread::sleep(Duration::from_millis(200));
    let (_, metrics) = sh(lab, "app", "curl -s -m 3 http://127.0.0.1:9090/metrics");
    out.flows_per_worker = metrics
        .lines()
        .filter(|l| l.starts_with("tollgate_flows{worker="))
        .map(|l| l.trim_start_matches("tollgate_flows"))
        .collect::<Vec<_>>()
        .join(" ");
    let clean = lab.stop("appliance", Duration::from_secs(5));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    out.counters = text
        .lines()
        .filter(|l| !l.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(clean, "tollgate run did not stop on SIGTERM:\n{text}");
    out
}

#[test]
fn stun_sees_endpoint_independent_mapping_and_the_quota_holds_with_1_2_4_workers() {
    if !root_or_skip(
        "stun_sees_endpoint_independent_mapping_and_the_quota_holds_with_1_2_4_workers",
    ) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = setup();
    let mut runs = vec![kernel_baseline(&lab)];
    eprintln!(
        "--- {} ---\n{}",
        runs[0].through,
        runs[0].natdiscovery.trim_end()
    );
    assert!(
        runs[0].mapping().contains("Endpoint Independent Mapping"),
        "the kernel baseline does not see endpoint-independent mapping: the test's topology is broken, not the appliance:\n{}",
        runs[0].natdiscovery
    );
    for workers in [1usize, 2, 4] {
        let o = through_tollgate(&mut lab, workers);
        eprintln!("--- {} ---\n{}", o.through, o.natdiscovery.trim_end());
        runs.push(o);
    }
    eprintln!("--- summary ---");
    for o in &runs {
        eprintln!("{}", o.summary());
    }
    for o in &runs[1..] {
        assert!(
            o.mapping().contains("Endpoint Independent Mapping"),
            "{}: {}\n{}\n{}",
            o.through,
            o.mapping(),
            o.natdiscovery,
            o.counters
        );
        assert_eq!(
            o.quota_ports.len(),
            QUOTA,
            "{}: per_host_quota = {QUOTA}, {} of {FLOWS} flows went through ({:?})\n{}",
            o.through,
            o.quota_ports.len(),
            o.quota_ports,
            o.counters
        );
        assert!(
            o.counter("drop.host_quota ") > 0,
            "{}: no host_quota drops\n{}",
            o.through,
            o.counters
        );
    }
}

/// Issue 21's appliance: the default SNAT mapping (no `mapping`, no `port_sharing`: the
/// defaults, endpoint-independent with port sharing), a 64-port pool, no quota; STUN and TCP
/// to the two servers allowed.
const CONFIG_64: &str = r#"
[appliance]
inside_prefixes = ["198.18.0.0/15"]
icmp_source = "198.18.0.1"
management = "127.0.0.1:9090"

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
addresses = ["203.0.113.1"]
ports = "1024-1087"

[[group]]
name = "issue-21"
priority = 100

  [[group.collection]]
  name = "egress"
  priority = 100
  kind = "network"
  action = "allow"

    [[group.collection.rule]]
    name = "stun"
    sources = ["198.18.0.0/15"]
    destinations = ["203.0.113.0/24"]
    protocols = ["udp"]
    destination_ports = ["3478-3479"]

    [[group.collection.rule]]
    name = "two-servers"
    sources = ["198.18.0.0/15"]
    destinations = ["203.0.113.10", "203.0.113.20"]
    protocols = ["tcp"]
    destination_ports = ["8000"]
"#;

/// The pool of [`CONFIG_64`]; connections per server.
const POOL: std::ops::RangeInclusive<u16> = 1024..=1087;
const PER_SERVER: usize = 64;
const SERVER_A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 8000);
const SERVER_B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 20), 8000);

/// TCP servers in `inet` that accept and hold every connection, recording (server index,
/// peer) for each.
struct Servers {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(usize, SocketAddrV4)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Servers {
    fn start(lab: &Lab, addrs: [SocketAddrV4; 2]) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<(usize, SocketAddrV4)>>> = Arc::default();
        let ns = NetnsHandle::open(&lab.ns("inet")).expect("open inet");
        let (tx, rx) = std::sync::mpsc::channel();
        let (st, se) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let listeners = ns.enter().and_then(|()| {
                addrs
                    .iter()
                    .map(|a| tcpprobe::listen(*a, 1024))
                    .collect::<std::io::Result<Vec<_>>>()
            });
            let listeners = match listeners {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut held = Vec::new();
            while !st.load(Ordering::Relaxed) {
                let mut idle = true;
                for (i, l) in listeners.iter().enumerate() {
                    if let Ok((c, SocketAddr::V4(peer))) = l.accept() {
                        idle = false;
                        held.push(c);
                        se.lock().expect("seen").push((i, peer));
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        rx.recv()
            .expect("server thread")
            .expect("listen on 203.0.113.10:8000 and 203.0.113.20:8000");
        Servers {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<(usize, SocketAddrV4)> {
        self.seen.lock().expect("seen").clone()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// 2 x [`PER_SERVER`] connects, A and B in turn, each from its own inside endpoint: node1 and
/// node2 take pairs in turn, attempt k from source port 30000 + k. Returns per attempt the
/// held stream or why it failed (connect error or no answer within `timeout`).
fn connect_128(lab: &Lab, timeout: Duration) -> Vec<Result<TcpStream, String>> {
    let names = [lab.ns("node1"), lab.ns("node2")];
    let addrs = [Ipv4Addr::new(198, 18, 0, 11), Ipv4Addr::new(198, 18, 0, 12)];
    std::thread::spawn(move || {
        let ns: Vec<NetnsHandle> = names
            .iter()
            .map(|n| NetnsHandle::open(n).expect("open node ns"))
            .collect();
        let total = 2 * PER_SERVER;
        let mut out: Vec<Option<Result<TcpStream, String>>> = (0..total).map(|_| None).collect();
        let mut inflight: Vec<(usize, Connecting, Instant)> = Vec::new();
        let mut next = 0;
        while next < total || !inflight.is_empty() {
            while inflight.len() < 16 && next < total {
                let host = (next / 2) % 2;
                ns[host].enter().expect("enter node ns");
                let src = SocketAddrV4::new(addrs[host], 30000 + next as u16);
                let dst = if next % 2 == 0 { SERVER_A } else { SERVER_B };
                match Connecting::start(src, dst) {
                    Ok(c) => inflight.push((next, c, Instant::now())),
                    Err(e) => out[next] = Some(Err(format!("{src} -> {dst}: {e}"))),
                }
                next += 1;
            }
            let refs: Vec<&Connecting> = inflight.iter().map(|(_, c, _)| c).collect();
            let ready =
                tcpprobe::poll_connecting(&refs, Duration::from_millis(50)).expect("poll connects");
            let mut done = vec![false; inflight.len()];
            for i in ready {
                done[i] = true;
            }
            let mut keep = Vec::new();
            for (i, (k, c, t)) in inflight.drain(..).enumerate() {
                if done[i] {
                    out[k] = Some(match c.result() {
                        Ok(()) => Ok(c.into_stream()),
                        Err(e) => Err(format!("attempt {k}: {e}")),
                    });
                } else if t.elapsed() > timeout {
                    out[k] = Some(Err(format!("attempt {k}: no answer in {timeout:?}")));
                } else {
                    keep.push((k, c, t));
                }
            }
            inflight = keep;
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err("not attempted".into())))
            .collect()
    })
    .join()
    .expect("client thread")
}

#[test]
fn default_mapping_holds_128_connections_to_two_servers_on_64_ports_and_stun_sees_eim() {
    if !root_or_skip(
        "default_mapping_holds_128_connections_to_two_servers_on_64_ports_and_stun_sees_eim",
    ) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut lab = setup();
    let (ok, why) = sh(&lab, "inet", "ip addr add 203.0.113.20/24 dev eth0");
    assert!(ok, "{why}");
    let _ = sh(&lab, "app", "ping -c1 -W1 203.0.113.20 >/dev/null 2>&1");
    let servers = Servers::start(&lab, [SERVER_A, SERVER_B]);
    let config = lab.dir.join("issue21.toml");
    std::fs::write(&config, CONFIG_64).expect("config");
    // One worker: with two, each owns half the pool (32 ports) and the steering by inside
    // address decides how many endpoints each half gets, which is not what this test is about.
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let (_, log) = start_appliance(
        &mut lab,
        &[
            exe,
            "run",
            "--config",
            &config.to_string_lossy(),
            "--workers",
            "1",
        ],
    );

    // 128 connections; a SYN lost on a loaded machine is retransmitted after 1 s, so 5 s.
    let conns = connect_128(&lab, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    let (held, failed): (Vec<_>, Vec<_>) = conns.into_iter().partition(Result::is_ok);
    let held: Vec<TcpStream> = held.into_iter().filter_map(Result::ok).collect();
    let failed: Vec<String> = failed.into_iter().filter_map(Result::err).collect();
    let seen = servers.seen();

    // With all 128 held: RFC 5780 mapping discovery from node1.
    let (_, natdiscovery) = sh(
        &lab,
        "node1",
        "timeout 30 turnutils_natdiscovery -m 203.0.113.10",
    );
    let mapping = natdiscovery
        .lines()
        .find(|l| l.contains("Mapping!"))
        .unwrap_or("(no mapping verdict)")
        .trim()
        .to_string();
    let (_, metrics) = sh(&lab, "app", "curl -s -m 3 http://127.0.0.1:9090/metrics");
    let moved = metrics
        .lines()
        .find(|l| l.starts_with("tollgate_snat_eim_collision_moved_total "))
        .unwrap_or("")
        .to_string();
    drop(held);
    drop(servers);
    let clean = lab.stop("appliance", Duration::from_secs(5));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let counters: String = text
        .lines()
        .filter(|l| !l.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!(
        "--- natdiscovery with 128 connections held ---\n{}",
        natdiscovery.trim_end()
    );
    eprintln!("--- tollgate ---\n{counters}\n{moved}");

    let ports = |server: usize| -> BTreeSet<u16> {
        seen.iter()
            .filter(|(i, p)| *i == server && *p.ip() == Ipv4Addr::new(203, 0, 113, 1))
            .map(|(_, p)| p.port())
            .collect()
    };
    let (a, b) = (ports(0), ports(1));
    eprintln!(
        "--- summary ({:.1} s) ---\n{} of {} connections established ({} failed), servers saw {} \
         connections, {} pool ports toward A, {} toward B; STUN: {mapping}",
        t0.elapsed().as_secs_f64(),
        2 * PER_SERVER - failed.len(),
        2 * PER_SERVER,
        failed.len(),
        seen.len(),
        a.len(),
        b.len()
    );
    assert!(
        failed.is_empty(),
        "every connection must be established, {} failed: {failed:?}\n{counters}",
        failed.len()
    );
    assert_eq!(
        seen.len(),
        2 * PER_SERVER,
        "the servers saw every connection"
    );
    let pool: BTreeSet<u16> = POOL.collect();
    // 64 connections to one server from one public address: 64 distinct ports, so the whole
    // pool toward A and again toward B: every port is shared by two endpoints.
    assert_eq!(a, pool, "toward A: every pool port once");
    assert_eq!(b, pool, "toward B: every pool port once");
    assert!(
        mapping.contains("Endpoint Independent Mapping"),
        "with 128 connections held: {mapping}\n{natdiscovery}\n{counters}"
    );
    assert!(clean, "tollgate run did not stop on SIGTERM:\n{text}");
    assert!(
        counters.contains("drop.out_of_ports 0") || !counters.contains("drop.out_of_ports"),
        "no SYN refused:\n{counters}"
    );
}
