//! The example configurations compile to the engine settings and decisions they describe.

use std::net::Ipv4Addr;
use std::path::PathBuf;

mod engine_util;

use tollgate::cli::explain::{explain, parse_flow, ExplainArgs};
use tollgate::config::{load_file, Loaded};
use tollgate::datapath::IfaceRole;
use tollgate::nat::MappingMode;
use tollgate::policy::{proto, AppProto, Decision, FlowQuery, Policy};

fn load(name: &str) -> Loaded {
    load_file(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name),
    )
    .unwrap()
}

fn q(src: [u8; 4], dst: [u8; 4], p: u8, dport: u16) -> FlowQuery {
    FlowQuery {
        src: Ipv4Addr::from(src),
        dst: Ipv4Addr::from(dst),
        proto: p,
        sport: 40000,
        dport,
    }
}

fn names(l: &Loaded, d: Decision) -> String {
    let id = match d {
        Decision::Allow { rule } | Decision::Dnat { rule, .. } => rule,
        Decision::Deny { rule: Some(rule) } => rule,
        _ => return format!("{d:?}"),
    };
    let r = l.policy.describe(id).unwrap();
    format!("{}/{}/{}", r.group, r.collection, r.rule)
}

#[test]
fn lab_engine_config() {
    let l = load("lab.toml");
    let e = &l.engine;
    assert_eq!(e.interfaces.len(), 2);
    assert_eq!(e.interfaces[0].name, "tg-in");
    assert_eq!(e.interfaces[0].role, IfaceRole::Inside);
    assert_eq!(e.interfaces[0].addrs, vec![Ipv4Addr::new(198, 18, 0, 1)]);
    assert_eq!(e.interfaces[1].role, IfaceRole::Outside);
    assert_eq!(e.interfaces[1].gateway, None);
    assert_eq!(e.interfaces[1].connected[0].to_string(), "203.0.113.0/24");
    assert_eq!(e.inside_prefixes[0].to_string(), "198.18.0.0/15");
    assert_eq!(e.nat.public_addrs, vec![Ipv4Addr::new(203, 0, 113, 1)]);
    assert_eq!((e.nat.port_min, e.nat.port_max), (1024, 65535));
    assert_eq!(e.nat.exempt.len(), 4);
    assert_eq!(e.icmp_source, Ipv4Addr::new(198, 18, 0, 1));
    assert_eq!(e.max_flows_per_worker, 65536);
    assert_eq!(l.workers, 1);
    assert_eq!(l.management.to_string(), "127.0.0.1:9090");
}

#[test]
fn lab_decisions() {
    let l = load("lab.toml");
    let p = &l.policy;
    let inside = [198, 18, 0, 10];
    for port in [80, 5201] {
        let d = p.decide(&q(inside, [203, 0, 113, 7], proto::TCP, port));
        assert_eq!(names(&l, d), "lab/internet/tcp-services");
    }
    // 443 is left to the application rule: the name decides.
    let tls = q(inside, [203, 0, 113, 7], proto::TCP, 443);
    assert_eq!(p.decide(&tls), Decision::Inspect);
    let d = p.decide_app(&tls, AppProto::Https, Some("allowed.example"));
    assert_eq!(names(&l, d), "lab/web/allowed-site");
    assert_eq!(
        p.decide_app(&tls, AppProto::Https, Some("denied.example")),
        Decision::Deny { rule: None }
    );
    for port in [7, 53] {
        let d = p.decide(&q(inside, [203, 0, 113, 7], proto::UDP, port));
        assert_eq!(names(&l, d), "lab/internet/udp-services");
    }
    let d = p.decide(&q(inside, [203, 0, 113, 7], proto::ICMP, 0));
    assert_eq!(names(&l, d), "lab/internet/ping");
    let d = p.decide(&q(inside, [198, 51, 100, 66], proto::TCP, 443));
    assert!(matches!(d, Decision::Deny { rule: Some(_) }));
    assert_eq!(names(&l, d), "lab/blocked/blackhole-host");
    // Not a network-rule port: only the application rule could match.
    let held = q(inside, [198, 51, 100, 7], proto::TCP, 443);
    assert_eq!(p.decide(&held), Decision::Inspect);
    let d = p.decide_app(&held, AppProto::Https, Some("allowed.example"));
    assert_eq!(names(&l, d), "lab/web/allowed-site");
    assert_eq!(
        p.decide_app(&held, AppProto::Https, Some("other.example")),
        Decision::Deny { rule: None }
    );
    assert_eq!(
        p.decide_app(&held, AppProto::Https, None),
        Decision::Deny { rule: None }
    );
    assert_eq!(
        p.decide(&q(inside, [198, 51, 100, 7], proto::UDP, 9999)),
        Decision::Deny { rule: None }
    );
    // DNAT toward the SNAT address.
    let d = p.decide(&q([192, 0, 2, 9], [203, 0, 113, 1], proto::TCP, 8080));
    assert!(
        matches!(d, Decision::Dnat { to, to_port: 80, .. } if to == Ipv4Addr::new(198, 18, 0, 20))
    );
}

