//! GSO super-frames through the engine. Property: on a tracked flow, translating a TCP
//! super-frame once then cutting it equals cutting it then translating each segment, byte for
//! byte, both ways (SNAT, un-SNAT), with valid checksums and a partial checksum that follows
//! the address change. Plus unit tests: `Segment`, `BadOffload`, MTU, partial checksum, USO.

mod engine_util;

use std::net::Ipv4Addr;
use std::sync::Arc;

use engine_util::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use proptest::prelude::*;
use tollgate::datapath::{Counters, DropReason, Gso, Offload, Packet, Verdict, Worker};
use tollgate::policy::{AppProto, Decision, FlowQuery, Policy, RuleRef};
use tollgate::wire::gso;

/// Offset of the L4 header: Ethernet, then a 20-byte IPv4 header.
const L4: usize = 34;
const TCP: u8 = 6;
const UDP: u8 = 17;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const CWR: u8 = 0x80;

/// One's complement sum, written here so the fixtures do not lean on the crate under test.
fn ones_sum(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += (u32::from(c[0]) << 8) | u32::from(*c.get(1).unwrap_or(&0));
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The folded, not complemented, pseudo-header sum: what Linux leaves in a partial field.
fn pseudo(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: usize) -> u16 {
    let acc = ones_sum(&src, ones_sum(&dst, 0)) + u32::from(proto) + l4_len as u32;
    fold(acc)
}

/// Headers of a fixture frame.
#[derive(Clone, Copy, Debug)]
struct Spec {
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    ident: u16,
    /// TCP only: sequence and acknowledgement numbers, flags, option bytes (multiple of 4).
    seq: u32,
    ack: u32,
    flags: u8,
    opts: usize,
}

impl Spec {
    fn new(src: &str, sport: u16, dst: &str, dport: u16) -> Self {
        Spec {
            src: ip(src).octets(),
            sport,
            dst: ip(dst).octets(),
            dport,
            ident: 0x1234,
            seq: 1001,
            ack: 2001,
            flags: ACK | PSH,
            opts: 12,
        }
    }
}

/// NOP, NOP, then timestamp options (kind 8, length 10), cut to `n` bytes (a multiple of 4).
fn tcp_options(n: usize) -> Vec<u8> {
    let ts = [
        1u8, 1, 8, 10, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
    ];
    let mut o: Vec<u8> = ts.iter().copied().cycle().take(n).collect();
    // A cut timestamp would claim bytes past the header: pad the tail with NOPs instead.
    let whole = n / ts.len() * ts.len();
    o[whole..].iter_mut().for_each(|b| *b = 1);
    o
}

/// An Ethernet/IPv4 (DF, TTL 64) TCP or UDP frame. `partial`: the L4 checksum field holds the
/// pseudo-header sum over the whole L4 length (as Linux leaves a GSO super-frame), else the
/// complete checksum. A UDP length covers the whole payload.
fn frame(proto: u8, s: &Spec, payload: &[u8], partial: bool) -> Vec<u8> {
    let l4_hdr = if proto == TCP { 20 + s.opts } else { 8 };
    let l4_len = l4_hdr + payload.len();
    let total = 20 + l4_len;
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(total as u16).to_be_bytes());
    f.extend_from_slice(&s.ident.to_be_bytes());
    f.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&s.src);
    f.extend_from_slice(&s.dst);
    let c = !fold(ones_sum(&f[14..34], 0));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&s.sport.to_be_bytes());
    f.extend_from_slice(&s.dport.to_be_bytes());
    if proto == TCP {
        f.extend_from_slice(&s.seq.to_be_bytes());
        f.extend_from_slice(&s.ack.to_be_bytes());
        f.extend_from_slice(&[(((20 + s.opts) / 4) << 4) as u8, s.flags, 0xff, 0xff]);
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&tcp_options(s.opts));
    } else {
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(payload);
    let field = L4 + if proto == TCP { 16 } else { 6 };
    let ps = pseudo(s.src, s.dst, proto, l4_len);
    let c = if partial {
        ps
    } else {
        let c = !fold(ones_sum(&f[L4..], u32::from(ps)));
        if proto == UDP && c == 0 {
            0xffff
        } else {
            c
        }
    };
    f[field..field + 2].copy_from_slice(&c.to_be_bytes());
    f
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn offload(gso: Gso, gso_size: u16, proto: u8) -> Offload {
    Offload {
        gso,
        gso_size,
        csum_partial: true,
        csum_start: L4 as u16,
        csum_offset: if proto == TCP { 16 } else { 6 },
    }
}

/// Runs one frame with its offload metadata through the worker; returns the verdict, the frame
/// as it left and the metadata it left with.
fn run_off(
    w: &mut Worker,
    now: u64,
    rx_if: u8,
    frame: &[u8],
    off: Offload,
) -> (Verdict, Vec<u8>, Offload) {
    let mut buf = vec![0u8; frame.len().max(2048)];
    buf[..frame.len()].copy_from_slice(frame);
    let mut p = Packet::with_offload(&mut buf, frame.len(), rx_if, off);
    let v = w.process(now, &mut p);
    let (len, off) = (p.len, p.offload);
    (v, buf[..len].to_vec(), off)
}

/// Cuts a super-frame as the caller does.
fn cut(frame: &[u8], off: &Offload) -> Vec<Vec<u8>> {
    let mut scratch = [0u8; 2048];
    let mut out = Vec::new();
    let n = gso::segment(frame, off, &mut scratch, |s| out.push(s.to_vec())).expect("segments");
    assert_eq!(n, out.len());
    out
}

/// Opens a flow from `inside:sport` to `server:dport` through the worker (the first packet out,
/// the answer back); returns the public port.
fn open(w: &mut Worker, proto: u8, inside: &str, sport: u16, server: &str, dport: u16) -> u16 {
    let first = if proto == TCP {
        tcp(inside, sport, server, dport, "S", b"")
    } else {
        udp(inside, sport, server, dport, b"hello")
    };
    let (v, out) = run(w, 0, INSIDE_IF, &first);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    let port = tuple(&out).1;
    let answer = if proto == TCP {
        tcp(server, dport, PUBLIC, port, "SA", b"")
    } else {
        udp(server, dport, PUBLIC, port, b"hi")
    };
    let (v, back) = run(w, 1, OUTSIDE_IF, &answer);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(tuple(&back), (ip(server), dport, ip(inside), sport));
    port
}

/// What an independent parser reads in a segment, after checking its IPv4 and L4 checksums.
#[derive(Debug)]
struct Seen {
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    ident: u16,
    ttl: u8,
    df: bool,
    seq: u32,
    flags: u8,
    payload: Vec<u8>,
}

fn parse_checked(f: &[u8]) -> Seen {
    let s = SlicedPacket::from_ethernet(f).expect("etherparse parses the frame");
    let Some(NetSlice::Ipv4(i)) = s.net else {
        panic!("not IPv4")
    };
    let h = i.header();
    let ih = h.to_header();
    assert_eq!(
        ih.header_checksum,
        ih.calc_header_checksum(),
        "IPv4 checksum"
    );
    assert!(!h.more_fragments() && h.fragments_offset().value() == 0);
    let (src, dst) = (h.source(), h.destination());
    let (sport, dport, seq, flags, payload) = match s.transport.expect("an L4 header") {
        TransportSlice::Tcp(t) => {
            let want = t.calc_checksum_ipv4(src, dst).unwrap();
            assert_eq!(t.checksum(), want, "TCP checksum");
            let flags = t.slice()[13];
            let p = t.payload().to_vec();
            (
                t.source_port(),
                t.destination_port(),
                t.sequence_number(),
                flags,
                p,
            )
        }
        TransportSlice::Udp(u) => {
            let uh = u.to_header();
            let want = uh.calc_checksum_ipv4(&ih, u.payload()).unwrap();
            assert_eq!(u.checksum(), want, "UDP checksum");
            assert_eq!(usize::from(u.length()), 8 + u.payload().len());
            let p = u.payload().to_vec();
            (u.source_port(), u.destination_port(), 0, 0, p)
        }
        other => panic!("unexpected transport {other:?}"),
    };
    Seen {
        src: h.source_addr(),
        sport,
        dst: h.destination_addr(),
        dport,
        ident: h.identification(),
        ttl: h.ttl(),
        df: h.dont_fragment(),
        seq,
        flags,
        payload,
    }
}

/// Position of the first differing byte, for a readable failure.
fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i))
}

