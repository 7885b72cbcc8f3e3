//! Validation and compilation of the raw schema into engine settings and a ruleset.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::Ipv4Net;

use super::schema::{Raw, RawCollection, RawRule, TagFile, S};
use super::{ConfigErrors, Diagnostic, DnsSettings, LineIndex, Loaded, Severity};
use crate::conntrack::{Timeouts, MAX_FLOWS_PER_WORKER};
use crate::datapath::{EngineConfig, Iface, IfaceRole, Route};
use crate::nat::{MappingMode, NatConfig};
use crate::policy::{Action, AppProto, FqdnPattern, Protocols, RuleKind, RuleSpec, Ruleset};

/// Where the admin socket listens unless `appliance.admin_socket` says otherwise, in the
/// host's network namespace (in another one, see `control::admin::default_socket_path`).
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/tollgate/admin.sock";

const TAGS_TOML: &str = include_str!("../../data/fqdn-tags.toml");

/// The FQDN patterns of a tag from `data/fqdn-tags.toml`, or `None` for an unknown tag.
pub fn fqdn_tag(name: &str) -> Option<Vec<String>> {
    let tags: TagFile = toml::from_str(TAGS_TOML).ok()?;
    tags.tags
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

struct Ctx<'a> {
    origin: &'a str,
    idx: LineIndex<'a>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn diag(&self, span: &Range<usize>, severity: Severity, message: String) -> Diagnostic {
        let (line, col) = self.idx.line_col(span.start);
        Diagnostic {
            origin: self.origin.to_string(),
            line,
            col,
            severity,
            message,
        }
    }
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.diag(&span, Severity::Error, message.into());
        self.errors.push(d);
    }
    fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.diag(&span, Severity::Warning, message.into());
        self.warnings.push(d);
    }

    fn addr(&mut self, v: &S<String>, what: &str) -> Option<Ipv4Addr> {
        match v.get_ref().trim().parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                let msg = if v.get_ref().contains('/') {
                    format!(
                        "{what} must be a single IPv4 address, not a prefix: \"{}\"",
                        v.get_ref()
                    )
                } else {
                    format!("{what} \"{}\" is not an IPv4 address", v.get_ref())
                };
                self.err(v.span(), msg);
                None
            }
        }
    }

    /// A prefix (CIDR or bare address); host bits set is an error naming the intended prefix.
    fn prefix(&mut self, v: &S<String>, allow_star: bool) -> Option<Ipv4Net> {
        let s = v.get_ref().trim();
        if s == "*" || s.eq_ignore_ascii_case("any") {
            if allow_star {
                return Some(Ipv4Net::default());
            }
            self.err(v.span(), "\"*\" is not allowed here: give a prefix");
            return None;
        }
        if !s.contains('/') {
            return match s.parse::<Ipv4Addr>() {
                Ok(a) => Some(Ipv4Net::from(a)),
                Err(_) => {
                    self.err(
                        v.span(),
                        format!("\"{s}\" is not an IPv4 address or CIDR prefix"),
                    );
                    None
                }
            };
        }
        match s.parse::<Ipv4Net>() {
            Ok(n) if n.trunc() != n => {
                self.err(
                    v.span(),
                    format!(
                        "the prefix \"{s}\" has host bits set; did you mean \"{}\"?",
                        n.trunc()
                    ),
                );
                None
            }
            Ok(n) => Some(n),
            Err(_) => {
                self.err(
                    v.span(),
                    format!("\"{s}\" is not a valid CIDR prefix (expected a.b.c.d/len, len 0-32)"),
                );
                None
            }
        }
    }

    /// An interface CIDR: the address with its connected prefix (host bits expected).
    fn iface_cidr(&mut self, v: &S<String>) -> Option<(Ipv4Addr, Ipv4Net)> {
        match v.get_ref().trim().parse::<Ipv4Net>() {
            Ok(n) => Some((n.addr(), n.trunc())),
            Err(_) => {
                self.err(
                    v.span(),
                    format!(
                        "interface address \"{}\" must be a CIDR like \"198.18.0.1/24\" (the address and its connected prefix)",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }
}

/// A parsed port range, or an error sentence.
fn parse_port_range(s: &str, allow_star: bool) -> Result<(u16, u16), String> {
    let s = s.trim();
    if allow_star && s == "*" {
        return Ok((0, 65535));
    }
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s, s),
    };
    let num = |x: &str| -> Result<u16, String> {
        match x.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(n) => Err(format!("port {n} is out of range (1-65535)")),
            Err(_) => Err(format!(
                "\"{s}\" is not a port, a port range like \"9000-9010\", or \"*\""
            )),
        }
    };
    let (lo, hi) = (num(a)?, num(b)?);
    if lo > hi {
        return Err(format!(
            "the port range \"{s}\" is inverted: {lo} is greater than {hi}"
        ));
    }
    Ok((lo, hi))
}

fn priority(ctx: &mut Ctx, p: &S<i64>, what: &str) -> u32 {
    let v = *p.get_ref();
    if !(100..=65000).contains(&v) {
        ctx.err(
            p.span(),
            format!("{what} priority {v} is out of range: priorities go from 100 to 65000"),
        );
    }
    v.clamp(0, 65000) as u32
}

struct RuleOut {
    spec: RuleSpec,
    order: (u32, u32, usize),
    name_span: Range<usize>,
    literal_srcs: Vec<(Ipv4Net, Range<usize>)>,
    literal_dsts: Vec<(Ipv4Net, Range<usize>)>,
}

