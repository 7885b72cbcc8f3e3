//! NAT behaviour of the engine, one test per behaviour, on byte fixtures with a fake clock.

mod engine_util;

use std::sync::Arc;

use engine_util::*;
use tollgate::datapath::{DropReason, Verdict, Worker};
use tollgate::nat::MappingMode;

fn fwd_out() -> Verdict {
    Verdict::Forward {
        tx_if: OUTSIDE_IF,
        next_hop: ip("203.0.113.254"),
    }
}

#[test]
fn outbound_tcp_is_snated_and_the_answer_restored() {
    let mut w = worker(lab_engine_config());
    let (v, out) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 80, "S", b""),
    );
    assert_eq!(
        v,
        Verdict::Forward {
            tx_if: OUTSIDE_IF,
            next_hop: ip(SERVER)
        }
    );
    let (src, sport, dst, dport) = tuple(&out);
    assert_eq!((src, dst, dport), (ip(PUBLIC), ip(SERVER), 80));
    assert!((1024..=65535).contains(&sport));
    assert_eq!(ttl_of(&out), 63);
    assert_checksums(&out);

    let (v, back) = run(
        &mut w,
        NS,
        OUTSIDE_IF,
        &tcp(SERVER, 80, PUBLIC, sport, "SA", b""),
    );
    assert_eq!(
        v,
        Verdict::Forward {
            tx_if: INSIDE_IF,
            next_hop: ip(NODE1)
        }
    );
    assert_eq!(tuple(&back), (ip(SERVER), 80, ip(NODE1), 40000));
    assert_checksums(&back);
    assert_eq!(w.flow_count(), 1);
}

#[test]
fn unsolicited_inbound_is_dropped_and_own_services_left_to_the_kernel() {
    let mut w = worker(lab_engine_config());
    let (v, _) = run(
        &mut w,
        0,
        OUTSIDE_IF,
        &tcp(SERVER, 80, PUBLIC, 40000, "S", b""),
    );
    assert_eq!(v, Verdict::Drop(DropReason::Unsolicited));
    let (v, _) = run(&mut w, 0, OUTSIDE_IF, &udp(SERVER, 53, PUBLIC, 33333, b"x"));
    assert_eq!(v, Verdict::Drop(DropReason::Unsolicited));
    // SSH to the appliance's own address is the kernel's.
    let (v, _) = run(
        &mut w,
        0,
        OUTSIDE_IF,
        &tcp(SERVER, 50000, PUBLIC, 22, "S", b""),
    );
    assert_eq!(v, Verdict::Local);
    let (v, _) = run(
        &mut w,
        0,
        INSIDE_IF,
        &ping(NODE1, "198.18.0.1", 1, 1, false),
    );
    assert_eq!(v, Verdict::Local);
    // A reply to a flow that never existed, toward an inside host.
    let (v, _) = run(&mut w, 0, OUTSIDE_IF, &udp(SERVER, 53, NODE1, 5353, b"x"));
    assert_eq!(v, Verdict::Drop(DropReason::Unsolicited));
    assert_eq!(w.counters().drop_count(DropReason::Unsolicited), 3);
    assert_eq!(w.flow_count(), 0);
}

#[test]
fn tcp_without_syn_does_not_open_a_flow() {
    let mut w = worker(lab_engine_config());
    let (v, _) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 80, "A", b"data"),
    );
    assert_eq!(v, Verdict::Drop(DropReason::TcpNonSyn));
    let (v, _) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 80, "SA", b""),
    );
    assert_eq!(v, Verdict::Drop(DropReason::TcpNonSyn));
    assert_eq!(w.flow_count(), 0);
}

#[test]
fn policy_denials_are_named() {
    let mut w = WorkerKit::new().policy(denying()).seed(1).build();
    let (v, _) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, "198.51.100.66", 443, "S", b""),
    );
    assert_eq!(v, Verdict::Drop(DropReason::RuleDeny));
    let (v, _) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 25, "S", b""),
    );
    assert_eq!(v, Verdict::Drop(DropReason::DefaultDeny));
    let (v, _) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 443, "S", b""),
    );
    assert_eq!(v, fwd_out().with_next_hop(SERVER));
    assert_eq!(w.flow_count(), 1);
}

