//! Issue 18, defect 5: the appliance's own addresses answer nothing they were not told to.
//! `tollgate run` in the lab, scanned the way a new user would: TCP connects to ports 1-1023
//! and the management port, UDP datagrams to ports 1-1023, pings, from the internet side
//! (203.0.113.254 and 203.0.113.10 -> 203.0.113.1) and the inside (198.18.0.11 -> 198.18.0.1).
//!
//! First with `[host] policy = "open"`, which must show the scanner can see answers (RSTs,
//! port unreachables, echo replies: the kernel's), then with the default closed policy, which
//! must give the scanner nothing at all, while what the config names still works: the
//! management port from `management_sources` (and only from there), the host's own outgoing
//! connections, and forwarded traffic. The drops are counted (`host_closed`, shown by
//! `tollgate stats`). Needs root (skips otherwise); only the lab's addresses, in its
//! namespaces (removed on every exit path), every process stopped by its PID.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tollgate_lab::lab::Lab;

/// Scans `dst` from `src`: TCP connects to `ports` (open / refused / silent after 3 s), UDP
/// datagrams to the same ports (ICMP port unreachable or not, after 2 s), and one ping.
const SCAN_PY: &str = r#"
import errno, json, select, socket, subprocess, sys, time
src, dst, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3].split(",")]
out = {"tcp_open": [], "tcp_refused": 0, "tcp_silent": 0, "udp_unreachable": 0}
socks = {}
poll = select.poll()
for p in ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.setblocking(False)
    s.connect_ex((dst, p))
    socks[s.fileno()] = (s, p)
    poll.register(s, select.POLLOUT)
deadline = time.time() + 3
pending = set(socks)
while pending and time.time() < deadline:
    for fd, _ in poll.poll(max(0, int((deadline - time.time()) * 1000))):
        if fd not in pending:
            continue
        pending.discard(fd)
        poll.unregister(fd)
        s, p = socks[fd]
        e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if e == 0:
            out["tcp_open"].append(p)
        elif e == errno.ECONNREFUSED:
            out["tcp_refused"] += 1
        else:
            out["tcp_silent"] += 1
out["tcp_silent"] += len(pending)
for s, _ in socks.values():
    s.close()
us = []
for p in ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.connect((dst, p))
    s.setblocking(False)
    try:
        s.send(b"scan")
    except OSError:
        pass
    us.append(s)
    time.sleep(0.002)  # the kernel rate-limits ICMP errors: give it a chance to send them
time.sleep(2)
for s in us:
    try:
        s.recv(100)
    except ConnectionRefusedError:
        out["udp_unreachable"] += 1
    except OSError:
        pass
    s.close()
out["ping"] = subprocess.run(["ping", "-c", "2", "-W", "1", "-I", src, dst],
                             stdout=subprocess.DEVNULL).returncode == 0
print(json.dumps(out))
"#;

fn config(host: &str) -> String {
    format!(
        r#"
[appliance]
inside_prefixes = ["198.18.0.0/15"]
icmp_source = "198.18.0.1"
management = "0.0.0.0:9090"

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
ports = "20000-65535"

[host]
{host}

[[group]]
name = "lab"
priority = 100
  [[group.collection]]
  name = "egress"
  priority = 100
  kind = "network"
  action = "allow"
    [[group.collection.rule]]
    name = "web"
    sources = ["198.18.0.0/15"]
    destinations = ["203.0.113.10"]
    protocols = ["tcp"]
    destination_ports = ["80"]
"#
    )
}

#[derive(Debug)]
struct Scan {
    tcp_open: Vec<u64>,
    tcp_refused: u64,
    udp_unreachable: u64,
    ping: bool,
}

fn scan(lab: &Lab, ns: &str, src: &str, dst: &str, ports: &str) -> Scan {
    let script = lab.dir.join("scan.py");
    std::fs::write(&script, SCAN_PY).expect("scan script");
    let (ok, out) = sh(
        lab,
        ns,
        &format!("python3 {} {src} {dst} {ports}", script.display()),
    );
    assert!(ok, "scan {src} -> {dst} failed: {out}");
    let v: Value = serde_json::from_str(out.lines().last().unwrap_or("")).expect("scan json");
    Scan {
        tcp_open: v["tcp_open"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_u64)
            .collect(),
        tcp_refused: v["tcp_refused"].as_u64().unwrap(),
        udp_unreachable: v["udp_unreachable"].as_u64().unwrap(),
        ping: v["ping"].as_bool().unwrap(),
    }
}