pub(super) fn load(text: &str, origin: &str) -> Result<Loaded, ConfigErrors> {
    let mut ctx = Ctx {
        origin,
        idx: LineIndex::new(text),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    for (span, msg) in super::keys::unknown_keys(text) {
        ctx.err(span, msg);
    }
    let raw: Raw = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().trim().replace('`', "\"");
            ctx.err(span, msg);
            return Err(fail(ctx));
        }
    };
    let built = build(&mut ctx, raw);
    match built {
        Some(l) if ctx.errors.is_empty() => Ok(Loaded {
            warnings: ctx.warnings,
            ..l
        }),
        _ => Err(fail(ctx)),
    }
}

fn fail(mut ctx: Ctx) -> ConfigErrors {
    ctx.errors.sort_by_key(|d| (d.line, d.col));
    ctx.warnings.sort_by_key(|d| (d.line, d.col));
    ConfigErrors::Invalid {
        origin: ctx.origin.to_string(),
        errors: ctx.errors,
        warnings: ctx.warnings,
    }
}

fn build(ctx: &mut Ctx, raw: Raw) -> Option<Loaded> {
    // ---- interfaces
    let mut interfaces = Vec::new();
    let mut if_names: HashMap<String, usize> = HashMap::new();
    if raw.interface.is_empty() {
        ctx.err(
            0..0,
            "no [[interface]] is configured: the appliance needs at least one data interface",
        );
    }
    if raw.interface.len() > 255 {
        ctx.err(0..0, "more than 255 interfaces are configured");
    }
    for i in &raw.interface {
        let name = i.name.get_ref().clone();
        if if_names.insert(name.clone(), interfaces.len()).is_some() {
            ctx.err(
                i.name.span(),
                format!("the interface name \"{name}\" is used twice"),
            );
        }
        let role = match i.role.get_ref().as_str() {
            "inside" => IfaceRole::Inside,
            "outside" => IfaceRole::Outside,
            "one-arm" => IfaceRole::OneArm,
            other => {
                ctx.err(
                    i.role.span(),
                    format!(
                        "interface role \"{other}\" is unknown: use inside, outside or one-arm"
                    ),
                );
                IfaceRole::Inside
            }
        };
        let mut addrs = Vec::new();
        let mut connected = Vec::new();
        for a in &i.addresses {
            if let Some((ad, n)) = ctx.iface_cidr(a) {
                addrs.push(ad);
                if !connected.contains(&n) {
                    connected.push(n);
                }
            }
        }
        let gateway = match &i.gateway {
            Some(g) if g.get_ref() == "none" => None,
            Some(g) => ctx.addr(g, "gateway"),
            None => None,
        };
        let mtu = match &i.mtu {
            Some(m) => {
                let v = *m.get_ref();
                if !(576..=9216).contains(&v) {
                    ctx.err(m.span(), format!("mtu {v} is out of range (576-9216)"));
                }
                v.clamp(576, 9216) as u16
            }
            None => 1500,
        };
        interfaces.push(Iface {
            name,
            role,
            addrs,
            gateway,
            connected,
            mtu,
        });
    }
    // ---- routes
    let mut routes = Vec::new();
    for r in &raw.route {
        let prefix = ctx.prefix(&r.prefix, false);
        let via = ctx.addr(&r.via, "route via");
        let iface = match if_names.get(r.interface.get_ref()) {
            Some(&i) => Some(i as u8),
            None => {
                ctx.err(
                    r.interface.span(),
                    format!(
                        "the route names interface \"{}\", which is not a configured [[interface]]",
                        r.interface.get_ref()
                    ),
                );
                None
            }
        };
        if let (Some(prefix), Some(via), Some(iface)) = (prefix, via, iface) {
            routes.push(Route { prefix, via, iface });
        }
    }
    // ---- appliance
    let inside_prefixes: Vec<Ipv4Net> = raw
        .appliance
        .inside_prefixes
        .iter()
        .filter_map(|p| ctx.prefix(p, false))
        .collect();
    let icmp_source = match &raw.appliance.icmp_source {
        Some(a) => ctx.addr(a, "icmp_source"),
        None => {
            let found = interfaces
                .iter()
                .filter(|i| matches!(i.role, IfaceRole::Inside | IfaceRole::OneArm))
                .flat_map(|i| i.addrs.first())
                .next()
                .copied();
            if found.is_none() && !raw.interface.is_empty() {
                ctx.err(
                    0..0,
                    "appliance.icmp_source is not set and no inside or one-arm interface has an address to use instead",
                );
            }
            found
        }
    };
    let management = match &raw.appliance.management {
        Some(m) => match m.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                ctx.err(
                    m.span(),
                    format!(
                        "management address \"{}\" is not an address:port",
                        m.get_ref()
                    ),
                );
                None
            }
        },
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
    };
    let admin_socket = match &raw.appliance.admin_socket {
        Some(a) if !a.get_ref().starts_with('/') => {
            ctx.err(
                a.span(),
                format!("admin socket \"{}\" must be an absolute path", a.get_ref()),
            );
            None
        }
        Some(a) => Some(Some(PathBuf::from(a.get_ref()))),
        None => Some(None),
    };
    let busy_poll = busy_poll_settings(ctx, &raw.appliance);
    let backend = match &raw.appliance.backend {
        None => crate::io::Backend::default(),
        Some(b) => crate::io::Backend::parse(b.get_ref()).unwrap_or_else(|| {
            ctx.err(
                b.span(),
                format!(
                    "backend \"{}\" is not one of \"auto\", \"af_xdp\", \"af_packet\"",
                    b.get_ref()
                ),
            );
            crate::io::Backend::default()
        }),
    };
    let workers = match raw.appliance.workers {
        Some(0) | None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(n) => n,
    };
    // ---- snat
    let s = &raw.snat;
    let mut nat = NatConfig::default();
    let mut snat_spans = Vec::new();
    for a in &s.addresses {
        if let Some(ad) = ctx.addr(a, "SNAT address") {
            nat.public_addrs.push(ad);
            snat_spans.push(a.span());
        }
    }
    if s.addresses.is_empty() {
        ctx.err(
            0..0,
            "snat.addresses is empty: the appliance needs at least one address to SNAT to",
        );
    }
    if let Some(p) = &s.ports {
        match parse_port_range(p.get_ref(), false) {
            Ok((lo, hi)) => {
                nat.port_min = lo;
                nat.port_max = hi;
            }
            Err(m) => ctx.err(p.span(), format!("snat.ports: {m}")),
        }
    }
    if let Some(m) = &s.mapping {
        nat.mapping = match m.get_ref().as_str() {
            "endpoint-independent" => MappingMode::EndpointIndependent,
            "address-and-port-dependent" => MappingMode::AddressAndPortDependent,
            o => {
                ctx.err(m.span(), format!("snat.mapping \"{o}\" is unknown: use endpoint-independent or address-and-port-dependent"));
                MappingMode::EndpointIndependent
            }
        };
    }
    if let Some(ps) = &s.port_sharing {
        nat.port_sharing = *ps.get_ref();
        if !nat.port_sharing && nat.mapping == MappingMode::AddressAndPortDependent {
            ctx.err(
                ps.span(),
                "snat.port_sharing = false needs mapping = \"endpoint-independent\": address-and-port-dependent mapping always reuses ports toward different destinations",
            );
        }
    }
    nat.per_host_quota = s.per_host_quota.filter(|&q| q > 0);
    if let Some(c) = s.reuse_cooldown {
        nat.reuse_cooldown = c;
    }
    if let Some(r) = s.time_wait_reuse {
        nat.time_wait_reuse = r;
    }
    if let Some(ex) = &s.exempt {
        nat.exempt = ex.iter().filter_map(|p| ctx.prefix(p, false)).collect();
    }
    let mss_clamp = s.mss_clamp.as_ref().and_then(|m| {
        let v = *m.get_ref();
        if (536..=9176).contains(&v) {
            Some(v as u16)
        } else {
            ctx.err(
                m.span(),
                format!("mss_clamp {v} is out of range (536-9176)"),
            );
            None
        }
    });
    // ---- conntrack
    let t = &raw.conntrack.timeouts;
    let d = Timeouts::default();
    let timeouts = Timeouts {
        tcp_syn: t.tcp_syn.unwrap_or(d.tcp_syn),
        tcp_established: t.tcp_established.unwrap_or(d.tcp_established),
        tcp_closing: t.tcp_closing.unwrap_or(d.tcp_closing),
        tcp_time_wait: t.tcp_time_wait.unwrap_or(d.tcp_time_wait),
        tcp_rst: t.tcp_rst.unwrap_or(d.tcp_rst),
        udp: t.udp.unwrap_or(d.udp),
        icmp: t.icmp.unwrap_or(d.icmp),
    };
    let max_flows = match &raw.conntrack.max_flows {
        Some(m) => {
            let v = *m.get_ref();
            // The flow index keeps 2 entries per flow in 32-bit slab references at load <= 1/2:
            // 2^30 flows per worker (a 64 GiB slab) is as far as that holds.
            if !(1..=MAX_FLOWS_PER_WORKER as i64).contains(&v) {
                ctx.err(
                    m.span(),
                    format!(
                        "conntrack.max_flows {v} is out of range (1-{MAX_FLOWS_PER_WORKER} per worker)"
                    ),
                );
            }
            v.clamp(1, MAX_FLOWS_PER_WORKER as i64) as u32
        }
        None => 1 << 20,
    };
    // ---- ip groups
    let mut groups: BTreeMap<String, Vec<Ipv4Net>> = BTreeMap::new();
    for (name, list) in &raw.ip_groups {
        let nets = list.iter().filter_map(|p| ctx.prefix(p, false)).collect();
        groups.insert(name.clone(), nets);
    }
    // ---- service tags
    let (tags_path, tags) = service_tags(ctx, &raw.appliance);
    // ---- rules
    // None: no tags file; Some(None): it failed (already an error: no error per tag).
    let tags_state = tags_path.as_ref().map(|_| tags.as_ref());
    let rules = build_rules(ctx, &raw, &groups, &nat.public_addrs, tags_state);
    let dns = dns_settings(ctx, &raw.dns, &nat, &rules);
    let host = host_policy(
        ctx,
        &raw.host,
        management.as_ref(),
        raw.appliance.management.as_ref(),
    );
    analyze(ctx, &rules, !dns.servers.is_empty());
    let specs: Vec<RuleSpec> = rules.into_iter().map(|r| r.spec).collect();
    if !ctx.errors.is_empty() {
        return None;
    }
    let policy = Arc::new(Ruleset::compile(specs, nat.public_addrs.clone()));
    Some(Loaded {
        engine: EngineConfig {
            interfaces,
            routes,
            inside_prefixes,
            nat,
            timeouts,
            max_flows_per_worker: max_flows,
            mss_clamp,
            icmp_on_exhaustion: s.icmp_on_exhaustion.unwrap_or(true),
            icmp_source: icmp_source?,
        },
        policy,
        workers,
        management: management?,
        admin_socket: admin_socket?,
        decision_log: raw.appliance.decision_log.unwrap_or(true),
        busy_poll,
        backend,
        dns,
        host,
        fqdn_addresses: BTreeMap::new(),
        service_tags_file: tags_path,
        warnings: Vec::new(),
    })
}

