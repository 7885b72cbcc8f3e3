//! Shared helpers for the end-to-end tests: root check, the lab engine config and a test
//! policy, and an in-process appliance running in the lab's `app` namespace.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tollgate::control::daemon::{self, DaemonError, ServeOptions};
use tollgate::datapath::{DropReason, EngineConfig};
use tollgate::io::runtime::Totals;
use tollgate::nat::NatConfig;
use tollgate::policy::{Policy, Ruleset};
use tollgate_lab::lab::Lab;

#[path = "../engine_util/kit.rs"]
mod kit;
pub use kit::WorkerKit;

/// True when the test may run; prints why it is skipped otherwise.
pub fn root_or_skip(test: &str) -> bool {
    if tollgate::control::host::is_root() {
        true
    } else {
        eprintln!("SKIPPED {test}: end-to-end tests need root (network namespaces, AF_PACKET)");
        false
    }
}

/// The engine configuration matching the lab topology: the kit's, with the daemon's defaults
/// for the flow limit and the SNAT exemptions.
pub fn lab_engine_config() -> EngineConfig {
    let mut c = kit::lab_engine_config();
    c.max_flows_per_worker = 65536;
    c.nat.exempt = NatConfig::default().exempt;
    c
}

/// Denies 198.51.100.0/24 (rule "no-198-51-100"), DNATs 203.0.113.1:8080/tcp to
/// 198.18.0.20:80 (rule "web"), allows other flows from 198.18.0.0/15 (rule "inside").
pub const LAB_RULES: &str = r#"
[[group]]
name = "lab"
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
  name = "blocked"
  priority = 150
  kind = "network"
  action = "deny"

    [[group.collection.rule]]
    name = "no-198-51-100"
    sources = ["*"]
    destinations = ["198.51.100.0/24"]
    protocols = ["any"]
    destination_ports = ["*"]

  [[group.collection]]
  name = "egress"
  priority = 200
  kind = "network"
  action = "allow"

    [[group.collection.rule]]
    name = "inside"
    sources = ["198.18.0.0/15"]
    destinations = ["*"]
    protocols = ["any"]
    destination_ports = ["*"]
"#;

/// [`LAB_RULES`], compiled by the config loader.
pub fn lab_policy() -> Arc<Ruleset> {
    kit::policy(LAB_RULES)
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
                |i, n| {
                    WorkerKit::new()
                        .config(engine.clone())
                        .policy(policy.clone())
                        .index(i)
                        .of(n)
                        .build()
                },
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
