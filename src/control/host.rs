//! Host preparation for `tollgate run`, applied at start and removed exactly at exit.
//!
//! In the network namespace the appliance runs in (never the host's, unless that is where it is
//! started on purpose):
//! - `net.ipv4.ip_forward = 0`: the kernel must not forward transit packets; Tollgate does.
//! - `rp_filter = 0` and `send_redirects = 0` on `all` and on each data interface.
//! - an nftables table `inet tollgate` (with `netdev tollgate`, the only tables ever created or
//!   deleted) that drops, in prerouting at priority raw (before conntrack), packets to the SNAT
//!   addresses whose destination port is in the SNAT port range, ICMP echo replies to them, and
//!   packets from a data interface to every DNAT rule's destinations and ports: the kernel then
//!   neither answers them (RST, port unreachable) nor tracks them; the AF_PACKET tap still sees
//!   them.
//! - an nftables table `netdev tollgate` with an ingress chain on each data interface that
//!   drops, right after the AF_PACKET taps have copied them, the IPv4 frames the kernel has no
//!   use for: those not addressed to this host (`fib daddr type unicast`: transit traffic,
//!   which the kernel, forwarding off, would only drop after a route lookup and a dst
//!   allocation per packet) and the SNAT-port and DNAT ones above. Measured: +11-30% packets/s through
//!   the appliance when its CPUs are the limit (docs/io-lab.md). Frames to the host's own,
//!   broadcast and multicast addresses, ARP, IPv6 and DHCP answers go on to the kernel as
//!   before. Skipped, with a warning, on interfaces with a master or upper devices, and where
//!   nft or the kernel cannot do it.
//! - only when asked ([`HostPlan::offloads`], `tollgate run --offloads-off`): GRO, GSO, TSO and
//!   LRO off on the data interfaces (`ethtool -K`), the previous settings restored at exit. By
//!   default the offloads keep the kernel's settings: peers hand the appliance GSO super-frames
//!   whatever its own interfaces do (a local sender, a bridge or a router forwards them whole),
//!   so the dataplane takes them as they come, and turning them off here would only hide that.
//!
//! Everything changed is recorded in the returned [`HostGuard`] and undone when it drops.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use crate::policy::{RuleKind, RuleSpec};

/// Name of the only nftables tables Tollgate creates (`inet tollgate`, `netdev tollgate`).
pub const NFT_TABLE: &str = "tollgate";

/// What to prepare.
#[derive(Clone, Debug, Default)]
pub struct HostPlan {
    pub data_ifaces: Vec<String>,
    /// The data interfaces facing the protected subnet: nearly every frame on them is transit
    /// traffic, so their ingress chains look at the destination's type before the claims.
    pub inside_ifaces: Vec<String>,
    pub snat_addrs: Vec<Ipv4Addr>,
    pub port_min: u16,
    pub port_max: u16,
    /// The public side of every DNAT rule: its destinations and ports are the appliance's
    /// too, whether or not they fall inside the SNAT range, so the kernel must not answer them.
    pub dnat: Vec<DnatClaim>,
    /// Turn GRO/GSO/TSO/LRO off on the data interfaces with ethtool (restored at exit); false:
    /// leave them as they are (the default).
    pub offloads: bool,
    /// The closed host policy (`[host]`); None: the kernel answers what reaches it.
    pub host: Option<HostFilter>,
}

/// What the host's own stack may receive on the data interfaces when `[host] policy` is
/// closed: an `input` chain in the `inet` table accepts answers to its own connections
/// (conntrack), DHCP, IPv6 neighbour discovery, and the listed sources on the management
/// port, SSH and ping; everything else from a data interface is dropped and counted
/// (`host_closed`), so a scan of the appliance's addresses gets neither RSTs nor ICMP errors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFilter {
    /// Sources, and the listener's address (None: any of the host's) and port.
    pub management: Option<(Vec<Ipv4Net>, Option<Ipv4Addr>, u16)>,
    pub ssh_sources: Vec<Ipv4Net>,
    pub ping_sources: Vec<Ipv4Net>,
}

