//! The admin socket: a Unix stream socket (mode 0600 in a 0700 directory: root only) that
//! answers `tollgate flows`, `stats`, `snat`, `explain` and `reload`. One JSON request line in,
//! one JSON object out. Flow and SNAT questions go to the workers' inboxes and are answered
//! between batches on the workers' own threads; nothing here touches the packet path.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use super::registry::{ask_snat, Registry, ASK_TIMEOUT};
use super::reload::LiveConfig;
use crate::datapath::query::{Answer, FlowFilter, FlowInfo, Inboxes, Query};
use crate::datapath::DropReason;
use crate::policy::proto;

/// The admin socket's default path: [`crate::config::DEFAULT_ADMIN_SOCKET`], except in a named
/// network namespace (`ip netns add NAME`, found by its inode among `/run/netns/*`), where it is
/// `/run/tollgate/admin-NAME.sock`: one appliance per namespace (the lab, tests, several
/// instances on one host) each get their own, and `ip netns exec NAME tollgate flows` finds it.
pub fn default_socket_path() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self/ns/net").map(|m| (m.dev(), m.ino()));
    if let (Ok(me), Ok(dir)) = (me, std::fs::read_dir("/run/netns")) {
        for e in dir.flatten() {
            let same = std::fs::metadata(e.path()).is_ok_and(|m| (m.dev(), m.ino()) == me);
            if let (true, Some(name)) = (same, e.file_name().to_str()) {
                return PathBuf::from(format!("/run/tollgate/admin-{name}.sock"));
            }
        }
    }
    PathBuf::from(crate::config::DEFAULT_ADMIN_SOCKET)
}

/// What the admin socket serves from.
#[derive(Debug)]
pub struct AdminState {
    pub inboxes: Arc<Inboxes>,
    pub registry: Arc<Registry>,
    pub live: Arc<LiveConfig>,
    pub started: Instant,
}

/// Why the admin socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0} is held by another running tollgate (its admin socket answers)")]
    InUse(PathBuf),
    #[error("cannot create the admin socket {path}: {err}")]
    Io { path: PathBuf, err: io::Error },
}

