//! A SNAT benchmark scenario: the workload and the NAT settings, from TOML or from flags.

use std::net::Ipv4Addr;

use serde::Deserialize;

use tollgate::nat::MappingMode;

/// Why a scenario could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read the scenario file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the scenario file {path} is not valid: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("the scenario is not usable: {0}")]
    Invalid(String),
}

/// How connections of a group arrive.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Arrival {
    /// Exponential gaps (a Poisson process) at the group's rate.
    #[default]
    Poisson,
    /// Evenly spaced at the group's rate.
    Fixed,
}

/// How connection durations are drawn.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DurationDist {
    /// Every connection lasts `duration_s`.
    #[default]
    Fixed,
    /// Exponentially distributed with mean `duration_s`.
    Exp,
}

/// The SNAT mapping mode as written in a scenario: the configuration's `[snat] mapping`, and
/// for endpoint-independent mapping its `port_sharing` in the name.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// `mapping = "endpoint-independent"` with `port_sharing = true` (the configuration's
    /// default): an endpoint keeps one port for every destination, and endpoints share ports
    /// toward different destinations.
    #[default]
    EndpointIndependent,
    /// `mapping = "endpoint-independent"` with `port_sharing = false`: one holder per port.
    EndpointIndependentStrict,
    AddressAndPortDependent,
}

impl Mapping {
    pub fn mode(self) -> MappingMode {
        match self {
            Mapping::EndpointIndependent | Mapping::EndpointIndependentStrict => {
                MappingMode::EndpointIndependent
            }
            Mapping::AddressAndPortDependent => MappingMode::AddressAndPortDependent,
        }
    }
    /// The configuration's `port_sharing`.
    pub fn port_sharing(self) -> bool {
        self != Mapping::EndpointIndependentStrict
    }
    pub fn short(self) -> &'static str {
        match self {
            Mapping::EndpointIndependent => "EIM-shared",
            Mapping::EndpointIndependentStrict => "EIM-strict",
            Mapping::AddressAndPortDependent => "APDM",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "endpoint-independent" | "eim" | "eim-shared" => Some(Mapping::EndpointIndependent),
            "endpoint-independent-strict" | "eim-strict" => {
                Some(Mapping::EndpointIndependentStrict)
            }
            "address-and-port-dependent" | "apdm" => Some(Mapping::AddressAndPortDependent),
            _ => None,
        }
    }
}

/// A change of a group's connection rate at a point of virtual time.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Virtual seconds from the start of the run.
    pub at_s: f64,
    /// Connections per second of the whole group from then on.
    pub rate: f64,
}

/// How the connections that end are closed, as weights.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CloseMix {
    /// FIN both ways, then the last ACK: the flow goes to TIME_WAIT.
    pub fin: f64,
    /// A RST from the client: the flow goes to the short closed timeout.
    pub rst: f64,
    /// The client just stops sending: the flow lingers until the established timeout.
    pub idle: f64,
}

impl Default for CloseMix {
    fn default() -> Self {
        CloseMix {
            fin: 1.0,
            rst: 0.0,
            idle: 0.0,
        }
    }
}

/// One entry of a destination mix.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DestSpec {
    /// A named destination (`addr` and `port`), e.g. the registry 203.0.113.50:443.
    pub addr: Option<Ipv4Addr>,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Instead of `addr`: a long tail of this many generated destinations in 192.0.2.0/24,
    /// 198.51.100.0/24 and 203.0.113.0/24 (ports 443, 80, 8443, ... when addresses run out),
    /// picked uniformly.
    #[serde(default)]
    pub tail: u32,
    /// Relative weight of this entry in the mix.
    #[serde(default = "one")]
    pub weight: f64,
}

fn default_port() -> u16 {
    443
}
fn one() -> f64 {
    1.0
}

/// A group of inside hosts that behave alike.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    /// Inside hosts in the group (addresses in 198.18.0.0/15, handed out in order).
    pub hosts: u32,
    /// New connections per second for the whole group, from time 0.
    pub rate: f64,
    /// Later rate changes (a burst is a phase with a high rate followed by a low one).
    #[serde(default)]
    pub phases: Vec<Phase>,
    #[serde(default)]
    pub arrival: Arrival,
    /// Connection duration in seconds (mean for `exp`); `inf` keeps connections open.
    pub duration_s: f64,
    #[serde(default)]
    pub duration_dist: DurationDist,
    #[serde(default)]
    pub close: CloseMix,
    /// Data segments each way after the handshake (0: handshake and close only).
    #[serde(default)]
    pub data_packets: u32,
    /// Stop opening connections after this many (None: no limit).
    #[serde(default)]
    pub max_connections: Option<u64>,
    pub dest: Vec<DestSpec>,
}

/// Idle timeouts the engine is run with, in seconds (the engine's names).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutSpec {
    pub tcp_syn: u32,
    pub tcp_established: u32,
    pub tcp_closing: u32,
    pub tcp_time_wait: u32,
    pub tcp_rst: u32,
}

