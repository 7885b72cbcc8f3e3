//! `tollgate bench snat-live` end to end: real TCP connections from the lab's inside hosts
//! through the appliance namespace, with a 64-port SNAT pool, first through the kernel's
//! nftables masquerade, then through `tollgate run` (the real binary). Needs root (skips
//! otherwise); the namespaces have a unique per-run prefix and are removed on every exit path
//! (the lab's Drop guard).

mod common;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::root_or_skip;
use tollgate_lab::snatbench::live::{self, FailKind, LiveOptions};
use tollgate_lab::snatbench::Mapping;

const POOL: usize = 64;
const FLOWS: usize = 80;
const TIME_WAIT_S: u32 = 2;

/// One live run at a time: two at once on a loaded 2-core machine blur the timings (a connect
/// slower than 500 ms counts as a refused SYN).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// No namespace of the run is left behind.
fn assert_removed(prefix: &str) {
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(prefix),
        "namespaces {prefix}* removed"
    );
}

#[test]
fn tollgate_holds_the_whole_pool_and_the_kernel_reports_numbers() {
    if !root_or_skip("tollgate_holds_the_whole_pool_and_the_kernel_reports_numbers") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut o = LiveOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_tollgate")));
    o.port_min = 1024;
    o.port_max = 1024 + POOL as u16 - 1;
    o.flows = FLOWS;
    o.hosts = 2;
    o.concurrency = 16;
    o.connect_timeout = Duration::from_millis(1500);
    o.time_wait_s = TIME_WAIT_S;
    o.recovery_max = Duration::from_secs(20);
    o.collide_flows = 20;
    o.two_servers = 0; // tollgate_modes_in_the_two_server_case
    let r = live::run(&o, Arc::new(AtomicBool::new(false)), &mut |m| {
        eprintln!("{m}")
    })
    .expect("live run");
    eprint!("{}", r.table());

    assert_removed(&r.prefix);

    let t = r.tollgate(Mapping::default()).expect("tollgate ran");
    let e = t.exhaustion.as_ref().expect("the single-server phases ran");
    assert_eq!(t.pool, POOL);
    assert_eq!(e.attempted, FLOWS);
    // Every port of the pool is used before the first refusal, and no more.
    assert_eq!(e.held_at_first_failure, Some(POOL), "{e:?}");
    assert_eq!(e.held_at_first_refusal, Some(POOL), "{e:?}");
    assert_eq!(e.established, POOL);
    assert_eq!(e.established_after_retransmit, 0);
    assert_eq!(e.failed, FLOWS - POOL);
    // Refused at once with ICMP 3/13: the client sees EHOSTUNREACH, not a timeout.
    assert_eq!(e.first_failure, Some(FailKind::IcmpHostUnreachable));
    assert_eq!(
        e.failures.get("icmp_host_unreachable").copied(),
        Some(FLOWS - POOL)
    );
    assert_eq!(e.pool_ports_used, POOL, "the server saw every pool port");
    assert_eq!(e.pool_ports_unused, 0);
    assert_eq!(e.server_saw_outside_pool, 0);
    // ...and counted: out_of_ports, one ICMP error and one decision-log entry per refusal.
    assert_eq!(t.counters.nat_refusals, Some((FLOWS - POOL) as u64));
    assert_eq!(t.counters.replies, Some((FLOWS - POOL) as u64));
    assert_eq!(
        t.counters.decision_log_out_of_ports,
        Some((FLOWS - POOL) as u64)
    );
    // After closing everything, a new connection succeeds at once: the pool is full of
    // TIME_WAIT flows toward the server, and the probe's SYN takes one's port over.
    let rec = t
        .recovery
        .as_ref()
        .and_then(|r| r.after_s)
        .expect("tollgate recovered");
    assert!(rec < f64::from(TIME_WAIT_S), "recovery {rec} s");
    assert_eq!(t.collision.len(), 3, "every collision order ran");
    for c in &t.collision {
        assert_eq!(
            c.established,
            [20, 20],
            "colliding source ports all pass: {c:?}"
        );
    }

    // The kernel: random, so only bounds.
    let k = r.kernel.as_ref().expect("kernel ran");
    let ke = k.exhaustion.as_ref().expect("the single-server phases ran");
    assert_eq!(ke.attempted, FLOWS);
    assert_eq!(ke.established + ke.failed, FLOWS);
    assert!(ke.established <= POOL, "{ke:?}");
    assert!(ke.established > 0, "{ke:?}");
    assert!(ke.failed >= FLOWS - POOL, "{ke:?}");
    assert!(
        ke.held_at_first_failure.is_some_and(|h| h <= POOL),
        "{ke:?}"
    );
    assert!(ke.pool_ports_used <= POOL);
    assert_eq!(ke.server_saw_outside_pool, 0);
    assert!(k.counters.nat_refusals.is_some_and(|n| n > 0), "{k:?}");
    assert!(
        k.recovery.as_ref().is_some_and(|r| r.after_s.is_some()),
        "kernel recovered"
    );
    assert_eq!(k.collision.len(), 3, "every collision order ran");
    for kc in &k.collision {
        assert_eq!(kc.established[0] + kc.failed[0], 20);
        assert_eq!(kc.established[1] + kc.failed[1], 20);
    }
    assert!(t.ratio_held_at_first_failure.is_some());
}

