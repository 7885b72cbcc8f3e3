//! Byte fixtures, a fake clock and the lab's test policies (compiled from TOML) for the engine
//! tests; the configuration and the worker builder are in [`kit`], shared with benches and fuzz.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use etherparse::{PacketBuilder, SlicedPacket};
use ipnet::Ipv4Net;
use tollgate::datapath::{EngineConfig, Packet, Verdict, Worker};
use tollgate::policy::Ruleset;

mod kit;
pub use kit::*;

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

/// Allows every flow (rule "any") and DNATs 203.0.113.1:8080/tcp to 198.18.0.20:80 (rule "web").
pub const PERMISSIVE_RULES: &str = r#"
[[group]]
name = "test"
priority = 100

  [[group.collection]]
  name = "inbound"
  priority = 100
  kind = "dnat"
  action = "allow"

    [[group.collection.rule]]
    name = "web"
    sources = ["*"]
    destinations = ["203.0.113.1"]
    protocols = ["tcp"]
    destination_ports = ["8080"]
    translated_address = "198.18.0.20"
    translated_port = 80

  [[group.collection]]
  name = "everything"
  priority = 200
  kind = "network"
  action = "allow"

    [[group.collection.rule]]
    name = "any"
    sources = ["*"]
    destinations = ["*"]
    protocols = ["any"]
    destination_ports = ["*"]
"#;

/// Denies destination 198.51.100.66 (rule "deny-66"), leaves TCP/UDP port 25 to the default
/// deny and allows the rest (rule "allow"; port 0, which a configuration cannot name, is left
/// to the default deny too).
pub const DENYING_RULES: &str = r#"
[[group]]
name = "test"
priority = 100

  [[group.collection]]
  name = "blocked"
  priority = 100
  kind = "network"
  action = "deny"

    [[group.collection.rule]]
    name = "deny-66"
    sources = ["*"]
    destinations = ["198.51.100.66"]
    protocols = ["any"]
    destination_ports = ["*"]

  [[group.collection]]
  name = "rest"
  priority = 200
  kind = "network"
  action = "allow"

    [[group.collection.rule]]
    name = "allow"
    sources = ["*"]
    destinations = ["*"]
    protocols = ["any"]
    destination_ports = ["1-24", "26-65535"]
"#;

/// [`PERMISSIVE_RULES`], compiled.
pub fn permissive() -> Arc<Ruleset> {
    policy(PERMISSIVE_RULES)
}

/// [`DENYING_RULES`], compiled.
pub fn denying() -> Arc<Ruleset> {
    policy(DENYING_RULES)
}

/// A worker on `cfg` under [`permissive`].
pub fn worker(cfg: EngineConfig) -> Worker {
    WorkerKit::new().config(cfg).policy(permissive()).build()
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
