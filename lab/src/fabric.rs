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
    /// Azure's two-NIC NVA: the UDR's next hop is the inside NIC (198.18.1.4, appliance
    /// subnet); the public IP maps to the outside NIC (198.18.2.4, a public subnet).
    TwoNic,
    /// Two one-arm appliances behind an internal load balancer with HA ports: the UDR's next
    /// hop is the frontend, the balancer hashes each new flow's 5-tuple to a healthy backend
    /// and delivers the frame unchanged; health from `/healthz` probes.
    Ha,
}

impl Topology {
    /// Short names of the namespaces this shape creates.
    pub fn namespaces(self) -> &'static [&'static str] {
        match self {
            Topology::TwoArm => &["sw", "node1", "node2", "srv", "app", "inet"],
            Topology::OneArm | Topology::TwoNic => {
                &["fab", "node1", "node2", "srv", "pod1", "app", "inet"]
            }
            Topology::Ha => &[
                "fab", "node1", "node2", "srv", "pod1", "app", "app2", "inet",
            ],
        }
    }
    /// The address the appliance's ICMP errors come from (`icmp_source`).
    pub fn icmp_source(self) -> &'static str {
        match self {
            Topology::TwoArm => "198.18.0.1",
            Topology::OneArm | Topology::TwoNic | Topology::Ha => APPLIANCE_NIC,
        }
    }
    /// The address Tollgate SNATs to (what its metrics name).
    pub fn snat_address(self) -> &'static str {
        match self {
            Topology::TwoArm => "203.0.113.1",
            Topology::OneArm | Topology::Ha => APPLIANCE_NIC,
            Topology::TwoNic => APPLIANCE_OUT_NIC,
        }
    }
    /// Where the appliance's management endpoint listens.
    pub fn management(self) -> &'static str {
        match self {
            Topology::TwoArm => "127.0.0.1:9090",
            Topology::OneArm | Topology::TwoNic | Topology::Ha => "198.18.1.4:9090",
        }
    }
    /// The appliance configuration `lab run` uses by default.
    pub fn default_config(self) -> &'static str {
        match self {
            Topology::TwoArm => "config/lab.toml",
            // `ha`: the second appliance gets the same file with its own NIC address
            Topology::OneArm | Topology::Ha => "config/lab-one-arm.toml",
            Topology::TwoNic => "config/lab-two-nic.toml",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Topology::TwoArm => "two-arm",
            Topology::OneArm => "one-arm",
            Topology::TwoNic => "two-nic",
            Topology::Ha => "ha",
        })
    }
}

impl FromStr for Topology {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "two-arm" => Ok(Topology::TwoArm),
            "one-arm" => Ok(Topology::OneArm),
            "two-nic" => Ok(Topology::TwoNic),
            "ha" => Ok(Topology::Ha),
            o => Err(format!(
                "unknown topology \"{o}\" (one-arm, two-nic, ha, two-arm)"
            )),
        }
    }
}

/// A VM NIC plugged into the fabric: its VM's namespace, its address, its subnet's gateway,
/// and whether the fabric lets it forward (Azure's `enableIPForwarding`).
struct Nic {
    vm: &'static str,
    addr: &'static str,
    gateway: &'static str,
    ip_forwarding: bool,
    /// The public IP the fabric maps this NIC's address to, 1:1.
    public: Option<&'static str>,
}

const AKS_TABLE: &str = "100";
const APPLIANCE_TABLE: &str = "200";

/// The appliance's outside NIC (`two-nic`), in the public subnet 198.18.2.0/24.
pub const APPLIANCE_OUT_NIC: &str = "198.18.2.4";
/// The second appliance's NIC (`ha`) and its public IP.
pub const APPLIANCE2_NIC: &str = "198.18.1.5";
pub const PUBLIC_IP2: &str = "203.0.113.2";
/// How often the load balancer probes each backend, and after how many failures in a row it
/// takes one out (Azure's defaults: 5 s, 2).
pub const PROBE_INTERVAL_S: u32 = 5;
pub const PROBE_THRESHOLD: u32 = 2;
/// Hash buckets of the balancer; each maps to a healthy backend.
const BUCKETS: u32 = 16;

