//! Endpoint-independent mapping with port sharing (`[snat] port_sharing`, the default): an
//! inside endpoint keeps its public port for every destination, and inside endpoints share a
//! public port toward different destinations, as the Linux kernel's masquerade does. On byte
//! fixtures with a fake clock, like tests/engine_nat.rs.

mod engine_util;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;

use engine_util::*;
use proptest::prelude::*;
use tollgate::conntrack::FlowKey;
use tollgate::datapath::{DropReason, Verdict, Worker};
use tollgate::nat::MappingMode;

const TCP: u8 = 6;
const UDP: u8 = 17;

/// The lab worker with SNAT ports `lo..=hi` and `port_sharing` as given.
fn worker_with(lo: u16, hi: u16, sharing: bool) -> Worker {
    let mut cfg = lab_engine_config();
    cfg.nat.port_min = lo;
    cfg.nat.port_max = hi;
    cfg.nat.port_sharing = sharing;
    worker(cfg)
}

/// Inside host number `i` (198.18.0.100 + i).
fn host(i: u16) -> String {
    Ipv4Addr::new(198, 18, 0, 100 + i as u8).to_string()
}

/// Sends a SYN from `src:sport` to `dst:dport`; Ok(public port) or the drop reason.
fn syn(
    w: &mut Worker,
    now: u64,
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
) -> Result<u16, DropReason> {
    match run(w, now, INSIDE_IF, &tcp(src, sport, dst, dport, "S", b"")) {
        (Verdict::Forward { .. }, out) => {
            let (s, sp, d, dp) = tuple(&out);
            assert_eq!((s, d, dp), (ip(PUBLIC), ip(dst), dport));
            Ok(sp)
        }
        (Verdict::Drop(r), _) => Err(r),
        (v, _) => panic!("unexpected verdict {v:?}"),
    }
}

/// The SYN-ACK from `dst:dport` to the public port reaches `src:sport`.
fn answer_reaches(
    w: &mut Worker,
    now: u64,
    dst: &str,
    dport: u16,
    public: u16,
    src: &str,
    sport: u16,
) {
    let (v, back) = run(
        w,
        now,
        OUTSIDE_IF,
        &tcp(dst, dport, PUBLIC, public, "SA", b""),
    );
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(tuple(&back), (ip(dst), dport, ip(src), sport));
}

/// Every tracked flow's outside 5-tuple (remote, remote port, public, public port, protocol)
/// is unique.
fn assert_unique_outside_tuples(w: &Worker) {
    let mut seen = HashSet::new();
    for (_, f) in w.flows().iter() {
        let r = f.reply;
        assert!(
            seen.insert((r.src(), r.sport(), r.dst(), r.dport(), r.proto())),
            "two live flows share the outside tuple {r:?}"
        );
    }
}

fn moved(w: &Worker) -> u64 {
    w.counters().eim_collision_moved.load(Relaxed)
}

/// 64 ports; 64 inside endpoints connect to server A and 64 others to server B. Returns the
/// successes and the out-of-ports refusals.
fn two_servers(sharing: bool) -> (usize, usize) {
    let mut w = worker_with(5000, 5063, sharing);
    let (mut ok, mut refused) = (0, 0);
    let mut granted = Vec::new();
    for i in 0..128u16 {
        let server = if i < 64 { SERVER } else { SERVER2 };
        match syn(&mut w, 0, &host(i), 40000, server, 443) {
            Ok(p) => {
                ok += 1;
                granted.push((i, server, p));
            }
            Err(DropReason::OutOfPorts) => refused += 1,
            Err(r) => panic!("unexpected drop {r:?}"),
        }
    }
    assert_unique_outside_tuples(&w);
    for (i, server, p) in granted {
        answer_reaches(&mut w, NS, server, 443, p, &host(i), 40000);
    }
    if sharing {
        // Every port serves one endpoint toward each server.
        assert_eq!(w.snat().utilisation(0, TCP), (64, 64));
        assert_eq!(w.snat().mappings(), 128);
    }
    assert_eq!(moved(&w), 0, "no endpoint had a mapping before");
    (ok, refused)
}

#[test]
fn sixty_four_ports_carry_128_endpoints_toward_two_servers_with_sharing_and_64_without() {
    assert_eq!(two_servers(true), (128, 0), "port_sharing = true");
    assert_eq!(
        two_servers(false),
        (64, 64),
        "port_sharing = false (strict EIM)"
    );
}