trait NextHop {
    fn with_next_hop(self, s: &str) -> Verdict;
}
impl NextHop for Verdict {
    fn with_next_hop(self, s: &str) -> Verdict {
        match self {
            Verdict::Forward { tx_if, .. } => Verdict::Forward {
                tx_if,
                next_hop: ip(s),
            },
            v => v,
        }
    }
}

#[test]
fn endpoint_independent_mapping_keeps_the_public_port_across_destinations() {
    let mut w = worker(lab_engine_config());
    let (_, a) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 5000, SERVER, 53, b"q"));
    let (_, b) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 5000, SERVER2, 53, b"q"));
    assert_eq!(
        tuple(&a).1,
        tuple(&b).1,
        "RFC 4787 REQ-1: same mapping for both destinations"
    );
    let (_, c) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 5001, SERVER, 53, b"q"));
    assert_ne!(tuple(&a).1, tuple(&c).1);
    // Endpoint-dependent filtering: the second server cannot use the first flow's mapping.
    let (v, _) = run(
        &mut w,
        0,
        OUTSIDE_IF,
        &udp("203.0.113.30", 53, PUBLIC, tuple(&a).1, b"r"),
    );
    assert_eq!(v, Verdict::Drop(DropReason::Unsolicited));
}

#[test]
fn address_and_port_dependent_mapping_reuses_ports_toward_other_destinations() {
    let mut cfg = lab_engine_config();
    cfg.nat.mapping = MappingMode::AddressAndPortDependent;
    cfg.nat.port_min = 2000;
    cfg.nat.port_max = 2099; // 100 ports
    let mut w = worker(cfg);
    // 150 flows to two destinations: all fit, since each port serves both.
    let mut ok = 0;
    for i in 0..150u16 {
        let dst = if i % 2 == 0 { SERVER } else { SERVER2 };
        let (v, _) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 10000 + i, dst, 53, b"q"));
        if matches!(v, Verdict::Forward { .. }) {
            ok += 1;
        }
    }
    assert_eq!(ok, 150);
    assert_eq!(w.snat().utilisation(0, 17), (100, 100));
    // A third of each destination's answers arrive on the right inside host.
    let flows: Vec<_> = w.flows().iter().map(|(_, f)| (f.orig, f.reply)).collect();
    for (orig, reply) in flows {
        let (v, back) = run(
            &mut w,
            NS,
            OUTSIDE_IF,
            &udp(&reply.src().to_string(), 53, PUBLIC, reply.dport(), b"r"),
        );
        assert!(matches!(v, Verdict::Forward { .. }));
        assert_eq!(tuple(&back).3, orig.sport());
    }
}

#[test]
fn exhaustion_drops_with_out_of_ports_then_recovers_after_expiry() {
    let mut cfg = lab_engine_config();
    cfg.nat.port_min = 3000;
    cfg.nat.port_max = 3099; // 100 ports
    let mut w = worker(cfg);
    let (mut ok, mut fail) = (0, 0);
    for i in 0..150u16 {
        match run(
            &mut w,
            0,
            INSIDE_IF,
            &udp(NODE1, 10000 + i, SERVER, 53, b"q"),
        )
        .0
        {
            Verdict::Forward { .. } => ok += 1,
            Verdict::Drop(DropReason::OutOfPorts) => fail += 1,
            v => panic!("unexpected {v:?}"),
        }
    }
    assert_eq!(
        (ok, fail),
        (100, 50),
        "every port is used before the first failure"
    );
    assert_eq!(w.counters().drop_count(DropReason::OutOfPorts), 50);
    // UDP timeout is 300 s: at 301 s + granularity, the mappings are reclaimed.
    let later = 302 * NS;
    let (v, _) = run(
        &mut w,
        later,
        INSIDE_IF,
        &udp(NODE1, 20000, SERVER, 53, b"q"),
    );
    assert!(matches!(v, Verdict::Forward { .. }), "recovered: {v:?}");
}

