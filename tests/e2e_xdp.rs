//! The af_xdp backend's XDP program on the lab's interfaces: attached while the daemon runs,
//! gone after it, also after SIGKILL; a stale one removed at start; another program left alone
//! (auto takes AF_PACKET, af_xdp refuses to start); auto on veth, whose AF_XDP is copy mode
//! only, takes AF_PACKET. Needs root and clang (skips otherwise).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab.toml");
const EXE: &str = env!("CARGO_BIN_EXE_tollgate");

/// The name of the XDP program on `dev` in the appliance's namespace ("" when none).
fn program(lab: &tollgate_lab::lab::Lab, dev: &str) -> String {
    let (_, out) = sh(lab, "app", &format!("ip -d -j link show dev {dev}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let xdp = &v[0]["xdp"];
    let prog = if xdp["prog"].is_null() {
        &xdp["attached"][0]["prog"]
    } else {
        &xdp["prog"]
    };
    prog["name"].as_str().unwrap_or("").to_string()
}

/// `src` compiled for BPF into the lab's directory (None without clang).
fn compile(lab: &tollgate_lab::lab::Lab, src: &str, name: &str) -> Option<PathBuf> {
    let c = lab.dir.join(format!("{name}.c"));
    let o = lab.dir.join(format!("{name}.o"));
    std::fs::write(&c, src).ok()?;
    let inc = format!("-I/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let ok = std::process::Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", &inc, "-c"])
        .arg(&c)
        .arg("-o")
        .arg(&o)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(o)
}

fn http_ok(lab: &tollgate_lab::lab::Lab) -> bool {
    sh(lab, "node1", "curl -s -m 5 http://203.0.113.10/").0
}

#[test]
fn the_program_is_on_while_running_and_gone_after_sigterm_and_sigkill() {
    if !root_or_skip("the_program_is_on_while_running_and_gone_after_sigterm_and_sigkill") {
        return;
    }
    let mut lab = lab();
    let argv = [
        EXE,
        "run",
        "--config",
        CONFIG,
        "--workers",
        "2",
        "--backend",
        "af_xdp",
    ];
    let (pid, log) = start_appliance(&mut lab, &argv);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("backend=af_xdp("), "{text}");
    assert_eq!(program(&lab, "tg-in"), "tollgate_xdp");
    assert_eq!(program(&lab, "tg-out"), "tollgate_xdp");
    assert!(http_ok(&lab), "HTTP through the af_xdp backend");
    let (_, ping) = sh(&lab, "node1", "ping -c 2 -W 2 203.0.113.10");
    assert!(ping.contains(" 0% packet loss"), "{ping}");
    // SIGKILL: nothing runs at exit, the kernel closes the BPF links
    assert!(sh(&lab, "app", &format!("kill -KILL {pid}")).0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(program(&lab, "tg-in"), "", "no program left after SIGKILL");
    assert_eq!(program(&lab, "tg-out"), "");
    // the next start attaches again and serves; SIGTERM removes it too (the host's nftables
    // tables, which SIGKILL leaves, are removed as the refusal to start says)
    sh(
        &lab,
        "app",
        "nft delete table inet tollgate; nft delete table netdev tollgate",
    );
    let log2 = lab.dir.join("appliance2.log");
    lab.spawn("appliance2", "app", &argv, &log2).expect("spawn");
    assert!(
        lab.wait_spawned("appliance2", Duration::from_secs(10)),
        "{}",
        std::fs::read_to_string(&log2).unwrap_or_default()
    );
    assert_eq!(program(&lab, "tg-in"), "tollgate_xdp");
    assert!(http_ok(&lab), "HTTP after the restart");
    assert!(lab.stop("appliance2", Duration::from_secs(5)));
    assert_eq!(program(&lab, "tg-in"), "", "no program left after SIGTERM");
    assert_eq!(program(&lab, "tg-out"), "");
}

#[test]
fn a_stale_program_attached_the_old_way_is_replaced_at_start() {
    if !root_or_skip("a_stale_program_attached_the_old_way_is_replaced_at_start") {
        return;
    }
    let mut lab = lab();
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/io/xdp/tollgate.bpf.c"
    ))
    .expect("the program's source");
    let Some(obj) = compile(&lab, &src, "stale") else {
        eprintln!("SKIPPED: no clang");
        return;
    };
    // attached by netlink, as an older daemon or a crash left it: it outlives its process, and
    // with no socket in its map it drops every transit frame
    let (ok, out) = sh(
        &lab,
        "app",
        &format!(
            "ip link set dev tg-in xdpgeneric obj {} sec xdp",
            obj.display()
        ),
    );
    assert!(ok, "{out}");
    assert_eq!(program(&lab, "tg-in"), "tollgate_xdp");
    assert!(!http_ok(&lab), "the stale program drops transit traffic");
    let argv = [
        EXE,
        "run",
        "--config",
        CONFIG,
        "--workers",
        "1",
        "--backend",
        "af_xdp",
    ];
    let (_, log) = start_appliance(&mut lab, &argv);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("backend=af_xdp("), "{text}");
    assert!(http_ok(&lab), "served once the stale program is replaced");
    assert!(lab.stop("appliance", Duration::from_secs(5)));
    assert_eq!(program(&lab, "tg-in"), "", "nothing left at exit");
    // auto on veth (copy mode only): AF_PACKET, saying why, and no program left behind
    let log = lab.dir.join("auto.log");
    let argv = [
        EXE,
        "run",
        "--config",
        CONFIG,
        "--workers",
        "1",
        "--backend",
        "auto",
    ];
    lab.spawn("auto", "app", &argv, &log).expect("spawn");
    assert!(lab.wait_spawned("auto", Duration::from_secs(10)));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("backend auto: AF_PACKET, because")
            && text.contains("offers AF_XDP in copy mode only"),
        "{text}"
    );
    assert!(text.contains("backend=af_packet("), "{text}");
    assert_eq!(program(&lab, "tg-in"), "", "the probe's programs are gone");
    assert!(http_ok(&lab), "served on AF_PACKET");
    assert!(lab.stop("auto", Duration::from_secs(5)));
}

