//! The compiled classifier against the naive linear reference, on random rule sets and flows.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use proptest::prelude::*;

use super::*;

/// Addresses from a small pool so that random rules and flows overlap often.
fn addr() -> impl Strategy<Value = Ipv4Addr> {
    (0u8..4, 0u8..4, any::<u8>()).prop_map(|(a, b, c)| Ipv4Addr::new(10 + a, b, c & 0x0f, c))
}

fn net() -> impl Strategy<Value = Ipv4Net> {
    prop_oneof![
        1 => Just(Ipv4Net::default()),
        6 => (addr(), 8u8..=32).prop_map(|(a, l)| Ipv4Net::new(a, l).unwrap().trunc()),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![Just(53u16), Just(80), Just(443), Just(8080), 1u16..2000]
}

fn fqdn() -> impl Strategy<Value = FqdnPattern> {
    let names = [
        "a.example",
        "b.a.example",
        "example",
        "x.b.a.example",
        "other.test",
    ];
    (0usize..names.len(), 0u8..3).prop_map(move |(i, w)| match w {
        0 => FqdnPattern::Exact(names[i].to_string()),
        1 => FqdnPattern::Wildcard(names[i].to_string()),
        _ => FqdnPattern::Any,
    })
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    (
        0u8..3,
        any::<bool>(),
        prop::collection::vec(net(), 0..3),
        prop::collection::vec(net(), 0..3),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        prop::collection::vec((port(), 0u16..20), 0..3),
        prop::collection::vec((0u8..3, port()), 0..3),
        prop::collection::vec(fqdn(), 0..3),
        (addr(), prop::option::of(port())),
    )
        .prop_map(|(k, deny, src, dst, (t, u, i, o), ports, apps, fq, tr)| {
            let kind = [RuleKind::Dnat, RuleKind::Network, RuleKind::Application][k as usize];
            let action = if deny && kind != RuleKind::Dnat {
                Action::Deny
            } else {
                Action::Allow
            };
            let mut r = RuleSpec::new("g", "c", "r", kind, action);
            r.sources = src;
            r.destinations = dst;
            r.protocols = Protocols {
                tcp: t,
                udp: u,
                icmp: i,
                other: o,
            };
            r.ports = ports
                .into_iter()
                .map(|(p, w)| (p, p.saturating_add(w)))
                .collect();
            if kind == RuleKind::Application {
                r.app_protocols = apps
                    .into_iter()
                    .map(|(a, p)| {
                        (
                            [AppProto::Http, AppProto::Https, AppProto::Quic][a as usize],
                            p,
                        )
                    })
                    .collect();
                r.fqdns = fq;
            }
            if kind == RuleKind::Dnat {
                r.translated = Some(tr);
            }
            r
        })
}

fn flow() -> impl Strategy<Value = FlowQuery> {
    (
        addr(),
        prop_oneof![addr(), Just(Ipv4Addr::new(10, 0, 0, 1))],
        prop_oneof![Just(6u8), Just(17), Just(1), Just(47)],
        any::<u16>(),
        port(),
    )
        .prop_map(|(src, dst, proto, sport, dport)| FlowQuery {
            src,
            dst,
            proto,
            sport,
            dport,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn compiled_matches_reference(
        rules in prop::collection::vec(rule(), 0..150),
        flows in prop::collection::vec(flow(), 1..40),
        names in prop::collection::vec(prop_oneof![
            Just("a.example"), Just("B.A.example."), Just("example"), Just("y.x.b.a.example"), Just("nope.test")], 1..4),
    ) {
        let snat = vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 1, 0, 7)];
        let rs = Ruleset::compile(rules.clone(), snat.clone());
        for q in &flows {
            prop_assert_eq!(rs.decide(q), reference::decide(&rules, &snat, q), "flow {:?}", q);
            for app in [AppProto::Http, AppProto::Https, AppProto::Quic] {
                for n in &names {
                    prop_assert_eq!(
                        rs.decide_app(q, app, Some(n)),
                        reference::decide_app(&rules, q, app, Some(n)),
                        "flow {:?} {:?} {}", q, app, n
                    );
                }
                prop_assert_eq!(rs.decide_app(q, app, None), Decision::Deny { rule: None });
            }
        }
    }
}

#[test]
fn many_rules_cross_word_boundaries() {
    let mut rules = Vec::new();
    for i in 0..5000u32 {
        let mut r = RuleSpec::new("g", "c", &format!("r{i}"), RuleKind::Network, Action::Allow);
        r.sources = vec![Ipv4Net::default()];
        r.destinations = vec![Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap()];
        r.protocols = Protocols {
            tcp: true,
            ..Protocols::default()
        };
        r.ports = vec![(443, 443)];
        rules.push(r);
    }
    let rs = Ruleset::compile(rules, vec![]);
    for i in [0u32, 63, 64, 4095, 4096, 4999] {
        let q = FlowQuery {
            src: Ipv4Addr::new(1, 1, 1, 1),
            dst: Ipv4Addr::from(0x0a00_0000 + (i << 8) + 5),
            proto: 6,
            sport: 1,
            dport: 443,
        };
        assert_eq!(rs.decide(&q), Decision::Allow { rule: i });
        assert_eq!(
            rs.decide(&FlowQuery { dport: 444, ..q }),
            Decision::Deny { rule: None }
        );
    }
}

#[test]
fn destination_fqdns_match_their_resolved_addresses() {
    let mut r = RuleSpec::new("g", "c", "api", RuleKind::Network, Action::Allow);
    r.sources = vec!["198.18.0.0/15".parse().unwrap()];
    r.destination_fqdns = vec![
        FqdnPattern::parse("api.example").unwrap(),
        FqdnPattern::parse("b.example").unwrap(),
    ];
    r.protocols.tcp = true;
    r.ports = vec![(80, 80)];
    let mut d = RuleSpec::new("g", "c", "deny-rest", RuleKind::Network, Action::Deny);
    d.sources = vec![Ipv4Net::default()];
    d.destinations = vec![Ipv4Net::default()];
    d.protocols = Protocols::ANY;
    d.ports = vec![(0, 65535)];
    let base = Ruleset::compile(vec![r, d], Vec::new());
    assert_eq!(base.destination_names(), ["api.example", "b.example"]);
    let q = |dst: &str| FlowQuery {
        src: "198.18.0.11".parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto: proto::TCP,
        sport: 40000,
        dport: 80,
    };
    // Never resolved: the rule matches nothing, the next rule decides.
    assert_eq!(
        base.decide(&q("203.0.113.10")),
        Decision::Deny { rule: Some(1) }
    );
    let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
    let first = base.with_resolved(|n| match n {
        "api.example" => vec![ip("203.0.113.10"), ip("203.0.113.11")],
        _ => vec![],
    });
    assert_eq!(
        first.decide(&q("203.0.113.10")),
        Decision::Allow { rule: 0 }
    );
    assert_eq!(
        first.decide(&q("203.0.113.11")),
        Decision::Allow { rule: 0 }
    );
    assert_eq!(
        first.decide(&q("198.51.100.66")),
        Decision::Deny { rule: Some(1) }
    );
    assert_eq!(first.rules()[0].resolved.len(), 2);
    // The address set changes: recompiled from the previous one, the old addresses are gone.
    let second = first.with_resolved(|n| match n {
        "api.example" => vec![ip("198.51.100.66")],
        "b.example" => vec![ip("198.51.100.66"), ip("192.0.2.7")],
        _ => vec![],
    });
    assert_eq!(
        second.decide(&q("198.51.100.66")),
        Decision::Allow { rule: 0 }
    );
    assert_eq!(second.decide(&q("192.0.2.7")), Decision::Allow { rule: 0 });
    assert_eq!(
        second.decide(&q("203.0.113.10")),
        Decision::Deny { rule: Some(1) }
    );
    // Duplicates across names are compiled once; the linear reference agrees.
    assert_eq!(second.rules()[0].resolved.len(), 2);
    for dst in ["198.51.100.66", "192.0.2.7", "203.0.113.10", "203.0.113.11"] {
        assert_eq!(
            second.decide(&q(dst)),
            reference::decide(second.rules(), &[], &q(dst)),
            "{dst}"
        );
        assert!(
            second.rules()[0].field_match(&q(dst)).dst
                == second.decide(&q(dst)).eq(&Decision::Allow { rule: 0 })
        );
    }
}