/// A flow of both workers, set up identically, and the headers of a super-frame in one
/// direction with what the engine must make of them.
struct Case {
    a: Worker,
    b: Worker,
    rx_if: u8,
    spec: Spec,
    /// The super-frame's addresses and ports once translated.
    after: (Ipv4Addr, u16, Ipv4Addr, u16),
    fwd: Verdict,
    /// Where an ICMP error about the super-frame goes.
    back: Verdict,
}

fn case(proto: u8, reply: bool, inside: &str, sport: u16, server: &str, dport: u16) -> Case {
    let mut a = worker(lab_engine_config());
    let mut b = worker(lab_engine_config());
    let port = open(&mut a, proto, inside, sport, server, dport);
    assert_eq!(
        open(&mut b, proto, inside, sport, server, dport),
        port,
        "identical workers pick the same port"
    );
    let (to_in, to_out) = (
        Verdict::Forward {
            tx_if: INSIDE_IF,
            next_hop: ip(inside),
        },
        Verdict::Forward {
            tx_if: OUTSIDE_IF,
            next_hop: ip(server),
        },
    );
    let reply_of = |v: Verdict| match v {
        Verdict::Forward { tx_if, next_hop } => Verdict::Reply { tx_if, next_hop },
        v => v,
    };
    if reply {
        Case {
            a,
            b,
            rx_if: OUTSIDE_IF,
            spec: Spec::new(server, dport, PUBLIC, port),
            after: (ip(server), dport, ip(inside), sport),
            fwd: to_in,
            back: reply_of(to_out),
        }
    } else {
        Case {
            a,
            b,
            rx_if: INSIDE_IF,
            spec: Spec::new(inside, sport, server, dport),
            after: (ip(PUBLIC), port, ip(server), dport),
            fwd: to_out,
            back: reply_of(to_in),
        }
    }
}