const NICS: [Nic; 6] = [
    Nic {
        vm: "node1",
        addr: "198.18.0.11",
        gateway: "198.18.0.1",
        ip_forwarding: false,
        public: None,
    },
    Nic {
        vm: "node2",
        addr: "198.18.0.12",
        gateway: "198.18.0.1",
        ip_forwarding: false,
        public: None,
    },
    Nic {
        vm: "srv",
        addr: "198.18.0.20",
        gateway: "198.18.0.1",
        ip_forwarding: false,
        public: None,
    },
    Nic {
        vm: "app",
        addr: APPLIANCE_NIC,
        gateway: "198.18.1.1",
        ip_forwarding: true,
        public: Some(PUBLIC_IP),
    },
    // two-nic: the inside NIC is "app" above (then without a public IP), this the outside one
    Nic {
        vm: "app-out",
        addr: APPLIANCE_OUT_NIC,
        gateway: "198.18.2.1",
        ip_forwarding: true,
        public: Some(PUBLIC_IP),
    },
    Nic {
        vm: "app2",
        addr: APPLIANCE2_NIC,
        gateway: "198.18.1.1",
        ip_forwarding: true,
        public: Some(PUBLIC_IP2),
    },
];

/// The NICs of a shape's VMs.
fn nics(topology: Topology) -> impl Iterator<Item = &'static Nic> {
    NICS.iter().filter(move |n| match n.vm {
        "app2" => topology == Topology::Ha,
        "app-out" => topology == Topology::TwoNic,
        _ => true,
    })
}

impl Nic {
    /// The VM's namespace and the NIC's device in it (`app-out` is the appliance's second NIC).
    fn vm_dev(&self) -> (&'static str, &'static str) {
        if self.vm == "app-out" {
            ("app", "eth1")
        } else {
            (self.vm, "eth0")
        }
    }
    /// The public IP mapped to this NIC in `topology` (two-nic: the outside NIC's only).
    fn public_in(&self, topology: Topology) -> Option<&'static str> {
        if topology == Topology::TwoNic && self.vm == "app" {
            None
        } else {
            self.public
        }
    }
}

/// `ip -n NS WORDS...`, the words split on whitespace.
fn ip(lab: &Lab, ns: &str, words: &str) -> Result<(), LabError> {
    let v: Vec<&str> = words.split_whitespace().collect();
    lab.ip(ns, &v).map(|_| ())
}