/// Ports 1-1023 and the management port.
fn ports() -> String {
    let mut v: Vec<String> = (1..=1023).map(|p| p.to_string()).collect();
    v.push("9090".into());
    v.join(",")
}

type Run = (Scan, Scan, Scan, Vec<(String, bool)>, Option<u64>);

fn run(lab: &mut Lab, tag: &str, host: &str) -> Run {
    let path = lab.dir.join(format!("{tag}.toml"));
    std::fs::write(&path, config(host)).expect("config");
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let (_, log) = start_appliance(lab, &[exe, "run", "--config", &path.to_string_lossy()]);
    let ports = ports();
    let outside = scan(lab, "inet", "203.0.113.254", "203.0.113.1", &ports);
    let allowed = scan(lab, "inet", "203.0.113.10", "203.0.113.1", "9090");
    let inside = scan(lab, "node1", "198.18.0.11", "198.18.0.1", &ports);
    let mut checks = Vec::new();
    let (ok, _) = sh(
        lab,
        "inet",
        "curl -s -m 3 --interface 203.0.113.10 http://203.0.113.1:9090/healthz",
    );
    checks.push(("healthz from a management source".to_string(), ok));
    // from a port below the SNAT range (20000-65535), as the VM image's sysctl sets them:
    // answers to SNAT ports are the dataplane's
    let (ok, _) = sh(
        lab,
        "app",
        "curl -s -m 3 -o /dev/null --local-port 15000-15999 http://203.0.113.10/",
    );
    checks.push(("the host's own connection out".to_string(), ok));
    let (ok, _) = sh(
        lab,
        "node1",
        "curl -s -m 3 -o /dev/null http://203.0.113.10/",
    );
    checks.push(("forwarded traffic".to_string(), ok));
    let (ok, stats) = sh(lab, "app", &format!("{exe} stats --json"));
    let dropped = serde_json::from_str::<Value>(stats.trim())
        .ok()
        .and_then(|v| v["host_closed_drops"].as_u64());
    checks.push((format!("tollgate stats --json: {stats}"), ok));
    let clean = lab.stop("appliance", Duration::from_secs(5));
    assert!(
        clean,
        "tollgate run did not stop on SIGTERM:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    eprintln!("{tag}: outside {outside:?}\n{tag}: allowed source {allowed:?}\n{tag}: inside {inside:?}\n{tag}: {checks:?}");
    (outside, allowed, inside, checks, dropped)
}

#[test]
fn a_scan_of_the_appliance_gets_no_answer_but_what_the_config_names() {
    if !root_or_skip("a_scan_of_the_appliance_gets_no_answer_but_what_the_config_names") {
        return;
    }
    let mut lab = lab();
    // The scanner sees the kernel's answers when the host is left open.
    let (outside, _, inside, _, _) = run(
        &mut lab,
        "open",
        "policy = \"open\"\nmanagement_sources = [\"203.0.113.10\"]",
    );
    assert!(
        outside.tcp_refused >= 1000,
        "open: the kernel resets closed ports: {outside:?}"
    );
    assert!(
        outside.udp_unreachable > 0,
        "open: port unreachables: {outside:?}"
    );
    assert!(
        outside.ping && inside.ping,
        "open: the kernel answers pings"
    );
    assert!(inside.tcp_refused >= 1000, "open, inside: {inside:?}");

    // Closed (the default), management from 203.0.113.10 only.
    let (outside, allowed, inside, checks, dropped) = run(
        &mut lab,
        "closed",
        "management_sources = [\"203.0.113.10\"]",
    );
    for s in [&outside, &inside] {
        assert!(s.tcp_open.is_empty(), "closed: nothing open: {s:?}");
        assert_eq!(s.tcp_refused, 0, "closed: no RST: {s:?}");
        assert_eq!(s.udp_unreachable, 0, "closed: no ICMP error: {s:?}");
        assert!(!s.ping, "closed: no echo reply: {s:?}");
    }
    assert_eq!(
        allowed.tcp_open,
        vec![9090],
        "management source: {allowed:?}"
    );
    for (what, ok) in &checks {
        assert!(ok, "closed: {what}");
    }
    // ~1,023 SYNs (plus retransmissions), 1,023 datagrams and 2 pings from each side
    assert!(
        dropped.is_some_and(|n| n >= 4 * 1023),
        "the closed policy's drops are counted: {dropped:?}"
    );
}
