//! The resolver of network rules' destination FQDNs, as Azure Firewall does it: the appliance
//! resolves the names itself (its own DNS client over plain sockets, codec in
//! [`crate::wire::dns`]), at start and whenever an answer's TTL (clamped to the `[dns]` refresh
//! bounds) runs out, and when any name's address set changes it recompiles the policy with those
//! addresses as the rules' destinations and publishes it like a reload
//! ([`LiveConfig::apply_resolved`]).
//!
//! A name that cannot be resolved (timeout, SERVFAIL, NXDOMAIN, no A record) keeps its last
//! known addresses and is retried after the minimum refresh; a name never resolved matches
//! nothing. Both are logged.
//!
//! Forgery: the answers open the firewall, so an off-path attacker who cannot see the queries
//! must guess, per query, all of: the query id (16 bits from the system's CSPRNG, ring's
//! `SystemRandom`), the source port (one of `[dns] source_ports`, picked at random per query:
//! 8 bits with the default 256 ports), and the case of every letter of the name (DNS 0x20: the
//! name is sent in a random mix of cases and the answer must echo it byte for byte; one bit per
//! letter). The answer must also come from the address and port the query went to and echo its
//! question (name, type, class). An answer with TC set (truncated), once it passes those
//! checks, is retried over TCP (RFC 7766, 2-byte length prefix) with a new id and case, and the
//! TCP answer passes the same checks. Not defended against: an attacker who sees the queries
//! (on the path to the server, or the server itself); there is no DNSSEC validation.
//!
//! Ports: one UDP socket per port of `[dns] source_ports`, and a few TCP sockets on random ports
//! of that range (for the retries), are bound at start, before capabilities are dropped (the
//! default range, 768-1023, is privileged). A TCP socket is reused connection after connection:
//! it is disconnected with `connect(AF_UNSPEC)`, which aborts the connection (RST, so no
//! TIME_WAIT) and keeps the explicitly bound port. The configuration keeps the range outside
//! the SNAT port range and off every UDP and TCP DNAT port. The daemon's nftables table only
//! drops SNAT-range ports (and DNAT claims) and the workers leave a packet to a public address
//! on a port outside the SNAT range to the kernel (`Verdict::Local`), so the answers reach these
//! sockets, and no SNAT mapping can ever be granted those ports.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use super::reload::LiveConfig;
use crate::config::DnsSettings;
use crate::io::dnssock::{connect_before, disconnect, set_rcvbuf, tcp_socket};
use crate::wire::dns::{write_query, DnsError, Response, RCODE_NXDOMAIN};

/// How long one server is waited for per attempt over UDP.
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a retry over TCP may take, connecting included.
pub const TCP_TIMEOUT: Duration = Duration::from_millis(2000);
/// TCP sockets bound for the retries of truncated answers (on random ports of the range).
pub const TCP_SOCKETS: usize = 4;
/// Receive buffer asked for each pooled UDP socket (the kernel doubles it): an answer without
/// EDNS is at most 512 bytes, and an idle socket someone sprays holds this much at most.
const UDP_RCVBUF: usize = 32 * 1024;

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no answer from {0}")]
    Timeout(String),
    #[error("NXDOMAIN")]
    NxDomain,
    #[error("no A record")]
    NoData,
    #[error("server failure (rcode {0})")]
    Rcode(u8),
    #[error("{0}")]
    Io(String),
}

/// A DNS stub client on a pool of pre-bound sockets: each query leaves from one picked at
/// random, with a random id and a random mix of cases in the name.
#[derive(Debug)]
pub struct Resolver {
    udp: Vec<UdpSocket>,
    /// Bound, unconnected between uses (see [`tcp_socket`]).
    tcp: Vec<TcpStream>,
    servers: Vec<SocketAddr>,
    rng: SystemRandom,
}

