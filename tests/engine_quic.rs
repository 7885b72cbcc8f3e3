//! QUIC application rules in the engine: a UDP flow to port 443 is held until its client
//! Initials decrypt to a ClientHello; then its datagrams are released whole, in order and
//! SNATed, or the flow is dropped. Fixtures are real aioquic first flights
//! (tests/fixtures/gen_quic_initial.py) and Initials sealed here with `wire::quic`.

mod engine_util;

use engine_util::*;
use tollgate::datapath::events::{self, Action};
use tollgate::datapath::{DropReason, Verdict, Worker};
use tollgate::policy::AppProto;
use tollgate::wire::quic::{seal_initial, InitialKeys};

const ALLOWED: &[u8] = include_bytes!("fixtures/quic_initial_allowed.bin");
const DENIED: &[u8] = include_bytes!("fixtures/quic_initial_denied.bin");
const SPLIT: [&[u8]; 2] = [
    include_bytes!("fixtures/quic_initial_split_0.bin"),
    include_bytes!("fixtures/quic_initial_split_1.bin"),
];
const HELLO_NOSNI: &[u8] = include_bytes!("fixtures/clienthello_nosni.bin");

/// UDP 443 may only be allowed by name: `allowed.example` is (rule "allowed"); the rest is
/// denied by default.
const QUIC_RULES: &str = r#"
[[group]]
name = "test"
priority = 100

  [[group.collection]]
  name = "quic"
  priority = 100
  kind = "application"
  action = "allow"

    [[group.collection.rule]]
    name = "allowed"
    sources = ["*"]
    fqdns = ["allowed.example"]
    protocols = ["quic:443"]
"#;

fn quic_worker() -> (Worker, rtrb::Consumer<events::DecisionEvent>) {
    let mut w = WorkerKit::new().policy(policy(QUIC_RULES)).seed(3).build();
    let (sink, rx) = events::channel(64, 1000);
    w.set_event_sink(sink);
    (w, rx)
}

fn drain(w: &mut Worker) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some((len, _, _)) = w.poll_transmit(&mut buf) {
        out.push(buf[..len].to_vec());
    }
    out
}

fn udp_payload(frame: &[u8]) -> Vec<u8> {
    let s = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
    match s.transport.unwrap() {
        etherparse::TransportSlice::Udp(u) => u.payload().to_vec(),
        _ => panic!("not UDP"),
    }
}

/// A client Initial sealed here: `frames` in a 1200-byte datagram for `dcid`.
fn initial(dcid: &[u8], pn: u32, frames: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 1500];
    let n = seal_initial(
        &InitialKeys::client(dcid),
        dcid,
        b"",
        pn,
        1,
        frames,
        1200,
        &mut out,
    )
    .unwrap();
    out.truncate(n);
    out
}

fn crypto(data: &[u8]) -> Vec<u8> {
    let mut v = vec![0x06, 0x00, 0x40 | (data.len() >> 8) as u8, data.len() as u8];
    v.extend_from_slice(data);
    v
}

#[test]
fn an_allowed_initial_is_held_then_released_whole_and_snated() {
    let (mut w, mut rx) = quic_worker();
    let (v, _) = run(
        &mut w,
        0,
        INSIDE_IF,
        &udp(NODE1, 50000, SERVER, 443, ALLOWED),
    );
    assert_eq!(v, Verdict::Held);
    let sent = drain(&mut w);
    assert_eq!(sent.len(), 1);
    let port = tuple(&sent[0]).1;
    assert_eq!(tuple(&sent[0]), (ip(PUBLIC), port, ip(SERVER), 443));
    assert_checksums(&sent[0]);
    assert_eq!(
        udp_payload(&sent[0]),
        ALLOWED,
        "every byte as the client sent it"
    );
    assert_eq!(w.inspecting(), 0);
    // The flow then continues untouched, both ways.
    let (v, out) = run(
        &mut w,
        1,
        INSIDE_IF,
        &udp(NODE1, 50000, SERVER, 443, b"1-rtt"),
    );
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(tuple(&out), (ip(PUBLIC), port, ip(SERVER), 443));
    let (v, back) = run(
        &mut w,
        1,
        OUTSIDE_IF,
        &udp(SERVER, 443, PUBLIC, port, b"reply"),
    );
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(tuple(&back), (ip(SERVER), 443, ip(NODE1), 50000));
    let e = rx.pop().unwrap();
    assert_eq!(e.action, Action::Allow);
    assert_eq!(e.rule, Some(rule_id(&*policy(QUIC_RULES), "allowed")));
    assert_eq!(e.app, Some(AppProto::Quic));
    assert_eq!(e.name(), Some("allowed.example"));
    assert_eq!(e.snat, Some((ip(PUBLIC), port)));
}