#[test]
fn exhaustion_can_answer_with_icmp_admin_prohibited() {
    let mut cfg = lab_engine_config();
    cfg.nat.port_min = 3000;
    cfg.nat.port_max = 3000;
    cfg.icmp_on_exhaustion = true;
    let mut w = worker(cfg);
    run(&mut w, 0, INSIDE_IF, &udp(NODE1, 1, SERVER, 53, b"q"));
    let (v, reply) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 2, SERVER, 53, b"q"));
    assert_eq!(
        v,
        Verdict::Reply {
            tx_if: INSIDE_IF,
            next_hop: ip(NODE1)
        }
    );
    let ipb = &reply[14..];
    assert_eq!(
        &ipb[12..16],
        &[198, 18, 0, 1],
        "from the appliance's inside address"
    );
    assert_eq!(&ipb[16..20], &[198, 18, 0, 11]);
    assert_eq!(
        (ipb[20], ipb[21]),
        (3, 13),
        "destination unreachable, administratively prohibited"
    );
    assert_checksums(&reply);
    assert_eq!(w.counters().drop_count(DropReason::OutOfPorts), 1);
}

#[test]
fn udp_mapping_lives_its_timeout_and_no_longer() {
    let mut w = worker(lab_engine_config());
    let (_, out) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 5000, SERVER, 53, b"q"));
    let port = tuple(&out).1;
    // Inbound answers refresh the mapping too (RFC 4787 REQ-6 allows it).
    let (v, _) = run(
        &mut w,
        299 * NS,
        OUTSIDE_IF,
        &udp(SERVER, 53, PUBLIC, port, b"r"),
    );
    assert!(matches!(v, Verdict::Forward { .. }));
    w.housekeeping(598 * NS, 100);
    assert_eq!(w.flow_count(), 1, "refreshed at 299 s: alive at 598 s");
    w.housekeeping(601 * NS, 100);
    assert_eq!(
        w.flow_count(),
        0,
        "expired 300 s (+1 s granularity) after the last packet"
    );
    let (v, _) = run(
        &mut w,
        601 * NS,
        OUTSIDE_IF,
        &udp(SERVER, 53, PUBLIC, port, b"r"),
    );
    assert_eq!(v, Verdict::Drop(DropReason::Unsolicited));
}

#[test]
fn tcp_timeouts_follow_the_state() {
    let mut w = worker(lab_engine_config());
    let (_, out) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 80, "S", b""),
    );
    let port = tuple(&out).1;
    // Half-open: the transitory timeout (240 s).
    w.housekeeping(200 * NS, 10);
    assert_eq!(w.flow_count(), 1);
    run(
        &mut w,
        200 * NS,
        OUTSIDE_IF,
        &tcp(SERVER, 80, PUBLIC, port, "SA", b""),
    );
    run(
        &mut w,
        200 * NS,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 80, "A", b""),
    );
    // Established: 2 h 4 min (RFC 5382 REQ-5).
    w.housekeeping((200 + 7000) * NS, 10);
    assert_eq!(
        w.flow_count(),
        1,
        "established flows outlive the transitory timeout"
    );
    // Both FINs: time-wait (120 s).
    let t = 7300 * NS;
    run(
        &mut w,
        t,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 80, "FA", b""),
    );
    run(
        &mut w,
        t,
        OUTSIDE_IF,
        &tcp(SERVER, 80, PUBLIC, port, "FA", b""),
    );
    w.housekeeping(t + 100 * NS, 10);
    assert_eq!(w.flow_count(), 1);
    w.housekeeping(t + 122 * NS, 10);
    assert_eq!(w.flow_count(), 0);
}

#[test]
fn rst_closes_quickly() {
    let mut w = worker(lab_engine_config());
    let (_, out) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 80, "S", b""),
    );
    let port = tuple(&out).1;
    run(
        &mut w,
        0,
        OUTSIDE_IF,
        &tcp(SERVER, 80, PUBLIC, port, "R", b""),
    );
    w.housekeeping(12 * NS, 10);
    assert_eq!(w.flow_count(), 0);
}

#[test]
fn per_host_quota_stops_one_noisy_host_only() {
    let mut cfg = lab_engine_config();
    cfg.nat.per_host_quota = Some(2);
    let mut w = worker(cfg);
    for p in 0..2 {
        assert!(matches!(
            run(&mut w, 0, INSIDE_IF, &udp(NODE1, 100 + p, SERVER, 53, b"q")).0,
            Verdict::Forward { .. }
        ));
    }
    assert_eq!(
        run(&mut w, 0, INSIDE_IF, &udp(NODE1, 200, SERVER, 53, b"q")).0,
        Verdict::Drop(DropReason::HostQuota)
    );
    assert!(matches!(
        run(&mut w, 0, INSIDE_IF, &udp(NODE2, 200, SERVER, 53, b"q")).0,
        Verdict::Forward { .. }
    ));
    // Reusing an existing EIM mapping does not count against the quota.
    assert!(matches!(
        run(&mut w, 0, INSIDE_IF, &udp(NODE1, 100, SERVER2, 53, b"q")).0,
        Verdict::Forward { .. }
    ));
}

