//! `tollgate import azure-policy`: an Azure Firewall Policy (its rule collection groups, IP
//! groups, parent policy and DNS settings) into Tollgate's TOML, one to one.
//!
//! Azure's processing order is kept: DNAT, then network, then application rules (Tollgate
//! evaluates the kinds in that order whatever the priorities); groups, then collections, by
//! priority; first match wins; default deny. A parent policy's (`basePolicy`) groups are
//! numbered ahead of the child's, as Azure's inherited rules come first.
//!
//! Nothing is dropped silently, and the result is never wider than the source: every part that
//! cannot be carried over is a [`Finding`] naming the rule's full path and what Tollgate does
//! instead. An allow (or DNAT) rule loses the part, or is skipped when nothing of its field is
//! left; a deny rule's field is widened to `*` instead, so it still denies at least what Azure
//! denied.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::Value;

use super::arm::{self, GroupDoc, Inventory};
use crate::config::ServiceTags;
use crate::policy::FqdnPattern;

/// Azure's platform resolver, which Azure Firewall uses when the policy names no DNS servers.
pub const AZURE_DNS: &str = "168.63.129.16";

/// What became of a part of the source that was not carried over as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// The whole rule (or collection) is left out: it matches nothing in Tollgate.
    Skipped,
    /// An allow or DNAT rule is kept without the part: it matches less than in Azure.
    Narrowed,
    /// A deny rule is kept with the part widened (to `*`): it denies more than in Azure.
    DenyWidened,
    /// A setting or inspection Tollgate does not perform (threat intelligence, IDPS, TLS
    /// inspection, DNS proxy ...).
    NotEnforced,
    /// Carried over, with a change worth knowing (a renumbered priority, a renamed group).
    Note,
}

impl Effect {
    fn label(self) -> &'static str {
        match self {
            Effect::Skipped => "skipped",
            Effect::Narrowed => "narrowed",
            Effect::DenyWidened => "deny widened",
            Effect::NotEnforced => "not enforced",
            Effect::Note => "note",
        }
    }
}

/// One part of the source that was not carried over as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// `policy/group/collection/rule` (or shorter, for a group, a collection or the policy).
    pub path: String,
    pub effect: Effect,
    /// What was left out or changed, and what Tollgate does instead.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.path,
            self.effect.label(),
            self.message
        )
    }
}

/// Why nothing could be imported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// An input is not usable JSON.
    #[error("{origin}: {reason}")]
    BadInput { origin: String, reason: String },
    /// No rule collection group was found.
    #[error("no Firewall Policy rule collection group was found in the input")]
    Nothing,
    /// Several unrelated policies; `--policy` picks one.
    #[error("the input holds several policies ({}): pick one with --policy NAME", .0.join(", "))]
    SeveralPolicies(Vec<String>),
    /// `--policy` names a policy that is not in the input.
    #[error("the policy \"{0}\" is not in the input")]
    UnknownPolicy(String),
    /// The base configuration (`--into`) cannot take the imported rules.
    #[error("{0}")]
    BadBase(String),
}

/// The Tollgate configuration the rules are written into (`--into`): its text is copied as it
/// is, its SNAT addresses are the only DNAT destinations, its service tags file (if any)
/// expands Azure's service tags, and it must hold no rules itself.
#[derive(Clone, Debug)]
pub struct Base {
    pub origin: String,
    pub text: String,
    pub snat: Vec<Ipv4Addr>,
    pub has_dns: bool,
    /// `appliance.service_tags_file`, read (relative to the base's directory).
    pub service_tags: Option<ServiceTags>,
}

impl Base {
    /// Reads a base configuration's text; it must not define `[[group]]` or `[ip_groups]`.
    pub fn parse(origin: &str, text: &str) -> Result<Base, ImportError> {
        let v: toml::Table = toml::from_str(text)
            .map_err(|e| ImportError::BadBase(format!("{origin}: {}", e.message().trim())))?;
        for k in ["group", "ip_groups"] {
            if v.contains_key(k) {
                return Err(ImportError::BadBase(format!(
                    "{origin}: the base configuration already has [{k}]: it should hold the appliance, interfaces and SNAT only; the imported rules are added to it"
                )));
            }
        }
        let snat = v
            .get("snat")
            .and_then(|s| s.get("addresses"))
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str()?.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let service_tags = match v
            .get("appliance")
            .and_then(|a| a.get("service_tags_file"))
            .and_then(|f| f.as_str())
        {
            Some(f) => {
                let given = std::path::Path::new(f);
                let path = match std::path::Path::new(origin).parent() {
                    Some(dir) if given.is_relative() => dir.join(given),
                    _ => given.to_path_buf(),
                };
                let t = std::fs::read_to_string(&path).map_err(|e| {
                    ImportError::BadBase(format!("{origin}: {}: {e}", path.display()))
                })?;
                Some(ServiceTags::parse(&t).map_err(|m| {
                    ImportError::BadBase(format!("{origin}: {}: {m}", path.display()))
                })?)
            }
            None => None,
        };
        Ok(Base {
            origin: origin.to_string(),
            text: text.to_string(),
            snat,
            has_dns: v.contains_key("dns"),
            service_tags,
        })
    }
}

/// How to import.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Which policy, when the input holds several leaf policies.
    pub policy: Option<String>,
    /// The firewall's public IPs (DNAT destinations in Azure) and the Tollgate address each
    /// becomes (in Azure, the NIC IP configuration's private address it is mapped to).
    pub public_ips: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Write the rules into this configuration (else the output is a fragment to append).
    pub base: Option<Base>,
}

/// The result of an import.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The TOML text.
    pub toml: String,
    /// Every part not carried over as it was, in source order.
    pub findings: Vec<Finding>,
    /// The imported policy and its parents, parent first.
    pub policies: Vec<String>,
    /// Rules read and rules written.
    pub rules_in: usize,
    pub rules_out: usize,
}

impl Imported {
    /// Whether anything was left out, narrowed, widened or not enforced (notes aside).
    pub fn left_out(&self) -> bool {
        self.findings.iter().any(|f| f.effect != Effect::Note)
    }
}

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            '\r' => o.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn list(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", v.join(", "))
}

