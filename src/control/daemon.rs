//! The `tollgate run` daemon: host preparation, the neighbour refresher, the worker threads on
//! AF_PACKET rings, clean shutdown on SIGTERM/SIGINT and the counters at exit.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::host::{self, HostError, HostPlan};
use crate::datapath::{DropReason, EngineConfig, IfaceRole};
use crate::io::afpacket::{AfPacketIo, AfPacketOptions, RxRingVersion};
use crate::io::neigh::Neighbours;
use crate::io::pcap::{PcapIo, PcapWriter};
use crate::io::runtime::{self, BusyPoll, Engine, LiveIoStats, RuntimeConfig, SpinMode, Totals};
use crate::io::Backend;

/// Options of `tollgate run` besides the configuration file.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Worker threads (0 = one per CPU).
    pub workers: usize,
    /// Record every received and transmitted frame to this classic pcap file.
    pub pcap: Option<PathBuf>,
    /// Turn GRO/GSO/TSO/LRO off on the data interfaces (restored at exit); false, the
    /// default: they keep the kernel's settings (`tollgate run --offloads-off` sets it).
    pub offloads: bool,
    /// The public side of the DNAT rules (filled from the configuration by
    /// [`run_from_file`]): the host tables keep the kernel from answering it.
    pub dnat: Vec<host::DnatClaim>,
    /// The host's own traffic on the data interfaces: closed except what it names
    /// (`[host]`, filled by [`run_from_file`]); None leaves the kernel answering as it would.
    pub host: Option<host::HostFilter>,
    pub af: AfPacketOptions,
    /// Log the startup line and the counters at exit.
    pub verbose: bool,
    /// Drop capabilities once the rings are open (workers keep none, main keeps NET_ADMIN).
    pub drop_caps: bool,
    /// The admin socket path, overriding the configuration's.
    pub admin_socket: Option<PathBuf>,
    /// Busy-poll window in microseconds; None: the configuration's (`run_from_file`), or
    /// [`runtime::DEFAULT_BUSY_POLL_US`].
    pub busy_poll_us: Option<u64>,
    /// What a busy-polling worker does between checks; None: as for `busy_poll_us`.
    pub busy_poll_mode: Option<SpinMode>,
    /// Where the workers publish their per-interface I/O counters while they run (for
    /// `tollgate stats`, `/metrics` and the warnings); sized for the workers and interfaces
    /// served. None: the counters are only in the totals at exit.
    pub live_io: Option<Arc<LiveIoStats>>,
    /// The packet I/O backend; None: auto.
    pub backend: Option<crate::io::Backend>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            workers: 0,
            pcap: None,
            offloads: false,
            dnat: Vec::new(),
            host: None,
            af: AfPacketOptions::default(),
            verbose: true,
            drop_caps: true,
            admin_socket: None,
            busy_poll_us: None,
            busy_poll_mode: None,
            live_io: None,
            backend: None,
        }
    }
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot prepare the host: {0}")]
    Host(#[from] HostError),
    #[error("cannot open the pcap file {path}: {err}")]
    Pcap { path: PathBuf, err: io::Error },
    #[error("packet I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("cannot load the configuration: {0}")]
    Config(String),
    #[error("backend af_xdp: {0}")]
    Xdp(String),
}

/// The host plan for an engine configuration.
pub fn plan_for(cfg: &EngineConfig, opts: &ServeOptions) -> HostPlan {
    HostPlan {
        data_ifaces: cfg.interfaces.iter().map(|i| i.name.clone()).collect(),
        inside_ifaces: cfg
            .interfaces
            .iter()
            .filter(|i| i.role == IfaceRole::Inside)
            .map(|i| i.name.clone())
            .collect(),
        snat_addrs: cfg.nat.public_addrs.clone(),
        port_min: cfg.nat.port_min,
        port_max: cfg.nat.port_max,
        dnat: opts.dnat.clone(),
        host: opts.host.clone(),
        offloads: opts.offloads,
    }
}

/// The one-line startup summary, as systemd's `STATUS=` shows it (the log has it without
/// `tollgate: `, which the text format adds: [`summary`]).
pub fn summary_line(cfg: &EngineConfig, workers: usize, backend: &str) -> String {
    format!("tollgate: {}", summary(cfg, workers, backend))
}