/// Checks an ICMP "fragmentation needed" reply with next-hop MTU 1500.
fn assert_frag_needed(f: &[u8]) {
    assert_checksums(f);
    assert_eq!(f[L4 - 20 + 9], 1, "ICMP");
    assert_eq!(
        &f[L4..L4 + 2],
        &[3, 4],
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(&f[L4 + 6..L4 + 8], &1500u16.to_be_bytes());
}

/// Runs `super_frame` both ways: A translates it whole then cuts it, B cuts it then translates
/// every segment. Returns A's translated super-frame and the final segments, checked equal.
fn translate_both_ways(
    c: &mut Case,
    proto: u8,
    super_frame: &[u8],
    off: Offload,
) -> (Vec<u8>, Vec<Vec<u8>>) {
    let now = 2 * NS;
    let (v, whole, left) = run_off(&mut c.a, now, c.rx_if, super_frame, off);
    assert_eq!(v, c.fwd, "the super-frame is forwarded as one");
    assert_eq!(left, off, "the super-frame keeps its offload metadata");
    let from_a = cut(&whole, &left);

    let mut from_b = Vec::new();
    for (i, s) in cut(super_frame, &off).iter().enumerate() {
        let (v, out, left) = run_off(&mut c.b, now, c.rx_if, s, Offload::NONE);
        assert_eq!(v, c.fwd, "segment {i} is forwarded");
        assert_eq!(left, Offload::NONE);
        from_b.push(out);
    }
    assert_eq!(from_a.len(), from_b.len(), "as many segments");
    for (i, (x, y)) in from_a.iter().zip(&from_b).enumerate() {
        assert!(
            x == y,
            "segment {i} of {}: translate-then-cut and cut-then-translate differ at byte {:?} \
             (lengths {} and {})",
            from_a.len(),
            first_diff(x, y),
            x.len(),
            y.len()
        );
    }
    // The counters saw one packet on A and each segment on B.
    let rx = |w: &Worker| {
        w.counters()
            .rx_packets
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(rx(&c.a), 3);
    assert_eq!(rx(&c.b), 2 + from_b.len() as u64);

    // The translated super-frame's partial checksum is the pseudo-header sum of its new
    // addresses over the whole L4 length, and completing it gives a checksum that verifies.
    let (src, _, dst, _) = c.after;
    let l4_len = whole.len() - L4;
    let field = L4 + usize::from(off.csum_offset);
    assert_eq!(
        u16::from_be_bytes([whole[field], whole[field + 1]]),
        pseudo(src.octets(), dst.octets(), proto, l4_len),
        "the partial checksum follows the address change"
    );
    let mut done = whole.clone();
    assert!(gso::complete_checksum(&mut done, &left));
    let seen = parse_checked(&done);
    assert_eq!((seen.src, seen.sport, seen.dst, seen.dport), c.after);
    (whole, from_a)
}

/// The segments of a translated super-frame as an independent parser reads them: translated
/// tuple, TTL decremented once, identification +i, and (TCP) sequence numbers and flags as
/// Linux's GSO sets them; the payloads join up to `data`.
fn check_segments(c: &Case, proto: u8, segs: &[Vec<u8>], data: &[u8], gso_size: usize) {
    let mut joined = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let seen = parse_checked(s);
        assert_eq!((seen.src, seen.sport, seen.dst, seen.dport), c.after);
        assert_eq!(seen.ttl, 63);
        assert!(seen.df);
        assert_eq!(seen.ident, c.spec.ident.wrapping_add(i as u16));
        assert_eq!(seen.payload.len(), gso_size.min(data.len() - i * gso_size));
        if proto == TCP {
            let last = i + 1 == segs.len();
            assert_eq!(seen.seq, c.spec.seq.wrapping_add((i * gso_size) as u32));
            let mut want = c.spec.flags;
            if !last {
                want &= !(FIN | PSH);
            }
            if i > 0 {
                want &= !CWR;
            }
            assert_eq!(seen.flags, want, "flags of segment {i}");
        }
        joined.extend_from_slice(&seen.payload);
    }
    assert_eq!(joined, data);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Translating a TCP super-frame on a tracked flow, then cutting it, equals cutting it then
    /// translating each segment, byte for byte, in both directions; when its segments do not
    /// fit the egress MTU both ways answer "fragmentation needed".
    #[test]
    fn a_super_frame_translates_as_its_segments_do(
        reply in any::<bool>(),
        host in 2u8..250,
        sport in 1u16..,
        server in 2u8..250,
        dport in 1u16..,
        plen in 1usize..=30000,
        gso_size in 500u16..=1460,
        opt_words in 0usize..=10,
        psh in any::<bool>(),
        fin in any::<bool>(),
        cwr in any::<bool>(),
        seq in any::<u32>(),
        ack in any::<u32>(),
        ident in any::<u16>(),
        seed in any::<u8>(),
    ) {
        prop_assume!(server != 1);
        let (inside, remote) = (format!("198.18.0.{host}"), format!("203.0.113.{server}"));
        let mut c = case(TCP, reply, &inside, sport, &remote, dport);
        c.spec.opts = opt_words * 4;
        c.spec.seq = seq;
        c.spec.ack = ack;
        c.spec.ident = ident;
        c.spec.flags = ACK
            | if psh { PSH } else { 0 }
            | if fin { FIN } else { 0 }
            | if cwr { CWR } else { 0 };
        let data = payload(plen, seed);
        let sf = frame(TCP, &c.spec, &data, true);
        prop_assert_eq!(
            u16::from_be_bytes([sf[L4 + 16], sf[L4 + 17]]),
            gso::partial_pseudo_sum(c.spec.src, c.spec.dst, TCP, (sf.len() - L4) as u16)
        );
        let off = offload(Gso::TcpV4 { ecn: cwr }, gso_size, TCP);

        let seg_l3 = 20 + 20 + c.spec.opts + usize::from(gso_size).min(plen);
        if seg_l3 > 1500 {
            let (v, out, left) = run_off(&mut c.a, 2 * NS, c.rx_if, &sf, off);
            prop_assert_eq!(v, c.back);
            prop_assert_eq!(left, Offload::NONE);
            assert_frag_needed(&out);
            let first = &cut(&sf, &off)[0];
            let (v, out, _) = run_off(&mut c.b, 2 * NS, c.rx_if, first, Offload::NONE);
            prop_assert_eq!(v, c.back);
            assert_frag_needed(&out);
            return Ok(());
        }
        let (_, segs) = translate_both_ways(&mut c, TCP, &sf, off);
        prop_assert_eq!(segs.len(), plen.div_ceil(usize::from(gso_size)));
        check_segments(&c, TCP, &segs, &data, usize::from(gso_size));
    }
}

fn snapshot(c: &Counters) -> Vec<u64> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut v = vec![
        c.rx_packets.load(Relaxed),
        c.rx_bytes.load(Relaxed),
        c.tx_packets.load(Relaxed),
        c.tx_bytes.load(Relaxed),
        c.local.load(Relaxed),
        c.replies.load(Relaxed),
        c.flows_created.load(Relaxed),
        c.total_drops(),
    ];
    for i in c.ifaces.iter() {
        v.push(i.rx_packets.load(Relaxed));
        v.push(i.tx_packets.load(Relaxed));
    }
    v
}

