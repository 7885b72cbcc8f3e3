//! End to end in Azure's shape: the one-arm appliance behind a UDR in the emulated VNet fabric
//! (`tollgate lab run`'s default topology, lab/src/fabric.rs): nodes and a kubenet pod reach the
//! internet as the public IP, deny rules deny, DNAT from the internet, ICMP time-exceeded from
//! the NIC's address, the platform's health probe answered, the management port closed to the
//! internet, what a NIC without IP forwarding does, an FQDN network rule resolved through the
//! platform's DNS; the same through a two-NIC appliance; then two appliances behind the emulated
//! internal load balancer, one killed under new connections. Needs root (skips otherwise).

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::root_or_skip;
use tollgate_lab::lab::{as_unit, new_prefix, run_lab, Lab, Topology};

/// Runs `lab run` in `topology` with `config` (under config/) and asserts every check passed,
/// these among them.
fn lab_passes(topology: Topology, config: &str, musts: &[&str]) {
    let exe = Path::new(env!("CARGO_BIN_EXE_tollgate"));
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join(config);
    let (report, ok) = run_lab(exe, &cfg, topology, None, Arc::new(AtomicBool::new(false)))
        .unwrap_or_else(|e| panic!("{topology} lab runs: {e}"));
    println!("{report}");
    assert!(ok, "a check failed:\n{report}");
    for must in musts {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains(must)),
            "no passing check \"{must}\":\n{report}"
        );
    }
}

#[test]
fn one_arm_behind_a_udr_passes_every_lab_check() {
    if !root_or_skip("one_arm_behind_a_udr_passes_every_lab_check") {
        return;
    }
    lab_passes(
        Topology::OneArm,
        "config/lab-one-arm.toml",
        &[
            "pod1 (kubenet, behind node1): HTTP to 203.0.113.10 is SNATed",
            "platform: the health probe from 192.0.2.16 is answered",
            "pod1 and node2: the appliance's /metrics does not answer them",
            "internet: DNAT 203.0.113.1:8080 reaches 198.18.0.20:80",
            "time-exceeded from 198.18.1.4",
            "fabric: without IP forwarding on its NIC",
            "/metrics reports SNAT use of 198.18.1.4",
            "a network rule on api.example (resolved via the platform's DNS) allows it",
        ],
    );
}

#[test]
fn ha_pair_behind_a_load_balancer_fails_over_within_its_probe_bound() {
    if !root_or_skip("ha_pair_behind_a_load_balancer_fails_over_within_its_probe_bound") {
        return;
    }
    lab_passes(
        Topology::Ha,
        "config/lab-one-arm.toml",
        &[
            "ha: the balancer spreads new flows over both appliances",
            "ha: after SIGKILL of one appliance, new connections succeed within",
            "pod1 (kubenet, behind node1): HTTP to 203.0.113.10 is SNATed",
        ],
    );
}

#[test]
fn two_nic_behind_a_udr_passes_every_lab_check() {
    if !root_or_skip("two_nic_behind_a_udr_passes_every_lab_check") {
        return;
    }
    lab_passes(
        Topology::TwoNic,
        "config/lab-two-nic.toml",
        &[
            "internet: DNAT 203.0.113.1:8080 reaches 198.18.0.20:80",
            "/metrics reports SNAT use of 198.18.2.4",
            "a network rule on api.example (resolved via the platform's DNS) allows it",
        ],
    );
}

/// The configuration `vm-image/azure/` deploys, its VNet addresses moved onto the lab's (the
/// same substitution `deploy-ha.sh` makes per instance), carries real traffic in the one-arm
/// fabric: its application rules pass their FQDNs (TLS SNI and HTTP Host) and nothing else,
/// and the platform's probe reaches `/healthz`.
#[test]
fn the_azure_deployment_config_carries_traffic_in_the_fabric() {
    if !root_or_skip("the_azure_deployment_config_carries_traffic_in_the_fabric") {
        return;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm-image/azure/tollgate.toml");
    let mut text = std::fs::read_to_string(&src).expect("azure config");
    for (from, to) in [
        ("10.42.8.4", "198.18.1.4"),
        ("10.42.8.1", "198.18.1.1"),
        ("10.42.0.0/22", "198.18.0.0/24"),
        ("10.42.0.0/16", "198.18.0.0/16"),
        ("10.244.0.0/16", "198.18.64.0/18"),
        ("168.63.129.16", "192.0.2.16"),
    ] {
        assert!(text.contains(from), "{from} not in {}", src.display());
        text = text.replace(from, to);
    }
    let live: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!live.contains("10.42."), "an address left untranslated");

    let mut lab = Lab::up_with(&new_prefix(), Topology::OneArm).expect("lab up");
    lab.start_servers().expect("servers");
    lab.warm_neighbours();
    let cfg = lab.dir.join("azure.toml");
    std::fs::write(&cfg, &text).unwrap();
    let log = lab.dir.join("appliance.log");
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let cfg_s = cfg.to_string_lossy().to_string();
    // as the image's systemd unit runs it: its capabilities, no new privileges, its limits
    let unit = as_unit(&[exe, "run", "--config", &cfg_s, "--workers", "1"]);
    let argv: Vec<&str> = unit.iter().map(String::as_str).collect();
    lab.spawn("appliance", "app", &argv, &log).expect("spawn");
    assert!(
        lab.wait_spawned_appliance(Duration::from_secs(10)),
        "appliance: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let run = |ns: &str, cmd: &str| {
        let o = lab.sh(ns, cmd).expect("sh");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    let tls = |name: &str| {
        format!("curl -sk -m 4 -o /dev/null -w '%{{http_code}}' --resolve {name}:443:203.0.113.10 https://{name}/")
    };
    let (ok, code) = run("node1", &tls("mcr.microsoft.com"));
    assert!(ok && code == "200", "AKS's required FQDN over TLS: {code}");
    let (ok, code) = run("pod1", &tls("api.github.com"));
    assert!(ok && code == "200", "a workload FQDN from a pod: {code}");
    let (ok, _) = run("node1", &tls("example.org"));
    assert!(!ok, "an FQDN no rule names must not pass");
    let (ok, body) = run(
        "node1",
        "curl -s -m 4 --resolve security.ubuntu.com:80:203.0.113.10 http://security.ubuntu.com/",
    );
    assert!(
        ok && body.contains("peer=203.0.113.1:"),
        "HTTP by Host, SNATed to the public IP: {body}"
    );
    let (ok, _) = run("node1", "curl -s -m 3 http://203.0.113.10/");
    assert!(!ok, "plain HTTP to an address no rule names must not pass");
    let (ok, code) = run(
        "fab",
        "curl -s -m 3 --interface 192.0.2.16 -o /dev/null -w '%{http_code}' http://198.18.1.4:9090/healthz",
    );
    assert!(ok && code == "200", "the platform's probe: {code}");
    let (ok, _) = run("inet", "curl -s -m 3 http://203.0.113.1:9090/healthz");
    assert!(!ok, "the health port must not answer the internet");
    assert!(lab.stop("appliance", Duration::from_secs(5)));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("drop.app_deny"), "app denies counted: {text}");
}