/// The startup summary: `running interfaces=... snat=... ports=... workers=... backend=...`.
pub fn summary(cfg: &EngineConfig, workers: usize, backend: &str) -> String {
    let ifs = cfg
        .interfaces
        .iter()
        .map(|i| format!("{}({:?})", i.name, i.role).to_lowercase())
        .collect::<Vec<_>>()
        .join(",");
    let snat = cfg
        .nat
        .public_addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "running interfaces={ifs} snat={snat} ports={}-{} workers={workers} backend={backend}",
        cfg.nat.port_min, cfg.nat.port_max
    )
}

/// The counters at exit, in order: rx/tx, every I/O counter ([`crate::io::IoStats::FIELDS`]),
/// then every non-zero drop reason (`drop.REASON`).
pub fn counters(t: &Totals) -> Vec<(String, u64)> {
    let r = &t.rt;
    let mut v: Vec<(String, u64)> = [
        ("rx_packets", r.rx_packets),
        ("rx_bytes", r.rx_bytes),
        ("tx_packets", r.tx_packets),
        ("tx_bytes", r.tx_bytes),
        ("forwarded", r.forwarded),
        ("replies", r.replies),
        ("local", r.local),
        ("held", r.held),
        ("dropped", r.dropped),
        ("flows", t.flows as u64),
        ("neighbour_queued", r.neighbour_queued),
        ("neighbour_miss", r.neighbour_miss),
        ("handoff_out", r.handoff_out),
        ("handoff_in", r.handoff_in),
        ("handoff_full", r.handoff_full),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    v.extend(t.io.named().map(|(name, n)| (name.to_string(), n)));
    for (i, reason) in DropReason::ALL.iter().enumerate() {
        if t.drops[i] > 0 {
            v.push((format!("drop.{}", reason.as_str()), t.drops[i]));
        }
    }
    v
}

/// The counters at exit, one `NAME VALUE` per line (as the text log shows them).
pub fn format_counters(t: &Totals) -> String {
    let mut s = String::new();
    for (name, v) in counters(t) {
        let _ = writeln!(s, "{name} {v}");
    }
    s
}

/// A flag set by SIGINT or SIGTERM.
pub fn stop_on_signals() -> io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    Ok(stop)
}