/// Reads `appliance.service_tags_file` (relative to the configuration's directory): the path,
/// and the tags with the file's name for messages.
fn service_tags(
    ctx: &mut Ctx,
    a: &super::schema::RawAppliance,
) -> (Option<PathBuf>, Option<(String, super::ServiceTags)>) {
    let Some(f) = &a.service_tags_file else {
        return (None, None);
    };
    let given = std::path::Path::new(f.get_ref());
    let path = match std::path::Path::new(ctx.origin).parent() {
        Some(dir) if given.is_relative() => dir.join(given),
        _ => given.to_path_buf(),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            ctx.err(
                f.span(),
                format!(
                    "appliance.service_tags_file \"{}\" could not be read: {e}",
                    path.display()
                ),
            );
            return (Some(path), None);
        }
    };
    match super::ServiceTags::parse(&text) {
        Ok(t) => (Some(path), Some((f.get_ref().clone(), t))),
        Err(m) => {
            ctx.err(
                f.span(),
                format!("appliance.service_tags_file \"{}\": {m}", path.display()),
            );
            (Some(path), None)
        }
    }
}

/// `busy_poll_us` (0-10000, default [`DEFAULT_BUSY_POLL_US`]) and `busy_poll_mode` ("yield",
/// the default, or "pause").
///
/// [`DEFAULT_BUSY_POLL_US`]: crate::io::runtime::DEFAULT_BUSY_POLL_US
fn busy_poll_settings(
    ctx: &mut Ctx,
    a: &super::schema::RawAppliance,
) -> crate::io::runtime::BusyPoll {
    use crate::io::runtime::{BusyPoll, SpinMode};
    let mut bp = BusyPoll::default();
    if let Some(us) = &a.busy_poll_us {
        let v = *us.get_ref();
        if (0..=10_000).contains(&v) {
            bp.window_ns = v as u64 * 1_000;
        } else {
            ctx.err(
                us.span(),
                format!("busy_poll_us {v} is out of range (0-10000 microseconds)"),
            );
        }
    }
    if let Some(m) = &a.busy_poll_mode {
        match m.get_ref().as_str() {
            "yield" => bp.mode = SpinMode::Yield,
            "pause" => bp.mode = SpinMode::Pause,
            other => ctx.err(
                m.span(),
                format!("busy_poll_mode \"{other}\" is not one of \"yield\", \"pause\""),
            ),
        }
    }
    bp
}