impl Resolver {
    /// Binds one UDP socket on `0.0.0.0:port` for every port of `[dns] source_ports` and up to
    /// [`TCP_SOCKETS`] TCP sockets on random ports of it. Call before capabilities are dropped
    /// (the default ports are below 1024). A port some other socket holds is skipped (see
    /// [`Resolver::udp_ports`]); any other error, or no port at all, fails.
    pub fn bind(settings: &DnsSettings) -> io::Result<Resolver> {
        let ports: Vec<u16> = settings.source_ports.clone().collect();
        // One descriptor per port, and the TCP ones: make room under the soft limit.
        if let Ok(cur) = crate::io::raise_nofile(0) {
            let _ = crate::io::raise_nofile(cur + ports.len() as u64 + 64);
        }
        let mut udp = Vec::with_capacity(ports.len());
        for &p in &ports {
            match UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, p)) {
                Ok(s) => {
                    set_rcvbuf(&s, UDP_RCVBUF);
                    udp.push(s);
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("UDP port {p}: {e}"))),
            }
        }
        if udp.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "every UDP port of {}-{} is in use",
                    settings.source_ports.start(),
                    settings.source_ports.end()
                ),
            ));
        }
        let rng = SystemRandom::new();
        // TCP ports: random ones of the range (TCP and UDP ports are apart, so these may be
        // UDP pool ports too).
        let mut order = ports;
        shuffle(&rng, &mut order)?;
        let mut tcp = Vec::new();
        for p in order {
            if tcp.len() == TCP_SOCKETS {
                break;
            }
            match tcp_socket(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, p)) {
                Ok(s) => tcp.push(s),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("TCP port {p}: {e}"))),
            }
        }
        let servers = settings
            .servers
            .iter()
            .map(|a| SocketAddr::from((*a, 53)))
            .collect();
        Ok(Resolver {
            udp,
            tcp,
            servers,
            rng,
        })
    }

    /// A resolver on already bound sockets (tests use ephemeral ports on loopback and another
    /// server port). `tcp` may be empty: a truncated answer then fails.
    pub fn with_sockets(
        udp: Vec<UdpSocket>,
        tcp: Vec<TcpStream>,
        servers: Vec<SocketAddr>,
    ) -> Resolver {
        for s in &udp {
            set_rcvbuf(s, UDP_RCVBUF);
        }
        Resolver {
            udp,
            tcp,
            servers,
            rng: SystemRandom::new(),
        }
    }

    /// The UDP source ports bound (the range minus those in use elsewhere at start).
    pub fn udp_ports(&self) -> Vec<u16> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok().map(|a| a.port()))
            .collect()
    }

    /// The TCP source ports bound for retries.
    pub fn tcp_ports(&self) -> Vec<u16> {
        self.tcp
            .iter()
            .filter_map(|s| s.local_addr().ok().map(|a| a.port()))
            .collect()
    }

    /// A query for `name` with a fresh random id and a random mix of cases in the name.
    fn query(&self, name: &str) -> Result<Vec<u8>, ResolveError> {
        let r: [u8; 34] = random(&self.rng)?;
        let id = u16::from_be_bytes([r[0], r[1]]);
        let mixed = mix_case(name, &r[2..]);
        let mut q = [0u8; 300];
        let n = write_query(&mut q, id, &mixed).map_err(|e| ResolveError::Io(e.to_string()))?;
        Ok(q[..n].to_vec())
    }

    /// The A records of `name`: (address, TTL s), sorted by address, deduplicated. Tries each
    /// server in order, each time from a random source port with a new id and case; answers
    /// that fail any check are ignored; a truncated answer is retried over TCP.
    pub fn resolve(&mut self, name: &str) -> Result<Vec<(Ipv4Addr, u32)>, ResolveError> {
        let mut last = ResolveError::Timeout("no server".into());
        for i in 0..self.servers.len() {
            let server = self.servers[i];
            let r = match self.ask_udp(server, name) {
                Ok(Udp::Answer(v)) => Ok(v),
                Ok(Udp::Truncated) => self.ask_tcp(server, name),
                Err(e) => Err(e),
            };
            match r {
                Ok(v) => return Ok(v),
                // An authoritative "no" is final; try the next server on anything else.
                Err(e @ (ResolveError::NxDomain | ResolveError::NoData)) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One UDP attempt: the addresses, or [`Udp::Truncated`] when the server's answer (checked
    /// like any other) is truncated.
    fn ask_udp(&mut self, server: SocketAddr, name: &str) -> Result<Udp, ResolveError> {
        let q = self.query(name)?;
        let sock = &self.udp[pick(&self.rng, self.udp.len())?];
        // Whatever an idle socket collected (late answers, spray) is not for this query.
        drain(sock);
        if let Err(e) = sock.send_to(&q, server) {
            return Err(ResolveError::Io(format!("send to {server}: {e}")));
        }
        let deadline = Instant::now() + QUERY_TIMEOUT;
        let mut buf = [0u8; 1500];
        let mut case_mismatches = 0usize;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timeout(server, case_mismatches));
            }
            sock.set_read_timeout(Some(left))
                .map_err(|e| ResolveError::Io(e.to_string()))?;
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timeout(server, case_mismatches))
                }
                Err(e) => return Err(ResolveError::Io(e.to_string())),
            };
            // Only the server asked, from the port asked.
            if from != server {
                continue;
            }
            match Response::parse(&buf[..n], &q) {
                Ok(r) => return conclude(&r).map(Udp::Answer),
                Err(DnsError::Truncated) => return Ok(Udp::Truncated),
                Err(DnsError::CaseMismatch) => case_mismatches += 1,
                Err(_) => {}
            }
        }
    }

    /// The retry over TCP of a truncated answer: a new query (id, case) on one of the bound
    /// TCP sockets, its answer under the same checks.
    fn ask_tcp(
        &mut self,
        server: SocketAddr,
        name: &str,
    ) -> Result<Vec<(Ipv4Addr, u32)>, ResolveError> {
        if self.tcp.is_empty() {
            return Err(ResolveError::Io(format!(
                "the answer from {server} is truncated and no TCP source port is bound to retry from"
            )));
        }
        let q = self.query(name)?;
        let sock = &self.tcp[pick(&self.rng, self.tcp.len())?];
        let m = exchange(sock, server, &q, Instant::now() + TCP_TIMEOUT);
        // Always back to unconnected (an abort: RST, no TIME_WAIT), the port kept.
        disconnect(sock);
        let m = m.map_err(|e| ResolveError::Io(format!("over TCP to {server}: {e}")))?;
        match Response::parse(&m, &q) {
            Ok(r) => conclude(&r),
            Err(e) => Err(ResolveError::Io(format!(
                "the TCP answer from {server} is rejected: {e}"
            ))),
        }
    }
}