/// Builds the one-arm or HA shape in the lab's (already created) namespaces.
pub fn build_fabric(lab: &Lab) -> Result<(), LabError> {
    let topology = lab.topology;
    lab.sh_ok(
        "fab",
        "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
    )?;
    // The gateways, the platform and the public IPs are the fabric's own addresses: ARP for
    // any of them is answered on every port, and traffic to them is delivered (or DNATed)
    // before any route table applies.
    for a in [
        "198.18.0.1",
        "198.18.1.1",
        "198.18.2.1",
        PLATFORM,
        PUBLIC_IP,
        PUBLIC_IP2,
    ] {
        ip(lab, "fab", &format!("addr add {a}/32 dev lo"))?;
    }
    for nic in nics(topology) {
        let port = format!("n-{}", nic.vm);
        let (short, dev) = nic.vm_dev();
        let vm = lab.ns(short);
        ip(
            lab,
            "fab",
            &format!("link add {port} type veth peer name {dev} netns {vm}"),
        )?;
        ip(
            lab,
            "fab",
            &format!("link set {port} address {GATEWAY_MAC} up"),
        )?;
        lab.sh_ok(
            "fab",
            &format!(
                "sysctl -qw net.ipv4.conf.{port}.proxy_arp=1 net.ipv4.conf.{port}.rp_filter=0"
            ),
        )?;
        ip(lab, short, &format!("addr add {}/24 dev {dev}", nic.addr))?;
        ip(lab, short, &format!("link set {dev} up"))?;
        if dev == "eth0" {
            ip(
                lab,
                short,
                &format!("route add default via {}", nic.gateway),
            )?;
        }
        // VNet routing: each NIC's address, in the main table and in every subnet's table.
        for table in ["main", AKS_TABLE, APPLIANCE_TABLE] {
            ip(
                lab,
                "fab",
                &format!("route add {}/32 dev {port} table {table}", nic.addr),
            )?;
        }
        let table = if nic.vm.starts_with("app") {
            APPLIANCE_TABLE
        } else {
            AKS_TABLE
        };
        ip(
            lab,
            "fab",
            &format!("rule add iif {port} lookup {table} pref 100"),
        )?;
    }
    // The rest of the VNet is nobody's: no route leaves it for the internet.
    for table in [AKS_TABLE, APPLIANCE_TABLE] {
        ip(
            lab,
            "fab",
            &format!("route add unreachable 198.18.0.0/16 table {table}"),
        )?;
    }
    // The AKS subnet's route table: kubenet's pod route, and the UDR: 0.0.0.0/0 to the
    // appliance, or (ha) to the load balancer's frontend, which picks a backend per flow
    // (the mark set in `fabric_rules`, one table per backend).
    ip(
        lab,
        "fab",
        &format!("route add {POD_CIDR_NODE1} via 198.18.0.11 dev n-node1 table {AKS_TABLE}"),
    )?;
    if topology == Topology::Ha {
        for (mark, nic) in [(1, APPLIANCE_NIC), (2, APPLIANCE2_NIC)] {
            let dev = if mark == 1 { "n-app" } else { "n-app2" };
            let t = 100 + mark;
            ip(
                lab,
                "fab",
                &format!("route add default via {nic} dev {dev} table {t}"),
            )?;
            ip(
                lab,
                "fab",
                &format!("rule add fwmark {mark} lookup {t} pref 90"),
            )?;
        }
    } else {
        ip(
            lab,
            "fab",
            &format!("route add default via {APPLIANCE_NIC} dev n-app table {AKS_TABLE}"),
        )?;
    }
    // The internet edge; the appliance subnet's default route leads there.
    let inet = lab.ns("inet");
    ip(
        lab,
        "fab",
        &format!("link add n-inet type veth peer name eth0 netns {inet}"),
    )?;
    ip(lab, "fab", "addr add 203.0.113.254/24 dev n-inet")?;
    ip(lab, "fab", "link set n-inet up")?;
    ip(lab, "fab", "route add 198.51.100.0/24 dev n-inet")?;
    ip(
        lab,
        "fab",
        &format!("route add default dev n-inet table {APPLIANCE_TABLE}"),
    )?;
    for a in ["203.0.113.10/24", "198.51.100.66/24", "203.0.113.53/24"] {
        ip(lab, "inet", &format!("addr add {a} dev eth0"))?;
    }
    ip(lab, "inet", "link set eth0 up")?;
    ip(lab, "inet", "route add default via 203.0.113.254")?;
    // kubenet on node1: a pod behind a bridge-like veth, masqueraded when it leaves the VNet
    // (ip-masq-agent), so the appliance sees the node's address.
    let pod = lab.ns("pod1");
    ip(
        lab,
        "node1",
        &format!("link add cbr0 type veth peer name eth0 netns {pod}"),
    )?;
    ip(lab, "node1", "addr add 198.18.64.1/24 dev cbr0")?;
    ip(lab, "node1", "link set cbr0 up")?;
    lab.sh_ok("node1", "sysctl -qw net.ipv4.ip_forward=1")?;
    ip(lab, "pod1", &format!("addr add {POD1}/24 dev eth0"))?;
    ip(lab, "pod1", "link set eth0 up")?;
    ip(lab, "pod1", "route add default via 198.18.64.1")?;
    lab.nft(
        "node1",
        "table ip masq-agent {
  chain post { type nat hook postrouting priority srcnat; policy accept;
    ip saddr 198.18.64.0/18 ip daddr != 198.18.0.0/16 masquerade
  }
}",
    )?;
    // The appliances' own ephemeral ports stay below their SNAT range (as vm-image/ sets).
    for vm in nics(topology).filter(|n| n.vm.starts_with("app") && n.vm != "app-out") {
        lab.sh_ok(
            vm.vm,
            "sysctl -qw net.ipv4.ip_local_port_range='10000 19999'",
        )?;
    }
    lab.nft("fab", &fabric_rules(topology))?;
    Ok(())
}

