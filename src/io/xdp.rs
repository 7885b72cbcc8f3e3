//! The XDP program of the `af_xdp` backend (its source: `src/io/xdp/tollgate.bpf.c`, built by
//! build.rs with clang), loaded with aya and attached to each data interface through a BPF
//! link.
//!
//! A BPF link belongs to its file descriptor: when the daemon exits, also by SIGKILL, the
//! kernel closes it and the program is gone from the interface, so no stale program can keep
//! redirecting frames to sockets nobody reads. A program attached the older way (netlink, which
//! outlives its process) under our name is removed at the next start ([`clear_stale`]).
//!
//! What the program needs from the configuration (the host's addresses, the SNAT addresses
//! and port range, the DNAT claims) is written into its maps at attach; [`XdpProgram::refresh`]
//! rewrites the address map (addresses come and go with DHCP).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::process::Command;
use std::sync::Mutex;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;

/// The program as build.rs compiled it (empty when clang was missing at build time).
#[cfg(tollgate_xdp)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tollgate.bpf.o"));
#[cfg(not(tollgate_xdp))]
static OBJECT: &[u8] = &[];

/// The program's name, as `ip link` shows it.
pub const PROGRAM: &str = "tollgate_xdp";

/// Most DNAT claims the program checks (`MAX_CLAIMS` in the C source).
pub const MAX_CLAIMS: usize = 64;

const ADDR_LOCAL: u32 = 1;
const ADDR_SNAT: u32 = 2;
const COUNT_NO_SOCKET: u32 = 0;

/// Whether this binary carries the XDP program.
pub fn built() -> bool {
    !OBJECT.is_empty()
}

/// A DNAT rule's claim on (source net, destination net, protocols, port range), as the program
/// matches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Claim {
    dst: u32,
    dst_mask: u32,
    src: u32,
    src_mask: u32,
    lo: u16,
    hi: u16,
    protos: u32,
}

// SAFETY: a plain `repr(C)` struct of integers with no padding (4 x u32, 2 x u16, u32 = 24
// bytes, as `struct claim` in the C source): any bit pattern is valid.
unsafe impl aya::Pod for Claim {}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Conf {
    port_min: u16,
    port_max: u16,
    n_claims: u32,
}

// SAFETY: as for `Claim`: `repr(C)`, integers only, no padding (2 x u16 + u32 = 8 bytes).
unsafe impl aya::Pod for Conf {}

fn be(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

fn mask(len: u8) -> u32 {
    let m = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    u32::from_ne_bytes(m.to_be_bytes())
}

impl Claim {
    /// A claim on `dst` from `src` for TCP and/or UDP ports `lo..=hi`.
    pub fn new(
        src: ipnet::Ipv4Net,
        dst: ipnet::Ipv4Net,
        tcp: bool,
        udp: bool,
        lo: u16,
        hi: u16,
    ) -> Claim {
        Claim {
            dst: be(dst.network()),
            dst_mask: mask(dst.prefix_len()),
            src: be(src.network()),
            src_mask: mask(src.prefix_len()),
            lo,
            hi,
            protos: u32::from(tcp) | (u32::from(udp) << 1),
        }
    }
}

/// What the program is told of the configuration.
#[derive(Clone, Debug, Default)]
pub struct XdpPlan {
    pub snat: Vec<Ipv4Addr>,
    pub port_min: u16,
    pub port_max: u16,
    pub claims: Vec<Claim>,
}

/// The program attached to one interface, with its maps.
pub struct XdpProgram {
    pub iface: String,
    /// "driver" (native XDP) or "generic" (the kernel's skb path, any device).
    pub mode: &'static str,
    /// Receive queues of the interface: one socket per queue.
    pub queues: u32,
    plan: XdpPlan,
    xsks: Mutex<XskMap<MapData>>,
    addrs: Mutex<HashMap<MapData, u32, u32>>,
    counts: PerCpuArray<MapData, u64>,
    // Last: dropping it closes the link, which detaches the program.
    _ebpf: Ebpf,
}

impl std::fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpProgram")
            .field("iface", &self.iface)
            .field("mode", &self.mode)
            .field("queues", &self.queues)
            .finish()
    }
}

fn e<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |err| format!("{what}: {err}")
}