#[test]
fn sharing_is_the_default() {
    assert!(tollgate::nat::NatConfig::default().port_sharing);
    assert_eq!(
        tollgate::nat::NatConfig::default().mapping,
        MappingMode::EndpointIndependent
    );
}

#[test]
fn an_endpoint_keeps_its_public_port_toward_a_second_and_third_destination() {
    for sharing in [true, false] {
        // 4 ports, all busy: 3 other endpoints hold ports toward a fourth server, and the
        // endpoint under test holds one.
        let mut w = worker_with(6000, 6003, sharing);
        let p = syn(&mut w, 0, NODE1, 40000, SERVER, 443).unwrap();
        for i in 0..3 {
            syn(&mut w, 0, &host(i), 1000, "203.0.113.40", 443).unwrap();
        }
        let third = "203.0.113.30";
        assert_eq!(syn(&mut w, 0, NODE1, 40000, SERVER2, 443), Ok(p));
        assert_eq!(syn(&mut w, 0, NODE1, 40000, third, 80), Ok(p));
        // UDP too (what a STUN client checks): one port toward every server.
        let mut udp_ports = HashSet::new();
        for (d, dp) in [(SERVER, 3478), (SERVER2, 3478), (third, 3479)] {
            let (v, out) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 5555, d, dp, b"stun"));
            assert!(matches!(v, Verdict::Forward { .. }));
            udp_ports.insert(tuple(&out).1);
        }
        assert_eq!(udp_ports.len(), 1, "sharing {sharing}");
        answer_reaches(&mut w, NS, third, 80, p, NODE1, 40000);
        answer_reaches(&mut w, NS, SERVER2, 443, p, NODE1, 40000);
        assert_eq!(moved(&w), 0);
        assert_unique_outside_tuples(&w);
    }
}

#[test]
fn a_shared_ports_collision_moves_the_flow_keeps_the_mapping_and_is_counted() {
    let (x, y, z) = (NODE1, NODE2, "198.18.0.13");
    let server3 = "203.0.113.30";
    let mut w = worker_with(7000, 7001, true);
    // Y gets port P1 toward SERVER; Z takes the last free port P2, toward SERVER2.
    let p1 = syn(&mut w, 0, y, 1000, SERVER, 443).unwrap();
    let p2 = syn(&mut w, 0, z, 1000, SERVER2, 443).unwrap();
    assert_ne!(p1, p2);
    // X has no mapping and no port is free: P2 is taken toward SERVER2, so X shares P1.
    assert_eq!(syn(&mut w, 0, x, 2000, SERVER2, 443), Ok(p1));
    assert_eq!(w.snat().utilisation(0, TCP), (2, 2));
    assert_eq!(moved(&w), 0);
    // X now talks to SERVER, which Y already uses from P1: the flow gets P2 instead.
    assert_eq!(syn(&mut w, 0, x, 2000, SERVER, 443), Ok(p2));
    assert_eq!(moved(&w), 1, "counted");
    assert_unique_outside_tuples(&w);
    // Each answer reaches its own endpoint.
    answer_reaches(&mut w, NS, SERVER, 443, p1, y, 1000);
    answer_reaches(&mut w, NS, SERVER, 443, p2, x, 2000);
    answer_reaches(&mut w, NS, SERVER2, 443, p1, x, 2000);
    answer_reaches(&mut w, NS, SERVER2, 443, p2, z, 1000);
    // X's mapping is still P1 for other destinations.
    assert_eq!(syn(&mut w, 0, x, 2000, server3, 443), Ok(p1));
    assert_eq!(moved(&w), 1);
    // Entries: Y@P1, Z@P2, X@P1 (its mapping, 2 flows), X@P2 (the detour, 1 flow).
    assert_eq!(w.snat().mappings(), 4);
    assert_eq!(w.snat().held_by(ip(x)), 2);

    // The detour ends (RST from X) and is reclaimed: the mapping is untouched.
    assert!(matches!(
        run(&mut w, NS, INSIDE_IF, &tcp(x, 2000, SERVER, 443, "R", b"")).0,
        Verdict::Forward { .. }
    ));
    let later = 60 * NS;
    w.housekeeping(later, 1);
    let mut t = later;
    while w
        .flows()
        .lookup(&FlowKey::new(ip(x), ip(SERVER), 2000, 443, TCP))
        .is_some()
    {
        t += NS;
        // Keep the others alive while the RST-closed flow times out.
        for (s, sp, d) in [
            (y, 1000, SERVER),
            (z, 1000, SERVER2),
            (x, 2000, SERVER2),
            (x, 2000, server3),
        ] {
            run(&mut w, t, INSIDE_IF, &tcp(s, sp, d, 443, "A", b"k"));
        }
        w.housekeeping(t, 1);
        assert!(t < 200 * NS, "the reset flow never expired");
    }
    assert_eq!(w.snat().mappings(), 3);
    assert_eq!(w.snat().held_by(ip(x)), 1);
    assert_eq!(syn(&mut w, t, x, 2000, "203.0.113.31", 443), Ok(p1));
    // Y closes toward SERVER, and that flow too is reclaimed; then X to SERVER uses its
    // mapping P1 again, no detour.
    run(&mut w, t, INSIDE_IF, &tcp(y, 1000, SERVER, 443, "R", b""));
    let start = t;
    while w
        .flows()
        .lookup(&FlowKey::new(ip(y), ip(SERVER), 1000, 443, TCP))
        .is_some()
    {
        t += NS;
        for (s, sp, d) in [(z, 1000, SERVER2), (x, 2000, SERVER2)] {
            run(&mut w, t, INSIDE_IF, &tcp(s, sp, d, 443, "A", b"k"));
        }
        w.housekeeping(t, 1);
        assert!(t < start + 200 * NS, "the reset flow never expired");
    }
    assert_eq!(syn(&mut w, t, x, 2000, SERVER, 443), Ok(p1));
    assert_eq!(moved(&w), 1);
    assert_unique_outside_tuples(&w);

    // Everything ends: the pool is whole again.
    w.housekeeping(t + 100_000 * NS, 1000);
    assert_eq!(w.flow_count(), 0);
    assert_eq!(w.snat().utilisation(0, TCP), (0, 2));
    assert_eq!(w.snat().mappings(), 0);
    assert_eq!(w.snat().holders().count(), 0);
}