#[test]
fn aks_config() {
    let l = load("aks-egress.toml");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let e = &l.engine;
    assert_eq!(e.interfaces[0].role, IfaceRole::OneArm);
    assert_eq!(e.icmp_source, Ipv4Addr::new(10, 42, 8, 4));
    assert_eq!(e.routes.len(), 2);
    assert_eq!(e.routes[1].iface, 0);
    assert_eq!(e.routes[1].via, Ipv4Addr::new(10, 42, 0, 5));
    assert_eq!(e.nat.mapping, MappingMode::AddressAndPortDependent);
    assert_eq!(e.nat.per_host_quota, None);
    assert_eq!(e.mss_clamp, Some(1360));
    assert_eq!(e.timeouts.tcp_established, 240);
    let p = &l.policy;
    let node = [10, 42, 0, 9];
    let d = p.decide(&q(node, [20, 50, 3, 4], proto::UDP, 1194));
    assert_eq!(names(&l, d), "aks-egress/aks-network/apiserver-udp");
    let d = p.decide(&q(node, [20, 61, 99, 10], proto::TCP, 9000));
    assert_eq!(names(&l, d), "aks-egress/aks-network/apiserver-tcp");
    let d = p.decide(&q(node, [91, 189, 91, 157], proto::UDP, 123));
    assert_eq!(names(&l, d), "aks-egress/aks-network/ntp");
    let web = q(node, [13, 107, 1, 1], proto::TCP, 443);
    assert_eq!(p.decide(&web), Decision::Inspect);
    for name in [
        "mcr.microsoft.com",
        "eastus.data.mcr.microsoft.com",
        "myaks-dns-abc.hcp.westeurope.azmk8s.io",
        "packages.aks.azure.com",
        "LOGIN.microsoftonline.com.",
    ] {
        let d = p.decide_app(&web, AppProto::Https, Some(name));
        assert_eq!(names(&l, d), "aks-egress/aks-fqdns/aks-required", "{name}");
    }
    assert_eq!(
        p.decide_app(&web, AppProto::Https, Some("evil.example")),
        Decision::Deny { rule: None }
    );
    // The platform group (priority 100) is evaluated first; its collection is in audit mode.
    let d = p.decide_app(&web, AppProto::Https, Some("x.ods.opinsights.azure.com"));
    let Decision::Allow { rule } = d else {
        panic!("{d:?}")
    };
    assert!(p.is_audit(rule));
    assert_eq!(names(&l, d), "platform/monitoring/azure-monitor");
    // Pods may use the tag's names, not the node-only rules.
    let pod = q([10, 244, 1, 5], [13, 107, 1, 1], proto::TCP, 80);
    let d = p.decide_app(&pod, AppProto::Http, Some("security.ubuntu.com"));
    assert_eq!(d, Decision::Deny { rule: None });
}

fn ex(cfg: &str, src: &str, dst: &str, pr: &str, sni: Option<&str>) -> String {
    let args = ExplainArgs {
        config: Some(PathBuf::from(cfg)),
        src: src.into(),
        dst: dst.into(),
        proto: pr.into(),
        sni: sni.map(str::to_string),
        sock: tollgate::cli::admin::SocketArg {
            socket: None,
            json: false,
        },
    };
    let l = load(cfg);
    explain(&l, &parse_flow(&args).unwrap(), sni)
}

