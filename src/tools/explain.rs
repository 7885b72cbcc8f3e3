//! How the configuration decides one flow, and what almost matched (`tollgate explain`, from a
//! file or against the running daemon's configuration over the admin socket).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::config::Loaded;
use crate::policy::{proto, AppProto, Decision, FlowQuery, Policy, RuleId, RuleKind, RuleSpec};

fn endpoint(s: &str, need_port: bool) -> Result<(Ipv4Addr, u16), String> {
    if let Ok(a) = s.parse::<SocketAddrV4>() {
        return Ok((*a.ip(), a.port()));
    }
    match s.parse::<Ipv4Addr>() {
        Ok(a) if !need_port => Ok((a, 0)),
        Ok(_) => Err(format!("\"{s}\" needs a port (IP:PORT)")),
        Err(_) => Err(format!("\"{s}\" is not an IPv4 address or IPv4:PORT")),
    }
}

/// Parses a flow given as source (IP or IP:PORT), destination (IP:PORT; IP for icmp) and
/// protocol name.
pub fn parse_query(src: &str, dst: &str, protocol: &str) -> Result<FlowQuery, String> {
    let p = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => proto::TCP,
        "udp" => proto::UDP,
        "icmp" => proto::ICMP,
        o => return Err(format!("protocol \"{o}\" is not tcp, udp or icmp")),
    };
    let (src, sport) = endpoint(src, false)?;
    let (dst, dport) = endpoint(dst, p != proto::ICMP)?;
    Ok(FlowQuery {
        src,
        dst,
        proto: p,
        sport: if sport == 0 { 40000 } else { sport },
        dport: if p == proto::ICMP { 0 } else { dport },
    })
}

fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        o => format!("proto {o}"),
    }
}

fn rule_name(l: &Loaded, id: RuleId) -> String {
    let mut s = match l.policy.describe(id) {
        Some(r) => format!("{}/{}/{} ({} rule)", r.group, r.collection, r.rule, r.kind),
        None => format!("#{id}"),
    };
    if let Some(r) = l.policy.rule(id) {
        s.push_str(&fqdn_note(l, r));
    }
    s
}

/// What a rule's destination FQDNs resolved to: `[destination_fqdns: a.example -> 1.2.3.4;
/// b.example unresolved]`, or nothing for a rule without them.
fn fqdn_note(l: &Loaded, r: &RuleSpec) -> String {
    if r.destination_fqdns.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = r
        .destination_fqdns
        .iter()
        .map(|f| {
            let n = match f {
                crate::policy::FqdnPattern::Exact(n) => n.as_str(),
                _ => "*",
            };
            match l.fqdn_addresses.get(n) {
                Some(a) if !a.is_empty() => format!(
                    "{n} -> {}",
                    a.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ if l.dns.servers.is_empty() => format!("{n} unresolved (no [dns] servers)"),
                _ => format!("{n} unresolved (matches nothing)"),
            }
        })
        .collect();
    format!(" [destination_fqdns: {}]", parts.join("; "))
}

/// The explanation text of a flow.
pub fn explain(l: &Loaded, q: &FlowQuery, sni: Option<&str>) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "flow: {}:{} -> {}:{} {}",
        q.src,
        q.sport,
        q.dst,
        q.dport,
        proto_name(q.proto)
    );
    let mut d = l.policy.decide(q);
    let mut app_used = None;
    if d == Decision::Inspect {
        match sni {
            None => {
                let _ = writeln!(o, "decision: needs inspection (application rules may match; the verdict depends on the SNI / Host name: pass --sni NAME)");
                for (i, r) in l.policy.rules().iter().enumerate() {
                    if r.kind == RuleKind::Application && r.field_match(q).all() {
                        let _ = writeln!(o, "  candidate: {}", rule_name(l, i as RuleId));
                    }
                }
                return o;
            }
            Some(name) => {
                let apps: &[AppProto] = if q.proto == proto::UDP {
                    &[AppProto::Quic]
                } else {
                    &[AppProto::Https, AppProto::Http]
                };
                // The first application protocol that decides; else the first one.
                let tried = apps
                    .iter()
                    .map(|&a| (a, l.policy.decide_app(q, a, Some(name))))
                    .find(|(_, d)| *d != Decision::Deny { rule: None });
                let (a, dec) = tried.unwrap_or((apps[0], Decision::Deny { rule: None }));
                d = dec;
                app_used = Some(a);
                let _ = writeln!(
                    o,
                    "application: {:?} with name \"{name}\"",
                    app_used.unwrap_or(AppProto::Https)
                );
            }
        }
    }
    let allowed = match d {
        Decision::Allow { rule } => {
            let _ = writeln!(o, "decision: allow\n  by {}", rule_name(l, rule));
            true
        }
        Decision::Dnat { rule, to, to_port } => {
            let _ = writeln!(
                o,
                "decision: DNAT to {to}:{to_port}\n  by {}",
                rule_name(l, rule)
            );
            snat_line(&mut o, l, q.src, to, true);
            return o;
        }
        Decision::Deny { rule: Some(rule) } => {
            if l.policy.is_audit(rule) {
                let _ = writeln!(
                    o,
                    "decision: deny in audit mode (logged, the flow is let through)\n  by {}",
                    rule_name(l, rule)
                );
                true
            } else {
                let _ = writeln!(o, "decision: deny\n  by {}", rule_name(l, rule));
                false
            }
        }
        Decision::Deny { rule: None } => {
            let why = if sni.is_some() && app_used.is_some() {
                "no application rule matched the name"
            } else {
                "no rule matched"
            };
            let _ = writeln!(o, "decision: deny (default: {why})");
            false
        }
        Decision::Inspect => false,
    };
    if allowed {
        snat_line(&mut o, l, q.src, q.dst, false);
    } else {
        near_misses(&mut o, l, q, sni, app_used);
    }
    o
}

