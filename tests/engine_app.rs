//! Application rules in the engine: the first payload is held until its name is read, then
//! released in order or reset both ways.

mod engine_util;

use std::sync::Arc;

use engine_util::*;
use tollgate::datapath::events::{self, Action};
use tollgate::datapath::{DropReason, Verdict, Worker};
use tollgate::policy::{AppProto, Decision, FlowQuery, Policy, RuleRef};

const HELLO: &[u8] = include_bytes!("fixtures/clienthello_allowed.bin");
const HELLO_NOSNI: &[u8] = include_bytes!("fixtures/clienthello_nosni.bin");

/// TEST ONLY: TCP 80/443 may only be allowed by name; `allowed.example` is (rule 5).
/// Hand-written because it allows the name whatever the application protocol read from the
/// payload (TLS or HTTP on either port), where a configuration ties each name to a
/// protocol:port pair.
#[derive(Debug)]
struct AppTestPolicy;

impl Policy for AppTestPolicy {
    fn decide(&self, q: &FlowQuery) -> Decision {
        if q.proto == 6 && (q.dport == 443 || q.dport == 80) {
            Decision::Inspect
        } else {
            Decision::Deny { rule: None }
        }
    }
    fn decide_app(&self, _: &FlowQuery, _: AppProto, fqdn: Option<&str>) -> Decision {
        match fqdn {
            Some("allowed.example") => Decision::Allow { rule: 5 },
            _ => Decision::Deny { rule: None },
        }
    }
    fn describe(&self, _: u32) -> Option<RuleRef<'_>> {
        None
    }
}

fn app_worker() -> Worker {
    WorkerKit::new()
        .policy(Arc::new(AppTestPolicy))
        .seed(3)
        .build()
}

/// Opens a TCP flow to SERVER:dport through the worker; returns the public port.
fn handshake(w: &mut Worker, sport: u16, dport: u16) -> u16 {
    let (v, out) = run(w, 0, INSIDE_IF, &tcp(NODE1, sport, SERVER, dport, "S", b""));
    assert!(
        matches!(v, Verdict::Forward { .. }),
        "the handshake passes: {v:?}"
    );
    let port = tuple(&out).1;
    let (v, _) = run(
        w,
        0,
        OUTSIDE_IF,
        &tcp(SERVER, dport, PUBLIC, port, "SA", b""),
    );
    assert!(matches!(v, Verdict::Forward { .. }));
    run(w, 0, INSIDE_IF, &tcp(NODE1, sport, SERVER, dport, "A", b""));
    port
}

/// A data segment with an explicit sequence number (etherparse's builder fixes seq = 1000).
fn data(sport: u16, dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    eth()
        .ipv4(ip(NODE1).octets(), ip(SERVER).octets(), 64)
        .tcp(sport, dport, seq, 65535)
        .ack(2000)
        .psh()
        .write(&mut v, payload)
        .unwrap();
    v
}

fn drain(w: &mut Worker) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some((len, _, _)) = w.poll_transmit(&mut buf) {
        out.push(buf[..len].to_vec());
    }
    out
}

fn payload_of(frame: &[u8]) -> Vec<u8> {
    let s = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
    match s.transport.unwrap() {
        etherparse::TransportSlice::Tcp(t) => t.payload().to_vec(),
        _ => panic!(),
    }
}

#[test]
fn a_client_hello_split_in_two_segments_is_held_then_released_in_order() {
    let mut w = app_worker();
    let port = handshake(&mut w, 40000, 443);
    // The SYN carried seq 1000, so the stream starts at 1001.
    let (a, b) = HELLO.split_at(200);
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40000, 443, 1001, a)).0,
        Verdict::Held
    );
    assert!(
        drain(&mut w).is_empty(),
        "nothing reaches the server before the verdict"
    );
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40000, 443, 1201, b)).0,
        Verdict::Held
    );
    let sent = drain(&mut w);
    assert_eq!(sent.len(), 2);
    for f in &sent {
        assert_eq!(tuple(f), (ip(PUBLIC), port, ip(SERVER), 443));
        assert_checksums(f);
    }
    assert_eq!(payload_of(&sent[0]), a);
    assert_eq!(payload_of(&sent[1]), b);
    // The flow then continues untouched.
    let (v, _) = run(
        &mut w,
        2,
        INSIDE_IF,
        &data(40000, 443, 1001 + HELLO.len() as u32, b"app data"),
    );
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(w.inspecting(), 0);
}

