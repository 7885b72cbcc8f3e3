//! Rule specifications (plain data) and the compiled [`Ruleset`].

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::bitset::{IntervalMap, SetArena};
use super::fqdn::{FqdnPattern, FqdnTrie, MAX_CANDIDATES};
use super::{proto, AppProto, Decision, FlowQuery, Policy, RuleId, RuleRef};

/// Which stage a rule belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKind {
    Dnat,
    Network,
    Application,
}

impl RuleKind {
    /// `"dnat"`, `"network"` or `"application"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Dnat => "dnat",
            RuleKind::Network => "network",
            RuleKind::Application => "application",
        }
    }
}

/// A collection's action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
}

/// The IP protocols a network or DNAT rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Protocols {
    pub tcp: bool,
    pub udp: bool,
    pub icmp: bool,
    /// Every other IP protocol (only through `any`).
    pub other: bool,
}

impl Protocols {
    /// All protocols (`"any"`).
    pub const ANY: Protocols = Protocols {
        tcp: true,
        udp: true,
        icmp: true,
        other: true,
    };

    /// Whether the protocol number is included.
    pub fn contains(&self, p: u8) -> bool {
        match p {
            proto::TCP => self.tcp,
            proto::UDP => self.udp,
            proto::ICMP => self.icmp,
            _ => self.other,
        }
    }
}

/// One rule, in plain data; a list of these in evaluation order compiles into a [`Ruleset`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    pub group: String,
    pub collection: String,
    pub name: String,
    pub kind: RuleKind,
    pub action: Action,
    /// The collection is in audit mode: its deny decisions are logged, not enforced.
    pub audit: bool,
    /// Source prefixes (`*` is `0.0.0.0/0`); empty matches nothing.
    pub sources: Vec<Ipv4Net>,
    /// Destination prefixes (network and DNAT rules); empty matches nothing.
    pub destinations: Vec<Ipv4Net>,
    /// Destination FQDNs of network rules (exact names): they match through
    /// [`RuleSpec::resolved`], which the control plane's resolver fills.
    pub destination_fqdns: Vec<FqdnPattern>,
    /// The addresses `destination_fqdns` last resolved to (host routes); matched like
    /// `destinations`. Empty until a name resolves: an unresolved name matches nothing.
    pub resolved: Vec<Ipv4Net>,
    /// IP protocols (network and DNAT rules).
    pub protocols: Protocols,
    /// Destination port ranges, inclusive, for TCP and UDP (network and DNAT rules).
    pub ports: Vec<(u16, u16)>,
    /// Application protocols and ports (application rules).
    pub app_protocols: Vec<(AppProto, u16)>,
    /// FQDN patterns (application rules).
    pub fqdns: Vec<FqdnPattern>,
    /// DNAT target; `None` port keeps the original destination port.
    pub translated: Option<(Ipv4Addr, Option<u16>)>,
}

impl RuleSpec {
    /// A rule with the given names and kind that matches nothing yet.
    pub fn new(group: &str, collection: &str, name: &str, kind: RuleKind, action: Action) -> Self {
        RuleSpec {
            group: group.to_string(),
            collection: collection.to_string(),
            name: name.to_string(),
            kind,
            action,
            audit: false,
            sources: Vec::new(),
            destinations: Vec::new(),
            destination_fqdns: Vec::new(),
            resolved: Vec::new(),
            protocols: Protocols::default(),
            ports: Vec::new(),
            app_protocols: Vec::new(),
            fqdns: Vec::new(),
            translated: None,
        }
    }

