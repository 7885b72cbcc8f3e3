//! Hot reload with the real binary: an iperf3 transfer and a half-sent HTTP request run through
//! `tollgate run`; a broken configuration is rejected with file:line:col and changes nothing;
//! then a configuration that denies port 80 is applied: the iperf3 transfer finishes untouched
//! and the port-80 connection is reset at its next packet. Needs root.

mod common;

use std::time::Duration;

use common::*;

/// Holds an HTTP request open across the reload, then finishes it and reports what happened.
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

#[test]
fn reload_cuts_newly_denied_flows_and_spares_the_others() {
    if !root_or_skip("reload_cuts_newly_denied_flows_and_spares_the_others") {
        return;
    }
    let mut lab = lab();
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab.toml"))
        .expect("lab config");
    let old_ports = r#"destination_ports = ["80", "7", "5201"]"#;
    assert!(
        base.contains(old_ports),
        "the lab config allows 80, 7, 5201"
    );
    let config = lab.dir.join("reload.toml");
    std::fs::write(&config, &base).expect("write config");
    let cfg = config.to_string_lossy().into_owned();
    let (_, log) = start_appliance(&mut lab, &[exe, "run", "--config", &cfg, "--workers", "2"]);

    let script = lab.dir.join("half.py");
    std::fs::write(&script, HALF_REQUEST_PY).expect("script");
    let iperf_log = lab.dir.join("iperf.json");
    lab.spawn(
        "iperf",
        "node1",
        &[
            "iperf3",
            "-c",
            "203.0.113.10",
            "-p",
            "5201",
            "-t",
            "6",
            "-J",
        ],
        &iperf_log,
    )
    .expect("iperf3");
    let half_log = lab.dir.join("half.log");
    lab.spawn(
        "half",
        "node2",
        &["python3", "-u", &script.to_string_lossy()],
        &half_log,
    )
    .expect("half request");
    std::thread::sleep(Duration::from_millis(1200));

    // A broken file: rejected, nothing changes.
    std::fs::write(
        &config,
        base.replace(old_ports, r#"destination_ports = ["80", "7", "5201"#),
    )
    .expect("write broken config");
    std::thread::sleep(Duration::from_millis(700));
    // A valid file that no longer allows port 80.
    std::fs::write(
        &config,
        base.replace(old_ports, r#"destination_ports = ["7", "5201"]"#),
    )
    .expect("write new config");
    std::thread::sleep(Duration::from_secs(6));
    let _ = lab.stop("half", Duration::from_secs(2));
    let _ = lab.stop("iperf", Duration::from_secs(2));
    let (denied_now, _) = sh(&lab, "node1", "curl -s -m 3 http://203.0.113.10/");
    lab.stop("appliance", Duration::from_secs(5));

    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let half = std::fs::read_to_string(&half_log).unwrap_or_default();
    let iperf = std::fs::read_to_string(&iperf_log).unwrap_or_default();
    eprintln!(
        "{text}\n--- half: {half}\n--- iperf: {} bytes of JSON",
        iperf.len()
    );
    assert!(
        text.contains("rejected, the running configuration stays"),
        "{text}"
    );
    assert!(
        text.contains("reload.toml:"),
        "errors carry file:line:col: {text}"
    );
    assert!(text.contains("applied (policy generation 1)"), "{text}");
    assert_eq!(half.trim(), "RESET", "the newly denied connection is cut");
    assert!(
        !iperf.contains("\"error\""),
        "the allowed iperf3 transfer ran to its end: {iperf}"
    );
    assert!(
        iperf.contains("\"sum_received\""),
        "iperf3 reported a result"
    );
    assert!(
        !denied_now,
        "new connections to port 80 are denied after the reload"
    );
}