/// Prepares the host, runs the workers until `stop` is set, undoes the host changes and returns
/// the summed counters. `make_engine(i)` builds worker `i`'s engine on its own thread.
pub fn serve<E, FE>(
    cfg: &EngineConfig,
    opts: &ServeOptions,
    make_engine: FE,
    stop: Arc<AtomicBool>,
) -> Result<Totals, DaemonError>
where
    E: Engine,
    FE: Fn(usize, usize) -> E + Sync,
{
    let workers = if opts.workers == 0 {
        runtime::available_cpus()
    } else {
        opts.workers
    };
    let guard = host::prepare(&plan_for(cfg, opts))?;
    let ifaces: Vec<String> = cfg.interfaces.iter().map(|i| i.name.clone()).collect();
    let choice = match opts.backend {
        Some(b) => b,
        None => backend_from_env()?.unwrap_or_default(),
    };
    let xsk = match choice {
        Backend::AfPacket => None,
        Backend::AfXdp | Backend::Auto => {
            match attach_xdp(cfg, opts, workers, choice == Backend::Auto) {
                Ok(p) => Some(p),
                Err(e) if choice == Backend::AfXdp => return Err(DaemonError::Xdp(e)),
                Err(e) => {
                    log::info!("backend auto: AF_PACKET, because AF_XDP is not available: {e}");
                    None
                }
            }
        }
    };
    let backend = match &xsk {
        Some(x) => {
            let p = &x.programs;
            let modes: Vec<String> = p
                .iter()
                .map(|p| format!("{}:{}/{}q", p.iface, p.mode, p.queues))
                .collect();
            format!(
                "af_xdp(xdp {}, xsk rx, tpacket_v2 tx){}",
                modes.join(","),
                if opts.pcap.is_some() { "+pcap" } else { "" }
            )
        }
        None => format!(
            "af_packet({} rx, tpacket_v2 tx){}",
            match opts.af.rx_version {
                RxRingVersion::V2 => "tpacket_v2",
                RxRingVersion::V3 => "tpacket_v3",
            },
            if opts.pcap.is_some() { "+pcap" } else { "" }
        ),
    };
    if let (Some(x), Backend::Auto) = (&xsk, choice) {
        log::info!(
            "backend auto: AF_XDP, the XDP program attached to every data interface ({} mode)",
            x.programs
                .iter()
                .map(|p| p.mode)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for p in xsk.iter().flat_map(|x| x.programs.iter()) {
        if p.queues < workers as u32 {
            log::info!(
                "{}: {} receive queue(s) for {workers} workers: workers without a queue of it get its frames by hand-off",
                p.iface,
                p.queues
            );
        }
    }
    if opts.verbose {
        log::info!("{}", summary(cfg, workers, &backend));
        for w in &guard.warnings {
            log::warn!("{w}");
        }
    }
    // The engine forwards up to the configured MTU (and answers DF frames above it with
    // frag-needed); a device with a smaller one would drop what lies between (`tx_errors`).
    for i in &cfg.interfaces {
        if let Ok(dev) = crate::io::afpacket::mtu(&i.name) {
            if u32::from(i.mtu) > dev {
                log::warn!(
                    "interface {}: configured mtu {} is above the device's {dev}; frames between are dropped (tx_errors): set mtu = {dev}",
                    i.name, i.mtu
                );
            }
        }
    }
    let neigh_stop = Arc::new(AtomicBool::new(false));
    let (neigh, neigh_thread) = Neighbours::spawn(ifaces.clone(), neigh_stop.clone());
    let rt = RuntimeConfig {
        workers,
        drop_caps: opts.drop_caps,
        busy_poll: BusyPoll {
            window_ns: opts
                .busy_poll_us
                .unwrap_or(runtime::DEFAULT_BUSY_POLL_US)
                .saturating_mul(1_000),
            mode: opts.busy_poll_mode.unwrap_or(BusyPoll::default().mode),
        },
        live_io: opts.live_io.clone(),
        notices: opts.af.notices.clone(),
        ..RuntimeConfig::default()
    };
    // Return traffic straight to the worker owning its SNAT port, an inside host's flows to
    // one worker (no hand-off), unless the caller chose a program (or there is only one
    // worker, or no program fits the config).
    let mut af = opts.af.clone();
    af.fanout = workers > 1;
    af.xsk = xsk.clone();
    // The host's addresses as the XDP programs know them, kept current (DHCP may change them).
    let xdp_stop = Arc::new(AtomicBool::new(false));
    let xdp_refresh = xsk.clone().and_then(|x| {
        let stop = xdp_stop.clone();
        let drop_caps = opts.drop_caps;
        std::thread::Builder::new()
            .name("tg-xdp-addrs".into())
            .spawn(move || {
                // map updates go through the maps' descriptors: no capability needed
                if drop_caps {
                    let _ = crate::io::caps::drop_all_on_this_thread();
                }
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(250));
                    for p in &x.programs {
                        let _ = p.refresh();
                    }
                }
            })
            .ok()
    });
    if af.steering.is_none() {
        af.steering = steering_program(cfg, &[], workers);
    }
    let epoch = Instant::now();
    let make_engine = |i: usize| make_engine(i, workers);
    let result = match &opts.pcap {
        None => runtime::run(
            &rt,
            make_engine,
            |i| AfPacketIo::open_worker(&ifaces, &af, i),
            neigh,
            stop.clone(),
            epoch,
        ),
        Some(path) => {
            let w = PcapWriter::create(path).map_err(|err| DaemonError::Pcap {
                path: path.clone(),
                err,
            })?;
            let shared = Arc::new(Mutex::new(w));
            let r = runtime::run(
                &rt,
                make_engine,
                |i| {
                    AfPacketIo::open_worker(&ifaces, &af, i)
                        .map(|io| PcapIo::new(io, shared.clone()))
                },
                neigh,
                stop.clone(),
                epoch,
            );
            if let Ok(mut p) = shared.lock() {
                let _ = p.flush();
            }
            r
        }
    };
    neigh_stop.store(true, Ordering::Relaxed);
    let _ = neigh_thread.join();
    xdp_stop.store(true, Ordering::Relaxed);
    if let Some(t) = xdp_refresh {
        let _ = t.join();
    }
    // the XDP programs go (their links close) before the host's tables
    drop(af);
    drop(xsk);
    drop(guard);
    let reports = result?;
    Ok(runtime::totals(&reports))
}

/// `$TOLLGATE_BACKEND`, when set.
fn backend_from_env() -> Result<Option<Backend>, DaemonError> {
    match std::env::var("TOLLGATE_BACKEND") {
        Ok(v) if !v.is_empty() => Backend::parse(&v).map(Some).ok_or_else(|| {
            DaemonError::Config(format!(
                "TOLLGATE_BACKEND=\"{v}\" is not one of \"auto\", \"af_xdp\", \"af_packet\""
            ))
        }),
        _ => Ok(None),
    }
}