    /// Which fields of this rule match the flow (linear reference; used by `explain`).
    pub fn field_match(&self, q: &FlowQuery) -> FieldMatch {
        let src = self.sources.iter().any(|n| n.contains(&q.src));
        match self.kind {
            RuleKind::Application => {
                let tcp = q.proto == proto::TCP
                    && self
                        .app_protocols
                        .iter()
                        .any(|(a, _)| matches!(a, AppProto::Http | AppProto::Https));
                let udp = q.proto == proto::UDP
                    && self.app_protocols.iter().any(|(a, _)| *a == AppProto::Quic);
                let port = self
                    .app_protocols
                    .iter()
                    .any(|(a, p)| *p == q.dport && app_l4(*a) == q.proto);
                FieldMatch {
                    src,
                    dst: true,
                    proto: tcp || udp,
                    port,
                }
            }
            _ => {
                let dst = self
                    .destinations
                    .iter()
                    .chain(&self.resolved)
                    .any(|n| n.contains(&q.dst));
                let pr = self.protocols.contains(q.proto);
                let port = if q.proto == proto::TCP || q.proto == proto::UDP {
                    self.ports
                        .iter()
                        .any(|&(lo, hi)| lo <= q.dport && q.dport <= hi)
                } else {
                    true
                };
                FieldMatch {
                    src,
                    dst,
                    proto: pr,
                    port: pr && port,
                }
            }
        }
    }
}

/// The L4 protocol an application protocol runs on.
pub fn app_l4(a: AppProto) -> u8 {
    match a {
        AppProto::Http | AppProto::Https => proto::TCP,
        AppProto::Quic => proto::UDP,
    }
}

/// Per-field match of a rule against a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldMatch {
    pub src: bool,
    pub dst: bool,
    pub proto: bool,
    pub port: bool,
}

impl FieldMatch {
    /// Whether every field matched.
    pub fn all(&self) -> bool {
        self.src && self.dst && self.proto && self.port
    }
    /// How many fields matched.
    pub fn count(&self) -> usize {
        [self.src, self.dst, self.proto, self.port]
            .iter()
            .filter(|x| **x)
            .count()
    }
}

/// Protocol class in the 18-bit protocol/port key space.
fn proto_class(p: u8) -> u32 {
    match p {
        proto::TCP => 0,
        proto::UDP => 1,
        proto::ICMP => 2,
        _ => 3,
    }
}

fn pp_key(q: &FlowQuery) -> u32 {
    let c = proto_class(q.proto);
    if c <= 1 {
        (c << 16) | u32::from(q.dport)
    } else {
        c << 16
    }
}

fn app_class(a: AppProto) -> u32 {
    match a {
        AppProto::Http => 0,
        AppProto::Https => 1,
        AppProto::Quic => 2,
    }
}

fn net_range(n: &Ipv4Net) -> (u32, u32) {
    (u32::from(n.network()), u32::from(n.broadcast()))
}

/// A first-match classifier over source, destination and protocol/port.
#[derive(Debug, Clone)]
struct Tuple3 {
    /// Global id of local rule 0.
    base: u32,
    len: u32,
    src: IntervalMap,
    dst: IntervalMap,
    pp: IntervalMap,
}

impl Tuple3 {
    fn build(arena: &mut SetArena, rules: &[RuleSpec], base: u32, any_dst: bool) -> Tuple3 {
        let mut src = Vec::new();
        let mut dst = Vec::new();
        let mut pp = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let i = i as u32;
            for n in &r.sources {
                let (lo, hi) = net_range(n);
                src.push((lo, hi, i));
            }
            if any_dst {
                dst.push((0, u32::MAX, i));
            } else {
                for n in r.destinations.iter().chain(&r.resolved) {
                    let (lo, hi) = net_range(n);
                    dst.push((lo, hi, i));
                }
            }
            if r.kind == RuleKind::Application {
                for &(a, p) in &r.app_protocols {
                    let k = (proto_class(app_l4(a)) << 16) | u32::from(p);
                    pp.push((k, k, i));
                }
            } else {
                for (c, on) in [(0u32, r.protocols.tcp), (1, r.protocols.udp)] {
                    if on {
                        for &(lo, hi) in &r.ports {
                            pp.push(((c << 16) | u32::from(lo), (c << 16) | u32::from(hi), i));
                        }
                    }
                }
                for (c, on) in [(2u32, r.protocols.icmp), (3, r.protocols.other)] {
                    if on {
                        pp.push((c << 16, (c << 16) | 0xffff, i));
                    }
                }
            }
        }
        Tuple3 {
            base,
            len: rules.len() as u32,
            src: IntervalMap::build(arena, 32, &src),
            dst: IntervalMap::build(arena, 32, &dst),
            pp: IntervalMap::build(arena, 18, &pp),
        }
    }

    #[inline]
    fn first(&self, arena: &SetArena, q: &FlowQuery) -> Option<RuleId> {
        if self.len == 0 {
            return None;
        }
        let sets = [
            self.dst.get(u32::from(q.dst)),
            self.pp.get(pp_key(q)),
            self.src.get(u32::from(q.src)),
        ];
        arena.first_common(&sets).map(|r| r + self.base)
    }
}