/// Issue 21's case with real connections: a 64-port pool, 64 connections to server A and 64
/// to server B, interleaved, each from its own inside endpoint. Tollgate with port sharing
/// (the default) and with address-and-port-dependent mapping holds all 128; strict
/// endpoint-independent mapping holds one endpoint per port, 64, and refuses the rest with
/// ICMP; the kernel's masquerade runs alongside (bounds only).
#[test]
fn tollgate_modes_in_the_two_server_case() {
    if !root_or_skip("tollgate_modes_in_the_two_server_case") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut o = LiveOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_tollgate")));
    o.port_min = 1024;
    o.port_max = 1024 + POOL as u16 - 1;
    o.hosts = 4;
    o.concurrency = 16;
    o.single = false;
    o.two_servers = POOL;
    o.mappings = vec![
        Mapping::EndpointIndependent,
        Mapping::EndpointIndependentStrict,
        Mapping::AddressAndPortDependent,
    ];
    let r = live::run(&o, Arc::new(AtomicBool::new(false)), &mut |m| {
        eprintln!("{m}")
    })
    .expect("live run");
    eprint!("{}", r.table());
    assert_removed(&r.prefix);
    assert_eq!(r.tollgate.len(), 3);
    for m in [
        Mapping::EndpointIndependent,
        Mapping::AddressAndPortDependent,
    ] {
        let t = r.tollgate(m).expect("ran");
        assert!(t.exhaustion.is_none() && t.recovery.is_none() && t.collision.is_empty());
        let two = t.two_servers.as_ref().expect("two-server case ran");
        let e = &two.exhaustion;
        assert_eq!(e.attempted, 2 * POOL, "{}", t.label());
        assert_eq!(e.established, 2 * POOL, "{}: {two:?}", t.label());
        assert_eq!(two.established_to, [POOL, POOL]);
        assert_eq!(e.held_at_first_refusal, None, "{}: {two:?}", t.label());
        assert_eq!(e.pool_ports_used, POOL);
        assert_eq!(e.server_saw_outside_pool, 0);
        // 128 flows on 64 ports: each port toward both servers.
        assert_eq!(two.ports_toward_both, POOL, "{}", t.label());
        assert_eq!(two.nat_refusals, Some(0));
    }
    let t = r.tollgate(Mapping::EndpointIndependentStrict).expect("ran");
    let two = t.two_servers.as_ref().expect("two-server case ran");
    let e = &two.exhaustion;
    assert_eq!(e.established, POOL, "one endpoint per port: {two:?}");
    assert_eq!(e.held_at_first_failure, Some(POOL));
    assert_eq!(e.held_at_first_refusal, Some(POOL));
    assert_eq!(e.first_failure, Some(FailKind::IcmpHostUnreachable));
    assert_eq!(two.established_to, [POOL / 2, POOL / 2], "interleaved");
    assert_eq!(two.ports_toward_both, 0);
    assert_eq!(two.nat_refusals, Some(POOL as u64));

    let k = r.kernel.as_ref().expect("kernel ran");
    let two = k.two_servers.as_ref().expect("two-server case ran");
    let e = &two.exhaustion;
    assert_eq!(e.attempted, 2 * POOL);
    assert_eq!(e.established + e.failed, 2 * POOL);
    assert!(e.pool_ports_used <= POOL);
    assert_eq!(e.server_saw_outside_pool, 0);
}