/// A comment line's text: one line, no control characters.
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Strings of a JSON array field (absent: empty).
fn strs(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The smallest list of prefixes covering exactly `lo..=hi`.
fn range_to_cidrs(lo: Ipv4Addr, hi: Ipv4Addr) -> Vec<Ipv4Net> {
    let (mut a, b) = (u64::from(u32::from(lo)), u64::from(u32::from(hi)));
    let mut out = Vec::new();
    while a <= b {
        let mut len = 32u8;
        while len > 0 {
            let size = 1u64 << (33 - len);
            if a % size != 0 || a + size - 1 > b {
                break;
            }
            len -= 1;
        }
        out.push(Ipv4Net::new(Ipv4Addr::from(a as u32), len).expect("len <= 32"));
        a += 1u64 << (32 - len);
    }
    out
}

/// One Azure address entry (source or destination).
enum Addr {
    Nets(Vec<String>),
    /// IPv6: Tollgate forwards IPv4 only, so such an entry matches nothing either way.
    V6,
    Lost(String),
    /// A service tag (`AzureCloud.westeurope`).
    Tag(String),
}

fn addr_item(raw: &str) -> Addr {
    let s = raw.trim();
    if s == "*" {
        return Addr::Nets(vec!["*".into()]);
    }
    if s.contains(':') {
        return Addr::V6;
    }
    if let Some((a, b)) = s.split_once('-') {
        if let (Ok(a), Ok(b)) = (a.trim().parse::<Ipv4Addr>(), b.trim().parse::<Ipv4Addr>()) {
            if a <= b {
                return Addr::Nets(range_to_cidrs(a, b).iter().map(|n| n.to_string()).collect());
            }
        }
    }
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        return Addr::Nets(vec![a.to_string()]);
    }
    if let Ok(n) = s.parse::<Ipv4Net>() {
        return Addr::Nets(vec![n.trunc().to_string()]);
    }
    if s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Addr::Tag(s.to_string());
    }
    Addr::Lost(format!("\"{s}\" is not an IPv4 address, prefix or range"))
}

/// A rule's address field as Tollgate keys: literal prefixes, IP group names, exact FQDNs.
#[derive(Default)]
struct Field {
    nets: Vec<String>,
    groups: Vec<String>,
    fqdns: Vec<String>,
    /// Service tags the base configuration's service tags file has.
    tags: Vec<String>,
    lost: Vec<String>,
    v6: usize,
}

impl Field {
    fn is_empty(&self) -> bool {
        self.nets.is_empty()
            && self.groups.is_empty()
            && self.fqdns.is_empty()
            && self.tags.is_empty()
    }
}

/// One output rule: its TOML lines (after the header) and its name.
struct RuleOut {
    name: String,
    path: String,
    azure_type: String,
    description: String,
    lines: Vec<String>,
}

struct CollOut {
    name: String,
    path: String,
    priority: u32,
    azure_priority: Option<i64>,
    kind: &'static str,
    action: &'static str,
    rules: Vec<RuleOut>,
}

struct GroupOut {
    name: String,
    path: String,
    priority: u32,
    azure_priority: Option<i64>,
    inherited_from: Option<String>,
    collections: Vec<CollOut>,
}

/// The importer's state.
struct Ctx<'a> {
    opts: &'a Options,
    ip_groups: HashMap<String, (String, Vec<String>)>,
    used_ip_groups: BTreeSet<String>,
    findings: Vec<Finding>,
    uses_destination_fqdns: bool,
    rules_in: usize,
    rules_out: usize,
}

