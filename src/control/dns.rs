//! The resolver of network rules' destination FQDNs, as Azure Firewall does it: the appliance
//! resolves the names itself (its own DNS client over a plain UDP socket, codec in
//! [`crate::wire::dns`]), at start and whenever an answer's TTL (clamped to the `[dns]` refresh
//! bounds) runs out, and when any name's address set changes it recompiles the policy with those
//! addresses as the rules' destinations and publishes it like a reload
//! ([`LiveConfig::apply_resolved`]).
//!
//! A name that cannot be resolved (timeout, SERVFAIL, NXDOMAIN, no A record) keeps its last
//! known addresses and is retried after the minimum refresh; a name never resolved matches
//! nothing. Both are logged.
//!
//! Ports: the socket is bound (before capabilities are dropped) to `[dns] source_port`, which
//! the configuration keeps outside the SNAT port range and off every UDP DNAT port. The
//! daemon's nftables table only drops SNAT-range ports and the workers leave a packet to a
//! public address on a port outside the SNAT range to the kernel (`Verdict::Local`), so the
//! answers reach this socket, and no SNAT mapping can ever be granted that port.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::reload::LiveConfig;
use crate::config::DnsSettings;
use crate::wire::dns::{write_query, Response, RCODE_NXDOMAIN};

/// How long one server is waited for per attempt.
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(1000);

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

/// A DNS stub client on one UDP socket bound to a fixed port.
#[derive(Debug)]
pub struct Resolver {
    sock: UdpSocket,
    servers: Vec<SocketAddr>,
    next_id: u16,
}

impl Resolver {
    /// Binds `0.0.0.0:source_port` (call before capabilities are dropped: the default port is
    /// below 1024).
    pub fn bind(settings: &DnsSettings) -> io::Result<Resolver> {
        let sock = UdpSocket::bind(SocketAddrV4::new(
            Ipv4Addr::UNSPECIFIED,
            settings.source_port,
        ))?;
        Ok(Self::with_socket(
            sock,
            settings
                .servers
                .iter()
                .map(|a| SocketAddr::from((*a, 53)))
                .collect(),
        ))
    }

    /// A resolver on an already bound socket (tests use an ephemeral port and another server
    /// port).
    pub fn with_socket(sock: UdpSocket, servers: Vec<SocketAddr>) -> Resolver {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u16 ^ (d.as_secs() as u16))
            .unwrap_or(0x5eed);
        Resolver {
            sock,
            servers,
            next_id: seed,
        }
    }

    fn id(&mut self) -> u16 {
        // xorshift16: unpredictable enough for a resolver talking to configured servers only.
        let mut x = self.next_id | 1;
        x ^= x << 7;
        x ^= x >> 9;
        x ^= x << 8;
        self.next_id = x;
        x
    }

    /// The A records of `name`: (address, TTL s), sorted by address, deduplicated. Tries each
    /// server in order; answers from another address or for another query are ignored.
    pub fn resolve(&mut self, name: &str) -> Result<Vec<(Ipv4Addr, u32)>, ResolveError> {
        let mut last = ResolveError::Timeout("no server".into());
        for i in 0..self.servers.len() {
            let server = self.servers[i];
            let mut q = [0u8; 300];
            let id = self.id();
            let n = write_query(&mut q, id, name).map_err(|e| ResolveError::Io(e.to_string()))?;
            let q = &q[..n];
            if let Err(e) = self.sock.send_to(q, server) {
                last = ResolveError::Io(format!("send to {server}: {e}"));
                continue;
            }
            match self.await_answer(server, q) {
                Ok(v) => return Ok(v),
                // An authoritative "no" is final; try the next server on anything else.
                Err(e @ (ResolveError::NxDomain | ResolveError::NoData)) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn await_answer(
        &mut self,
        server: SocketAddr,
        q: &[u8],
    ) -> Result<Vec<(Ipv4Addr, u32)>, ResolveError> {
        let deadline = Instant::now() + QUERY_TIMEOUT;
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ResolveError::Timeout(server.to_string()));
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|e| ResolveError::Io(e.to_string()))?;
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ResolveError::Timeout(server.to_string()))
                }
                Err(e) => return Err(ResolveError::Io(e.to_string())),
            };
            if from != server {
                continue;
            }
            let Ok(r) = Response::parse(&buf[..n], q) else {
                continue;
            };
            return match r.rcode {
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
            };
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
            source_port: 0,
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
        let mut r = Resolver::with_socket(sock, vec![addr]);
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
        let mut r = Resolver::with_socket(sock, vec![silent.local_addr().expect("a")]);
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
}
