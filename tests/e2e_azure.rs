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

use common::root_or_skip;
use tollgate_lab::lab::{run_lab, Topology};

#[test]
fn one_arm_behind_a_udr_passes_every_lab_check() {
    if !root_or_skip("one_arm_behind_a_udr_passes_every_lab_check") {
        return;
    }
    let exe = Path::new(env!("CARGO_BIN_EXE_tollgate"));
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lab-one-arm.toml");
    let (report, ok) = run_lab(
        exe,
        &cfg,
        Topology::OneArm,
        None,
        Arc::new(AtomicBool::new(false)),
    )
    .expect("one-arm lab runs");
    println!("{report}");
    assert!(ok, "a check failed:\n{report}");
    for must in [
        "pod1 (kubenet, behind node1): HTTP to 203.0.113.10 is SNATed",
        "platform: the health probe from 192.0.2.16 is answered",
        "internet: DNAT 203.0.113.1:8080 reaches 198.18.0.20:80",
        "time-exceeded from 198.18.1.4",
        "fabric: without IP forwarding on its NIC",
        "/metrics reports SNAT use of 198.18.1.4",
        "a network rule on api.example (resolved via the platform's DNS) allows it",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains(must)),
            "no passing check \"{must}\":\n{report}"
        );
    }
}

#[test]
fn ha_pair_behind_a_load_balancer_fails_over_within_its_probe_bound() {
    if !root_or_skip("ha_pair_behind_a_load_balancer_fails_over_within_its_probe_bound") {
        return;
    }
    let exe = Path::new(env!("CARGO_BIN_EXE_tollgate"));
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lab-one-arm.toml");
    let (report, ok) = run_lab(
        exe,
        &cfg,
        Topology::Ha,
        None,
        Arc::new(AtomicBool::new(false)),
    )
    .expect("ha lab runs");
    println!("{report}");
    assert!(ok, "a check failed:\n{report}");
    for must in [
        "ha: the balancer spreads new flows over both appliances",
        "ha: after SIGKILL of one appliance, new connections succeed within",
        "pod1 (kubenet, behind node1): HTTP to 203.0.113.10 is SNATed",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains(must)),
            "no passing check \"{must}\":\n{report}"
        );
    }
}

#[test]
fn two_nic_behind_a_udr_passes_every_lab_check() {
    if !root_or_skip("two_nic_behind_a_udr_passes_every_lab_check") {
        return;
    }
    let exe = Path::new(env!("CARGO_BIN_EXE_tollgate"));
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lab-two-nic.toml");
    let (report, ok) = run_lab(
        exe,
        &cfg,
        Topology::TwoNic,
        None,
        Arc::new(AtomicBool::new(false)),
    )
    .expect("two-nic lab runs");
    println!("{report}");
    assert!(ok, "a check failed:\n{report}");
    for must in [
        "internet: DNAT 203.0.113.1:8080 reaches 198.18.0.20:80",
        "/metrics reports SNAT use of 198.18.2.4",
        "a network rule on api.example (resolved via the platform's DNS) allows it",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains(must)),
            "no passing check \"{must}\":\n{report}"
        );
    }
}
