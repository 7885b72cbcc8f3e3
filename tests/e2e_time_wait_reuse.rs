//! Issue 21, recovery after close, with real TCP connections through the lab's namespaces:
//! a 64-port SNAT pool, 64 connections from node1 to one server (203.0.113.10:9100) that all
//! close normally (FIN from the client, then from the server), then the time until 64 of 64
//! new connections to the same server are established:
//!
//! ```text
//!  node1 198.18.0.11 ── sw ── [app: kernel masquerade | tollgate run] ── inet 203.0.113.10:9100
//!                             SNAT to 203.0.113.1:20000-20063
//! ```
//! First the kernel (ip_forward + nftables `masquerade to :20000-20063` in `app`), then
//! `tollgate run` (the real binary, one worker, the default `tcp_time_wait = 120` and
//! `reuse_cooldown = 2`): the closed flows sit in TIME_WAIT holding their (public port,
//! server) tuples, and the new SYNs must take them over (`time_wait_reuse`, the default)
//! instead of waiting about two minutes. Then Tollgate with `time_wait_reuse = false` and
//! `tcp_time_wait = 3` (or `TG_E2E_HOLD_TIME_WAIT` seconds, e.g. 120 to measure the old
//! behaviour with the default timeout), which must hold the ports at least that long. The
//! times are printed. Needs root (skips otherwise); only the lab's addresses, in its namespaces (unique
//! prefix, removed on every exit path), every process stopped by its PID.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tollgate_lab::lab::{new_prefix, Lab};

const POOL_MIN: u16 = 20000;
const POOL: usize = 64;
const SERVER: &str = "203.0.113.10";
const SERVER_PORT: u16 = 9100;
/// Seconds the client keeps trying to get 64 of 64 new connections, beyond the hold run's
/// TIME_WAIT.
const DEADLINE_S: u32 = 20;

/// `tcp_time_wait` of the run without takeover: 3 s unless `TG_E2E_HOLD_TIME_WAIT` says.
fn hold_time_wait() -> u32 {
    std::env::var("TG_E2E_HOLD_TIME_WAIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// In `inet`: accepts every connection, prints `conn <ip>:<port>` for each, reads until EOF
/// and then closes it.
const SERVER_PY: &str = r#"
import selectors, socket, sys
sel = selectors.DefaultSelector()
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2])))
ls.listen(1024)
ls.setblocking(False)
sel.register(ls, selectors.EVENT_READ)
print("listening", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is ls:
            c, peer = ls.accept()
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
            print("conn %s:%d" % peer, flush=True)
        else:
            try:
                d = s.recv(4096)
            except OSError:
                d = b""
            if not d:
                sel.unregister(s)
                s.close()
"#;

/// In `node1`: opens N connections (retrying refusals, 3 s connect timeout), sends a byte on
/// each, closes them all normally (FIN, then waits for the server's FIN on each), then from
/// that moment opens N new ones (1 s connect timeout, 50 ms between failed attempts) until
/// all N are established or the deadline passes. Prints one JSON line.
const CLIENT_PY: &str = r#"
import errno, json, socket, sys, time
host, port, n, deadline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])

def fill(timeout, limit):
    socks, fails, attempts, first = [], {}, 0, None
    t0 = time.monotonic()
    while len(socks) < n and time.monotonic() - t0 < limit:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        attempts += 1
        try:
            s.connect((host, port))
        except OSError as e:
            s.close()
            k = "timeout" if e.errno is None else errno.errorcode.get(e.errno, str(e.errno))
            fails[k] = fails.get(k, 0) + 1
            time.sleep(0.05)
            continue
        if first is None:
            first = time.monotonic() - t0
        socks.append(s)
    return socks, time.monotonic() - t0, attempts, fails, first

first, open_s, open_attempts, open_failures, _ = fill(3.0, 30.0)
out = {"opened": len(first), "open_s": open_s, "open_attempts": open_attempts,
       "open_failures": open_failures}
if len(first) == n:
    for s in first:
        s.sendall(b"x")
    c0 = time.monotonic()
    for s in first:
        s.shutdown(socket.SHUT_WR)
    for s in first:
        s.settimeout(5.0)
        while s.recv(64):
            pass
        s.close()
    out["close_s"] = time.monotonic() - c0
    second, rec_s, attempts, failures, first_s = fill(1.0, deadline)
    out.update({"recovered": len(second), "recovery_s": rec_s, "first_s": first_s,
                "attempts": attempts, "failures": failures})
    for s in second:
        s.close()