/// A super-frame the engine will not take whole comes back as `Segment`, untouched and
/// uncounted.
fn assert_left_to_segment(w: &mut Worker, rx_if: u8, sf: &[u8], off: Offload) {
    let (before, flows) = (snapshot(w.counters()), w.flow_count());
    let (v, out, left) = run_off(w, 5 * NS, rx_if, sf, off);
    assert_eq!(v, Verdict::Segment);
    assert!(
        out == sf,
        "unchanged, first difference at {:?}",
        first_diff(&out, sf)
    );
    assert_eq!(left, off);
    assert_eq!(snapshot(w.counters()), before, "nothing counted");
    assert_eq!(w.flow_count(), flows);
}

#[test]
fn a_super_frame_of_no_flow_is_left_to_be_segmented() {
    let mut w = worker(lab_engine_config());
    let s = Spec::new(NODE1, 40000, SERVER, 80);
    let sf = frame(TCP, &s, &payload(5000, 1), true);
    let off = offload(Gso::TcpV4 { ecn: false }, 1448, TCP);
    assert_left_to_segment(&mut w, INSIDE_IF, &sf, off);
    // Even a SYN: a new flow is decided on its first segment.
    let syn = Spec { flags: 0x02, ..s };
    let sf = frame(TCP, &syn, &payload(3000, 2), true);
    assert_left_to_segment(&mut w, INSIDE_IF, &sf, off);
    // UDP too.
    let u = Spec::new(NODE1, 5000, SERVER, 5201);
    let sf = frame(UDP, &u, &payload(4000, 3), true);
    assert_left_to_segment(&mut w, INSIDE_IF, &sf, offload(Gso::UdpL4, 1200, UDP));
    // The caller then processes the segments one by one: here each is a mid-stream segment
    // with no flow.
    let sf = frame(TCP, &s, &payload(5000, 1), true);
    for seg in cut(&sf, &off) {
        let (v, _, _) = run_off(&mut w, 5 * NS, INSIDE_IF, &seg, Offload::NONE);
        assert_eq!(v, Verdict::Drop(DropReason::TcpNonSyn));
    }
    assert_eq!(w.counters().drop_count(DropReason::TcpNonSyn), 4);
}

