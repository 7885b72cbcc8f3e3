//! Port borrowing between workers (`nat::PortLedger`): a worker whose own slice of the SNAT
//! range is dry takes a free port from another worker's slice, so the whole pool is used
//! before the first refusal whatever the worker count; frames from outside to a borrowed
//! port are handed (`Worker::owner_of`) to the borrower; a port given back is its owner's
//! again. On byte fixtures with a fake clock, like tests/engine_nat.rs.

mod engine_util;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use engine_util::*;
use tollgate::datapath::{DropReason, EngineConfig, Verdict, Worker};
use tollgate::nat::{MappingMode, PortLedger};

const TCP: u8 = 6;

/// `n` workers of the lab config with SNAT ports `lo..=hi`, sharing one ledger.
fn workers(n: usize, lo: u16, hi: u16, mapping: MappingMode, sharing: bool) -> Vec<Worker> {
    let mut cfg: EngineConfig = lab_engine_config();
    cfg.nat.port_min = lo;
    cfg.nat.port_max = hi;
    cfg.nat.mapping = mapping;
    cfg.nat.port_sharing = sharing;
    cfg.nat.reuse_cooldown = 2;
    let cfg = Arc::new(cfg);
    let ledger = Arc::new(PortLedger::new(&cfg.nat, n));
    let mut ws = WorkerKit::new()
        .config(cfg)
        .policy(permissive())
        .of(n)
        .build_all();
    for w in &mut ws {
        w.share_ports(ledger.clone());
    }
    ws
}

/// Runs a frame on the worker that owns it (as the runtime's hand-off does): `owner_of`, or
/// `arrived` when any worker may take it.
fn deliver(
    ws: &mut [Worker],
    arrived: usize,
    now: u64,
    rx_if: u8,
    frame: &[u8],
) -> (usize, Verdict, Vec<u8>) {
    let owner = ws[arrived].owner_of(frame).unwrap_or(arrived);
    // Every worker agrees on the owner.
    for w in ws.iter() {
        assert_eq!(w.owner_of(frame).unwrap_or(arrived), owner);
    }
    let (v, out) = run(&mut ws[owner], now, rx_if, frame);
    (owner, v, out)
}

/// Inside host number `i` (198.18.1.0 + i: 256 hosts).
fn host(i: usize) -> String {
    Ipv4Addr::new(198, 18, 1 + (i / 250) as u8, (i % 250) as u8 + 1).to_string()
}

/// A SYN from `src:sport` to `dst:443`, arriving at worker 0 (any worker: the owner is the
/// inside host's). Ok(public port, worker) or the drop reason.
fn syn(
    ws: &mut [Worker],
    now: u64,
    src: &str,
    sport: u16,
    dst: &str,
) -> Result<(u16, usize), DropReason> {
    match deliver(ws, 0, now, INSIDE_IF, &tcp(src, sport, dst, 443, "S", b"")) {
        (w, Verdict::Forward { .. }, out) => {
            let (s, sp, d, _) = tuple(&out);
            assert_eq!((s, d), (ip(PUBLIC), ip(dst)));
            Ok((sp, w))
        }
        (_, Verdict::Drop(r), _) => Err(r),
        (_, v, _) => panic!("unexpected verdict {v:?}"),
    }
}

/// Opens connections from distinct hosts to SERVER until the first refusal; returns the
/// public ports granted (with the worker holding each flow and the host index).
fn fill(ws: &mut [Worker], now: u64, max: usize) -> (Vec<(u16, usize, usize)>, Option<DropReason>) {
    let mut got = Vec::new();
    for i in 0..max {
        match syn(ws, now, &host(i), 40000, SERVER) {
            Ok((p, w)) => got.push((p, w, i)),
            Err(r) => return (got, Some(r)),
        }
    }
    (got, None)
}

fn used(ws: &[Worker]) -> u32 {
    ws.iter().map(|w| w.snat().utilisation(0, TCP).0).sum()
}