#[test]
fn a_collision_with_no_port_left_is_refused_and_the_mapping_survives() {
    let mut w = worker_with(7100, 7100, true);
    let p = syn(&mut w, 0, NODE2, 1000, SERVER, 443).unwrap();
    // NODE1 shares the only port toward SERVER2, then collides toward SERVER: no other port.
    assert_eq!(syn(&mut w, 0, NODE1, 2000, SERVER2, 443), Ok(p));
    assert_eq!(
        syn(&mut w, 0, NODE1, 2000, SERVER, 443),
        Err(DropReason::OutOfPorts)
    );
    assert_eq!(moved(&w), 0, "only granted detours are counted");
    assert_eq!(syn(&mut w, 0, NODE1, 2000, "203.0.113.30", 443), Ok(p));
    assert_eq!(w.snat().mappings(), 2);
}

#[test]
fn per_host_quota_still_caps_a_noisy_host_with_sharing() {
    let mut cfg = lab_engine_config();
    cfg.nat.port_min = 8000;
    cfg.nat.port_max = 8003;
    cfg.nat.per_host_quota = Some(3);
    let mut w = worker(cfg);
    // Three endpoints of NODE2 and one of another host hold the 4 ports toward SERVER.
    for sp in 0..3 {
        syn(&mut w, 0, NODE2, 1000 + sp, SERVER, 443).unwrap();
    }
    syn(&mut w, 0, "198.18.0.13", 1000, SERVER, 443).unwrap();
    assert_eq!(
        syn(&mut w, 0, NODE2, 1003, SERVER2, 443),
        Err(DropReason::HostQuota),
        "NODE2 holds 3 mappings"
    );
    // The noisy host's endpoints share busy ports toward SERVER2; each mapping counts.
    let mut results = Vec::new();
    for sp in 0..10 {
        results.push(syn(&mut w, 0, NODE1, 2000 + sp, SERVER2, 443));
    }
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    assert!(
        results[3..]
            .iter()
            .all(|r| *r == Err(DropReason::HostQuota)),
        "{results:?}"
    );
    assert_eq!(w.snat().held_by(ip(NODE1)), 3);
    // Reusing one of its mappings toward another destination is not a new mapping.
    assert!(syn(&mut w, 0, NODE1, 2000, "203.0.113.30", 443).is_ok());
    assert_eq!(w.snat().held_by(ip(NODE1)), 3);
    // A calm host still gets the port left toward SERVER2.
    assert!(syn(&mut w, 0, "198.18.0.14", 1000, SERVER2, 443).is_ok());
    assert_unique_outside_tuples(&w);
}