/// `[host]`: `policy` ("closed", the default, or "open") and the sources allowed to reach
/// the management listener, SSH and ping. Warns when the management listener is on a
/// non-loopback address that no source may reach (a load balancer's probe would fail).
fn host_policy(
    ctx: &mut Ctx,
    h: &super::schema::RawHost,
    management: Option<&std::net::SocketAddr>,
    management_span: Option<&S<String>>,
) -> super::HostPolicy {
    let mut out = super::HostPolicy::default();
    if let Some(p) = &h.policy {
        match p.get_ref().as_str() {
            "closed" => out.closed = true,
            "open" => out.closed = false,
            other => ctx.err(
                p.span(),
                format!("host.policy \"{other}\" is not one of \"closed\", \"open\""),
            ),
        }
    }
    let nets = |ctx: &mut Ctx, v: &[S<String>]| -> Vec<Ipv4Net> {
        v.iter().filter_map(|p| ctx.prefix(p, true)).collect()
    };
    out.management_sources = nets(ctx, &h.management_sources);
    out.ssh_sources = nets(ctx, &h.ssh_sources);
    out.ping_sources = nets(ctx, &h.ping_sources);
    if let (true, Some(m), Some(span)) = (out.closed, management, management_span) {
        if !m.ip().is_loopback() && out.management_sources.is_empty() {
            ctx.warn(
                span.span(),
                format!(
                    "the management listener {m} is on a data address but host.management_sources is empty: the closed host policy drops every health probe and scrape that reaches it over a data interface (in Azure, list the load balancer's probe source 168.63.129.16)"
                ),
            );
        }
    }
    out
}

