//! One worker driven through a sequence of operations decoded from the input: frames from the
//! inside and the outside (built from a few hosts, ports and payloads, or replies to a tracked
//! flow, or raw bytes), time passing, reloads to one of a few policies compiled from TOML (as
//! `tollgate reload` publishes them), and expiry of everything. The engine settings come from
//! TOML too (address-and-port-dependent, endpoint-independent with and without port sharing,
//! one-arm), with few SNAT ports and flows so exhaustion, quotas and takeovers are reached.
//!
//! After every operation: nothing panicked; every flow is found under both its tuples; the
//! SNAT ports in use are the DNAT reservations plus the distinct public ports the flows hold,
//! no flow holds a reserved port, and each inside host's count (sessions, or mapping entries)
//! matches its flows; the published gauges agree. Forwarded frames built with valid checksums
//! leave with valid checksums. After expiring everything the flow table, the mapping table,
//! the host counts and the inspection slots are empty and only the reservations hold ports.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tollgate::config::load_str;
use tollgate::datapath::updates::PolicyCell;
use tollgate::datapath::{EngineConfig, Packet, Verdict, Worker};
use tollgate::nat::MappingMode;
use tollgate::policy::Policy;
use tollgate::wire::checksum::{fold, pseudo_header, sum};

#[path = "../../tests/engine_util/kit.rs"]
mod kit;
use kit::WorkerKit;

const HELLO: &[u8] = include_bytes!("../../tests/fixtures/clienthello_allowed.bin");
const HELLO_NOSNI: &[u8] = include_bytes!("../../tests/fixtures/clienthello_nosni.bin");
const QUIC: &[u8] = include_bytes!("../../tests/fixtures/quic_initial_allowed.bin");
const HTTP: &[u8] = b"GET / HTTP/1.1\r\nHost: allowed.example\r\nUser-Agent: fuzz\r\n\r\n";

const TIMEOUTS: &str = r#"
[conntrack]
max_flows = 48
[conntrack.timeouts]
tcp_syn = 4
tcp_established = 30
tcp_closing = 6
tcp_time_wait = 8
tcp_rst = 3
udp = 5
icmp = 3
"#;

/// Engine settings (a reload never changes them): two arms with two public addresses, or one
/// arm; few ports, per-host quotas, time-wait takeover.
const HEADS: [&str; 4] = [
    // APDM, 16 ports on one address, quota 6, cooldown 1 s.
    r#"
[appliance]
inside_prefixes = ["198.18.0.0/15"]
workers = 1
[[interface]]
name = "in"
role = "inside"
addresses = ["198.18.0.1/24"]
[[interface]]
name = "out"
role = "outside"
addresses = ["203.0.113.1/24", "203.0.113.2/24"]
gateway = "203.0.113.254"
mtu = 1400
[snat]
addresses = ["203.0.113.1"]
ports = "1024-1039"
mapping = "address-and-port-dependent"
per_host_quota = 6
reuse_cooldown = 1
exempt = ["198.51.100.128/25"]
mss_clamp = 1200
"#,
    // EIM with port sharing, two addresses of 8 ports each.
    r#"
[appliance]
inside_prefixes = ["198.18.0.0/15"]
workers = 1
[[interface]]
name = "in"
role = "inside"
addresses = ["198.18.0.1/24"]
[[interface]]
name = "out"
role = "outside"
addresses = ["203.0.113.1/24", "203.0.113.2/24"]
gateway = "203.0.113.254"
[snat]
addresses = ["203.0.113.1", "203.0.113.2"]
ports = "1024-1031"
mapping = "endpoint-independent"
reuse_cooldown = 0
exempt = ["198.51.100.128/25"]
icmp_on_exhaustion = false
"#,
    // Strict EIM (no sharing), 6 ports, quota 3, no takeover.
    r#"
[appliance]
inside_prefixes = ["198.18.0.0/15"]
workers = 1
[[interface]]
name = "in"
role = "inside"
addresses = ["198.18.0.1/24"]
[[interface]]
name = "out"
role = "outside"
addresses = ["203.0.113.1/24"]
gateway = "203.0.113.254"
[snat]
addresses = ["203.0.113.1"]
ports = "1024-1029"
mapping = "endpoint-independent"
port_sharing = false
per_host_quota = 3
time_wait_reuse = false
mss_clamp = 536
"#,
    // One arm: inside hosts and the internet behind one interface, APDM on its address.
    r#"
[appliance]
inside_prefixes = ["198.18.0.0/15"]
workers = 1
[[interface]]
name = "eth0"
role = "one-arm"
addresses = ["198.18.0.1/24"]
gateway = "198.18.0.254"
[[route]]
prefix = "198.19.0.0/24"
via = "198.18.0.9"
interface = "eth0"
[snat]
addresses = ["198.18.0.1"]
ports = "1024-1035"
mapping = "address-and-port-dependent"
exempt = ["198.51.100.128/25"]
"#,
];