/// The SNAT a new flow from `src` to `dst` (after any DNAT) gets: [`NatConfig::snat_rule`], as
/// the datapath decides it.
///
/// [`NatConfig::snat_rule`]: crate::nat::NatConfig::snat_rule
fn snat_line(o: &mut String, l: &Loaded, src: Ipv4Addr, dst: Ipv4Addr, dnat: bool) {
    use crate::nat::SnatRule;
    let nat = &l.engine.nat;
    match nat.snat_rule(&l.engine.inside_prefixes, src, dst) {
        SnatRule::Exempt(p) => {
            let _ = writeln!(
                o,
                "snat: none (destination {dst} is in the exempt prefix {p})"
            );
            return;
        }
        SnatRule::NotFromInside if dnat => {
            let _ = writeln!(
                o,
                "snat: none (inbound DNAT flow: the client's address is kept)"
            );
            return;
        }
        SnatRule::NotFromInside => {
            let _ = writeln!(o, "note: source {src} is not in appliance.inside_prefixes; the datapath does not forward it as inside traffic");
            let _ = writeln!(o, "snat: none (source {src} is not inside)");
            return;
        }
        SnatRule::Snat if dnat => {
            let _ = writeln!(o, "hairpin: an inside source to a DNAT rule; SNATed so that {dst} answers through the appliance");
        }
        SnatRule::Snat => {}
    }
    match nat.public_addrs.as_slice() {
        [one] => {
            let _ = writeln!(o, "snat: to {one}");
        }
        many => {
            let list: Vec<String> = many.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(
                o,
                "snat: to one of [{}] (chosen by hashing the source)",
                list.join(", ")
            );
        }
    }
}

fn near_misses(
    o: &mut String,
    l: &Loaded,
    q: &FlowQuery,
    sni: Option<&str>,
    app: Option<AppProto>,
) {
    let mut ranked: Vec<(usize, usize, Vec<&str>)> = Vec::new();
    for (i, r) in l.policy.rules().iter().enumerate() {
        if app.is_some() && r.kind != RuleKind::Application {
            continue;
        }
        let failed = failed_fields(r, q, sni, app);
        if failed.is_empty() {
            continue;
        }
        let total = if r.kind == RuleKind::Application && sni.is_some() {
            5
        } else {
            4
        };
        ranked.push((total - failed.len(), i, failed));
    }
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    if ranked.is_empty() {
        return;
    }
    let _ = writeln!(o, "nearest rules:");
    for (score, i, failed) in ranked.into_iter().take(3) {
        let _ = writeln!(
            o,
            "  {} matched {score} field(s); failed: {}",
            rule_name(l, i as RuleId),
            failed.join(", ")
        );
    }
}

fn failed_fields(
    r: &RuleSpec,
    q: &FlowQuery,
    sni: Option<&str>,
    app: Option<AppProto>,
) -> Vec<&'static str> {
    let m = r.field_match(q);
    let mut f = Vec::new();
    if !m.src {
        f.push("source");
    }
    if !m.dst {
        f.push("destination");
    }
    if !m.proto {
        f.push("protocol");
    }
    if !m.port && (q.proto == proto::TCP || q.proto == proto::UDP) {
        f.push("port");
    }
    if r.kind == RuleKind::Application {
        if let Some(name) = sni {
            if !r.fqdns.iter().any(|p| p.matches(name)) {
                f.push("fqdn");
            }
            if let Some(a) = app {
                if m.port && !r.app_protocols.contains(&(a, q.dport)) {
                    f.push("application protocol");
                }
            }
        }
    }
    f
}