#[test]
fn freed_ports_cool_down_before_reuse() {
    let mut cfg = lab_engine_config();
    cfg.nat.port_min = 4000;
    cfg.nat.port_max = 4000;
    cfg.nat.reuse_cooldown = 30;
    cfg.timeouts.udp = 10;
    let mut w = worker(cfg);
    run(&mut w, 0, INSIDE_IF, &udp(NODE1, 1, SERVER, 53, b"q"));
    w.housekeeping(12 * NS, 10);
    assert_eq!(w.flow_count(), 0);
    let (v, _) = run(&mut w, 20 * NS, INSIDE_IF, &udp(NODE1, 2, SERVER, 53, b"q"));
    assert_eq!(v, Verdict::Drop(DropReason::OutOfPorts), "still cooling");
    let (v, _) = run(&mut w, 43 * NS, INSIDE_IF, &udp(NODE1, 2, SERVER, 53, b"q"));
    assert!(matches!(v, Verdict::Forward { .. }));
}

#[test]
fn exempt_destinations_are_routed_without_snat() {
    let mut w = worker(lab_engine_config());
    let (v, out) = run(
        &mut w,
        0,
        INSIDE_IF,
        &udp(NODE1, 5000, "198.51.100.200", 53, b"q"),
    );
    assert_eq!(v, fwd_out());
    assert_eq!(tuple(&out), (ip(NODE1), 5000, ip("198.51.100.200"), 53));
    let (v, back) = run(
        &mut w,
        0,
        OUTSIDE_IF,
        &udp("198.51.100.200", 53, NODE1, 5000, b"r"),
    );
    assert_eq!(
        v,
        Verdict::Forward {
            tx_if: INSIDE_IF,
            next_hop: ip(NODE1)
        }
    );
    assert_eq!(tuple(&back), (ip("198.51.100.200"), 53, ip(NODE1), 5000));
}

#[test]
fn dnat_reaches_the_inside_server_and_its_answer_leaves_from_the_public_port() {
    let mut w = worker(lab_engine_config());
    let client = "198.51.100.7";
    let (v, inb) = run(
        &mut w,
        0,
        OUTSIDE_IF,
        &tcp(client, 55555, PUBLIC, 8080, "S", b""),
    );
    assert_eq!(
        v,
        Verdict::Forward {
            tx_if: INSIDE_IF,
            next_hop: ip(DNAT_TARGET)
        }
    );
    assert_eq!(tuple(&inb), (ip(client), 55555, ip(DNAT_TARGET), 80));
    assert_checksums(&inb);
    let (v, out) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(DNAT_TARGET, 80, client, 55555, "SA", b""),
    );
    assert_eq!(v, fwd_out());
    assert_eq!(tuple(&out), (ip(PUBLIC), 8080, ip(client), 55555));
    assert_checksums(&out);
}

/// Found by fuzzing (fuzz/fuzz_targets/worker.rs, one-arm APDM with a DNAT port inside the
/// SNAT range): once the free ports were gone, the reuse of a busy port handed out the DNAT
/// rule's public port (in use, with no flow on it); a connection from that flow's server to the
/// DNAT rule then reached the SNAT flow's inside host instead of the DNAT target.
#[test]
fn a_dnat_rules_public_port_is_never_a_snat_source_port() {
    for mapping in [
        MappingMode::AddressAndPortDependent,
        MappingMode::EndpointIndependent,
    ] {
        let mut cfg = lab_engine_config();
        cfg.nat.mapping = mapping;
        cfg.nat.port_min = 8078;
        cfg.nat.port_max = 8081; // 8080 is the DNAT rule's (the permissive rules)
        let mut w = worker(cfg);
        assert_eq!(w.snat().utilisation(0, 6), (1, 4), "the DNAT port is kept");
        // Four inside hosts toward each of two servers: three ports each time.
        for dst in [SERVER, SERVER2] {
            for (i, node) in ["198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.14"]
                .into_iter()
                .enumerate()
            {
                let (v, out) = run(&mut w, 0, INSIDE_IF, &tcp(node, 443, dst, 443, "S", b""));
                if i < 3 {
                    assert!(
                        matches!(v, Verdict::Forward { .. }),
                        "{mapping:?} {node}: {v:?}"
                    );
                    assert_ne!(tuple(&out).1, 8080, "{mapping:?} {node} -> {dst}");
                } else {
                    assert_eq!(v, Verdict::Drop(DropReason::OutOfPorts), "{mapping:?}");
                }
            }
        }
        assert_eq!(w.snat().utilisation(0, 6), (4, 4));
        // Either server reaches the DNAT target from the port its flows use.
        for dst in [SERVER, SERVER2] {
            let (v, inb) = run(
                &mut w,
                0,
                OUTSIDE_IF,
                &tcp(dst, 443, PUBLIC, 8080, "S", b""),
            );
            assert!(matches!(v, Verdict::Forward { .. }), "{mapping:?}: {v:?}");
            assert_eq!(tuple(&inb), (ip(dst), 443, ip(DNAT_TARGET), 80));
        }
    }
}