#[test]
fn out_of_order_segments_are_reassembled() {
    let mut w = app_worker();
    handshake(&mut w, 40001, 443);
    let (a, b) = HELLO.split_at(300);
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40001, 443, 1301, b)).0,
        Verdict::Held
    );
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40001, 443, 1001, a)).0,
        Verdict::Held
    );
    assert_eq!(drain(&mut w).len(), 2);
}

#[test]
fn a_denied_name_resets_both_ends() {
    let mut w = app_worker();
    let port = handshake(&mut w, 40002, 443);
    let other = std::fs::read("tests/fixtures/clienthello_allowed.bin").unwrap();
    // Same ClientHello with the name changed to another of equal length.
    let mut denied = other.clone();
    let at = denied
        .windows(15)
        .position(|x| x == b"allowed.example")
        .unwrap();
    denied[at..at + 15].copy_from_slice(b"blocked.example");
    let (v, rst) = run(&mut w, 1, INSIDE_IF, &data(40002, 443, 1001, &denied));
    assert_eq!(
        v,
        Verdict::Reply {
            tx_if: INSIDE_IF,
            next_hop: ip(NODE1)
        }
    );
    assert_eq!(tuple(&rst), (ip(SERVER), 443, ip(NODE1), 40002));
    assert_eq!(rst[14 + 20 + 13] & 0x04, 0x04);
    assert_checksums(&rst);
    let sent = drain(&mut w);
    assert_eq!(sent.len(), 1, "one RST toward the server, no payload");
    assert_eq!(tuple(&sent[0]), (ip(PUBLIC), port, ip(SERVER), 443));
    assert_eq!(
        u32::from_be_bytes(sent[0][38..42].try_into().unwrap()),
        1001,
        "at the server's expected sequence"
    );
    assert!(payload_of(&sent[0]).is_empty());
    assert_eq!(w.counters().drop_count(DropReason::AppDeny), 1);
    assert_eq!(w.flow_count(), 0);
}

#[test]
fn tls_without_sni_is_denied_as_no_sni() {
    let mut w = app_worker();
    handshake(&mut w, 40003, 443);
    let (v, _) = run(&mut w, 1, INSIDE_IF, &data(40003, 443, 1001, HELLO_NOSNI));
    assert!(matches!(v, Verdict::Reply { .. }));
    assert_eq!(w.counters().drop_count(DropReason::NoSni), 1);
}

#[test]
fn http_host_decides_plain_http() {
    let mut w = app_worker();
    handshake(&mut w, 40004, 80);
    let req = b"GET / HTTP/1.1\r\nHost: Allowed.Example.\r\nAccept: */*\r\n\r\n";
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40004, 80, 1001, req)).0,
        Verdict::Held
    );
    assert_eq!(drain(&mut w).len(), 1);
    handshake(&mut w, 40005, 80);
    let req = b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n";
    assert!(matches!(
        run(&mut w, 1, INSIDE_IF, &data(40005, 80, 1001, req)).0,
        Verdict::Reply { .. }
    ));
}

#[test]
fn a_flow_that_never_completes_its_hello_spends_its_budget() {
    let mut w = app_worker();
    handshake(&mut w, 40006, 443);
    let mut last = Verdict::Held;
    for i in 0..9u32 {
        last = run(
            &mut w,
            1,
            INSIDE_IF,
            &data(40006, 443, 1001 + i, &HELLO[i as usize..i as usize + 1]),
        )
        .0;
    }
    assert!(matches!(last, Verdict::Reply { .. }), "{last:?}");
    assert_eq!(w.counters().drop_count(DropReason::InspectBudget), 1);
    // A slow client is given up after the time budget.
    handshake(&mut w, 40007, 443);
    run(&mut w, 1, INSIDE_IF, &data(40007, 443, 1001, &HELLO[..10]));
    assert_eq!(w.inspecting(), 1);
    w.housekeeping(11 * NS, 10);
    assert_eq!(w.inspecting(), 0);
    assert_eq!(w.counters().drop_count(DropReason::InspectBudget), 2);
}

/// The ClientHello fixture with `allowed.example` replaced by a name of the same length.
fn hello_naming(name: &[u8; 15]) -> Vec<u8> {
    let mut h = HELLO.to_vec();
    let at = h.windows(15).position(|x| x == b"allowed.example").unwrap();
    h[at..at + 15].copy_from_slice(name);
    h
}