impl HostFilter {
    /// From the configuration's `[host]` and management listener address (a loopback
    /// listener needs no rule: loopback is not a data interface).
    pub fn new(p: &crate::config::HostPolicy, management: std::net::SocketAddr) -> HostFilter {
        let mgmt = match management {
            std::net::SocketAddr::V4(a) if !a.ip().is_loopback() => Some((
                p.management_sources.clone(),
                (!a.ip().is_unspecified()).then_some(*a.ip()),
                a.port(),
            )),
            _ => None,
        };
        HostFilter {
            management: mgmt.filter(|m| !m.0.is_empty()),
            ssh_sources: p.ssh_sources.clone(),
            ping_sources: p.ping_sources.clone(),
        }
    }
}

/// Name of the nftables counter of what the closed host policy dropped (`tollgate stats`).
pub const HOST_CLOSED_COUNTER: &str = "host_closed";

/// Asks the counter reader (see [`closed_drops`]) for a fresh reading; set while this
/// process's closed host policy is installed (one daemon per process; in-process test
/// appliances never install it).
type Reply = std::sync::mpsc::SyncSender<Option<u64>>;
static COUNTER_READER: std::sync::Mutex<Option<std::sync::mpsc::Sender<Reply>>> =
    std::sync::Mutex::new(None);

/// Reads the closed host policy's drop counter with `nft`. Control threads keep no
/// capabilities and nft needs CAP_NET_ADMIN, so one thread keeps it (and only it) and reads on
/// request: a process per `tollgate stats` or scrape, never on the packet path. Spawned by
/// [`prepare`] (before capabilities are dropped); it ends when the guard drops.
fn spawn_counter_reader() {
    let (tx, rx) = std::sync::mpsc::channel::<Reply>();
    let spawned = std::thread::Builder::new()
        .name("tg-host-counter".into())
        .spawn(move || {
            let _ = crate::io::caps::retain_on_this_thread(&crate::io::caps::MAIN_THREAD_KEEPS);
            while let Ok(reply) = rx.recv() {
                let _ = reply.send(read_counter());
            }
        });
    if spawned.is_ok() {
        if let Ok(mut g) = COUNTER_READER.lock() {
            *g = Some(tx);
        }
    }
}