#[test]
fn hairpin_through_a_dnat_rule() {
    let mut w = worker(lab_engine_config());
    let (v, a) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 41000, PUBLIC, 8080, "S", b""),
    );
    assert_eq!(
        v,
        Verdict::Forward {
            tx_if: INSIDE_IF,
            next_hop: ip(DNAT_TARGET)
        }
    );
    let (src, sport, dst, dport) = tuple(&a);
    assert_eq!(
        (src, dst, dport),
        (ip(PUBLIC), ip(DNAT_TARGET), 80),
        "SNATed so the answer returns here"
    );
    let (v, b) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(DNAT_TARGET, 80, PUBLIC, sport, "SA", b""),
    );
    assert_eq!(
        v,
        Verdict::Forward {
            tx_if: INSIDE_IF,
            next_hop: ip(NODE1)
        }
    );
    assert_eq!(tuple(&b), (ip(PUBLIC), 8080, ip(NODE1), 41000));
    assert_checksums(&b);
}

#[test]
fn icmp_echo_is_translated_by_query_id() {
    let mut w = worker(lab_engine_config());
    let (v, out) = run(&mut w, 0, INSIDE_IF, &ping(NODE1, SERVER, 77, 1, false));
    assert_eq!(
        v,
        Verdict::Forward {
            tx_if: OUTSIDE_IF,
            next_hop: ip(SERVER)
        }
    );
    let (src, id, _, _) = tuple(&out);
    assert_eq!(src, ip(PUBLIC));
    assert_checksums(&out);
    let (v, back) = run(&mut w, 0, OUTSIDE_IF, &ping(SERVER, PUBLIC, id, 1, true));
    assert_eq!(
        v,
        Verdict::Forward {
            tx_if: INSIDE_IF,
            next_hop: ip(NODE1)
        }
    );
    assert_eq!(tuple(&back), (ip(SERVER), 77, ip(NODE1), 77));
    assert_checksums(&back);
    // Two inside hosts using the same id get distinct public ids.
    let (_, other) = run(&mut w, 0, INSIDE_IF, &ping(NODE2, SERVER, 77, 1, false));
    assert_ne!(tuple(&other).1, id);
}

/// An ICMP error from `from` to `to` quoting the first 28 bytes of `quoted`'s IP packet.
fn icmp_error(from: &str, to: &str, typ: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let q = &quoted[14..14 + 28];
    let mut v = Vec::new();
    let t = etherparse::Icmpv4Type::Unknown {
        type_u8: typ,
        code_u8: code,
        bytes5to8: [0, 0, 5, 0xdc],
    };
    eth()
        .ipv4(ip(from).octets(), ip(to).octets(), 64)
        .icmpv4(t)
        .write(&mut v, q)
        .unwrap();
    v
}

