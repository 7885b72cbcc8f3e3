//! Arbitrary frames, on arbitrary interfaces at arbitrary times, through one worker that keeps
//! its state across inputs' packets: nothing may panic, and every verdict's frame must fit.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tollgate::conntrack::Timeouts;
use tollgate::datapath::{Packet, Verdict, Worker};
use tollgate::nat::{MappingMode, NatConfig};
use tollgate::policy::{AppProto, Decision, FlowQuery, Policy, RuleRef};

#[path = "../../tests/engine_util/kit.rs"]
mod kit;
use kit::WorkerKit;

/// FUZZ ONLY: allows odd destination ports, inspects 443, DNATs public 8080, denies the rest.
/// Hand-written: a configuration cannot say "odd ports", and this mixes every kind of decision
/// over the whole port space without the classifier's cost per input.
struct FuzzPolicy;
impl Policy for FuzzPolicy {
    fn decide(&self, q: &FlowQuery) -> Decision {
        match q.dport {
            443 => Decision::Inspect,
            8080 => Decision::Dnat {
                rule: 2,
                to: Ipv4Addr::new(198, 18, 0, 20),
                to_port: 80,
            },
            p if p % 2 == 1 || q.proto == 1 => Decision::Allow { rule: 1 },
            _ => Decision::Deny { rule: None },
        }
    }
    fn decide_app(&self, _: &FlowQuery, _: AppProto, n: Option<&str>) -> Decision {
        if n.is_some_and(|n| n.len() % 2 == 0) {
            Decision::Allow { rule: 3 }
        } else {
            Decision::Deny { rule: None }
        }
    }
    fn describe(&self, _: u32) -> Option<RuleRef<'_>> {
        None
    }
}

/// The lab configuration made small and strict, so that exhaustion, quotas, expiry, MSS
/// clamping and ICMP errors are all reached: 77 ports, 64 flows, APDM, a 1400-byte outside MTU.
fn worker() -> Worker {
    let mut cfg = kit::lab_engine_config();
    cfg.interfaces[1].mtu = 1400;
    cfg.nat = NatConfig {
        port_max: 1100,
        mapping: MappingMode::AddressAndPortDependent,
        per_host_quota: Some(40),
        reuse_cooldown: 1,
        exempt: vec!["198.51.100.0/24".parse().unwrap()],
        ..cfg.nat
    };
    cfg.timeouts = Timeouts {
        udp: 5,
        tcp_syn: 5,
        tcp_established: 20,
        ..Timeouts::default()
    };
    cfg.max_flows_per_worker = 64;
    cfg.mss_clamp = Some(1200);
    cfg.icmp_on_exhaustion = true;
    WorkerKit::new()
        .config(cfg)
        .policy(Arc::new(FuzzPolicy))
        .seed(1)
        .build()
}

// Input: a sequence of records [rx_if: u8][dt: u8][len: u16 le][frame bytes].
fuzz_target!(|data: &[u8]| {
    let mut w = worker();
    let mut now = 0u64;
    let mut rest = data;
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    while rest.len() >= 4 {
        let rx = rest[0] % 3;
        now += u64::from(rest[1]) * 100_000_000;
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]))
            .min(rest.len() - 4)
            .min(1600);
        buf[..len].copy_from_slice(&rest[4..4 + len]);
        rest = &rest[4 + len..];
        // The batch prefetch hooks read the same bytes first, unvalidated.
        if let Some(h) = w.warm_index(&buf[..len], |_| {}) {
            let mut misses = 0;
            w.warm_flow(&h, &mut misses, |_| {});
        }
        let mut p = Packet::new(&mut buf, len, rx);
        match w.process(now, &mut p) {
            Verdict::Forward { .. } | Verdict::Reply { .. } => assert!(p.len <= 2048),
            _ => {}
        }
        while let Some((n, _, _)) = w.poll_transmit(&mut out) {
            assert!(n <= out.len());
        }
        w.housekeeping(now, 8);
    }
});