/// `[dns]`: servers, refresh bounds and the resolver's source ports, which must stay clear of
/// the SNAT port range and of every UDP and TCP DNAT port (either would take the resolver's
/// answers; TCP carries the retries of truncated answers).
fn dns_settings(
    ctx: &mut Ctx,
    d: &super::schema::RawDns,
    nat: &crate::nat::NatConfig,
    rules: &[RuleOut],
) -> DnsSettings {
    let mut out = DnsSettings::default();
    for s in &d.servers {
        match s.get_ref().trim().parse::<Ipv4Addr>() {
            Ok(a) if !a.is_unspecified() && !a.is_broadcast() && !a.is_multicast() => {
                out.servers.push(a)
            }
            _ => ctx.err(
                s.span(),
                format!(
                    "dns.servers: \"{}\" is not an IPv4 unicast address (port 53 is implied)",
                    s.get_ref()
                ),
            ),
        }
    }
    let mut secs = |v: &Option<S<i64>>, key: &str, dflt: u64| -> u64 {
        match v {
            Some(v) if (1..=86_400).contains(v.get_ref()) => *v.get_ref() as u64,
            Some(v) => {
                ctx.err(
                    v.span(),
                    format!(
                        "dns.{key} {} is out of range (1-86400 seconds)",
                        v.get_ref()
                    ),
                );
                dflt
            }
            None => dflt,
        }
    };
    let min = secs(&d.min_refresh, "min_refresh", 5);
    let max = secs(&d.max_refresh, "max_refresh", 300);
    if min > max {
        let sp = d
            .max_refresh
            .as_ref()
            .or(d.min_refresh.as_ref())
            .map_or(0..0, |v| v.span());
        ctx.err(
            sp,
            format!("dns.min_refresh ({min} s) is greater than dns.max_refresh ({max} s)"),
        );
    }
    out.min_refresh = std::time::Duration::from_secs(min);
    out.max_refresh = std::time::Duration::from_secs(max.max(min));
    // The source ports: `source_ports = "A-B"`, or the older `source_port = N` (the range
    // N-N, with a warning), or the default.
    let (lo, hi, span, what) = match (&d.source_ports, &d.source_port) {
        (Some(r), old) => {
            if let Some(p) = old {
                ctx.err(
                    p.span(),
                    "dns.source_port and dns.source_ports are both set: keep dns.source_ports (source_port is the older single-port form)",
                );
            }
            match parse_port_range(r.get_ref(), false) {
                Ok((lo, hi)) => {
                    let n = usize::from(hi - lo) + 1;
                    if n > super::MAX_DNS_SOURCE_PORTS {
                        ctx.err(
                            r.span(),
                            format!(
                                "dns.source_ports \"{}\" names {n} ports: at most {} (the resolver holds a socket open on each)",
                                r.get_ref(),
                                super::MAX_DNS_SOURCE_PORTS
                            ),
                        );
                        return out;
                    }
                    if n < super::FEW_DNS_SOURCE_PORTS && !d.servers.is_empty() {
                        ctx.warn(
                            r.span(),
                            format!(
                                "dns.source_ports \"{}\" names only {n} port(s): an off-path spoofer has that few ports to guess besides the query id and the name's case; {} or more are advised (the default is {}-{})",
                                r.get_ref(),
                                super::FEW_DNS_SOURCE_PORTS,
                                super::DEFAULT_DNS_SOURCE_PORTS.start(),
                                super::DEFAULT_DNS_SOURCE_PORTS.end()
                            ),
                        );
                    }
                    let what = if lo == hi {
                        format!("dns.source_ports {lo}")
                    } else {
                        format!("dns.source_ports {lo}-{hi}")
                    };
                    (lo, hi, r.span(), what)
                }
                Err(m) => {
                    ctx.err(r.span(), format!("dns.source_ports: {m}"));
                    return out;
                }
            }
        }
        (None, Some(p)) => {
            if !(1..=65535).contains(p.get_ref()) {
                ctx.err(
                    p.span(),
                    format!("dns.source_port {} is out of range (1-65535)", p.get_ref()),
                );
                return out;
            }
            let port = *p.get_ref() as u16;
            if !d.servers.is_empty() {
                ctx.warn(
                    p.span(),
                    format!(
                        "dns.source_port {port} fixes the resolver's source port: an off-path spoofer then has only the query id and the name's case to guess; prefer dns.source_ports = \"A-B\" (one port picked at random per query; the default is {}-{})",
                        super::DEFAULT_DNS_SOURCE_PORTS.start(),
                        super::DEFAULT_DNS_SOURCE_PORTS.end()
                    ),
                );
            }
            (port, port, p.span(), format!("dns.source_port {port}"))
        }
        (None, None) => {
            let (lo, hi) = (
                *super::DEFAULT_DNS_SOURCE_PORTS.start(),
                *super::DEFAULT_DNS_SOURCE_PORTS.end(),
            );
            (
                lo,
                hi,
                0..0,
                format!("dns.source_ports {lo}-{hi} (the default; set dns.source_ports)"),
            )
        }
    };
    out.source_ports = lo..=hi;
    if out.servers.is_empty() {
        // No resolver runs: the ports are not used.
        return out;
    }
    let single = lo == hi;
    if lo <= nat.port_max && nat.port_min <= hi {
        let m = if single {
            format!(
                "{what} is inside the SNAT port range {}-{}: a SNAT mapping could take it and the resolver's answers would not reach the kernel; pick a port outside the range",
                nat.port_min, nat.port_max
            )
        } else {
            format!(
                "{what} overlaps the SNAT port range {}-{}: a SNAT mapping could take those ports and the resolver's answers would not reach the kernel; pick ports outside the range",
                nat.port_min, nat.port_max
            )
        };
        ctx.err(span.clone(), m);
    }
    // The DNAT rules' ports: UDP for the queries, TCP for the retries of truncated answers.
    for r in rules {
        let s = &r.spec;
        if s.kind != RuleKind::Dnat {
            continue;
        }
        let Some((a, b)) = s
            .ports
            .iter()
            .filter(|&&(a, b)| a <= hi && lo <= b)
            .map(|&(a, b)| (a.max(lo), b.min(hi)))
            .next()
        else {
            continue;
        };
        let proto = match (s.protocols.udp, s.protocols.tcp) {
            (true, true) => "UDP and TCP",
            (true, false) => "UDP",
            (false, true) => "TCP",
            (false, false) => continue,
        };
        let m = if single {
            format!(
                "{what} is a {proto} port of the DNAT rule \"{}\": its answers would be translated inside",
                s.name
            )
        } else {
            let ports = if a == b {
                format!("port {a}")
            } else {
                format!("ports {a}-{b}")
            };
            format!(
                "{what} includes {proto} {ports} of the DNAT rule \"{}\": the resolver's answers there would be translated inside",
                s.name
            )
        };
        ctx.err(span.clone(), m);
    }
    out
}

