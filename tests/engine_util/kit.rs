//! The engine test kit, shared by `tests/engine_*.rs`, `tests/common`, `benches/` and `fuzz/`
//! (those include this file by path): the lab's engine configuration written out once, policies
//! compiled from TOML by the real config loader, and a [`WorkerKit`] whose arguments have names.
//!
//! It depends on `tollgate` and `std` only, so that the fuzz crate can include it as it is.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use tollgate::conntrack::Timeouts;
use tollgate::datapath::{EngineConfig, Iface, IfaceRole, Worker};
use tollgate::nat::{MappingMode, NatConfig};
use tollgate::policy::{Policy, Ruleset};

/// The lab's two-arm topology: inside `tg-in` 198.18.0.1/24, outside `tg-out` 203.0.113.1/24
/// with gateway .254, SNAT to 203.0.113.1 over ports 1024-65535, endpoint-independent mapping,
/// 198.51.100.128/25 exempt from SNAT, 4096 flows per worker.
pub fn lab_engine_config() -> EngineConfig {
    let a = |s: &str| -> Ipv4Addr { s.parse().expect("address literal") };
    let n = |s: &str| s.parse().expect("prefix literal");
    EngineConfig {
        interfaces: vec![
            Iface {
                name: "tg-in".into(),
                role: IfaceRole::Inside,
                addrs: vec![a("198.18.0.1")],
                gateway: None,
                connected: vec![n("198.18.0.0/24")],
                mtu: 1500,
            },
            Iface {
                name: "tg-out".into(),
                role: IfaceRole::Outside,
                addrs: vec![a("203.0.113.1")],
                gateway: Some(a("203.0.113.254")),
                connected: vec![n("203.0.113.0/24")],
                mtu: 1500,
            },
        ],
        routes: vec![],
        inside_prefixes: vec![n("198.18.0.0/15")],
        nat: NatConfig {
            public_addrs: vec![a("203.0.113.1")],
            port_min: 1024,
            port_max: 65535,
            mapping: MappingMode::EndpointIndependent,
            port_sharing: true,
            per_host_quota: None,
            reuse_cooldown: 0,
            time_wait_reuse: true,
            exempt: vec![n("198.51.100.128/25")],
        },
        timeouts: Timeouts::default(),
        max_flows_per_worker: 4096,
        mss_clamp: None,
        icmp_on_exhaustion: false,
        icmp_source: a("198.18.0.1"),
    }
}

/// The appliance part of a lab configuration file, matching [`lab_engine_config`]'s addresses:
/// [`policy`] appends rules to it. (Only the policy is taken from what it compiles to; the
/// engine settings come from [`lab_engine_config`].)
pub const LAB_APPLIANCE_TOML: &str = r#"
[appliance]
inside_prefixes = ["198.18.0.0/15"]
icmp_source = "198.18.0.1"

[[interface]]
name = "tg-in"
role = "inside"
addresses = ["198.18.0.1/24"]

[[interface]]
name = "tg-out"
role = "outside"
addresses = ["203.0.113.1/24"]
gateway = "203.0.113.254"

[snat]
addresses = ["203.0.113.1"]
ports = "1024-65535"
mapping = "endpoint-independent"
"#;

/// Compiles `rules` (TOML `[[group]]` tables, as in a configuration file) under the lab's
/// appliance section with the real loader; panics with every diagnostic when it does not load.
pub fn policy(rules: &str) -> Arc<Ruleset> {
    let text = format!("{LAB_APPLIANCE_TOML}\n{rules}");
    match tollgate::config::load_str(&text, "kit policy") {
        Ok(l) => l.policy,
        Err(e) => panic!("test policy does not load: {e}\n{text}"),
    }
}

/// The id of the rule named `name` in `p` (ids are assigned by the compiler, in evaluation
/// order, so tests name rules rather than number them).
pub fn rule_id(p: &dyn Policy, name: &str) -> u32 {
    (0..p.rule_count() as u32)
        .find(|&id| p.describe(id).is_some_and(|r| r.rule == name))
        .unwrap_or_else(|| panic!("no rule named {name:?}"))
}

/// Builds a [`Worker`] with named arguments: `WorkerKit::new().policy(p).index(1).of(2).seed(7)
/// .build()`. Defaults: [`lab_engine_config`], worker 0 of 1, seed 42.
#[derive(Clone)]
pub struct WorkerKit {
    config: Arc<EngineConfig>,
    policy: Option<Arc<dyn Policy>>,
    index: usize,
    workers: usize,
    seed: u64,
}

impl std::fmt::Debug for WorkerKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerKit")
            .field("index", &self.index)
            .field("workers", &self.workers)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Default for WorkerKit {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerKit {
    pub fn new() -> Self {
        WorkerKit {
            config: Arc::new(lab_engine_config()),
            policy: None,
            index: 0,
            workers: 1,
            seed: 42,
        }
    }

    /// The engine configuration (an `EngineConfig` or an `Arc` of one shared by workers).
    pub fn config(mut self, cfg: impl Into<Arc<EngineConfig>>) -> Self {
        self.config = cfg.into();
        self
    }

    /// The policy; there is no default, so that every test says which rules it runs under.
    pub fn policy(mut self, p: Arc<dyn Policy>) -> Self {
        self.policy = Some(p);
        self
    }

    /// This worker's index among [`WorkerKit::of`] workers.
    pub fn index(mut self, i: usize) -> Self {
        self.index = i;
        self
    }

    /// How many workers share the SNAT port space.
    pub fn of(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The flow-table hash seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn build(self) -> Worker {
        self.build_advised(None)
    }

    /// [`WorkerKit::build`], passing `advise` the flow table's memory (see
    /// `Worker::with_advice`; the engine bench asks for huge pages with it).
    pub fn build_advised(self, advise: Option<&dyn Fn(usize, usize)>) -> Worker {
        let policy = self.policy.expect("WorkerKit: no policy given");
        Worker::with_advice(
            self.config,
            policy,
            self.index,
            self.workers,
            self.seed,
            advise,
        )
    }

    /// Every worker `0..of`, built alike (as the daemon builds them).
    pub fn build_all(self) -> Vec<Worker> {
        (0..self.workers)
            .map(|i| self.clone().index(i).build())
            .collect()
    }
}