#[test]
fn explain_output() {
    assert_eq!(
        ex("lab.toml", "198.18.0.10", "203.0.113.5:80", "tcp", None),
        "flow: 198.18.0.10:40000 -> 203.0.113.5:80 tcp\ndecision: allow\n  by lab/internet/tcp-services (network rule)\nsnat: to 203.0.113.1\n"
    );
    assert_eq!(
        ex("lab.toml", "198.18.0.10", "203.0.113.5:443", "tcp", Some("allowed.example")),
        "flow: 198.18.0.10:40000 -> 203.0.113.5:443 tcp\napplication: Https with name \"allowed.example\"\ndecision: allow\n  by lab/web/allowed-site (application rule)\nsnat: to 203.0.113.1\n"
    );
    let deny = ex(
        "lab.toml",
        "198.18.0.10:1234",
        "203.0.113.5:9999",
        "udp",
        None,
    );
    assert_eq!(
        deny,
        "flow: 198.18.0.10:1234 -> 203.0.113.5:9999 udp\n\
         decision: deny (default: no rule matched)\n\
         nearest rules:\n  \
         lab/blocked/blackhole-host (network rule) matched 3 field(s); failed: destination\n  \
         lab/internet/udp-services (network rule) matched 3 field(s); failed: port\n  \
         lab/internet/tcp-services (network rule) matched 2 field(s); failed: protocol, port\n"
    );
    let app = ex(
        "lab.toml",
        "198.18.0.10",
        "198.51.100.7:443",
        "tcp",
        Some("evil.example"),
    );
    assert!(
        app.contains("decision: deny (default: no application rule matched the name)"),
        "{app}"
    );
    assert!(
        app.contains("lab/web/allowed-site (application rule) matched 4 field(s); failed: fqdn"),
        "{app}"
    );
    let ok = ex(
        "lab.toml",
        "198.18.0.10",
        "198.51.100.7:443",
        "tcp",
        Some("allowed.example"),
    );
    assert!(
        ok.contains("decision: allow\n  by lab/web/allowed-site"),
        "{ok}"
    );
    let held = ex("lab.toml", "198.18.0.10", "198.51.100.7:443", "tcp", None);
    assert!(held.contains("decision: needs inspection"), "{held}");
    let dnat = ex(
        "lab.toml",
        "192.0.2.9:5555",
        "203.0.113.1:8080",
        "tcp",
        None,
    );
    assert!(
        dnat.contains("decision: DNAT to 198.18.0.20:80\n  by lab/inbound/web-to-inside"),
        "{dnat}"
    );
    let exempt = ex("aks-egress.toml", "10.42.0.9", "10.1.2.3:123", "udp", None);
    assert!(
        exempt.contains("snat: none (destination 10.1.2.3 is in the exempt prefix 10.0.0.0/8)"),
        "{exempt}"
    );
}

/// SNAT as the datapath does it (Some(true): the forwarded source is rewritten; None: not
/// forwarded) and as `explain` prints it, for one TCP SYN through `l`.
fn snat_both_ways(
    l: &Loaded,
    src: (&str, u16),
    dst: (&str, u16),
    rx_if: u8,
) -> (Option<bool>, String) {
    use engine_util::{run, tcp, tuple};
    use tollgate::datapath::{Verdict, Worker};
    let mut w = Worker::new(
        std::sync::Arc::new(l.engine.clone()),
        l.policy.clone(),
        0,
        1,
        1,
    );
    let frame = tcp(src.0, src.1, dst.0, dst.1, "S", b"");
    let (v, out) = run(&mut w, 0, rx_if, &frame);
    let dp = matches!(v, Verdict::Forward { .. })
        .then(|| tuple(&out).0 != src.0.parse::<Ipv4Addr>().unwrap());
    let q = FlowQuery {
        src: src.0.parse().unwrap(),
        dst: dst.0.parse().unwrap(),
        proto: proto::TCP,
        sport: src.1,
        dport: dst.1,
    };
    (dp, explain(l, &q, None))
}

#[test]
fn explain_and_the_datapath_agree_on_snat() {
    let mut l = load("lab.toml");
    l.engine.nat.exempt = vec!["203.0.113.128/25".parse().unwrap()];
    let (inside, outside) = (0, 1);
    let cases = [
        // plain outbound
        ("198.18.0.10", 40000, "203.0.113.5", 80, inside, true),
        // hairpin: an inside host to the public address on a DNAT port, SNATed so that the
        // target answers through the appliance
        ("198.18.0.10", 40001, "203.0.113.1", 8080, inside, true),
        // SNAT-exempt destination
        ("198.18.0.10", 40002, "203.0.113.200", 80, inside, false),
        // inbound DNAT: the client's address is kept
        ("192.0.2.9", 5555, "203.0.113.1", 8080, outside, false),
    ];
    for (s, sp, d, dp, rx, want) in cases {
        let (datapath, text) = snat_both_ways(&l, (s, sp), (d, dp), rx);
        assert_eq!(datapath, Some(want), "datapath {s}:{sp} -> {d}:{dp}");
        let said = if text.contains("\nsnat: to ") {
            true
        } else {
            assert!(text.contains("\nsnat: none ("), "{text}");
            false
        };
        assert_eq!(said, want, "explain {s}:{sp} -> {d}:{dp}:\n{text}");
    }
}
