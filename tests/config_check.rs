//! `check` diagnostics: one test per error class, asserting the sentence and the exact line:col.

use std::path::PathBuf;

use tollgate::cli::check::{check_report, CheckArgs};
use tollgate::config::{load_str, ConfigErrors, Severity};

const HEAD: &str = r#"[appliance]
inside_prefixes = ["198.18.0.0/15"]

[[interface]]
name = "tg-in"
role = "inside"
addresses = ["198.18.0.1/24"]

[snat]
addresses = ["203.0.113.1"]

[ip_groups]
inside = ["198.18.0.0/15"]
"#;
// HEAD is 13 lines; text appended starts on line 14.

fn diags(extra: &str) -> Vec<String> {
    let text = format!("{HEAD}{extra}");
    match load_str(&text, "t.toml") {
        Ok(l) => l.warnings.iter().map(|d| d.to_string()).collect(),
        Err(e) => e
            .errors()
            .iter()
            .chain(e.warnings())
            .map(|d| d.to_string())
            .collect(),
    }
}

fn has(extra: &str, want: &str) {
    let d = diags(extra);
    assert!(d.iter().any(|x| x == want), "want {want}\n got {d:#?}");
}

fn net_rule(body: &str) -> String {
    format!(
        r#"[[group]]
name = "g"
priority = 100
  [[group.collection]]
  name = "c"
  priority = 100
  kind = "network"
  action = "allow"
    [[group.collection.rule]]
    name = "r"
{body}"#
    )
}
// net_rule's body starts on line 24.

#[test]
fn valid_head_loads() {
    let l = load_str(HEAD, "t.toml").unwrap();
    assert_eq!(l.engine.icmp_source.to_string(), "198.18.0.1");
    assert_eq!(
        l.engine.interfaces[0].connected[0].to_string(),
        "198.18.0.0/24"
    );
}

#[test]
fn toml_syntax_error() {
    let d = diags("[snat\n");
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].starts_with("t.toml:14:6: error: invalid table header"),
        "{d:#?}"
    );
}

#[test]
fn unknown_keys_are_all_reported() {
    let d = diags("[conntrack]\nmax_flow = 5\n[conntrack.timeouts]\ntcp = 3\n");
    assert_eq!(
        d,
        vec![
            "t.toml:15:1: error: unknown key \"max_flow\" in [conntrack]; expected one of: max_flows, timeouts",
            "t.toml:17:1: error: unknown key \"tcp\" in [conntrack.timeouts]; expected one of: tcp_syn, tcp_established, tcp_closing, tcp_time_wait, tcp_rst, udp, icmp",
        ]
    );
}

#[test]
fn unknown_ip_group() {
    has(
        &net_rule("    source_ip_groups = [\"nodes\"]\n    destinations = [\"*\"]\n    protocols = [\"any\"]\n    destination_ports = [\"*\"]\n"),
        "t.toml:24:25: error: the IP group \"nodes\" is not defined in [ip_groups]",
    );
}

#[test]
fn malformed_cidr_and_host_bits() {
    let body = "    sources = [\"198.19.0.1/15\", \"198.18.0.0/33\"]\n    destinations = [\"*\"]\n    protocols = [\"any\"]\n    destination_ports = [\"*\"]\n";
    has(
        &net_rule(body),
        "t.toml:24:16: error: the prefix \"198.19.0.1/15\" has host bits set; did you mean \"198.18.0.0/15\"?",
    );
    has(
        &net_rule(body),
        "t.toml:24:33: error: \"198.18.0.0/33\" is not a valid CIDR prefix (expected a.b.c.d/len, len 0-32)",
    );
}

fn app_rule(fqdns: &str, protocols: &str) -> String {
    format!(
        r#"[[group]]
name = "g"
priority = 100
  [[group.collection]]
  name = "c"
  priority = 100
  kind = "application"
  action = "allow"
    [[group.collection.rule]]
    name = "r"
    sources = ["*"]
    fqdns = {fqdns}
    protocols = {protocols}
"#
    )
}

