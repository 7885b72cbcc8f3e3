//! `tollgate run` as a process: the TOML loader, the real ruleset, SIGTERM, counters at exit,
//! and nothing left behind. Needs root (skips otherwise).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn tollgate_run_serves_the_lab_config_and_stops_cleanly_on_sigterm() {
    if !root_or_skip("tollgate_run_serves_the_lab_config_and_stops_cleanly_on_sigterm") {
        return;
    }
    let mut lab = lab();
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab.toml");
    let log = lab.dir.join("appliance.log");
    lab.spawn(
        "appliance",
        "app",
        &[exe, "run", "--config", config, "--workers", "1"],
        &log,
    )
    .expect("spawn tollgate run");
    assert!(
        lab.wait_spawned_appliance(Duration::from_secs(10)),
        "tollgate run did not come up: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (ok, http) = sh(&lab, "node1", "curl -s -m 5 http://203.0.113.10/");
    let (denied, _) = sh(&lab, "node1", "curl -s -m 3 http://198.51.100.66/");
    let (dnat_ok, dnat) = sh(&lab, "inet", "curl -s -m 5 http://203.0.113.1:8080/");
    let exited_cleanly = lab.stop("appliance", Duration::from_secs(5));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("{text}");
    let (table_left, _) = sh(&lab, "app", "nft list table inet tollgate");
    assert!(ok && http.contains("peer=203.0.113.1:"), "http: {http}");
    assert!(!denied, "198.51.100.66 is denied by the lab config");
    assert!(
        dnat_ok && dnat.contains("peer=203.0.113.10:"),
        "dnat: {dnat}"
    );
    assert!(exited_cleanly, "SIGTERM stops tollgate run");
    assert!(text.starts_with("tollgate: running interfaces=tg-in(inside),tg-out(outside)"));
    assert!(text.contains("drop.rule_deny"), "counters at exit:\n{text}");
    assert!(text.contains("stopped cleanly"));
    assert!(!table_left, "the nftables table is removed at exit");
}
