//! The steering program (`io::steer`) with the real daemon on the lab (issue 21), on the
//! af_packet backend, whose fanout runs it.
//!
//! `dnat_and_snat_of_one_inside_server_meet_their_workers`: the DNAT target 198.18.0.20 serves
//! 203.0.113.1:8080 to the internet and is a client itself; with 2 and 4 workers every DNAT
//! request and every request of its own succeeds, the DNAT flows live on worker 0 (where the
//! engine keeps them), its own flows on its address's worker, and no frame is handed over
//! between workers: the program sends both directions of DNAT to worker 0 and the server's
//! other frames to its worker, as the engine's `owner_of` says.
//!
//! `flows_spread_over_two_workers_as_the_steering_program_says`: how the steering spreads
//! flows over 2 workers, measured with `tollgate run --config tests/lab.toml --workers 2`:
//! - "lab": the lab's traffic checks (`tollgate lab run`'s) plus 20 HTTP requests and 5 UDP
//!   echoes from each inside host (node1, node2, srv), and 10 DNAT requests from outside;
//! - "heavy": node1 runs iperf3 with 8 TCP streams for 3 s, node2 makes 10 HTTP requests.
//!
//! After each, `tollgate flows --json` lists every flow with the worker that holds it and its
//! packets both ways. The live worker must be the one the steering program predicts (the
//! program run by the interpreter of `io::steer` on the flow's first frame: so the kernel
//! runs it as the tests do), and the same flows are then assigned as the two alternatives
//! would have: the whole 5-tuple (before issue 21) and the source address and port. Return
//! traffic follows its flow (to the port owner), DNAT flows live on worker 0 in all three.
//! Prints the table in docs/io-lab.md ("Steering"). Needs root, skips otherwise.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use common::*;
use tollgate::datapath::Worker;
use tollgate::io::steer::{run, InsideKey, Insn, Steering};
use tollgate_lab::lab::Lab;

const WORKERS: usize = 2;

/// The steering of tests/lab.toml (SNAT 203.0.113.1, all ports, inside 198.18.0.0/15, the
/// default exempt prefixes, the DNAT target 198.18.0.20:80) with `key`, or the 5-tuple
/// program of before issue 21 (no inside prefixes, no DNAT targets) when None.
fn program(key: Option<InsideKey>) -> Vec<Insn> {
    let nat = tollgate::nat::NatConfig::default();
    Steering {
        public_addrs: vec![Ipv4Addr::new(203, 0, 113, 1)],
        port_min: 1024,
        port_max: 65535,
        workers: WORKERS,
        inside: if key.is_some() {
            vec!["198.18.0.0/15".parse().expect("prefix")]
        } else {
            vec![]
        },
        exempt: nat.exempt,
        dnat_targets: if key.is_some() {
            vec![(Ipv4Addr::new(198, 18, 0, 20), 80, 6)]
        } else {
            vec![]
        },
        inside_key: key.unwrap_or_default(),
    }
    .program()
    .expect("program")
}

/// A flow's first frame, inside -> outside.
fn first_frame(proto: u8, src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 28];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&28u16.to_be_bytes());
    f[22] = 64;
    f[23] = proto;
    f[26..30].copy_from_slice(&src.ip().octets());
    f[30..34].copy_from_slice(&dst.ip().octets());
    f[34..36].copy_from_slice(&src.port().to_be_bytes());
    f[36..38].copy_from_slice(&dst.port().to_be_bytes());
    f
}

/// One flow of `tollgate flows --json`.
struct Flow {
    live: usize,
    proto: u8,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    dnat: bool,
    packets: u64,
}

fn flows(lab: &Lab) -> Vec<Flow> {
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let (ok, out) = sh(lab, "app", &format!("{exe} flows --json --limit 100000"));
    assert!(ok, "tollgate flows: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("flows JSON");
    let ep = |f: &serde_json::Value, k: &str| -> SocketAddrV4 {
        f[k].as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {f}"))
    };
    v["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .map(|f| Flow {
            live: f["worker"].as_u64().expect("worker") as usize,
            proto: match f["protocol"].as_str() {
                Some("tcp") => 6,
                Some("udp") => 17,
                _ => 1,
            },
            src: ep(f, "source"),
            dst: ep(f, "destination"),
            dnat: ep(f, "destination") != ep(f, "translated_destination"),
            packets: f["packets_out"].as_u64().unwrap_or(0) + f["packets_in"].as_u64().unwrap_or(0),
        })
        .collect()
}

