//! `tollgate run` as a process: the TOML loader, the real ruleset, SIGTERM, counters at exit,
//! and nothing left behind. Needs root (skips otherwise).

mod common;

use std::time::Duration;

use common::*;

/// `tollgate run` on tests/lab.toml with `workers` workers: (pid, log path).
fn run_lab_toml(lab: &mut tollgate_lab::lab::Lab, workers: &str) -> (u32, std::path::PathBuf) {
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab.toml");
    start_appliance(lab, &[exe, "run", "--config", config, "--workers", workers])
}

#[test]
fn tollgate_run_serves_the_lab_config_and_stops_cleanly_on_sigterm() {
    if !root_or_skip("tollgate_run_serves_the_lab_config_and_stops_cleanly_on_sigterm") {
        return;
    }
    let mut lab = lab();
    let (_, log) = run_lab_toml(&mut lab, "1");
    let (ok, http) = sh(&lab, "node1", "curl -s -m 5 http://203.0.113.10/");
    let (denied, _) = sh(&lab, "node1", "curl -s -m 3 http://198.51.100.66/");
    let (dnat_ok, dnat) = sh(&lab, "inet", "curl -s -m 5 http://203.0.113.1:8080/");
    // The management endpoint, on loopback inside the appliance's namespace.
    let (_, ready) = sh(&lab, "app", "curl -s -m 3 http://127.0.0.1:9090/readyz");
    let (health_ok, health) = sh(&lab, "app", "curl -sf -m 3 http://127.0.0.1:9090/healthz");
    let (_, metrics) = sh(&lab, "app", "curl -s -m 3 http://127.0.0.1:9090/metrics");
    // The admin socket's default path names the namespace: `tollgate stats` run in it finds it.
    let sock = format!("/run/tollgate/admin-{}.sock", lab.ns("app"));
    let (stats_ok, stats) = sh(
        &lab,
        "app",
        &format!("{} stats --json", env!("CARGO_BIN_EXE_tollgate")),
    );
    let sock_existed = std::path::Path::new(&sock).exists();
    let exited_cleanly = lab.stop("appliance", Duration::from_secs(5));
    assert!(
        stats_ok && stats.contains("\"flows_created\""),
        "stats: {stats}"
    );
    assert!(sock_existed, "{sock} while running");
    assert!(
        !std::path::Path::new(&sock).exists(),
        "{sock} removed at exit"
    );
    assert_eq!(ready.trim(), "ready");
    assert!(health_ok && health.trim() == "healthy", "healthz: {health}");
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    // node1's HTTP flow and the DNAT flow were admitted; the denied one was counted.
    assert!(metric("tollgate_flows_created_total ") >= 2, "{metrics}");
    assert!(
        metric("tollgate_drops_total{reason=\"rule_deny\"} ") >= 1,
        "{metrics}"
    );
    assert!(metrics.contains("tollgate_snat_utilisation_ratio{worker=\"0\"} 0."));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("{text}");
    // Decision logs: JSON lines on stdout, one per new-flow decision, naming the rule.
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
        })
        .collect();
    let find = |action: &str, dst: &str| {
        events
            .iter()
            .find(|e| {
                e["action"] == action
                    && e["destination"]
                        .as_str()
                        .is_some_and(|d| d.starts_with(dst))
            })
            .unwrap_or_else(|| panic!("no {action} event to {dst} in {events:?}"))
    };
    let allow = find("allow", "203.0.113.10:80");
    assert!(allow["source"]
        .as_str()
        .unwrap()
        .starts_with("198.18.0.11:"));
    assert!(allow["snat"].as_str().unwrap().starts_with("203.0.113.1:"));
    assert_eq!(allow["protocol"], "TCP");
    assert!(
        allow["rule_collection_group"].is_string() && allow["rule"].is_string(),
        "{allow}"
    );
    let deny = find("deny", "198.51.100.66:80");
    assert_eq!(deny["reason"], "rule_deny");
    assert!(deny["rule"].is_string(), "{deny}");
    let dnat_ev = find("dnat", "203.0.113.1:8080");
    assert_eq!(dnat_ev["dnat"], "198.18.0.20:80");
    for e in &events {
        assert!(
            e["time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
            "{e}"
        );
    }
    let (table_left, _) = sh(&lab, "app", "nft list table inet tollgate");
    assert!(ok && http.contains("peer=203.0.113.1:"), "http: {http}");
    assert!(!denied, "198.51.100.66 is denied by the lab config");
    assert!(
        dnat_ok && dnat.contains("peer=203.0.113.10:"),
        "dnat: {dnat}"
    );
    assert!(exited_cleanly, "SIGTERM stops tollgate run");
    assert!(
        text.lines()
            .any(|l| l.starts_with("tollgate: running interfaces=tg-in(inside),tg-out(outside)")),
        "{text}"
    );
    assert!(text.contains("drop.rule_deny"), "counters at exit:\n{text}");
    assert!(text.contains("stopped cleanly"));
    assert!(!table_left, "the nftables table is removed at exit");
}

