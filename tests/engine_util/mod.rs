//! Byte fixtures, a fake clock and test-only policies for the engine tests.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use etherparse::{PacketBuilder, SlicedPacket};
use ipnet::Ipv4Net;
use tollgate::conntrack::Timeouts;
use tollgate::datapath::{EngineConfig, Iface, IfaceRole, Packet, Verdict, Worker};
use tollgate::nat::{MappingMode, NatConfig};
use tollgate::policy::{AppProto, Decision, FlowQuery, Policy, RuleRef};

pub const INSIDE_IF: u8 = 0;
pub const OUTSIDE_IF: u8 = 1;
pub const NS: u64 = 1_000_000_000;

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
pub fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

pub const PUBLIC: &str = "203.0.113.1";
pub const NODE1: &str = "198.18.0.11";
pub const NODE2: &str = "198.18.0.12";
pub const SERVER: &str = "203.0.113.10";
pub const SERVER2: &str = "203.0.113.20";
pub const DNAT_TARGET: &str = "198.18.0.20";

/// The lab's two-arm topology: inside 198.18.0.1/24, outside 203.0.113.1/24, gateway .254.
pub fn lab_config() -> EngineConfig {
    EngineConfig {
        interfaces: vec![
            Iface {
                name: "tg-in".into(),
                role: IfaceRole::Inside,
                addrs: vec![ip("198.18.0.1")],
                gateway: None,
                connected: vec![net("198.18.0.0/24")],
                mtu: 1500,
            },
            Iface {
                name: "tg-out".into(),
                role: IfaceRole::Outside,
                addrs: vec![ip(PUBLIC)],
                gateway: Some(ip("203.0.113.254")),
                connected: vec![net("203.0.113.0/24")],
                mtu: 1500,
            },
        ],
        routes: vec![],
        inside_prefixes: vec![net("198.18.0.0/15")],
        nat: NatConfig {
            public_addrs: vec![ip(PUBLIC)],
            port_min: 1024,
            port_max: 65535,
            mapping: MappingMode::EndpointIndependent,
            port_sharing: true,
            per_host_quota: None,
            reuse_cooldown: 0,
            time_wait_reuse: true,
            exempt: vec![net("198.51.100.128/25")],
        },
        timeouts: Timeouts::default(),
        max_flows_per_worker: 4096,
        mss_clamp: None,
        icmp_on_exhaustion: false,
        icmp_source: ip("198.18.0.1"),
    }
}

/// TEST ONLY: allows every flow, and DNATs 203.0.113.1:8080 to 198.18.0.20:80 (rule 7).
#[derive(Debug, Default)]
pub struct PermissiveTestPolicy;

impl Policy for PermissiveTestPolicy {
    fn decide(&self, q: &FlowQuery) -> Decision {
        if q.dst == ip(PUBLIC) && q.dport == 8080 && q.proto == 6 {
            return Decision::Dnat {
                rule: 7,
                to: ip(DNAT_TARGET),
                to_port: 80,
            };
        }
        Decision::Allow { rule: 1 }
    }
    fn decide_app(&self, _: &FlowQuery, _: AppProto, _: Option<&str>) -> Decision {
        Decision::Allow { rule: 1 }
    }
    fn describe(&self, _: u32) -> Option<RuleRef<'_>> {
        None
    }
    fn dnat_targets(&self) -> &[(Ipv4Addr, u16, u8)] {
        const TARGETS: [(Ipv4Addr, u16, u8); 1] = [(Ipv4Addr::new(198, 18, 0, 20), 80, 6)];
        &TARGETS
    }
    fn dnat_publics(&self) -> &[(Ipv4Addr, u8, u16, u16)] {
        const PUBLICS: [(Ipv4Addr, u8, u16, u16); 1] =
            [(Ipv4Addr::new(203, 0, 113, 1), 6, 8080, 8080)];
        &PUBLICS
    }
}

/// TEST ONLY: denies destination 198.51.100.66 by rule 3 and anything to port 25 by default.
#[derive(Debug, Default)]
pub struct DenyingTestPolicy;

