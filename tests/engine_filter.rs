//! What the engine refuses to forward whatever the rules say: impossible TCP flag combinations
//! and source-routed or malformed IPv4 options (RFC 7126), each under its own drop reason.

mod engine_util;

use engine_util::*;
use tollgate::datapath::{DropReason, Verdict};
use tollgate::wire::checksum::checksum;

fn fwd_out() -> Verdict {
    Verdict::Forward {
        tx_if: OUTSIDE_IF,
        next_hop: ip(SERVER),
    }
}

/// `frame` with `opts` (padded by the caller to a multiple of 4) after its 20-byte IPv4
/// header: IHL, total length and header checksum fixed up. Transport checksums do not cover
/// the options and stay right.
fn with_ip_options(frame: &[u8], opts: &[u8]) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let (l3, hl) = (14, 20);
    let mut v = frame[..l3 + hl].to_vec();
    v.extend_from_slice(opts);
    v.extend_from_slice(&frame[l3 + hl..]);
    let ip = &mut v[l3..];
    ip[0] = 0x40 | ((hl + opts.len()) / 4) as u8;
    let total = u16::from_be_bytes([ip[2], ip[3]]) + opts.len() as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&ip[..hl + opts.len()]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    v
}

fn ip_options_of(frame: &[u8]) -> &[u8] {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    &frame[14 + 20..14 + ihl]
}

#[test]
fn impossible_tcp_flags_open_no_flow() {
    let mut w = worker(lab_engine_config());
    for (i, flags) in ["SF", "SR", "SFA", "SRA", "F", "FP", "", "P"]
        .iter()
        .enumerate()
    {
        let (v, _) = run(
            &mut w,
            0,
            INSIDE_IF,
            &tcp(NODE1, 40000 + i as u16, SERVER, 80, flags, b""),
        );
        assert_eq!(v, Verdict::Drop(DropReason::TcpBadFlags), "flags {flags:?}");
    }
    assert_eq!(w.flow_count(), 0);
    assert_eq!(w.counters().drop_count(DropReason::TcpBadFlags), 8);
    assert_eq!(w.counters().drop_count(DropReason::TcpNonSyn), 0);
    // The plausible ones still behave as before.
    assert_eq!(
        run(
            &mut w,
            0,
            INSIDE_IF,
            &tcp(NODE1, 41000, SERVER, 80, "S", b"")
        )
        .0,
        fwd_out()
    );
    assert_eq!(
        run(
            &mut w,
            0,
            INSIDE_IF,
            &tcp(NODE1, 41001, SERVER, 80, "R", b"")
        )
        .0,
        Verdict::Drop(DropReason::TcpNonSyn)
    );
}

#[test]
fn impossible_tcp_flags_are_dropped_on_an_established_flow_too() {
    let mut w = worker(lab_engine_config());
    let (v, out) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 80, "S", b""),
    );
    assert_eq!(v, fwd_out());
    let port = tuple(&out).1;
    let (v, _) = run(
        &mut w,
        0,
        OUTSIDE_IF,
        &tcp(SERVER, 80, PUBLIC, port, "SA", b""),
    );
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(
        run(
            &mut w,
            0,
            INSIDE_IF,
            &tcp(NODE1, 40000, SERVER, 80, "A", b"")
        )
        .0,
        fwd_out()
    );
    for flags in ["", "F", "SF", "FP"] {
        let (v, _) = run(
            &mut w,
            1,
            INSIDE_IF,
            &tcp(NODE1, 40000, SERVER, 80, flags, b"x"),
        );
        assert_eq!(v, Verdict::Drop(DropReason::TcpBadFlags), "flags {flags:?}");
    }
    // A bare FIN (no ACK) from the server as well.
    let (v, _) = run(
        &mut w,
        1,
        OUTSIDE_IF,
        &tcp(SERVER, 80, PUBLIC, port, "F", b""),
    );
    assert_eq!(v, Verdict::Drop(DropReason::TcpBadFlags));
    // The flow is untouched: data and an orderly close pass.
    assert_eq!(
        run(
            &mut w,
            2,
            INSIDE_IF,
            &tcp(NODE1, 40000, SERVER, 80, "AP", b"data")
        )
        .0,
        fwd_out()
    );
    assert_eq!(
        run(
            &mut w,
            2,
            INSIDE_IF,
            &tcp(NODE1, 40000, SERVER, 80, "FA", b"")
        )
        .0,
        fwd_out()
    );
}