/// `/healthz` reports `degraded` once a SNAT pool is more than 95% used (as Azure Firewall
/// does), while the appliance keeps forwarding.
/// tests/lab.toml with `snat.ports` set to `ports`, written into the lab's directory as `name`.
fn lab_config_with_snat_ports(lab: &tollgate_lab::lab::Lab, ports: &str, name: &str) -> String {
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab.toml"))
        .expect("lab config");
    let line = format!("ports = \"{ports}\"");
    let text: String = base
        .lines()
        .map(|l| {
            if l.starts_with("ports =") {
                line.as_str()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains(&line), "the lab config has a ports line");
    let config = lab.dir.join(name);
    std::fs::write(&config, text).expect("write config");
    config.to_string_lossy().into_owned()
}

#[test]
fn health_turns_degraded_when_the_snat_pool_is_nearly_exhausted() {
    if !root_or_skip("health_turns_degraded_when_the_snat_pool_is_nearly_exhausted") {
        return;
    }
    let mut lab = lab();
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let cfg = lab_config_with_snat_ports(&lab, "40000-40003", "small-pool.toml");
    start_appliance(&mut lab, &[exe, "run", "--config", &cfg, "--workers", "1"]);
    // The management endpoint answers ready too before the test reads its health.
    let t0 = std::time::Instant::now();
    while sh(&lab, "app", "curl -s -m 1 http://127.0.0.1:9090/readyz")
        .1
        .trim()
        != "ready"
        && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, before) = sh(&lab, "app", "curl -s -m 3 http://127.0.0.1:9090/healthz");
    for sport in 6001..=6004 {
        sh(
            &lab,
            "node1",
            &format!("echo x | socat -T 1 - UDP4:203.0.113.10:7,sourceport={sport}"),
        );
    }
    // Gauges are published between batches, at least every 100 ms.
    std::thread::sleep(Duration::from_millis(300));
    let (ok, after) = sh(&lab, "app", "curl -s -m 3 http://127.0.0.1:9090/healthz");
    lab.stop("appliance", Duration::from_secs(5));
    assert_eq!(before.trim(), "healthy");
    assert!(
        ok && after.trim() == "degraded",
        "healthz with 4 of 4 ports used: {after}"
    );
}

/// CPU time (user + system, in seconds) `pid` has used so far, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    let hz: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    ticks as f64 / hz
}

/// Busy polling only follows traffic: once it stops, the workers sleep in poll(). Two workers
/// with the default busy-poll window, traffic through both directions, then 2 s without any:
/// the daemon's CPU time over those 2 s stays far below what one polling worker would burn.
/// And return traffic is steered to its SNAT port's worker: no hand-offs.
#[test]
fn workers_sleep_when_idle_after_traffic() {
    if !root_or_skip("workers_sleep_when_idle_after_traffic") {
        return;
    }
    let mut lab = lab();
    let (pid, log) = run_lab_toml(&mut lab, "2");
    let mut served = 0;
    for _ in 0..20 {
        let (ok, http) = sh(&lab, "node1", "curl -s -m 5 http://203.0.113.10/");
        if ok && http.contains("peer=203.0.113.1:") {
            served += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let idle = cpu_seconds(pid) - before;
    eprintln!("tollgate run, 2 workers: {idle:.3} s of CPU in 2 s idle after traffic");
    let exited_cleanly = lab.stop("appliance", Duration::from_secs(5));
    assert_eq!(served, 20, "every request went through the appliance");
    // The steering program sent every SYN-ACK, ACK and FIN of those 20 connections to the
    // worker owning its SNAT port: nothing was handed over between the two workers (with
    // PACKET_FANOUT_HASH about half the connections' return frames were).
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let counter = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from the exit counters:\n{text}"))
    };
    assert!(counter("forwarded ") >= 20 * 6, "{text}");
    assert_eq!(counter("handoff_out "), 0, "{text}");
    // A worker that never slept would use up to 2 s here (at least several hundred ms even
    // on a CPU shared with other work); sleeping workers wake every 100 ms for a few µs.
    assert!(idle < 0.2, "{idle:.3} s of CPU in 2 s without traffic");
    assert!(exited_cleanly, "SIGTERM stops tollgate run");
}

/// A data interface going down and up again is a link event, not the end: the workers read
/// and clear the ring sockets' ENETDOWN (no spinning on it) and traffic flows again once the
/// link is back. An interface removed for good stops the daemon with an error naming it (its
/// supervisor restarts it), and the host tables go with it.
#[test]
fn a_link_flap_is_survived_and_a_removed_interface_stops_the_daemon() {
    if !root_or_skip("a_link_flap_is_survived_and_a_removed_interface_stops_the_daemon") {
        return;
    }
    let mut lab = lab();
    let (pid, log) = run_lab_toml(&mut lab, "2");
    let curl = |lab: &tollgate_lab::lab::Lab| sh(lab, "node1", "curl -s -m 3 http://203.0.113.10/");
    let (before_ok, before) = curl(&lab);
    let (down_ok, why) = sh(&lab, "app", "ip link set tg-in down");
    assert!(down_ok, "{why}");
    std::thread::sleep(Duration::from_millis(300));
    let cpu0 = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(1));
    let while_down = cpu_seconds(pid) - cpu0;
    let (up_ok, why) = sh(&lab, "app", "ip link set tg-in up");
    assert!(up_ok, "{why}");
    // carrier and the neighbour entries come back within a few seconds
    let after = (0..5)
        .map(|_| curl(&lab))
        .find(|(ok, http)| *ok && http.contains("peer=203.0.113.1:"));
    let (del_ok, why) = sh(&lab, "app", "ip link del tg-out");
    assert!(del_ok, "{why}");
    let status = lab.wait_exit("appliance", Duration::from_secs(5));
    let (_, tables) = sh(&lab, "app", "nft list tables");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        before_ok && before.contains("peer=203.0.113.1:"),
        "before the flap: {before}"
    );
    // two workers spinning on an error they never cleared would use up to 2 s here
    assert!(
        while_down < 0.3,
        "{while_down:.3} s of CPU in 1 s with tg-in down"
    );
    // the workers saw the link go down (and read the error, which is why they did not spin)
    assert!(text.contains("interface tg-in: Network is down"), "{text}");
    assert!(
        after.is_some(),
        "no request went through after the link came back:\n{text}"
    );
    let status =
        status.unwrap_or_else(|| panic!("still running 5 s after tg-out was removed:\n{text}"));
    assert!(!status.success(), "exit status {status}");
    assert!(text.contains("interface tg-out was removed"), "{text}");
    assert!(
        !tables.contains("tollgate"),
        "host tables left behind: {tables}"
    );
}