/// What one UDP attempt got.
enum Udp {
    Answer(Vec<(Ipv4Addr, u32)>),
    /// The server's answer has TC set: ask again over TCP.
    Truncated,
}

fn timeout(server: SocketAddr, case_mismatches: usize) -> ResolveError {
    if case_mismatches == 0 {
        return ResolveError::Timeout(server.to_string());
    }
    ResolveError::Timeout(format!(
        "{server} ({case_mismatches} answer(s) that echoed the name in another case were ignored: the resolver sends names in random case, DNS 0x20, and needs a server that echoes them exactly)"
    ))
}

/// What a checked answer says.
fn conclude(r: &Response<'_>) -> Result<Vec<(Ipv4Addr, u32)>, ResolveError> {
    match r.rcode {
        0 => {
            let mut v: Vec<(Ipv4Addr, u32)> = r.addresses().collect();
            v.sort();
            v.dedup_by_key(|x| x.0);
            if v.is_empty() {
                Err(ResolveError::NoData)
            } else {
                Ok(v)
            }
        }
        RCODE_NXDOMAIN => Err(ResolveError::NxDomain),
        c => Err(ResolveError::Rcode(c)),
    }
}

/// `N` bytes from the system's CSPRNG.
fn random<const N: usize>(rng: &SystemRandom) -> Result<[u8; N], ResolveError> {
    let mut b = [0u8; N];
    rng.fill(&mut b)
        .map_err(|_| ResolveError::Io("the system's random source failed".into()))?;
    Ok(b)
}

/// A uniform index below `n` (> 0), by rejection (no modulo bias).
fn pick(rng: &SystemRandom, n: usize) -> Result<usize, ResolveError> {
    if n == 0 {
        return Err(ResolveError::Io("no source socket".into()));
    }
    let n = n.min(u32::MAX as usize) as u32;
    let zone = u32::MAX - u32::MAX % n;
    loop {
        let x = u32::from_ne_bytes(random(rng)?);
        if x < zone {
            return Ok((x % n) as usize);
        }
    }
}

fn shuffle(rng: &SystemRandom, v: &mut [u16]) -> io::Result<()> {
    for i in (1..v.len()).rev() {
        let j = pick(rng, i + 1).map_err(|e| io::Error::other(e.to_string()))?;
        v.swap(i, j);
    }
    Ok(())
}

/// `name` with each ASCII letter's case set by one bit of `bits` (DNS 0x20); other bytes as
/// they are. Names longer than `bits` has bits for keep the rest as written.
pub fn mix_case(name: &str, bits: &[u8]) -> String {
    name.bytes()
        .enumerate()
        .map(|(i, b)| {
            let c = char::from(b);
            match bits.get(i / 8).map(|x| x >> (i % 8) & 1) {
                Some(1) if b.is_ascii_alphabetic() => c.to_ascii_uppercase(),
                Some(_) if b.is_ascii_alphabetic() => c.to_ascii_lowercase(),
                _ => c,
            }
        })
        .collect()
}

/// Reads and drops whatever is queued on `sock`.
fn drain(sock: &UdpSocket) {
    if sock.set_nonblocking(true).is_err() {
        return;
    }
    let mut b = [0u8; 1500];
    while sock.recv_from(&mut b).is_ok() {}
    let _ = sock.set_nonblocking(false);
}

/// Connects the bound socket `s` to `server`, sends `q` with its 2-byte length (RFC 7766
/// section 8) and reads one length-prefixed answer, all before `deadline`.
fn exchange(s: &TcpStream, server: SocketAddr, q: &[u8], deadline: Instant) -> io::Result<Vec<u8>> {
    let SocketAddr::V4(server) = server else {
        return Err(io::Error::other("IPv4 servers only"));
    };
    let left = |what: &str| -> io::Result<Duration> {
        let l = deadline.saturating_duration_since(Instant::now());
        if l.is_zero() {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no {what} in time"),
            ))
        } else {
            Ok(l)
        }
    };
    connect_before(s, server, left("connection")?)?;
    s.set_nonblocking(false)?;
    let mut msg = Vec::with_capacity(q.len() + 2);
    msg.extend_from_slice(&(q.len() as u16).to_be_bytes());
    msg.extend_from_slice(q);
    s.set_write_timeout(Some(left("send")?))?;
    (&*s).write_all(&msg)?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if got.len() >= 2 {
            let want = 2 + usize::from(u16::from_be_bytes([got[0], got[1]]));
            if got.len() >= want {
                got.truncate(want);
                got.drain(..2);
                return Ok(got);
            }
        }
        s.set_read_timeout(Some(left("answer")?))?;
        match (&*s).read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before a whole answer",
                ))
            }
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))
            }
            Err(e) => return Err(e),
        }
    }
}