impl XdpProgram {
    /// Loads the program, fills its maps from `plan` and the host's addresses, and attaches it
    /// to `iface` (native mode, else generic).
    pub fn attach(iface: &str, plan: &XdpPlan) -> Result<XdpProgram, String> {
        if !built() {
            return Err("this binary was built without the XDP program (clang was missing)".into());
        }
        clear_stale(iface)?;
        let mut ebpf = Ebpf::load(OBJECT).map_err(e("cannot load the XDP program"))?;
        let mut conf: Array<MapData, Conf> =
            Array::try_from(ebpf.take_map("conf").ok_or("no map conf")?).map_err(e("conf"))?;
        if plan.claims.len() > MAX_CLAIMS {
            return Err(format!(
                "{} DNAT claims (source x destination x port range), more than the XDP program's {MAX_CLAIMS}",
                plan.claims.len()
            ));
        }
        let mut claims: Array<MapData, Claim> =
            Array::try_from(ebpf.take_map("claims").ok_or("no map claims")?)
                .map_err(e("claims"))?;
        for (i, c) in plan.claims.iter().enumerate() {
            claims.set(i as u32, c, 0).map_err(e("claims"))?;
        }
        conf.set(
            0,
            Conf {
                port_min: plan.port_min,
                port_max: plan.port_max,
                n_claims: plan.claims.len() as u32,
            },
            0,
        )
        .map_err(e("conf"))?;
        let addrs: HashMap<MapData, u32, u32> =
            HashMap::try_from(ebpf.take_map("addrs").ok_or("no map addrs")?).map_err(e("addrs"))?;
        let xsks: XskMap<MapData> =
            XskMap::try_from(ebpf.take_map("xsks").ok_or("no map xsks")?).map_err(e("xsks"))?;
        let counts: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(ebpf.take_map("counts").ok_or("no map counts")?)
                .map_err(e("counts"))?;
        let me = XdpProgram {
            iface: iface.to_string(),
            mode: "driver",
            queues: super::afpacket::rx_queues(iface),
            plan: plan.clone(),
            xsks: Mutex::new(xsks),
            addrs: Mutex::new(addrs),
            counts,
            _ebpf: ebpf,
        };
        me.refresh().map_err(e("the host's addresses"))?;
        let mut me = me;
        let prog: &mut Xdp = me
            ._ebpf
            .program_mut(PROGRAM)
            .ok_or("no program tollgate_xdp")?
            .try_into()
            .map_err(e("program"))?;
        prog.load()
            .map_err(e("the kernel refused the XDP program"))?;
        if let Err(native) = prog.attach(iface, XdpMode::Driver) {
            prog.attach(iface, XdpMode::Skb).map_err(|generic| {
                format!("cannot attach to {iface}: native: {native}; generic: {generic}")
            })?;
            me.mode = "generic";
        }
        Ok(me)
    }

    /// Directs the frames of receive queue `queue` to the socket `fd`.
    pub fn register(&self, queue: u32, fd: RawFd) -> io::Result<()> {
        let mut m = self
            .xsks
            .lock()
            .map_err(|_| io::Error::other("xsks map poisoned"))?;
        m.set(queue, fd, 0)
            .map_err(|err| io::Error::other(format!("{}: XSK map: {err}", self.iface)))
    }

    /// Frames for a worker that arrived on a queue without a socket (dropped), so far.
    pub fn no_socket_drops(&self) -> u64 {
        self.counts
            .get(&COUNT_NO_SOCKET, 0)
            .map_or(0, |v| v.iter().sum())
    }

    /// Rewrites the address map from the host's IPv4 addresses now (and their broadcasts).
    pub fn refresh(&self) -> io::Result<()> {
        let local = local_addrs()?;
        let mut m = self
            .addrs
            .lock()
            .map_err(|_| io::Error::other("addrs map poisoned"))?;
        let old: Vec<u32> = m.keys().filter_map(Result::ok).collect();
        let mut want: Vec<(u32, u32)> = local
            .iter()
            .map(|&a| {
                let snat = if self.plan.snat.contains(&a) {
                    ADDR_SNAT
                } else {
                    0
                };
                (be(a), ADDR_LOCAL | snat)
            })
            .collect();
        want.sort_unstable();
        want.dedup_by_key(|x| x.0);
        for (k, v) in &want {
            m.insert(k, v, 0).map_err(io::Error::other)?;
        }
        for k in old {
            if !want.iter().any(|(w, _)| *w == k) {
                let _ = m.remove(&k);
            }
        }
        Ok(())
    }
}

/// The host's IPv4 addresses, broadcast addresses included, in this network namespace.
pub fn local_addrs() -> io::Result<Vec<Ipv4Addr>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned, live until freeifaddrs.
        let ifa = unsafe { &*p };
        for sa in [ifa.ifa_addr, ifa.ifa_ifu] {
            if sa.is_null() {
                continue;
            }
            // SAFETY: a non-null sockaddr of the list; its family says how to read it.
            if unsafe { (*sa).sa_family } as i32 == libc::AF_INET {
                // SAFETY: an AF_INET sockaddr is a sockaddr_in.
                let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
                let a = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                // ifa_ifu is the peer of a point-to-point link, not ours: only its broadcast
                if sa == ifa.ifa_ifu && ifa.ifa_flags & libc::IFF_BROADCAST as u32 == 0 {
                    continue;
                }
                out.push(a);
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Removes a `tollgate_xdp` program left attached to `iface` the old way (netlink), which
/// outlives its process. One attached through a link cannot be removed so (the kernel says
/// busy): its process is alive, and the attach then fails saying so.
pub fn clear_stale(iface: &str) -> Result<(), String> {
    let Some(name) = attached_program(iface) else {
        return Ok(());
    };
    if name != PROGRAM {
        return Err(format!(
            "{iface} already has an XDP program ({name}); tollgate does not replace another's"
        ));
    }
    let mut last = String::new();
    for mode in ["xdp", "xdpgeneric"] {
        let out = Command::new("ip")
            .args(["link", "set", "dev", iface, mode, "off"])
            .output()
            .map_err(|err| format!("ip: {err}"))?;
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if attached_program(iface).is_none() {
            return Ok(());
        }
    }
    Err(format!(
        "{iface} has {PROGRAM} attached by a running process (another tollgate?): {last}"
    ))
}

/// The name of the XDP program attached to `iface`, if any (`ip -d -j link show`).
pub fn attached_program(iface: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", iface])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let xdp = v.get(0)?.get("xdp")?;
    let prog = xdp.get("prog").or_else(|| {
        xdp.get("attached")
            .and_then(|a| a.get(0))
            .and_then(|a| a.get("prog"))
    })?;
    Some(prog.get("name")?.as_str()?.to_string())
}
