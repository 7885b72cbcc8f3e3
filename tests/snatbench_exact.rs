//! The SNAT simulator's accounting, checked against small scenarios computed by hand.
//! Exactness only: nothing here is timed.

use tollgate_lab::snatbench::{run, Report, Scenario, Silent};

/// 1 s relink granularity plus one 2^26 ns tick: the bounded lateness of expiry documented in
/// src/conntrack/table.rs (`RELINK_GRANULARITY`, `TICK`, `deadline`).
const RELINK_S: f64 = 1.0;
const TICK_S: f64 = (1u64 << 26) as f64 / 1e9;

fn scenario(toml: &str) -> Scenario {
    Scenario::from_toml(toml, "test").expect("valid scenario")
}

fn go(toml: &str) -> Report {
    let r = run(&scenario(toml), &mut Silent);
    assert_eq!(r.unexpected_verdicts, 0, "{}", r.summary());
    r
}

/// 150 long-lived connections from 15 hosts, 1000/s evenly spaced, over ports 3000-3099.
fn long_lived(mapping: &str, dests: &[&str]) -> String {
    let mut s = format!(
        r#"
name = "exact"
duration_s = 2
port_min = 3000
port_max = 3099
mapping = "{mapping}"
"#
    );
    for (i, d) in dests.iter().enumerate() {
        s += &format!(
            r#"
[[group]]
name = "g{i}"
hosts = 15
rate = 1000
arrival = "fixed"
duration_s = inf
max_connections = {}
dest = [{{ addr = "{d}", port = 443 }}]
"#,
            150 / dests.len()
        );
    }
    s
}

#[test]
fn one_destination_100_ports_150_flows_exactly_100_succeed() {
    for mapping in [
        "endpoint-independent",
        "endpoint-independent-strict",
        "address-and-port-dependent",
    ] {
        let r = go(&long_lived(mapping, &["203.0.113.50"]));
        assert_eq!(r.offered, 150, "{mapping}");
        assert_eq!(r.succeeded, 100, "{mapping}");
        assert_eq!(r.failures, 50, "{mapping}");
        let g = &r.groups[0];
        assert_eq!((g.fail_out_of_ports, g.fail_host_quota), (50, 0));
        let f = r.first_exhaustion.as_ref().expect("a failure");
        assert_eq!(f.reason, "out_of_ports");
        assert_eq!(
            (f.engine_flows, f.open_conns, f.ports_in_use),
            (100, 100, 100)
        );
        assert_eq!(f.offered_before, 100);
        // 1000/s from t=0: the 101st connection arrives at 0.100 s.
        assert!((f.t_s - 0.100).abs() < 1e-6, "{}", f.t_s);
        assert_eq!(r.samples[0].utilisation, vec![1.0]);
        assert_eq!(r.dests[0].peak_flows, 100);
    }
}

#[test]
fn two_destinations_apdm_and_shared_eim_hold_all_150_strict_eim_only_100() {
    let r = go(&long_lived(
        "address-and-port-dependent",
        &["203.0.113.50", "198.51.100.60"],
    ));
    assert_eq!((r.offered, r.succeeded, r.failures), (150, 150, 0));
    assert!(r.first_exhaustion.is_none());
    assert_eq!(r.samples[0].engine_flows, 150);
    // 100 ports, 150 flows: at most 100 busy ports, at least 50 of them shared.
    assert_eq!(r.samples[0].ports_in_use, vec![100]);

    // EIM with port sharing (the default): each port serves one endpoint per destination.
    let r = go(&long_lived(
        "endpoint-independent",
        &["203.0.113.50", "198.51.100.60"],
    ));
    assert_eq!((r.offered, r.succeeded, r.failures), (150, 150, 0));
    assert_eq!(r.samples[0].ports_in_use, vec![100]);

    // Strict EIM (port_sharing = false): one endpoint per port.
    let r = go(&long_lived(
        "endpoint-independent-strict",
        &["203.0.113.50", "198.51.100.60"],
    ));
    assert_eq!((r.offered, r.succeeded, r.failures), (150, 100, 50));
    assert_eq!(r.first_exhaustion.unwrap().engine_flows, 100);
}