/// A bound admin socket; the file is removed when this is dropped.
#[derive(Debug)]
pub struct AdminSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the admin socket at `path`: creates its directory (0700) if missing, replaces a stale
/// socket file left by a killed daemon, refuses one that a live daemon answers on.
pub fn bind(path: &Path) -> Result<AdminSocket, AdminError> {
    let ioerr = |err| AdminError::Io {
        path: path.to_path_buf(),
        err,
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(ioerr)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(ioerr)?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(AdminError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(ioerr)?;
    }
    let listener = UnixListener::bind(path).map_err(ioerr)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(ioerr)?;
    listener.set_nonblocking(true).map_err(ioerr)?;
    Ok(AdminSocket {
        path: path.to_path_buf(),
        listener,
    })
}

/// Serves requests on `sock` until `stop`, one connection at a time.
pub fn spawn(
    sock: AdminSocket,
    state: Arc<AdminState>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tollgate-admin".into())
        .spawn(move || {
            crate::io::caps::enter_control_thread();
            while !stop.load(Relaxed) {
                match sock.listener.accept() {
                    Ok((s, _)) => {
                        let _ = handle(s, &state);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            drop(sock);
        })
}

fn handle(s: UnixStream, st: &AdminState) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    // One request line of at most 64 KiB.
    BufReader::new(io::Read::take(&s, 64 * 1024)).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Value>(&line) {
        Ok(req) => {
            log::debug!("admin: request {req}");
            answer(&req, st).unwrap_or_else(|e| {
                log::debug!("admin: refused: {e}");
                json!({ "error": e })
            })
        }
        Err(e) => {
            log::debug!("admin: a request that is not JSON: {e}");
            json!({ "error": format!("the request is not JSON: {e}") })
        }
    };
    let mut w = &s;
    serde_json::to_writer(&mut w, &reply)?;
    w.write_all(b"\n")
}

fn str_arg<'a>(req: &'a Value, k: &str) -> Option<&'a str> {
    req.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn cidr(req: &Value, k: &str) -> Result<Option<Ipv4Net>, String> {
    match str_arg(req, k) {
        None => Ok(None),
        Some(s) => s
            .parse::<Ipv4Net>()
            .or_else(|_| s.parse::<Ipv4Addr>().map(Ipv4Net::from))
            .map(Some)
            .map_err(|_| format!("--{k} \"{s}\" is not an IPv4 address or prefix")),
    }
}

const STATES: [&str; 9] = [
    "syn_sent",
    "established",
    "closing",
    "time_wait",
    "closed",
    "udp",
    "icmp",
    "inspecting",
    "revoked",
];

fn proto_arg(s: &str) -> Result<u8, String> {
    match s {
        "tcp" => Ok(proto::TCP),
        "udp" => Ok(proto::UDP),
        "icmp" => Ok(proto::ICMP),
        o => Err(format!("protocol \"{o}\" is not tcp, udp or icmp")),
    }
}

/// Answers one request (also used by tests without a socket).
pub fn answer(req: &Value, st: &AdminState) -> Result<Value, String> {
    match str_arg(req, "cmd").unwrap_or("") {
        "stats" => Ok(stats(st)),
        "flows" => {
            let state = str_arg(req, "state").map(str::to_string);
            if let Some(s) = &state {
                if !STATES.contains(&s.as_str()) {
                    return Err(format!("state \"{s}\" is not one of {}", STATES.join(", ")));
                }
            }
            let filter = FlowFilter {
                src: cidr(req, "src")?,
                dst: cidr(req, "dst")?,
                state,
                proto: str_arg(req, "proto").map(proto_arg).transpose()?,
                limit: req.get("limit").and_then(Value::as_u64).unwrap_or(1000) as usize,
            };
            Ok(flows(st, filter))
        }
        "snat" => {
            let top = req.get("top").and_then(Value::as_u64).unwrap_or(10) as usize;
            Ok(snat(st, top))
        }
        "explain" => {
            let q = crate::tools::explain::parse_query(
                str_arg(req, "src").unwrap_or(""),
                str_arg(req, "dst").unwrap_or(""),
                str_arg(req, "proto").unwrap_or(""),
            )?;
            let l = st.live.loaded();
            let text = crate::tools::explain::explain(&l, &q, str_arg(req, "sni"));
            Ok(json!({ "text": text, "generation": st.live.cell.generation() }))
        }
        "reload" => {
            let r = st.live.reload();
            r.log(" (asked over the admin socket)");
            Ok(json!({ "ok": r.applied, "message": r.text() }))
        }
        "" => Err("the request names no \"cmd\"".into()),
        o => Err(format!(
            "unknown command \"{o}\" (flows, stats, snat, explain, reload)"
        )),
    }
}

/// Each data interface's I/O counters (`IoStats::FIELDS`, summed over the workers), as the
/// `io` list of `stats`: `[{"interface": "tg-in", "rx_oversize": 0, ...}, ...]`.
pub fn io_json(reg: &Registry) -> Value {
    reg.io_stats()
        .into_iter()
        .map(|(name, s)| {
            let mut o = serde_json::Map::new();
            o.insert("interface".into(), Value::String(name));
            for (k, v) in s.named() {
                o.insert(k.into(), v.into());
            }
            Value::Object(o)
        })
        .collect()
}

fn stats(st: &AdminState) -> Value {
    let ws = st.registry.all();
    let sum = |f: &dyn Fn(&crate::datapath::Counters) -> u64| ws.iter().map(|c| f(c)).sum::<u64>();
    let mut drops = BTreeMap::new();
    for r in DropReason::ALL {
        let v = sum(&|c| c.drop_count(*r));
        if v > 0 {
            drops.insert(r.as_str(), v);
        }
    }
    let workers: Vec<Value> = ws
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "worker": i,
                "rx_packets": c.rx_packets.load(Relaxed),
                "tx_packets": c.tx_packets.load(Relaxed),
                "flows": c.flows.load(Relaxed),
                "snat_busiest_slice_ratio": c.snat_util_ppm.load(Relaxed) as f64 / 1e6,
            })
        })
        .collect();
    json!({
        "uptime_secs": st.started.elapsed().as_secs(),
        "config": st.live.path.display().to_string(),
        "policy_generation": st.live.cell.generation(),
        "rx_packets": sum(&|c| c.rx_packets.load(Relaxed)),
        "rx_bytes": sum(&|c| c.rx_bytes.load(Relaxed)),
        "tx_packets": sum(&|c| c.tx_packets.load(Relaxed)),
        "tx_bytes": sum(&|c| c.tx_bytes.load(Relaxed)),
        "local_packets": sum(&|c| c.local.load(Relaxed)),
        "replies": sum(&|c| c.replies.load(Relaxed)),
        "flows": sum(&|c| c.flows.load(Relaxed)),
        "flows_created": sum(&|c| c.flows_created.load(Relaxed)),
        "flows_expired": sum(&|c| c.flows_expired.load(Relaxed)),
        "flows_removed": sum(&|c| c.flows_removed.load(Relaxed)),
        "snat_eim_collision_moved": sum(&|c| c.eim_collision_moved.load(Relaxed)),
        "snat_time_wait_reused": sum(&|c| c.snat_time_wait_reused.load(Relaxed)),
        "decision_events_suppressed": sum(&|c| c.events_suppressed.load(Relaxed)),
        "host_closed_drops": super::host::closed_drops(),
        "drops": drops,
        "io": io_json(&st.registry),
        "workers": workers,
    })
}