fn build_rules(
    ctx: &mut Ctx,
    raw: &Raw,
    groups: &BTreeMap<String, Vec<Ipv4Net>>,
    snat: &[Ipv4Addr],
    tags: Option<Option<&(String, super::ServiceTags)>>,
) -> Vec<RuleOut> {
    let mut out = Vec::new();
    let mut group_names: HashSet<&str> = HashSet::new();
    let mut group_prios: HashMap<i64, &str> = HashMap::new();
    for g in &raw.group {
        let gname = g.name.get_ref();
        if !group_names.insert(gname) {
            ctx.err(
                g.name.span(),
                format!("the group name \"{gname}\" is used twice"),
            );
        }
        let gp = priority(ctx, &g.priority, "group");
        if let Some(other) = group_prios.insert(*g.priority.get_ref(), gname) {
            ctx.err(
                g.priority.span(),
                format!(
                    "group \"{gname}\" has priority {}, which group \"{other}\" already has: priorities within a level must differ",
                    g.priority.get_ref()
                ),
            );
        }
        let mut coll_names: HashSet<&str> = HashSet::new();
        let mut coll_prios: HashMap<i64, &str> = HashMap::new();
        for c in &g.collection {
            let cname = c.name.get_ref();
            if !coll_names.insert(cname) {
                ctx.err(
                    c.name.span(),
                    format!("the collection name \"{cname}\" is used twice in group \"{gname}\""),
                );
            }
            let cp = priority(ctx, &c.priority, "collection");
            if let Some(other) = coll_prios.insert(*c.priority.get_ref(), cname) {
                ctx.err(
                    c.priority.span(),
                    format!(
                        "collection \"{cname}\" has priority {}, which collection \"{other}\" in group \"{gname}\" already has: priorities within a level must differ",
                        c.priority.get_ref()
                    ),
                );
            }
            collection(ctx, gname, gp, cp, c, groups, snat, tags, &mut out);
        }
    }
    out.sort_by_key(|r| r.order);
    out
}

#[allow(clippy::too_many_arguments)]
fn collection(
    ctx: &mut Ctx,
    gname: &str,
    gp: u32,
    cp: u32,
    c: &RawCollection,
    groups: &BTreeMap<String, Vec<Ipv4Net>>,
    snat: &[Ipv4Addr],
    tags: Option<Option<&(String, super::ServiceTags)>>,
    out: &mut Vec<RuleOut>,
) {
    let cname = c.name.get_ref();
    let kind = match c.kind.get_ref().as_str() {
        "dnat" => RuleKind::Dnat,
        "network" => RuleKind::Network,
        "application" => RuleKind::Application,
        o => {
            ctx.err(
                c.kind.span(),
                format!("collection kind \"{o}\" is unknown: use dnat, network or application"),
            );
            return;
        }
    };
    let action = match c.action.get_ref().as_str() {
        "allow" => Action::Allow,
        "deny" if kind == RuleKind::Dnat => {
            ctx.err(c.action.span(), "a dnat collection can only allow");
            Action::Allow
        }
        "deny" => Action::Deny,
        o => {
            ctx.err(
                c.action.span(),
                format!("collection action \"{o}\" is unknown: use allow or deny"),
            );
            Action::Allow
        }
    };
    let audit = match c.mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
        None | Some((_, "enforce")) => false,
        Some((_, "audit")) => true,
        Some((m, o)) => {
            ctx.err(
                m.span(),
                format!("collection mode \"{o}\" is unknown: use enforce or audit"),
            );
            false
        }
    };
    let mut names: HashSet<&str> = HashSet::new();
    for (ri, r) in c.rule.iter().enumerate() {
        if !names.insert(r.name.get_ref()) {
            ctx.err(
                r.name.span(),
                format!(
                    "the rule name \"{}\" is used twice in collection \"{cname}\"",
                    r.name.get_ref()
                ),
            );
        }
        let mut spec = RuleSpec::new(gname, cname, r.name.get_ref(), kind, action);
        spec.audit = audit;
        let (srcs, lsrc) = addresses(ctx, &r.sources, &r.source_ip_groups, groups);
        spec.sources = srcs;
        if r.sources.is_empty() && r.source_ip_groups.is_empty() {
            ctx.err(
                r.name.span(),
                format!(
                    "rule \"{}\" has no sources: give sources or source_ip_groups (\"*\" for any)",
                    r.name.get_ref()
                ),
            );
        }
        let (dsts, ldst) = addresses(ctx, &r.destinations, &r.destination_ip_groups, groups);
        spec.destinations = dsts;
        match kind {
            RuleKind::Network | RuleKind::Dnat => {
                l4_rule(ctx, r, &mut spec);
                for f in &r.destination_fqdns {
                    match FqdnPattern::parse(f.get_ref()) {
                        Ok(p @ FqdnPattern::Exact(_)) => spec.destination_fqdns.push(p),
                        Ok(_) => ctx.err(
                            f.span(),
                            format!("destination FQDN \"{}\": network rules name exact host names (the appliance resolves them); wildcards belong in application rules", f.get_ref()),
                        ),
                        Err(e) => ctx.err(
                            f.span(),
                            format!("destination FQDN \"{}\": {e}", f.get_ref()),
                        ),
                    }
                }
                if kind == RuleKind::Dnat && !r.destination_fqdns.is_empty() {
                    ctx.err(
                        r.destination_fqdns[0].span(),
                        "a dnat rule cannot use destination_fqdns",
                    );
                }
                for t in &r.destination_service_tags {
                    let name = t.get_ref();
                    match tags {
                        _ if kind == RuleKind::Dnat => ctx.err(
                            t.span(),
                            "a dnat rule cannot use destination_service_tags",
                        ),
                        None => ctx.err(
                            t.span(),
                            format!("the service tag \"{name}\" needs appliance.service_tags_file (Azure's ServiceTags_Public JSON) to be expanded"),
                        ),
                        Some(None) => {}
                        Some(Some((file, st))) => match st.get(name) {
                            Some(nets) => spec.destinations.extend_from_slice(nets),
                            None => ctx.err(
                                t.span(),
                                format!("the service tag \"{name}\" is not in {file}"),
                            ),
                        },
                    }
                }
                if r.destinations.is_empty()
                    && r.destination_ip_groups.is_empty()
                    && r.destination_fqdns.is_empty()
                    && r.destination_service_tags.is_empty()
                {
                    ctx.err(r.name.span(), format!("rule \"{}\" has no destinations: give destinations, destination_ip_groups, destination_service_tags or destination_fqdns (\"*\" for any)", r.name.get_ref()));
                }
                if !r.fqdns.is_empty() || !r.fqdn_tags.is_empty() {
                    let sp = r
                        .fqdns
                        .first()
                        .or(r.fqdn_tags.first())
                        .map_or(0..0, |x| x.span());
                    ctx.err(
                        sp,
                        format!(
                            "fqdns and fqdn_tags belong in application rules, not in a {} rule",
                            kind.as_str()
                        ),
                    );
                }
            }
            RuleKind::Application => app_rule(ctx, r, &mut spec),
        }
        if kind == RuleKind::Dnat {
            dnat_rule(ctx, r, &mut spec, snat);
        } else if let Some(t) = &r.translated_address {
            ctx.err(t.span(), "translated_address is only allowed in dnat rules");
        }
        out.push(RuleOut {
            spec,
            order: (gp, cp, ri),
            name_span: r.name.span(),
            literal_srcs: lsrc,
            literal_dsts: ldst,
        });
    }
}