#[test]
fn a_hello_over_two_datagrams_is_released_in_arrival_order() {
    for order in [[0usize, 1], [1, 0]] {
        let (mut w, _rx) = quic_worker();
        let first = SPLIT[order[0]];
        let second = SPLIT[order[1]];
        assert_eq!(
            run(&mut w, 0, INSIDE_IF, &udp(NODE1, 50001, SERVER, 443, first)).0,
            Verdict::Held
        );
        assert!(
            drain(&mut w).is_empty(),
            "nothing reaches the server before the verdict"
        );
        assert_eq!(w.inspecting(), 1);
        assert_eq!(
            run(
                &mut w,
                0,
                INSIDE_IF,
                &udp(NODE1, 50001, SERVER, 443, second)
            )
            .0,
            Verdict::Held
        );
        let sent = drain(&mut w);
        assert_eq!(sent.len(), 2, "order {order:?}");
        assert_eq!(udp_payload(&sent[0]), first);
        assert_eq!(udp_payload(&sent[1]), second);
        for f in &sent {
            assert_eq!(tuple(f).0, ip(PUBLIC));
            assert_checksums(f);
        }
        assert_eq!(w.flow_count(), 1);
        assert_eq!(w.inspecting(), 0);
    }
}

#[test]
fn a_denied_name_drops_the_flow_with_an_event_naming_it() {
    let (mut w, mut rx) = quic_worker();
    let (v, _) = run(
        &mut w,
        0,
        INSIDE_IF,
        &udp(NODE1, 50002, SERVER, 443, DENIED),
    );
    assert_eq!(v, Verdict::Drop(DropReason::AppDeny));
    assert!(drain(&mut w).is_empty());
    assert_eq!(w.counters().drop_count(DropReason::AppDeny), 1);
    assert_eq!(w.flow_count(), 0);
    assert_eq!(w.inspecting(), 0);
    let e = rx.pop().unwrap();
    assert_eq!(
        (e.action, e.reason, e.app),
        (
            Action::Deny,
            Some(DropReason::AppDeny),
            Some(AppProto::Quic)
        )
    );
    assert_eq!(e.name(), Some("denied.example"));
    // The client's retransmission starts a new inspection and is denied again.
    let (v, _) = run(
        &mut w,
        1,
        INSIDE_IF,
        &udp(NODE1, 50002, SERVER, 443, DENIED),
    );
    assert_eq!(v, Verdict::Drop(DropReason::AppDeny));
}

#[test]
fn an_initial_without_sni_is_no_sni() {
    let (mut w, mut rx) = quic_worker();
    let d = initial(b"12345678", 0, &crypto(&HELLO_NOSNI[5..]));
    let (v, _) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 50003, SERVER, 443, &d));
    assert_eq!(v, Verdict::Drop(DropReason::NoSni));
    assert_eq!(w.counters().drop_count(DropReason::NoSni), 1);
    assert_eq!(rx.pop().unwrap().reason, Some(DropReason::NoSni));
}

