//! Engine support for operations: decision events and policy reload.

mod engine_util;

use std::sync::Arc;

use engine_util::*;
use tollgate::datapath::events::{self, Action};
use tollgate::datapath::{DropReason, Verdict};

#[test]
fn every_new_flow_decision_is_an_event_naming_the_rule_and_the_snat_port() {
    let policy = denying();
    let mut w = WorkerKit::new().policy(policy.clone()).seed(1).build();
    let (sink, mut rx) = events::channel(16, 100);
    w.set_event_sink(sink);
    let (_, out) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 443, "S", b""),
    );
    run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40001, "198.51.100.66", 443, "S", b""),
    );
    run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40002, SERVER, 25, "S", b""),
    );
    // Packets of an existing flow are not decisions.
    run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 443, "A", b""),
    );

    let a = rx.pop().unwrap();
    assert_eq!(a.action, Action::Allow);
    assert_eq!(a.rule, Some(rule_id(&*policy, "allow")));
    assert_eq!(a.snat, Some((ip(PUBLIC), tuple(&out).1)));
    assert_eq!(a.flow.dst(), ip(SERVER));
    let d = rx.pop().unwrap();
    assert_eq!(
        (d.action, d.rule, d.reason),
        (
            Action::Deny,
            Some(rule_id(&*policy, "deny-66")),
            Some(DropReason::RuleDeny)
        )
    );
    let d = rx.pop().unwrap();
    assert_eq!(
        (d.action, d.rule, d.reason),
        (Action::Deny, None, Some(DropReason::DefaultDeny))
    );
    assert!(rx.pop().is_err());
}

#[test]
fn a_flood_of_decisions_is_rate_limited_and_counted() {
    let mut w = worker(lab_engine_config());
    let (sink, mut rx) = events::channel(1024, 10);
    w.set_event_sink(sink);
    for p in 0..50 {
        run(
            &mut w,
            0,
            INSIDE_IF,
            &udp(NODE1, 1000 + p, SERVER, 53, b"q"),
        );
    }
    let mut n = 0;
    while rx.pop().is_ok() {
        n += 1;
    }
    assert_eq!((n, w.events_suppressed()), (10, 40));
}

#[test]
fn a_reload_cuts_flows_the_new_rules_deny_and_keeps_the_others() {
    let mut w = worker(lab_engine_config());
    let denied = "198.51.100.66";
    let (_, o1) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, denied, 443, "S", b""),
    );
    let (_, o2) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40001, SERVER, 443, "S", b""),
    );
    let (p1, p2) = (tuple(&o1).1, tuple(&o2).1);
    run(
        &mut w,
        0,
        OUTSIDE_IF,
        &tcp(denied, 443, PUBLIC, p1, "SA", b""),
    );
    run(
        &mut w,
        0,
        OUTSIDE_IF,
        &tcp(SERVER, 443, PUBLIC, p2, "SA", b""),
    );

    assert_eq!(w.set_policy(denying()), 1);
    // The cut flow's next packet draws a RST back to the client...
    let (v, rst) = run(
        &mut w,
        1,
        INSIDE_IF,
        &tcp(NODE1, 40000, denied, 443, "PA", b"more"),
    );
    assert_eq!(
        v,
        Verdict::Reply {
            tx_if: INSIDE_IF,
            next_hop: ip(NODE1)
        }
    );
    assert_eq!(tuple(&rst), (ip(denied), 443, ip(NODE1), 40000));
    assert_eq!(rst[14 + 20 + 13] & 0x04, 0x04, "RST flag");
    assert_checksums(&rst);
    // ...and one onward to the server, on the translated tuple.
    let mut buf = [0u8; 2048];
    let (len, tx_if, _) = w
        .poll_transmit(&mut buf)
        .expect("a reset toward the server");
    assert_eq!(tx_if, OUTSIDE_IF);
    assert_eq!(tuple(&buf[..len]), (ip(PUBLIC), p1, ip(denied), 443));
    assert_checksums(&buf[..len]);
    assert_eq!(w.counters().drop_count(DropReason::PolicyRevoked), 1);
    // The allowed flow goes on untouched.
    let (v, _) = run(
        &mut w,
        1,
        INSIDE_IF,
        &tcp(NODE1, 40001, SERVER, 443, "PA", b"data"),
    );
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(w.flow_count(), 1);
}

/// Every flow hits deny rule "would-deny", which sits in an audit-mode collection.
const AUDIT_RULES: &str = r#"
[[group]]
name = "g"
priority = 100

  [[group.collection]]
  name = "trial"
  priority = 100
  kind = "network"
  action = "deny"
  mode = "audit"

    [[group.collection.rule]]
    name = "would-deny"
    sources = ["*"]
    destinations = ["*"]
    protocols = ["any"]
    destination_ports = ["*"]
"#;