/// Flows and packets per worker under `prog` (DNAT flows: worker 0).
fn spread(fl: &[Flow], prog: &[Insn]) -> ([u64; WORKERS], [u64; WORKERS]) {
    let (mut n, mut p) = ([0u64; WORKERS], [0u64; WORKERS]);
    for f in fl {
        let w = if f.dnat {
            0
        } else {
            run(prog, 0x0800, &first_frame(f.proto, f.src, f.dst)).expect("runs") as usize % WORKERS
        };
        n[w] += 1;
        p[w] += f.packets;
    }
    (n, p)
}

fn pct(v: [u64; WORKERS]) -> String {
    let total: u64 = v.iter().sum::<u64>().max(1);
    v.iter()
        .map(|x| format!("{x} ({}%)", x * 100 / total))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Runs `traffic` through a fresh `tollgate run --workers N` and returns its flows and the
/// exit counters (`name value` lines).
fn measure_with(lab: &mut Lab, workers: usize, traffic: impl Fn(&Lab)) -> (Vec<Flow>, String) {
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab.toml");
    let w = workers.to_string();
    // the steering program is AF_PACKET's fanout; AF_XDP delivers to the receiving queue's
    // socket and hands frames over from there
    let (_, log) = start_appliance(
        lab,
        &[
            exe,
            "run",
            "--config",
            config,
            "--workers",
            &w,
            "--backend",
            "af_packet",
        ],
    );
    traffic(lab);
    let fl = flows(lab);
    assert!(lab.stop("appliance", Duration::from_secs(5)));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let counters: Vec<&str> = text
        .lines()
        .filter(|l| {
            ["forwarded ", "handoff_out ", "drop."]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect();
    eprintln!("{workers} workers, exit counters: {}", counters.join(", "));
    (fl, text)
}

fn measure(lab: &mut Lab, traffic: impl Fn(&Lab)) -> Vec<Flow> {
    measure_with(lab, WORKERS, traffic).0
}

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from the exit counters:\n{text}"))
}

#[test]
fn dnat_and_snat_of_one_inside_server_meet_their_workers() {
    if !root_or_skip("dnat_and_snat_of_one_inside_server_meet_their_workers") {
        return;
    }
    let mut lab = lab();
    let server = Ipv4Addr::new(198, 18, 0, 20);
    for workers in [2usize, 4] {
        let own = Worker::steer_worker(server, workers);
        let (fl, text) = measure_with(&mut lab, workers, |lab| {
            for i in 0..20 {
                let (ok, out) = sh(lab, "inet", "curl -s -m 5 http://203.0.113.1:8080/");
                assert!(
                    ok && out.contains("peer=203.0.113.10:"),
                    "DNAT request {i}: {out}"
                );
                let (ok, out) = sh(lab, "srv", "curl -s -m 5 http://203.0.113.10/");
                assert!(
                    ok && out.contains("peer=203.0.113.1:"),
                    "SNAT request {i}: {out}"
                );
            }
        });
        let dnat: Vec<&Flow> = fl.iter().filter(|f| f.dnat).collect();
        let own_flows: Vec<&Flow> = fl.iter().filter(|f| *f.src.ip() == server).collect();
        assert_eq!(dnat.len(), 20, "DNAT flows");
        assert_eq!(own_flows.len(), 20, "the server's own flows");
        assert!(dnat.iter().all(|f| f.live == 0), "DNAT flows off worker 0");
        assert!(
            own_flows.iter().all(|f| f.live == own),
            "{workers} workers: the server's flows belong on worker {own}"
        );
        // with 2 and 4 workers, 198.18.0.20's own worker is not 0: its DNAT replies met
        // worker 0 because the program sent them there, not by chance
        assert_ne!(own, 0);
        assert_eq!(counter(&text, "handoff_out "), 0, "{text}");
        assert!(counter(&text, "forwarded ") >= 40 * 6, "{text}");
    }
}

#[test]
fn flows_spread_over_two_workers_as_the_steering_program_says() {
    if !root_or_skip("flows_spread_over_two_workers_as_the_steering_program_says") {
        return;
    }
    let mut lab = lab();
    let lab_traffic = |lab: &Lab| {
        let checks = tollgate_lab::lab::traffic_checks(lab);
        assert!(
            checks.iter().all(|c| c.pass),
            "{}",
            tollgate_lab::lab::format_report(&checks)
        );
        for node in ["node1", "node2", "srv"] {
            sh(
                lab,
                node,
                "for i in $(seq 20); do curl -s -m 5 -o /dev/null http://203.0.113.10/; done; \
                 for i in $(seq 5); do echo x | socat -T 1 - UDP4:203.0.113.10:7 >/dev/null; done",
            );
        }
        sh(
            lab,
            "inet",
            "for i in $(seq 10); do curl -s -m 5 -o /dev/null http://203.0.113.1:8080/; done",
        );
    };
    let heavy = |lab: &Lab| {
        let (ok, out) = sh(
            lab,
            "node1",
            "iperf3 -c 203.0.113.10 -P 8 -t 3 -J > /dev/null & \
             for i in $(seq 10); do curl -s -m 5 -o /dev/null http://203.0.113.10/; done; wait",
        );
        assert!(ok, "iperf3: {out}");
        sh(
            lab,
            "node2",
            "for i in $(seq 10); do curl -s -m 5 -o /dev/null http://203.0.113.10/; done",
        );
    };
    eprintln!(
        "steering program for tests/lab.toml: {} instructions",
        program(Some(InsideKey::Addr)).len()
    );
    let steerings = [
        ("5-tuple (before)", program(None)),
        ("source address (now)", program(Some(InsideKey::Addr))),
        (
            "source address and port",
            program(Some(InsideKey::AddrPort)),
        ),
    ];
    let mut table = vec![
        "| traffic | steering | flows worker 0 / 1 | packets worker 0 / 1 |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    for (name, traffic) in [
        ("lab (3 inside hosts, DNAT)", &lab_traffic as &dyn Fn(&Lab)),
        ("one heavy host (iperf3 -P 8) + a light one", &heavy),
    ] {
        let fl = measure(&mut lab, traffic);
        // the kernel ran the program as the interpreter does: every flow is where it says
        let now = &steerings[1].1;
        let mut hosts: BTreeMap<Ipv4Addr, [u64; WORKERS]> = BTreeMap::new();
        for f in &fl {
            let want = if f.dnat {
                0
            } else {
                run(now, 0x0800, &first_frame(f.proto, f.src, f.dst)).expect("runs") as usize
                    % WORKERS
            };
            assert_eq!(
                f.live, want,
                "{} {} -> {}: on worker {}, the program says {want}",
                f.proto, f.src, f.dst, f.live
            );
            hosts.entry(*f.src.ip()).or_default()[f.live] += 1;
        }
        eprintln!("{name}: flows per source and worker (live): {hosts:?}");
        let mut big: Vec<&Flow> = fl.iter().filter(|f| f.packets >= 1000).collect();
        big.sort_by_key(|f| std::cmp::Reverse(f.packets));
        for f in big {
            let w = |p: &[Insn]| {
                run(p, 0x0800, &first_frame(f.proto, f.src, f.dst)).expect("runs") as usize
                    % WORKERS
            };
            eprintln!(
                "  {} -> {}: {} packets, worker by 5-tuple {}, address {}, address and port {}",
                f.src,
                f.dst,
                f.packets,
                w(&steerings[0].1),
                w(&steerings[1].1),
                w(&steerings[2].1)
            );
        }
        for (s, prog) in &steerings {
            let (n, p) = spread(&fl, prog);
            table.push(format!("| {name} | {s} | {} | {} |", pct(n), pct(p)));
        }
    }
    eprintln!("{}", table.join("\n"));
}
