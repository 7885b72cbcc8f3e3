//! Property tests of the engine: translation round trips, checksums, and no panic on any input.

mod engine_util;

use engine_util::*;
use proptest::prelude::*;
use tollgate::datapath::Verdict;

#[allow(clippy::too_many_arguments)]
fn build(
    proto: u8,
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    ttl: u8,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let b = eth().ipv4(src, dst, ttl);
    let mut v = Vec::new();
    if proto == 6 {
        let mut t = b.tcp(sport, dport, 7, 1024);
        if flags & 2 != 0 {
            t = t.syn();
        }
        if flags & 0x10 != 0 {
            t = t.ack(9);
        }
        t.write(&mut v, payload).unwrap();
    } else {
        b.udp(sport, dport).write(&mut v, payload).unwrap();
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// SNAT then un-SNAT of the answer gives back exactly the packet the server sent, addressed
    /// to the inside host: every byte, checksums included (so each incremental update equals a
    /// full recomputation).
    #[test]
    fn snat_then_unsnat_restores_the_packet(
        tcp in any::<bool>(),
        host in 2u8..250, sport in 1u16.., server in 2u8..250, dport in 1u16..,
        ttl in 3u8.., payload in proptest::collection::vec(any::<u8>(), 0..300),
        apdm in any::<bool>(),
    ) {
        let mut cfg = lab_engine_config();
        if apdm {
            cfg.nat.mapping = tollgate::nat::MappingMode::AddressAndPortDependent;
        }
        let mut w = worker(cfg);
        let proto = if tcp { 6 } else { 17 };
        let inside = [198, 18, 0, host];
        let remote = [203, 0, 113, server];
        prop_assume!(remote != [203, 0, 113, 1]);
        let out_frame = build(proto, inside, sport, remote, dport, ttl, 2, &payload);
        let (v, out) = run(&mut w, 0, INSIDE_IF, &out_frame);
        prop_assert!(matches!(v, Verdict::Forward { .. }), "{:?}", v);
        assert_checksums(&out);
        let (psrc, pport, _, _) = tuple(&out);
        prop_assert_eq!(psrc, ip(PUBLIC));

        let answer = build(proto, remote, dport, psrc.octets(), pport, ttl, 0x12, &payload);
        let (v, back) = run(&mut w, 1, OUTSIDE_IF, &answer);
        prop_assert!(matches!(v, Verdict::Forward { .. }), "{:?}", v);
        let expected = build(proto, remote, dport, inside, sport, ttl - 1, 0x12, &payload);
        prop_assert_eq!(back, expected);
    }

    /// Arbitrary bytes never panic the worker, on any interface.
    #[test]
    fn random_frames_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..1600), rx in 0u8..3) {
        let mut w = worker(lab_engine_config());
        let _ = run(&mut w, 0, rx, &frame);
    }

    /// Valid frames with a few bytes changed never panic, and every frame the worker forwards
    /// has consistent checksums when the input had them.
    #[test]
    fn mutated_frames_never_panic(
        kind in 0u8..4, flips in proptest::collection::vec((0usize..120, any::<u8>()), 1..6),
        cut in 0usize..130,
    ) {
        let mut w = worker(lab_engine_config());
        let base = match kind {
            0 => tcp(NODE1, 40000, SERVER, 80, "S", b"hello"),
            1 => udp(NODE1, 5000, SERVER, 53, b"query"),
            2 => ping(NODE1, SERVER, 9, 1, false),
            _ => tcp(SERVER, 80, PUBLIC, 2000, "SA", b""),
        };
        // Open a flow first so mutated frames also exercise the established path.
        let _ = run(&mut w, 0, INSIDE_IF, &base);
        let mut f = base.clone();
        for (i, b) in flips {
            if i < f.len() {
                f[i] = b;
            }
        }
        f.truncate(cut.max(1).min(f.len()));
        for rx in 0..2 {
            let _ = run(&mut w, 1, rx, &f);
        }
    }
}