/// The bypass a last-write-wins reassembly allows: the first copy of the bytes names a denied
/// server (the server keeps it), a "retransmission" at the same sequence numbers names an
/// allowed one (the firewall would read it). The flow must be reset, nothing released.
#[test]
fn overlapping_bytes_that_differ_reset_the_flow() {
    let mut w = app_worker();
    let (sink, mut rx) = events::channel(64, 1000);
    w.set_event_sink(sink);
    let port = handshake(&mut w, 40010, 443);
    let evil = hello_naming(b"evilevi.example");
    // The first 200 bytes hold the name but not the whole hello: held, NeedMore.
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40010, 443, 1001, &evil[..200])).0,
        Verdict::Held
    );
    // The whole allowed hello at the same sequence: its first 200 bytes differ.
    let (v, rst) = run(&mut w, 1, INSIDE_IF, &data(40010, 443, 1001, HELLO));
    assert_eq!(
        v,
        Verdict::Reply {
            tx_if: INSIDE_IF,
            next_hop: ip(NODE1)
        },
        "the client is reset"
    );
    assert_eq!(tuple(&rst), (ip(SERVER), 443, ip(NODE1), 40010));
    assert_eq!(rst[14 + 20 + 13] & 0x04, 0x04);
    assert_checksums(&rst);
    let sent = drain(&mut w);
    assert_eq!(sent.len(), 1, "one RST toward the server, no held payload");
    assert_eq!(tuple(&sent[0]), (ip(PUBLIC), port, ip(SERVER), 443));
    assert_eq!(sent[0][14 + 20 + 13] & 0x04, 0x04);
    assert!(payload_of(&sent[0]).is_empty());
    assert_eq!(
        u32::from_be_bytes(sent[0][38..42].try_into().unwrap()),
        1001
    );
    assert_eq!(w.flow_count(), 0);
    assert_eq!(w.inspecting(), 0);
    assert_eq!(
        w.counters().drop_count(DropReason::InspectOverlapMismatch),
        1
    );
    assert_eq!(w.counters().drop_count(DropReason::AppDeny), 0);
    let e = rx.pop().expect("a decision event");
    assert_eq!(
        (e.action, e.reason, e.app),
        (Action::Deny, Some(DropReason::InspectOverlapMismatch), None)
    );
    assert!(rx.pop().is_err(), "one event");
}

#[test]
fn an_exact_retransmission_of_held_bytes_is_released_with_the_rest() {
    let mut w = app_worker();
    let port = handshake(&mut w, 40011, 443);
    // The first 200 bytes, then a retransmission overlapping them and carrying the rest.
    let a = &HELLO[..200];
    let b = &HELLO[100..];
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40011, 443, 1001, a)).0,
        Verdict::Held
    );
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40011, 443, 1101, b)).0,
        Verdict::Held
    );
    let sent = drain(&mut w);
    assert_eq!(
        sent.len(),
        2,
        "both held frames, verbatim, in arrival order"
    );
    assert_eq!(payload_of(&sent[0]), a);
    assert_eq!(payload_of(&sent[1]), b);
    for f in &sent {
        assert_eq!(tuple(f), (ip(PUBLIC), port, ip(SERVER), 443));
        assert_checksums(f);
    }
    assert_eq!(w.inspecting(), 0);
    assert_eq!(
        w.counters().drop_count(DropReason::InspectOverlapMismatch),
        0
    );
}

#[test]
fn a_changed_byte_inside_an_out_of_order_overlap_resets_the_flow() {
    let mut w = app_worker();
    handshake(&mut w, 40012, 443);
    // A later part arrives first; an earlier segment overlaps its start with one byte changed.
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40012, 443, 1301, &HELLO[300..])).0,
        Verdict::Held
    );
    let mut a = HELLO[..310].to_vec();
    a[305] ^= 0x20;
    let (v, _) = run(&mut w, 1, INSIDE_IF, &data(40012, 443, 1001, &a));
    assert!(matches!(v, Verdict::Reply { .. }), "{v:?}");
    let sent = drain(&mut w);
    assert_eq!(sent.len(), 1, "the RST only");
    assert!(payload_of(&sent[0]).is_empty());
    assert_eq!(
        w.counters().drop_count(DropReason::InspectOverlapMismatch),
        1
    );
}