/// Loads and attaches the XDP program to every data interface, for `workers` workers.
///
/// With `zero_copy_only` (auto), an interface whose driver gives AF_XDP sockets copy mode only
/// (veth, generic XDP) is a reason not to: measured through veth, one TCP stream made 1.9 Gb/s
/// on AF_XDP against 13.8 on AF_PACKET (super-frames are cut before the program and every frame
/// is copied twice), while the packet rates were 1.1-1.6x AF_PACKET's (docs/io-lab.md).
fn attach_xdp(
    cfg: &EngineConfig,
    opts: &ServeOptions,
    workers: usize,
    zero_copy_only: bool,
) -> Result<crate::io::afpacket::XskPlan, String> {
    if !crate::io::xdp::built() {
        return Err("this binary was built without the XDP program (clang was missing)".into());
    }
    let mut claims = Vec::new();
    let any: ipnet::Ipv4Net = "0.0.0.0/0".parse().expect("a prefix");
    for c in &opts.dnat {
        let srcs = if c.sources.is_empty() {
            vec![any]
        } else {
            c.sources.clone()
        };
        for s in &srcs {
            for d in &c.destinations {
                for &(lo, hi) in &c.ports {
                    claims.push(crate::io::xdp::Claim::new(*s, *d, c.tcp, c.udp, lo, hi));
                }
            }
        }
    }
    let plan = crate::io::xdp::XdpPlan {
        snat: cfg.nat.public_addrs.clone(),
        port_min: cfg.nat.port_min,
        port_max: cfg.nat.port_max,
        claims,
    };
    // a chunk holds the kernel's XDP headroom and one frame (Ethernet, one VLAN tag, the MTU)
    let room = crate::io::afxdp::CHUNK - 256 - 18;
    for i in &cfg.interfaces {
        let mtu = crate::io::afpacket::mtu(&i.name).unwrap_or(0);
        if mtu > room {
            return Err(format!(
                "{} has mtu {mtu}; AF_XDP chunks take frames of mtu {room} at most",
                i.name
            ));
        }
    }
    let mut programs = Vec::new();
    for i in &cfg.interfaces {
        programs.push(Arc::new(crate::io::xdp::XdpProgram::attach(
            &i.name, &plan,
        )?));
    }
    if zero_copy_only {
        for i in &cfg.interfaces {
            // a socket bound and closed at once: the driver's answer to "zero-copy?"
            let idx = crate::io::afpacket::ifindex(&i.name).map_err(|e| e.to_string())?;
            let probe = crate::io::afxdp::Xsk::open(idx, 0)
                .map_err(|e| format!("{}: an AF_XDP socket: {e}", i.name))?;
            if !probe.zerocopy {
                return Err(format!(
                    "{} offers AF_XDP in copy mode only (its driver has no zero-copy): super-frames \
                     would reach the program cut into frames and every frame be copied twice \
                     (one TCP stream through veth: 1.9 Gb/s against 13.8 on AF_PACKET); \
                     backend = \"af_xdp\" takes it anyway",
                    i.name
                ));
            }
        }
    }
    Ok(crate::io::afpacket::XskPlan { programs, workers })
}

/// The fanout's steering program ([`crate::io::steer`]) for `cfg`, `workers` workers and the
/// policy's DNAT targets: SNAT return traffic to its port's owner, DNAT replies to worker 0,
/// an inside host's other frames by a hash of its address (the engine's `owner_of` agrees).
pub fn steering_program(
    cfg: &EngineConfig,
    dnat_targets: &[(std::net::Ipv4Addr, u16, u8)],
    workers: usize,
) -> Option<Vec<crate::io::steer::Insn>> {
    crate::io::steer::Steering {
        public_addrs: cfg.nat.public_addrs.clone(),
        port_min: cfg.nat.port_min,
        port_max: cfg.nat.port_max,
        workers,
        inside: cfg.inside_prefixes.clone(),
        exempt: cfg.nat.exempt.clone(),
        dnat_targets: dnat_targets.to_vec(),
        inside_key: crate::io::steer::InsideKey::Addr,
    }
    .program()
}

