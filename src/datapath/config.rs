//! The engine's settings, as plain data. `config` builds this from TOML; tests build it directly.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::conntrack::Timeouts;
use crate::nat::NatConfig;

/// Index of an interface in [`EngineConfig::interfaces`].
pub type IfaceId = u8;

/// Which side of the appliance an interface faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfaceRole {
    /// Faces the protected subnet (the UDR's next hop is on it).
    Inside,
    /// Faces the internet (holds the SNAT addresses).
    Outside,
    /// One NIC for both sides, Azure's common single-NIC NVA: direction is decided by address.
    OneArm,
}

/// One data interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub role: IfaceRole,
    /// The addresses the kernel owns on this interface (traffic to them is the kernel's).
    pub addrs: Vec<Ipv4Addr>,
    /// Default gateway reached through this interface, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Connected prefixes (next hop = the destination itself).
    pub connected: Vec<Ipv4Net>,
    /// Interface MTU, for fragmentation-needed replies.
    pub mtu: u16,
}

/// A static route, e.g. a kubenet pod CIDR behind a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub prefix: Ipv4Net,
    pub via: Ipv4Addr,
    pub iface: IfaceId,
}

/// Everything the datapath needs besides the policy.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub interfaces: Vec<Iface>,
    /// Static routes; connected prefixes and gateways come from `interfaces`.
    pub routes: Vec<Route>,
    /// Sources the appliance forwards for (the protected subnets: node and pod CIDRs).
    pub inside_prefixes: Vec<Ipv4Net>,
    pub nat: NatConfig,
    pub timeouts: Timeouts,
    /// Hard limit on tracked flows per worker.
    pub max_flows_per_worker: u32,
    /// Clamp the MSS option of forwarded SYNs to this value (None: leave it).
    pub mss_clamp: Option<u16>,
    /// Send ICMP destination-unreachable code 13 to the client when no SNAT port is left.
    pub icmp_on_exhaustion: bool,
    /// Address used as the source of ICMP errors the appliance originates toward the inside.
    pub icmp_source: Ipv4Addr,
}

impl EngineConfig {
    /// One of the SNAT (public) addresses.
    #[inline]
    pub(super) fn is_public(&self, a: Ipv4Addr) -> bool {
        self.nat.public_addrs.contains(&a)
    }

    /// In a protected (inside) prefix.
    #[inline]
    pub(super) fn is_inside(&self, a: Ipv4Addr) -> bool {
        self.inside_prefixes.iter().any(|n| n.contains(&a))
    }

    /// In the SNAT port range (a port the allocator may hand out).
    #[inline]
    pub(super) fn in_snat_range(&self, port: u16) -> bool {
        port >= self.nat.port_min && port <= self.nat.port_max
    }
}