/// The fabric's nftables: the public IPs' 1:1 mappings, IP forwarding enforced per NIC, no TTL
/// hop, and (ha) the load balancer's flow hash.
fn fabric_rules(topology: Topology) -> String {
    let mut fwd = String::new();
    let mut pre = String::new();
    let mut post = String::new();
    for nic in nics(topology) {
        if !nic.ip_forwarding {
            fwd.push_str(&format!(
                "    iifname \"n-{vm}\" ip saddr != {a} counter name ipfwd_off drop\n    oifname \"n-{vm}\" ip daddr != {a} counter name ipfwd_off drop\n",
                vm = nic.vm,
                a = nic.addr
            ));
        }
        if let Some(p) = nic.public_in(topology) {
            pre.push_str(&format!(
                "    iifname \"n-inet\" ip daddr {p} dnat to {}\n",
                nic.addr
            ));
            post.push_str(&format!(
                "    oifname \"n-inet\" ip saddr {} snat to {p}\n",
                nic.addr
            ));
        }
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
    // The internal load balancer (ha): a new flow from the AKS subnet leaving the VNet gets a
    // hash bucket of its 5-tuple, the bucket a backend (the prober keeps `buckets` to the
    // healthy ones), and the flow keeps that backend in its conntrack mark for its life.
    let ilb = if topology == Topology::Ha {
        let el: Vec<String> = (0..BUCKETS)
            .map(|b| format!("{b} : {}", 1 + b % 2))
            .collect();
        format!(
            "  map buckets {{ type mark : mark; elements = {{ {} }} }}
  chain ilb {{ type filter hook prerouting priority mangle - 1; policy accept;
    iifname {{ \"n-node1\", \"n-node2\", \"n-srv\" }} ip daddr != {{ 198.18.0.0/16, {PLATFORM} }} jump balanced
  }}
  chain balanced {{
    ct state new meta mark set jhash ip saddr . ip daddr . meta l4proto . th sport . th dport mod {BUCKETS}
    ct state new ct mark set meta mark map @buckets
    meta mark set ct mark
  }}
",
            el.join(", ")
        )
    } else {
        String::new()
    };
    format!(
        "table ip fabric {{
  counter ipfwd_off {{ }}
{ilb}{ttl_chains}  chain transparent {{ type filter hook prerouting priority mangle; policy accept;
    iifname != \"lo\" ip ttl vmap {{ {ttl_map} }}
  }}
  chain pre {{ type nat hook prerouting priority dstnat; policy accept;
{pre}  }}
  chain post {{ type nat hook postrouting priority srcnat; policy accept;
{post}  }}
  chain ipfwd {{ type filter hook forward priority filter; policy accept;
{fwd}  }}
}}"
    )
}

/// The load balancer's health prober (ha), a shell loop in the fabric: every
/// [`PROBE_INTERVAL_S`] it asks each backend's `/healthz` from the platform address; after
/// [`PROBE_THRESHOLD`] failures in a row a backend is out, after one success it is back, and
/// the hash buckets are spread over the healthy ones (new flows only: existing flows keep
/// their backend). It logs each change with the time.
pub fn prober_script() -> String {
    format!(
        r#"set -u
ips=({APPLIANCE_NIC} {APPLIANCE2_NIC}); marks=(1 2); up=(1 1); fails=(0 0)
apply() {{
  local healthy=() el="" b
  for i in 0 1; do [ "${{up[$i]}}" = 1 ] && healthy+=("${{marks[$i]}}"); done
  [ "${{#healthy[@]}}" = 0 ] && {{ echo "$(date +%s.%N) no healthy backend: buckets kept"; return; }}
  for b in $(seq 0 {last}); do el="$el$b : ${{healthy[$((b % ${{#healthy[@]}}))]}}, "; done
  nft -f - <<< "flush map ip fabric buckets; add element ip fabric buckets {{ ${{el%, }} }}"
  echo "$(date +%s.%N) healthy backends (marks): ${{healthy[*]}}"
}}
while :; do
  changed=0
  for i in 0 1; do
    if curl -sf -m 1 --interface {PLATFORM} -o /dev/null "http://${{ips[$i]}}:9090/healthz"; then
      fails[$i]=0
      [ "${{up[$i]}}" = 0 ] && {{ up[$i]=1; changed=1; }}
    else
      fails[$i]=$((fails[$i] + 1))
      [ "${{up[$i]}}" = 1 ] && [ "${{fails[$i]}}" -ge {PROBE_THRESHOLD} ] && {{ up[$i]=0; changed=1; }}
    fi
  done
  [ "$changed" = 1 ] && apply
  sleep {PROBE_INTERVAL_S}
done
"#,
        last = BUCKETS - 1
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