/// TEST ONLY: TCP to port 443 is decided by name (inspected); everything else is allowed.
/// Hand-written because it allows a held flow whatever its name, or without one: a
/// configuration's application rules list the names they allow.
#[derive(Debug)]
struct InspectPolicy;

impl Policy for InspectPolicy {
    fn decide(&self, q: &FlowQuery) -> Decision {
        if q.proto == TCP && q.dport == 443 {
            Decision::Inspect
        } else {
            Decision::Allow { rule: 1 }
        }
    }
    fn decide_app(&self, _: &FlowQuery, _: AppProto, _: Option<&str>) -> Decision {
        Decision::Allow { rule: 5 }
    }
    fn describe(&self, _: u32) -> Option<RuleRef<'_>> {
        None
    }
}

#[test]
fn a_super_frame_of_a_flow_under_inspection_is_left_to_be_segmented() {
    let mut w = WorkerKit::new().policy(Arc::new(InspectPolicy)).build();
    let port = open(&mut w, TCP, NODE1, 40000, SERVER, 443);
    let off = offload(Gso::TcpV4 { ecn: false }, 1448, TCP);
    let s = Spec::new(NODE1, 40000, SERVER, 443);
    let sf = frame(TCP, &s, &payload(5000, 4), true);
    assert_left_to_segment(&mut w, INSIDE_IF, &sf, off);
    // The server's data is not inspected: its super-frame is translated whole.
    let back = Spec::new(SERVER, 443, PUBLIC, port);
    let sf = frame(TCP, &back, &payload(5000, 5), true);
    let (v, out, left) = run_off(&mut w, 5 * NS, OUTSIDE_IF, &sf, off);
    assert_eq!(
        v,
        Verdict::Forward {
            tx_if: INSIDE_IF,
            next_hop: ip(NODE1)
        }
    );
    assert_eq!(left, off);
    assert_eq!(tuple(&out), (ip(SERVER), 443, ip(NODE1), 40000));
}