#[derive(Debug, Clone)]
struct AppStage {
    base: u32,
    src: IntervalMap,
    port: IntervalMap,
    fqdn: FqdnTrie,
}

/// The compiled ruleset: built once off the packet path, queried per new flow without
/// allocation. Rule ids are indices in evaluation order: DNAT rules, then network rules, then
/// application rules.
#[derive(Debug, Clone)]
pub struct Ruleset {
    rules: Vec<RuleSpec>,
    snat: Vec<Ipv4Addr>,
    dnat_arena: SetArena,
    dnat: Tuple3,
    net_arena: SetArena,
    net: Tuple3,
    app_arena: SetArena,
    /// Whether any application rule could match (source + L4 protocol/port).
    app_pre: Tuple3,
    app: AppStage,
    /// (address, port or 0 for "the original port", protocol) of every DNAT rule's target.
    dnat_targets: Vec<(Ipv4Addr, u16, u8)>,
    /// (SNAT address, protocol, first port, last port) of every DNAT rule's public side.
    dnat_publics: Vec<(Ipv4Addr, u8, u16, u16)>,
}

impl Ruleset {
    /// Compiles rules. They are evaluated by kind (DNAT, network, application) and, within a
    /// kind, in the order given; `snat` are the appliance's SNAT addresses (DNAT only applies to
    /// flows toward one of them).
    pub fn compile(rules: Vec<RuleSpec>, snat: Vec<Ipv4Addr>) -> Ruleset {
        let mut ordered = Vec::with_capacity(rules.len());
        for k in [RuleKind::Dnat, RuleKind::Network, RuleKind::Application] {
            ordered.extend(rules.iter().filter(|r| r.kind == k).cloned());
        }
        let nd = ordered.iter().filter(|r| r.kind == RuleKind::Dnat).count();
        let nn = ordered
            .iter()
            .filter(|r| r.kind == RuleKind::Network)
            .count();
        let (dn, rest) = ordered.split_at(nd);
        let (nw, ap) = rest.split_at(nn);

        let mut dnat_arena = SetArena::new(dn.len());
        let dnat = Tuple3::build(&mut dnat_arena, dn, 0, false);
        dnat_arena.finish();
        let mut net_arena = SetArena::new(nw.len());
        let net = Tuple3::build(&mut net_arena, nw, nd as u32, false);
        net_arena.finish();

        let mut app_arena = SetArena::new(ap.len());
        let base = (nd + nn) as u32;
        let app_pre = Tuple3::build(&mut app_arena, ap, base, true);
        let mut src = Vec::new();
        let mut port = Vec::new();
        let mut pats = Vec::new();
        for (i, r) in ap.iter().enumerate() {
            let i = i as u32;
            for n in &r.sources {
                let (lo, hi) = net_range(n);
                src.push((lo, hi, i));
            }
            for &(a, p) in &r.app_protocols {
                let k = (app_class(a) << 16) | u32::from(p);
                port.push((k, k, i));
            }
            for f in &r.fqdns {
                pats.push((f.clone(), i));
            }
        }
        let app = AppStage {
            base,
            src: IntervalMap::build(&mut app_arena, 32, &src),
            port: IntervalMap::build(&mut app_arena, 18, &port),
            fqdn: FqdnTrie::build(&mut app_arena, &pats),
        };
        app_arena.finish();
        let mut dnat_targets = Vec::new();
        for r in ordered.iter().filter(|r| r.kind == RuleKind::Dnat) {
            if let Some((to, port)) = r.translated {
                for (on, p) in [(r.protocols.tcp, proto::TCP), (r.protocols.udp, proto::UDP)] {
                    if on && !dnat_targets.contains(&(to, port.unwrap_or(0), p)) {
                        dnat_targets.push((to, port.unwrap_or(0), p));
                    }
                }
            }
        }
        let mut dnat_publics = Vec::new();
        for r in ordered.iter().filter(|r| r.kind == RuleKind::Dnat) {
            for &a in snat
                .iter()
                .filter(|&&a| r.destinations.iter().any(|d| d.contains(&a)))
            {
                for (on, p) in [(r.protocols.tcp, proto::TCP), (r.protocols.udp, proto::UDP)] {
                    for &(lo, hi) in r.ports.iter().filter(|_| on) {
                        if !dnat_publics.contains(&(a, p, lo, hi)) {
                            dnat_publics.push((a, p, lo, hi));
                        }
                    }
                }
            }
        }
        Ruleset {
            dnat_targets,
            dnat_publics,
            rules: ordered,
            snat,
            dnat_arena,
            dnat,
            net_arena,
            net,
            app_arena,
            app_pre,
            app,
        }
    }

