//! Finds every unknown key in the document (serde stops at the first one).

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

fn allowed(path: &str) -> Option<&'static [&'static str]> {
    Some(match path {
        "" => &[
            "appliance",
            "interface",
            "route",
            "snat",
            "conntrack",
            "ip_groups",
            "group",
            "dns",
            "host",
        ],
        "host" => &[
            "policy",
            "management_sources",
            "ssh_sources",
            "ping_sources",
        ],
        "dns" => &[
            "servers",
            "min_refresh",
            "max_refresh",
            "source_ports",
            "source_port",
        ],
        "appliance" => &[
            "inside_prefixes",
            "icmp_source",
            "workers",
            "management",
            "admin_socket",
            "decision_log",
            "busy_poll_us",
            "busy_poll_mode",
            "backend",
            "service_tags_file",
        ],
        "interface" => &["name", "role", "addresses", "gateway", "mtu"],
        "route" => &["prefix", "via", "interface"],
        "snat" => &[
            "addresses",
            "ports",
            "mapping",
            "port_sharing",
            "per_host_quota",
            "reuse_cooldown",
            "time_wait_reuse",
            "exempt",
            "icmp_on_exhaustion",
            "mss_clamp",
        ],
        "conntrack" => &["max_flows", "timeouts"],
        "conntrack.timeouts" => &[
            "tcp_syn",
            "tcp_established",
            "tcp_closing",
            "tcp_time_wait",
            "tcp_rst",
            "udp",
            "icmp",
        ],
        "group" => &["name", "priority", "collection"],
        "group.collection" => &["name", "priority", "kind", "action", "mode", "rule"],
        "group.collection.rule" => &[
            "name",
            "sources",
            "source_ip_groups",
            "destinations",
            "destination_ip_groups",
            "destination_fqdns",
            "destination_service_tags",
            "protocols",
            "destination_ports",
            "fqdns",
            "fqdn_tags",
            "translated_address",
            "translated_port",
        ],
        _ => return None,
    })
}

/// Every unknown key: (span of the key, sentence).
pub(super) fn unknown_keys(text: &str) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    if let Ok(doc) = ImDocument::parse(text) {
        walk_table(doc.as_table(), "", &mut out);
    }
    out
}

fn report(
    path: &str,
    key: &str,
    span: Option<Range<usize>>,
    out: &mut Vec<(Range<usize>, String)>,
) -> bool {
    let Some(list) = allowed(path) else {
        return false;
    };
    if list.contains(&key) {
        return true;
    }
    let place = if path.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in [{path}]")
    };
    out.push((
        span.unwrap_or(0..0),
        format!(
            "unknown key \"{key}\" {place}; expected one of: {}",
            list.join(", ")
        ),
    ));
    false
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk_table(t: &Table, path: &str, out: &mut Vec<(Range<usize>, String)>) {
    for (k, item) in t.iter() {
        let span = t.key(k).and_then(|k| k.span());
        if report(path, k, span, out) {
            walk_item(item, &child(path, k), out);
        }
    }
}

fn walk_item(item: &Item, path: &str, out: &mut Vec<(Range<usize>, String)>) {
    match item {
        Item::Table(t) => walk_table(t, path, out),
        Item::ArrayOfTables(a) => {
            for t in a.iter() {
                walk_table(t, path, out);
            }
        }
        Item::Value(v) => walk_value(v, path, out),
        Item::None => {}
    }
}

fn walk_value(v: &Value, path: &str, out: &mut Vec<(Range<usize>, String)>) {
    match v {
        Value::InlineTable(t) => {
            for (k, item) in t.iter() {
                let span = t.key(k).and_then(|k| k.span());
                if report(path, k, span, out) {
                    walk_value(item, &child(path, k), out);
                }
            }
        }
        Value::Array(a) if allowed(path).is_some() => {
            for v in a.iter() {
                walk_value(v, path, out);
            }
        }
        _ => {}
    }
}