#[test]
fn offload_metadata_that_disagrees_with_the_headers_is_bad_offload() {
    let mut w = worker(lab_engine_config());
    open(&mut w, UDP, NODE1, 5000, SERVER, 5201);
    open(&mut w, TCP, NODE1, 40000, SERVER, 80);
    let udp_sf = frame(
        UDP,
        &Spec::new(NODE1, 5000, SERVER, 5201),
        &payload(3000, 6),
        true,
    );
    let tcp_sf = frame(
        TCP,
        &Spec::new(NODE1, 40000, SERVER, 80),
        &payload(3000, 7),
        true,
    );
    let tso = offload(Gso::TcpV4 { ecn: false }, 1000, TCP);
    let uso = offload(Gso::UdpL4, 1000, UDP);
    let cases: [(&str, &[u8], Offload); 6] = [
        ("TCP GSO on a UDP datagram", &udp_sf, tso),
        (
            "TCP GSO on a UDP datagram, UDP checksum offsets",
            &udp_sf,
            Offload {
                csum_offset: 6,
                ..tso
            },
        ),
        ("UDP GSO on a TCP segment", &tcp_sf, uso),
        ("gso_size 0", &tcp_sf, Offload { gso_size: 0, ..tso }),
        (
            "partial checksum not at the TCP header",
            &tcp_sf,
            Offload {
                csum_start: L4 as u16 + 4,
                ..tso
            },
        ),
        (
            "partial checksum field not the TCP one",
            &tcp_sf,
            Offload {
                csum_offset: 6,
                ..tso
            },
        ),
    ];
    for (i, (name, f, off)) in cases.iter().enumerate() {
        let (v, _, _) = run_off(&mut w, 2 * NS, INSIDE_IF, f, *off);
        assert_eq!(v, Verdict::Drop(DropReason::BadOffload), "{name}");
        assert_eq!(
            w.counters().drop_count(DropReason::BadOffload),
            i as u64 + 1,
            "{name}"
        );
    }
    // With no flow either: the metadata is checked before the flow table.
    let mut w = worker(lab_engine_config());
    let (v, _, _) = run_off(&mut w, 0, INSIDE_IF, &udp_sf, tso);
    assert_eq!(v, Verdict::Drop(DropReason::BadOffload));
}

#[test]
fn segments_beyond_the_egress_mtu_get_fragmentation_needed() {
    let mut w = worker(lab_engine_config());
    open(&mut w, TCP, NODE1, 40000, SERVER, 80);
    let s = Spec {
        opts: 0,
        ..Spec::new(NODE1, 40000, SERVER, 80)
    };
    let sf = frame(TCP, &s, &payload(4000, 8), true);
    // 20 + 20 + 1481 > 1500, DF set.
    let off = offload(Gso::TcpV4 { ecn: false }, 1461, TCP);
    let (v, out, left) = run_off(&mut w, 2 * NS, INSIDE_IF, &sf, off);
    assert_eq!(
        v,
        Verdict::Reply {
            tx_if: INSIDE_IF,
            next_hop: ip(NODE1)
        }
    );
    assert_eq!(left, Offload::NONE, "a reply built in place has no offload");
    assert_frag_needed(&out);
    assert_eq!(addrs(&out), (ip("198.18.0.1"), ip(NODE1)));
    // The quote is the super-frame's IPv4 header and first 8 TCP bytes.
    assert_eq!(&out[L4 + 8..L4 + 36], &sf[14..42]);
    assert_eq!(w.counters().drop_count(DropReason::FragNeeded), 1);

    // Without DF it is dropped.
    let mut no_df = sf.clone();
    no_df[20] = 0;
    no_df[24..26].copy_from_slice(&[0, 0]);
    let c = !fold(ones_sum(&no_df[14..34], 0));
    no_df[24..26].copy_from_slice(&c.to_be_bytes());
    let (v, _, _) = run_off(&mut w, 2 * NS, INSIDE_IF, &no_df, off);
    assert_eq!(v, Verdict::Drop(DropReason::FragNeeded));

    // Segments of exactly 1500 bytes fit, though the super-frame is 4040 bytes long.
    let off = offload(Gso::TcpV4 { ecn: false }, 1460, TCP);
    let (v, out, left) = run_off(&mut w, 2 * NS, INSIDE_IF, &sf, off);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(left, off);
    let segs = cut(&out, &left);
    assert_eq!(segs.len(), 3);
    assert!(segs.iter().all(|s| s.len() - 14 <= 1500));
}