/// Bytes before the stream start (the SYN's sequence number and earlier) are outside the
/// server's window: it skips them and takes the rest, and so does the hold.
#[test]
fn a_segment_starting_before_the_stream_is_read_as_the_server_reads_it() {
    let mut w = app_worker();
    handshake(&mut w, 40013, 443);
    // Ten junk bytes at 991..1001, then the whole hello from 1001: the server sees the hello.
    let mut seg = b"junkjunkjx".to_vec();
    seg.extend_from_slice(HELLO);
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40013, 443, 991, &seg)).0,
        Verdict::Held
    );
    let sent = drain(&mut w);
    assert_eq!(sent.len(), 1, "allowed, released verbatim");
    assert_eq!(payload_of(&sent[0]), seg);
    // The skipped bytes take part in no comparison, but what follows them does: a segment from
    // before the start whose in-stream bytes change what is held is refused.
    handshake(&mut w, 40014, 443);
    let evil = hello_naming(b"evilevi.example");
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40014, 443, 1001, &evil[..200])).0,
        Verdict::Held
    );
    let mut seg = b"xxxx".to_vec();
    seg.extend_from_slice(HELLO);
    let (v, _) = run(&mut w, 1, INSIDE_IF, &data(40014, 443, 997, &seg));
    assert!(matches!(v, Verdict::Reply { .. }), "{v:?}");
    assert_eq!(
        w.counters().drop_count(DropReason::InspectOverlapMismatch),
        1
    );
    let sent = drain(&mut w);
    assert_eq!(sent.len(), 1, "the RST only");
    assert!(payload_of(&sent[0]).is_empty());
    // A segment wholly before the stream (an old duplicate) carries no stream bytes: held and
    // released with the rest, the server discards it as the duplicate it is.
    handshake(&mut w, 40015, 443);
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40015, 443, 901, b"old bytes")).0,
        Verdict::Held
    );
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40015, 443, 1001, HELLO)).0,
        Verdict::Held
    );
    assert_eq!(drain(&mut w).len(), 2);
    assert_eq!(w.inspecting(), 0);
}

#[test]
fn a_segment_that_ends_past_the_byte_budget_resets_the_flow() {
    let mut w = app_worker();
    handshake(&mut w, 40016, 443);
    run(&mut w, 1, INSIDE_IF, &data(40016, 443, 1001, &HELLO[..100]));
    // Starts inside the 8 KiB budget, ends 8 bytes past it.
    let (v, _) = run(
        &mut w,
        1,
        INSIDE_IF,
        &data(40016, 443, 1001 + 8192 - 8, &[0u8; 16]),
    );
    assert!(matches!(v, Verdict::Reply { .. }), "{v:?}");
    let sent = drain(&mut w);
    assert_eq!(sent.len(), 1, "the RST only");
    assert!(payload_of(&sent[0]).is_empty());
    assert_eq!(w.counters().drop_count(DropReason::InspectBudget), 1);
    assert_eq!(w.flow_count(), 0);
}

/// A segment the server would discard (bad TCP checksum) must not be read: the client could
/// show the firewall an allowed name in it, then send the real bytes once the flow is released.
#[test]
fn a_held_segment_with_a_bad_checksum_is_dropped_not_read() {
    let mut w = app_worker();
    handshake(&mut w, 40017, 443);
    let mut bad = data(40017, 443, 1001, HELLO);
    bad[14 + 20 + 16] ^= 0x01; // the TCP checksum
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &bad).0,
        Verdict::Drop(DropReason::InspectUnverifiable)
    );
    assert!(drain(&mut w).is_empty(), "nothing released");
    assert_eq!(w.inspecting(), 1, "the flow is still held");
    assert_eq!(w.counters().drop_count(DropReason::InspectUnverifiable), 1);
    // The client's retransmission with a good checksum is read and allowed.
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &data(40017, 443, 1001, HELLO)).0,
        Verdict::Held
    );
    let sent = drain(&mut w);
    assert_eq!(sent.len(), 1);
    assert_eq!(payload_of(&sent[0]), HELLO);
}

/// The first fragment of a segment: the firewall would read only its part while the server
/// reassembles the rest (later fragments are forwarded as they come). Dropped, not read.
#[test]
fn a_fragmented_held_segment_is_dropped_not_read() {
    let mut w = app_worker();
    handshake(&mut w, 40018, 443);
    let mut frag = data(40018, 443, 1001, HELLO);
    frag[14 + 6] |= 0x20; // more fragments
    frag[14 + 6] &= !0x40; // no DF
    frag[14 + 10..14 + 12].fill(0);
    let mut sum = 0u32;
    for c in frag[14..34].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frag[14 + 10..14 + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &frag).0,
        Verdict::Drop(DropReason::InspectUnverifiable)
    );
    assert!(drain(&mut w).is_empty());
    assert_eq!(w.inspecting(), 1);
}

/// TEST ONLY: SSH allowed by rule 0 (or denied after a reload), TCP 443 decided by name as in
/// [`AppTestPolicy`]. Hand-written because the test needs the SSH rule numbered 0, like the
/// first inspection slot; a compiled ruleset numbers DNAT and network rules first, so it
/// cannot keep that number across the reload that removes the rule.
#[derive(Debug)]
struct SshThenApp {
    ssh_allowed: bool,
}

