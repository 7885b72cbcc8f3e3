//! The TOML schema as serde types (see docs/config-schema.md). Values that are validated later
//! keep their byte span so every diagnostic can name file:line:col.
//!
//! Unknown keys are not rejected by serde (it would stop at the first one and hide every other
//! error): `keys::unknown_keys` walks the document and reports each of them, and the load fails.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
pub struct Raw {
    #[serde(default)]
    pub appliance: RawAppliance,
    #[serde(default)]
    pub interface: Vec<RawInterface>,
    #[serde(default)]
    pub route: Vec<RawRoute>,
    #[serde(default)]
    pub snat: RawSnat,
    #[serde(default)]
    pub conntrack: RawConntrack,
    #[serde(default)]
    pub ip_groups: BTreeMap<String, Vec<S<String>>>,
    #[serde(default)]
    pub group: Vec<RawGroup>,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub host: RawHost,
}

/// `[host]`: the host's own traffic on the data interfaces.
#[derive(Debug, Default, Deserialize)]
pub struct RawHost {
    pub policy: Option<S<String>>,
    #[serde(default)]
    pub management_sources: Vec<S<String>>,
    #[serde(default)]
    pub ssh_sources: Vec<S<String>>,
    #[serde(default)]
    pub ping_sources: Vec<S<String>>,
}

/// `[dns]`: the resolver of network rules' destination FQDNs.
#[derive(Debug, Default, Deserialize)]
pub struct RawDns {
    #[serde(default)]
    pub servers: Vec<S<String>>,
    pub min_refresh: Option<S<i64>>,
    pub max_refresh: Option<S<i64>>,
    /// The resolver's source ports, "A-B" (or "N"): one is picked at random per query.
    pub source_ports: Option<S<String>>,
    /// The older single-port form, still accepted (with a warning): the range N-N.
    pub source_port: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAppliance {
    #[serde(default)]
    pub inside_prefixes: Vec<S<String>>,
    pub icmp_source: Option<S<String>>,
    pub workers: Option<usize>,
    pub management: Option<S<String>>,
    pub admin_socket: Option<S<String>>,
    pub decision_log: Option<bool>,
    pub busy_poll_us: Option<S<i64>>,
    pub busy_poll_mode: Option<S<String>>,
    pub backend: Option<S<String>>,
    /// Azure's service tags JSON (ServiceTags_Public), for `destination_service_tags`.
    pub service_tags_file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawInterface {
    pub name: S<String>,
    pub role: S<String>,
    #[serde(default)]
    pub addresses: Vec<S<String>>,
    pub gateway: Option<S<String>>,
    pub mtu: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawRoute {
    pub prefix: S<String>,
    pub via: S<String>,
    pub interface: S<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSnat {
    #[serde(default)]
    pub addresses: Vec<S<String>>,
    pub ports: Option<S<String>>,
    pub mapping: Option<S<String>>,
    pub port_sharing: Option<S<bool>>,
    pub per_host_quota: Option<u32>,
    pub reuse_cooldown: Option<u32>,
    pub time_wait_reuse: Option<bool>,
    pub exempt: Option<Vec<S<String>>>,
    pub icmp_on_exhaustion: Option<bool>,
    pub mss_clamp: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawConntrack {
    pub max_flows: Option<S<i64>>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTimeouts {
    pub tcp_syn: Option<u32>,
    pub tcp_established: Option<u32>,
    pub tcp_closing: Option<u32>,
    pub tcp_time_wait: Option<u32>,
    pub tcp_rst: Option<u32>,
    pub udp: Option<u32>,
    pub icmp: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct RawGroup {
    pub name: S<String>,
    pub priority: S<i64>,
    #[serde(default)]
    pub collection: Vec<RawCollection>,
}

#[derive(Debug, Deserialize)]
pub struct RawCollection {
    pub name: S<String>,
    pub priority: S<i64>,
    pub kind: S<String>,
    pub action: S<String>,
    pub mode: Option<S<String>>,
    #[serde(default)]
    pub rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
pub struct RawRule {
    pub name: S<String>,
    #[serde(default)]
    pub sources: Vec<S<String>>,
    #[serde(default)]
    pub source_ip_groups: Vec<S<String>>,
    #[serde(default)]
    pub destinations: Vec<S<String>>,
    #[serde(default)]
    pub destination_ip_groups: Vec<S<String>>,
    #[serde(default)]
    pub destination_fqdns: Vec<S<String>>,
    #[serde(default)]
    pub destination_service_tags: Vec<S<String>>,
    #[serde(default)]
    pub protocols: Vec<S<String>>,
    #[serde(default)]
    pub destination_ports: Vec<S<String>>,
    #[serde(default)]
    pub fqdns: Vec<S<String>>,
    #[serde(default)]
    pub fqdn_tags: Vec<S<String>>,
    pub translated_address: Option<S<String>>,
    pub translated_port: Option<S<i64>>,
}

/// The embedded FQDN tag table (`data/fqdn-tags.toml`).
#[derive(Debug, Deserialize)]
pub struct TagFile {
    pub tags: BTreeMap<String, Vec<String>>,
}
