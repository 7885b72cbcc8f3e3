//! Random configurations (groups and collections with random priorities, random kinds, actions,
//! prefixes, ports): the loader orders rules by (kind, group priority, collection priority, file
//! order), and the compiled ruleset decides like the linear reference over that order.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use tollgate::config::load_str;
use tollgate::policy::{reference, AppProto, FlowQuery, Policy, RuleKind};

#[derive(Debug, Clone)]
struct R {
    src: (u8, u8),
    dst: (u8, u8),
    proto: u8,
    port: (u16, u16),
    fqdn: u8,
}

#[derive(Debug, Clone)]
struct C {
    prio: u16,
    kind: u8,
    deny: bool,
    rules: Vec<R>,
}

fn rule() -> impl Strategy<Value = R> {
    (
        (0u8..4, 8u8..=32),
        (0u8..4, 8u8..=32),
        0u8..4,
        (1u16..100, 0u16..20),
        0u8..4,
    )
        .prop_map(|(src, dst, proto, (p, w), fqdn)| R {
            src,
            dst,
            proto,
            port: (p, p + w),
            fqdn,
        })
}

fn coll() -> impl Strategy<Value = C> {
    (
        100u16..200,
        0u8..3,
        any::<bool>(),
        prop::collection::vec(rule(), 1..5),
    )
        .prop_map(|(prio, kind, deny, rules)| C {
            prio,
            kind,
            deny,
            rules,
        })
}

fn cidr(x: (u8, u8)) -> String {
    let a = Ipv4Addr::new(198, 18, x.0, 0);
    let n = ipnet::Ipv4Net::new(a, x.1.min(24)).unwrap().trunc();
    if x.1 > 30 {
        "*".into()
    } else {
        n.to_string()
    }
}

fn render(groups: &[(u16, Vec<C>)]) -> String {
    let mut t = String::from(
        "[[interface]]\nname = \"i\"\nrole = \"one-arm\"\naddresses = [\"198.18.9.1/24\"]\n[snat]\naddresses = [\"198.18.9.1\"]\n",
    );
    let fq = ["a.example", "*.example", "*", "b.a.example"];
    for (gi, (gp, colls)) in groups.iter().enumerate() {
        let _ = write!(t, "[[group]]\nname = \"g{gi}\"\npriority = {}\n", 100 + gp);
        for (ci, c) in colls.iter().enumerate() {
            let kind = ["dnat", "network", "application"][c.kind as usize];
            let action = if c.deny && c.kind != 0 {
                "deny"
            } else {
                "allow"
            };
            let _ = write!(t, "[[group.collection]]\nname = \"c{ci}\"\npriority = {}\nkind = \"{kind}\"\naction = \"{action}\"\n", c.prio);
            for (ri, r) in c.rules.iter().enumerate() {
                let _ = write!(
                    t,
                    "[[group.collection.rule]]\nname = \"r{ri}\"\nsources = [\"{}\"]\n",
                    cidr(r.src)
                );
                match c.kind {
                    2 => {
                        let app = ["https", "http", "quic", "https"][r.proto as usize];
                        let _ = write!(
                            t,
                            "fqdns = [\"{}\"]\nprotocols = [\"{app}:{}\"]\n",
                            fq[r.fqdn as usize], r.port.0
                        );
                    }
                    k => {
                        let dst = if k == 0 {
                            "198.18.9.1".to_string()
                        } else {
                            cidr(r.dst)
                        };
                        let proto = ["tcp", "udp", "icmp", "any"][r.proto as usize];
                        let _ = write!(t, "destinations = [\"{dst}\"]\nprotocols = [\"{proto}\"]\ndestination_ports = [\"{}-{}\"]\n", r.port.0, r.port.1);
                        if k == 0 {
                            t.push_str("translated_address = \"198.18.1.1\"\n");
                        }
                    }
                }
            }
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    #[test]
    fn loader_orders_by_priority_and_matches_reference(
        groups in prop::collection::vec((0u16..500, prop::collection::vec(coll(), 1..4)), 1..4),
        flows in prop::collection::vec((0u8..4, 0u8..255, prop_oneof![Just(9u8), 0u8..4], prop_oneof![Just(1u8), 0u8..255], prop_oneof![Just(6u8), Just(17), Just(1)], 1u16..120), 1..30),
    ) {
        // Priorities must be distinct within a level: skip inputs that repeat one.
        let gset: HashSet<u16> = groups.iter().map(|g| g.0).collect();
        prop_assume!(gset.len() == groups.len());
        for (_, cs) in &groups {
            let cset: HashSet<u16> = cs.iter().map(|c| c.prio).collect();
            prop_assume!(cset.len() == cs.len());
        }
        let text = render(&groups);
        let l = match load_str(&text, "gen.toml") {
            Ok(l) => l,
            Err(e) => return Err(TestCaseError::fail(format!("{:#?}\n{text}", e.errors()))),
        };
        // Expected order: kind, then group priority, collection priority, file order.
        let mut want = Vec::new();
        for kind in 0..3u8 {
            let mut gs: Vec<(usize, &(u16, Vec<C>))> = groups.iter().enumerate().collect();
            gs.sort_by_key(|(_, g)| g.0);
            for (gi, (_, cs)) in gs {
                let mut cs: Vec<(usize, &C)> = cs.iter().enumerate().collect();
                cs.sort_by_key(|(_, c)| c.prio);
                for (ci, c) in cs.into_iter().filter(|(_, c)| c.kind == kind) {
                    for ri in 0..c.rules.len() {
                        want.push(format!("g{gi}/c{ci}/r{ri}"));
                    }
                }
            }
        }
        let got: Vec<String> = l.policy.rules().iter().map(|r| format!("{}/{}/{}", r.group, r.collection, r.name)).collect();
        prop_assert_eq!(&got, &want);
        let rules = l.policy.rules();
        let snat = [Ipv4Addr::new(198, 18, 9, 1)];
        for (a, b, c, d, proto, dport) in flows {
            let q = FlowQuery { src: Ipv4Addr::new(198, 18, a, b), dst: Ipv4Addr::new(198, 18, c, d), proto, sport: 1, dport };
            prop_assert_eq!(l.policy.decide(&q), reference::decide(rules, &snat, &q));
            for app in [AppProto::Https, AppProto::Http, AppProto::Quic] {
                for name in ["a.example", "x.b.a.example", "example"] {
                    prop_assert_eq!(l.policy.decide_app(&q, app, Some(name)), reference::decide_app(rules, &q, app, Some(name)));
                }
            }
        }
        prop_assert!(rules.iter().all(|r| r.kind != RuleKind::Dnat || r.translated.is_some()));
    }
}