#[test]
fn another_program_is_left_alone_auto_takes_af_packet_and_af_xdp_refuses() {
    if !root_or_skip("another_program_is_left_alone_auto_takes_af_packet_and_af_xdp_refuses") {
        return;
    }
    let mut lab = lab();
    let src = "#include <linux/bpf.h>\n\
               __attribute__((section(\"xdp\"), used)) int someone_elses(struct xdp_md *c) \
               { return XDP_PASS; }\n\
               char LICENSE[] __attribute__((section(\"license\"), used)) = \"GPL\";\n";
    let Some(obj) = compile(&lab, src, "other") else {
        eprintln!("SKIPPED: no clang");
        return;
    };
    let (ok, out) = sh(
        &lab,
        "app",
        &format!(
            "ip link set dev tg-out xdpgeneric obj {} sec xdp",
            obj.display()
        ),
    );
    assert!(ok, "{out}");
    // af_xdp: refuses to start, naming the program
    let log = lab.dir.join("refused.log");
    let argv = [
        EXE,
        "run",
        "--config",
        CONFIG,
        "--workers",
        "1",
        "--backend",
        "af_xdp",
    ];
    lab.spawn("refused", "app", &argv, &log).expect("spawn");
    assert!(!lab.wait_spawned("refused", Duration::from_secs(10)));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("backend af_xdp:") && text.contains("someone_elses"),
        "{text}"
    );
    assert_eq!(program(&lab, "tg-out"), "someone_elses", "left alone");
    assert_eq!(
        program(&lab, "tg-in"),
        "",
        "tg-in's program removed on the way out"
    );
    // auto: AF_PACKET, saying why, and serving
    let argv = [
        EXE,
        "run",
        "--config",
        CONFIG,
        "--workers",
        "1",
        "--backend",
        "auto",
    ];
    let (_, log) = start_appliance(&mut lab, &argv);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("backend auto: AF_PACKET, because") && text.contains("someone_elses"),
        "{text}"
    );
    assert!(text.contains("backend=af_packet("), "{text}");
    assert!(http_ok(&lab), "served on AF_PACKET");
    assert!(lab.stop("appliance", Duration::from_secs(5)));
    assert_eq!(program(&lab, "tg-out"), "someone_elses", "still left alone");
}