type Lits = Vec<(Ipv4Net, Range<usize>)>;

fn addresses(
    ctx: &mut Ctx,
    lits: &[S<String>],
    refs: &[S<String>],
    groups: &BTreeMap<String, Vec<Ipv4Net>>,
) -> (Vec<Ipv4Net>, Lits) {
    let mut nets = Vec::new();
    let mut spans = Vec::new();
    for l in lits {
        if let Some(n) = ctx.prefix(l, true) {
            nets.push(n);
            spans.push((n, l.span()));
        }
    }
    for g in refs {
        match groups.get(g.get_ref()) {
            Some(list) => nets.extend(list.iter().copied()),
            None => ctx.err(
                g.span(),
                format!(
                    "the IP group \"{}\" is not defined in [ip_groups]",
                    g.get_ref()
                ),
            ),
        }
    }
    (nets, spans)
}

fn l4_rule(ctx: &mut Ctx, r: &RawRule, spec: &mut RuleSpec) {
    if r.protocols.is_empty() {
        ctx.err(
            r.name.span(),
            format!(
                "rule \"{}\" has no protocols: give tcp, udp, icmp or any",
                r.name.get_ref()
            ),
        );
    }
    for p in &r.protocols {
        match p.get_ref().to_ascii_lowercase().as_str() {
            "tcp" => spec.protocols.tcp = true,
            "udp" => spec.protocols.udp = true,
            "icmp" => spec.protocols.icmp = true,
            "any" | "*" => spec.protocols = Protocols::ANY,
            o => ctx.err(
                p.span(),
                format!("protocol \"{o}\" is unknown here: use tcp, udp, icmp or any"),
            ),
        }
    }
    for p in &r.destination_ports {
        match parse_port_range(p.get_ref(), true) {
            Ok(range) => spec.ports.push(range),
            Err(m) => ctx.err(p.span(), m),
        }
    }
    if (spec.protocols.tcp || spec.protocols.udp)
        && r.destination_ports.is_empty()
        && !r.protocols.is_empty()
    {
        ctx.err(
            r.name.span(),
            format!(
                "rule \"{}\" matches tcp or udp but has no destination_ports (\"*\" for any)",
                r.name.get_ref()
            ),
        );
    }
}

fn app_rule(ctx: &mut Ctx, r: &RawRule, spec: &mut RuleSpec) {
    if r.protocols.is_empty() {
        ctx.err(
            r.name.span(),
            format!(
                "application rule \"{}\" has no protocols: give e.g. \"https:443\"",
                r.name.get_ref()
            ),
        );
    }
    for p in &r.protocols {
        let s = p.get_ref().to_ascii_lowercase();
        let parsed = s.split_once(':').and_then(|(a, port)| {
            let a = match a {
                "http" => AppProto::Http,
                "https" => AppProto::Https,
                "quic" => AppProto::Quic,
                _ => return None,
            };
            let port = port.parse::<u16>().ok().filter(|&x| x > 0)?;
            Some((a, port))
        });
        match parsed {
            Some(x) => spec.app_protocols.push(x),
            None => ctx.err(
                p.span(),
                format!("application protocol \"{}\" must be http, https or quic with a port, as in \"https:443\"", p.get_ref()),
            ),
        }
    }
    for f in &r.fqdns {
        match FqdnPattern::parse(f.get_ref()) {
            Ok(p) => spec.fqdns.push(p),
            Err(e) => ctx.err(f.span(), format!("FQDN \"{}\": {e}", f.get_ref())),
        }
    }
    for t in &r.fqdn_tags {
        match fqdn_tag(t.get_ref()) {
            Some(list) => spec
                .fqdns
                .extend(list.iter().filter_map(|f| FqdnPattern::parse(f).ok())),
            None => ctx.err(
                t.span(),
                format!("the FQDN tag \"{}\" is unknown", t.get_ref()),
            ),
        }
    }
    if r.fqdns.is_empty() && r.fqdn_tags.is_empty() {
        ctx.err(
            r.name.span(),
            format!(
                "application rule \"{}\" has no fqdns or fqdn_tags",
                r.name.get_ref()
            ),
        );
    }
    let misplaced = [
        (&r.destinations, "destinations"),
        (&r.destination_ip_groups, "destination_ip_groups"),
        (&r.destination_fqdns, "destination_fqdns"),
        (&r.destination_service_tags, "destination_service_tags"),
        (&r.destination_ports, "destination_ports"),
    ];
    for (v, key) in misplaced {
        if let Some(first) = v.first() {
            ctx.err(
                first.span(),
                format!(
                    "{key} is not used by application rules: they match on fqdns and protocols"
                ),
            );
        }
    }
}