fn read_counter() -> Option<u64> {
    let out = Command::new("nft")
        .args([
            "-j",
            "list",
            "counter",
            "inet",
            NFT_TABLE,
            HOST_CLOSED_COUNTER,
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["nftables"]
        .as_array()?
        .iter()
        .find_map(|o| o["counter"]["packets"].as_u64())
}

/// Packets the closed host policy dropped so far; None when the policy is not installed or
/// the counter cannot be read within 2 s.
pub fn closed_drops() -> Option<u64> {
    let tx = COUNTER_READER.lock().ok()?.clone()?;
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    tx.send(reply).ok()?;
    answer
        .recv_timeout(std::time::Duration::from_secs(2))
        .ok()
        .flatten()
}

/// `{ a, b }` of prefixes for nft.
fn nft_set(nets: &[Ipv4Net]) -> String {
    let v: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
    format!("{{ {} }}", v.join(", "))
}

/// The `input` chain of the closed host policy (see [`HostFilter`]).
fn input_chain(s: &mut String, f: &HostFilter, ifs: &str) {
    let _ = writeln!(s, "  counter {HOST_CLOSED_COUNTER} {{}}");
    let _ = writeln!(s, "  chain input {{");
    let _ = writeln!(
        s,
        "    type filter hook input priority filter; policy accept;"
    );
    // loopback and interfaces Tollgate does not serve (a management NIC) keep the kernel's way
    let _ = writeln!(s, "    iifname != {{ {ifs} }} accept");
    let _ = writeln!(s, "    ct state established,related accept");
    let _ = writeln!(s, "    udp sport 67 udp dport 68 accept");
    let _ = writeln!(
        s,
        "    icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert }} accept"
    );
    if let Some((src, addr, port)) = &f.management {
        let daddr = addr.map(|a| format!("ip daddr {a} ")).unwrap_or_default();
        let _ = writeln!(
            s,
            "    ip saddr {} {daddr}tcp dport {port} accept",
            nft_set(src)
        );
    }
    if !f.ssh_sources.is_empty() {
        let _ = writeln!(
            s,
            "    ip saddr {} tcp dport 22 accept",
            nft_set(&f.ssh_sources)
        );
    }
    if !f.ping_sources.is_empty() {
        let _ = writeln!(
            s,
            "    ip saddr {} icmp type echo-request accept",
            nft_set(&f.ping_sources)
        );
    }
    let _ = writeln!(s, "    counter name {HOST_CLOSED_COUNTER} drop");
    let _ = writeln!(s, "  }}");
}

/// A DNAT rule's public side, as the host tables drop it before the kernel answers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnatClaim {
    /// The rule's sources: from elsewhere the worker does not DNAT, the kernel keeps the port.
    pub sources: Vec<Ipv4Net>,
    pub destinations: Vec<Ipv4Net>,
    pub tcp: bool,
    pub udp: bool,
    /// Inclusive port ranges.
    pub ports: Vec<(u16, u16)>,
}

/// The DNAT claims of a rule list (TCP/UDP DNAT rules with destinations and ports).
pub fn dnat_claims(rules: &[RuleSpec]) -> Vec<DnatClaim> {
    let mut out: Vec<DnatClaim> = Vec::new();
    for r in rules.iter().filter(|r| r.kind == RuleKind::Dnat) {
        let c = DnatClaim {
            sources: r.sources.clone(),
            destinations: r.destinations.clone(),
            tcp: r.protocols.tcp,
            udp: r.protocols.udp,
            ports: r.ports.clone(),
        };
        if (c.tcp || c.udp)
            && !c.sources.is_empty()
            && !c.destinations.is_empty()
            && !c.ports.is_empty()
            && !out.contains(&c)
        {
            out.push(c);
        }
    }
    out
}

/// One nft match-and-drop line for a DNAT claim (`iif` limits it to the data interfaces in
/// the inet table, whose prerouting hook also sees loopback).
fn dnat_line(c: &DnatClaim, iif: &str) -> String {
    let set = |nets: &[Ipv4Net]| {
        nets.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let saddr = if c.sources.iter().any(|d| d.prefix_len() == 0) {
        String::new()
    } else {
        format!("ip saddr {{ {} }} ", set(&c.sources))
    };
    let daddr = if c.destinations.iter().any(|d| d.prefix_len() == 0) {
        // IPv4 only (the inet table sees IPv6 too)
        "meta nfproto ipv4 ".to_string()
    } else {
        format!("ip daddr {{ {} }} ", set(&c.destinations))
    };
    let l4 = match (c.tcp, c.udp) {
        (true, true) => "meta l4proto { tcp, udp }",
        (true, false) => "meta l4proto tcp",
        _ => "meta l4proto udp",
    };
    let ports = c
        .ports
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("    {iif}{saddr}{daddr}{l4} th dport {{ {ports} }} drop")
}

/// Why the host could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("tollgate run must run as root (it opens AF_PACKET sockets and changes sysctls and nftables)")]
    NotRoot,
    #[error("data interface {0} does not exist in this network namespace")]
    NoInterface(String),
    #[error("the nft command is missing (install the nftables package)")]
    NoNft,
    #[error("the nftables table {0} {NFT_TABLE} already exists: another tollgate runs in this namespace, or one was killed; remove it with `nft delete table {0} {NFT_TABLE}`")]
    TableExists(&'static str),
    #[error("nft refused the ruleset: {0}")]
    Nft(String),
    #[error("cannot set sysctl {path}: {err}")]
    Sysctl { path: String, err: std::io::Error },
}

/// Undoes exactly what [`prepare`] did, when dropped.
#[derive(Debug, Default)]
pub struct HostGuard {
    sysctls: Vec<(PathBuf, String)>,
    table: bool,
    /// The `netdev` ingress table was created (it is optional).
    pub ingress_table: bool,
    offloads: Vec<(String, String, bool)>,
    /// The closed host policy's input chain is installed.
    host_closed: bool,
    /// Things that could not be prepared but do not stop the appliance.
    pub warnings: Vec<String>,
}

/// True when the effective user is root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The drops of what the SNAT addresses receive on SNAT ports (return traffic) and of echo
/// replies to them, then, with `dnat_iif` (as in [`dnat_line`]), of every DNAT claim: the same
/// lines in both tables.
fn claim_lines(s: &mut String, plan: &HostPlan, dnat_iif: Option<&str>) {
    if !plan.snat_addrs.is_empty() {
        let addrs = plan
            .snat_addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let ports = format!("{}-{}", plan.port_min, plan.port_max);
        let _ = writeln!(s, "    ip daddr {{ {addrs} }} tcp dport {{ {ports} }} drop");
        let _ = writeln!(s, "    ip daddr {{ {addrs} }} udp dport {{ {ports} }} drop");
        let _ = writeln!(s, "    ip daddr {{ {addrs} }} icmp type echo-reply drop");
    }
    if let Some(iif) = dnat_iif {
        for c in &plan.dnat {
            let _ = writeln!(s, "{}", dnat_line(c, iif));
        }
    }
}

/// The nftables ruleset for `plan`.
pub fn nft_ruleset(plan: &HostPlan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table inet {NFT_TABLE} {{");
    let _ = writeln!(s, "  chain raw_prerouting {{");
    let _ = writeln!(
        s,
        "    type filter hook prerouting priority raw; policy accept;"
    );
    // DNAT claims only from the data interfaces: prerouting also sees loopback
    let ifs = plan
        .data_ifaces
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let iif = (!plan.data_ifaces.is_empty()).then(|| format!("iifname {{ {ifs} }} "));
    claim_lines(&mut s, plan, iif.as_deref());
    if let (Some(_), Some(iif)) = (&plan.host, &iif) {
        // The input chain's conntrack must not track transit traffic where the ingress drop
        // is missing (an interface with a master, an old kernel): the workers forward it.
        let _ = writeln!(
            s,
            "    {iif}meta nfproto ipv4 fib daddr type unicast notrack"
        );
    }
    let _ = writeln!(s, "  }}");
    if let (Some(f), false) = (&plan.host, plan.data_ifaces.is_empty()) {
        input_chain(&mut s, f, &ifs);
    }
    let _ = writeln!(s, "}}");
    s
}

/// The `netdev` ingress ruleset for `plan`: one chain per data interface. DHCP answers pass
/// first; then the drops, in the order that ends a typical frame soonest: on an inside
/// interface everything not addressed to this host (transit, nearly all its frames) before the
/// SNAT-port and DNAT claims, on the others (return traffic to the public addresses) the
/// claims first. Only the DHCP rule accepts, so the order changes the cost, not the verdict.
pub fn nft_ingress_ruleset(plan: &HostPlan) -> String {
    const TRANSIT: &str = "    meta protocol ip fib daddr type unicast drop";
    let mut s = String::new();
    let _ = writeln!(s, "table netdev {NFT_TABLE} {{");
    for (i, dev) in plan.data_ifaces.iter().enumerate() {
        let _ = writeln!(s, "  chain ingress_{i} {{");
        let _ = writeln!(
            s,
            "    type filter hook ingress device \"{dev}\" priority 0; policy accept;"
        );
        // a DHCP server's answer, also a unicast offer to an address this host does not hold
        // yet, before any drop
        let _ = writeln!(s, "    udp sport 67 udp dport 68 accept");
        let transit_first = plan.inside_ifaces.contains(dev);
        if transit_first {
            let _ = writeln!(s, "{TRANSIT}");
        }
        claim_lines(&mut s, plan, Some(""));
        if !transit_first {
            let _ = writeln!(s, "{TRANSIT}");
        }
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(s, "}}");
    s
}

fn nft(stdin: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes()).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// A warning when a DNAT rule claims ports of the kernel's own ephemeral range: the answers to
/// the host's own connections from those ports (package updates, the cloud's metadata service)
/// would be dropped with the claim.
fn ephemeral_overlap(plan: &HostPlan) -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text
        .split_whitespace()
        .filter_map(|v| v.parse::<u16>().ok());
    let (lo, hi) = (it.next()?, it.next()?);
    let hit: Vec<String> = plan
        .dnat
        .iter()
        .flat_map(|c| c.ports.iter())
        .filter(|&&(a, b)| a <= hi && b >= lo)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    (!hit.is_empty()).then(|| {
        format!(
            "DNAT ports {} overlap the kernel's ephemeral ports {lo}-{hi} \
             (net.ipv4.ip_local_port_range): answers to the host's own connections from them are \
             dropped with the DNAT claim; move one of the two",
            hit.join(", ")
        )
    })
}

/// Whether `iface` is enslaved to a master (bridge, bond, VRF) or has upper devices (macvlan,
/// ipvlan, VLAN): their traffic reaches its handler after the ingress hook, where a "not for
/// this host" drop would take it (sysfs of this network namespace).
fn has_master_or_upper(iface: &str) -> bool {
    let dir = PathBuf::from("/sys/class/net").join(iface);
    if dir.join("master").exists() {
        return true;
    }
    std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("upper_"))
        })
        .unwrap_or(false)
}

fn table_exists(family: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", family, NFT_TABLE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl HostGuard {
    fn set_sysctl(&mut self, rel: &str, value: &str) -> Result<(), HostError> {
        let path = PathBuf::from("/proc/sys").join(rel);
        let old = std::fs::read_to_string(&path).map_err(|err| HostError::Sysctl {
            path: rel.replace('/', "."),
            err,
        })?;
        let old = old.trim().to_string();
        if old != value {
            std::fs::write(&path, value).map_err(|err| HostError::Sysctl {
                path: rel.replace('/', "."),
                err,
            })?;
            self.sysctls.push((path, old));
        }
        Ok(())
    }

    /// Turns GRO, GSO, TSO and LRO off on `iface` where they are on (and not fixed), recording
    /// each one for [`HostGuard::restore`]; a warning for what cannot be changed.
    fn set_offloads(&mut self, iface: &str) {
        let out = match Command::new("ethtool").args(["-k", iface]).output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).to_string(),
            _ => {
                self.warnings.push(format!(
                    "ethtool unavailable: offloads on {iface} left as they are (install ethtool)"
                ));
                return;
            }
        };
        for (long, short) in [
            ("generic-receive-offload", "gro"),
            ("generic-segmentation-offload", "gso"),
            ("tcp-segmentation-offload", "tso"),
            ("large-receive-offload", "lro"),
        ] {
            let on = out
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{long}:")))
                .map(|l| {
                    let v = l.split(':').nth(1).unwrap_or("").trim();
                    v.starts_with("on") && !v.contains("[fixed]")
                })
                .unwrap_or(false);
            if on {
                let ok = Command::new("ethtool")
                    .args(["-K", iface, short, "off"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    self.offloads
                        .push((iface.to_string(), short.to_string(), true));
                } else {
                    self.warnings
                        .push(format!("could not turn {short} off on {iface}"));
                }
            }
        }
    }

    /// Undoes everything now (also done on drop).
    pub fn restore(&mut self) {
        for (iface, feat, _) in self.offloads.drain(..).rev() {
            let _ = Command::new("ethtool")
                .args(["-K", &iface, &feat, "on"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if std::mem::take(&mut self.host_closed) {
            // dropping the sender ends the reader thread
            if let Ok(mut g) = COUNTER_READER.lock() {
                *g = None;
            }
        }
        if self.table {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", NFT_TABLE])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.table = false;
        }
        if self.ingress_table {
            let _ = Command::new("nft")
                .args(["delete", "table", "netdev", NFT_TABLE])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.ingress_table = false;
        }
        for (path, old) in self.sysctls.drain(..).rev() {
            let _ = std::fs::write(&path, &old);
        }
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Checks the host and applies the plan; refuses with a clear error when it cannot.
pub fn prepare(plan: &HostPlan) -> Result<HostGuard, HostError> {
    if !is_root() {
        return Err(HostError::NotRoot);
    }
    for i in &plan.data_ifaces {
        if crate::io::afpacket::ifindex(i).is_err() {
            return Err(HostError::NoInterface(i.clone()));
        }
    }
    if !have("nft") {
        return Err(HostError::NoNft);
    }
    for family in ["inet", "netdev"] {
        if table_exists(family) {
            return Err(HostError::TableExists(family));
        }
    }
    let mut g = HostGuard::default();
    if let Some(w) = ephemeral_overlap(plan) {
        g.warnings.push(w);
    }
    nft(&nft_ruleset(plan)).map_err(HostError::Nft)?;
    g.table = true;
    if plan.host.is_some() {
        spawn_counter_reader();
        g.host_closed = true;
    }
    let stacked: Vec<&String> = plan
        .data_ifaces
        .iter()
        .filter(|i| has_master_or_upper(i))
        .collect();
    if !stacked.is_empty() {
        g.warnings.push(format!(
            "no ingress drop of transit frames: {} {} a bridge, bond, VRF, macvlan or ipvlan \
             above it, whose traffic the kernel delivers after the ingress hook",
            stacked
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if stacked.len() == 1 { "has" } else { "have" }
        ));
    } else if !plan.data_ifaces.is_empty() {
        match nft(&nft_ingress_ruleset(plan)) {
            Ok(()) => g.ingress_table = true,
            Err(e) => g.warnings.push(format!(
                "no ingress drop of transit frames (nft said: {e}): the kernel's IP layer drops them, \
                 which costs CPU per packet"
            )),
        }
    }
    g.set_sysctl("net/ipv4/ip_forward", "0")?;
    g.set_sysctl("net/ipv4/conf/all/rp_filter", "0")?;
    g.set_sysctl("net/ipv4/conf/all/send_redirects", "0")?;
    for i in &plan.data_ifaces {
        g.set_sysctl(&format!("net/ipv4/conf/{i}/rp_filter"), "0")?;
        g.set_sysctl(&format!("net/ipv4/conf/{i}/send_redirects"), "0")?;
    }
    // Only on request (`--offloads-off`): by default the interfaces keep the kernel's offloads.
    if plan.offloads {
        for i in &plan.data_ifaces {
            g.set_offloads(i);
        }
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_names_only_our_table() {
        let plan = HostPlan {
            data_ifaces: vec!["tg-in".into()],
            inside_ifaces: vec!["tg-in".into()],
            snat_addrs: vec!["203.0.113.1".parse().expect("ip")],
            port_min: 1024,
            port_max: 65535,
            dnat: vec![DnatClaim {
                sources: vec!["192.0.2.0/24".parse().expect("net")],
                destinations: vec!["203.0.113.1/32".parse().expect("net")],
                tcp: true,
                udp: false,
                ports: vec![(80, 80), (8000, 8010)],
            }],
            offloads: false,
            host: None,
        };
        let r = nft_ruleset(&plan);
        assert!(r.starts_with("table inet tollgate {"));
        assert!(r.contains("priority raw"));
        assert!(r.contains("ip daddr { 203.0.113.1 } tcp dport { 1024-65535 } drop"));
        assert!(r.contains(
            "iifname { \"tg-in\" } ip saddr { 192.0.2.0/24 } ip daddr { 203.0.113.1/32 } meta l4proto tcp th dport { 80, 8000-8010 } drop"
        ));
        assert!(r.contains("icmp type echo-reply drop"));
        assert!(
            !r.contains("chain input"),
            "no host policy: the kernel answers"
        );
    }

    #[test]
    fn the_closed_host_policy_accepts_what_it_names_and_drops_the_rest() {
        let net = |s: &str| s.parse::<Ipv4Net>().expect("net");
        let policy = crate::config::HostPolicy {
            management_sources: vec![net("168.63.129.16/32")],
            ssh_sources: vec![net("198.18.0.0/24")],
            ..Default::default()
        };
        let plan = HostPlan {
            data_ifaces: vec!["eth0".into()],
            host: Some(HostFilter::new(
                &policy,
                "10.42.8.4:9090".parse().expect("addr"),
            )),
            ..Default::default()
        };
        let r = nft_ruleset(&plan);
        let input = &r[r.find("chain input").expect("input chain")..];
        let lines: Vec<&str> = input.lines().map(str::trim).collect();
        let want = [
            "iifname != { \"eth0\" } accept",
            "ct state established,related accept",
            "udp sport 67 udp dport 68 accept",
            "ip saddr { 168.63.129.16/32 } ip daddr 10.42.8.4 tcp dport 9090 accept",
            "ip saddr { 198.18.0.0/24 } tcp dport 22 accept",
            "counter name host_closed drop",
        ];
        let mut at = 0;
        for w in want {
            let i = lines[at..]
                .iter()
                .position(|l| *l == w)
                .unwrap_or_else(|| panic!("{w} missing or out of order in\n{input}"));
            at += i + 1;
        }
        assert!(
            !input.contains("echo-request"),
            "no ping_sources: no ping rule"
        );
        assert!(r.contains("counter host_closed {}"));
        assert!(r.contains("fib daddr type unicast notrack"));
        // a loopback listener needs no rule; nor do empty management sources
        let lo = HostFilter::new(&policy, "127.0.0.1:9090".parse().expect("addr"));
        assert_eq!(lo.management, None);
        let none = HostFilter::new(
            &crate::config::HostPolicy::default(),
            "0.0.0.0:9090".parse().expect("addr"),
        );
        assert_eq!(none.management, None);
    }

    #[test]
    fn dnat_claims_come_from_tcp_udp_dnat_rules_only() {
        use crate::policy::{Action, RuleKind, RuleSpec};
        let mut d = RuleSpec::new("g", "c", "web", RuleKind::Dnat, Action::Allow);
        d.sources = vec!["0.0.0.0/0".parse().expect("net")];
        d.destinations = vec!["203.0.113.1/32".parse().expect("net")];
        d.protocols.tcp = true;
        d.ports = vec![(8080, 8080)];
        d.translated = Some(("198.18.0.20".parse().expect("ip"), Some(80)));
        let mut icmp_only = d.clone();
        icmp_only.name = "icmp".into();
        icmp_only.protocols.tcp = false;
        icmp_only.protocols.icmp = true;
        let mut net = d.clone();
        net.kind = RuleKind::Network;
        let claims = dnat_claims(&[d.clone(), d.clone(), icmp_only, net]);
        assert_eq!(claims.len(), 1, "{claims:?}");
        assert_eq!(claims[0].ports, vec![(8080, 8080)]);
        assert!(claims[0].tcp && !claims[0].udp);
    }

    #[test]
    fn ingress_ruleset_has_a_chain_per_interface() {
        let plan = HostPlan {
            data_ifaces: vec!["tg-in".into(), "tg-out".into()],
            inside_ifaces: vec!["tg-in".into()],
            snat_addrs: vec!["203.0.113.1".parse().expect("ip")],
            port_min: 1024,
            port_max: 65535,
            dnat: vec![DnatClaim {
                sources: vec!["0.0.0.0/0".parse().expect("net")],
                destinations: vec!["0.0.0.0/0".parse().expect("net")],
                tcp: true,
                udp: true,
                ports: vec![(443, 443)],
            }],
            offloads: false,
            host: None,
        };
        let r = nft_ingress_ruleset(&plan);
        assert!(r.starts_with("table netdev tollgate {"));
        assert!(r.contains(
            "chain ingress_0 {\n    type filter hook ingress device \"tg-in\" priority 0;"
        ));
        assert!(r.contains(
            "chain ingress_1 {\n    type filter hook ingress device \"tg-out\" priority 0;"
        ));
        assert_eq!(r.matches("fib daddr type unicast drop").count(), 2);
        // DHCP answers pass before any drop
        assert!(
            r.find("udp sport 67 udp dport 68 accept").expect("dhcp")
                < r.find(" drop").expect("drop")
        );
        assert_eq!(
            r.matches("ip daddr { 203.0.113.1 } udp dport { 1024-65535 } drop")
                .count(),
            2
        );
        // a DNAT rule on any destination claims its port on every address
        assert_eq!(
            r.matches("    meta nfproto ipv4 meta l4proto { tcp, udp } th dport { 443 } drop")
                .count(),
            2
        );
        // inside (transit): the fib lookup first; outside (return traffic to the public
        // address): the SNAT-port and DNAT drops first; DHCP before any drop on both
        let (inside, outside) = r.split_at(r.find("chain ingress_1").expect("chain 1"));
        let at = |chain: &str, what: &str| chain.find(what).unwrap_or_else(|| panic!("{what}"));
        assert!(at(inside, "fib daddr") < at(inside, "th dport"), "{inside}");
        assert!(
            at(inside, "fib daddr") < at(inside, "udp dport { 1024"),
            "{inside}"
        );
        assert!(
            at(outside, "th dport") < at(outside, "fib daddr"),
            "{outside}"
        );
        assert!(
            at(outside, "udp dport { 1024") < at(outside, "fib daddr"),
            "{outside}"
        );
        for chain in [inside, outside] {
            assert!(at(chain, "udp sport 67") < at(chain, " drop"), "{chain}");
        }
    }
}
