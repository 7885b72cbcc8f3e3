//! Network rules on destination FQDNs with the real binary: `tollgate run` resolves
//! `api.example` at the lab's DNS server (203.0.113.53, in `inet`) from its SNAT address on
//! random ports of its resolver range (768-1023 by default), with the name in random case,
//! compiles the answer into the rule, and follows the zone when it changes and the TTL runs
//! out. `big.example` is answered truncated over UDP and resolved over TCP, through the
//! appliance like the UDP answers. Needs root.

mod common;

use std::time::{Duration, Instant};

use common::*;

const CONFIG: &str = r#"
[appliance]
inside_prefixes = ["198.18.0.0/15"]
icmp_source = "198.18.0.1"
workers = 2
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

[dns]
servers = ["203.0.113.53"]
min_refresh = 1
max_refresh = 60

[[group]]
name = "lab"
priority = 100

  [[group.collection]]
  name = "egress"
  priority = 200
  kind = "network"
  action = "allow"

    [[group.collection.rule]]
    name = "api-by-name"
    sources = ["198.18.0.0/24"]
    destination_fqdns = ["api.example"]
    protocols = ["tcp"]
    destination_ports = ["80"]

    [[group.collection.rule]]
    name = "big-by-name"
    sources = ["198.18.0.0/24"]
    destination_fqdns = ["big.example"]
    protocols = ["tcp"]
    destination_ports = ["8080"]
"#;

/// A name whose UDP answer is truncated (TC): the resolver must retry over TCP.
const BIG: &str = "big.example 198.51.100.77 60 tc\n";

/// Holds an HTTP request to 203.0.113.10 open for 4 s, then finishes it.
const HALF_REQUEST_PY: &str = r#"
import socket, time
s = socket.create_connection(("203.0.113.10", 80), timeout=5)
s.send(b"GET / HTTP/1.1\r\nHost: lab\r\n")
time.sleep(4)
try:
    s.send(b"\r\n")
    r = s.recv(100)
    print("ANSWERED" if r else "CLOSED")
except ConnectionResetError:
    print("RESET")
except OSError as e:
    print("ERROR", e)
"#;