/// A DNAT port outside the SNAT port range is the appliance's too: the kernel must not answer
/// it. Before the host tables covered DNAT ports, the kernel's RST to 203.0.113.1:8080 beat
/// the inside server's SYN-ACK and the connection was refused.
#[test]
fn dnat_on_a_port_outside_the_snat_range_is_not_reset_by_the_kernel() {
    if !root_or_skip("dnat_on_a_port_outside_the_snat_range_is_not_reset_by_the_kernel") {
        return;
    }
    let mut lab = lab();
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let cfg = lab_config_with_snat_ports(&lab, "20000-65535", "snat-above-dnat.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    assert!(
        text.contains("destination_ports = [\"8080\"]"),
        "the lab's DNAT port"
    );
    start_appliance(&mut lab, &[exe, "run", "--config", &cfg, "--workers", "1"]);
    let (_, rules) = sh(&lab, "app", "nft list ruleset");
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(sh(&lab, "inet", "curl -s -m 5 http://203.0.113.1:8080/"));
    }
    let (ok, http) = sh(&lab, "node1", "curl -s -m 5 http://203.0.113.10/");
    assert!(lab.stop("appliance", Duration::from_secs(5)));
    for (dnat_ok, dnat) in &answers {
        assert!(
            *dnat_ok && dnat.contains("peer=203.0.113.10:"),
            "DNAT 203.0.113.1:8080 with SNAT ports 20000-65535: {dnat}\n{rules}"
        );
    }
    assert!(
        ok && http.contains("peer=203.0.113.1:"),
        "SNAT still works: {http}"
    );
}

/// A frame to a next hop the kernel has not resolved yet is held while the kernel resolves it
/// (as the kernel queues a few packets per unresolved neighbour), not dropped: the first SYN
/// after the neighbour entry is gone still connects at once instead of after its 1 s
/// retransmission.
#[test]
fn the_first_syn_to_an_unresolved_next_hop_is_held_not_lost() {
    if !root_or_skip("the_first_syn_to_an_unresolved_next_hop_is_held_not_lost") {
        return;
    }
    let mut lab = lab();
    let (_pid, log) = run_lab_toml(&mut lab, "1");
    let connect = |lab: &tollgate_lab::lab::Lab| {
        sh(
            lab,
            "node1",
            "curl -s -m 5 -o /dev/null -w '%{time_connect}' http://203.0.113.10/",
        )
    };
    let (warm_ok, warm) = connect(&lab);
    // forget the server's MAC; the neighbour thread's next read (every 100 ms) drops it too
    let (flush_ok, why) = sh(&lab, "app", "ip neigh flush dev tg-out");
    assert!(flush_ok, "{why}");
    std::thread::sleep(Duration::from_millis(400));
    let (_, arp) = sh(&lab, "app", "ip neigh show dev tg-out");
    let (first_ok, first) = connect(&lab);
    assert!(lab.stop("appliance", Duration::from_secs(5)));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let counter = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in the exit counters:\n{text}"))
    };
    assert!(warm_ok, "curl before the flush: {warm}");
    assert!(
        !arp.contains("REACHABLE") && !arp.contains("STALE"),
        "the entry is still there: {arp}"
    );
    assert!(first_ok, "curl after the flush: {first}\n{text}");
    let secs: f64 = first.trim().parse().expect("time_connect");
    // a dropped SYN is retransmitted after 1 s; held, it leaves once the ARP reply is in
    assert!(secs < 0.5, "connected after {secs} s:\n{text}");
    assert!(counter("neighbour_queued ") >= 1, "{text}");
    assert_eq!(counter("neighbour_miss "), 0, "{text}");
}