/// Loose (131) and strict (137) source route: three bytes of header and one hop, padded.
const LSRR: [u8; 8] = [131, 7, 4, 198, 51, 100, 1, 0];
const SSRR: [u8; 8] = [137, 7, 4, 198, 51, 100, 1, 0];

#[test]
fn source_routed_packets_are_dropped() {
    let mut w = worker(lab_engine_config());
    for opts in [
        &LSRR[..],
        &SSRR[..],
        &[1, 1, 1, 1, 131, 7, 4, 198, 51, 100, 1, 0][..],
    ] {
        for frame in [
            udp(NODE1, 40000, SERVER, 53, b"query"),
            tcp(NODE1, 40001, SERVER, 80, "S", b""),
        ] {
            let (v, _) = run(&mut w, 0, INSIDE_IF, &with_ip_options(&frame, opts));
            assert_eq!(v, Verdict::Drop(DropReason::IpSourceRoute), "{opts:?}");
        }
    }
    // From outside too, toward a tracked flow: the route is not the flow's.
    let (v, out) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 40002, SERVER, 53, b"q"));
    assert_eq!(v, fwd_out());
    let port = tuple(&out).1;
    let answer = udp(SERVER, 53, PUBLIC, port, b"a");
    let (v, _) = run(&mut w, 1, OUTSIDE_IF, &with_ip_options(&answer, &LSRR));
    assert_eq!(v, Verdict::Drop(DropReason::IpSourceRoute));
    let (v, _) = run(&mut w, 1, OUTSIDE_IF, &answer);
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(w.counters().drop_count(DropReason::IpSourceRoute), 7);
}

#[test]
fn other_well_formed_options_pass_intact() {
    let mut w = worker(lab_engine_config());
    // Record route (7) with room for two hops, a timestamp (68), router alert (148), NOPs, EOL.
    let opts: Vec<u8> = [
        &[7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0][..],
        &[68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[148, 4, 0, 0],
        &[1, 1, 0, 0, 0],
    ]
    .concat();
    let (v, out) = run(
        &mut w,
        0,
        INSIDE_IF,
        &with_ip_options(&udp(NODE1, 40000, SERVER, 53, b"query"), &opts),
    );
    assert_eq!(v, fwd_out());
    assert_eq!(ip_options_of(&out), &opts[..]);
    assert_checksums(&out);
    assert_eq!(tuple(&out).0, ip(PUBLIC));
}

#[test]
fn malformed_option_lists_are_dropped_never_a_panic() {
    let mut w = worker(lab_engine_config());
    let bad: [&[u8]; 6] = [
        // a length below 2
        &[7, 1, 0, 0],
        &[68, 0, 0, 0],
        // a length past the header
        &[7, 9, 4, 0, 0, 0, 0, 0],
        // a type with no room for its length
        &[1, 1, 1, 7],
        // source route after a bad length: malformed wins, nothing is read past it
        &[7, 200, 131, 7],
        // a record route too short for its own pointer
        &[7, 2, 0, 0],
    ];
    for opts in bad {
        let (v, _) = run(
            &mut w,
            0,
            INSIDE_IF,
            &with_ip_options(&udp(NODE1, 40000, SERVER, 53, b"q"), opts),
        );
        assert_eq!(v, Verdict::Drop(DropReason::BadIpOptions), "{opts:?}");
    }
    assert_eq!(w.counters().drop_count(DropReason::BadIpOptions), 6);
    assert_eq!(w.flow_count(), 0);
    // Every option list of up to 8 bytes, whatever the bytes: a verdict, never a panic.
    for a in 0..=255u8 {
        for b in [0u8, 1, 2, 3, 4, 5, 8, 255] {
            let frame = with_ip_options(&udp(NODE1, 40001, SERVER, 53, b"q"), &[a, b, 4, 0]);
            run(&mut w, 0, INSIDE_IF, &frame);
        }
    }
}

#[test]
fn the_new_reasons_are_named_like_the_others() {
    let labels: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    for l in ["tcp_bad_flags", "ip_source_route", "bad_ip_options"] {
        assert!(labels.contains(&l), "{l} in {labels:?}");
    }
}
