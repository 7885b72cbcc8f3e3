//! `tollgate run --log-format json` as a process in the lab: every line the daemon writes on
//! stderr while it starts, serves, reloads and stops is a JSON object with its level and
//! message (the exit counters as numbers), and the decision log on stdout stays its own stream,
//! unchanged. Needs root (skips otherwise).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn with_log_format_json_every_stderr_line_is_a_json_object() {
    if !root_or_skip("with_log_format_json_every_stderr_line_is_a_json_object") {
        return;
    }
    let mut lab = lab();
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab.toml");
    let out = lab.dir.join("appliance.stdout");
    let err = lab.dir.join("appliance.stderr");
    // stdout (the decision log) into the lab's log, stderr into a file of its own
    let cmd = format!(
        "exec {exe} run --config {config} --workers 1 --log-format json 2>{}",
        err.display()
    );
    let pid = lab
        .spawn("appliance", "app", &["sh", "-c", &cmd], &out)
        .expect("spawn tollgate run");
    let read = || std::fs::read_to_string(&err).unwrap_or_default();
    let t0 = Instant::now();
    while !read().contains(tollgate::control::notify::READY_MESSAGE) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "not ready in 10 s:\n{}",
            read()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, http) = sh(&lab, "node1", "curl -s -m 5 http://203.0.113.10/");
    assert!(ok && http.contains("peer=203.0.113.1:"), "http: {http}");
    // a reload (SIGHUP) adds its line
    let (hup, why) = sh(&lab, "app", &format!("kill -HUP {pid}"));
    assert!(hup, "{why}");
    let t0 = Instant::now();
    while !read().contains("applied (policy generation 1)") && t0.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        lab.stop("appliance", Duration::from_secs(5)),
        "SIGTERM stops it"
    );
    let text = read();
    eprintln!("--- stderr ---\n{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for v in &lines {
        assert!(
            ["error", "warn", "info", "debug", "trace"]
                .contains(&v["level"].as_str().unwrap_or("")),
            "{v}"
        );
        assert!(v["message"].is_string(), "{v}");
        assert!(
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("tollgate::")),
            "{v}"
        );
        assert!(
            v["time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
            "{v}"
        );
    }
    let find = |start: &str| {
        lines
            .iter()
            .find(|v| v["message"].as_str().is_some_and(|m| m.starts_with(start)))
            .unwrap_or_else(|| panic!("no line starting {start:?}:\n{text}"))
    };
    assert_eq!(
        find("running interfaces=tg-in(inside),tg-out(outside)")["level"],
        "info"
    );
    assert_eq!(
        find(tollgate::control::notify::READY_MESSAGE)["level"],
        "info"
    );
    let reload = find("reload: ");
    assert!(
        reload["message"]
            .as_str()
            .is_some_and(|m| m.contains("applied (policy generation 1)")),
        "{reload}"
    );
    let counters = find("counters at exit");
    assert!(
        counters["rx_packets"].as_u64().is_some_and(|n| n > 0),
        "{counters}"
    );
    assert!(
        counters["forwarded"].as_u64().is_some_and(|n| n > 0),
        "{counters}"
    );
    assert!(
        counters["rx_oversize"].is_u64(),
        "every I/O counter: {counters}"
    );
    assert_eq!(find("stopped cleanly")["target"], "tollgate::cli::run");
    // no line is in text form
    assert!(!text.contains("tollgate: "), "{text}");
    // stdout: the decision log, unchanged (JSON lines of their own kind)
    let decisions = std::fs::read_to_string(&out).unwrap_or_default();
    let events: Vec<Value> = decisions
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "allow" && e["destination"] == "203.0.113.10:80"),
        "{decisions}"
    );
    assert!(
        events.iter().all(|e| e.get("level").is_none()),
        "{decisions}"
    );
}