#[test]
fn audit_mode_logs_would_deny_and_lets_the_flow_pass() {
    let audit = policy(AUDIT_RULES);
    let mut w = WorkerKit::new().policy(audit.clone()).seed(1).build();
    let (sink, mut rx) = events::channel(16, 100);
    w.set_event_sink(sink);
    let (v, _) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 443, "S", b""),
    );
    assert!(matches!(v, Verdict::Forward { .. }));
    let e = rx.pop().unwrap();
    assert_eq!(
        (e.action, e.rule),
        (Action::Audit, Some(rule_id(&*audit, "would-deny")))
    );
}

#[test]
fn housekeeping_publishes_heartbeat_flows_and_snat_utilisation() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut cfg = lab_engine_config();
    cfg.nat.port_min = 5000;
    cfg.nat.port_max = 5003; // 4 UDP ports
    let mut w = worker(cfg);
    for p in 0..3 {
        run(&mut w, 0, INSIDE_IF, &udp(NODE1, 100 + p, SERVER, 53, b"q"));
    }
    w.housekeeping(7 * NS, 0);
    let c = w.counters();
    assert_eq!(c.heartbeat_ns.load(Relaxed), 7 * NS);
    assert_eq!(c.flows.load(Relaxed), 3);
    assert_eq!(c.snat_util_ppm.load(Relaxed), 750_000, "3 of 4 ports");
}

#[test]
fn a_published_policy_is_adopted_at_the_next_housekeeping() {
    use tollgate::datapath::updates::PolicyCell;
    let mut w = worker(lab_engine_config());
    let cell = PolicyCell::new(permissive());
    w.follow_policy(cell.clone());
    run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, "198.51.100.66", 443, "S", b""),
    );
    w.housekeeping(NS, 8);
    assert_eq!(w.last_reload_cut, 0, "nothing published yet");
    cell.publish(denying());
    w.housekeeping(2 * NS, 8);
    assert_eq!(w.last_reload_cut, 1);
    let (v, _) = run(
        &mut w,
        2 * NS,
        INSIDE_IF,
        &tcp(NODE1, 40000, "198.51.100.66", 443, "A", b""),
    );
    assert!(matches!(v, Verdict::Reply { .. }), "cut with a RST: {v:?}");
    let (v, _) = run(
        &mut w,
        2 * NS,
        INSIDE_IF,
        &tcp(NODE1, 40001, "198.51.100.66", 443, "S", b""),
    );
    assert_eq!(
        v,
        Verdict::Drop(DropReason::RuleDeny),
        "new flows meet the new policy"
    );
}

#[test]
fn a_policy_published_before_the_worker_follows_is_adopted_at_once() {
    // The resolver can publish (resolved destination FQDNs) before the workers start.
    use tollgate::datapath::updates::PolicyCell;
    let cell = PolicyCell::new(permissive());
    cell.publish(denying());
    let mut w = worker(lab_engine_config());
    w.follow_policy(cell.clone());
    let (v, _) = run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, "198.51.100.66", 443, "S", b""),
    );
    assert_eq!(v, Verdict::Drop(DropReason::RuleDeny));
    w.housekeeping(NS, 8);
    assert_eq!(w.last_reload_cut, 0, "adopted once, not again");
}

/// Allows everything by one rule named `name`.
fn named_rule(name: &str) -> Arc<tollgate::policy::Ruleset> {
    policy(&format!(
        r#"
[[group]]
name = "g"
priority = 100

  [[group.collection]]
  name = "c"
  priority = 100
  kind = "network"
  action = "allow"

    [[group.collection.rule]]
    name = "{name}"
    sources = ["*"]
    destinations = ["*"]
    protocols = ["any"]
    destination_ports = ["*"]
"#
    ))
}

#[test]
fn a_decision_logged_after_a_reload_names_the_rule_that_decided_it() {
    use tollgate::control::decision_log::write_json;
    let mut w = WorkerKit::new()
        .policy(named_rule("before"))
        .seed(1)
        .build();
    let (sink, mut rx) = events::channel(16, 100);
    w.set_event_sink(sink);
    run(
        &mut w,
        0,
        INSIDE_IF,
        &tcp(NODE1, 40000, SERVER, 443, "S", b""),
    );
    // The reload renames rule 1 before the log thread has drained the first decision.
    let current: Arc<dyn tollgate::policy::Policy> = named_rule("after");
    w.set_policy(current.clone());
    run(
        &mut w,
        1,
        INSIDE_IF,
        &tcp(NODE1, 40001, SERVER, 443, "S", b""),
    );
    let mut lines = Vec::new();
    while let Ok(e) = rx.pop() {
        let mut out = Vec::new();
        // The log thread passes the policy current when it writes.
        write_json(&mut out, &e, current.as_ref(), "t");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        lines.push((v["source"].as_str().unwrap().to_owned(), v["rule"].clone()));
    }
    assert_eq!(
        lines,
        [
            ("198.18.0.11:40000".to_owned(), "before".into()),
            ("198.18.0.11:40001".to_owned(), "after".into()),
        ]
    );
}