#[test]
fn not_quic_or_undecryptable_is_denied() {
    let (mut w, _rx) = quic_worker();
    let (v, _) = run(
        &mut w,
        0,
        INSIDE_IF,
        &udp(NODE1, 50004, SERVER, 443, b"\x00junk"),
    );
    assert_eq!(v, Verdict::Drop(DropReason::AppDeny));
    let mut bad = ALLOWED.to_vec();
    bad[300] ^= 1; // inside the Initial (aioquic pads the datagram after its 524-byte packet)
    let (v, _) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 50005, SERVER, 443, &bad));
    assert_eq!(v, Verdict::Drop(DropReason::AppDeny));
    // QUIC v2 is not read: denied, not held.
    let mut v2 = ALLOWED.to_vec();
    v2[1..5].copy_from_slice(&0x6b33_43cfu32.to_be_bytes());
    let (v, _) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 50006, SERVER, 443, &v2));
    assert_eq!(v, Verdict::Drop(DropReason::AppDeny));
    assert_eq!(w.counters().drop_count(DropReason::AppDeny), 3);
    assert_eq!(w.flow_count(), 0);
}

#[test]
fn byte_count_and_time_budgets() {
    let (mut w, _rx) = quic_worker();
    // Initials with only a PING: never a ClientHello. The ninth datagram is over the hold.
    let mut last = Verdict::Held;
    for pn in 0..9 {
        let d = initial(b"abcdefgh", pn, &[0x01]);
        last = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 50007, SERVER, 443, &d)).0;
        if pn < 8 {
            assert_eq!(last, Verdict::Held, "datagram {pn}");
        }
    }
    assert_eq!(last, Verdict::Drop(DropReason::InspectBudget));
    // CRYPTO data beyond the per-flow buffer (offset 65536).
    let d = initial(b"abcdefgh", 0, &[0x06, 0x80, 0x01, 0x00, 0x00, 0x01, b'x']);
    let (v, _) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 50008, SERVER, 443, &d));
    assert_eq!(v, Verdict::Drop(DropReason::InspectBudget));
    assert_eq!(w.counters().drop_count(DropReason::InspectBudget), 2);
    // A slow client is given up after the time budget.
    run(
        &mut w,
        1,
        INSIDE_IF,
        &udp(NODE1, 50009, SERVER, 443, SPLIT[0]),
    );
    assert_eq!(w.inspecting(), 1);
    w.housekeeping(12 * NS, 10);
    assert_eq!(w.inspecting(), 0);
    assert_eq!(w.flow_count(), 0);
    assert_eq!(w.counters().drop_count(DropReason::InspectBudget), 3);
}

#[test]
fn inspecting_quic_does_not_allocate() {
    use tollgate::datapath::Packet;
    let (mut w, _rx) = quic_worker();
    let frames: Vec<Vec<u8>> = (0..50u16)
        .flat_map(|i| {
            [
                udp(NODE1, 51000 + i, SERVER, 443, SPLIT[0]),
                udp(NODE1, 51000 + i, SERVER, 443, SPLIT[1]),
                udp(NODE2, 51000 + i, SERVER, 443, DENIED),
            ]
        })
        .collect();
    let mut buf = vec![0u8; 2048];
    let mut tx = [0u8; 2048];
    let mut held = 0;
    let info = allocation_counter::measure(|| {
        for f in &frames {
            buf[..f.len()].copy_from_slice(f);
            let mut p = Packet::new(&mut buf, f.len(), INSIDE_IF);
            if w.process(0, &mut p) == Verdict::Held {
                held += 1;
            }
            while w.poll_transmit(&mut tx).is_some() {}
        }
    });
    assert_eq!(held, 100);
    assert_eq!(w.counters().drop_count(DropReason::AppDeny), 50);
    assert_eq!(
        info.count_total, 0,
        "allocations on the QUIC inspection path"
    );
}