/// Rules; `PUB` is replaced by the head's first SNAT address. The first is the one the
/// worker starts with (its DNAT ports are reserved: 8080 outside the SNAT range, 1026 inside).
const POLICIES: [&str; 4] = [
    r#"
[ip_groups]
inside = ["198.18.0.0/15"]
[[group]]
name = "g"
priority = 100
  [[group.collection]]
  name = "inbound"
  priority = 100
  kind = "dnat"
  action = "allow"
    [[group.collection.rule]]
    name = "web"
    sources = ["*"]
    destinations = ["PUB"]
    protocols = ["tcp"]
    destination_ports = ["8080"]
    translated_address = "198.18.0.20"
    translated_port = 80
    [[group.collection.rule]]
    name = "dns-in"
    sources = ["*"]
    destinations = ["PUB"]
    protocols = ["udp", "tcp"]
    destination_ports = ["1026"]
    translated_address = "198.18.0.21"
    translated_port = 53
  [[group.collection]]
  name = "blocked"
  priority = 200
  kind = "network"
  action = "deny"
    [[group.collection.rule]]
    name = "blackhole"
    source_ip_groups = ["inside"]
    destinations = ["198.51.100.66"]
    protocols = ["any"]
    destination_ports = ["*"]
  [[group.collection]]
  name = "internet"
  priority = 300
  kind = "network"
  action = "allow"
    [[group.collection.rule]]
    name = "tcp"
    source_ip_groups = ["inside"]
    destinations = ["*"]
    protocols = ["tcp"]
    destination_ports = ["22", "80", "5201", "1026", "8080"]
    [[group.collection.rule]]
    name = "udp"
    source_ip_groups = ["inside"]
    destinations = ["*"]
    protocols = ["udp"]
    destination_ports = ["7", "53", "3478"]
    [[group.collection.rule]]
    name = "ping"
    source_ip_groups = ["inside"]
    destinations = ["*"]
    protocols = ["icmp"]
  [[group.collection]]
  name = "web"
  priority = 400
  kind = "application"
  action = "allow"
    [[group.collection.rule]]
    name = "site"
    source_ip_groups = ["inside"]
    fqdns = ["allowed.example", "*.example.com"]
    protocols = ["https:443", "http:80", "quic:443"]
"#,
    // Everything allowed, a new DNAT port inside the SNAT range (a reload may move them).
    r#"
[[group]]
name = "g"
priority = 100
  [[group.collection]]
  name = "inbound"
  priority = 100
  kind = "dnat"
  action = "allow"
    [[group.collection.rule]]
    name = "moved"
    sources = ["203.0.113.0/24"]
    destinations = ["PUB"]
    protocols = ["tcp"]
    destination_ports = ["1025"]
    translated_address = "198.18.0.20"
    translated_port = 8443
  [[group.collection]]
  name = "all"
  priority = 200
  kind = "network"
  action = "allow"
    [[group.collection.rule]]
    name = "any"
    sources = ["*"]
    destinations = ["*"]
    protocols = ["any"]
    destination_ports = ["*"]
"#,
    // Little allowed: UDP 53, names over HTTP; TCP 22 in audit mode.
    r#"
[[group]]
name = "g"
priority = 100
  [[group.collection]]
  name = "audit"
  priority = 100
  kind = "network"
  action = "deny"
  mode = "audit"
    [[group.collection.rule]]
    name = "ssh"
    sources = ["*"]
    destinations = ["*"]
    protocols = ["tcp"]
    destination_ports = ["22"]
  [[group.collection]]
  name = "dns"
  priority = 200
  kind = "network"
  action = "allow"
    [[group.collection.rule]]
    name = "dns"
    sources = ["198.18.0.0/24"]
    destinations = ["*"]
    protocols = ["udp"]
    destination_ports = ["53"]
  [[group.collection]]
  name = "web"
  priority = 300
  kind = "application"
  action = "allow"
    [[group.collection.rule]]
    name = "web"
    sources = ["*"]
    fqdns = ["*.example", "allowed.example"]
    protocols = ["http:80", "https:443"]
"#,
    // No rules: everything denied.
    "",
];

