//! Next-hop MAC resolution from the kernel's neighbour table.
//!
//! The kernel owns ARP. A background thread reads `/proc/thread-self/net/arp` (of the caller's network
//! namespace) every ~100 ms into an immutable snapshot that workers load without locks
//! (`arc-swap`), once per batch. On a miss a worker holds the packet (`neighbour_queued`, see
//! `runtime`) and asks the thread, through a bounded queue that never blocks the worker, to
//! make the kernel resolve the address: it sends an empty UDP datagram to the next hop's
//! discard port, which makes the kernel ARP for it, and reads the table again every
//! millisecond until the address is there (5 ms at most).

use std::collections::HashMap as StdHashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::datapath::IfaceId;

/// One immutable view of the neighbour table, per data interface.
#[derive(Clone, Debug)]
pub struct NeighSnapshot {
    by_if: Vec<StdHashMap<Ipv4Addr, [u8; 6]>>,
    generation: u64,
}

/// Every snapshot built gets the next number: a worker can tell a new one from the one it has
/// looked at (an address would not do, the allocator reuses them).
static GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed)
}

impl Default for NeighSnapshot {
    fn default() -> Self {
        NeighSnapshot {
            by_if: Vec::new(),
            generation: next_generation(),
        }
    }
}

impl NeighSnapshot {
    /// This snapshot's number (never 0; a clone keeps it, having the same entries).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The MAC of `ip` on interface `iface`, if the kernel has resolved it.
    pub fn lookup(&self, iface: IfaceId, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.by_if.get(iface as usize)?.get(&ip).copied()
    }

    /// Whether `ip` is resolved on any interface.
    pub fn has(&self, ip: Ipv4Addr) -> bool {
        self.by_if.iter().any(|m| m.contains_key(&ip))
    }

    /// Number of resolved entries.
    pub fn len(&self) -> usize {
        self.by_if.iter().map(|m| m.len()).sum()
    }

    /// True when no entry is resolved.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot from fixed entries (tests, the in-memory backend).
    pub fn from_entries(n_ifaces: usize, entries: &[(IfaceId, Ipv4Addr, [u8; 6])]) -> Self {
        let mut by_if = vec![StdHashMap::new(); n_ifaces];
        for &(i, ip, mac) in entries {
            if let Some(m) = by_if.get_mut(i as usize) {
                m.insert(ip, mac);
            }
        }
        NeighSnapshot {
            by_if,
            generation: next_generation(),
        }
    }
}