/// One name's state in the refresh loop.
#[derive(Debug, Clone)]
struct Entry {
    addrs: Option<Vec<Ipv4Addr>>,
    due: Instant,
}

/// One pass of the refresh loop: resolves the names that are due, returns the names whose
/// address set changed (new sets) and the next time something is due.
fn refresh(
    res: &mut Resolver,
    names: &[String],
    table: &mut BTreeMap<String, Entry>,
    settings: &DnsSettings,
    now: Instant,
    stop: &AtomicBool,
) -> (BTreeMap<String, Vec<Ipv4Addr>>, Instant) {
    table.retain(|k, _| names.contains(k));
    let mut changed = BTreeMap::new();
    for n in names {
        // A pass can wait one timeout per name and server: let shutdown cut it short.
        if stop.load(Relaxed) {
            break;
        }
        let e = table.entry(n.clone()).or_insert(Entry {
            addrs: None,
            due: now,
        });
        if e.due > now {
            continue;
        }
        match res.resolve(n) {
            Ok(v) => {
                let ttl = v.iter().map(|x| x.1).min().unwrap_or(0);
                let ttl = Duration::from_secs(u64::from(ttl))
                    .clamp(settings.min_refresh, settings.max_refresh);
                let addrs: Vec<Ipv4Addr> = v.into_iter().map(|x| x.0).collect();
                e.due = now + ttl;
                if e.addrs.as_ref() != Some(&addrs) {
                    log::info!(
                        "dns: {n} -> {} (refresh in {} s)",
                        list(&addrs),
                        ttl.as_secs()
                    );
                    changed.insert(n.clone(), addrs.clone());
                    e.addrs = Some(addrs);
                }
            }
            Err(err) => {
                e.due = now + settings.min_refresh;
                match &e.addrs {
                    Some(a) => log::warn!(
                        "dns: {n} did not resolve ({err}); keeping its last addresses {}",
                        list(a)
                    ),
                    None => log::warn!(
                        "dns: {n} did not resolve ({err}); never resolved, its rules match nothing for it"
                    ),
                }
            }
        }
    }
    let next = table
        .values()
        .map(|e| e.due)
        .min()
        .unwrap_or(now + settings.max_refresh);
    (changed, next)
}

