//! SNAT and DNAT: the public address pool, per-worker port slices, mapping modes, quotas.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// How a public port is shared between flows (RFC 4787 section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MappingMode {
    /// One public port per inside (address, port), whatever the destination (RFC 4787 REQ-1).
    /// With [`NatConfig::port_sharing`] (the default) several inside endpoints may hold the
    /// same public port as long as their flows go to different destinations, as the Linux
    /// kernel's masquerade does; without it each port has one holder.
    #[default]
    EndpointIndependent,
    /// The same public port may be reused toward different destinations: one public address
    /// carries far more than 64k flows.
    AddressAndPortDependent,
}

/// SNAT settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// Addresses flows are SNATed to (in Azure: the outside NIC's private IP configurations).
    pub public_addrs: Vec<Ipv4Addr>,
    /// Inclusive port range used on each public address (also the ICMP query id range).
    pub port_min: u16,
    pub port_max: u16,
    pub mapping: MappingMode,
    /// Endpoint-independent mapping only: an inside endpoint without a mapping may take a
    /// public port other endpoints hold when no port is free, provided none of their flows
    /// goes to its destination (the outside 5-tuple stays unique). False: strict EIM, one
    /// holder per port. Address-and-port-dependent mapping always reuses ports.
    pub port_sharing: bool,
    /// Most SNAT mappings (EIM: (endpoint, public address, port) entries, a port shared with
    /// other hosts counting once for each) or sessions (APDM) one inside host may hold
    /// (RFC 6888); None: no cap.
    pub per_host_quota: Option<u32>,
    /// Seconds a freed port rests before it is handed out again.
    pub reuse_cooldown: u32,
    /// Under port pressure only (no free port, no port shareable toward the destination), a
    /// new TCP SYN may take over a public port whose flow toward the same remote address and
    /// port has closed (FIN both ways, TIME_WAIT, or reset): the closed flow is evicted, as
    /// the Linux kernel's conntrack lets a SYN replace a TIME_WAIT entry. False: a closed
    /// flow holds its port until `tcp_time_wait` (or `tcp_rst`) has passed, whatever the
    /// pressure.
    pub time_wait_reuse: bool,
    /// Destinations that are forwarded without SNAT (Azure Firewall: RFC 1918 and RFC 6598).
    pub exempt: Vec<Ipv4Net>,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            public_addrs: Vec::new(),
            port_min: 1024,
            port_max: 65535,
            mapping: MappingMode::default(),
            port_sharing: true,
            per_host_quota: None,
            reuse_cooldown: 2,
            time_wait_reuse: true,
            exempt: vec![
                "10.0.0.0/8".parse().expect("literal"),
                "172.16.0.0/12".parse().expect("literal"),
                "192.168.0.0/16".parse().expect("literal"),
                "100.64.0.0/10".parse().expect("literal"),
            ],
        }
    }
}

mod eim;
mod ledger;
mod pool;
mod rng;
mod slice;

pub use ledger::PortLedger;
pub use pool::{AllocError, Grant, SnatPool};
pub use rng::Rng;
pub use slice::PortSlice;

impl NatConfig {
    /// True when endpoint-independent mappings may share a public port (see
    /// [`NatConfig::port_sharing`]).
    pub fn eim_sharing(&self) -> bool {
        self.mapping == MappingMode::EndpointIndependent && self.port_sharing
    }

    /// Ports in the configured range.
    pub fn port_count(&self) -> u32 {
        u32::from(self.port_max.saturating_sub(self.port_min)) + 1
    }

    /// The slice `[base, base + count)` of the port range owned by worker `w` of `n`:
    /// contiguous chunks, so a return packet's destination port names its worker.
    pub fn worker_range(&self, w: usize, n: usize) -> (u16, u16) {
        let n = n.max(1) as u32;
        let total = self.port_count();
        let chunk = total / n;
        let base = u32::from(self.port_min) + chunk * w as u32;
        let count = if w as u32 == n - 1 {
            total - chunk * (n - 1)
        } else {
            chunk
        };
        (base as u16, count.min(u32::from(u16::MAX)) as u16)
    }

    /// The worker that owns `port`, or None if the port is outside the SNAT range.
    #[inline]
    pub fn owner_of_port(&self, port: u16, n: usize) -> Option<usize> {
        if port < self.port_min || port > self.port_max {
            return None;
        }
        let chunk = (self.port_count() / n.max(1) as u32).max(1);
        Some((u32::from(port - self.port_min) / chunk).min(n as u32 - 1) as usize)
    }

    /// True if traffic to `dst` is forwarded without SNAT.
    #[inline]
    pub fn is_exempt(&self, dst: Ipv4Addr) -> bool {
        self.exempt.iter().any(|n| n.contains(&dst))
    }

    /// Whether a new flow from `src` to `dst` (its destination after any DNAT) is SNATed, and
    /// why not: the one rule the datapath applies and `tollgate explain` prints.
    #[inline]
    pub fn snat_rule(&self, inside_prefixes: &[Ipv4Net], src: Ipv4Addr, dst: Ipv4Addr) -> SnatRule {
        if !inside_prefixes.iter().any(|n| n.contains(&src)) {
            return SnatRule::NotFromInside;
        }
        match self.exempt.iter().find(|n| n.contains(&dst)) {
            Some(&n) => SnatRule::Exempt(n),
            None => SnatRule::Snat,
        }
    }
}

/// Whether a new flow is SNATed ([`NatConfig::snat_rule`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnatRule {
    /// From an inside address to a destination outside the exempt prefixes. A hairpinned DNAT
    /// flow (an inside host to a public address on a DNAT port) is one: SNATed so that the
    /// target, inside too, answers through the appliance rather than straight to the client.
    Snat,
    /// The source is not an inside address: an inbound (DNAT) flow keeps its client's address.
    NotFromInside,
    /// The destination (after DNAT) is in this SNAT-exempt prefix.
    Exempt(Ipv4Net),
}