    /// The distinct exact names the network rules' `destination_fqdns` name, sorted.
    pub fn destination_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .rules
            .iter()
            .flat_map(|r| &r.destination_fqdns)
            .filter_map(|f| match f {
                FqdnPattern::Exact(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// This ruleset recompiled with `addrs(name)` as the resolved destinations of every rule
    /// naming `name` in `destination_fqdns` (replacing what it had). Rule ids do not change.
    pub fn with_resolved(&self, addrs: impl Fn(&str) -> Vec<Ipv4Addr>) -> Ruleset {
        let mut rules = self.rules.clone();
        for r in &mut rules {
            r.resolved.clear();
            for f in &r.destination_fqdns {
                if let FqdnPattern::Exact(n) = f {
                    for a in addrs(n) {
                        let h = Ipv4Net::from(a);
                        if !r.resolved.contains(&h) {
                            r.resolved.push(h);
                        }
                    }
                }
            }
            r.resolved.sort();
        }
        Ruleset::compile(rules, self.snat.clone())
    }

    /// The rules in evaluation order (index = [`RuleId`]).
    pub fn rules(&self) -> &[RuleSpec] {
        &self.rules
    }

    /// One rule.
    pub fn rule(&self, id: RuleId) -> Option<&RuleSpec> {
        self.rules.get(id as usize)
    }

    /// The SNAT addresses DNAT applies to.
    pub fn snat_addresses(&self) -> &[Ipv4Addr] {
        &self.snat
    }

    /// Bytes held by the compiled sets (for sizing).
    pub fn compiled_bytes(&self) -> usize {
        self.dnat_arena.bytes() + self.net_arena.bytes() + self.app_arena.bytes()
    }

    fn verdict(&self, id: RuleId, q: &FlowQuery) -> Decision {
        let Some(r) = self.rules.get(id as usize) else {
            return Decision::Deny { rule: None };
        };
        if let Some((to, port)) = r.translated {
            return Decision::Dnat {
                rule: id,
                to,
                to_port: port.unwrap_or(q.dport),
            };
        }
        match r.action {
            Action::Allow => Decision::Allow { rule: id },
            Action::Deny => Decision::Deny { rule: Some(id) },
        }
    }
}

impl Policy for Ruleset {
    fn decide(&self, q: &FlowQuery) -> Decision {
        if self.snat.contains(&q.dst) {
            if let Some(id) = self.dnat.first(&self.dnat_arena, q) {
                return self.verdict(id, q);
            }
        }
        if let Some(id) = self.net.first(&self.net_arena, q) {
            return self.verdict(id, q);
        }
        if self.app_pre.first(&self.app_arena, q).is_some() {
            return Decision::Inspect;
        }
        Decision::Deny { rule: None }
    }

    fn decide_app(&self, q: &FlowQuery, app: AppProto, fqdn: Option<&str>) -> Decision {
        let Some(name) = fqdn else {
            return Decision::Deny { rule: None };
        };
        if q.proto != app_l4(app) {
            return Decision::Deny { rule: None };
        }
        let s = self.app.src.get(u32::from(q.src));
        let p = self
            .app
            .port
            .get((app_class(app) << 16) | u32::from(q.dport));
        let mut best: Option<u32> = None;
        let mut visited = 0usize;
        self.app.fqdn.for_each_match(name, |f| {
            visited += 1;
            if visited > MAX_CANDIDATES {
                return;
            }
            if let Some(r) = self.app_arena.first_common(&[s, p, f]) {
                best = Some(best.map_or(r, |b| b.min(r)));
            }
        });
        match best {
            Some(r) => self.verdict(r + self.app.base, q),
            None => Decision::Deny { rule: None },
        }
    }

    fn describe(&self, rule: RuleId) -> Option<RuleRef<'_>> {
        self.rules.get(rule as usize).map(|r| RuleRef {
            group: &r.group,
            collection: &r.collection,
            rule: &r.name,
            kind: r.kind.as_str(),
        })
    }

    fn is_audit(&self, rule: RuleId) -> bool {
        self.rules.get(rule as usize).is_some_and(|r| r.audit)
    }

    fn rule_count(&self) -> usize {
        self.rules.len()
    }

    fn dnat_targets(&self) -> &[(Ipv4Addr, u16, u8)] {
        &self.dnat_targets
    }

    fn dnat_publics(&self) -> &[(Ipv4Addr, u8, u16, u16)] {
        &self.dnat_publics
    }
}

/// The naive linear evaluator the compiled [`Ruleset`] must agree with (tests, `explain`).
pub mod reference {
    use super::*;

    fn ordered(rules: &[RuleSpec]) -> Vec<(RuleId, &RuleSpec)> {
        let mut v = Vec::new();
        for k in [RuleKind::Dnat, RuleKind::Network, RuleKind::Application] {
            v.extend(rules.iter().filter(|r| r.kind == k));
        }
        v.into_iter()
            .enumerate()
            .map(|(i, r)| (i as RuleId, r))
            .collect()
    }

    fn verdict(id: RuleId, r: &RuleSpec, q: &FlowQuery) -> Decision {
        if let Some((to, port)) = r.translated {
            return Decision::Dnat {
                rule: id,
                to,
                to_port: port.unwrap_or(q.dport),
            };
        }
        match r.action {
            Action::Allow => Decision::Allow { rule: id },
            Action::Deny => Decision::Deny { rule: Some(id) },
        }
    }

    /// [`Policy::decide`] by a linear scan.
    pub fn decide(rules: &[RuleSpec], snat: &[Ipv4Addr], q: &FlowQuery) -> Decision {
        let o = ordered(rules);
        if snat.contains(&q.dst) {
            for (id, r) in o.iter().filter(|(_, r)| r.kind == RuleKind::Dnat) {
                if r.field_match(q).all() {
                    return verdict(*id, r, q);
                }
            }
        }
        for (id, r) in o.iter().filter(|(_, r)| r.kind == RuleKind::Network) {
            if r.field_match(q).all() {
                return verdict(*id, r, q);
            }
        }
        for (_, r) in o.iter().filter(|(_, r)| r.kind == RuleKind::Application) {
            if r.field_match(q).all() {
                return Decision::Inspect;
            }
        }
        Decision::Deny { rule: None }
    }

    /// [`Policy::decide_app`] by a linear scan.
    pub fn decide_app(
        rules: &[RuleSpec],
        q: &FlowQuery,
        app: AppProto,
        fqdn: Option<&str>,
    ) -> Decision {
        let Some(name) = fqdn else {
            return Decision::Deny { rule: None };
        };
        if q.proto != app_l4(app) {
            return Decision::Deny { rule: None };
        }
        for (id, r) in ordered(rules)
            .into_iter()
            .filter(|(_, r)| r.kind == RuleKind::Application)
        {
            if r.sources.iter().any(|n| n.contains(&q.src))
                && r.app_protocols.contains(&(app, q.dport))
                && r.fqdns.iter().any(|f| f.matches(name))
            {
                return verdict(id, r, q);
            }
        }
        Decision::Deny { rule: None }
    }
}