fn list(a: &[Ipv4Addr]) -> String {
    a.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the refresh loop until `stop`: the names are those of the running configuration's
/// network rules (re-read each pass, so a reload that adds a name resolves it at once).
pub fn spawn(
    live: Arc<LiveConfig>,
    mut res: Resolver,
    settings: DnsSettings,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tollgate-dns".into())
        .spawn(move || {
            crate::io::caps::enter_control_thread();
            let mut table = BTreeMap::new();
            let mut next = Instant::now();
            let mut names_seen = Vec::new();
            while !stop.load(Relaxed) {
                let names = live.loaded().policy.destination_names();
                let now = Instant::now();
                if now >= next || names != names_seen {
                    let (changed, n) = refresh(&mut res, &names, &mut table, &settings, now, &stop);
                    next = n;
                    names_seen = names;
                    if !changed.is_empty() {
                        let g = live.apply_resolved(&changed);
                        log::info!(
                            "dns: policy recompiled with the new addresses (policy generation {g})"
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot fake server on loopback answering each query from `zone`.
    fn server(zone: Vec<(&'static str, [u8; 4], u32)>) -> (SocketAddr, JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = s.local_addr().expect("addr");
        let h = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            s.set_read_timeout(Some(Duration::from_secs(3))).ok();
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let q = &buf[..n];
                // The name, decoded from the question.
                let mut name = String::new();
                let mut at = 12;
                while q[at] != 0 {
                    let l = q[at] as usize;
                    if !name.is_empty() {
                        name.push('.');
                    }
                    name.push_str(std::str::from_utf8(&q[at + 1..at + 1 + l]).expect("ascii"));
                    at += 1 + l;
                }
                // The query's name is in random case (0x20); the zone is lower case.
                let name = name.to_ascii_lowercase();
                if name == "quit.example" {
                    return;
                }
                let mut m = q.to_vec();
                m[2] = 0x81;
                let hits: Vec<_> = zone.iter().filter(|z| z.0 == name).collect();
                m[3] = if hits.is_empty() { 0x83 } else { 0x80 };
                m[7] = hits.len() as u8;
                for (_, a, ttl) in hits {
                    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
                    m.extend_from_slice(&ttl.to_be_bytes());
                    m.extend_from_slice(&[0, 4]);
                    m.extend_from_slice(a);
                }
                s.send_to(&m, from).ok();
            }
        });
        (addr, h)
    }

    fn settings() -> DnsSettings {
        DnsSettings {
            servers: Vec::new(),
            min_refresh: Duration::from_secs(5),
            max_refresh: Duration::from_secs(300),
            source_ports: 0..=0,
        }
    }

    #[test]
    fn resolves_over_a_real_socket_and_refreshes_by_ttl() {
        let (addr, h) = server(vec![
            ("api.example", [203, 0, 113, 10], 2),
            ("big.example", [203, 0, 113, 11], 100_000),
            ("big.example", [203, 0, 113, 12], 100_000),
        ]);
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut r = Resolver::with_sockets(vec![sock], Vec::new(), vec![addr]);
        assert_eq!(
            r.resolve("api.example"),
            Ok(vec![(Ipv4Addr::new(203, 0, 113, 10), 2)])
        );
        assert_eq!(r.resolve("nope.example"), Err(ResolveError::NxDomain));

        let names = vec!["api.example".to_string(), "big.example".to_string()];
        let mut table = BTreeMap::new();
        let t0 = Instant::now();
        let s = settings();
        let (changed, next) = refresh(&mut r, &names, &mut table, &s, t0, &AtomicBool::new(false));
        assert_eq!(changed.len(), 2);
        assert_eq!(
            changed["big.example"],
            [
                Ipv4Addr::new(203, 0, 113, 11),
                Ipv4Addr::new(203, 0, 113, 12)
            ]
        );
        // TTL 2 s is raised to the 5 s minimum; 100000 s is capped at 300 s.
        assert_eq!(next, t0 + Duration::from_secs(5));
        assert_eq!(table["big.example"].due, t0 + Duration::from_secs(300));
        // Nothing due: no query, nothing changed.
        let (changed, _) = refresh(
            &mut r,
            &names,
            &mut table,
            &s,
            t0 + Duration::from_secs(1),
            &AtomicBool::new(false),
        );
        assert!(changed.is_empty());
        // Due again, same answer: nothing changed.
        let (changed, _) = refresh(
            &mut r,
            &names,
            &mut table,
            &s,
            t0 + Duration::from_secs(6),
            &AtomicBool::new(false),
        );
        assert!(changed.is_empty());
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.send_to(&quit(), addr).ok();
        h.join().ok();
    }

    fn quit() -> Vec<u8> {
        let mut b = [0u8; 64];
        let n = write_query(&mut b, 1, "quit.example").expect("q");
        b[..n].to_vec()
    }

    #[test]
    fn a_failing_name_keeps_its_addresses_and_a_new_one_stays_unresolved() {
        // A server that never answers (a bound socket nobody reads).
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut r = Resolver::with_sockets(
            vec![sock],
            Vec::new(),
            vec![silent.local_addr().expect("a")],
        );
        let names = vec!["api.example".to_string(), "new.example".to_string()];
        let t0 = Instant::now();
        let mut table = BTreeMap::new();
        table.insert(
            "api.example".to_string(),
            Entry {
                addrs: Some(vec![Ipv4Addr::new(203, 0, 113, 10)]),
                due: t0,
            },
        );
        let (changed, next) = refresh(
            &mut r,
            &names,
            &mut table,
            &settings(),
            t0,
            &AtomicBool::new(false),
        );
        assert!(changed.is_empty(), "a timeout changes no address set");
        assert_eq!(
            table["api.example"].addrs,
            Some(vec![Ipv4Addr::new(203, 0, 113, 10)])
        );
        assert_eq!(table["new.example"].addrs, None);
        assert_eq!(
            next,
            t0 + Duration::from_secs(5),
            "retried after min_refresh"
        );
    }

    // ---- forgery, TCP retries, randomness: a hostile server on loopback

    /// What the hostile server saw.
    #[derive(Default, Debug)]
    struct Seen {
        /// Per UDP query: source port, id, the name's bytes as sent (case kept).
        udp: Vec<(u16, u16, Vec<u8>)>,
        /// Per TCP connection: the peer's port and the name asked (lower case).
        tcp: Vec<(u16, String)>,
    }

    /// A DNS server on 127.0.0.1, UDP and TCP on one port. By name (any case):
    /// - `api.example`: 203.0.113.10, TTL 60.
    /// - `badid`, `badcase`, `badport`, `badaddr` `.example`: first a forged answer (6.6.6.6,
    ///   otherwise perfect) with another id / the name in other case / sent to the resolver's
    ///   other ports instead of the query's / sent from 127.0.0.2 and from another port of
    ///   127.0.0.1; then, 30 ms later, the genuine answer 203.0.113.30. With `-only` in the
    ///   first label (`badid-only.example` ...): the forgery and no genuine answer.
    /// - `big.example`: over UDP a genuine answer with TC set and no records; over TCP
    ///   203.0.113.20 and .21, TTL 30 (the length prefix and the message in two writes).
    /// - `forgedtc.example`: a TC answer with another id and one from 127.0.0.2, then the
    ///   genuine UDP answer 203.0.113.40 (a forged TC must not send the resolver to TCP).
    /// - `tcpbadid.example`, `tcpbadcase.example`: UDP TC; over TCP a 6.6.6.6 answer with
    ///   another id / the name in other case.
    /// - anything else: NXDOMAIN.
    struct Hostile {
        addr: SocketAddr,
        seen: Arc<std::sync::Mutex<Seen>>,
        stop: Arc<AtomicBool>,
        threads: Vec<JoinHandle<()>>,
    }

    impl Drop for Hostile {
        fn drop(&mut self) {
            self.stop.store(true, Relaxed);
            for t in self.threads.drain(..) {
                t.join().ok();
            }
        }
    }

    const FORGED: [u8; 4] = [6, 6, 6, 6];

    /// The name of query `q` (lower case) and the end of its question name.
    fn qname(q: &[u8]) -> (String, usize) {
        let mut name = String::new();
        let mut at = 12;
        while at < q.len() && q[at] != 0 {
            let l = q[at] as usize;
            if !name.is_empty() {
                name.push('.');
            }
            name.push_str(&String::from_utf8_lossy(&q[at + 1..at + 1 + l]));
            at += 1 + l;
        }
        (name.to_ascii_lowercase(), at + 1)
    }

    /// An answer to `q` (header and question as sent) with A records for `addrs`.
    fn answer(q: &[u8], tc: bool, rcode: u8, addrs: &[[u8; 4]], ttl: u32) -> Vec<u8> {
        let (_, qend) = qname(q);
        let mut m = q[..qend + 4].to_vec();
        m[2] = 0x81 | if tc { 0x02 } else { 0 };
        m[3] = 0x80 | rcode;
        m[6..8].copy_from_slice(&(addrs.len() as u16).to_be_bytes());
        m[8..12].fill(0);
        for a in addrs {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&[0, 4]);
            m.extend_from_slice(a);
        }
        m
    }

    fn other_id(m: &mut [u8]) {
        let id = u16::from_be_bytes([m[0], m[1]]).wrapping_add(1);
        m[..2].copy_from_slice(&id.to_be_bytes());
    }

    /// Flips the case of every letter of the question name.
    fn other_case(m: &mut [u8]) {
        let (_, qend) = qname(m);
        for b in &mut m[12..qend] {
            if b.is_ascii_alphabetic() {
                *b ^= 0x20;
            }
        }
    }

    fn hostile(decoys: Vec<SocketAddr>) -> Hostile {
        let (udp, tcp) = loop {
            let u = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let port = u.local_addr().expect("addr").port();
            if let Ok(t) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                break (u, t);
            }
        };
        let addr = udp.local_addr().expect("addr");
        let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let elsewhere = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
                let other_port = UdpSocket::bind("127.0.0.1:0").expect("bind");
                udp.set_read_timeout(Some(Duration::from_millis(50))).ok();
                let mut buf = [0u8; 512];
                while !stop.load(Relaxed) {
                    let Ok((n, from)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    let q = &buf[..n];
                    let (name, qend) = qname(q);
                    seen.lock().expect("lock").udp.push((
                        from.port(),
                        u16::from_be_bytes([q[0], q[1]]),
                        q[12..qend].to_vec(),
                    ));
                    let first = name.split('.').next().unwrap_or("");
                    let kind = first.strip_suffix("-only").unwrap_or(first);
                    let only = first.ends_with("-only");
                    let forged = answer(q, false, 0, &[FORGED], 60);
                    let reply = match kind {
                        "api" => answer(q, false, 0, &[[203, 0, 113, 10]], 60),
                        "badid" | "badcase" | "badport" | "badaddr" => {
                            let mut f = forged.clone();
                            match kind {
                                "badid" => {
                                    other_id(&mut f);
                                    udp.send_to(&f, from).ok();
                                }
                                "badcase" => {
                                    other_case(&mut f);
                                    udp.send_to(&f, from).ok();
                                }
                                "badport" => {
                                    for d in decoys.iter().filter(|d| **d != from) {
                                        udp.send_to(&f, d).ok();
                                    }
                                }
                                _ => {
                                    elsewhere.send_to(&f, from).ok();
                                    other_port.send_to(&f, from).ok();
                                }
                            }
                            if only {
                                continue;
                            }
                            std::thread::sleep(Duration::from_millis(30));
                            answer(q, false, 0, &[[203, 0, 113, 30]], 60)
                        }
                        "big" | "tcpbadid" | "tcpbadcase" => answer(q, true, 0, &[], 0),
                        "forgedtc" => {
                            let mut f = answer(q, true, 0, &[], 0);
                            elsewhere.send_to(&f, from).ok();
                            other_id(&mut f);
                            udp.send_to(&f, from).ok();
                            std::thread::sleep(Duration::from_millis(30));
                            answer(q, false, 0, &[[203, 0, 113, 40]], 60)
                        }
                        _ => answer(q, false, RCODE_NXDOMAIN, &[], 0),
                    };
                    udp.send_to(&reply, from).ok();
                }
            }));
        }
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                tcp.set_nonblocking(true).expect("nonblocking");
                while !stop.load(Relaxed) {
                    let Ok((mut c, peer)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    c.set_nonblocking(false).ok();
                    c.set_read_timeout(Some(Duration::from_secs(2))).ok();
                    let mut len = [0u8; 2];
                    if c.read_exact(&mut len).is_err() {
                        continue;
                    }
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if c.read_exact(&mut q).is_err() {
                        continue;
                    }
                    let (name, _) = qname(&q);
                    seen.lock()
                        .expect("lock")
                        .tcp
                        .push((peer.port(), name.clone()));
                    let mut m = match name.as_str() {
                        "big.example" => {
                            answer(&q, false, 0, &[[203, 0, 113, 21], [203, 0, 113, 20]], 30)
                        }
                        _ => answer(&q, false, 0, &[FORGED], 60),
                    };
                    match name.as_str() {
                        "tcpbadid.example" => other_id(&mut m),
                        "tcpbadcase.example" => other_case(&mut m),
                        _ => {}
                    }
                    let mut framed = (m.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&m);
                    c.write_all(&framed[..1]).ok();
                    c.flush().ok();
                    std::thread::sleep(Duration::from_millis(20));
                    c.write_all(&framed[1..]).ok();
                    // Keep the connection open until the client is done with it.
                    let mut rest = [0u8; 64];
                    while matches!(c.read(&mut rest), Ok(n) if n > 0) {}
                }
            }));
        }
        Hostile {
            addr,
            seen,
            stop,
            threads,
        }
    }

    /// `n` UDP sockets on loopback ephemeral ports, and their addresses.
    fn udp_pool(n: usize) -> (Vec<UdpSocket>, Vec<SocketAddr>) {
        let v: Vec<UdpSocket> = (0..n)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let a = v.iter().map(|s| s.local_addr().expect("addr")).collect();
        (v, a)
    }

    /// A bound, unconnected TCP socket on a loopback port chosen explicitly (as the daemon's
    /// are), so the port must survive each disconnect.
    fn tcp_pool(n: usize) -> Vec<TcpStream> {
        (0..n)
            .map(|_| loop {
                let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let port = probe.local_addr().expect("addr").port();
                drop(probe);
                if let Ok(s) = tcp_socket(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
                    break s;
                }
            })
            .collect()
    }

    const GENUINE: (Ipv4Addr, u32) = (Ipv4Addr::new(203, 0, 113, 30), 60);

    #[test]
    fn forged_answers_are_ignored_and_the_genuine_one_taken() {
        let (udp, decoys) = udp_pool(8);
        let h = hostile(decoys);
        let mut r = Resolver::with_sockets(udp, Vec::new(), vec![h.addr]);
        for kind in ["badid", "badcase", "badport", "badaddr"] {
            for _ in 0..3 {
                assert_eq!(
                    r.resolve(&format!("{kind}.example")),
                    Ok(vec![GENUINE]),
                    "{kind}: the forgery came first and was ignored"
                );
            }
        }
        // Without the genuine answer, each forgery alone resolves nothing: it was rejected,
        // not merely beaten by the genuine answer.
        for kind in ["badid", "badcase", "badport", "badaddr"] {
            let e = r.resolve(&format!("{kind}-only.example"));
            assert!(matches!(e, Err(ResolveError::Timeout(_))), "{kind}: {e:?}");
            if kind == "badcase" {
                let m = e.err().map(|e| e.to_string()).unwrap_or_default();
                assert!(
                    m.contains("1 answer(s) that echoed the name in another case"),
                    "{m}"
                );
            }
        }
        // The forgeries sent to the other ports sat in those sockets: later queries, whatever
        // socket they pick, still take only their own answers.
        for _ in 0..16 {
            assert_eq!(
                r.resolve("api.example"),
                Ok(vec![(Ipv4Addr::new(203, 0, 113, 10), 60)])
            );
        }
        let seen = h.seen.lock().expect("lock");
        assert_eq!(seen.udp.len(), 4 * 3 + 4 + 16, "one query per resolve");
        assert!(seen.tcp.is_empty());
    }

    #[test]
    fn a_truncated_answer_is_completed_over_tcp_from_a_bound_port() {
        let (udp, _) = udp_pool(4);
        let tcp = tcp_pool(2);
        let h = hostile(Vec::new());
        let mut r = Resolver::with_sockets(udp, tcp, vec![h.addr]);
        let ports = r.tcp_ports();
        let big = vec![
            (Ipv4Addr::new(203, 0, 113, 20), 30),
            (Ipv4Addr::new(203, 0, 113, 21), 30),
        ];
        for _ in 0..6 {
            assert_eq!(r.resolve("big.example"), Ok(big.clone()));
        }
        // Each retry left from one of the bound ports, which the sockets kept.
        assert_eq!(r.tcp_ports(), ports);
        {
            let seen = h.seen.lock().expect("lock");
            assert_eq!(seen.tcp.len(), 6, "{seen:?}");
            assert!(seen
                .tcp
                .iter()
                .all(|(p, n)| ports.contains(p) && n == "big.example"));
        }
        // A forged TC answer (another id, another address) sends nobody to TCP.
        assert_eq!(
            r.resolve("forgedtc.example"),
            Ok(vec![(Ipv4Addr::new(203, 0, 113, 40), 60)])
        );
        assert_eq!(h.seen.lock().expect("lock").tcp.len(), 6);
        // The TCP answer passes the same checks.
        let e = r.resolve("tcpbadid.example");
        assert!(
            matches!(&e, Err(ResolveError::Io(m)) if m.contains("id does not match")),
            "{e:?}"
        );
        let e = r.resolve("tcpbadcase.example");
        assert!(
            matches!(&e, Err(ResolveError::Io(m)) if m.contains("another case")),
            "{e:?}"
        );
        // And the sockets still work after rejected answers.
        assert_eq!(r.resolve("big.example"), Ok(big));
        assert_eq!(r.tcp_ports(), ports);
        // Without a TCP socket a truncated answer is an error, not an empty answer.
        let (udp, _) = udp_pool(1);
        let mut r = Resolver::with_sockets(udp, Vec::new(), vec![h.addr]);
        let e = r.resolve("big.example");
        assert!(
            matches!(&e, Err(ResolveError::Io(m)) if m.contains("truncated")),
            "{e:?}"
        );
    }

    #[test]
    fn source_ports_ids_and_case_vary_per_query() {
        let (udp, addrs) = udp_pool(16);
        let h = hostile(Vec::new());
        let mut r = Resolver::with_sockets(udp, Vec::new(), vec![h.addr]);
        const N: usize = 64;
        for _ in 0..N {
            assert!(r.resolve("api.example").is_ok());
        }
        let seen = h.seen.lock().expect("lock");
        assert_eq!(seen.udp.len(), N);
        let ports: std::collections::BTreeSet<u16> = seen.udp.iter().map(|x| x.0).collect();
        assert!(
            ports.iter().all(|p| addrs.iter().any(|a| a.port() == *p)),
            "only the pool's ports"
        );
        assert!(ports.len() >= 8, "64 queries over 16 ports used {ports:?}");
        // Ids: no trivial pattern (a counter, a constant step, the old xorshift16 chain), and
        // every bit takes both values.
        let ids: Vec<u16> = seen.udp.iter().map(|x| x.1).collect();
        let distinct: std::collections::BTreeSet<u16> = ids.iter().copied().collect();
        assert!(distinct.len() >= N - 4, "{ids:?}");
        let steps: Vec<u16> = ids.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        assert!(
            steps.iter().filter(|&&d| d == steps[0]).count() < 4,
            "{ids:?}"
        );
        assert!(steps.iter().filter(|&&d| d == 1).count() < 4, "{ids:?}");
        let xorshift = |mut x: u16| {
            x |= 1;
            x ^= x << 7;
            x ^= x >> 9;
            x ^= x << 8;
            x
        };
        assert!(
            ids.windows(2).filter(|w| w[1] == xorshift(w[0])).count() < 4,
            "{ids:?}"
        );
        for bit in 0..16 {
            assert!(ids.iter().any(|i| i >> bit & 1 == 1), "bit {bit}");
            assert!(ids.iter().any(|i| i >> bit & 1 == 0), "bit {bit}");
        }
        // The name: always api.example, in many casings, every letter seen in both cases.
        let names: Vec<&Vec<u8>> = seen.udp.iter().map(|x| &x.2).collect();
        let wire = b"\x03api\x07example\x00";
        assert!(names.iter().all(|n| n.eq_ignore_ascii_case(wire)));
        let casings: std::collections::BTreeSet<&Vec<u8>> = names.iter().copied().collect();
        assert!(casings.len() >= N / 2, "{} casings", casings.len());
        for (i, b) in wire
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_ascii_alphabetic())
        {
            assert!(names.iter().any(|n| n[i] == b.to_ascii_uppercase()), "{i}");
            assert!(names.iter().any(|n| n[i] == *b), "{i}");
        }
    }

    #[test]
    fn mix_case_follows_the_bits_and_keeps_other_bytes() {
        assert_eq!(mix_case("a-1.Example", &[0; 2]), "a-1.example");
        assert_eq!(mix_case("a-1.Example", &[0xff; 2]), "A-1.EXAMPLE");
        assert_eq!(mix_case("abcdefghij", &[0b0101_0101, 0b10]), "AbCdEfGhiJ");
        // Past the bits given: as written.
        assert_eq!(mix_case("abcdefghiJ", &[0xff]), "ABCDEFGHiJ");
    }

    #[test]
    fn bind_takes_the_range_and_skips_ports_in_use() {
        // A port held by another socket, and the range around it.
        let held = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let p = held.local_addr().expect("addr").port();
        let (lo, hi) = if p <= 65535 - 7 {
            (p, p + 7)
        } else {
            (p - 7, p)
        };
        let s = DnsSettings {
            servers: vec![Ipv4Addr::LOCALHOST],
            source_ports: lo..=hi,
            ..settings()
        };
        let r = Resolver::bind(&s).expect("bind");
        let udp = r.udp_ports();
        assert!(!udp.contains(&p), "the held port is skipped");
        assert!(!udp.is_empty() && udp.iter().all(|x| (lo..=hi).contains(x)));
        let tcp = r.tcp_ports();
        assert!(!tcp.is_empty() && tcp.len() <= TCP_SOCKETS);
        assert!(tcp.iter().all(|x| (lo..=hi).contains(x)));
        assert_eq!(r.servers, [SocketAddr::from((Ipv4Addr::LOCALHOST, 53))]);
    }
}
