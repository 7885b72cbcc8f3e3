//! The lab in Azure's shape: an emulated VNet fabric in a namespace of its own, between the
//! VMs' NICs, the appliance and the internet (iproute2 and nftables only).
//!
//! ```text
//!  AKS node subnet 198.18.0.0/24            fab: the subnet gateway, every subnet's .1, one MAC
//!  node1 198.18.0.11 ─(pod1 198.18.64.10)─┐      (12:34:56:78:9a:bc) for all of them; routes by
//!  node2 198.18.0.12 ─────────────────────┼──    the subnet's route table:
//!  srv   198.18.0.20 ─────────────────────┘      AKS subnet: 0.0.0.0/0 -> 198.18.1.4 (the UDR),
//!                                                  198.18.64.0/24 -> 198.18.0.11 (kubenet), VNet
//!  appliance subnet 198.18.1.0/24                appliance subnet: VNet, 0.0.0.0/0 -> Internet
//!  app eth0 198.18.1.4 (one-arm) ─────────────   public IP: 198.18.1.4 <-> 203.0.113.1 (1:1)
//!                                                platform: 192.0.2.16 (Azure: 168.63.129.16)
//!  inet 203.0.113.10, .53, 198.51.100.66 ─────   ip_forwarding enforced per NIC
//! ```
//! As on Azure, a VM's every frame goes to the gateway's MAC (proxy ARP answers for every
//! address of the subnet), a NIC without IP forwarding neither sends frames whose source is
//! not its own address nor receives frames for other addresses, and the appliance never sees
//! its public IP: it SNATs to its NIC's private address, which the fabric maps.

use std::fmt;
use std::str::FromStr;

use crate::lab::{Lab, LabError};

/// The MAC every subnet gateway answers ARP with (Azure uses one fixed MAC, this one).
pub const GATEWAY_MAC: &str = "12:34:56:78:9a:bc";
/// The platform address: the load balancer's health probes come from it (Azure: 168.63.129.16).
pub const PLATFORM: &str = "192.0.2.16";
/// The appliance NIC's private address (one-arm) and the public IP the fabric maps it to.
pub const APPLIANCE_NIC: &str = "198.18.1.4";
pub const PUBLIC_IP: &str = "203.0.113.1";
/// kubenet's pod range on node1 (node1 masquerades its pods' traffic leaving the VNet, as AKS's
/// ip-masq-agent does; pod-to-pod traffic uses the route table entry).
pub const POD_CIDR_NODE1: &str = "198.18.64.0/24";
pub const POD1: &str = "198.18.64.10";

/// The lab's shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Topology {
    /// The appliance between an inside bridge and the internet, owning its public address, the
    /// nodes' default route pointing at it (the original lab; the end-to-end tests use it).
    TwoArm,
    /// Azure's single-NIC NVA behind a UDR, in the emulated fabric.
    #[default]
    OneArm,
}

impl Topology {
    /// Short names of the namespaces this shape creates.
    pub fn namespaces(self) -> &'static [&'static str] {
        match self {
            Topology::TwoArm => &["sw", "node1", "node2", "srv", "app", "inet"],
            Topology::OneArm => &["fab", "node1", "node2", "srv", "pod1", "app", "inet"],
        }
    }
    /// The address the appliance's ICMP errors come from (`icmp_source`).
    pub fn icmp_source(self) -> &'static str {
        match self {
            Topology::TwoArm => "198.18.0.1",
            Topology::OneArm => APPLIANCE_NIC,
        }
    }
    /// The address Tollgate SNATs to (what its metrics name).
    pub fn snat_address(self) -> &'static str {
        match self {
            Topology::TwoArm => "203.0.113.1",
            Topology::OneArm => APPLIANCE_NIC,
        }
    }
    /// Where the appliance's management endpoint listens.
    pub fn management(self) -> &'static str {
        match self {
            Topology::TwoArm => "127.0.0.1:9090",
            Topology::OneArm => "198.18.1.4:9090",
        }
    }
    /// The appliance configuration `lab run` uses by default.
    pub fn default_config(self) -> &'static str {
        match self {
            Topology::TwoArm => "config/lab.toml",
            Topology::OneArm => "config/lab-one-arm.toml",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Topology::TwoArm => "two-arm",
            Topology::OneArm => "one-arm",
        })
    }
}

impl FromStr for Topology {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "two-arm" => Ok(Topology::TwoArm),
            "one-arm" => Ok(Topology::OneArm),
            o => Err(format!("unknown topology \"{o}\" (two-arm, one-arm)")),
        }
    }
}

/// A VM NIC plugged into the fabric: its namespace, its address and prefix length, and whether
/// the fabric lets it forward (Azure's `enableIPForwarding`).
struct Nic {
    vm: &'static str,
    addr: &'static str,
    gateway: &'static str,
    ip_forwarding: bool,
}