print(json.dumps(out), flush=True)
"#;

/// The appliance's configuration; `extra` goes into `[snat]`, `timeouts` into
/// `[conntrack.timeouts]`.
fn config(extra: &str, timeouts: &str) -> String {
    format!(
        r#"
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
ports = "{lo}-{hi}"
icmp_on_exhaustion = true
{extra}

[conntrack.timeouts]
{timeouts}

[[group]]
name = "recovery"
priority = 100

  [[group.collection]]
  name = "egress"
  priority = 100
  kind = "network"
  action = "allow"

    [[group.collection.rule]]
    name = "server"
    sources = ["198.18.0.0/15"]
    destinations = ["{SERVER}"]
    protocols = ["tcp"]
    destination_ports = ["{SERVER_PORT}"]
"#,
        lo = POOL_MIN,
        hi = POOL_MIN + POOL as u16 - 1,
    )
}

/// One run: what the client and the server saw.
#[derive(Debug)]
struct Outcome {
    through: String,
    client: Value,
    /// Source ports the server saw, first round then second round, in accept order.
    ports: Vec<u16>,
    /// `/metrics` of the appliance (empty for the kernel).
    metrics: String,
}

impl Outcome {
    fn f(&self, k: &str) -> f64 {
        self.client[k].as_f64().unwrap_or(f64::NAN)
    }
    fn n(&self, k: &str) -> usize {
        self.client[k].as_u64().unwrap_or(0) as usize
    }
    fn metric(&self, name: &str) -> Option<u64> {
        self.metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    }
    fn summary(&self) -> String {
        format!(
            "{}: {} of {POOL} opened, closed in {:.2} s; after closing all, the first new connection in {:.2} s, {} of {POOL} in {:.2} s ({} attempts, failures {})",
            self.through,
            self.n("opened"),
            self.f("close_s"),
            self.f("first_s"),
            self.n("recovered"),
            self.f("recovery_s"),
            self.n("attempts"),
            self.client["failures"]
        )
    }
}

fn setup() -> Lab {
    let mut lab = Lab::up(&new_prefix()).expect("lab up");
    let dir = lab.dir.clone();
    std::fs::write(dir.join("server.py"), SERVER_PY).expect("server script");
    std::fs::write(dir.join("client.py"), CLIENT_PY).expect("client script");
    let log = dir.join("server.log");
    lab.spawn(
        "server",
        "inet",
        &[
            "python3",
            "-u",
            &dir.join("server.py").to_string_lossy(),
            SERVER,
            &SERVER_PORT.to_string(),
        ],
        &log,
    )
    .expect("spawn server");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening")) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the server did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.warm_neighbours();
    lab
}

/// Runs the client in node1 (giving up on new connections after `deadline` seconds); the
/// server's accepted source ports during the run.
fn probe(lab: &Lab, through: &str, deadline: u32) -> Outcome {
    let log = lab.dir.join("server.log");
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    let client = lab.dir.join("client.py");
    let (_, out) = sh(
        lab,
        "node1",
        &format!(
            "timeout {} python3 {} {SERVER} {SERVER_PORT} {POOL} {deadline}",
            deadline + 60,
            client.display()
        ),
    );
    let client: Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("{through}: no client report: {out}"));
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let ports = text[before..]
        .lines()
        .filter_map(|l| l.strip_prefix("conn ")?.rsplit(':').next()?.parse().ok())
        .collect();
    Outcome {
        through: through.to_string(),
        client,
        ports,
        metrics: String::new(),
    }
}

/// The kernel in `app`: forwarding on, masquerade to the same 64 ports; undone after, also
/// when the probe fails.
fn kernel(lab: &Lab) -> Outcome {
    let (ok, why) = sh(
        lab,
        "app",
        &format!(
            "sysctl -qw net.ipv4.ip_forward=1 && nft -f - <<'EOF'
table ip tgtwreuse {{
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"tg-out\" meta l4proto tcp masquerade to :{}-{}
  }}
}}
EOF",
            POOL_MIN,
            POOL_MIN + POOL as u16 - 1
        ),
    );
    assert!(ok, "kernel setup: {why}");
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        probe(lab, "kernel (ip_forward + nftables masquerade)", DEADLINE_S)
    }));
    let (ok, why) = sh(
        lab,
        "app",
        "nft delete table ip tgtwreuse; sysctl -qw net.ipv4.ip_forward=0",
    );
    let out = out.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(ok, "kernel teardown: {why}");
    out
}