impl Policy for SshThenApp {
    fn decide(&self, q: &FlowQuery) -> Decision {
        match (q.proto, q.dport) {
            (6, 22) if self.ssh_allowed => Decision::Allow { rule: 0 },
            (6, 443) => Decision::Inspect,
            _ => Decision::Deny { rule: None },
        }
    }
    fn decide_app(&self, q: &FlowQuery, a: AppProto, fqdn: Option<&str>) -> Decision {
        AppTestPolicy.decide_app(q, a, fqdn)
    }
    fn describe(&self, _: u32) -> Option<RuleRef<'_>> {
        None
    }
}

#[test]
fn a_revoked_flow_does_not_free_the_inspection_slot_numbered_like_its_rule() {
    use tollgate::datapath::query::{list_flows, Answer, FlowFilter};
    let mut w = WorkerKit::new()
        .policy(Arc::new(SshThenApp { ssh_allowed: true }))
        .seed(3)
        .build();
    // A: an SSH flow allowed by rule 0. B: held for its name in the first slot (number 0).
    handshake(&mut w, 41000, 22);
    let port_b = handshake(&mut w, 41001, 443);
    let (b1, b2) = HELLO.split_at(200);
    let b1_frame = data(41001, 443, 1001, b1);
    assert_eq!(run(&mut w, 1, INSIDE_IF, &b1_frame).0, Verdict::Held);
    assert_eq!(w.inspecting(), 1);

    // The reload revokes A; `tollgate flows` shows it as revoked, not as inspecting.
    assert_eq!(w.set_policy(Arc::new(SshThenApp { ssh_allowed: false })), 1);
    let states = |w: &Worker| {
        let filter = FlowFilter {
            limit: 100,
            ..FlowFilter::default()
        };
        let a = list_flows(
            0,
            w.flows().iter().map(|(_, f)| f),
            w.flow_count(),
            &filter,
            2 * NS,
            w.flows().timeouts(),
            &SshThenApp { ssh_allowed: false },
        );
        let Answer::Flows { flows, .. } = a else {
            panic!("{a:?}")
        };
        let mut s: Vec<(u16, &'static str)> =
            flows.iter().map(|f| (f.orig.dport(), f.state)).collect();
        s.sort();
        s
    };
    assert_eq!(states(&w), [(22, "revoked"), (443, "inspecting")]);

    // A's next packet cuts it; B's slot stays B's.
    let (v, _) = run(&mut w, 2, INSIDE_IF, &data(41000, 22, 1001, b"ssh"));
    assert!(matches!(v, Verdict::Reply { .. }), "{v:?}");
    drain(&mut w);
    assert_eq!(w.inspecting(), 1, "B still holds its slot");

    // C opens and holds the start of its own hello: it must get another slot.
    let port_c = handshake(&mut w, 41002, 443);
    let c1: Vec<u8> = b"GET / HTTP/1.1\r\nHost: allo".to_vec();
    assert_eq!(
        run(&mut w, 3, INSIDE_IF, &data(41002, 443, 1001, &c1)).0,
        Verdict::Held
    );
    assert_eq!(w.inspecting(), 2);
    assert!(drain(&mut w).is_empty());

    // B completes its hello: exactly its two segments leave, intact and in order.
    assert_eq!(
        run(&mut w, 4, INSIDE_IF, &data(41001, 443, 1201, b2)).0,
        Verdict::Held
    );
    let sent = drain(&mut w);
    assert_eq!(sent.len(), 2, "B's two segments and nothing else");
    for f in &sent {
        assert_eq!(tuple(f), (ip(PUBLIC), port_b, ip(SERVER), 443));
        assert_checksums(f);
    }
    assert_eq!(payload_of(&sent[0]), b1);
    assert_eq!(payload_of(&sent[1]), b2);

    // C completes too: its own bytes only.
    let c2 = b"wed.example\r\n\r\n";
    assert_eq!(
        run(
            &mut w,
            5,
            INSIDE_IF,
            &data(41002, 443, 1001 + c1.len() as u32, c2)
        )
        .0,
        Verdict::Held
    );
    let sent = drain(&mut w);
    assert_eq!(sent.len(), 2);
    for f in &sent {
        assert_eq!(tuple(f), (ip(PUBLIC), port_c, ip(SERVER), 443));
    }
    assert_eq!(payload_of(&sent[0]), c1);
    assert_eq!(payload_of(&sent[1]), c2);
    assert_eq!(w.inspecting(), 0);
}