#[test]
fn misplaced_wildcards() {
    let t = app_rule(
        r#"["foo.*.com", "*foo.com", "*.ok.com"]"#,
        r#"["https:443"]"#,
    );
    has(&t, "t.toml:25:14: error: FQDN \"foo.*.com\": a wildcard is only allowed as the whole left-most label, as in \"*.example.com\"");
    has(&t, "t.toml:25:27: error: FQDN \"*foo.com\": a wildcard is only allowed as the whole left-most label, as in \"*.example.com\"");
    assert_eq!(diags(&t).len(), 2);
}

#[test]
fn bad_application_protocol() {
    let t = app_rule(r#"["a.example"]"#, r#"["https", "ftp:21", "quic:443"]"#);
    has(&t, "t.toml:26:18: error: application protocol \"https\" must be http, https or quic with a port, as in \"https:443\"");
    has(&t, "t.toml:26:27: error: application protocol \"ftp:21\" must be http, https or quic with a port, as in \"https:443\"");
    assert_eq!(diags(&t).len(), 2);
}

#[test]
fn unknown_fqdn_tag() {
    let t = app_rule(r#"["a.example"]"#, r#"["https:443"]"#).replace(
        "fqdns = [\"a.example\"]",
        "fqdn_tags = [\"AzureKubernetesServices\"]",
    );
    has(
        &t,
        "t.toml:25:18: error: the FQDN tag \"AzureKubernetesServices\" is unknown",
    );
}

const TWO_GROUPS: &str = r#"[[group]]
name = "g"
priority = 100
  [[group.collection]]
  name = "c"
  priority = 100
  kind = "network"
  action = "allow"
  [[group.collection]]
  name = "c"
  priority = 100
  kind = "network"
  action = "allow"
[[group]]
name = "g"
priority = 70000
"#;

#[test]
fn duplicate_names_and_priorities() {
    has(
        TWO_GROUPS,
        "t.toml:23:10: error: the collection name \"c\" is used twice in group \"g\"",
    );
    has(TWO_GROUPS, "t.toml:24:14: error: collection \"c\" has priority 100, which collection \"c\" in group \"g\" already has: priorities within a level must differ");
    has(
        TWO_GROUPS,
        "t.toml:28:8: error: the group name \"g\" is used twice",
    );
    has(
        TWO_GROUPS,
        "t.toml:29:12: error: group priority 70000 is out of range: priorities go from 100 to 65000",
    );
}

#[test]
fn duplicate_rule_names() {
    let t = net_rule("    sources = [\"*\"]\n    destinations = [\"*\"]\n    protocols = [\"icmp\"]\n    [[group.collection.rule]]\n    name = \"r\"\n    sources = [\"*\"]\n    destinations = [\"*\"]\n    protocols = [\"icmp\"]\n");
    has(
        &t,
        "t.toml:28:12: error: the rule name \"r\" is used twice in collection \"c\"",
    );
}

#[test]
fn port_ranges() {
    let t = net_rule("    sources = [\"*\"]\n    destinations = [\"*\"]\n    protocols = [\"tcp\"]\n    destination_ports = [\"9010-9000\", \"70000\", \"x\"]\n");
    has(
        &t,
        "t.toml:27:26: error: the port range \"9010-9000\" is inverted: 9010 is greater than 9000",
    );
    has(
        &t,
        "t.toml:27:39: error: port 70000 is out of range (1-65535)",
    );
    has(
        &t,
        "t.toml:27:48: error: \"x\" is not a port, a port range like \"9000-9010\", or \"*\"",
    );
}

#[test]
fn snat_port_range_inverted() {
    let text = HEAD.replace(
        "addresses = [\"203.0.113.1\"]\n",
        "addresses = [\"203.0.113.1\"]\nports = \"60000-1024\"\n",
    );
    let e = load_str(&text, "t.toml").unwrap_err();
    assert_eq!(
        e.errors()[0].to_string(),
        "t.toml:11:9: error: snat.ports: the port range \"60000-1024\" is inverted: 60000 is greater than 1024"
    );
}

#[test]
fn route_to_unknown_interface() {
    has(
        "[[route]]\nprefix = \"198.18.64.0/24\"\nvia = \"198.18.0.11\"\ninterface = \"tg-inn\"\n",
        "t.toml:17:13: error: the route names interface \"tg-inn\", which is not a configured [[interface]]",
    );
}

fn dnat(dest: &str, to: &str) -> String {
    format!(
        r#"[[group]]
name = "g"
priority = 100
  [[group.collection]]
  name = "in"
  priority = 100
  kind = "dnat"
  action = "allow"
    [[group.collection.rule]]
    name = "web"
    sources = ["*"]
    destinations = ["{dest}"]
    protocols = ["tcp"]
    destination_ports = ["8080"]
    translated_address = "{to}"
    translated_port = 80
"#
    )
}

#[test]
fn dnat_errors() {
    has(&dnat("203.0.113.1", "198.18.0.20/32"), "t.toml:28:26: error: translated_address must be a single IPv4 address, not a prefix: \"198.18.0.20/32\"");
    has(&dnat("203.0.113.2", "198.18.0.20"), "t.toml:25:21: error: dnat destination \"203.0.113.2\" is not one of the snat addresses [\"203.0.113.1\"]");
    assert!(load_str(
        &format!("{HEAD}{}", dnat("203.0.113.1", "198.18.0.20")),
        "t"
    )
    .is_ok());
}

#[test]
fn shadowed_rule_and_overlap_warnings() {
    let t = net_rule("    sources = [\"198.18.0.0/15\", \"198.18.1.0/24\"]\n    destinations = [\"*\"]\n    protocols = [\"tcp\"]\n    destination_ports = [\"1-65535\"]\n    [[group.collection.rule]]\n    name = \"narrow\"\n    sources = [\"198.18.0.5\"]\n    destinations = [\"203.0.113.0/24\"]\n    protocols = [\"tcp\"]\n    destination_ports = [\"443\"]\n");
    let l = load_str(&format!("{HEAD}{t}"), "t.toml").unwrap();
    let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        w,
        vec![
            "t.toml:24:33: warning: the prefix 198.18.1.0/24 overlaps 198.18.0.0/15 in the same rule",
            "t.toml:29:12: warning: rule \"narrow\" can never match: the earlier rule \"r\" (line 23, column 12) in g/c covers everything it matches",
        ]
    );
    assert!(l.warnings.iter().all(|d| d.severity == Severity::Warning));
}