impl Ctx<'_> {
    fn find(&mut self, path: &str, effect: Effect, message: impl Into<String>) {
        self.findings.push(Finding {
            path: path.to_string(),
            effect,
            message: message.into(),
        });
    }

    /// Resolves literal addresses and IP group references of one field; service tags are kept
    /// where `tags_ok` (network rules' destinations) and the base has a tags file naming them.
    fn field(&mut self, lits: &[String], group_refs: &[String], tags_ok: bool) -> Field {
        let mut f = Field::default();
        for l in lits {
            match addr_item(l) {
                Addr::Tag(t) => {
                    let file = self
                        .opts
                        .base
                        .as_ref()
                        .and_then(|b| b.service_tags.as_ref());
                    match file {
                        Some(st) if tags_ok && st.get(&t).is_some() => {
                            if !f.tags.contains(&t) {
                                f.tags.push(t);
                            }
                        }
                        Some(_) if tags_ok => f.lost.push(format!(
                            "the service tag \"{t}\" is not in the base's service tags file"
                        )),
                        None if tags_ok => f.lost.push(format!(
                            "the service tag \"{t}\" is not expanded (the base configuration has no appliance.service_tags_file)"
                        )),
                        _ => f.lost.push(format!(
                            "the service tag \"{t}\" is not expanded here (Tollgate takes service tags in network rules' destinations)"
                        )),
                    }
                }
                Addr::Nets(n) => {
                    for x in n {
                        if !f.nets.contains(&x) {
                            f.nets.push(x);
                        }
                    }
                }
                Addr::V6 => f.v6 += 1,
                Addr::Lost(m) => f.lost.push(m),
            }
        }
        for r in group_refs {
            let name = match arm::eval_str(r) {
                Ok(id) => arm::last_segment(&id).to_string(),
                Err(e) => {
                    f.lost.push(format!("the IP group reference {r} ({e})"));
                    continue;
                }
            };
            match self.ip_groups.get(&name.to_ascii_lowercase()) {
                Some((n, _)) => {
                    self.used_ip_groups.insert(n.clone());
                    if !f.groups.contains(n) {
                        f.groups.push(n.clone());
                    }
                }
                None => f.lost.push(format!(
                    "the IP group \"{name}\" is not in the input (give its ARM template or `az network ip-group show` output too)"
                )),
            }
        }
        f
    }

    /// Settles a field that lost parts: a deny rule's field becomes `*` (it denies more); an
    /// allow rule keeps the rest (it allows less) or, with nothing left, is skipped. Returns
    /// whether the rule survives.
    fn settle(&mut self, path: &str, f: &mut Field, what: &str, deny: bool) -> bool {
        if f.lost.is_empty() {
            if f.is_empty() && f.v6 > 0 {
                self.find(
                    path,
                    Effect::Note,
                    format!("its {what}s are IPv6 only, which Tollgate does not forward: the rule is left out (it could match nothing)"),
                );
                return false;
            }
            return true;
        }
        let lost = f.lost.join("; ");
        if deny {
            self.find(
                path,
                Effect::DenyWidened,
                format!("{lost}: the deny rule matches every {what} instead (\"*\"), so it denies at least what Azure denied"),
            );
            f.nets = vec!["*".into()];
            f.groups.clear();
            f.fqdns.clear();
            f.tags.clear();
            true
        } else if f.is_empty() {
            self.find(
                path,
                Effect::Skipped,
                format!("{lost}, and no other {what} is left: the rule is left out"),
            );
            false
        } else {
            self.find(
                path,
                Effect::Narrowed,
                format!("{lost}: left out of the rule, which keeps its other {what}s"),
            );
            true
        }
    }

    fn addr_lines(lines: &mut Vec<String>, f: &Field, lit_key: &str, group_key: &str) {
        if !f.nets.is_empty() {
            lines.push(format!("{lit_key} = {}", list(&f.nets)));
        }
        if !f.groups.is_empty() {
            lines.push(format!("{group_key} = {}", list(&f.groups)));
        }
    }

    /// `ipProtocols` as Tollgate protocols; `None` skips the rule.
    fn protocols(&mut self, path: &str, r: &Value, deny: bool) -> Option<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let mut lost = Vec::new();
        for p in strs(r, "ipProtocols") {
            let t = match p.to_ascii_lowercase().as_str() {
                "tcp" => "tcp",
                "udp" => "udp",
                "icmp" => "icmp",
                "any" => "any",
                _ => {
                    lost.push(p);
                    continue;
                }
            };
            if !out.iter().any(|x| x == t) {
                out.push(t.into());
            }
        }
        if !lost.is_empty() {
            let m = format!("the protocol(s) {} are not known", lost.join(", "));
            if deny {
                self.find(
                    path,
                    Effect::DenyWidened,
                    format!("{m}: the deny rule matches any protocol instead"),
                );
                return Some(vec!["any".into()]);
            }
            if out.is_empty() {
                self.find(path, Effect::Skipped, format!("{m}: the rule is left out"));
                return None;
            }
            self.find(path, Effect::Narrowed, format!("{m}: left out of the rule"));
        }
        if out.is_empty() {
            self.find(
                path,
                Effect::Skipped,
                "the rule has no ipProtocols: left out",
            );
            return None;
        }
        Some(out)
    }

    /// `destinationPorts`; `None` skips the rule.
    fn ports(&mut self, path: &str, r: &Value, deny: bool) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut lost = Vec::new();
        for p in strs(r, "destinationPorts") {
            let s = p.trim();
            let ok = s == "*" || {
                let (a, b) = s.split_once('-').unwrap_or((s, s));
                match (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                    (Ok(a), Ok(b)) => (1..=65535).contains(&a) && (a..=65535).contains(&b),
                    _ => false,
                }
            };
            if ok {
                out.push(s.replace(' ', ""));
            } else {
                lost.push(p);
            }
        }
        if !lost.is_empty() {
            let m = format!("the port(s) {} are not valid ports", lost.join(", "));
            if deny {
                self.find(
                    path,
                    Effect::DenyWidened,
                    format!("{m}: the deny rule matches every port instead"),
                );
                return Some(vec!["*".into()]);
            }
            if out.is_empty() {
                self.find(path, Effect::Skipped, format!("{m}: the rule is left out"));
                return None;
            }
            self.find(path, Effect::Narrowed, format!("{m}: left out of the rule"));
        }
        Some(out)
    }

    fn network_rule(&mut self, path: &str, r: &Value, deny: bool) -> Option<Vec<String>> {
        let mut lines = Vec::new();
        let mut src = self.field(
            &strs(r, "sourceAddresses"),
            &strs(r, "sourceIpGroups"),
            false,
        );
        let mut dst = self.field(
            &strs(r, "destinationAddresses"),
            &strs(r, "destinationIpGroups"),
            true,
        );
        for f in strs(r, "destinationFqdns") {
            match FqdnPattern::parse(f.trim()) {
                Ok(FqdnPattern::Exact(n)) => dst.fqdns.push(n),
                Ok(_) => dst.lost.push(format!(
                    "the destination FQDN \"{f}\" is a wildcard, which network rules cannot resolve"
                )),
                Err(e) => dst
                    .lost
                    .push(format!("the destination FQDN \"{f}\" is not usable ({e})")),
            }
        }
        let keep = self.settle(path, &mut src, "source", deny)
            & self.settle(path, &mut dst, "destination", deny);
        let protocols = self.protocols(path, r, deny);
        let ports = self.ports(path, r, deny);
        let (Some(protocols), Some(ports), true) = (protocols, ports, keep) else {
            return None;
        };
        if !dst.fqdns.is_empty() {
            self.uses_destination_fqdns = true;
        }
        Self::addr_lines(&mut lines, &src, "sources", "source_ip_groups");
        Self::addr_lines(&mut lines, &dst, "destinations", "destination_ip_groups");
        if !dst.tags.is_empty() {
            lines.push(format!("destination_service_tags = {}", list(&dst.tags)));
        }
        if !dst.fqdns.is_empty() {
            lines.push(format!("destination_fqdns = {}", list(&dst.fqdns)));
        }
        lines.push(format!("protocols = {}", list(&protocols)));
        if !ports.is_empty() {
            lines.push(format!("destination_ports = {}", list(&ports)));
        }
        Some(lines)
    }

    fn application_rule(&mut self, path: &str, r: &Value, deny: bool) -> Option<Vec<String>> {
        let mut lines = Vec::new();
        let mut src = self.field(
            &strs(r, "sourceAddresses"),
            &strs(r, "sourceIpGroups"),
            false,
        );
        if !self.settle(path, &mut src, "source", deny) {
            return None;
        }
        // Application protocols.
        let mut protos = Vec::new();
        for p in r
            .get("protocols")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ty = text(p, "protocolType").to_ascii_lowercase();
            let port = p.get("port").and_then(|x| match x {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            });
            let (name, dflt) = match ty.as_str() {
                "http" => ("http", 80),
                "https" => ("https", 443),
                "mssql" => {
                    let port = port.unwrap_or(1433);
                    if deny {
                        self.find(path, Effect::Note, format!("the protocol Mssql:{port} is left out: Tollgate has no Mssql application match, so no application rule can let that traffic through either"));
                    } else {
                        self.find(path, Effect::Narrowed, format!("the protocol Mssql:{port} (Azure SQL) is not supported: left out of the rule, whose SQL traffic falls through to later rules or the default deny"));
                    }
                    continue;
                }
                o => {
                    let m = format!("the protocol type \"{o}\" is not known");
                    if deny {
                        self.find(path, Effect::Note, format!("{m}: left out"));
                    } else {
                        self.find(path, Effect::Narrowed, format!("{m}: left out of the rule"));
                    }
                    continue;
                }
            };
            match port.unwrap_or(dflt) {
                p @ 1..=65535 => {
                    let s = format!("{name}:{p}");
                    if !protos.contains(&s) {
                        protos.push(s);
                    }
                }
                p => self.find(
                    path,
                    if deny { Effect::Note } else { Effect::Narrowed },
                    format!("the port {p} of {name} is out of range: left out"),
                ),
            }
        }
        if protos.is_empty() {
            self.find(
                path,
                Effect::Skipped,
                "no HTTP or HTTPS protocol is left: the rule is left out",
            );
            return None;
        }
        // Names.
        let mut fqdns: Vec<String> = Vec::new();
        let mut tags: Vec<String> = Vec::new();
        let mut lost: Vec<String> = Vec::new();
        let push = |v: &mut Vec<String>, s: String| {
            if !v.contains(&s) {
                v.push(s);
            }
        };
        for f in strs(r, "targetFqdns") {
            let t = f.trim();
            match FqdnPattern::parse(t) {
                Ok(_) => push(&mut fqdns, t.to_ascii_lowercase()),
                Err(_) if t.starts_with('*') && !t.starts_with("*.") => {
                    // Azure's "*contoso.com": Tollgate's wildcards are whole labels.
                    let rest = t.trim_start_matches('*');
                    if FqdnPattern::parse(rest).is_ok() {
                        push(&mut fqdns, rest.to_ascii_lowercase());
                        push(&mut fqdns, format!("*.{}", rest.to_ascii_lowercase()));
                        if deny {
                            lost.push(format!("\"{t}\" also matches names that end in \"{rest}\" without a dot before it"));
                        } else {
                            self.find(path, Effect::Narrowed, format!("\"{t}\" becomes \"{rest}\" and \"*.{rest}\": Tollgate's wildcards stand for whole labels, so names like \"x{rest}\" are no longer allowed"));
                        }
                    } else {
                        lost.push(format!("the target FQDN \"{t}\" is not usable"));
                    }
                }
                Err(e) => lost.push(format!("the target FQDN \"{t}\" is not usable ({e})")),
            }
        }
        for t in strs(r, "fqdnTags") {
            match crate::config::fqdn_tag(&t) {
                Some(_) => push(&mut tags, t),
                None => lost.push(format!(
                    "the FQDN tag \"{t}\" is not in Tollgate's data/fqdn-tags.toml"
                )),
            }
        }
        let urls = strs(r, "targetUrls");
        if !urls.is_empty() {
            if deny {
                for u in &urls {
                    let host = u
                        .split("://")
                        .last()
                        .unwrap_or(u)
                        .split(['/', '?'])
                        .next()
                        .unwrap_or("");
                    let host = host.split(':').next().unwrap_or(host);
                    if FqdnPattern::parse(host).is_ok() {
                        push(&mut fqdns, host.to_ascii_lowercase());
                    } else {
                        lost.push(format!("the URL \"{u}\" has no usable host name"));
                    }
                }
                self.find(path, Effect::DenyWidened, format!("targetUrls ({}) need TLS inspection to see paths: the deny rule denies their whole host names instead", urls.join(", ")));
            } else {
                lost.push(format!(
                    "targetUrls ({}) need TLS inspection to see URL paths, which Tollgate does not do",
                    urls.join(", ")
                ));
            }
        }
        let cats = strs(r, "webCategories");
        if !cats.is_empty() {
            lost.push(format!(
                "webCategories ({}) are not supported (no category database)",
                cats.join(", ")
            ));
        }
        if !lost.is_empty() {
            let m = lost.join("; ");
            if deny {
                self.find(path, Effect::DenyWidened, format!("{m}: the deny rule matches every name (\"*\") instead, so it denies at least what Azure denied"));
                fqdns = vec!["*".into()];
                tags.clear();
            } else if fqdns.is_empty() && tags.is_empty() {
                self.find(
                    path,
                    Effect::Skipped,
                    format!("{m}; no other name is left: the rule is left out"),
                );
                return None;
            } else {
                self.find(
                    path,
                    Effect::Narrowed,
                    format!("{m}: left out of the rule, which keeps its other names"),
                );
            }
        }
        if fqdns.is_empty() && tags.is_empty() {
            self.find(
                path,
                Effect::Skipped,
                "the rule names no FQDN, FQDN tag or URL: left out",
            );
            return None;
        }
        // Destinations of application rules: Tollgate's match on names only.
        let dsts: Vec<String> = strs(r, "destinationAddresses")
            .into_iter()
            .filter(|d| d.trim() != "*")
            .collect();
        if !dsts.is_empty() {
            if deny {
                self.find(path, Effect::DenyWidened, format!("the destination addresses ({}) are not matched by Tollgate's application rules: the deny rule applies to every destination", dsts.join(", ")));
            } else {
                self.find(path, Effect::Skipped, format!("the destination addresses ({}) cannot be matched by Tollgate's application rules, and dropping them would allow more: the rule is left out", dsts.join(", ")));
                return None;
            }
        }
        if r.get("terminateTLS").and_then(Value::as_bool) == Some(true) {
            self.find(path, Effect::NotEnforced, "TLS inspection (terminateTLS) is not done: the rule matches the same names on the TLS SNI (HTTP: Host) without decrypting");
        }
        let headers = r
            .get("httpHeadersToInsert")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if headers > 0 {
            self.find(
                path,
                Effect::NotEnforced,
                format!("{headers} httpHeadersToInsert are not inserted"),
            );
        }
        Self::addr_lines(&mut lines, &src, "sources", "source_ip_groups");
        if !fqdns.is_empty() {
            lines.push(format!("fqdns = {}", list(&fqdns)));
        }
        if !tags.is_empty() {
            lines.push(format!("fqdn_tags = {}", list(&tags)));
        }
        lines.push(format!("protocols = {}", list(&protos)));
        Some(lines)
    }

    fn nat_rule(&mut self, path: &str, r: &Value) -> Option<Vec<String>> {
        let mut lines = Vec::new();
        let mut src = self.field(
            &strs(r, "sourceAddresses"),
            &strs(r, "sourceIpGroups"),
            false,
        );
        if !self.settle(path, &mut src, "source", false) {
            return None;
        }
        // Destinations: the firewall's public IPs, as Tollgate addresses.
        let mut dsts = Vec::new();
        let mut lost = Vec::new();
        for d in strs(r, "destinationAddresses") {
            let Ok(a) = d.trim().parse::<Ipv4Addr>() else {
                lost.push(format!(
                    "the destination \"{d}\" is not a single IPv4 address"
                ));
                continue;
            };
            let mapped = self
                .opts
                .public_ips
                .iter()
                .find(|(p, _)| *p == a)
                .map(|(_, l)| *l);
            let to = match (mapped, &self.opts.base) {
                (Some(l), _) => l,
                (None, Some(b)) if b.snat.contains(&a) => a,
                (None, Some(b)) => {
                    lost.push(format!("the firewall address {a} is not one of {}'s snat.addresses: map it with --public-ip {a}=ADDRESS", b.origin));
                    continue;
                }
                (None, None) => a,
            };
            let s = to.to_string();
            if !dsts.contains(&s) {
                dsts.push(s);
            }
        }
        if !lost.is_empty() {
            let m = lost.join("; ");
            if dsts.is_empty() {
                self.find(path, Effect::Skipped, format!("{m}: the rule is left out"));
                return None;
            }
            self.find(path, Effect::Narrowed, format!("{m}: left out of the rule"));
        }
        if dsts.is_empty() {
            self.find(
                path,
                Effect::Skipped,
                "the DNAT rule has no destination address: left out",
            );
            return None;
        }
        let protocols = self.protocols(path, r, false)?;
        if protocols.iter().any(|p| p == "any" || p == "icmp") {
            self.find(
                path,
                Effect::Skipped,
                "a DNAT rule translates TCP or UDP only: left out",
            );
            return None;
        }
        let ports = self.ports(path, r, false)?;
        let taddr = text(r, "translatedAddress").trim();
        let tfqdn = text(r, "translatedFqdn").trim();
        let to = match taddr.parse::<Ipv4Addr>() {
            Ok(a) => a,
            Err(_) if taddr.is_empty() && !tfqdn.is_empty() => {
                self.find(path, Effect::Skipped, format!("translatedFqdn \"{tfqdn}\" is not supported (Tollgate translates to an address): the rule is left out"));
                return None;
            }
            Err(_) => {
                self.find(path, Effect::Skipped, format!("translatedAddress \"{taddr}\" is not a single IPv4 address: the rule is left out"));
                return None;
            }
        };
        let tport = match r.get("translatedPort") {
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => {
                s.trim().parse::<u16>().ok().filter(|&p| p > 0).or_else(|| {
                    self.find(
                        path,
                        Effect::Skipped,
                        format!("translatedPort \"{s}\" is not a port: the rule is left out"),
                    );
                    Some(0)
                })
            }
            Some(Value::Number(n)) => {
                Some(n.as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0))
            }
            _ => None,
        };
        if tport == Some(0) {
            return None;
        }
        Self::addr_lines(&mut lines, &src, "sources", "source_ip_groups");
        lines.push(format!("destinations = {}", list(&dsts)));
        lines.push(format!("protocols = {}", list(&protocols)));
        lines.push(format!("destination_ports = {}", list(&ports)));
        lines.push(format!("translated_address = {}", q(&to.to_string())));
        if let Some(p) = tport {
            lines.push(format!("translated_port = {p}"));
        }
        Some(lines)
    }

    fn collection(
        &mut self,
        gpath: &str,
        c: &Value,
        index: usize,
    ) -> Option<(CollOut, i64, usize)> {
        let name = text(c, "name").to_string();
        let path = format!("{gpath}/{name}");
        let ctype = text(c, "ruleCollectionType");
        let rules: Vec<&Value> = c
            .get("rules")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let action = text(c.get("action").unwrap_or(&Value::Null), "type").to_ascii_lowercase();
        let azure_priority = c.get("priority").and_then(Value::as_i64);
        let kind = if ctype.eq_ignore_ascii_case("FirewallPolicyNatRuleCollection") {
            "dnat"
        } else if ctype.eq_ignore_ascii_case("FirewallPolicyFilterRuleCollection") {
            match rules.first().map(|r| text(r, "ruleType")) {
                Some(t) if t.eq_ignore_ascii_case("ApplicationRule") => "application",
                _ => "network",
            }
        } else {
            self.rules_in += rules.len();
            self.find(&path, Effect::Skipped, format!("the rule collection type \"{ctype}\" is not known: the collection and its {} rule(s) are left out", rules.len()));
            return None;
        };
        let action = match (kind, action.as_str()) {
            ("dnat", _) => "allow",
            (_, "allow") => "allow",
            (_, "deny") => "deny",
            (_, o) => {
                self.rules_in += rules.len();
                self.find(&path, Effect::Skipped, format!("the collection action \"{o}\" is not known: the collection and its {} rule(s) are left out", rules.len()));
                return None;
            }
        };
        let deny = action == "deny";
        let mut out = Vec::new();
        let mut names: HashSet<String> = HashSet::new();
        for r in rules {
            self.rules_in += 1;
            let rname = text(r, "name").to_string();
            let rpath = format!("{path}/{rname}");
            let rtype = text(r, "ruleType").to_string();
            let want = match kind {
                "dnat" => "NatRule",
                "application" => "ApplicationRule",
                _ => "NetworkRule",
            };
            if !rtype.eq_ignore_ascii_case(want) {
                self.find(&rpath, Effect::Skipped, format!("a {rtype} in a collection of {want}s: a Tollgate collection holds one kind of rule, so it is left out"));
                continue;
            }
            let lines = match kind {
                "dnat" => self.nat_rule(&rpath, r),
                "application" => self.application_rule(&rpath, r, deny),
                _ => self.network_rule(&rpath, r, deny),
            };
            let Some(lines) = lines else { continue };
            let mut tname = if rname.is_empty() {
                "rule".to_string()
            } else {
                rname.clone()
            };
            let mut n = 2;
            while !names.insert(tname.clone()) {
                tname = format!("{rname}-{n}");
                n += 1;
            }
            if tname != rname {
                self.find(
                    &rpath,
                    Effect::Note,
                    format!("renamed \"{tname}\": rule names must be unique in a collection"),
                );
            }
            self.rules_out += 1;
            out.push(RuleOut {
                name: tname,
                path: rpath,
                azure_type: rtype,
                description: text(r, "description").to_string(),
                lines,
            });
        }
        Some((
            CollOut {
                name,
                path,
                priority: 0,
                azure_priority,
                kind,
                action,
                rules: out,
            },
            azure_priority.unwrap_or(65000),
            index,
        ))
    }
}

