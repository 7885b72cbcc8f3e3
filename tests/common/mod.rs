//! Shared helpers for the end-to-end tests: root check, the lab engine config and a test
//! policy, and an in-process appliance running in the lab's `app` namespace.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ipnet::Ipv4Net;
use tollgate::conntrack::Timeouts;
use tollgate::control::daemon::{self, DaemonError, ServeOptions};
use tollgate::datapath::{DropReason, EngineConfig, Iface, IfaceRole, Worker};
use tollgate::io::runtime::Totals;
use tollgate::nat::{MappingMode, NatConfig};
use tollgate::policy::{AppProto, Decision, FlowQuery, Policy, RuleRef};
use tollgate_lab::lab::Lab;

/// True when the test may run; prints why it is skipped otherwise.
pub fn root_or_skip(test: &str) -> bool {
    if tollgate::control::host::is_root() {
        true
    } else {
        eprintln!("SKIPPED {test}: end-to-end tests need root (network namespaces, AF_PACKET)");
        false
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip literal")
}
fn net(s: &str) -> Ipv4Net {
    s.parse().expect("net literal")
}

/// The engine configuration matching the lab topology.
pub fn lab_engine_config() -> EngineConfig {
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
                addrs: vec![ip("203.0.113.1")],
                gateway: Some(ip("203.0.113.254")),
                connected: vec![net("203.0.113.0/24")],
                mtu: 1500,
            },
        ],
        routes: vec![],
        inside_prefixes: vec![net("198.18.0.0/15")],
        nat: NatConfig {
            public_addrs: vec![ip("203.0.113.1")],
            port_min: 1024,
            port_max: 65535,
            mapping: MappingMode::EndpointIndependent,
            per_host_quota: None,
            reuse_cooldown: 0,
            ..NatConfig::default()
        },
        timeouts: Timeouts::default(),
        max_flows_per_worker: 65536,
        mss_clamp: None,
        icmp_on_exhaustion: false,
        icmp_source: ip("198.18.0.1"),
    }
}

/// TEST ONLY (until the TOML loader lands): denies 198.51.100.0/24 (rule 3), DNATs
/// 203.0.113.1:8080/tcp to 198.18.0.20:80 (rule 7), allows other flows from 198.18.0.0/15.
#[derive(Debug, Default)]
pub struct LabTestPolicy;

impl Policy for LabTestPolicy {
    fn decide(&self, q: &FlowQuery) -> Decision {
        if q.dst == ip("203.0.113.1") && q.proto == 6 && q.dport == 8080 {
            return Decision::Dnat {
                rule: 7,
                to: ip("198.18.0.20"),
                to_port: 80,
            };
        }
        if net("198.51.100.0/24").contains(&q.dst) {
            return Decision::Deny { rule: Some(3) };
        }
        if net("198.18.0.0/15").contains(&q.src) {
            return Decision::Allow { rule: 1 };
        }
        Decision::Deny { rule: None }
    }
    fn decide_app(&self, _: &FlowQuery, _: AppProto, _: Option<&str>) -> Decision {
        Decision::Deny { rule: None }
    }
    fn describe(&self, _: u32) -> Option<RuleRef<'_>> {
        None
    }
    fn dnat_targets(&self) -> &[(Ipv4Addr, u16, u8)] {
        const TARGETS: [(Ipv4Addr, u16, u8); 1] = [(Ipv4Addr::new(198, 18, 0, 20), 80, 6)];
        &TARGETS
    }
}

/// The appliance running in-process, in the lab's `app` namespace, on its own threads.
pub struct Appliance {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<Totals, DaemonError>>>,
}

impl Appliance {
    /// Starts the daemon in `lab`'s appliance namespace and waits until it is ready.
    pub fn start(
        lab: &Lab,
        cfg: EngineConfig,
        policy: Arc<dyn Policy>,
        workers: usize,
    ) -> Appliance {
        Self::start_with(lab, cfg, policy, workers, None)
    }

    /// [`Appliance::start`], recording every frame to `pcap` when given.
    pub fn start_with(
        lab: &Lab,
        cfg: EngineConfig,
        policy: Arc<dyn Policy>,
        workers: usize,
        pcap: Option<std::path::PathBuf>,
    ) -> Appliance {
        let stop = Arc::new(AtomicBool::new(false));
        let ns = lab.ns("app");
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            tollgate::io::netns::enter(&ns)?;
            let engine = Arc::new(cfg.clone());
            let opts = ServeOptions {
                workers,
                pcap,
                verbose: true,
                ..ServeOptions::default()
            };
            daemon::serve(
                &cfg,
                &opts,
                |i, n| Worker::new(engine.clone(), policy.clone(), i, n, 42),
                s2,
            )
        });
        let mut a = Appliance {
            stop,
            handle: Some(handle),
        };
        if !lab.wait_appliance_ready(Duration::from_secs(10)) {
            let r = a.finish();
            panic!("appliance did not come up: {r:?}");
        }
        a
    }

    fn finish(&mut self) -> Result<Totals, String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take() {
            Some(h) => match h.join() {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("appliance thread panicked".into()),
            },
            None => Err("already stopped".into()),
        }
    }

    /// Stops the appliance and returns its counters (printed for the test log).
    pub fn stop(mut self) -> Totals {
        let t = self.finish().expect("appliance ran");
        eprint!("{}", daemon::format_counters(&t));
        t
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if self.handle.is_some() {
            let _ = self.finish();
        }
    }
}

/// A lab with servers up and neighbours warm.
pub fn lab() -> Lab {
    let mut lab = Lab::up(&tollgate_lab::lab::new_prefix()).expect("lab up");
    lab.start_servers().expect("lab servers");
    lab.warm_neighbours();
    lab
}

/// Starts `argv` (a `tollgate run` command line) as the lab's appliance, its output in
/// `appliance.log` of the lab's directory, and waits until every worker runs; panics with the
/// log when it does not come up. Returns its PID and the log's path.
pub fn start_appliance(lab: &mut Lab, argv: &[&str]) -> (u32, std::path::PathBuf) {
    let log = lab.dir.join("appliance.log");
    let pid = lab
        .spawn("appliance", "app", argv, &log)
        .expect("spawn tollgate run");
    assert!(
        lab.wait_spawned_appliance(Duration::from_secs(10)),
        "tollgate run did not come up: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (pid, log)
}

/// Runs `cmd` in namespace `ns` of `lab`: (success, stdout + stderr).
pub fn sh(lab: &Lab, ns: &str, cmd: &str) -> (bool, String) {
    let o = lab.sh(ns, cmd).expect("spawn sh");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

pub fn drops(t: &Totals, r: DropReason) -> u64 {
    t.drops[r as usize]
}
