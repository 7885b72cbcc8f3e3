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
        let mut cfg = lab_config();
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
        let mut w = worker(lab_config());
        let _ = run(&mut w, 0, rx, &frame);
    }

    /// Valid frames with a few bytes changed never panic, and every frame the worker forwards
    /// has consistent checksums when the input had them.
    #[test]
    fn mutated_frames_never_panic(
        kind in 0u8..4, flips in proptest::collection::vec((0usize..120, any::<u8>()), 1..6),
        cut in 0usize..130,
    ) {
        let mut w = worker(lab_config());
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