impl Default for TimeoutSpec {
    fn default() -> Self {
        let t = tollgate::conntrack::Timeouts::default();
        TimeoutSpec {
            tcp_syn: t.tcp_syn,
            tcp_established: t.tcp_established,
            tcp_closing: t.tcp_closing,
            tcp_time_wait: t.tcp_time_wait,
            tcp_rst: t.tcp_rst,
        }
    }
}

/// A whole benchmark run.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Virtual seconds of traffic.
    pub duration_s: f64,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Public (SNAT) addresses: 203.0.113.1, .2, ...
    #[serde(default = "default_ips")]
    pub public_ips: u8,
    #[serde(default = "default_port_min")]
    pub port_min: u16,
    #[serde(default = "default_port_max")]
    pub port_max: u16,
    /// `endpoint-independent` (with port sharing, the default), `endpoint-independent-strict`
    /// (`port_sharing = false`) or `address-and-port-dependent`.
    #[serde(default)]
    pub mapping: Mapping,
    /// Most SNAT mappings (EIM) or sessions (APDM) per inside host (None: no cap).
    #[serde(default)]
    pub per_host_quota: Option<u32>,
    /// Seconds a freed port rests before reuse.
    #[serde(default = "default_cooldown")]
    pub reuse_cooldown_s: u32,
    /// The configuration's `[snat] time_wait_reuse`: under port pressure a new SYN may take
    /// over a port whose flow to the same destination has closed (TIME_WAIT or reset).
    #[serde(default = "default_time_wait_reuse")]
    pub time_wait_reuse: bool,
    /// The engine's flow table size.
    #[serde(default = "default_max_flows")]
    pub max_flows: u32,
    /// Virtual milliseconds between two `housekeeping` calls (the daemon calls it between
    /// batches).
    #[serde(default = "default_hk_ms")]
    pub housekeeping_ms: u32,
    /// Expired flows reclaimed per `housekeeping` call at most.
    #[serde(default = "default_hk_budget")]
    pub housekeeping_budget: u32,
    #[serde(default)]
    pub timeouts: TimeoutSpec,
    #[serde(rename = "group")]
    pub groups: Vec<Group>,
}

fn default_seed() -> u64 {
    1
}
fn default_ips() -> u8 {
    1
}
fn default_port_min() -> u16 {
    1024
}
fn default_port_max() -> u16 {
    65535
}
fn default_cooldown() -> u32 {
    2
}
fn default_time_wait_reuse() -> bool {
    true
}
fn default_max_flows() -> u32 {
    1 << 18
}
fn default_hk_ms() -> u32 {
    10
}
fn default_hk_budget() -> u32 {
    1024
}

impl Scenario {
    /// Parses a scenario from TOML text; `path` names it in errors.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_string(),
            source: Box::new(e),
        })?;
        s.validate()?;
        Ok(s)
    }

    /// Reads and parses a scenario file.
    pub fn load(path: &str) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Read {
            path: path.to_string(),
            source: e,
        })?;
        Self::from_toml(&text, path)
    }

    /// Checks what the simulator relies on.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: String| Err(ScenarioError::Invalid(m));
        if !(self.duration_s > 0.0 && self.duration_s.is_finite()) {
            return bad("duration_s must be a positive number of seconds".into());
        }
        if self.public_ips == 0 || self.public_ips > 200 {
            return bad("public_ips must be between 1 and 200".into());
        }
        if self.port_min == 0 || self.port_min > self.port_max {
            return bad("port_min must be at least 1 and not above port_max".into());
        }
        if self.groups.is_empty() {
            return bad("a scenario needs at least one [[group]]".into());
        }
        let hosts: u64 = self.groups.iter().map(|g| u64::from(g.hosts)).sum();
        if hosts == 0 || hosts > 120_000 {
            return bad("the groups must have between 1 and 120000 hosts in all".into());
        }
        for g in &self.groups {
            if g.dest.is_empty() {
                return bad(format!("group {} has no destination", g.name));
            }
            if g.rate < 0.0 || g.phases.iter().any(|p| p.rate < 0.0 || p.at_s < 0.0) {
                return bad(format!(
                    "group {} has a negative rate or phase time",
                    g.name
                ));
            }
            if g.duration_s.is_nan() || g.duration_s < 0.0 {
                return bad(format!("group {} has a negative duration", g.name));
            }
            let c = g.close;
            if c.fin < 0.0 || c.rst < 0.0 || c.idle < 0.0 || c.fin + c.rst + c.idle <= 0.0 {
                return bad(format!("group {} has no usable close mix", g.name));
            }
            for d in &g.dest {
                if d.addr.is_none() == (d.tail == 0) {
                    return bad(format!(
                        "group {}: each destination has either addr or tail",
                        g.name
                    ));
                }
                if d.weight.is_nan() || d.weight <= 0.0 {
                    return bad(format!("group {}: destination weights must be > 0", g.name));
                }
                if let Some(a) = d.addr {
                    if u32::from(a) >> 8 == u32::from(Ipv4Addr::new(203, 0, 113, 0)) >> 8
                        && a.octets()[3] < 16
                    {
                        return bad(format!(
                            "group {}: 203.0.113.0-15 are the appliance's public addresses",
                            g.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Ports on each public address.
    pub fn ports_per_ip(&self) -> u32 {
        u32::from(self.port_max - self.port_min) + 1
    }
}