/// Priorities for items in evaluation order: the Azure priority where it keeps the order
/// strictly increasing, else the next free number; evenly spread if that runs past 65000.
fn renumber(azure: &[i64]) -> Vec<u32> {
    let mut out = Vec::with_capacity(azure.len());
    let mut prev = 99i64;
    for &p in azure {
        let p = p.clamp(100, 65000).max(prev + 1);
        out.push(p);
        prev = p;
    }
    if prev > 65000 {
        return (0..azure.len()).map(|i| 100 + i as u32).collect();
    }
    out.into_iter().map(|p| p as u32).collect()
}

/// Imports the policy found in the inputs (JSON values with the names they came from).
pub fn import(inputs: &[(String, Value)], opts: &Options) -> Result<Imported, ImportError> {
    let mut inv = Inventory::default();
    for (origin, v) in inputs {
        arm::read(origin, v, &mut inv).map_err(|reason| ImportError::BadInput {
            origin: origin.clone(),
            reason,
        })?;
    }
    if inv.groups.is_empty() && inv.policies.is_empty() {
        return Err(ImportError::Nothing);
    }
    let mut findings = Vec::new();
    // ---- which policy, and its parents
    let mut names: Vec<String> = Vec::new();
    for n in inv
        .policies
        .iter()
        .map(|p| p.name.clone())
        .chain(inv.groups.iter().filter_map(|g| g.policy.clone()))
    {
        if !names.iter().any(|x| x.eq_ignore_ascii_case(&n)) {
            names.push(n);
        }
    }
    let base_of = |n: &str| -> Option<String> {
        inv.policies
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(n))
            .and_then(|p| p.base.clone())
    };
    let chain: Vec<String> = if names.is_empty() {
        vec![String::new()]
    } else {
        let target = match &opts.policy {
            Some(p) => names
                .iter()
                .find(|n| n.eq_ignore_ascii_case(p))
                .cloned()
                .ok_or_else(|| ImportError::UnknownPolicy(p.clone()))?,
            None => {
                let leaves: Vec<&String> = names
                    .iter()
                    .filter(|n| {
                        !inv.policies
                            .iter()
                            .any(|p| p.base.as_deref().is_some_and(|b| b.eq_ignore_ascii_case(n)))
                    })
                    .collect();
                match leaves.as_slice() {
                    [one] => (*one).clone(),
                    _ => {
                        return Err(ImportError::SeveralPolicies(
                            leaves.into_iter().cloned().collect(),
                        ))
                    }
                }
            }
        };
        let mut chain = vec![target.clone()];
        let mut cur = target;
        while let Some(b) = base_of(&cur) {
            if chain.iter().any(|c| c.eq_ignore_ascii_case(&b)) {
                findings.push(Finding {
                    path: cur.clone(),
                    effect: Effect::Note,
                    message: format!("the basePolicy chain loops back to \"{b}\": followed once"),
                });
                break;
            }
            if !names.iter().any(|n| n.eq_ignore_ascii_case(&b)) {
                findings.push(Finding {
                    path: cur.clone(),
                    effect: Effect::Skipped,
                    message: format!("its basePolicy \"{b}\" is not in the input: the inherited rule collection groups are not carried over (give the parent's JSON too)"),
                });
                break;
            }
            chain.push(b.clone());
            cur = b;
        }
        chain.reverse();
        chain
    };
    let leaf = chain.last().cloned().unwrap_or_default();
    let mut ctx = Ctx {
        opts,
        ip_groups: inv
            .ip_groups
            .iter()
            .map(|g| {
                (
                    g.name.to_ascii_lowercase(),
                    (g.name.clone(), g.addresses.clone()),
                )
            })
            .collect(),
        used_ip_groups: BTreeSet::new(),
        findings,
        uses_destination_fqdns: false,
        rules_in: 0,
        rules_out: 0,
    };
    for (path, m) in &inv.lost {
        ctx.find(path, Effect::Skipped, m.clone());
    }
    for (path, m) in &inv.ignored {
        ctx.find(path, Effect::Note, m.clone());
    }
    // ---- policy settings
    for pname in &chain {
        let Some(p) = inv.policies.iter().find(|p| &p.name == pname) else {
            continue;
        };
        policy_settings(&mut ctx, pname, &p.props);
    }
    // ---- groups, parent's first, each policy's by priority
    let belongs = |g: &GroupDoc, p: &str| match &g.policy {
        Some(x) => x.eq_ignore_ascii_case(p),
        None => p == leaf,
    };
    let mut ordered: Vec<(&str, &GroupDoc)> = Vec::new();
    for p in &chain {
        let mut gs: Vec<&GroupDoc> = inv.groups.iter().filter(|g| belongs(g, p)).collect();
        gs.sort_by_key(|g| (g.priority.unwrap_or(65000), g.index));
        ordered.extend(gs.into_iter().map(|g| (p.as_str(), g)));
    }
    for g in &inv.groups {
        if !chain.iter().any(|p| belongs(g, p)) {
            ctx.find(
                &format!("{}/{}", g.policy.as_deref().unwrap_or("?"), g.name),
                Effect::Note,
                format!("{}: belongs to another policy, not imported", g.origin),
            );
        }
    }
    let prios = renumber(
        &ordered
            .iter()
            .map(|(_, g)| g.priority.unwrap_or(65000))
            .collect::<Vec<_>>(),
    );
    let mut groups_out = Vec::new();
    let mut gnames: HashSet<String> = HashSet::new();
    for ((pname, g), prio) in ordered.iter().zip(prios) {
        let gpath = if pname.is_empty() {
            g.name.clone()
        } else {
            format!("{pname}/{}", g.name)
        };
        let mut name = g.name.clone();
        if !gnames.insert(name.to_ascii_lowercase()) {
            name = format!("{}-{pname}", g.name);
            gnames.insert(name.to_ascii_lowercase());
            ctx.find(
                &gpath,
                Effect::Note,
                format!("renamed \"{name}\": another imported policy has a group of the same name"),
            );
        }
        if g.priority.is_none() {
            ctx.find(
                &gpath,
                Effect::Note,
                "the group has no priority: it goes last",
            );
        }
        let inherited_from = (*pname != leaf).then(|| pname.to_string());
        if g.priority.is_some_and(|p| i64::from(prio) != p) {
            let why = if inherited_from.is_some() || chain.len() > 1 {
                "the parent policy's groups come first, as Azure's inherited rules do"
            } else {
                "two groups had the same priority (or it was out of range); their order is kept"
            };
            ctx.find(
                &gpath,
                Effect::Note,
                format!("priority {} becomes {prio}: {why}", g.priority.unwrap_or(0)),
            );
        }
        let mut colls: Vec<(CollOut, i64, usize)> = g
            .collections
            .iter()
            .enumerate()
            .filter_map(|(i, c)| ctx.collection(&gpath, c, i))
            .collect();
        colls.sort_by_key(|(_, p, i)| (*p, *i));
        let cprios = renumber(&colls.iter().map(|(_, p, _)| *p).collect::<Vec<_>>());
        let mut cnames: HashSet<String> = HashSet::new();
        let mut collections = Vec::new();
        for ((mut c, ap, _), cp) in colls.into_iter().zip(cprios) {
            c.priority = cp;
            if i64::from(cp) != ap {
                ctx.find(&c.path, Effect::Note, format!("priority {ap} becomes {cp}: two collections of the group had the same priority (or it was missing or out of range); their order is kept"));
            }
            let orig = c.name.clone();
            let mut n = 2;
            while !cnames.insert(c.name.clone()) {
                c.name = format!("{orig}-{n}");
                n += 1;
            }
            if c.name != orig {
                ctx.find(
                    &c.path,
                    Effect::Note,
                    format!(
                        "renamed \"{}\": collection names must be unique in a group",
                        c.name
                    ),
                );
            }
            collections.push(c);
        }
        groups_out.push(GroupOut {
            name,
            path: gpath,
            priority: prio,
            azure_priority: g.priority,
            inherited_from,
            collections,
        });
    }
    // ---- DNS: the nearest policy in the chain with settings
    let dns = chain
        .iter()
        .rev()
        .filter_map(|p| inv.policies.iter().find(|x| &x.name == p))
        .find_map(|p| p.props.get("dnsSettings"))
        .map(|d| strs(d, "servers"))
        .unwrap_or_default();
    let toml = emit(&mut ctx, &chain, inputs, &groups_out, &dns);
    let Ctx {
        findings,
        rules_in,
        rules_out,
        ..
    } = ctx;
    Ok(Imported {
        toml,
        findings,
        policies: chain.into_iter().filter(|p| !p.is_empty()).collect(),
        rules_in,
        rules_out,
    })
}