/// Loads the TOML configuration (`tollgate::config::load_file`); warnings are logged, and an
/// invalid file yields every error with FILE:LINE:COL.
pub fn load_config(path: &std::path::Path) -> Result<crate::config::Loaded, DaemonError> {
    match crate::config::load_file(path) {
        Ok(l) => {
            for w in &l.warnings {
                super::logging::config_warning(w);
            }
            Ok(l)
        }
        Err(e) => {
            let mut msg = e.to_string();
            for d in e.errors().iter().chain(e.warnings()) {
                msg.push_str(&format!("\n  {d}"));
            }
            Err(DaemonError::Config(msg))
        }
    }
}

/// Decision events logged per worker and second; beyond it they are counted as suppressed.
pub const DECISION_LOG_RATE: u32 = 2000;

/// `tollgate run`: loads the configuration, serves until SIGTERM/SIGINT, prints the counters.
pub fn run_from_file(
    path: &std::path::Path,
    mut opts: ServeOptions,
    workers_override: Option<usize>,
) -> Result<Totals, DaemonError> {
    let loaded = load_config(path)?;
    let stop = stop_on_signals()?;
    opts.dnat = host::dnat_claims(loaded.policy.rules());
    opts.host = loaded
        .host
        .closed
        .then(|| host::HostFilter::new(&loaded.host, loaded.management));
    opts.workers = workers_override.unwrap_or(loaded.workers);
    // the command line's busy-poll settings win over the file's
    opts.busy_poll_us = opts
        .busy_poll_us
        .or(Some(loaded.busy_poll.window_ns / 1_000));
    opts.busy_poll_mode = opts.busy_poll_mode.or(Some(loaded.busy_poll.mode));
    // the command line's backend, then $TOLLGATE_BACKEND, then the file's
    if opts.backend.is_none() {
        opts.backend = Some(backend_from_env()?.unwrap_or(loaded.backend));
    }
    let engine = Arc::new(loaded.engine.clone());
    let policy: Arc<dyn crate::policy::Policy> = loaded.policy.clone();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed);
    let workers = if opts.workers == 0 {
        runtime::available_cpus()
    } else {
        opts.workers
    };
    if opts.af.steering.is_none() {
        // with the DNAT targets, which `serve` does not know
        let targets = crate::policy::Policy::dnat_targets(&*policy);
        opts.af.steering = steering_program(&loaded.engine, targets, workers);
    }
    let registry = super::registry::Registry::new(workers);
    // The workers publish their I/O counters here; the control threads read them.
    let live_io = Arc::new(LiveIoStats::new(workers, loaded.engine.interfaces.len()));
    opts.live_io = Some(live_io.clone());
    registry.set_live_io(live_io);
    registry.describe(
        loaded
            .engine
            .interfaces
            .iter()
            .map(|i| i.name.clone())
            .collect(),
        loaded.engine.nat.public_addrs.clone(),
    );
    let mgmt_stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    // The resolver's ports may be below 1024 (the default ones are): bind them while
    // capabilities are held.
    let dns = loaded.dns.clone();
    let resolver = if !dns.servers.is_empty() {
        match super::dns::Resolver::bind(&dns) {
            Ok(r) => {
                log_resolver_ports(&dns, &r);
                Some(r)
            }
            Err(e) => {
                log::warn!(
                    "no resolver on source ports {}-{}: {e}; destination FQDNs stay unresolved",
                    dns.source_ports.start(),
                    dns.source_ports.end()
                );
                None
            }
        }
    } else {
        None
    };
    // Control threads keep no capability: what they need (sockets) is bound before they start.
    crate::io::caps::control_threads_drop(opts.drop_caps);
    match super::mgmt::spawn(loaded.management, registry.clone(), mgmt_stop.clone()) {
        Ok(h) => threads.push(h),
        Err(e) => {
            log::warn!("no management endpoint on {}: {e}", loaded.management);
        }
    }
    let cell = crate::datapath::updates::PolicyCell::new(policy.clone());
    let admin_path = opts
        .admin_socket
        .clone()
        .or_else(|| loaded.admin_socket.clone())
        .unwrap_or_else(super::admin::default_socket_path);
    let decision_log = loaded.decision_log;
    let live = super::reload::LiveConfig::new(path.to_path_buf(), loaded, cell.clone());
    match super::admin::bind(&admin_path) {
        Ok(sock) => {
            let st = Arc::new(super::admin::AdminState {
                inboxes: registry.inboxes.clone(),
                registry: registry.clone(),
                live: live.clone(),
                started: Instant::now(),
            });
            threads.push(super::admin::spawn(sock, st, mgmt_stop.clone())?);
        }
        Err(e) => log::warn!("no admin socket: {e}"),
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
    if let Some(r) = resolver {
        threads.push(super::dns::spawn(live.clone(), r, dns, mgmt_stop.clone())?);
    }
    threads.push(super::reload::spawn(live, hup, mgmt_stop.clone())?);
    threads.push(super::iowatch::spawn(
        registry.clone(),
        opts.af.notices.clone(),
        mgmt_stop.clone(),
    )?);
    let rings: super::decision_log::Rings = Arc::default();
    if decision_log {
        threads.push(super::decision_log::spawn(
            rings.clone(),
            registry.clone(),
            cell.clone(),
            Box::new(io::stdout()),
            mgmt_stop.clone(),
        )?);
    }
    let notifier = match super::notify::Notifier::from_env() {
        Ok(n) => n,
        Err(e) => {
            log::warn!("cannot reach $NOTIFY_SOCKET: {e}");
            None
        }
    };
    threads.push(super::notify::spawn(
        notifier,
        registry.clone(),
        summary_line(&engine, workers, "af_packet"),
        mgmt_stop.clone(),
    )?);
    let ledger = std::sync::OnceLock::new();
    let totals = serve(
        &engine,
        &opts,
        |i, n| {
            // The flow and mapping tables are built on the worker's own thread (its NUMA
            // node) and advised to huge pages: at a million flows, 4 KiB pages miss the TLB on
            // nearly every lookup.
            let mut w = crate::datapath::Worker::with_advice(
                engine.clone(),
                policy.clone(),
                i,
                n,
                seed,
                Some(&crate::io::mem::advise_hugepages),
            );
            if n > 1 {
                // One ledger for all workers: a dry slice borrows the others' free ports.
                w.share_ports(
                    ledger
                        .get_or_init(|| Arc::new(crate::nat::PortLedger::new(&engine.nat, n)))
                        .clone(),
                );
            }
            w.follow_policy(cell.clone());
            registry.register(w.counters().clone());
            let inbox = crate::datapath::query::Inbox::new();
            registry.inboxes.register(inbox.clone());
            w.set_inbox(inbox);
            if decision_log {
                let (sink, ring) = crate::datapath::events::channel(8192, DECISION_LOG_RATE);
                w.set_event_sink(sink);
                if let Ok(mut r) = rings.lock() {
                    r.push(ring);
                }
            }
            w
        },
        stop,
    );
    mgmt_stop.store(true, Ordering::Relaxed);
    for h in threads {
        let _ = h.join();
    }
    let totals = totals?;
    if opts.verbose {
        super::logging::log_with_fields(
            log::Level::Info,
            module_path!(),
            format_args!("counters at exit"),
            &counters(&totals),
        );
    }
    Ok(totals)
}

