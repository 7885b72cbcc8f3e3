//! The TOML configuration: schema, validation with file:line:col, compilation into an
//! [`crate::datapath::EngineConfig`] and a [`crate::policy::Policy`].
//!
//! Loading is all or nothing: either a complete [`Loaded`] or [`ConfigErrors`] listing every
//! problem found (each with its position), never a partial configuration.

mod compile;
mod keys;
mod schema;
mod service_tags;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::datapath::EngineConfig;
use crate::policy::Ruleset;

pub use compile::{fqdn_tag, DEFAULT_ADMIN_SOCKET};
pub use service_tags::ServiceTags;

/// A compiled configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub engine: EngineConfig,
    pub policy: Arc<Ruleset>,
    /// Worker threads, resolved (0 in the file means one per core).
    pub workers: usize,
    pub management: SocketAddr,
    /// The admin socket (`tollgate flows`, `stats`, `snat`, `reload`, `explain`); None: the
    /// default for the network namespace the daemon runs in.
    pub admin_socket: Option<std::path::PathBuf>,
    /// Whether decision logs are written (JSON lines on stdout).
    pub decision_log: bool,
    /// How workers poll their rings before sleeping (`busy_poll_us`, `busy_poll_mode`).
    pub busy_poll: crate::io::runtime::BusyPoll,
    /// The packet I/O backend (`backend`: "auto", "af_xdp" or "af_packet").
    pub backend: crate::io::Backend,
    /// The resolver of network rules' destination FQDNs (`[dns]`).
    pub dns: DnsSettings,
    /// What the host's own stack answers on the data interfaces (`[host]`).
    pub host: HostPolicy,
    /// What each destination FQDN last resolved to, as compiled into `policy` (filled by the
    /// control plane's resolver; a name absent here was never resolved).
    pub fqdn_addresses: std::collections::BTreeMap<String, Vec<std::net::Ipv4Addr>>,
    /// The service tags file (`appliance.service_tags_file`), resolved against the
    /// configuration's directory: the reload thread watches it as it watches the file.
    pub service_tags_file: Option<std::path::PathBuf>,
    /// Problems that do not stop the load (shadowed rules, overlapping prefixes, unresolved
    /// FQDNs).
    pub warnings: Vec<Diagnostic>,
}

/// `[host]`: the appliance's own traffic on its data interfaces. A firewall answers nothing
/// it was not told to: by default (`policy = "closed"`) the kernel behind Tollgate gets only
/// answers to its own connections, DHCP, IPv6 neighbour discovery and what these lists allow;
/// everything else addressed to it is dropped without a RST or ICMP error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPolicy {
    /// false: `policy = "open"`, the kernel answers as it would without Tollgate.
    pub closed: bool,
    /// May reach the management listener (health probes, `/metrics`) on a data address.
    pub management_sources: Vec<ipnet::Ipv4Net>,
    /// May reach SSH (TCP 22).
    pub ssh_sources: Vec<ipnet::Ipv4Net>,
    /// May ping the appliance's addresses.
    pub ping_sources: Vec<ipnet::Ipv4Net>,
}

impl Default for HostPolicy {
    fn default() -> Self {
        HostPolicy {
            closed: true,
            management_sources: Vec::new(),
            ssh_sources: Vec::new(),
            ping_sources: Vec::new(),
        }
    }
}

/// `[dns]`: where and how often the control plane resolves network rules' destination FQDNs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// DNS servers (port 53); empty: destination FQDNs are never resolved.
    pub servers: Vec<std::net::Ipv4Addr>,
    /// Bounds on the refresh interval; an answer's TTL is clamped into them.
    pub min_refresh: std::time::Duration,
    pub max_refresh: std::time::Duration,
    /// The resolver's source ports (UDP queries, and TCP when an answer comes back truncated):
    /// outside the SNAT port range and off every DNAT port, so answers reach the kernel's
    /// sockets (the nftables table and the workers leave such ports to the kernel). One socket
    /// is bound per port at start, before capabilities are dropped; each query picks one at
    /// random.
    pub source_ports: std::ops::RangeInclusive<u16>,
}

/// Default resolver source ports: the top quarter of the privileged ports, just below the
/// default SNAT range (1024-65535); 256 ports, 8 bits an off-path spoofer must guess on top of
/// the query id and the name's case.
pub const DEFAULT_DNS_SOURCE_PORTS: std::ops::RangeInclusive<u16> = 768..=1023;

/// The most source ports `[dns] source_ports` may name: the resolver holds a socket open on
/// each (1024 is every privileged port).
pub const MAX_DNS_SOURCE_PORTS: usize = 1024;

/// Fewer source ports than this draw a warning: little for an off-path spoofer to guess.
pub const FEW_DNS_SOURCE_PORTS: usize = 64;

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            servers: Vec::new(),
            min_refresh: std::time::Duration::from_secs(5),
            max_refresh: std::time::Duration::from_secs(300),
            source_ports: DEFAULT_DNS_SOURCE_PORTS,
        }
    }
}

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a configuration file, at a position (1-based line and column; column counts
/// characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub origin: String,
    pub line: usize,
    pub col: usize,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.origin, self.line, self.col, sev, self.message
        )
    }
}

/// Why a configuration did not load: every error found, plus the warnings seen on the way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrors {
    /// The file could not be read.
    #[error("{origin}: the file could not be read: {reason}")]
    Unreadable { origin: String, reason: String },
    /// The file was read and is invalid.
    #[error("{origin}: the configuration has {} error(s)", errors.len())]
    Invalid {
        origin: String,
        errors: Vec<Diagnostic>,
        warnings: Vec<Diagnostic>,
    },
}

impl ConfigErrors {
    /// The errors (empty when the file could not be read).
    pub fn errors(&self) -> &[Diagnostic] {
        match self {
            ConfigErrors::Unreadable { .. } => &[],
            ConfigErrors::Invalid { errors, .. } => errors,
        }
    }

    /// The warnings found before the load failed.
    pub fn warnings(&self) -> &[Diagnostic] {
        match self {
            ConfigErrors::Unreadable { .. } => &[],
            ConfigErrors::Invalid { warnings, .. } => warnings,
        }
    }
}

/// Loads and compiles a configuration file; diagnostics name the path as given.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, &origin),
        Err(e) => Err(ConfigErrors::Unreadable {
            origin,
            reason: e.to_string(),
        }),
    }
}

/// Loads and compiles a configuration from text; `origin` names it in diagnostics.
pub fn load_str(text: &str, origin: &str) -> Result<Loaded, ConfigErrors> {
    compile::load(text, origin)
}

/// Converts byte offsets into 1-based line and column (in characters).
#[derive(Debug)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, col)
    }
}