struct Setup {
    engine: Arc<EngineConfig>,
    policies: Vec<Arc<dyn Policy>>,
    public: Ipv4Addr,
    one_arm: bool,
    /// (address index, protocol slot, port) kept by the first policy's DNAT rules.
    reserved: HashSet<(u8, usize, u16)>,
}

fn setups() -> &'static [Setup] {
    static S: OnceLock<Vec<Setup>> = OnceLock::new();
    S.get_or_init(|| {
        HEADS
            .iter()
            .map(|head| {
                let public = head
                    .split("[snat]\naddresses = [\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .expect("a SNAT address")
                    .parse::<Ipv4Addr>()
                    .unwrap();
                let load = |rules: &str| {
                    let text = format!(
                        "{head}{TIMEOUTS}{}",
                        rules.replace("PUB", &public.to_string())
                    );
                    load_str(&text, "fuzz.toml").unwrap_or_else(|e| {
                        panic!(
                            "{}",
                            e.errors()
                                .iter()
                                .map(|d| format!("{d}\n"))
                                .collect::<String>()
                        )
                    })
                };
                let first = load(POLICIES[0]);
                let policies: Vec<Arc<dyn Policy>> = POLICIES
                    .iter()
                    .map(|p| load(p).policy as Arc<dyn Policy>)
                    .collect();
                let nat = &first.engine.nat;
                let mut reserved = HashSet::new();
                for &(a, p, lo, hi) in first.policy.dnat_publics() {
                    let Some(i) = nat.public_addrs.iter().position(|&x| x == a) else {
                        continue;
                    };
                    for port in lo.max(nat.port_min)..=hi.min(nat.port_max) {
                        reserved.insert((i as u8, slot(p), port));
                    }
                }
                Setup {
                    one_arm: first.engine.interfaces.len() == 1,
                    engine: Arc::new(first.engine),
                    policies,
                    public,
                    reserved,
                }
            })
            .collect()
    })
}

fn slot(p: u8) -> usize {
    match p {
        6 => 0,
        17 => 1,
        _ => 2,
    }
}

/// Reads the input; past its end every read is 0.
struct Input<'a>(&'a [u8]);
impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

const INSIDE_HOSTS: [[u8; 4]; 6] = [
    [198, 18, 0, 11],
    [198, 18, 0, 12],
    [198, 18, 0, 13],
    [198, 18, 0, 20],
    [198, 19, 0, 5],
    [198, 18, 0, 21],
];
const OUTSIDE_HOSTS: [[u8; 4]; 6] = [
    [203, 0, 113, 10],
    [203, 0, 113, 20],
    [198, 51, 100, 66],
    [198, 51, 100, 130],
    [8, 8, 8, 8],
    [203, 0, 113, 2],
];
const PORTS: [u16; 12] = [80, 443, 53, 7, 5201, 8080, 1026, 1025, 22, 3478, 25, 1024];

