//! Issue 21, recovery after close: under SNAT port pressure (no free port, none shareable
//! toward the destination) a new TCP SYN takes over the public port of a closed flow (FIN
//! both ways = TIME_WAIT, or reset) toward the same remote address and port, as the Linux
//! kernel's conntrack lets a SYN replace a TIME_WAIT entry; with a free port the closed flows
//! keep theirs. On byte fixtures with a fake clock, like tests/engine_snat_sharing.rs.

mod engine_util;

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;

use engine_util::*;
use tollgate::conntrack::{FlowKey, TcpState, TimeoutClass};
use tollgate::datapath::{DropReason, Verdict, Worker};
use tollgate::nat::MappingMode;

const TCP: u8 = 6;

/// The lab worker with SNAT ports `lo..=hi` (port sharing on, no cooldown).
fn worker_with(lo: u16, hi: u16) -> Worker {
    let mut cfg = lab_engine_config();
    cfg.nat.port_min = lo;
    cfg.nat.port_max = hi;
    worker(cfg)
}

fn reused(w: &Worker) -> u64 {
    w.counters().snat_time_wait_reused.load(Relaxed)
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

/// A segment with `flags` from `dst:dport` to the public port reaches `src:sport`.
fn answer_reaches(
    w: &mut Worker,
    now: u64,
    (dst, dport): (&str, u16),
    public: u16,
    (src, sport): (&str, u16),
    flags: &str,
) {
    let (v, back) = run(
        w,
        now,
        OUTSIDE_IF,
        &tcp(dst, dport, PUBLIC, public, flags, b""),
    );
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(tuple(&back), (ip(dst), dport, ip(src), sport));
}

/// Opens `src:sport -> dst:dport` (SYN, SYN-ACK, ACK): its public port.
fn open(w: &mut Worker, now: u64, src: &str, sport: u16, dst: &str, dport: u16) -> u16 {
    let p = syn(w, now, src, sport, dst, dport).expect("a port");
    answer_reaches(w, now, (dst, dport), p, (src, sport), "SA");
    let (v, _) = run(w, now, INSIDE_IF, &tcp(src, sport, dst, dport, "A", b""));
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    p
}

/// Closes normally: FIN from inside, FIN from the server, the last ACK: TIME_WAIT.
fn close_fin(w: &mut Worker, now: u64, src: &str, sport: u16, dst: &str, dport: u16, public: u16) {
    let (v, _) = run(w, now, INSIDE_IF, &tcp(src, sport, dst, dport, "FA", b""));
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    answer_reaches(w, now, (dst, dport), public, (src, sport), "FA");
    let (v, _) = run(w, now, INSIDE_IF, &tcp(src, sport, dst, dport, "A", b""));
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(state(w, src, sport, dst, dport), Some(TcpState::TimeWait));
}

fn state(w: &Worker, src: &str, sport: u16, dst: &str, dport: u16) -> Option<TcpState> {
    let (i, _) = w
        .flows()
        .lookup(&FlowKey::new(ip(src), ip(dst), sport, dport, TCP))?;
    Some(w.flows().get(i).tcp.state)
}

/// Every flow taken out of the table is counted, whatever took it (a takeover here): created -
/// removed = tracked, and expiries are a part of the removals.
fn assert_accounting(w: &Worker) {
    let c = w.counters();
    let (created, removed) = (c.flows_created.load(Relaxed), c.flows_removed.load(Relaxed));
    assert_eq!(
        created - removed,
        w.flow_count() as u64,
        "created {created} removed {removed}"
    );
    assert!(c.flows_expired.load(Relaxed) <= removed);
}

fn assert_unique_outside_tuples(w: &Worker) {
    assert_accounting(w);
    let mut seen = HashSet::new();
    for (_, f) in w.flows().iter() {
        let r = f.reply;
        assert!(
            seen.insert((r.src(), r.sport(), r.dst(), r.dport(), r.proto())),
            "two live flows share the outside tuple {r:?}"
        );
    }
}

/// Everything ends and expires: nothing of the pool is leaked.
fn assert_pool_whole_after_expiry(w: &mut Worker, now: u64, ports: u32) {
    w.housekeeping(now + 100_000 * NS, 100_000);
    assert_eq!(w.flow_count(), 0);
    assert_accounting(w);
    assert_eq!(w.snat().utilisation(0, TCP), (0, ports));
    assert_eq!(w.snat().mappings(), 0);
    assert_eq!(w.snat().holders().count(), 0);
}

#[test]
fn four_closed_flows_let_new_syns_take_over_their_ports_at_once_oldest_first() {
    let mut w = worker_with(5000, 5003);
    // Four connections to one server take the whole pool, then close normally, one after
    // the other (the first closed is the oldest TIME_WAIT flow).
    let old: Vec<(u16, u16)> = (0..4)
        .map(|i| (40000 + i, open(&mut w, 0, NODE1, 40000 + i, SERVER, 443)))
        .collect();
    for (k, &(sport, public)) in old.iter().enumerate() {
        close_fin(
            &mut w,
            NS + k as u64 * NS / 10,
            NODE1,
            sport,
            SERVER,
            443,
            public,
        );
    }
    assert_eq!(w.flows().class_len(TimeoutClass::TcpTimeWait), 4);
    assert_eq!(w.snat().utilisation(0, TCP), (4, 4));
    assert_eq!(reused(&w), 0);

    // Two seconds later (TIME_WAIT is 120 s): a new connection to the same server gets a
    // port at once, the one of the oldest closed flow, which is gone.
    let t = 3 * NS;
    let p = syn(&mut w, t, NODE1, 41000, SERVER, 443).expect("a port at once");
    assert_eq!(p, old[0].1, "the oldest TIME_WAIT flow's port");
    assert_eq!(reused(&w), 1, "counted");
    assert_eq!(
        state(&w, NODE1, old[0].0, SERVER, 443),
        None,
        "the old flow is gone"
    );
    assert_eq!(w.flow_count(), 4);
    assert_eq!(w.flows().class_len(TimeoutClass::TcpTimeWait), 3);
    assert_unique_outside_tuples(&w);
    // The server's answer reaches the new inside endpoint.
    answer_reaches(&mut w, t, (SERVER, 443), p, (NODE1, 41000), "SA");
    assert_eq!(
        state(&w, NODE1, 41000, SERVER, 443),
        Some(TcpState::Established)
    );
    // A late segment of the old connection from inside matches no flow and starts none.
    let (v, _) = run(
        &mut w,
        t,
        INSIDE_IF,
        &tcp(NODE1, old[0].0, SERVER, 443, "A", b""),
    );
    assert_eq!(v, Verdict::Drop(DropReason::TcpNonSyn));

    // The three others too, in close order; then the pool is full of live flows.
    let mut new_ports = vec![p];
    for i in 1..4u16 {
        let q = syn(&mut w, t, NODE1, 41000 + i, SERVER, 443).expect("a port at once");
        assert_eq!(q, old[usize::from(i)].1);
        answer_reaches(&mut w, t, (SERVER, 443), q, (NODE1, 41000 + i), "SA");
        new_ports.push(q);
    }
    assert_eq!(reused(&w), 4);
    assert_eq!(w.flows().class_len(TimeoutClass::TcpTimeWait), 0);
    assert_eq!(
        syn(&mut w, t, NODE1, 41010, SERVER, 443),
        Err(DropReason::OutOfPorts),
        "live flows are never taken over"
    );
    assert_eq!(reused(&w), 4);
    // Accounting: four ports, four mappings, one host holding them.
    assert_eq!(w.snat().utilisation(0, TCP), (4, 4));
    assert_eq!(w.snat().mappings(), 4);
    assert_eq!(w.snat().held_by(ip(NODE1)), 4);
    assert_unique_outside_tuples(&w);
    // Each new flow's replies reach it.
    for (i, &q) in new_ports.iter().enumerate() {
        answer_reaches(&mut w, t, (SERVER, 443), q, (NODE1, 41000 + i as u16), "A");
    }
    assert_pool_whole_after_expiry(&mut w, t, 4);
}

#[test]
fn with_a_free_port_the_time_wait_flows_keep_theirs() {
    let mut w = worker_with(5000, 5004);
    let old: Vec<(u16, u16)> = (0..4)
        .map(|i| (40000 + i, open(&mut w, 0, NODE1, 40000 + i, SERVER, 443)))
        .collect();
    for &(sport, public) in &old {
        close_fin(&mut w, NS, NODE1, sport, SERVER, 443, public);
    }
    // One port is still free: the new connection gets it, the TIME_WAIT flows stay.
    let olds: HashSet<u16> = old.iter().map(|o| o.1).collect();
    let p = syn(&mut w, 2 * NS, NODE1, 41000, SERVER, 443).unwrap();
    assert!(!olds.contains(&p), "the free port, not a TIME_WAIT one");
    assert_eq!(reused(&w), 0);
    assert_eq!(w.flows().class_len(TimeoutClass::TcpTimeWait), 4);
    for &(sport, _) in &old {
        assert_eq!(
            state(&w, NODE1, sport, SERVER, 443),
            Some(TcpState::TimeWait)
        );
    }
    // Toward another server every busy port is shareable: still no takeover.
    let q = syn(&mut w, 2 * NS, NODE2, 41000, SERVER2, 443).unwrap();
    assert_eq!(reused(&w), 0);
    assert_eq!(w.flows().class_len(TimeoutClass::TcpTimeWait), 4);
    answer_reaches(&mut w, 2 * NS, (SERVER2, 443), q, (NODE2, 41000), "SA");
    // Only now, with no port left toward SERVER, does a SYN take one over.
    let r = syn(&mut w, 2 * NS, NODE1, 41001, SERVER, 443).unwrap();
    assert!(olds.contains(&r));
    assert_eq!(reused(&w), 1);
    assert_eq!(w.flows().class_len(TimeoutClass::TcpTimeWait), 3);
    assert_unique_outside_tuples(&w);
    assert_pool_whole_after_expiry(&mut w, 2 * NS, 5);
}

#[test]
fn a_reset_flow_is_taken_over_and_an_established_or_closing_one_never() {
    let mut w = worker_with(6000, 6002);
    let a = open(&mut w, 0, NODE1, 40000, SERVER, 443);
    let b = open(&mut w, 0, NODE1, 40001, SERVER, 443);
    let c = open(&mut w, 0, NODE1, 40002, SERVER, 443);
    // b is half closed (FIN from inside only): still live.
    run(
        &mut w,
        NS,
        INSIDE_IF,
        &tcp(NODE1, 40001, SERVER, 443, "FA", b""),
    );
    assert_eq!(
        state(&w, NODE1, 40001, SERVER, 443),
        Some(TcpState::Closing)
    );
    // Nothing closed yet: refused, and counted as before.
    assert_eq!(
        syn(&mut w, NS, NODE2, 41000, SERVER, 443),
        Err(DropReason::OutOfPorts)
    );
    // The server resets c.
    answer_reaches(&mut w, NS, (SERVER, 443), c, (NODE1, 40002), "R");
    assert_eq!(state(&w, NODE1, 40002, SERVER, 443), Some(TcpState::Closed));
    // The failed search above is not remembered past the reset: c's port is taken over.
    assert_eq!(syn(&mut w, NS, NODE2, 41000, SERVER, 443), Ok(c));
    assert_eq!(reused(&w), 1);
    answer_reaches(&mut w, NS, (SERVER, 443), c, (NODE2, 41000), "SA");
    // a (established) and b (closing) are never taken.
    assert_eq!(
        syn(&mut w, NS, NODE2, 41001, SERVER, 443),
        Err(DropReason::OutOfPorts)
    );
    assert_eq!(reused(&w), 1);
    answer_reaches(&mut w, NS, (SERVER, 443), a, (NODE1, 40000), "A");
    answer_reaches(&mut w, NS, (SERVER, 443), b, (NODE1, 40001), "A");
    assert_unique_outside_tuples(&w);
    assert_pool_whole_after_expiry(&mut w, NS, 3);
}

#[test]
fn an_endpoint_whose_mapping_port_is_closed_toward_the_server_keeps_its_port() {
    let mut w = worker_with(7000, 7001);
    // NODE2:41000 holds port a (its mapping) toward SERVER2; NODE1 holds a and b toward
    // SERVER (a shared with NODE2's mapping).
    let a = open(&mut w, 0, NODE2, 41000, SERVER2, 443);
    let b = open(&mut w, 0, NODE1, 40000, SERVER, 443);
    assert_ne!(a, b);
    let a1 = open(&mut w, 0, NODE1, 40001, SERVER, 443);
    assert_eq!(a1, a, "shares NODE2's port toward another server");
    // Both of NODE1's flows close (b first: the oldest).
    close_fin(&mut w, NS, NODE1, 40000, SERVER, 443, b);
    close_fin(&mut w, 2 * NS, NODE1, 40001, SERVER, 443, a);
    // NODE2's endpoint now talks to SERVER: its mapping a is held there by a closed flow;
    // it takes that one over (not the older b) and keeps its public port.
    assert_eq!(syn(&mut w, 3 * NS, NODE2, 41000, SERVER, 443), Ok(a));
    assert_eq!(reused(&w), 1);
    assert_eq!(w.counters().eim_collision_moved.load(Relaxed), 0);
    assert_eq!(
        state(&w, NODE1, 40000, SERVER, 443),
        Some(TcpState::TimeWait)
    );
    answer_reaches(&mut w, 3 * NS, (SERVER, 443), a, (NODE2, 41000), "SA");
    assert_unique_outside_tuples(&w);
    assert_pool_whole_after_expiry(&mut w, 3 * NS, 2);
}

#[test]
fn with_time_wait_reuse_off_closed_flows_hold_their_ports_until_they_expire() {
    let mut cfg = lab_engine_config();
    cfg.nat.port_min = 5000;
    cfg.nat.port_max = 5001;
    cfg.nat.time_wait_reuse = false;
    cfg.timeouts.tcp_time_wait = 30;
    let mut w = worker(cfg);
    for i in 0..2 {
        let p = open(&mut w, 0, NODE1, 40000 + i, SERVER, 443);
        close_fin(&mut w, NS, NODE1, 40000 + i, SERVER, 443, p);
    }
    assert_eq!(
        syn(&mut w, 2 * NS, NODE1, 41000, SERVER, 443),
        Err(DropReason::OutOfPorts)
    );
    assert_eq!(reused(&w), 0);
    // After TIME_WAIT (plus the relink granularity) the ports come back the ordinary way.
    w.housekeeping(NS + 33 * NS, 100);
    assert!(syn(&mut w, NS + 33 * NS, NODE1, 41000, SERVER, 443).is_ok());
    assert_eq!(reused(&w), 0);
}

#[test]
fn address_and_port_dependent_mapping_and_strict_eim_take_over_too() {
    for (mapping, sharing) in [
        (MappingMode::AddressAndPortDependent, true),
        (MappingMode::EndpointIndependent, false),
    ] {
        let mut cfg = lab_engine_config();
        cfg.nat.port_min = 8000;
        cfg.nat.port_max = 8001;
        cfg.nat.mapping = mapping;
        cfg.nat.port_sharing = sharing;
        let mut w = worker(cfg);
        let a = open(&mut w, 0, NODE1, 40000, SERVER, 443);
        let b = open(&mut w, 0, NODE1, 40001, SERVER, 443);
        close_fin(&mut w, NS, NODE1, 40000, SERVER, 443, a);
        assert_eq!(
            syn(&mut w, 2 * NS, NODE2, 41000, SERVER, 443),
            Ok(a),
            "{mapping:?}"
        );
        answer_reaches(&mut w, 2 * NS, (SERVER, 443), a, (NODE2, 41000), "SA");
        assert_eq!(reused(&w), 1);
        assert_eq!(w.snat().held_by(ip(NODE1)), 1);
        assert_eq!(w.snat().held_by(ip(NODE2)), 1);
        answer_reaches(&mut w, 2 * NS, (SERVER, 443), b, (NODE1, 40001), "A");
        assert_unique_outside_tuples(&w);
        assert_pool_whole_after_expiry(&mut w, 2 * NS, 2);
    }
}

#[test]
fn strict_eim_does_not_take_over_a_port_its_holder_still_uses_elsewhere() {
    let mut cfg = lab_engine_config();
    cfg.nat.port_min = 8000;
    cfg.nat.port_max = 8000;
    cfg.nat.port_sharing = false;
    let mut w = worker(cfg);
    // NODE1's endpoint holds the only port, toward SERVER (closed) and SERVER2 (live).
    let a = open(&mut w, 0, NODE1, 40000, SERVER, 443);
    assert_eq!(open(&mut w, 0, NODE1, 40000, SERVER2, 443), a);
    close_fin(&mut w, NS, NODE1, 40000, SERVER, 443, a);
    // Another endpoint may not become a second holder of the port in strict mode.
    assert_eq!(
        syn(&mut w, 2 * NS, NODE2, 41000, SERVER, 443),
        Err(DropReason::OutOfPorts)
    );
    assert_eq!(reused(&w), 0);
    // NODE1's endpoint itself, from the same port toward SERVER: the same tuple reopens the
    // closed flow (RFC 6191 style), which is no takeover.
    assert_eq!(syn(&mut w, 2 * NS, NODE1, 40000, SERVER, 443), Ok(a));
    assert_eq!(reused(&w), 0);
}

#[test]
fn the_search_is_bounded_a_closed_flow_behind_64_older_ones_elsewhere_is_not_found() {
    // One port shared toward 70 servers; the flow toward SERVER closes last, behind 69
    // closed flows toward the others.
    let mut w = worker_with(9000, 9000);
    let server = |i: u16| format!("203.0.113.{}", 100 + i);
    let p = open(&mut w, 0, NODE1, 40000, &server(0), 443);
    for i in 1..70u16 {
        assert_eq!(
            open(
                &mut w,
                0,
                &format!("198.18.0.{}", 100 + i),
                40000,
                &server(i),
                443
            ),
            p
        );
    }
    let last = open(&mut w, 0, NODE2, 40000, SERVER, 443);
    assert_eq!(last, p);
    close_fin(&mut w, NS, NODE1, 40000, &server(0), 443, p);
    for i in 1..70u16 {
        close_fin(
            &mut w,
            NS,
            &format!("198.18.0.{}", 100 + i),
            40000,
            &server(i),
            443,
            p,
        );
    }
    close_fin(&mut w, 2 * NS, NODE2, 40000, SERVER, 443, p);
    // The 64 oldest TIME_WAIT flows go elsewhere: refused, as without takeover.
    assert_eq!(
        syn(&mut w, 3 * NS, NODE1, 41000, SERVER, 443),
        Err(DropReason::OutOfPorts)
    );
    assert_eq!(reused(&w), 0);
    // Toward the oldest closed flow's server it is found at once.
    assert_eq!(syn(&mut w, 3 * NS, NODE1, 41001, &server(0), 443), Ok(p));
    assert_eq!(reused(&w), 1);
}

#[test]
fn time_wait_reuse_is_parsed_and_on_by_default() {
    let conf = |extra: &str| {
        format!(
            "[appliance]\ninside_prefixes = [\"198.18.0.0/15\"]\n\n[[interface]]\nname = \"tg-in\"\nrole = \"inside\"\naddresses = [\"198.18.0.1/24\"]\n\n[snat]\naddresses = [\"203.0.113.1\"]\n{extra}"
        )
    };
    let load = |extra: &str| tollgate::config::load_str(&conf(extra), "t.toml");
    assert!(load("").unwrap().engine.nat.time_wait_reuse);
    assert!(tollgate::nat::NatConfig::default().time_wait_reuse);
    let off = load("time_wait_reuse = false\n").unwrap();
    assert!(!off.engine.nat.time_wait_reuse);
    let e = load("time_wait_reuse = 1\n").unwrap_err();
    let e: Vec<String> = e.errors().iter().map(|d| d.to_string()).collect();
    assert!(
        e[0].starts_with("t.toml:11:19: error: invalid type: integer \"1\", expected a boolean"),
        "{e:#?}"
    );
}