fn proto_str(p: u8) -> &'static str {
    match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::ICMP => "icmp",
        _ => "ip",
    }
}

fn flow_json(f: &FlowInfo) -> Value {
    let ep = |a: Ipv4Addr, p: u16| format!("{a}:{p}");
    json!({
        "worker": f.worker,
        "protocol": proto_str(f.orig.proto()),
        "state": f.state,
        "source": ep(f.orig.src(), f.orig.sport()),
        "destination": ep(f.orig.dst(), f.orig.dport()),
        // What the server sees as the client (SNAT) and who really answers (DNAT).
        "translated_source": ep(f.reply.dst(), f.reply.dport()),
        "translated_destination": ep(f.reply.src(), f.reply.sport()),
        "packets_out": f.packets[0],
        "packets_in": f.packets[1],
        "age_secs": f.age_secs,
        "expires_in_secs": f.expires_in_secs,
        "rule": f.rule,
    })
}

fn flows(st: &AdminState, filter: FlowFilter) -> Value {
    let limit = filter.limit;
    let (answers, missing) = st.inboxes.ask(&Query::Flows(filter), ASK_TIMEOUT);
    let mut all = Vec::new();
    let (mut matched, mut total) = (0, 0);
    for a in answers {
        if let Answer::Flows {
            flows,
            matched: m,
            total: t,
        } = a
        {
            all.extend(flows);
            matched += m;
            total += t;
        }
    }
    all.sort_by_key(|f| (f.orig.src(), f.orig.sport(), f.orig.dst(), f.orig.dport()));
    all.truncate(limit);
    json!({
        "flows": all.iter().map(flow_json).collect::<Vec<_>>(),
        "matched": matched,
        "total": total,
        "workers_not_answering": missing,
    })
}

fn snat(st: &AdminState, top: usize) -> Value {
    let (m, per, missing) = ask_snat(&st.inboxes, top);
    let ratio = |u: u32, s: u32| {
        if s == 0 {
            0.0
        } else {
            f64::from(u) / f64::from(s)
        }
    };
    let slices: Vec<Value> = m
        .slices
        .iter()
        .map(|s| {
            json!({
                "address": s.addr.to_string(),
                "protocol": proto_str(s.proto),
                "ports_used": s.used,
                "ports": s.size,
                "utilisation": ratio(s.used, s.size),
            })
        })
        .collect();
    let workers: Vec<Value> = per
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (u, s) = r
                .slices
                .iter()
                .fold((0, 0), |(u, s), x| (u + x.used, s + x.size));
            json!({ "worker": i, "ports_used": u, "ports": s })
        })
        .collect();
    json!({
        "addresses": slices,
        "workers": workers,
        "top_hosts": m.hosts.iter().map(|(h, n)| json!({"host": h.to_string(), "ports": n})).collect::<Vec<_>>(),
        "top_destinations": m.destinations.iter().map(|((a, p, pr), n)| json!({
            "destination": format!("{a}:{p}"), "protocol": proto_str(*pr), "flows": n
        })).collect::<Vec<_>>(),
        "destinations_census": {
            "exact": m.census.exact(),
            "flows_seen": m.census.flows_seen,
            "flows": m.census.flows,
            "slots_read": m.census.slots_read,
        },
        "workers_not_answering": missing,
    })
}

/// Client side: sends one request to the daemon's admin socket and reads the answer.
pub fn request(path: &Path, req: &Value) -> io::Result<Value> {
    let s = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach the admin socket {}: {e} (is `tollgate run` running, and are you root?)",
                path.display()
            ),
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = &s;
    serde_json::to_writer(&mut w, req)?;
    w.write_all(b"\n")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