/// Source and destination addresses of a frame of any protocol.
fn addrs(f: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let a = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
    (a(26), a(30))
}

#[test]
fn a_partial_checksum_without_gso_stays_partial_and_completes() {
    let mut w = worker(lab_engine_config());
    let tport = open(&mut w, TCP, NODE1, 40000, SERVER, 80);
    let uport = open(&mut w, UDP, NODE1, 5000, SERVER, 5201);
    let frames = [
        (
            TCP,
            INSIDE_IF,
            Spec::new(NODE1, 40000, SERVER, 80),
            (ip(PUBLIC), tport, ip(SERVER), 80),
        ),
        (
            TCP,
            OUTSIDE_IF,
            Spec::new(SERVER, 80, PUBLIC, tport),
            (ip(SERVER), 80, ip(NODE1), 40000),
        ),
        (
            UDP,
            INSIDE_IF,
            Spec::new(NODE1, 5000, SERVER, 5201),
            (ip(PUBLIC), uport, ip(SERVER), 5201),
        ),
        (
            UDP,
            OUTSIDE_IF,
            Spec::new(SERVER, 5201, PUBLIC, uport),
            (ip(SERVER), 5201, ip(NODE1), 5000),
        ),
    ];
    for (n, (proto, rx_if, s, after)) in frames.into_iter().enumerate() {
        let f = frame(proto, &s, &payload(601, n as u8), true);
        let off = offload(Gso::None, 0, proto);
        let (v, out, left) = run_off(&mut w, 2 * NS, rx_if, &f, off);
        assert!(matches!(v, Verdict::Forward { .. }), "frame {n}: {v:?}");
        assert_eq!(left, off, "frame {n}: the checksum is still partial");
        let field = L4 + usize::from(off.csum_offset);
        assert_eq!(
            u16::from_be_bytes([out[field], out[field + 1]]),
            pseudo(after.0.octets(), after.2.octets(), proto, out.len() - L4),
            "frame {n}: the partial field is the new pseudo-header sum"
        );
        let mut done = out.clone();
        assert!(gso::complete_checksum(&mut done, &left));
        let seen = parse_checked(&done);
        assert_eq!((seen.src, seen.sport, seen.dst, seen.dport), after);
        assert_eq!(seen.payload, payload(601, n as u8));
        // And it equals the same frame sent with a complete checksum.
        let full = frame(proto, &s, &payload(601, n as u8), false);
        let (_, want, _) = run_off(&mut w, 2 * NS, rx_if, &full, Offload::NONE);
        assert_eq!(done, want, "frame {n}");
    }
}

#[test]
fn a_udp_super_frame_translates_as_its_datagrams_do() {
    for reply in [false, true] {
        let mut c = case(UDP, reply, NODE1, 5000, SERVER, 5201);
        let data = payload(5000, 9);
        let sf = frame(UDP, &c.spec, &data, true);
        let off = offload(Gso::UdpL4, 1200, UDP);
        let (_, segs) = translate_both_ways(&mut c, UDP, &sf, off);
        assert_eq!(segs.len(), 5);
        check_segments(&c, UDP, &segs, &data, 1200);
    }
}