#[test]
fn every_port_of_the_pool_is_held_at_the_first_refusal_with_2_and_4_workers() {
    for n in [2, 4] {
        for (mapping, sharing) in [
            (MappingMode::EndpointIndependent, true),
            (MappingMode::EndpointIndependent, false),
            (MappingMode::AddressAndPortDependent, true),
        ] {
            let mut ws = workers(n, 5000, 5063, mapping, sharing);
            let (got, refused) = fill(&mut ws, NS, 200);
            let what = format!("{n} workers, {mapping:?}, sharing {sharing}");
            assert_eq!(
                got.len(),
                64,
                "{what}: 64 of 64 ports before the first refusal"
            );
            assert_eq!(refused, Some(DropReason::OutOfPorts), "{what}");
            let ports: HashSet<u16> = got.iter().map(|g| g.0).collect();
            assert_eq!(ports.len(), 64, "{what}: each port once");
            assert_eq!(used(&ws), 64, "{what}: utilisation sums to the pool");
            // Some flows hold ports of another worker's slice: their answers, steered by
            // port to the slice's owner, are handed to the borrower and reach the host.
            let borrowed: usize = ws.iter().map(|w| w.snat().borrowed_ports()).sum();
            assert!(borrowed > 0, "{what}: the hosts' worker borrowed");
            for &(p, w, i) in &got {
                let back = tcp(SERVER, 443, PUBLIC, p, "SA", b"");
                let (owner, v, out) = deliver(&mut ws, 0, NS, OUTSIDE_IF, &back);
                assert_eq!(
                    owner, w,
                    "{what}: the answer to port {p} goes to its flow's worker"
                );
                assert!(matches!(v, Verdict::Forward { .. }), "{what}: {v:?}");
                assert_eq!(tuple(&out), (ip(SERVER), 443, ip(&host(i)), 40000));
            }
        }
    }
}

#[test]
fn a_borrowed_port_given_back_serves_its_owner_again_after_the_cooldown() {
    let mut ws = workers(2, 5000, 5007, MappingMode::EndpointIndependent, false);
    let (got, refused) = fill(&mut ws, NS, 20);
    assert_eq!((got.len(), refused), (8, Some(DropReason::OutOfPorts)));
    // Close every flow with a RST from the host: the ports go back to the pool.
    for &(_, _, i) in &got {
        let (_, v, _) = deliver(
            &mut ws,
            0,
            NS,
            INSIDE_IF,
            &tcp(&host(i), 40000, SERVER, 443, "R", b""),
        );
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    }
    let t = 300 * NS; // past any hold of a closed flow and the 2 s cooldown
    for w in ws.iter_mut() {
        w.housekeeping(t, 1000);
    }
    assert_eq!(used(&ws), 0, "every port given back");
    assert_eq!(
        ws.iter().map(|w| w.snat().borrowed_ports()).sum::<usize>(),
        0
    );
    // Given back when the flows were reclaimed (at t): 2 s later another round from other
    // hosts gets all 8 again, borrowing again.
    let mut n = 0;
    for i in 100..120 {
        if syn(&mut ws, t + 3 * NS, &host(i), 40001, SERVER2).is_ok() {
            n += 1;
        }
    }
    assert_eq!(n, 8);
}

#[test]
fn without_a_ledger_a_worker_refuses_when_its_slice_is_dry() {
    // The behaviour before borrowing, kept for one-worker engines and tests without a ledger.
    let mut cfg = lab_engine_config();
    cfg.nat.port_min = 5000;
    cfg.nat.port_max = 5063;
    let mut ws = WorkerKit::new()
        .config(cfg)
        .policy(permissive())
        .of(2)
        .build_all();
    let (got, _) = fill(&mut ws, NS, 200);
    assert!(got.len() < 64, "{} held", got.len());
}

#[test]
fn a_dnat_rules_public_port_in_a_workers_slice_is_never_a_snat_port_and_its_flows_live_on_worker_0()
{
    // 8070..=8085 over 2 workers: 8080 (the test policy's DNAT port) is in worker 1's slice.
    let mut ws = workers(2, 8070, 8085, MappingMode::EndpointIndependent, false);
    let (got, refused) = fill(&mut ws, NS, 40);
    assert_eq!(refused, Some(DropReason::OutOfPorts));
    assert_eq!(got.len(), 15, "16 ports less the DNAT one");
    assert!(got.iter().all(|g| g.0 != 8080));
    // A connection from outside to the DNAT port: worker 0 (whichever worker it reaches),
    // translated to the target; the target's answer meets it there.
    let client = "198.51.100.7";
    let (w, v, out) = deliver(
        &mut ws,
        1,
        2 * NS,
        OUTSIDE_IF,
        &tcp(client, 50000, PUBLIC, 8080, "S", b""),
    );
    assert_eq!(w, 0);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(tuple(&out), (ip(client), 50000, ip(DNAT_TARGET), 80));
    let (w, v, out) = deliver(
        &mut ws,
        1,
        2 * NS,
        INSIDE_IF,
        &tcp(DNAT_TARGET, 80, client, 50000, "SA", b""),
    );
    assert_eq!(w, 0);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(tuple(&out), (ip(PUBLIC), 8080, ip(client), 50000));
}