const AKS_TABLE: &str = "100";
const APPLIANCE_TABLE: &str = "200";

const NICS: [Nic; 4] = [
    Nic {
        vm: "node1",
        addr: "198.18.0.11",
        gateway: "198.18.0.1",
        ip_forwarding: false,
    },
    Nic {
        vm: "node2",
        addr: "198.18.0.12",
        gateway: "198.18.0.1",
        ip_forwarding: false,
    },
    Nic {
        vm: "srv",
        addr: "198.18.0.20",
        gateway: "198.18.0.1",
        ip_forwarding: false,
    },
    Nic {
        vm: "app",
        addr: APPLIANCE_NIC,
        gateway: "198.18.1.1",
        ip_forwarding: true,
    },
];

/// Builds the one-arm shape in the lab's (already created) namespaces.
pub fn build_one_arm(lab: &Lab) -> Result<(), LabError> {
    lab.sh_ok(
        "fab",
        "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
    )?;
    // The gateways and the platform are the fabric's own addresses: ARP for any of them is
    // answered on every port, and traffic to them is delivered before any route table applies.
    for a in [
        "198.18.0.1/32",
        "198.18.1.1/32",
        "192.0.2.16/32",
        "203.0.113.1/32",
    ] {
        lab.ip("fab", &["addr", "add", a, "dev", "lo"])?;
    }
    for nic in &NICS {
        let port = format!("n-{}", nic.vm);
        let vm = lab.ns(nic.vm);
        lab.ip(
            "fab",
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &vm,
            ],
        )?;
        lab.ip("fab", &["link", "set", &port, "address", GATEWAY_MAC])?;
        lab.ip("fab", &["link", "set", &port, "up"])?;
        lab.sh_ok(
            "fab",
            &format!(
                "sysctl -qw net.ipv4.conf.{port}.proxy_arp=1 net.ipv4.conf.{port}.rp_filter=0"
            ),
        )?;
        lab.ip(
            nic.vm,
            &["addr", "add", &format!("{}/24", nic.addr), "dev", "eth0"],
        )?;
        lab.ip(nic.vm, &["link", "set", "eth0", "up"])?;
        lab.ip(nic.vm, &["route", "add", "default", "via", nic.gateway])?;
        // VNet routing: each NIC's address, in the main table and in every subnet's table.
        let host = format!("{}/32", nic.addr);
        for table in ["main", AKS_TABLE, APPLIANCE_TABLE] {
            lab.ip(
                "fab",
                &["route", "add", &host, "dev", &port, "table", table],
            )?;
        }
    }
    // The rest of the VNet is nobody's: no route leaves it for the internet.
    for table in [AKS_TABLE, APPLIANCE_TABLE] {
        lab.ip(
            "fab",
            &[
                "route",
                "add",
                "unreachable",
                "198.18.0.0/16",
                "table",
                table,
            ],
        )?;
    }
    // The AKS subnet's route table: the UDR to the appliance, kubenet's pod route.
    lab.ip(
        "fab",
        &[
            "route",
            "add",
            "default",
            "via",
            APPLIANCE_NIC,
            "dev",
            "n-app",
            "table",
            AKS_TABLE,
        ],
    )?;
    lab.ip(
        "fab",
        &[
            "route",
            "add",
            POD_CIDR_NODE1,
            "via",
            "198.18.0.11",
            "dev",
            "n-node1",
            "table",
            AKS_TABLE,
        ],
    )?;
    for vm in ["node1", "node2", "srv"] {
        lab.ip(
            "fab",
            &[
                "rule",
                "add",
                "iif",
                &format!("n-{vm}"),
                "lookup",
                AKS_TABLE,
                "pref",
                "100",
            ],
        )?;
    }
    // The appliance subnet's: the platform's default route to the internet.
    lab.ip(
        "fab",
        &[
            "rule",
            "add",
            "iif",
            "n-app",
            "lookup",
            APPLIANCE_TABLE,
            "pref",
            "100",
        ],
    )?;
    // The internet edge.
    let inet = lab.ns("inet");
    lab.ip(
        "fab",
        &[
            "link", "add", "n-inet", "type", "veth", "peer", "name", "eth0", "netns", &inet,
        ],
    )?;
    lab.ip("fab", &["addr", "add", "203.0.113.254/24", "dev", "n-inet"])?;
    lab.ip("fab", &["link", "set", "n-inet", "up"])?;
    lab.ip("fab", &["route", "add", "198.51.100.0/24", "dev", "n-inet"])?;
    lab.ip(
        "fab",
        &[
            "route",
            "add",
            "default",
            "dev",
            "n-inet",
            "table",
            APPLIANCE_TABLE,
        ],
    )?;
    for a in ["203.0.113.10/24", "198.51.100.66/24", "203.0.113.53/24"] {
        lab.ip("inet", &["addr", "add", a, "dev", "eth0"])?;
    }
    lab.ip("inet", &["link", "set", "eth0", "up"])?;
    lab.ip("inet", &["route", "add", "default", "via", "203.0.113.254"])?;
    // kubenet on node1: a pod behind a bridge-like veth, masqueraded when it leaves the VNet.
    let pod = lab.ns("pod1");
    lab.ip(
        "node1",
        &[
            "link", "add", "cbr0", "type", "veth", "peer", "name", "eth0", "netns", &pod,
        ],
    )?;
    lab.ip("node1", &["addr", "add", "198.18.64.1/24", "dev", "cbr0"])?;
    lab.ip("node1", &["link", "set", "cbr0", "up"])?;
    lab.sh_ok("node1", "sysctl -qw net.ipv4.ip_forward=1")?;
    lab.ip(
        "pod1",
        &["addr", "add", &format!("{POD1}/24"), "dev", "eth0"],
    )?;
    lab.ip("pod1", &["link", "set", "eth0", "up"])?;
    lab.ip("pod1", &["route", "add", "default", "via", "198.18.64.1"])?;
    lab.nft(
        "node1",
        "table ip masq-agent {
  chain post { type nat hook postrouting priority srcnat; policy accept;
    ip saddr 198.18.64.0/18 ip daddr != 198.18.0.0/16 masquerade
  }
}",
    )?;
    // The appliance's own ephemeral ports stay below its SNAT range (as vm-image/ sets).
    lab.sh_ok(
        "app",
        "sysctl -qw net.ipv4.ip_local_port_range='10000 19999'",
    )?;
    lab.nft("fab", &fabric_rules())?;
    Ok(())
}