/// An Ethernet + IPv4 frame with valid checksums; `l4` is the transport header and payload
/// with its checksum field zero.
fn frame(src: [u8; 4], dst: [u8; 4], proto: u8, ttl: u8, mut l4: Vec<u8>) -> Vec<u8> {
    let csum_at = match proto {
        6 => Some(16),
        17 => Some(6),
        1 => Some(2),
        _ => None,
    };
    if let Some(at) = csum_at.filter(|&at| l4.len() >= at + 2) {
        let acc = if proto == 1 {
            sum(&l4, 0)
        } else {
            sum(&l4, pseudo_header(src, dst, proto, l4.len() as u16))
        };
        let mut c = !fold(acc);
        if proto == 17 && c == 0 {
            c = 0xffff;
        }
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let total = (20 + l4.len()) as u16;
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0];
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, ttl, proto, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = !fold(sum(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}

fn tcp_seg(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    mss: bool,
    payload: &[u8],
) -> Vec<u8> {
    let hl = if mss { 24 } else { 20 };
    let mut t = Vec::with_capacity(hl + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push(((hl / 4) as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    if mss {
        t.extend_from_slice(&[2, 4, 0x05, 0xb4]);
    }
    t.extend_from_slice(payload);
    t
}

fn udp_dgram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn icmp_echo(reply: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![if reply { 0 } else { 8 }, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"abcdefgh");
    m
}

/// An ICMP error (type, code) quoting the IPv4 packet of `quoted` (a whole frame).
fn icmp_error(t: u8, code: u8, quoted: &[u8], keep: usize) -> Vec<u8> {
    let mut m = vec![t, code, 0, 0, 0, 0];
    let mtu: u16 = if t == 3 && code == 4 { 1280 } else { 0 };
    m.extend_from_slice(&mtu.to_be_bytes());
    let ip = &quoted[14..];
    m.extend_from_slice(&ip[..ip.len().min(28 + keep)]);
    m
}

/// A payload, and the stream offset it starts at.
fn payload(inp: &mut Input) -> (Vec<u8>, u32) {
    let pick = inp.u8();
    let whole: &[u8] = match pick % 6 {
        0 => return (Vec::new(), 0),
        1 => HELLO,
        2 => HELLO_NOSNI,
        3 => HTTP,
        4 => QUIC,
        _ => {
            let n = usize::from(inp.u8());
            return (inp.bytes(n).to_vec(), u32::from(pick >> 3));
        }
    };
    if pick & 0x80 == 0 {
        return (whole.to_vec(), 0);
    }
    // A piece of it: a segment of a split first flight.
    let off = usize::from(inp.u16()) % whole.len();
    let len = (usize::from(inp.u16()) % (whole.len() - off)).max(1);
    (whole[off..off + len].to_vec(), off as u32)
}

/// Verifies the IPv4 header checksum and, for an unfragmented packet, the transport checksum.
fn checksums_ok(f: &[u8]) -> Result<(), String> {
    if f.len() < 34 || f[12..14] != [8, 0] {
        return Ok(());
    }
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 15) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || total < ihl || total > ip.len() {
        return Err(format!(
            "bad IPv4 lengths: ihl {ihl} total {total} frame {}",
            ip.len()
        ));
    }
    if fold(sum(&ip[..ihl], 0)) != 0xffff {
        return Err("IPv4 header checksum".into());
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x3fff != 0 {
        return Ok(());
    }
    let l4 = &ip[ihl..total];
    let (src, dst): ([u8; 4], [u8; 4]) = (
        ip[12..16].try_into().unwrap(),
        ip[16..20].try_into().unwrap(),
    );
    let ok = match ip[9] {
        6 if l4.len() >= 20 => fold(sum(l4, pseudo_header(src, dst, 6, l4.len() as u16))) == 0xffff,
        17 if l4.len() >= 8 => {
            l4[6..8] == [0, 0]
                || fold(sum(l4, pseudo_header(src, dst, 17, l4.len() as u16))) == 0xffff
        }
        1 if l4.len() >= 8 => fold(sum(l4, 0)) == 0xffff,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("transport checksum (protocol {})", ip[9]))
    }
}

struct Run {
    w: Worker,
    cell: Arc<PolicyCell>,
    now: u64,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Raw frames were sent: a frame held from one of them may leave with its bad checksum.
    raw_seen: bool,
}

impl Run {
    fn send(&mut self, s: &Setup, rx: u8, f: &[u8], structured: bool) {
        let len = f.len().min(self.buf.len());
        self.buf[..len].copy_from_slice(&f[..len]);
        let rx = if s.one_arm { 0 } else { rx };
        if let Some(h) = self.w.warm_index(&self.buf[..len], |_| {}) {
            let mut misses = 0;
            self.w.warm_flow(&h, &mut misses, |_| {});
        }
        let mut p = Packet::new(&mut self.buf, len, rx);
        let v = self.w.process(self.now, &mut p);
        let n = p.len;
        match v {
            Verdict::Forward { .. } | Verdict::Reply { .. } => {
                assert!(n <= self.buf.len());
                if structured || matches!(v, Verdict::Reply { .. }) {
                    if let Err(e) = checksums_ok(&self.buf[..n]) {
                        panic!("{v:?}: {e}: {:02x?}", &self.buf[..n]);
                    }
                }
            }
            _ => {}
        }
        while let Some((n, _, _)) = self.w.poll_transmit(&mut self.out) {
            assert!(n <= self.out.len());
            if !self.raw_seen {
                if let Err(e) = checksums_ok(&self.out[..n]) {
                    panic!("transmitted: {e}: {:02x?}", &self.out[..n]);
                }
            }
        }
    }

    /// Expires everything: nothing is left but the DNAT reservations.
    fn expire_all(&mut self, s: &Setup, base: &[[u32; 3]]) {
        self.now += 1_000 * 1_000_000_000;
        self.w.housekeeping(self.now, usize::MAX);
        assert_eq!(
            self.w.flow_count(),
            0,
            "flows left after expiring everything"
        );
        assert_eq!(self.w.snat().mappings(), 0, "mapping entries left");
        assert_eq!(self.w.snat().holders().count(), 0, "host counts left");
        assert_eq!(self.w.inspecting(), 0, "inspection slots left");
        for (a, b) in base.iter().enumerate() {
            for (j, p) in [6u8, 17, 1].into_iter().enumerate() {
                assert_eq!(
                    self.w.snat().utilisation(a, p).0,
                    b[j],
                    "ports left on {a}/{p}"
                );
            }
        }
        check(&self.w, s, base);
    }
}

/// What a host's count counts: (inside port, protocol, public address index, public port, and
/// with APDM the flow's slab index: one per flow).
type Entry = (u16, u8, u8, u16, u32);

/// The invariants that hold between operations.
fn check(w: &Worker, s: &Setup, base: &[[u32; 3]]) {
    let snat = w.snat();
    let eim = snat.mode() == MappingMode::EndpointIndependent;
    let mut ports: HashSet<(u8, usize, u16)> = HashSet::new();
    let mut per_host: HashMap<Ipv4Addr, HashSet<Entry>> = HashMap::new();
    let mut n = 0;
    for (i, f) in w.flows().iter() {
        n += 1;
        assert_eq!(
            w.flows().lookup(&f.orig).map(|x| x.0),
            Some(i),
            "orig tuple of {f:?}"
        );
        assert_eq!(
            w.flows().lookup(&f.reply).map(|x| x.0),
            Some(i),
            "reply tuple of {f:?}"
        );
        if f.reply.dst() == f.orig.src() {
            continue; // untranslated source: holds no SNAT port
        }
        assert_eq!(
            snat.addrs().get(usize::from(f.snat_idx)),
            Some(&f.reply.dst()),
            "a translated flow's public address: {f:?}"
        );
        let key = (f.snat_idx, slot(f.orig.proto()), f.reply.dport());
        assert!(
            !s.reserved.contains(&key),
            "a flow holds a DNAT rule's port: {f:?}"
        );
        ports.insert(key);
        // EIM: one entry per (endpoint, public address, port); APDM: one per flow.
        let entry = (
            f.orig.sport(),
            f.orig.proto(),
            f.snat_idx,
            f.reply.dport(),
            if eim { 0 } else { i },
        );
        per_host.entry(f.orig.src()).or_default().insert(entry);
    }
    assert_eq!(n, w.flow_count());
    for (a, b) in base.iter().enumerate() {
        for (j, p) in [6u8, 17, 1].into_iter().enumerate() {
            let held = ports
                .iter()
                .filter(|k| usize::from(k.0) == a && k.1 == j)
                .count() as u32;
            assert_eq!(
                snat.utilisation(a, p).0,
                b[j] + held,
                "ports in use on address {a} protocol {p}: reserved {} + held by flows {held}",
                b[j]
            );
        }
    }
    for (h, entries) in &per_host {
        assert_eq!(snat.held_by(*h), entries.len() as u32, "count of {h}");
    }
    assert_eq!(
        snat.holders().count(),
        per_host.len(),
        "hosts holding ports"
    );
    if eim {
        let total: usize = per_host.values().map(HashSet::len).sum();
        assert_eq!(snat.mappings(), total, "mapping entries");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let s = &setups()[usize::from(inp.u8()) % HEADS.len()];
    let cell = PolicyCell::new(s.policies[0].clone());
    let mut w = WorkerKit::new()
        .config(s.engine.clone())
        .policy(s.policies[0].clone())
        .seed(7)
        .build();
    w.follow_policy(cell.clone());
    let base: Vec<[u32; 3]> = (0..s.engine.nat.public_addrs.len())
        .map(|a| [6u8, 17, 1].map(|p| w.snat().utilisation(a, p).0))
        .collect();
    let reserved_n = s.reserved.len() as u32;
    assert_eq!(
        base.iter().flatten().sum::<u32>(),
        reserved_n,
        "reservations"
    );
    let mut r = Run {
        w,
        cell,
        now: 1_000_000_000,
        buf: vec![0u8; 2048],
        out: vec![0u8; 2048],
        raw_seen: false,
    };
    let public = s.public.octets();
    let mut ops = 0;
    while !inp.0.is_empty() && ops < 256 {
        ops += 1;
        let op = inp.u8();
        let before = r.w.flow_count();
        match op % 8 {
            // A frame from an inside host (or a hairpin to a public address).
            0 | 1 => {
                let src = INSIDE_HOSTS[usize::from(inp.u8()) % INSIDE_HOSTS.len()];
                let d = inp.u8();
                let dst = if d & 0x80 != 0 {
                    public
                } else {
                    OUTSIDE_HOSTS[usize::from(d) % OUTSIDE_HOSTS.len()]
                };
                let f = build(&mut inp, src, dst, 1000);
                r.send(s, 0, &f, true);
            }
            // A frame from an outside host to a public address, or to an inside one.
            2 => {
                let src = OUTSIDE_HOSTS[usize::from(inp.u8()) % OUTSIDE_HOSTS.len()];
                let d = inp.u8();
                let dst = if d & 0x80 != 0 {
                    INSIDE_HOSTS[usize::from(d) % INSIDE_HOSTS.len()]
                } else {
                    public
                };
                let f = build(&mut inp, src, dst, 5000);
                r.send(s, 1, &f, true);
            }
            // A packet of a tracked flow: an answer to its reply tuple or more of its
            // original direction, or an ICMP error about a packet it sent the other way.
            3 => {
                let k = usize::from(inp.u8());
                let how = inp.u8();
                let n = r.w.flow_count().max(1);
                let Some(f) = r.w.flows().iter().nth(k % n).map(|(_, f)| *f) else {
                    continue;
                };
                let (key, isn) = if how & 1 == 0 {
                    (f.reply, 5000)
                } else {
                    (f.orig, 1000)
                };
                let (src, dst) = (key.src().octets(), key.dst().octets());
                let (sp, dp, p) = (key.sport(), key.dport(), key.proto());
                let from_inside = src[..2] == [198, 18] || src[..2] == [198, 19];
                let rx = if from_inside { 0 } else { 1 };
                let fr = if how & 6 == 6 {
                    // `src` (or a router on its side) could not deliver a packet of this flow
                    // going the other way, and says so.
                    let quoted = match p {
                        6 => frame(dst, src, 6, 64, tcp_seg(dp, sp, 1, 0, 0x10, false, &[])),
                        17 => frame(dst, src, 17, 64, udp_dgram(dp, sp, b"q")),
                        _ => frame(dst, src, 1, 64, icmp_echo(how & 1 != 0, sp, 1)),
                    };
                    let router = if from_inside {
                        [198, 18, 0, 254]
                    } else {
                        [203, 0, 113, 254]
                    };
                    let reporter = if how & 8 != 0 { src } else { router };
                    let t = [3, 11, 12, 5][usize::from(inp.u8() % 4)];
                    let code = inp.u8() % 16;
                    frame(
                        reporter,
                        dst,
                        1,
                        64,
                        icmp_error(t, code, &quoted, usize::from(how >> 4)),
                    )
                } else {
                    match p {
                        6 => {
                            let flags = inp.u8();
                            let (pl, off) = payload(&mut inp);
                            let seq = isn + 1 + off;
                            frame(
                                src,
                                dst,
                                6,
                                64,
                                tcp_seg(sp, dp, seq, 6000 - isn, flags, false, &pl),
                            )
                        }
                        17 => {
                            let (pl, _) = payload(&mut inp);
                            frame(src, dst, 17, 64, udp_dgram(sp, dp, &pl))
                        }
                        1 => frame(src, dst, 1, 64, icmp_echo(how & 1 == 0, sp, inp.u16())),
                        _ => continue,
                    }
                };
                r.send(s, rx, &fr, true);
            }
            // Time passes (up to 25.5 s, or up to ~4 min in big steps), with a budget.
            4 => {
                let b = inp.u8();
                let dt = if b & 0x80 != 0 {
                    u64::from(b & 0x7f) * 2_000_000_000
                } else {
                    u64::from(b) * 200_000_000
                };
                r.now += dt;
                let budget = usize::from(inp.u8() % 16);
                r.w.housekeeping(r.now, budget);
            }
            // A reload: the policy is published and adopted at the next housekeeping.
            5 => {
                let p = usize::from(inp.u8()) % s.policies.len();
                r.cell.publish(s.policies[p].clone());
                r.w.housekeeping(r.now, 0);
            }
            // Everything expires.
            6 => r.expire_all(s, &base),
            // Raw bytes on an interface.
            _ => {
                let rx = inp.u8() % 3;
                let n = usize::from(inp.u8()) * 8;
                let f = inp.bytes(n).to_vec();
                r.raw_seen = true;
                r.send(s, rx, &f, false);
            }
        }
        check(&r.w, s, &base);
        if matches!(op % 8, 4..=6) {
            // The gauges the housekeeping published before it reclaimed anything.
            let c = r.w.counters();
            assert_eq!(c.heartbeat_ns.load(Relaxed), r.now);
            assert_eq!(c.flows.load(Relaxed), before as u64);
            let by_class: u64 = c.flows_by_class.iter().map(|g| g.load(Relaxed)).sum();
            assert_eq!(by_class, before as u64);
        }
    }
    r.expire_all(s, &base);
});

/// A frame from `src` to `dst` as the input describes it: TCP (flags, sequence numbers from
/// `isn`, a payload), UDP (a payload), an ICMP echo, or an ICMP error quoting a TCP or UDP
/// packet going the other way.
fn build(inp: &mut Input, src: [u8; 4], dst: [u8; 4], isn: u32) -> Vec<u8> {
    let kind = inp.u8();
    let port = |inp: &mut Input| {
        let b = inp.u8();
        if b == 0xff {
            inp.u16()
        } else {
            PORTS[usize::from(b) % PORTS.len()]
        }
    };
    let sport = {
        let b = inp.u8();
        if b == 0xff {
            inp.u16()
        } else {
            40000 + u16::from(b % 8)
        }
    };
    let dport = port(inp);
    let ttl = if kind & 0x40 != 0 {
        1 + (inp.u8() % 3)
    } else {
        64
    };
    match kind % 5 {
        k @ (0 | 1) => {
            let flags = if k == 0 { 0x02 } else { inp.u8() };
            let (pl, off) = payload(inp);
            let seq = if kind & 0x80 != 0 {
                inp.u32()
            } else {
                isn + u32::from(flags & 2 == 0) + off
            };
            let ack = if flags & 0x10 != 0 { 6000 - isn } else { 0 };
            frame(
                src,
                dst,
                6,
                ttl,
                tcp_seg(
                    sport,
                    dport,
                    seq,
                    ack,
                    flags,
                    flags & 2 != 0 && kind & 0x20 != 0,
                    &pl,
                ),
            )
        }
        2 => {
            let (pl, _) = payload(inp);
            frame(src, dst, 17, ttl, udp_dgram(sport, dport, &pl))
        }
        3 => frame(src, dst, 1, ttl, icmp_echo(kind & 0x20 != 0, sport, dport)),
        _ => {
            // An error about a packet from `dst` to `src`.
            let quoted = if kind & 0x20 != 0 {
                frame(
                    dst,
                    src,
                    6,
                    64,
                    tcp_seg(dport, sport, 1, 0, 0x02, false, &[]),
                )
            } else {
                frame(dst, src, 17, 64, udp_dgram(dport, sport, b"q"))
            };
            let t = [3, 11, 12, 5][usize::from(inp.u8() % 4)];
            let code = inp.u8() % 16;
            frame(src, dst, 1, ttl, icmp_error(t, code, &quoted, 8))
        }
    }
}