fn wait_log(path: &std::path::Path, needle: &str, timeout: Duration) -> String {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || t0.elapsed() > timeout {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn curl(lab: &tollgate_lab::lab::Lab, dst: &str) -> (bool, String) {
    sh(lab, "node1", &format!("curl -s -m 3 http://{dst}/"))
}

#[test]
fn network_rule_follows_the_names_resolution() {
    if !root_or_skip("network_rule_follows_the_names_resolution") {
        return;
    }
    let mut lab = lab();
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let zone = lab.dns_zone_path();
    std::fs::write(
        &zone,
        format!("api.example 203.0.113.10 2\nother.example 198.51.100.66 2\n{BIG}"),
    )
    .expect("zone");
    // The DNS server answers in the lab (sanity check of the server itself, from inet).
    let (_, dig) = sh(
        &lab,
        "inet",
        "python3 -c \"import socket;s=socket.socket(2,2);s.settimeout(2);s.sendto(bytes.fromhex('12340100000100000000000003617069076578616d706c650000010001'),('203.0.113.53',53));print(s.recv(512).hex())\"",
    );
    assert!(
        dig.trim().ends_with("cb00710a"),
        "the lab DNS answers api.example: {dig}"
    );

    let config = lab.dir.join("dns.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    let cfg = config.to_string_lossy().into_owned();
    let (_, log) = start_appliance(&mut lab, &[exe, "run", "--config", &cfg, "--workers", "2"]);
    let text = wait_log(
        &log,
        "policy recompiled with the new addresses",
        Duration::from_secs(10),
    );
    assert!(
        text.contains("tollgate: dns: api.example -> 203.0.113.10"),
        "{text}"
    );
    assert!(
        !text.contains("not resolved") && !text.contains("no [dns] servers"),
        "no unresolved warning with [dns] servers: {text}"
    );
    // The truncated answer was completed over TCP, through the appliance.
    assert!(
        text.contains("tollgate: dns: big.example -> 198.51.100.77"),
        "{text}"
    );
    assert!(
        text.contains("tollgate: dns: queries leave from 256 random UDP source ports of 768-1023"),
        "{text}"
    );

    // Resolved: the allowed name's address passes (SNATed), another name's address does not.
    let (ok, body) = curl(&lab, "203.0.113.10");
    assert!(
        ok && body.contains("peer=203.0.113.1:"),
        "203.0.113.10 (api.example) is allowed once resolved: {body}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (ok, body) = curl(&lab, "198.51.100.66");
    assert!(!ok, "198.51.100.66 (other.example) is denied: {body}");
    let (ok, why) = sh(
        &lab,
        "app",
        &format!("{exe} explain --src 198.18.0.11 --dst 203.0.113.10:80 --proto tcp"),
    );
    assert!(ok, "{why}");
    assert!(why.contains("decision: allow"), "{why}");
    assert!(why.contains("api.example -> 203.0.113.10"), "{why}");

    // A connection to 203.0.113.10 is open while api.example gains a second address: the
    // recompiled policy still allows it, so it keeps going.
    let script = lab.dir.join("half.py");
    std::fs::write(&script, HALF_REQUEST_PY).expect("script");
    let half_log = lab.dir.join("half.log");
    lab.spawn(
        "half",
        "node2",
        &["python3", "-u", &script.to_string_lossy()],
        &half_log,
    )
    .expect("half request");
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(
        &zone,
        format!("api.example 203.0.113.10 2\napi.example 198.51.100.66 2\n{BIG}"),
    )
    .expect("zone");
    let both = "tollgate: dns: api.example -> 198.51.100.66, 203.0.113.10";
    let text = wait_log(&log, both, Duration::from_secs(10));
    assert!(text.contains(both), "{text}");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&half_log)
        .unwrap_or_default()
        .contains('\n')
        && t0.elapsed() < Duration::from_secs(8)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let half = std::fs::read_to_string(&half_log).unwrap_or_default();
    assert_eq!(
        half.trim(),
        "ANSWERED",
        "an established flow still allowed survives the recompile"
    );

    // The zone moves api.example; after its TTL the rule follows.
    std::fs::write(&zone, format!("api.example 198.51.100.66 2\n{BIG}")).expect("zone");
    let moved = "tollgate: dns: api.example -> 198.51.100.66 (refresh";
    let text = wait_log(&log, moved, Duration::from_secs(10));
    assert!(text.contains(moved), "{text}");
    std::thread::sleep(Duration::from_millis(300));
    let (ok, body) = curl(&lab, "198.51.100.66");
    assert!(
        ok && body.contains("peer=203.0.113.1:"),
        "the new address is allowed: {body}"
    );
    let (ok, body) = curl(&lab, "203.0.113.10");
    assert!(!ok, "the old address no longer is: {body}");

    // A name that stops resolving keeps its last addresses.
    std::fs::write(&zone, BIG).expect("zone");
    let text = wait_log(&log, "did not resolve (NXDOMAIN)", Duration::from_secs(10));
    assert!(
        text.contains(
            "api.example did not resolve (NXDOMAIN); keeping its last addresses 198.51.100.66"
        ),
        "{text}"
    );
    let (ok, body) = curl(&lab, "198.51.100.66");
    assert!(ok, "the last known address stays allowed: {body}");

    lab.stop("appliance", Duration::from_secs(5));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let dns_log = std::fs::read_to_string(lab.dir.join("dns.log")).unwrap_or_default();
    eprintln!("{text}\n--- dns server:\n{dns_log}");
    // The queries left from the SNAT address on ports of the resolver's range (outside the
    // SNAT range), several of them, with the name in random case; their answers reached the
    // kernel sockets (the recompiles above), the truncated one's over TCP.
    let ours: Vec<(u16, &str, &str, &str)> = dns_log
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("dns peer=203.0.113.1:")?;
            let port = rest.split(' ').next()?.parse().ok()?;
            let field = |k: &str| {
                rest.split(' ')
                    .find_map(|f| f.strip_prefix(k))
                    .unwrap_or("")
            };
            Some((port, field("name="), field("asked="), field("proto=")))
        })
        .collect();
    assert!(ours.len() >= 5, "{dns_log}");
    assert!(
        ours.iter().all(|q| (768..=1023).contains(&q.0)),
        "every query from 768-1023: {dns_log}"
    );
    let udp_ports: std::collections::BTreeSet<u16> =
        ours.iter().filter(|q| q.3 == "udp").map(|q| q.0).collect();
    assert!(udp_ports.len() >= 2, "the source port varies: {dns_log}");
    assert!(
        ours.iter().all(|q| q.2.eq_ignore_ascii_case(q.1)),
        "{dns_log}"
    );
    assert!(
        ours.iter().any(|q| q.2 != q.1),
        "names sent in mixed case (DNS 0x20): {dns_log}"
    );
    assert!(
        ours.iter().any(|q| q.1 == "big.example" && q.3 == "udp")
            && ours.iter().any(|q| q.1 == "big.example" && q.3 == "tcp"),
        "big.example asked over UDP, then TCP: {dns_log}"
    );
}