#[test]
fn address_and_port_dependent_mapping_is_unchanged_by_the_setting() {
    for sharing in [true, false] {
        let mut cfg = lab_engine_config();
        cfg.nat.mapping = MappingMode::AddressAndPortDependent;
        cfg.nat.port_sharing = sharing;
        cfg.nat.port_min = 9000;
        cfg.nat.port_max = 9000;
        let mut w = worker(cfg);
        // One endpoint, one port, two destinations: APDM shares; no EIM entries.
        let a = syn(&mut w, 0, NODE1, 1000, SERVER, 443).unwrap();
        let b = syn(&mut w, 0, NODE1, 1000, SERVER2, 443).unwrap();
        assert_eq!(a, b);
        assert_eq!(w.snat().mappings(), 0);
        assert_eq!(w.snat().held_by(ip(NODE1)), 2, "APDM counts sessions");
    }
}

// ---- configuration

const CONF: &str = r#"[appliance]
inside_prefixes = ["198.18.0.0/15"]

[[interface]]
name = "tg-in"
role = "inside"
addresses = ["198.18.0.1/24"]

[snat]
addresses = ["203.0.113.1"]
"#;
// CONF is 10 lines; text appended starts on line 11, inside [snat].

fn load(extra: &str) -> Result<tollgate::config::Loaded, Vec<String>> {
    tollgate::config::load_str(&format!("{CONF}{extra}"), "t.toml")
        .map_err(|e| e.errors().iter().map(|d| d.to_string()).collect())
}

#[test]
fn port_sharing_is_parsed_defaults_to_true_and_is_validated_with_its_position() {
    let l = load("").unwrap();
    assert!(l.engine.nat.port_sharing);
    assert_eq!(l.engine.nat.mapping, MappingMode::EndpointIndependent);
    let l = load("port_sharing = false\n").unwrap();
    assert!(!l.engine.nat.port_sharing);
    let l = load("mapping = \"endpoint-independent\"\nport_sharing = true\n").unwrap();
    assert!(l.engine.nat.port_sharing);
    // APDM always reuses ports: true is consistent, false is a contradiction.
    let l = load("mapping = \"address-and-port-dependent\"\nport_sharing = true\n").unwrap();
    assert_eq!(l.engine.nat.mapping, MappingMode::AddressAndPortDependent);
    assert_eq!(
        load("mapping = \"address-and-port-dependent\"\nport_sharing = false\n").unwrap_err(),
        vec!["t.toml:12:16: error: snat.port_sharing = false needs mapping = \"endpoint-independent\": address-and-port-dependent mapping always reuses ports toward different destinations".to_string()]
    );
    let e = load("port_sharing = \"yes\"\n").unwrap_err();
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("t.toml:11:16: error: invalid type: string \"yes\", expected a boolean"),
        "{e:#?}"
    );
    let e = load("port_shareing = true\n").unwrap_err();
    assert!(
        e[0].starts_with("t.toml:11:1: error: unknown key \"port_shareing\" in [snat]")
            && e[0].contains("port_sharing"),
        "{e:#?}"
    );
}

// ---- property: random opens, closes and time

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Endpoint `e` opens a flow (or, if it has one, sends on it) to destination `d`.
    Open { e: u8, d: u8, tcp: bool },
    /// Endpoint `e` closes its flow to `d` (TCP: RST or FIN both ways; UDP: goes quiet).
    Close { e: u8, d: u8, fin: bool },
    /// The clock moves on (seconds), and housekeeping reclaims what expired.
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..16, 0u8..4, any::<bool>()).prop_map(|(e, d, tcp)| Op::Open { e, d, tcp }),
        2 => (0u8..16, 0u8..4, any::<bool>()).prop_map(|(e, d, fin)| Op::Close { e, d, fin }),
        1 => (0u16..40).prop_map(Op::Advance),
    ]
}

/// Endpoint `e`: four hosts with four source ports each (16 endpoints for 8 ports).
fn endpoint(e: u8) -> (String, u16) {
    (
        Ipv4Addr::new(198, 18, 0, 11 + e / 4).to_string(),
        3000 + u16::from(e % 4),
    )
}

