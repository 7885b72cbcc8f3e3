//! Operating the real daemon in the lab: the admin socket and its CLI (`tollgate flows`, `stats`,
//! `snat`, `explain` against the live configuration, `reload`), the extended metrics (per
//! interface, per rule, per public address, busiest destinations), the asymmetric-route hint,
//! systemd readiness and watchdog, and the capabilities left after start. Needs root.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tollgate::io::IoStats;

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("run tollgate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> Value {
    let (ok, out, err) = cli(args);
    assert!(ok, "tollgate {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

/// (thread name, effective capability mask) of every thread of `pid`.
fn thread_caps(pid: u32) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .flatten()
    {
        let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let name = st
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("")
            .trim()
            .to_string();
        if let Some(m) = tollgate::io::caps::effective_mask(&st) {
            v.push((name, m));
        }
    }
    v
}

/// A TCP SYN-ACK from node1 to the internet server with no flow behind it: what an appliance
/// sees when the connection came in another way (asymmetric routing).
const SYNACK_PY: &str = r#"
import socket, struct
src, dst = "198.18.0.11", "203.0.113.10"
sport, dport = 40123, 80
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
hdr = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, 5 << 4, 0x12, 65535, 0, 0)
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
hdr = hdr[:16] + struct.pack("!H", csum(pseudo + hdr)) + hdr[18:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
for _ in range(3):
    s.sendto(hdr, (dst, 0))
"#;

#[test]
fn admin_socket_metrics_hint_notify_and_capabilities() {
    if !root_or_skip("admin_socket_metrics_hint_notify_and_capabilities") {
        return;
    }
    let mut lab = lab();
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab.toml");
    let sock = lab.dir.join("admin.sock");
    let sock_s = sock.to_string_lossy().to_string();
    // systemd's side of sd_notify: a datagram socket the daemon reports to.
    let notify_path = lab.dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let notify_env = format!("NOTIFY_SOCKET={}", notify_path.display());
    let (pid, log) = start_appliance(
        &mut lab,
        &[
            "env",
            &notify_env,
            "WATCHDOG_USEC=400000",
            exe,
            "run",
            "--config",
            config,
            "--workers",
            "2",
            "--admin-socket",
            &sock_s,
        ],
    );
    // systemd reads every message: so does this thread, until STOPPING=1 (or 60 s).
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let got = got.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(60);
            let mut buf = [0u8; 512];
            while Instant::now() < until {
                if let Ok(n) = notify.recv(&mut buf) {
                    let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let last = m == "STOPPING=1";
                    got.lock().unwrap().push(m);
                    if last {
                        break;
                    }
                }
            }
        })
    };
    // READY=1 once the workers run, then WATCHDOG=1 at half the 400 ms interval.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && !got.lock().unwrap().iter().any(|m| m == "WATCHDOG=1") {
        std::thread::sleep(Duration::from_millis(50));
    }
    {
        let seen = got.lock().unwrap();
        assert!(
            seen.first()
                .is_some_and(|m| m.starts_with("READY=1\nSTATUS=tollgate: running")),
            "{seen:?}"
        );
        assert!(seen.iter().any(|m| m == "WATCHDOG=1"), "{seen:?}");
    }

    // A long-lived TCP connection from node1 (an HTTP request left half-sent), and one UDP flow.
    let hold = "python3 -c 'import socket,time; s=socket.create_connection((\"203.0.113.10\",80)); s.send(b\"GET / HTTP/1.1\\r\\n\"); time.sleep(20)' >/dev/null 2>&1 & echo started";
    assert!(sh(&lab, "node1", hold).0);
    let (udp_ok, udp) = sh(&lab, "node2", "echo hi | nc -u -w 1 203.0.113.10 7");
    assert!(udp_ok && udp.contains("peer=203.0.113.1:"), "udp: {udp}");
    let (denied_ok, _) = sh(&lab, "node1", "curl -s -m 2 http://198.51.100.66/");
    assert!(!denied_ok, "198.51.100.66 must be denied");
    // Wait until the TCP connection is established through the appliance.
    let mut flows = Value::Null;
    for _ in 0..50 {
        flows = json(&[
            "flows",
            "--socket",
            &sock_s,
            "--json",
            "--src",
            "198.18.0.11",
            "--state",
            "established",
        ]);
        if flows["matched"].as_u64() == Some(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(flows["matched"], 1, "{flows}");
    assert_eq!(flows["workers_not_answering"], 0, "{flows}");
    let f = &flows["flows"][0];
    assert_eq!(f["protocol"], "tcp");
    assert_eq!(f["destination"], "203.0.113.10:80");
    assert!(
        f["translated_source"]
            .as_str()
            .is_some_and(|s| s.starts_with("203.0.113.1:")),
        "{f}"
    );
    assert!(
        f["rule"].as_str().is_some_and(|r| r.starts_with("lab/")),
        "{f}"
    );
    assert!(f["packets_out"].as_u64().unwrap_or(0) >= 2, "{f}");
    // Filters: node2's UDP flow is not node1's; by protocol it is found.
    let udp_flows = json(&["flows", "--socket", &sock_s, "--json", "--proto", "udp"]);
    assert!(udp_flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("198.18.0.12:"))
            && f["state"] == "udp"));
    let none = json(&[
        "flows",
        "--socket",
        &sock_s,
        "--json",
        "--dst",
        "192.0.2.0/24",
    ]);
    assert_eq!(none["matched"], 0, "{none}");
    // The table form names the flow too.
    let (ok, table, _) = cli(&["flows", "--socket", &sock_s, "--src", "198.18.0.11"]);
    assert!(
        ok && table.contains("203.0.113.10:80") && table.contains("established"),
        "{table}"
    );
    let (bad, _, err) = cli(&["flows", "--socket", &sock_s, "--state", "bogus"]);
    assert!(
        !bad && err.contains("state \"bogus\" is not one of"),
        "{err}"
    );

    let stats = json(&["stats", "--socket", &sock_s, "--json"]);
    assert!(stats["flows_created"].as_u64().unwrap() >= 2, "{stats}");
    assert!(
        stats["drops"]["rule_deny"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert_eq!(stats["workers"].as_array().unwrap().len(), 2);
    // The I/O counters, live and per interface, every one of them.
    let io = stats["io"].as_array().expect("stats has an io list");
    let io_ifaces: Vec<&str> = io.iter().filter_map(|x| x["interface"].as_str()).collect();
    assert_eq!(io_ifaces, ["tg-in", "tg-out"], "{stats}");
    for x in io {
        for (k, _) in IoStats::FIELDS {
            assert!(x[k].is_u64(), "{k} missing: {stats}");
        }
    }
    let (ok, table, _) = cli(&["stats", "--socket", &sock_s]);
    assert!(ok && table.contains("io (per interface)"), "{table}");
    assert!(
        table.lines().any(
            |l| l.trim_start().starts_with("rx_oversize ") && l.split_whitespace().count() == 3
        ),
        "{table}"
    );

    let snat = json(&["snat", "--socket", &sock_s, "--json"]);
    let tcp = snat["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["address"] == "203.0.113.1" && a["protocol"] == "tcp")
        .cloned()
        .expect("203.0.113.1 tcp");
    assert!(tcp["ports_used"].as_u64().unwrap() >= 1, "{snat}");
    assert_eq!(tcp["ports"], 65535 - 1024 + 1, "{snat}");
    assert!(snat["top_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["host"] == "198.18.0.11"));
    assert!(snat["top_destinations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["destination"] == "203.0.113.10:80" && d["protocol"] == "tcp"));

    // Why was it dropped? Against the running configuration.
    let (ok, why, err) = cli(&[
        "explain",
        "--socket",
        &sock_s,
        "--src",
        "198.18.0.11",
        "--dst",
        "198.51.100.66:80",
        "--proto",
        "tcp",
    ]);
    assert!(ok, "{err}");
    assert!(why.contains("decision: deny"), "{why}");

    // Asymmetric routing: a SYN-ACK from inside with no flow is counted and logged with a hint.
    let script = lab.dir.join("synack.py");
    std::fs::write(&script, SYNACK_PY).unwrap();
    assert!(sh(&lab, "node1", &format!("python3 {}", script.display())).0);

    // Metrics: per interface, per rule, per public address, busiest destinations.
    std::thread::sleep(Duration::from_millis(300));
    let (_, metrics) = sh(&lab, "app", "curl -s -m 5 http://127.0.0.1:9090/metrics");
    let value = |prefix: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{prefix} missing from /metrics:\n{metrics}")) as u64
    };
    assert!(value("tollgate_interface_packets_total{interface=\"tg-in\",direction=\"rx\"} ") >= 4);
    assert!(value("tollgate_interface_packets_total{interface=\"tg-out\",direction=\"tx\"} ") >= 4);
    assert!(
        value("tollgate_snat_destination_flows{destination=\"203.0.113.10:80\",protocol=\"tcp\"} ")
            >= 1
    );
    assert!(value("tollgate_drops_total{reason=\"tcp_non_syn\"} ") >= 3);
    assert!(value("tollgate_flows_by_state{protocol=\"tcp\",state=\"established\"} ") >= 1);
    for (k, _) in IoStats::FIELDS {
        assert!(metrics.contains(&format!("# TYPE tollgate_io_{k}_total counter\n")));
        for i in ["tg-in", "tg-out"] {
            value(&format!("tollgate_io_{k}_total{{interface=\"{i}\"}} "));
        }
    }
    assert!(value("tollgate_flows_by_state{protocol=\"udp\",state=\"active\"} ") >= 1);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tollgate_rule_hits_total{group=\"lab\"")
                && l.contains("kind=\"network\"")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "tollgate_snat_ports{address=\"203.0.113.1\",protocol=\"tcp\",worker=\"0\"} "
        )),
        "{metrics}"
    );
    assert!(metrics.contains(
        "tollgate_snat_address_utilisation_ratio{address=\"203.0.113.1\",protocol=\"tcp\"} 0.0"
    ));
    let hits_before: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("tollgate_rule_hits_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(hits_before >= 3, "allow tcp, allow udp, deny: {metrics}");

    // Capabilities after start: workers and control threads none, main only CAP_NET_ADMIN,
    // and so the thread that reads the closed host policy's nftables counter.
    let caps = thread_caps(pid);
    assert!(caps.len() >= 6, "{caps:?}");
    for (name, mask) in &caps {
        if name == "tollgate" || name == "tg-host-counter" {
            assert_eq!(
                *mask,
                1 << 12,
                "main thread keeps CAP_NET_ADMIN only: {caps:?}"
            );
        } else {
            assert_eq!(*mask, 0, "thread {name} keeps capabilities: {caps:?}");
        }
    }
    assert!(caps.iter().any(|(n, _)| n == "tg-worker-1"), "{caps:?}");

    // Reload through the socket: applied; the rule hit totals survive the new policy.
    let (ok, msg, err) = cli(&["reload", "--socket", &sock_s]);
    assert!(ok, "{msg} {err}");
    assert!(msg.contains("applied (policy generation 1)"), "{msg}");
    std::thread::sleep(Duration::from_millis(300));
    let (_, metrics2) = sh(&lab, "app", "curl -s -m 5 http://127.0.0.1:9090/metrics");
    let hits_after: u64 = metrics2
        .lines()
        .filter(|l| l.starts_with("tollgate_rule_hits_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(hits_after >= hits_before, "{hits_before} -> {hits_after}");

    let exited_cleanly = lab.stop("appliance", Duration::from_secs(5));
    assert!(
        exited_cleanly,
        "SIGTERM must stop tollgate run: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    reader.join().unwrap();
    let seen = got.lock().unwrap();
    assert_eq!(
        seen.last().map(String::as_str),
        Some("STOPPING=1"),
        "{seen:?}"
    );
    assert!(!sock.exists(), "the admin socket file is removed at exit");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // The exit counters keep every I/O counter, one line each.
    for (k, _) in IoStats::FIELDS {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{k} "))),
            "{k} missing from the exit counters:\n{text}"
        );
    }
    let hint = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["reason"] == "tcp_non_syn")
        .unwrap_or_else(|| panic!("no tcp_non_syn decision log:\n{text}"));
    assert_eq!(hint["source"], "198.18.0.11:40123");
    assert!(hint["hint"]
        .as_str()
        .is_some_and(|h| h.contains("Asymmetric routing")));
    // The host preparation was undone with only CAP_NET_ADMIN left to the main thread.
    let (_, tables) = sh(&lab, "app", "nft list tables");
    assert!(
        !tables.contains("tollgate"),
        "nft table left behind: {tables}"
    );
    let (_, fwd) = sh(&lab, "app", "sysctl -n net.ipv4.ip_forward");
    assert_eq!(fwd.trim(), "0");
}