#[test]
fn icmp_errors_are_translated_with_their_quoted_packet_and_never_refresh() {
    let mut cfg = lab_engine_config();
    cfg.timeouts.udp = 100;
    let mut w = worker(cfg);
    let (_, out) = run(
        &mut w,
        0,
        INSIDE_IF,
        &udp(NODE1, 5000, SERVER, 53, b"query"),
    );
    // A router on the way answers "fragmentation needed", quoting our translated packet.
    let err = icmp_error("203.0.113.254", PUBLIC, 3, 4, &out);
    let (v, back) = run(&mut w, 50 * NS, OUTSIDE_IF, &err);
    assert_eq!(
        v,
        Verdict::Forward {
            tx_if: INSIDE_IF,
            next_hop: ip(NODE1)
        }
    );
    let ipb = &back[14..];
    assert_eq!(
        &ipb[12..16],
        &[203, 0, 113, 254],
        "the router stays the source"
    );
    assert_eq!(&ipb[16..20], &[198, 18, 0, 11]);
    let quoted = &ipb[28..];
    assert_eq!(&quoted[12..16], &[198, 18, 0, 11], "quoted source restored");
    assert_eq!(
        u16::from_be_bytes([quoted[20], quoted[21]]),
        5000,
        "quoted port restored"
    );
    assert_eq!(
        u16::from_be_bytes([ipb[26], ipb[27]]),
        1500,
        "next-hop MTU kept"
    );
    assert_checksums(&back);
    // The quoted IPv4 header checksum is valid too.
    assert_eq!(tollgate::wire::checksum::checksum(&quoted[..20]), 0);
    // The error did not refresh the mapping: it expires 100 s after the packet at 0 s.
    w.housekeeping(102 * NS, 10);
    assert_eq!(w.flow_count(), 0);
    // An error about no flow is dropped.
    let (v, _) = run(&mut w, 103 * NS, OUTSIDE_IF, &err);
    assert_eq!(v, Verdict::Drop(DropReason::IcmpErrorNoFlow));
}

#[test]
fn port_unreachable_from_the_server_itself_names_the_server() {
    let mut w = worker(lab_engine_config());
    let (_, out) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 5000, SERVER, 9, b"x"));
    let (v, back) = run(
        &mut w,
        0,
        OUTSIDE_IF,
        &icmp_error(SERVER, PUBLIC, 3, 3, &out),
    );
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(&back[14 + 12..14 + 16], &[203, 0, 113, 10]);
    assert_checksums(&back);
}

#[test]
fn ttl_expiry_is_answered_with_time_exceeded() {
    let mut w = worker(lab_engine_config());
    let (v, reply) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp_ttl(NODE1, 40000, SERVER, 80, "S", b"", 1),
    );
    assert_eq!(
        v,
        Verdict::Reply {
            tx_if: INSIDE_IF,
            next_hop: ip(NODE1)
        }
    );
    let ipb = &reply[14..];
    assert_eq!(&ipb[12..16], &[198, 18, 0, 1]);
    assert_eq!((ipb[20], ipb[21]), (11, 0));
    assert_checksums(&reply);
    assert_eq!(w.flow_count(), 0, "no flow for an expired packet");
    assert_eq!(w.counters().drop_count(DropReason::TtlExceeded), 1);
}

#[test]
fn oversized_df_packets_get_frag_needed() {
    let mut cfg = lab_engine_config();
    cfg.interfaces[1].mtu = 1280;
    let mut w = worker(cfg);
    let mut f = udp(NODE1, 5000, SERVER, 53, &[0u8; 1300]);
    f[14 + 6] |= 0x40; // DF
    let c = {
        f[14 + 10] = 0;
        f[14 + 11] = 0;
        tollgate::wire::checksum::checksum(&f[14..34])
    };
    f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    let (v, reply) = run(&mut w, 0, INSIDE_IF, &f);
    assert_eq!(
        v,
        Verdict::Reply {
            tx_if: INSIDE_IF,
            next_hop: ip(NODE1)
        }
    );
    assert_eq!((reply[34], reply[35]), (3, 4));
    assert_eq!(u16::from_be_bytes([reply[40], reply[41]]), 1280);
}