/// Destination `d`: two servers with two ports each.
fn destination(d: u8) -> (&'static str, u16) {
    (
        [SERVER, SERVER2][usize::from(d / 2)],
        [443, 80][usize::from(d % 2)],
    )
}

fn key(e: u8, d: u8, p: u8) -> FlowKey {
    let ((s, sp), (ds, dp)) = (endpoint(e), destination(d));
    FlowKey::new(ip(&s), ip(ds), sp, dp, p)
}

fn frame(p: u8, src: &str, sp: u16, dst: &str, dp: u16, flags: &str) -> Vec<u8> {
    if p == TCP {
        tcp(src, sp, dst, dp, flags, b"x")
    } else {
        udp(src, sp, dst, dp, b"x")
    }
}

/// Sends a reply from the remote to the flow's public tuple: it must reach the flow's inside
/// endpoint, unchanged otherwise.
fn reply_reaches_its_flow(w: &mut Worker, now: u64, orig: FlowKey) -> Result<(), TestCaseError> {
    let (idx, _) = w.flows().lookup(&orig).expect("the flow is tracked");
    let r = w.flows().get(idx).reply;
    let f = frame(
        r.proto(),
        &r.src().to_string(),
        r.sport(),
        &r.dst().to_string(),
        r.dport(),
        "A",
    );
    let (v, back) = run(w, now, OUTSIDE_IF, &f);
    prop_assert!(matches!(v, Verdict::Forward { .. }), "{v:?} for {orig:?}");
    prop_assert_eq!(
        tuple(&back),
        (orig.dst(), orig.dport(), orig.src(), orig.sport())
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With a tiny pool, under any sequence of opens, closes and time: no two tracked flows
    /// share an outside 5-tuple, every reply reaches its own flow's inside endpoint, and once
    /// everything has ended the pool is whole again (no port user, mapping or host count
    /// leaked), whatever the sharing setting, quota, cooldown, address count and whether new
    /// SYNs may take over closed flows' ports.
    #[test]
    fn outside_tuples_stay_unique_replies_reach_their_flow_and_nothing_leaks(
        ops in proptest::collection::vec(op(), 1..150),
        sharing in any::<bool>(),
        quota in prop_oneof![Just(None), Just(Some(3u32))],
        cooldown in 0u32..3,
        two_addrs in any::<bool>(),
        time_wait_reuse in any::<bool>(),
    ) {
        let mut cfg = lab_engine_config();
        cfg.nat.port_min = 20000;
        cfg.nat.port_max = if two_addrs { 20003 } else { 20007 }; // 8 ports in all
        if two_addrs {
            cfg.nat.public_addrs.push(ip("203.0.113.2"));
        }
        cfg.nat.port_sharing = sharing;
        cfg.nat.per_host_quota = quota;
        cfg.nat.reuse_cooldown = cooldown;
        cfg.nat.time_wait_reuse = time_wait_reuse;
        cfg.timeouts.udp = 30;
        cfg.timeouts.tcp_syn = 20;
        cfg.timeouts.tcp_established = 60;
        cfg.timeouts.tcp_time_wait = 15;
        cfg.timeouts.tcp_rst = 5;
        let ports_per_addr = cfg.nat.port_count();
        let addrs = cfg.nat.public_addrs.clone();
        let mut w = worker(cfg);
        let mut now = 0u64;
        // Flows the model has open (by original tuple).
        let mut open: HashSet<FlowKey> = HashSet::new();
        for op in ops {
            match op {
                Op::Open { e, d, tcp } => {
                    let p = if tcp { TCP } else { UDP };
                    let k = key(e, d, p);
                    let tracked = w.flows().lookup(&k).is_some();
                    let (s, sp) = endpoint(e);
                    let (ds, dp) = destination(d);
                    if tracked && !open.contains(&k) {
                        // Closed but not yet reclaimed: leave it alone.
                    } else if tracked {
                        let (v, _) = run(&mut w, now, INSIDE_IF, &frame(p, &s, sp, ds, dp, "A"));
                        prop_assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
                    } else {
                        let first = if tcp { "S" } else { "" };
                        match run(&mut w, now, INSIDE_IF, &frame(p, &s, sp, ds, dp, first)).0 {
                            Verdict::Forward { .. } => {
                                if tcp {
                                    let (idx, _) = w.flows().lookup(&k).expect("tracked");
                                    let r = w.flows().get(idx).reply;
                                    let sa = tcp_frame(&r, "SA");
                                    let v = run(&mut w, now, OUTSIDE_IF, &sa).0;
                                    prop_assert!(matches!(v, Verdict::Forward { .. }), "SYN-ACK: {:?}", v);
                                    let (v, _) = run(&mut w, now, INSIDE_IF, &frame(p, &s, sp, ds, dp, "A"));
                                    prop_assert!(matches!(v, Verdict::Forward { .. }), "ACK: {:?}", v);
                                }
                                open.insert(k);
                            }
                            Verdict::Drop(DropReason::OutOfPorts | DropReason::HostQuota) => {}
                            v => prop_assert!(false, "unexpected {v:?}"),
                        }
                    }
                }
                Op::Close { e, d, fin } => {
                    for p in [TCP, UDP] {
                        let k = key(e, d, p);
                        if !open.remove(&k) || w.flows().lookup(&k).is_none() {
                            continue;
                        }
                        if p == TCP {
                            let (s, sp) = endpoint(e);
                            let (ds, dp) = destination(d);
                            if fin {
                                run(&mut w, now, INSIDE_IF, &tcp(&s, sp, ds, dp, "FA", b""));
                                let (idx, _) = w.flows().lookup(&k).expect("tracked");
                                let r = w.flows().get(idx).reply;
                                run(&mut w, now, OUTSIDE_IF, &tcp_frame(&r, "FA"));
                                run(&mut w, now, INSIDE_IF, &tcp(&s, sp, ds, dp, "A", b""));
                            } else {
                                run(&mut w, now, INSIDE_IF, &tcp(&s, sp, ds, dp, "R", b""));
                            }
                        }
                    }
                }
                Op::Advance(s) => {
                    now += u64::from(s) * NS;
                    w.housekeeping(now, 10_000);
                    open.retain(|k| w.flows().lookup(k).is_some());
                }
            }
            // Invariants after every step.
            let mut seen = HashSet::new();
            for (_, f) in w.flows().iter() {
                let r = f.reply;
                prop_assert!(addrs.contains(&r.dst()), "every flow here is SNATed: {r:?}");
                prop_assert!((20000..=20007).contains(&r.dport()));
                prop_assert!(
                    seen.insert((r.src(), r.sport(), r.dst(), r.dport(), r.proto())),
                    "two live flows share the outside tuple {:?}", r
                );
            }
            let keys: Vec<FlowKey> = open.iter().copied().collect();
            for k in keys {
                reply_reaches_its_flow(&mut w, now, k)?;
            }
        }
        // Everything ends: TCP flows reset, then time passes.
        for k in &open {
            if k.proto() == TCP {
                run(&mut w, now, INSIDE_IF, &tcp(&k.src().to_string(), k.sport(), &k.dst().to_string(), k.dport(), "R", b""));
            }
        }
        now += 100_000 * NS;
        w.housekeeping(now, 100_000);
        prop_assert_eq!(w.flow_count(), 0);
        prop_assert_eq!(w.snat().mappings(), 0, "mapping entries leaked");
        prop_assert_eq!(w.snat().holders().count(), 0, "host counts leaked");
        for a in 0..addrs.len() {
            for p in [TCP, UDP] {
                prop_assert_eq!(w.snat().utilisation(a, p), (0, ports_per_addr), "port users leaked");
            }
        }
        // And every port can be handed out again (once the last ones freed have cooled), one
        // endpoint each toward one server.
        now += u64::from(cooldown) * NS;
        let mut got = HashSet::new();
        for i in 0..(ports_per_addr as u16 * addrs.len() as u16) {
            let (v, out) = run(&mut w, now, INSIDE_IF, &udp(&format!("198.18.0.{}", 100 + i), 999, SERVER, 53, b"q"));
            prop_assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
            let (src, sp, _, _) = tuple(&out);
            prop_assert!(got.insert((src, sp)));
        }
    }
}

/// A TCP segment from the remote end of the reply tuple `r` to its public side.
fn tcp_frame(r: &FlowKey, flags: &str) -> Vec<u8> {
    tcp(
        &r.src().to_string(),
        r.sport(),
        &r.dst().to_string(),
        r.dport(),
        flags,
        b"",
    )
}