/// The ClientHello handshake message (TLS record header stripped) for `allowed.example`, or with
/// that name replaced by another of the same length.
fn hello_message(name: &[u8; 15]) -> Vec<u8> {
    let mut h = include_bytes!("fixtures/clienthello_allowed.bin")[5..].to_vec();
    let at = h.windows(15).position(|x| x == b"allowed.example").unwrap();
    h[at..at + 15].copy_from_slice(name);
    h
}

#[test]
fn changed_crypto_bytes_drop_the_flow_as_an_overlap_mismatch() {
    let (mut w, mut rx) = quic_worker();
    let evil = hello_message(b"evilevi.example");
    let allowed = hello_message(b"allowed.example");
    let dcid = b"abcdefgh";
    let d0 = initial(dcid, 0, &crypto(&evil[..200]));
    assert_eq!(
        run(&mut w, 0, INSIDE_IF, &udp(NODE1, 50020, SERVER, 443, &d0)).0,
        Verdict::Held
    );
    // The whole allowed hello at offset 0: its first 200 bytes differ from those received.
    let d1 = initial(dcid, 1, &crypto(&allowed));
    let (v, _) = run(&mut w, 0, INSIDE_IF, &udp(NODE1, 50020, SERVER, 443, &d1));
    assert_eq!(v, Verdict::Drop(DropReason::InspectOverlapMismatch));
    assert!(drain(&mut w).is_empty(), "nothing reaches the server");
    assert_eq!(
        w.counters().drop_count(DropReason::InspectOverlapMismatch),
        1
    );
    assert_eq!(w.counters().drop_count(DropReason::AppDeny), 0);
    assert_eq!((w.flow_count(), w.inspecting()), (0, 0));
    let e = rx.pop().unwrap();
    assert_eq!(
        (e.action, e.reason, e.app),
        (
            Action::Deny,
            Some(DropReason::InspectOverlapMismatch),
            Some(AppProto::Quic)
        )
    );
    // An identical resend of CRYPTO bytes is a retransmission: the flow is allowed and every
    // datagram released in order.
    let a0 = initial(dcid, 0, &crypto(&allowed[..200]));
    let a1 = initial(dcid, 1, &crypto(&allowed[..200]));
    let a2 = initial(dcid, 2, &crypto(&allowed));
    for d in [&a0, &a1] {
        let v = run(&mut w, 1, INSIDE_IF, &udp(NODE1, 50021, SERVER, 443, d)).0;
        assert_eq!(v, Verdict::Held);
    }
    assert_eq!(
        run(&mut w, 1, INSIDE_IF, &udp(NODE1, 50021, SERVER, 443, &a2)).0,
        Verdict::Held
    );
    let sent = drain(&mut w);
    assert_eq!(sent.len(), 3);
    for (f, d) in sent.iter().zip([&a0, &a1, &a2]) {
        assert_eq!(&udp_payload(f), d);
    }
    assert_eq!(w.flow_count(), 1);
}

#[test]
fn a_held_datagram_with_a_bad_udp_checksum_is_dropped_not_read() {
    let (mut w, _rx) = quic_worker();
    let mut bad = udp(NODE1, 50022, SERVER, 443, ALLOWED);
    // The UDP checksum (a zero one would mean "none": make sure it is not).
    let at = 14 + 20 + 6;
    bad[at] ^= 0x01;
    if bad[at..at + 2] == [0, 0] {
        bad[at + 1] = 1;
    }
    let v = run(&mut w, 0, INSIDE_IF, &bad).0;
    assert_eq!(v, Verdict::Drop(DropReason::InspectUnverifiable));
    assert!(drain(&mut w).is_empty());
    assert_eq!(w.counters().drop_count(DropReason::InspectUnverifiable), 1);
    let v = run(
        &mut w,
        0,
        INSIDE_IF,
        &udp(NODE1, 50022, SERVER, 443, ALLOWED),
    )
    .0;
    assert_eq!(v, Verdict::Held);
    assert_eq!(drain(&mut w).len(), 1);
}