#[test]
fn per_host_quota_caps_the_noisy_host_only() {
    let r = go(r#"
name = "quota"
duration_s = 3
per_host_quota = 10

[[group]]
name = "noisy"
hosts = 1
rate = 100
arrival = "fixed"
duration_s = inf
max_connections = 50
dest = [{ addr = "203.0.113.50", port = 443 }]

[[group]]
name = "calm"
hosts = 20
rate = 20
arrival = "fixed"
duration_s = inf
max_connections = 40
dest = [{ addr = "203.0.113.50", port = 443 }]
"#);
    let noisy = &r.groups[0];
    assert_eq!(
        (noisy.attempts, noisy.ok, noisy.fail_host_quota),
        (50, 10, 40)
    );
    assert_eq!(noisy.hosts_starved, 1);
    let calm = &r.groups[1];
    assert_eq!((calm.attempts, calm.ok), (40, 40));
    assert_eq!(calm.fail_host_quota + calm.fail_out_of_ports, 0);
    assert_eq!(calm.hosts_starved, 0);
    assert!(
        r.first_exhaustion.is_none(),
        "quota refusals are not exhaustion"
    );
    assert_eq!(r.first_quota_failure.unwrap().reason, "host_quota");
    assert_eq!(r.samples.last().unwrap().engine_flows, 50);
}

/// 100 ports, one destination: connections 0-99 take every port in [0, 1 s) and the 101st
/// (t = 1.00 s) is refused; they close with FIN both ways from t = 5.00 s.
fn recovery(time_wait_reuse: bool) -> Report {
    go(&format!(
        r#"
name = "recovery"
duration_s = 45
port_min = 3000
port_max = 3099
reuse_cooldown_s = 0
housekeeping_ms = 10
time_wait_reuse = {time_wait_reuse}

[timeouts]
tcp_time_wait = 30

[[group]]
name = "clients"
hosts = 10
rate = 100
arrival = "fixed"
duration_s = 5
close = {{ fin = 1.0 }}
dest = [{{ addr = "203.0.113.50", port = 443 }}]
"#
    ))
}

#[test]
fn recovery_after_close_is_at_once_by_taking_over_time_wait_ports() {
    let r = recovery(true);
    let f = r.first_exhaustion.as_ref().unwrap();
    assert_eq!(f.engine_flows, 100);
    assert!((f.t_s - 1.0).abs() < 1e-6);
    // The first connection closes at 5.00 s; the arrival of that same instant (processed
    // after the close) takes its port over.
    let o = &r.outages[0];
    assert!((o.start_s - 1.0).abs() < 1e-6);
    let recovered = o.end_s.expect("recovered") - 5.0;
    assert!(
        (0.0..=0.010 + 1e-9).contains(&recovered),
        "recovered {recovered:.4} s after the close"
    );
    // A connection gets a port exactly when one closes (at the same instant, every 10 ms)
    // and takes it over: 100 in each of [5, 6), [10, 11), ... [40, 41) s; those refused in
    // between never close, so nothing else frees a port within the run.
    assert_eq!(r.time_wait_reused, 800);
    assert_eq!(r.succeeded, 100 + 800);
    assert_eq!(r.late_close_drops, 0);
}

#[test]
fn recovery_after_close_without_takeover_takes_time_wait_plus_expiry_granularity() {
    let time_wait = 30.0;
    let r = recovery(false);
    let f = r.first_exhaustion.as_ref().unwrap();
    assert_eq!(f.engine_flows, 100);
    assert!((f.t_s - 1.0).abs() < 1e-6);
    // They sit in TIME_WAIT; the first port comes back when the first of them expires:
    // after time_wait, the relink granularity and at most a tick of rounding, found by the
    // next arrival (10 ms apart).
    let o = &r.outages[0];
    assert!((o.start_s - 1.0).abs() < 1e-6);
    let recovered = o.end_s.expect("recovered") - 5.0;
    let lo = time_wait + RELINK_S - TICK_S;
    let hi = time_wait + RELINK_S + TICK_S + 0.010;
    assert!(
        (lo..=hi).contains(&recovered),
        "recovered {recovered:.4} s after the close, want {lo:.4}..={hi:.4}"
    );
    assert_eq!(r.time_wait_reused, 0);
    assert_eq!(r.late_close_drops, 0);
}

#[test]
fn shipped_scenarios_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/snat");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            Scenario::load(&p.to_string_lossy()).unwrap();
            n += 1;
        }
    }
    assert!(n >= 4, "{n} scenario files");
}