#[test]
fn mss_is_clamped_on_syn() {
    let mut cfg = lab_engine_config();
    cfg.mss_clamp = Some(1200);
    let mut w = worker(cfg);
    let mut v = Vec::new();
    eth()
        .ipv4(ip(NODE1).octets(), ip(SERVER).octets(), 64)
        .tcp(40000, 443, 1, 65535)
        .syn()
        .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
        .unwrap()
        .write(&mut v, b"")
        .unwrap();
    let (_, out) = run(&mut w, 0, INSIDE_IF, &v);
    let t = etherparse::SlicedPacket::from_ethernet(&out).unwrap();
    let etherparse::TransportSlice::Tcp(t) = t.transport.unwrap() else {
        panic!()
    };
    let mss = t.options_iterator().find_map(|o| match o {
        Ok(etherparse::TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
        _ => None,
    });
    assert_eq!(mss, Some(1200));
    assert_checksums(&out);
}

#[test]
fn fragments_follow_their_first_fragment() {
    let mut w = worker(lab_engine_config());
    // A UDP datagram of 8 + 24 bytes split in two: 16 bytes of UDP, then 16 more.
    let whole = udp(NODE1, 5000, SERVER, 53, &[7u8; 24]);
    let ipb = &whole[14..];
    let mk = |off: usize, mf: bool, data: &[u8]| {
        let mut h = ipb[..20].to_vec();
        let total = (20 + data.len()) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
        let ff = ((off / 8) as u16) | if mf { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&ff.to_be_bytes());
        h[10] = 0;
        h[11] = 0;
        let c = tollgate::wire::checksum::checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let mut f = whole[..14].to_vec();
        f.extend_from_slice(&h);
        f.extend_from_slice(data);
        f
    };
    let first = mk(0, true, &ipb[20..36]);
    let second = mk(16, false, &ipb[36..52]);
    // A later fragment before its first is refused.
    assert_eq!(
        run(&mut w, 0, INSIDE_IF, &second).0,
        Verdict::Drop(DropReason::FragmentNoFlow)
    );
    let (v1, o1) = run(&mut w, 0, INSIDE_IF, &first);
    assert!(matches!(v1, Verdict::Forward { .. }));
    let (v2, o2) = run(&mut w, 0, INSIDE_IF, &second);
    assert!(matches!(v2, Verdict::Forward { .. }));
    assert_eq!(&o1[26..30], &[203, 0, 113, 1]);
    assert_eq!(&o2[26..30], &[203, 0, 113, 1]);
    assert_eq!(tollgate::wire::checksum::checksum(&o2[14..34]), 0);
    // Reassembled, the UDP checksum must verify over the whole translated datagram.
    let mut d = o1[34..].to_vec();
    d.extend_from_slice(&o2[34..]);
    let ps = tollgate::wire::checksum::pseudo_header(
        [203, 0, 113, 1],
        [203, 0, 113, 10],
        17,
        d.len() as u16,
    );
    assert_eq!(
        tollgate::wire::checksum::fold(tollgate::wire::checksum::sum(&d, ps)),
        0xffff
    );
}

#[test]
fn malformed_frames_are_counted_under_named_reasons() {
    let mut w = worker(lab_engine_config());
    let good = tcp(NODE1, 40000, SERVER, 80, "S", b"");
    let mut cases: Vec<(Vec<u8>, DropReason)> = vec![
        (good[..10].to_vec(), DropReason::Truncated),
        (good[..30].to_vec(), DropReason::Truncated),
    ];
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    cases.push((bad_ihl, DropReason::BadIpHeader));
    let mut bad_sum = good.clone();
    bad_sum[14 + 10] ^= 0xff;
    cases.push((bad_sum, DropReason::BadIpChecksum));
    let mut bad_off = good.clone();
    bad_off[34 + 12] = 0x20; // data offset 2 words
    cases.push((bad_off, DropReason::BadL4Header));
    let mut v6 = good.clone();
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    cases.push((v6, DropReason::Ipv6));
    for (f, want) in cases {
        let before = w.counters().drop_count(want);
        assert_eq!(
            run(&mut w, 0, INSIDE_IF, &f).0,
            Verdict::Drop(want),
            "{want:?}"
        );
        assert_eq!(w.counters().drop_count(want), before + 1);
    }
    // The good flow still works afterwards.
    assert!(matches!(
        run(&mut w, 0, INSIDE_IF, &good).0,
        Verdict::Forward { .. }
    ));
}

#[test]
fn the_flow_limit_is_a_named_drop() {
    let mut cfg = lab_engine_config();
    cfg.max_flows_per_worker = 3;
    let mut w = worker(cfg);
    for p in 0..3 {
        assert!(matches!(
            run(&mut w, 0, INSIDE_IF, &udp(NODE1, p, SERVER, 53, b"q")).0,
            Verdict::Forward { .. }
        ));
    }
    assert_eq!(
        run(&mut w, 0, INSIDE_IF, &udp(NODE1, 9, SERVER, 53, b"q")).0,
        Verdict::Drop(DropReason::MaxFlows)
    );
    // The refused flow gave its port back.
    assert_eq!(w.snat().utilisation(0, 17).0, 3);
}

#[test]
fn workers_own_disjoint_port_slices_and_steer_returns() {
    let cfg = Arc::new(lab_engine_config());
    let kit = WorkerKit::new()
        .config(cfg)
        .policy(permissive())
        .of(2)
        .seed(1);
    let mut w0 = kit.clone().index(0).build();
    let mut w1 = kit.index(1).build();
    let (_, a) = run(&mut w0, 0, INSIDE_IF, &udp(NODE1, 5000, SERVER, 53, b"q"));
    let (_, b) = run(&mut w1, 0, INSIDE_IF, &udp(NODE2, 5000, SERVER, 53, b"q"));
    let (pa, pb) = (tuple(&a).1, tuple(&b).1);
    assert!(pa < 1024 + 32256 && pb >= 1024 + 32256, "{pa} {pb}");
    assert_eq!(w1.owner_of(&udp(SERVER, 53, PUBLIC, pa, b"r")), Some(0));
    assert_eq!(w0.owner_of(&udp(SERVER, 53, PUBLIC, pb, b"r")), Some(1));
    // An inside host's outbound frames belong to its address's worker (issue 21: one mapping
    // table and one quota per host), whatever the destination or port.
    let own = Worker::steer_worker(NODE1.parse().expect("address"), 2);
    assert_eq!(w0.owner_of(&udp(NODE1, 7000, SERVER, 53, b"q")), Some(own));
    assert_eq!(
        w1.owner_of(&udp(NODE1, 7001, "198.51.100.9", 443, b"q")),
        Some(own)
    );
    // A DNAT flow's both directions go to worker 0.
    assert_eq!(
        w1.owner_of(&tcp("198.51.100.7", 55555, PUBLIC, 8080, "S", b"")),
        Some(0)
    );
    assert_eq!(
        w1.owner_of(&tcp(DNAT_TARGET, 80, "198.51.100.7", 55555, "SA", b"")),
        Some(0)
    );
}

#[test]
fn resolver_answers_on_its_port_are_left_to_the_kernel() {
    // The control plane's resolver queries from the SNAT address on random ports of a range
    // outside the SNAT range (768-1023 by default), over UDP and, for truncated answers, TCP:
    // its answers are the kernel's on every worker and every port of the range, even with SNAT
    // flows open toward the same DNS server.
    let ports = tollgate::config::DEFAULT_DNS_SOURCE_PORTS;
    for n in [1usize, 2, 4] {
        for i in 0..n {
            let mut w = WorkerKit::new()
                .policy(permissive())
                .index(i)
                .of(n)
                .seed(7)
                .build();
            let (v, out) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 5353, SERVER, 53, b"q"));
            assert!(
                matches!(
                    v,
                    Verdict::Forward {
                        tx_if: OUTSIDE_IF,
                        ..
                    }
                ),
                "inside hosts' own DNS is SNATed: {v:?}"
            );
            let (_, sport, _, _) = tuple(&out);
            assert!((1024..=65535).contains(&sport));
            for port in ports.clone() {
                let (v, _) = run(
                    &mut w,
                    NS,
                    OUTSIDE_IF,
                    &udp(SERVER, 53, PUBLIC, port, b"answer"),
                );
                assert_eq!(v, Verdict::Local, "worker {i}/{n} port {port}");
                // The TCP retry's segments from the server: SYN-ACK, data, FIN, RST.
                for flags in ["SA", "AP", "FA", "R"] {
                    let (v, _) = run(
                        &mut w,
                        NS,
                        OUTSIDE_IF,
                        &tcp(SERVER, 53, PUBLIC, port, flags, b"\x00\x02ok"),
                    );
                    assert_eq!(v, Verdict::Local, "worker {i}/{n} tcp {flags} port {port}");
                }
            }
            assert_eq!(w.flow_count(), 1, "no flow for the resolver's answers");
            assert_eq!(w.counters().drop_count(DropReason::Unsolicited), 0);
            assert_eq!(w.counters().drop_count(DropReason::TcpNonSyn), 0);
        }
    }
}