#[test]
fn unresolved_destination_fqdns_warn() {
    let t = net_rule("    sources = [\"*\"]\n    destination_fqdns = [\"ntp.ubuntu.com\"]\n    protocols = [\"udp\"]\n    destination_ports = [\"123\"]\n");
    has(&t, "t.toml:23:12: warning: rule \"r\" uses destination_fqdns, but no [dns] servers are configured: the names are never resolved and the rule matches only its IP destinations");
    // With a resolver configured, no warning.
    let with_dns = format!("[dns]\nservers = [\"203.0.113.53\"]\n{t}");
    let d = diags(&with_dns);
    assert!(d.iter().all(|x| !x.contains("destination_fqdns")), "{d:#?}");
    let l = load_str(&format!("{HEAD}{with_dns}"), "t.toml").unwrap();
    assert_eq!(
        l.dns.servers,
        ["203.0.113.53".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(l.dns.source_ports, 768..=1023);
    assert_eq!(l.dns.min_refresh, std::time::Duration::from_secs(5));
    assert_eq!(l.dns.max_refresh, std::time::Duration::from_secs(300));
    assert_eq!(l.policy.destination_names(), ["ntp.ubuntu.com"]);
}

#[test]
fn dns_settings_errors() {
    // [dns] starts on line 14.
    let t = "[dns]\nservers = [\"203.0.113.53\", \"nope\"]\nmin_refresh = 0\nmax_refresh = 90000\nsource_port = 2000\nretries = 3\n";
    let d = diags(t);
    for want in [
        "t.toml:15:28: error: dns.servers: \"nope\" is not an IPv4 unicast address (port 53 is implied)",
        "t.toml:16:15: error: dns.min_refresh 0 is out of range (1-86400 seconds)",
        "t.toml:17:15: error: dns.max_refresh 90000 is out of range (1-86400 seconds)",
        "t.toml:18:15: error: dns.source_port 2000 is inside the SNAT port range 1024-65535: a SNAT mapping could take it and the resolver's answers would not reach the kernel; pick a port outside the range",
        "t.toml:19:1: error: unknown key \"retries\" in [dns]; expected one of: servers, min_refresh, max_refresh, source_ports, source_port",
    ] {
        assert!(d.iter().any(|x| x == want), "want {want}\n got {d:#?}");
    }
    // Bounds inverted; the default port inside a widened SNAT range.
    let t = "[dns]\nservers = [\"203.0.113.53\"]\nmin_refresh = 60\nmax_refresh = 30\n";
    has(
        t,
        "t.toml:17:15: error: dns.min_refresh (60 s) is greater than dns.max_refresh (30 s)",
    );
    let head = HEAD.replace("[snat]\n", "[snat]\nports = \"1000-65535\"\n");
    let text = format!("{head}[dns]\nservers = [\"203.0.113.53\"]\n");
    let e = load_str(&text, "t.toml").unwrap_err();
    assert!(
        e.errors().iter().any(|d| d.message.starts_with("dns.source_ports 768-1023 (the default; set dns.source_ports) overlaps the SNAT port range 1000-65535")),
        "{e:?}"
    );
}

#[test]
fn dns_source_port_clear_of_udp_dnat() {
    let t = format!(
        "[dns]\nservers = [\"203.0.113.53\"]\nsource_port = 999\n{}",
        net_rule("    sources = [\"*\"]\n    destinations = [\"203.0.113.1\"]\n    protocols = [\"udp\"]\n    destination_ports = [\"990-1000\"]\n    translated_address = \"198.18.0.20\"\n").replace("kind = \"network\"", "kind = \"dnat\"")
    );
    has(&t, "t.toml:16:15: error: dns.source_port 999 is a UDP port of the DNAT rule \"r\": its answers would be translated inside");
}

#[test]
fn dns_source_ports_range() {
    // [dns] starts on line 14; the key on line 16.
    let ok = "[dns]\nservers = [\"203.0.113.53\"]\nsource_ports = \"900-1023\"\n";
    let l = load_str(&format!("{HEAD}{ok}"), "t.toml").unwrap();
    assert_eq!(l.dns.source_ports, 900..=1023);
    assert!(
        l.warnings.iter().all(|w| !w.message.contains("dns.")),
        "{:?}",
        l.warnings
    );
    let with = |v: &str| format!("[dns]\nservers = [\"203.0.113.53\"]\nsource_ports = {v}\n");
    has(
        &with("\"1000-1100\""),
        "t.toml:16:16: error: dns.source_ports 1000-1100 overlaps the SNAT port range 1024-65535: a SNAT mapping could take those ports and the resolver's answers would not reach the kernel; pick ports outside the range",
    );
    has(
        &with("\"1-2000\""),
        "t.toml:16:16: error: dns.source_ports \"1-2000\" names 2000 ports: at most 1024 (the resolver holds a socket open on each)",
    );
    has(
        &with("\"x\""),
        "t.toml:16:16: error: dns.source_ports: \"x\" is not a port, a port range like \"9000-9010\", or \"*\"",
    );
    has(
        &with("\"1023-900\""),
        "t.toml:16:16: error: dns.source_ports: the port range \"1023-900\" is inverted: 1023 is greater than 900",
    );
    has(
        &with("\"1000-1010\""),
        "t.toml:16:16: warning: dns.source_ports \"1000-1010\" names only 11 port(s): an off-path spoofer has that few ports to guess besides the query id and the name's case; 64 or more are advised (the default is 768-1023)",
    );
    // Both keys: an error on the old one.
    has(
        &format!("{}source_port = 1023\n", with("\"900-1023\"")),
        "t.toml:17:15: error: dns.source_port and dns.source_ports are both set: keep dns.source_ports (source_port is the older single-port form)",
    );
    // The older single-port form still loads, with a warning.
    let old = "[dns]\nservers = [\"203.0.113.53\"]\nsource_port = 1023\n";
    let l = load_str(&format!("{HEAD}{old}"), "t.toml").unwrap();
    assert_eq!(l.dns.source_ports, 1023..=1023);
    let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        w,
        ["t.toml:16:15: warning: dns.source_port 1023 fixes the resolver's source port: an off-path spoofer then has only the query id and the name's case to guess; prefer dns.source_ports = \"A-B\" (one port picked at random per query; the default is 768-1023)"]
    );
    // Without servers no resolver runs: the ports are not checked against SNAT.
    let idle = "[dns]\nsource_ports = \"1000-1100\"\n";
    assert!(load_str(&format!("{HEAD}{idle}"), "t.toml").is_ok());
}

#[test]
fn dns_source_ports_clear_of_udp_and_tcp_dnat() {
    let dnat = |proto: &str, ports: &str| {
        net_rule(&format!("    sources = [\"*\"]\n    destinations = [\"203.0.113.1\"]\n    protocols = [\"{proto}\"]\n    destination_ports = [\"{ports}\"]\n    translated_address = \"198.18.0.20\"\n")).replace("kind = \"network\"", "kind = \"dnat\"")
    };
    let range = "[dns]\nservers = [\"203.0.113.53\"]\nsource_ports = \"900-1023\"\n";
    has(
        &format!("{range}{}", dnat("udp", "990-1100")),
        "t.toml:16:16: error: dns.source_ports 900-1023 includes UDP ports 990-1023 of the DNAT rule \"r\": the resolver's answers there would be translated inside",
    );
    // TCP too: truncated answers are retried over TCP from the same range.
    has(
        &format!("{range}{}", dnat("tcp", "1000")),
        "t.toml:16:16: error: dns.source_ports 900-1023 includes TCP port 1000 of the DNAT rule \"r\": the resolver's answers there would be translated inside",
    );
    let single = "[dns]\nservers = [\"203.0.113.53\"]\nsource_port = 999\n";
    has(
        &format!("{single}{}", dnat("tcp", "999")),
        "t.toml:16:15: error: dns.source_port 999 is a TCP port of the DNAT rule \"r\": its answers would be translated inside",
    );
    // The default range, against a DNAT rule on a privileged port in it.
    let default = "[dns]\nservers = [\"203.0.113.53\"]\n";
    has(
        &format!("{default}{}", dnat("udp", "800")),
        "t.toml:1:1: error: dns.source_ports 768-1023 (the default; set dns.source_ports) includes UDP port 800 of the DNAT rule \"r\": the resolver's answers there would be translated inside",
    );
    // Outside the range: fine.
    let d = diags(&format!("{range}{}", dnat("udp", "53")));
    assert!(d.iter().all(|x| !x.contains("dns.")), "{d:#?}");
}

#[test]
fn wildcard_destination_fqdn_is_an_error() {
    let t = net_rule("    sources = [\"*\"]\n    destination_fqdns = [\"*.example.com\"]\n    protocols = [\"tcp\"]\n    destination_ports = [\"80\"]\n");
    has(&t, "t.toml:25:26: error: destination FQDN \"*.example.com\": network rules name exact host names (the appliance resolves them); wildcards belong in application rules");
}

#[test]
fn every_error_is_collected() {
    let t = net_rule("    sources = [\"198.19.0.1/15\"]\n    source_ip_groups = [\"nope\"]\n    destinations = [\"198.18.300.1\"]\n    protocols = [\"sctp\"]\n    destination_ports = [\"0\"]\n");
    let e = load_str(&format!("{HEAD}{t}"), "t.toml").unwrap_err();
    assert!(matches!(e, ConfigErrors::Invalid { .. }));
    assert_eq!(e.errors().len(), 5, "{:#?}", e.errors());
}

#[test]
fn examples_pass_check() {
    for f in ["config/lab.toml", "config/aks-egress.toml"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(f);
        let (code, out) = check_report(&CheckArgs {
            file: path,
            deny_warnings: true,
        });
        assert_eq!(code, 0, "{f}: {out}");
    }
}

#[test]
fn check_exit_codes() {
    let dir = std::env::temp_dir().join(format!("tollgate-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, format!("{HEAD}[snat2]\n")).unwrap();
    let (code, out) = check_report(&CheckArgs {
        file: bad.clone(),
        deny_warnings: false,
    });
    assert_eq!(code, 1);
    assert!(
        out.contains("bad.toml:14:2: error: unknown key \"snat2\" at the top level"),
        "{out}"
    );
    assert!(
        out.ends_with("invalid (1 error(s), 0 warning(s))\n"),
        "{out}"
    );
    let warn = dir.join("warn.toml");
    let rule = net_rule(
        "    sources = [\"*\"]\n    destination_fqdns = [\"a.example\"]\n    protocols = [\"icmp\"]\n",
    );
    std::fs::write(&warn, format!("{HEAD}{rule}")).unwrap();
    let args = |file, deny_warnings| CheckArgs {
        file,
        deny_warnings,
    };
    assert_eq!(check_report(&args(warn.clone(), false)).0, 0);
    assert_eq!(check_report(&args(warn, true)).0, 1);
    assert_eq!(check_report(&args(dir.join("missing.toml"), false)).0, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_keys_do_not_hide_other_errors() {
    let t = net_rule("    colour = \"red\"\n    sources = [\"198.19.0.1/15\"]\n    destinations = [\"*\"]\n    protocols = [\"icmp\"]\n");
    assert_eq!(
        diags(&t),
        vec![
            "t.toml:24:5: error: unknown key \"colour\" in [group.collection.rule]; expected one of: name, sources, source_ip_groups, destinations, destination_ip_groups, destination_fqdns, destination_service_tags, protocols, destination_ports, fqdns, fqdn_tags, translated_address, translated_port",
            "t.toml:25:16: error: the prefix \"198.19.0.1/15\" has host bits set; did you mean \"198.18.0.0/15\"?",
        ]
    );
}

#[test]
fn wrong_type_is_reported_with_position() {
    let d = diags("[conntrack]\nmax_flows = \"many\"\n");
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].starts_with("t.toml:15:13: error: invalid type: string \"many\", expected i64"),
        "{d:#?}"
    );
}

#[test]
fn a_flow_limit_beyond_what_the_index_holds_is_refused() {
    let d = diags("[conntrack]\nmax_flows = 1073741825\n");
    assert_eq!(
        d,
        vec!["t.toml:15:13: error: conntrack.max_flows 1073741825 is out of range (1-1073741824 per worker)".to_string()],
        "{d:#?}"
    );
    assert!(diags("[conntrack]\nmax_flows = 1073741824\n").is_empty());
}

#[test]
fn busy_poll_settings() {
    use tollgate::io::runtime::{SpinMode, DEFAULT_BUSY_POLL_US};
    // default: the built-in window, sched_yield() between checks
    let l = load_str(HEAD, "t.toml").unwrap();
    assert_eq!(l.busy_poll.window_ns, DEFAULT_BUSY_POLL_US * 1_000);
    assert_eq!(l.busy_poll.mode, SpinMode::Yield);
    let ok = HEAD.replace(
        "inside_prefixes = [\"198.18.0.0/15\"]\n",
        "inside_prefixes = [\"198.18.0.0/15\"]\nbusy_poll_us = 0\nbusy_poll_mode = \"pause\"\n",
    );
    let l = load_str(&ok, "t.toml").unwrap();
    assert_eq!(l.busy_poll.window_ns, 0);
    assert_eq!(l.busy_poll.mode, SpinMode::Pause);
    // out of range and unknown mode: both reported, with line:col of the value
    let bad = HEAD.replace(
        "inside_prefixes = [\"198.18.0.0/15\"]\n",
        "inside_prefixes = [\"198.18.0.0/15\"]\nbusy_poll_us = 20000\nbusy_poll_mode = \"spin\"\n",
    );
    let e = load_str(&bad, "t.toml").unwrap_err();
    let d: Vec<String> = e.errors().iter().map(|d| d.to_string()).collect();
    assert!(
        d.contains(
            &"t.toml:3:16: error: busy_poll_us 20000 is out of range (0-10000 microseconds)"
                .to_string()
        ),
        "{d:#?}"
    );
    assert!(
        d.contains(
            &"t.toml:4:18: error: busy_poll_mode \"spin\" is not one of \"yield\", \"pause\""
                .to_string()
        ),
        "{d:#?}"
    );
    let neg = HEAD.replace(
        "inside_prefixes = [\"198.18.0.0/15\"]\n",
        "inside_prefixes = [\"198.18.0.0/15\"]\nbusy_poll_us = -1\n",
    );
    let e = load_str(&neg, "t.toml").unwrap_err();
    assert_eq!(
        e.errors()[0].to_string(),
        "t.toml:3:16: error: busy_poll_us -1 is out of range (0-10000 microseconds)"
    );
}

#[test]
fn host_policy_errors_and_the_unreachable_management_warning() {
    has(
        "[host]\npolicy = \"shut\"\n",
        "t.toml:15:10: error: host.policy \"shut\" is not one of \"closed\", \"open\"",
    );
    has(
        "[host]\nssh_sources = [\"198.18.0.1/15\"]\n",
        "t.toml:15:16: error: the prefix \"198.18.0.1/15\" has host bits set; did you mean \"198.18.0.0/15\"?",
    );
    has(
        "[host]\nping_source = []\n",
        "t.toml:15:1: error: unknown key \"ping_source\" in [host]; expected one of: policy, management_sources, ssh_sources, ping_sources",
    );
    // A management listener on a data address that no source may reach: a warning naming it.
    let text = HEAD.replace(
        "inside_prefixes = [\"198.18.0.0/15\"]",
        "inside_prefixes = [\"198.18.0.0/15\"]\nmanagement = \"198.18.0.1:9090\"",
    );
    let l = load_str(&text, "t.toml").expect("loads");
    let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
    assert!(
        w.iter().any(|d| d.starts_with("t.toml:3:14: warning: the management listener 198.18.0.1:9090 is on a data address but host.management_sources is empty")),
        "{w:#?}"
    );
    assert!(l.host.closed, "closed is the default");
    let open = load_str(&format!("{text}[host]\npolicy = \"open\"\n"), "t.toml").expect("loads");
    assert!(!open.host.closed);
    assert!(open
        .warnings
        .iter()
        .all(|d| !d.message.contains("management_sources")));
    let listed = load_str(
        &format!("{text}[host]\nmanagement_sources = [\"192.0.2.16\"]\n"),
        "t.toml",
    )
    .expect("loads");
    assert_eq!(
        listed.host.management_sources,
        vec!["192.0.2.16/32".parse().unwrap()]
    );
    assert!(listed
        .warnings
        .iter()
        .all(|d| !d.message.contains("management_sources")));
}

#[test]
fn backend_setting() {
    use tollgate::io::Backend;
    let l = load_str(HEAD, "t.toml").unwrap();
    assert_eq!(l.backend, Backend::Auto, "auto by default");
    for (name, want) in [
        ("auto", Backend::Auto),
        ("af_xdp", Backend::AfXdp),
        ("af_packet", Backend::AfPacket),
    ] {
        let ok = HEAD.replace(
            "inside_prefixes = [\"198.18.0.0/15\"]\n",
            &format!("inside_prefixes = [\"198.18.0.0/15\"]\nbackend = \"{name}\"\n"),
        );
        assert_eq!(load_str(&ok, "t.toml").unwrap().backend, want);
        assert_eq!(want.as_str(), name);
    }
    let bad = HEAD.replace(
        "inside_prefixes = [\"198.18.0.0/15\"]\n",
        "inside_prefixes = [\"198.18.0.0/15\"]\nbackend = \"dpdk\"\n",
    );
    let e = load_str(&bad, "t.toml").unwrap_err();
    assert_eq!(
        e.errors()[0].to_string(),
        "t.toml:3:11: error: backend \"dpdk\" is not one of \"auto\", \"af_xdp\", \"af_packet\""
    );
}