/// What the batch prefetch hooks asked for, and the line the lookup really reads.
/// Stage 1 must prefetch the index line of the hash it returns; stage 2's first prefetch is
/// the flow (or free slab) line, a miss adds the SNAT mapping line.
fn warmed(w: &tollgate::datapath::Worker, frame: &[u8]) -> (Option<u32>, Vec<*const u8>, usize) {
    let seen = std::cell::RefCell::new(Vec::new());
    let h = w.warm_index(frame, |p| seen.borrow_mut().push(p));
    if let Some(h) = h {
        assert_eq!(*seen.borrow(), vec![w.flows().index_line(h.hash())]);
    }
    let mut misses = 0;
    seen.borrow_mut().clear();
    if let Some(h) = h {
        w.warm_flow(&h, &mut misses, |p| seen.borrow_mut().push(p));
        // A hit: the flow line. A miss: the free slab line and, in EIM mode, the mapping line
        // (fewer when the table is full).
        assert!(seen.borrow().len() <= 1 + 2 * misses);
    }
    let lines = seen.borrow().clone();
    (h.map(|h| h.hash()), lines, misses)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The batch prefetch hooks target exactly the lines `process` then reads: stage 1 the
    /// index line of the tuple it looks up (TCP, UDP, ICMP echo both ways), stage 2 the flow
    /// of a packet that belongs to one (the answer), or the slab line of the next insert for
    /// a packet that opens one.
    #[test]
    fn prefetch_targets_the_lines_process_reads(
        kind in 0u8..3, host in 2u8..250, sport in 1u16.., server in 2u8..250, dport in 1u16..,
    ) {
        use tollgate::conntrack::FlowKey;
        let mut w = worker(lab_engine_config());
        let inside = format!("198.18.0.{host}");
        let remote = format!("203.0.113.{server}");
        prop_assume!(server != 1);
        let (out, key) = match kind {
            0 => (tcp(&inside, sport, &remote, dport, "S", b""), FlowKey::new(ip(&inside), ip(&remote), sport, dport, 6)),
            1 => (udp(&inside, sport, &remote, dport, b"q"), FlowKey::new(ip(&inside), ip(&remote), sport, dport, 17)),
            _ => (ping(&inside, &remote, sport, 1, false), FlowKey::new(ip(&inside), ip(&remote), sport, 0, 1)),
        };
        let (h, lines, misses) = warmed(&w, &out);
        prop_assert_eq!(h, Some(w.flows().hash_of(&key)));
        // A new flow: stage 2 points at the slab entry the insert takes, then at the EIM
        // mapping line the port allocation reads.
        prop_assert_eq!(misses, 1);
        prop_assert_eq!(lines.get(1).copied(), w.snat().mapping_line(&key));
        let (v, sent) = run(&mut w, 0, INSIDE_IF, &out);
        prop_assert!(matches!(v, Verdict::Forward { .. }), "verdict {:?}", v);
        let (idx, _) = w.flows().lookup(&key).unwrap();
        prop_assert_eq!(lines[0], (w.flows().get(idx) as *const tollgate::conntrack::Flow).cast::<u8>());
        // The answer, addressed to the public port the worker chose.
        let (_, psport, _, pdport) = tuple(&sent);
        let answer = match kind {
            0 => tcp(&remote, dport, PUBLIC, psport, "SA", b""),
            1 => udp(&remote, dport, PUBLIC, psport, b"a"),
            _ => ping(&remote, PUBLIC, pdport, 1, true),
        };
        let (h, lines, misses) = warmed(&w, &answer);
        prop_assert!(h.is_some());
        prop_assert_eq!(misses, 0);
        prop_assert_eq!(lines[0], (w.flows().get(idx) as *const tollgate::conntrack::Flow).cast::<u8>());
    }

    /// The prefetch hooks read arbitrary bytes without panicking.
    #[test]
    fn prefetch_hooks_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
        let w = worker(lab_engine_config());
        let _ = warmed(&w, &frame);
    }
}