/// Parses `/proc/net/arp` text into a snapshot for the interfaces `ifaces` (index = IfaceId);
/// only complete entries (ATF_COM) are kept.
pub fn parse_proc_arp(text: &str, ifaces: &[String]) -> NeighSnapshot {
    let mut by_if = vec![StdHashMap::new(); ifaces.len()];
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 {
            continue;
        }
        let (Ok(ip), Some(flags), Some(mac)) = (
            f[0].parse::<Ipv4Addr>(),
            u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok(),
            parse_mac(f[3]),
        ) else {
            continue;
        };
        if flags & 0x2 == 0 || mac == [0; 6] {
            continue;
        }
        if let Some(i) = ifaces.iter().position(|n| n == f[5]) {
            by_if[i].insert(ip, mac);
        }
    }
    NeighSnapshot {
        by_if,
        generation: next_generation(),
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The kernel is asked to resolve an address at most this often (an empty datagram to it): a
/// worker holding frames for it asks again every 100 ms, which this must not swallow.
pub const ASK_EVERY: Duration = Duration::from_millis(90);

/// The shared table: the snapshot and the miss queue.
#[derive(Debug)]
pub struct Neighbours {
    snap: ArcSwap<NeighSnapshot>,
    miss: Option<SyncSender<Ipv4Addr>>,
}

impl Neighbours {
    /// A fixed table with no refresher (tests).
    pub fn fixed(snap: NeighSnapshot) -> Arc<Self> {
        Arc::new(Neighbours {
            snap: ArcSwap::from_pointee(snap),
            miss: None,
        })
    }

    /// Replaces the snapshot, as the refresher thread does (tests drive a fixed one by hand).
    pub fn store(&self, snap: NeighSnapshot) {
        self.snap.store(Arc::new(snap));
    }

    /// Loads the current snapshot (lock-free; call once per batch).
    pub fn load(&self) -> arc_swap::Guard<Arc<NeighSnapshot>> {
        self.snap.load()
    }

    /// Asks for `ip` to be resolved; never blocks (a full queue drops the request).
    pub fn request(&self, ip: Ipv4Addr) {
        if let Some(tx) = &self.miss {
            match tx.try_send(ip) {
                Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Starts the refresher thread for `ifaces`; it stops when `stop` is set.
    pub fn spawn(ifaces: Vec<String>, stop: Arc<AtomicBool>) -> (Arc<Self>, JoinHandle<()>) {
        let (tx, rx) = sync_channel(1024);
        let first = std::fs::read_to_string("/proc/thread-self/net/arp")
            .map(|t| parse_proc_arp(&t, &ifaces))
            .unwrap_or_default();
        let me = Arc::new(Neighbours {
            snap: ArcSwap::from_pointee(first),
            miss: Some(tx),
        });
        let shared = me.clone();
        let h = std::thread::Builder::new()
            .name("tg-neigh".into())
            .spawn(move || {
                super::caps::enter_control_thread();
                refresher(shared, ifaces, rx, stop)
            })
            .expect("spawn neighbour thread");
        (me, h)
    }
}

fn refresher(
    me: Arc<Neighbours>,
    ifaces: Vec<String>,
    rx: Receiver<Ipv4Addr>,
    stop: Arc<AtomicBool>,
) {
    let period = Duration::from_millis(100);
    let sock = UdpSocket::bind("0.0.0.0:0").ok();
    let mut asked: StdHashMap<Ipv4Addr, Instant> = StdHashMap::new();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut missed = None;
        match rx.recv_timeout(period) {
            Ok(ip) => {
                let now = Instant::now();
                let due = asked
                    .get(&ip)
                    .map_or(true, |t| now.duration_since(*t) >= ASK_EVERY);
                if due {
                    asked.insert(ip, now);
                    if let Some(s) = &sock {
                        // An empty datagram to the discard port: the kernel ARPs for it.
                        let _ = s.send_to(&[], SocketAddrV4::new(ip, 9));
                    }
                    missed = Some(ip);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let read = || {
            std::fs::read_to_string("/proc/thread-self/net/arp")
                .ok()
                .map(|t| parse_proc_arp(&t, &ifaces))
        };
        if let Some(ip) = missed {
            // every millisecond until the kernel has the answer (an ARP round trip), 5 at most
            // (stored when it has the address or on the last try: a new snapshot makes the
            // workers look at their held frames again)
            for attempt in 1..=5 {
                std::thread::sleep(Duration::from_millis(1));
                if let Some(snap) = read() {
                    let found = snap.has(ip);
                    if found || attempt == 5 {
                        me.snap.store(Arc::new(snap));
                    }
                    if found {
                        break;
                    }
                }
            }
            last = Instant::now();
            asked.retain(|_, t| t.elapsed() < Duration::from_secs(5));
        } else if last.elapsed() >= period {
            if let Some(snap) = read() {
                me.snap.store(Arc::new(snap));
            }
            last = Instant::now();
            asked.retain(|_, t| t.elapsed() < Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_arp() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 198.18.0.11      0x1         0x2         aa:bb:cc:00:00:01     *        tg-in\n\
                 198.18.0.12      0x1         0x0         00:00:00:00:00:00     *        tg-in\n\
                 203.0.113.10     0x1         0x2         aa:bb:cc:00:00:02     *        tg-out\n\
                 192.0.2.1        0x1         0x2         aa:bb:cc:00:00:03     *        eth9\n";
        let ifs = vec!["tg-in".to_string(), "tg-out".to_string()];
        let s = parse_proc_arp(t, &ifs);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.lookup(0, "198.18.0.11".parse().expect("ip")),
            Some([0xaa, 0xbb, 0xcc, 0, 0, 1])
        );
        assert_eq!(s.lookup(0, "198.18.0.12".parse().expect("ip")), None);
        assert_eq!(
            s.lookup(1, "203.0.113.10".parse().expect("ip")),
            Some([0xaa, 0xbb, 0xcc, 0, 0, 2])
        );
    }
}