fn tollgate(lab: &mut Lab, through: &str, extra: &str, timeouts: &str, deadline: u32) -> Outcome {
    let path = lab.dir.join("recovery.toml");
    std::fs::write(&path, config(extra, timeouts)).expect("config");
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let (_, log) = start_appliance(
        lab,
        &[
            exe,
            "run",
            "--config",
            &path.to_string_lossy(),
            "--workers",
            "1",
        ],
    );
    let mut out = probe(lab, through, deadline);
    let (_, metrics) = sh(lab, "app", "curl -s -m 3 http://127.0.0.1:9090/metrics");
    out.metrics = metrics;
    let clean = lab.stop("appliance", Duration::from_secs(5));
    assert!(
        clean,
        "tollgate run did not stop on SIGTERM:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    out
}

fn in_pool(p: u16) -> bool {
    (POOL_MIN..POOL_MIN + POOL as u16).contains(&p)
}

#[test]
fn after_64_connections_close_64_new_ones_get_through_at_once_as_through_the_kernel() {
    if !root_or_skip(
        "after_64_connections_close_64_new_ones_get_through_at_once_as_through_the_kernel",
    ) {
        return;
    }
    let mut lab = setup();
    let k = kernel(&lab);
    eprintln!("{}", k.summary());
    assert_eq!(
        k.n("opened"),
        POOL,
        "the kernel baseline could not open {POOL} connections: the test's plumbing is broken, not the appliance: {k:?}"
    );

    let t = tollgate(
        &mut lab,
        "tollgate (time_wait_reuse, the default)",
        "",
        "",
        DEADLINE_S,
    );
    eprintln!("{}", t.summary());
    let taken_over = t.metric("tollgate_snat_time_wait_reused_total ");
    let refused = t.metric("tollgate_drops_total{reason=\"out_of_ports\"} ");
    eprintln!("  snat_time_wait_reused {taken_over:?}, out_of_ports {refused:?}");

    let hold = hold_time_wait();
    let h = tollgate(
        &mut lab,
        &format!("tollgate (time_wait_reuse = false, tcp_time_wait = {hold})"),
        "time_wait_reuse = false",
        &format!("tcp_time_wait = {hold}"),
        hold + DEADLINE_S,
    );
    eprintln!("{}", h.summary());
    eprintln!(
        "--- time to 64/64 new connections after closing 64: kernel {:.2} s, tollgate {:.2} s (without takeover, TIME_WAIT {hold} s: {:.2} s)",
        k.f("recovery_s"),
        t.f("recovery_s"),
        h.f("recovery_s")
    );

    // Tollgate: all 64 at once, every one on a port taken over from a TIME_WAIT flow, the
    // same 64 pool ports as the first round, no refusal.
    assert_eq!(t.n("opened"), POOL, "{t:?}");
    assert_eq!(t.n("recovered"), POOL, "{}", t.summary());
    assert!(t.f("recovery_s") < 3.0, "{}", t.summary());
    assert_eq!(taken_over, Some(POOL as u64), "{}", t.metrics);
    assert_eq!(refused, Some(0), "{}", t.metrics);
    assert_eq!(t.ports.len(), 2 * POOL, "{:?}", t.ports);
    assert!(t.ports.iter().all(|&p| in_pool(p)), "{:?}", t.ports);
    let mut first: Vec<u16> = t.ports[..POOL].to_vec();
    let mut second: Vec<u16> = t.ports[POOL..].to_vec();
    first.sort_unstable();
    second.sort_unstable();
    first.dedup();
    assert_eq!(first.len(), POOL, "every pool port in the first round");
    assert_eq!(first, second, "the same ports again");

    // Without takeover the closed flows hold their ports through TIME_WAIT.
    assert_eq!(h.n("opened"), POOL, "{h:?}");
    assert_eq!(h.n("recovered"), POOL, "{}", h.summary());
    assert!(h.f("recovery_s") >= f64::from(hold), "{}", h.summary());
    assert_eq!(
        h.metric("tollgate_snat_time_wait_reused_total "),
        Some(0),
        "{}",
        h.metrics
    );
}