impl Policy for DenyingTestPolicy {
    fn decide(&self, q: &FlowQuery) -> Decision {
        if q.dst == ip("198.51.100.66") {
            Decision::Deny { rule: Some(3) }
        } else if q.dport == 25 {
            Decision::Deny { rule: None }
        } else {
            Decision::Allow { rule: 1 }
        }
    }
    fn decide_app(&self, _: &FlowQuery, _: AppProto, _: Option<&str>) -> Decision {
        Decision::Deny { rule: None }
    }
    fn describe(&self, _: u32) -> Option<RuleRef<'_>> {
        None
    }
}

pub fn worker(cfg: EngineConfig) -> Worker {
    Worker::new(Arc::new(cfg), Arc::new(PermissiveTestPolicy), 0, 1, 42)
}

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

pub fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(MAC_A, MAC_B)
}

pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: &str, payload: &[u8]) -> Vec<u8> {
    tcp_ttl(src, sport, dst, dport, flags, payload, 64)
}

pub fn tcp_ttl(
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    flags: &str,
    payload: &[u8],
    ttl: u8,
) -> Vec<u8> {
    let mut b = eth()
        .ipv4(ip(src).octets(), ip(dst).octets(), ttl)
        .tcp(sport, dport, 1000, 65535);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(2000),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            _ => b,
        };
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub fn udp(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    eth()
        .ipv4(ip(src).octets(), ip(dst).octets(), 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

pub fn ping(src: &str, dst: &str, id: u16, seq: u16, reply: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let b = eth().ipv4(ip(src).octets(), ip(dst).octets(), 64);
    if reply {
        b.icmpv4_echo_reply(id, seq)
            .write(&mut v, b"abcdefgh")
            .unwrap();
    } else {
        b.icmpv4_echo_request(id, seq)
            .write(&mut v, b"abcdefgh")
            .unwrap();
    }
    v
}

/// Runs one frame through the worker; returns the verdict and the frame as it left.
pub fn run(w: &mut Worker, now: u64, rx_if: u8, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 2048];
    buf[..frame.len()].copy_from_slice(frame);
    let mut p = Packet::new(&mut buf, frame.len(), rx_if);
    let v = w.process(now, &mut p);
    let len = p.len;
    (v, buf[..len].to_vec())
}

/// The 5-tuple of a frame as (src, sport, dst, dport); ICMP echo gives the id as both ports.
pub fn tuple(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    let (src, dst) = match s.net.unwrap() {
        etherparse::NetSlice::Ipv4(i) => (i.header().source_addr(), i.header().destination_addr()),
        _ => panic!("not ipv4"),
    };
    let (sp, dp) = match s.transport.unwrap() {
        etherparse::TransportSlice::Tcp(t) => (t.source_port(), t.destination_port()),
        etherparse::TransportSlice::Udp(u) => (u.source_port(), u.destination_port()),
        etherparse::TransportSlice::Icmpv4(i) => {
            let b = i.slice();
            let id = u16::from_be_bytes([b[4], b[5]]);
            (id, id)
        }
        _ => panic!("unexpected transport"),
    };
    (src, sp, dst, dp)
}

/// Asserts every checksum in the frame (IPv4 header and transport) equals a full recomputation.
pub fn assert_checksums(frame: &[u8]) {
    let s = SlicedPacket::from_ethernet(frame).expect("parses");
    let etherparse::NetSlice::Ipv4(i) = s.net.expect("net") else {
        panic!("not ipv4")
    };
    let h = i.header().to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "IPv4 header checksum"
    );
    match s.transport.expect("transport") {
        etherparse::TransportSlice::Tcp(t) => {
            let want = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
            assert_eq!(t.checksum(), want, "TCP checksum");
        }
        etherparse::TransportSlice::Udp(u) if u.checksum() != 0 => {
            let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
            assert_eq!(u.checksum(), want, "UDP checksum");
        }
        etherparse::TransportSlice::Icmpv4(m) => {
            let b = m.slice();
            let mut v = b.to_vec();
            v[2] = 0;
            v[3] = 0;
            let c = tollgate::wire::checksum::checksum(&v);
            assert_eq!(u16::from_be_bytes([b[2], b[3]]), c, "ICMP checksum");
        }
        _ => {}
    }
}

pub fn ttl_of(frame: &[u8]) -> u8 {
    frame[14 + 8]
}