/// Policy-wide settings Tollgate does not carry over, each a finding on the policy.
fn policy_settings(ctx: &mut Ctx, pname: &str, p: &Value) {
    let ti = text(p, "threatIntelMode");
    if !ti.eq_ignore_ascii_case("off") {
        let mode = if ti.is_empty() {
            "Alert, Azure's default"
        } else {
            ti
        };
        ctx.find(pname, Effect::NotEnforced, format!("threat intelligence (threatIntelMode {mode}) is not done: no feed of known-bad addresses and names"));
    }
    if let Some(m) = p
        .get("intrusionDetection")
        .map(|i| text(i, "mode"))
        .filter(|m| !m.is_empty() && !m.eq_ignore_ascii_case("off"))
    {
        ctx.find(
            pname,
            Effect::NotEnforced,
            format!("IDPS (intrusionDetection mode {m}) is not done: no signature inspection"),
        );
    }
    if p.get("transportSecurity").is_some_and(|t| !t.is_null()) {
        ctx.find(pname, Effect::NotEnforced, "transportSecurity (the TLS inspection CA) is not used: Tollgate reads SNI and Host without decrypting");
    }
    if let Some(d) = p.get("dnsSettings") {
        if d.get("enableProxy").and_then(Value::as_bool) == Some(true) {
            ctx.find(pname, Effect::NotEnforced, "DNS proxy (dnsSettings.enableProxy) is not provided: clients must use the DNS servers directly (Tollgate resolves network rules' FQDNs itself at [dns] servers)");
        }
    }
    if let Some(e) = p.get("explicitProxy") {
        if e.get("enableExplicitProxy").and_then(Value::as_bool) == Some(true) {
            ctx.find(
                pname,
                Effect::NotEnforced,
                "the explicit proxy is not provided",
            );
        }
    }
    if let Some(s) = p.get("snat") {
        let ranges = strs(s, "privateRanges");
        let custom = match ranges.as_slice() {
            [] => false,
            [one] => !one.eq_ignore_ascii_case("IANAPrivateRanges"),
            _ => true,
        };
        if custom {
            ctx.find(pname, Effect::NotEnforced, format!("snat.privateRanges ({}) are not written: set snat.exempt in the configuration (its default is the IANA private ranges, Azure's default too)", ranges.join(", ")));
        }
        if s.get("autoLearnPrivateRanges")
            .and_then(Value::as_str)
            .is_some_and(|v| v.eq_ignore_ascii_case("enabled"))
        {
            ctx.find(
                pname,
                Effect::NotEnforced,
                "snat.autoLearnPrivateRanges is not done: list the ranges in snat.exempt",
            );
        }
    }
    if p.get("sql")
        .and_then(|s| s.get("allowSqlRedirect"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        ctx.find(
            pname,
            Effect::NotEnforced,
            "sql.allowSqlRedirect is not supported",
        );
    }
}

fn emit(
    ctx: &mut Ctx,
    chain: &[String],
    inputs: &[(String, Value)],
    groups: &[GroupOut],
    dns: &[String],
) -> String {
    let mut o = String::new();
    let named: Vec<String> = chain
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| format!("\"{}\"", comment(p)))
        .collect();
    let _ = writeln!(
        o,
        "# Imported by `tollgate import azure-policy` from {}",
        inputs
            .iter()
            .map(|(n, _)| comment(n))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !named.is_empty() {
        let _ = writeln!(
            o,
            "# Azure Firewall Policy: {} (parents first)",
            named.join(" <- ")
        );
    }
    let _ = writeln!(o, "# Order kept from Azure: DNAT, then network, then application rules; groups, then collections,");
    let _ = writeln!(o, "# by priority; first match wins; default deny. Each rule names its source: policy/group/collection/rule.");
    // DNS: only when there is something to resolve or servers to keep.
    let mut dns_lines = Vec::new();
    let servers: Vec<String> = dns
        .iter()
        .filter(|s| s.trim().parse::<Ipv4Addr>().is_ok())
        .cloned()
        .collect();
    if servers.len() < dns.len() {
        ctx.find(
            chain.last().map_or("", String::as_str),
            Effect::Note,
            "DNS servers that are not IPv4 addresses are left out of [dns] servers",
        );
    }
    let base_dns = ctx.opts.base.as_ref().is_some_and(|b| b.has_dns);
    if ctx.uses_destination_fqdns || !servers.is_empty() {
        if base_dns {
            if !servers.is_empty() {
                ctx.find(chain.last().map_or("", String::as_str), Effect::Note, format!("the policy's DNS servers ({}) are not written: the base configuration has its own [dns]", servers.join(", ")));
            }
        } else {
            dns_lines.push("[dns]".to_string());
            if servers.is_empty() {
                dns_lines.push(
                    "# The policy names no DNS servers: Azure Firewall then uses Azure DNS.".into(),
                );
                dns_lines.push(format!("servers = {}", list(&[AZURE_DNS.to_string()])));
            } else {
                dns_lines.push("# From the policy's dnsSettings.servers.".into());
                dns_lines.push(format!("servers = {}", list(&servers)));
            }
        }
    }
    let mut body = String::new();
    if !dns_lines.is_empty() {
        let _ = writeln!(body, "\n{}", dns_lines.join("\n"));
    }
    if !ctx.used_ip_groups.is_empty() {
        let _ = writeln!(
            body,
            "\n# Azure IP groups (Microsoft.Network/ipGroups) the rules reference.\n[ip_groups]"
        );
        for name in ctx.used_ip_groups.clone() {
            let addrs = ctx
                .ip_groups
                .get(&name.to_ascii_lowercase())
                .map(|(_, a)| a.clone())
                .unwrap_or_default();
            let mut nets = Vec::new();
            for a in &addrs {
                match addr_item(a) {
                    Addr::Nets(n) => nets.extend(n.into_iter().filter(|x| x != "*")),
                    Addr::V6 => ctx.find(&format!("ipGroups/{name}"), Effect::Note, format!("the IPv6 entry {a} is left out: Tollgate forwards IPv4 only")),
                    Addr::Tag(t) => ctx.find(&format!("ipGroups/{name}"), Effect::Narrowed, format!("\"{t}\" is not an address: left out of the group (a deny rule using it denies less)")),
                    Addr::Lost(m) => ctx.find(&format!("ipGroups/{name}"), Effect::Narrowed, format!("{m}: left out of the group (a deny rule using it denies less)")),
                }
            }
            let _ = writeln!(body, "{} = {}", q(&name), list(&nets));
        }
    }
    for g in groups {
        let _ = writeln!(body, "\n[[group]]");
        let mut from = format!("# from: {}", comment(&g.path));
        if let Some(p) = g.azure_priority {
            let _ = write!(from, " (Azure priority {p})");
        }
        if let Some(parent) = &g.inherited_from {
            let _ = write!(
                from,
                "; inherited from the parent policy \"{}\"",
                comment(parent)
            );
        }
        let _ = writeln!(body, "{from}");
        let _ = writeln!(body, "name = {}\npriority = {}", q(&g.name), g.priority);
        for c in &g.collections {
            let _ = writeln!(body, "\n  [[group.collection]]");
            let mut from = format!("  # from: {}", comment(&c.path));
            if let Some(p) = c.azure_priority {
                let _ = write!(from, " (Azure priority {p})");
            }
            let _ = writeln!(body, "{from}");
            let _ = writeln!(
                body,
                "  name = {}\n  priority = {}\n  kind = \"{}\"\n  action = \"{}\"",
                q(&c.name),
                c.priority,
                c.kind,
                c.action
            );
            for r in &c.rules {
                let _ = writeln!(body, "\n    [[group.collection.rule]]");
                let _ = writeln!(
                    body,
                    "    # from: {} ({})",
                    comment(&r.path),
                    comment(&r.azure_type)
                );
                if !r.description.is_empty() {
                    let _ = writeln!(body, "    # description: {}", comment(&r.description));
                }
                for f in ctx.findings.iter().filter(|f| f.path == r.path) {
                    let _ = writeln!(body, "    # {}: {}", f.effect.label(), comment(&f.message));
                }
                let _ = writeln!(body, "    name = {}", q(&r.name));
                for l in &r.lines {
                    let _ = writeln!(body, "    {l}");
                }
            }
        }
    }
    // The report, at the top too, so the file says what it lacks.
    let lossy: Vec<&Finding> = ctx
        .findings
        .iter()
        .filter(|f| f.effect != Effect::Note)
        .collect();
    if lossy.is_empty() {
        let _ = writeln!(
            o,
            "#\n# Everything was carried over ({} rule(s)).",
            ctx.rules_out
        );
    } else {
        let _ = writeln!(
            o,
            "#\n# NOT carried over as in Azure ({} item(s); {} of {} rule(s) written):",
            lossy.len(),
            ctx.rules_out,
            ctx.rules_in
        );
        for f in lossy {
            let _ = writeln!(o, "#   {}", comment(&f.to_string()));
        }
    }
    if let Some(b) = &ctx.opts.base {
        let _ = writeln!(
            o,
            "\n# ---- from {} (copied as it is)\n",
            comment(&b.origin)
        );
        o.push_str(&b.text);
        if !b.text.ends_with('\n') {
            o.push('\n');
        }
        let _ = writeln!(o, "\n# ---- imported from Azure");
    } else {
        let _ = writeln!(o, "#\n# A fragment: add [appliance], [[interface]] and [snat] (or import with --into BASE.toml).");
    }
    o.push_str(&body);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_exact_prefixes() {
        let r = |a: &str, b: &str| -> Vec<String> {
            range_to_cidrs(a.parse().unwrap(), b.parse().unwrap())
                .iter()
                .map(|n| n.to_string())
                .collect()
        };
        assert_eq!(r("198.18.0.0", "198.18.0.255"), ["198.18.0.0/24"]);
        assert_eq!(r("198.18.0.1", "198.18.0.1"), ["198.18.0.1/32"]);
        assert_eq!(
            r("198.18.0.1", "198.18.0.6"),
            [
                "198.18.0.1/32",
                "198.18.0.2/31",
                "198.18.0.4/31",
                "198.18.0.6/32"
            ]
        );
        assert_eq!(r("198.18.0.0", "198.19.255.255"), ["198.18.0.0/15"]);
        assert_eq!(
            r("198.18.0.255", "198.18.1.0"),
            ["198.18.0.255/32", "198.18.1.0/32"]
        );
    }

    #[test]
    fn renumbering_keeps_order_and_azure_numbers_where_it_can() {
        assert_eq!(renumber(&[100, 200, 300]), [100, 200, 300]);
        assert_eq!(renumber(&[300, 100, 200]), [300, 301, 302]);
        assert_eq!(renumber(&[200, 200]), [200, 201]);
        assert_eq!(renumber(&[65000, 100]), [100, 101]);
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(q("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }
}