/// Says which source ports the resolver got: the range less the ports other sockets held.
fn log_resolver_ports(dns: &crate::config::DnsSettings, r: &super::dns::Resolver) {
    let udp = r.udp_ports();
    let (lo, hi) = (*dns.source_ports.start(), *dns.source_ports.end());
    let skipped: Vec<String> = dns
        .source_ports
        .clone()
        .filter(|p| !udp.contains(p))
        .map(|p| p.to_string())
        .collect();
    let tcp: Vec<String> = r.tcp_ports().iter().map(|p| p.to_string()).collect();
    log::info!(
        target: "tollgate::control::dns",
        "dns: queries leave from {} random UDP source ports of {lo}-{hi}; truncated answers are retried over TCP from port(s) {}",
        udp.len(),
        if tcp.is_empty() { "none".to_string() } else { tcp.join(", ") }
    );
    if !skipped.is_empty() {
        log::warn!(
            target: "tollgate::control::dns",
            "dns: {} port(s) of {lo}-{hi} are held by other sockets and not used: {}",
            skipped.len(),
            skipped.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::IoStats;

    #[test]
    fn the_exit_counters_name_every_io_counter() {
        let t = Totals {
            rt: runtime::RtStats::default(),
            io: IoStats {
                rx_oversize: 3,
                link_errors: 2,
                ..IoStats::default()
            },
            drops: [0; DropReason::COUNT],
            flows: 0,
        };
        let s = format_counters(&t);
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines.contains(&"rx_oversize 3"), "{s}");
        assert!(lines.contains(&"link_errors 2"), "{s}");
        for (name, _) in IoStats::FIELDS {
            assert_eq!(
                lines
                    .iter()
                    .filter(|l| l.starts_with(&format!("{name} ")))
                    .count(),
                1,
                "{name}: {s}"
            );
        }
    }
}