/// The fabric's nftables: the public IP's 1:1 mapping, and IP forwarding enforced per NIC.
fn fabric_rules() -> String {
    let mut fwd = String::new();
    for nic in NICS.iter().filter(|n| !n.ip_forwarding) {
        fwd.push_str(&format!(
            "    iifname \"n-{vm}\" ip saddr != {a} counter name ipfwd_off drop\n    oifname \"n-{vm}\" ip daddr != {a} counter name ipfwd_off drop\n",
            vm = nic.vm,
            a = nic.addr
        ));
    }
    // Azure's fabric is no hop: TTL stays as the VM sent it (traceroute shows the appliance
    // first). The kernel decrements when it forwards, so add one before it does (nft 1.0 has
    // no arithmetic on the TTL: a verdict map to one chain per value).
    let mut ttl_chains = String::new();
    let mut ttl_map = Vec::new();
    for t in 1..255 {
        ttl_chains.push_str(&format!("  chain ttl{t} {{ ip ttl set {}; }}\n", t + 1));
        ttl_map.push(format!("{t} : goto ttl{t}"));
    }
    let ttl_map = ttl_map.join(", ");
    format!(
        "table ip fabric {{
  counter ipfwd_off {{ }}
{ttl_chains}  chain transparent {{ type filter hook prerouting priority mangle; policy accept;
    iifname != \"lo\" ip ttl vmap {{ {ttl_map} }}
  }}
  chain pre {{ type nat hook prerouting priority dstnat; policy accept;
    iifname \"n-inet\" ip daddr {PUBLIC_IP} dnat to {APPLIANCE_NIC}
  }}
  chain post {{ type nat hook postrouting priority srcnat; policy accept;
    oifname \"n-inet\" ip saddr {APPLIANCE_NIC} snat to {PUBLIC_IP}
  }}
  chain ipfwd {{ type filter hook forward priority filter; policy accept;
{fwd}  }}
}}"
    )
}

/// Turns IP forwarding on the appliance's NIC off or on (Azure's `--ip-forwarding`), as an
/// operator's mistake to troubleshoot: off, the fabric drops what the appliance forwards.
pub fn set_appliance_ip_forwarding(lab: &Lab, on: bool) -> Result<(), LabError> {
    let _ = lab.sh(
        "fab",
        "nft delete table ip fabric-appliance-ipfwd 2>/dev/null",
    );
    if on {
        return Ok(());
    }
    lab.nft(
        "fab",
        &format!(
            "table ip fabric-appliance-ipfwd {{
  counter dropped {{ }}
  chain ipfwd {{ type filter hook forward priority filter - 1; policy accept;
    iifname \"n-app\" ip saddr != {APPLIANCE_NIC} counter name dropped drop
    oifname \"n-app\" ip daddr != {APPLIANCE_NIC} counter name dropped drop
  }}
}}"
        ),
    )
}