fn dnat_rule(ctx: &mut Ctx, r: &RawRule, spec: &mut RuleSpec, snat: &[Ipv4Addr]) {
    for d in &r.destinations {
        if d.get_ref().trim() == "*" {
            ctx.err(
                d.span(),
                "a dnat rule's destination must be one of the snat addresses, not \"*\"",
            );
        }
        if let Ok(n) = d
            .get_ref()
            .trim()
            .parse::<Ipv4Net>()
            .or_else(|_| d.get_ref().trim().parse::<Ipv4Addr>().map(Ipv4Net::from))
        {
            if n.prefix_len() != 32 || !snat.contains(&n.addr()) {
                ctx.err(
                    d.span(),
                    format!(
                        "dnat destination \"{}\" is not one of the snat addresses {:?}",
                        d.get_ref(),
                        snat.iter().map(|a| a.to_string()).collect::<Vec<_>>()
                    ),
                );
            }
        }
    }
    if !r.destination_ip_groups.is_empty() {
        ctx.err(
            r.destination_ip_groups[0].span(),
            "a dnat rule's destinations must be snat addresses given directly, not ip groups",
        );
    }
    let addr = match &r.translated_address {
        Some(t) => ctx.addr(t, "translated_address"),
        None => {
            ctx.err(
                r.name.span(),
                format!(
                    "dnat rule \"{}\" has no translated_address",
                    r.name.get_ref()
                ),
            );
            None
        }
    };
    let port = r.translated_port.as_ref().and_then(|p| {
        let v = *p.get_ref();
        if (1..=65535).contains(&v) {
            Some(v as u16)
        } else {
            ctx.err(
                p.span(),
                format!("translated_port {v} is out of range (1-65535)"),
            );
            None
        }
    });
    spec.translated = Some((addr.unwrap_or(Ipv4Addr::UNSPECIFIED), port));
}

fn nets_within(inner: &[Ipv4Net], outer: &[Ipv4Net]) -> bool {
    inner.iter().all(|i| outer.iter().any(|o| o.contains(i)))
}

fn ranges_within(inner: &[(u16, u16)], outer: &[(u16, u16)]) -> bool {
    inner
        .iter()
        .all(|&(a, b)| outer.iter().any(|&(c, d)| c <= a && b <= d))
}

fn covers(a: &RuleSpec, b: &RuleSpec) -> bool {
    if a.kind != b.kind || !nets_within(&b.sources, &a.sources) {
        return false;
    }
    match b.kind {
        RuleKind::Application => {
            b.app_protocols.iter().all(|p| a.app_protocols.contains(p))
                && b.fqdns
                    .iter()
                    .all(|f| a.fqdns.iter().any(|g| f.covered_by(g)))
        }
        _ => {
            let (pa, pb) = (a.protocols, b.protocols);
            let protos = (!pb.tcp || pa.tcp)
                && (!pb.udp || pa.udp)
                && (!pb.icmp || pa.icmp)
                && (!pb.other || pa.other);
            protos
                && nets_within(&b.destinations, &a.destinations)
                && (!(pb.tcp || pb.udp) || ranges_within(&b.ports, &a.ports))
        }
    }
}

/// The lowest and highest address a list of prefixes covers (`(1, 0)`: empty).
fn hull(nets: &[Ipv4Net]) -> (u32, u32) {
    nets.iter().fold((1, 0), |(lo, hi), n| {
        let (a, b) = (u32::from(n.network()), u32::from(n.broadcast()));
        if lo > hi {
            (a, b)
        } else {
            (lo.min(a), hi.max(b))
        }
    })
}

fn analyze(ctx: &mut Ctx, rules: &[RuleOut], resolver: bool) {
    // Application rules have no destinations: their hull is the whole space.
    let hulls: Vec<((u32, u32), (u32, u32))> = rules
        .iter()
        .map(|r| {
            let d = if r.spec.kind == RuleKind::Application {
                (0, u32::MAX)
            } else {
                hull(&r.spec.destinations)
            };
            (hull(&r.spec.sources), d)
        })
        .collect();
    for (i, b) in rules.iter().enumerate() {
        let spec = &b.spec;
        if !spec.destination_fqdns.is_empty() && !resolver {
            ctx.warn(
                b.name_span.clone(),
                format!(
                    "rule \"{}\" uses destination_fqdns, but no [dns] servers are configured: the names are never resolved and the rule matches only its IP destinations",
                    spec.name
                ),
            );
        }
        for lits in [&b.literal_srcs, &b.literal_dsts] {
            for (j, (n, sp)) in lits.iter().enumerate() {
                if let Some((m, _)) = lits[..j]
                    .iter()
                    .find(|(m, _)| m.contains(n) || n.contains(m))
                {
                    ctx.warn(
                        sp.clone(),
                        format!("the prefix {n} overlaps {m} in the same rule"),
                    );
                }
            }
        }
        let empty = spec.sources.is_empty()
            || (spec.kind != RuleKind::Application && spec.destinations.is_empty())
            || (spec.kind == RuleKind::Application && spec.fqdns.is_empty());
        if empty {
            continue;
        }
        // Cheap necessary condition first: the earlier rule's address hulls contain this one's.
        let (bs, bd) = (hulls[i].0, hulls[i].1);
        let found = rules[..i].iter().zip(&hulls[..i]).find(|(a, h)| {
            h.0 .0 <= bs.0
                && bs.1 <= h.0 .1
                && h.1 .0 <= bd.0
                && bd.1 <= h.1 .1
                && covers(&a.spec, spec)
        });
        if let Some((a, _)) = found {
            let (l, c) = ctx.idx.line_col(a.name_span.start);
            ctx.warn(
                b.name_span.clone(),
                format!(
                    "rule \"{}\" can never match: the earlier rule \"{}\" (line {l}, column {c}) in {}/{} covers everything it matches",
                    spec.name, a.spec.name, a.spec.group, a.spec.collection
                ),
            );
        }
    }
}
