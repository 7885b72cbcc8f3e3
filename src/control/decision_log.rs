//! Decision logs: one JSON object per line for every new-flow decision, with the fields an
//! Azure Firewall user knows (time, protocol, source, destination, FQDN, action, rule collection
//! group, rule collection, rule, reason, SNAT address). Workers push fixed-size events into
//! rate-limited rings; this thread drains them every 100 ms, so a flood can never stall the
//! dataplane: it only raises the suppressed count, logged as `{"suppressed": N}`.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::datapath::events::DecisionEvent;
use crate::datapath::updates::PolicyCell;
use crate::datapath::{Counters, DropReason};
use crate::policy::AppProto;

/// The event rings of all workers (each added once, when its worker starts).
pub type Rings = Arc<Mutex<Vec<rtrb::Consumer<DecisionEvent>>>>;

/// RFC 3339 UTC with milliseconds, from the system clock.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
fn endpoint(a: Ipv4Addr, p: u16) -> String {
    format!("{a}:{p}")
}

/// One event as a JSON object (names resolved against `policy`): the reference that
/// [`write_json`] is tested against.
#[cfg(test)]
fn to_json(e: &DecisionEvent, policy: &dyn crate::policy::Policy, time: &str) -> serde_json::Value {
    let f = &e.flow;
    let proto = match f.proto() {
        1 => "ICMP",
        6 => "TCP",
        17 => "UDP",
        _ => "IP",
    };
    let policy = e.policy().unwrap_or(policy);
    let names = e.rule.and_then(|r| policy.describe(r));
    let mut v = serde_json::json!({
        "time": time,
        "protocol": proto,
        "source": endpoint(f.src(), f.sport()),
        "destination": endpoint(f.dst(), f.dport()),
        "fqdn": e.name(),
        "app_protocol": e.app.map(|a| match a {
            AppProto::Http => "http",
            AppProto::Https => "https",
            AppProto::Quic => "quic",
        }),
        "action": e.action.as_str(),
        "rule_collection_group": names.map(|n| n.group),
        "rule_collection": names.map(|n| n.collection),
        "rule": names.map(|n| n.rule),
        "rule_kind": names.map(|n| n.kind),
        "reason": e.reason.map(|r| r.as_str()),
        "snat": e.snat.map(|(a, p)| endpoint(a, p)),
        "dnat": e.dnat.map(|(a, p)| endpoint(a, p)),
    });
    if e.reason == Some(DropReason::TcpNonSyn) {
        v["hint"] = ASYMMETRIC_HINT.into();
    }
    v
}

/// Writes one event as a JSON line into `out`, its rule named from the policy it was decided
/// under ([`DecisionEvent::policy`]), or from `policy` for an event that carries none: the same object serde_json would write (keys in
/// sorted order; a test checks it byte for byte), without building a map per event (the log thread keeps up with a flood of
/// new flows on a small machine).
pub fn write_json(
    out: &mut Vec<u8>,
    e: &DecisionEvent,
    policy: &dyn crate::policy::Policy,
    time: &str,
) {
    use std::io::Write as _;
    let f = &e.flow;
    let proto = match f.proto() {
        1 => "ICMP",
        6 => "TCP",
        17 => "UDP",
        _ => "IP",
    };
    let policy = e.policy().unwrap_or(policy);
    let names = e.rule.and_then(|r| policy.describe(r));
    let s = |out: &mut Vec<u8>, v: Option<&str>| match v {
        Some(v) => {
            let _ = serde_json::to_writer(&mut *out, v);
        }
        None => out.extend_from_slice(b"null"),
    };
    let ep = |out: &mut Vec<u8>, v: Option<(Ipv4Addr, u16)>| match v {
        Some((a, p)) => {
            let _ = write!(out, "\"{a}:{p}\"");
        }
        None => out.extend_from_slice(b"null"),
    };
    out.extend_from_slice(b"{\"action\":");
    s(out, Some(e.action.as_str()));
    out.extend_from_slice(b",\"app_protocol\":");
    s(
        out,
        e.app.map(|a| match a {
            AppProto::Http => "http",
            AppProto::Https => "https",
            AppProto::Quic => "quic",
        }),
    );
    out.extend_from_slice(b",\"destination\":");
    ep(out, Some((f.dst(), f.dport())));
    out.extend_from_slice(b",\"dnat\":");
    ep(out, e.dnat);
    out.extend_from_slice(b",\"fqdn\":");
    s(out, e.name());
    if e.reason == Some(DropReason::TcpNonSyn) {
        out.extend_from_slice(b",\"hint\":");
        s(out, Some(ASYMMETRIC_HINT));
    }
    out.extend_from_slice(b",\"protocol\":");
    s(out, Some(proto));
    out.extend_from_slice(b",\"reason\":");
    s(out, e.reason.map(|r| r.as_str()));
    out.extend_from_slice(b",\"rule\":");
    s(out, names.map(|n| n.rule));
    out.extend_from_slice(b",\"rule_collection\":");
    s(out, names.map(|n| n.collection));
    out.extend_from_slice(b",\"rule_collection_group\":");
    s(out, names.map(|n| n.group));
    out.extend_from_slice(b",\"rule_kind\":");
    s(out, names.map(|n| n.kind));
    out.extend_from_slice(b",\"snat\":");
    ep(out, e.snat);
    out.extend_from_slice(b",\"source\":");
    ep(out, Some((f.src(), f.sport())));
    out.extend_from_slice(b",\"time\":");
    s(out, Some(time));
    out.extend_from_slice(b"}\n");
}

/// What a mid-stream TCP packet from inside with no flow usually means.
pub const ASYMMETRIC_HINT: &str = "mid-stream TCP from inside with no tracked flow: the connection did not start through this appliance. Asymmetric routing? (e.g. inbound through a public load balancer or public IP while the UDR sends the answers here: add a route for the client's prefix with next hop Internet, or DNAT through the appliance). Also seen after the flow idled out or the appliance restarted.";

/// Drains `rings` into `out` as JSON lines until `stop`; every 5 s, reports events the workers
/// suppressed since the last report.
pub fn spawn(
    rings: Rings,
    counters: Arc<super::registry::Registry>,
    policy: Arc<PolicyCell>,
    mut out: Box<dyn Write + Send>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tollgate-log".into())
        .spawn(move || {
            crate::io::caps::enter_control_thread();
            let mut reported = 0u64;
            let mut ticks = 0u32;
            loop {
                let done = stop.load(Relaxed);
                let p = policy.current();
                let now = rfc3339(SystemTime::now());
                let mut buf = Vec::new();
                if let Ok(mut rs) = rings.lock() {
                    for r in rs.iter_mut() {
                        while let Ok(e) = r.pop() {
                            // Named from the policy it was decided under, which it carries.
                            write_json(&mut buf, &e, p.as_ref(), &now);
                        }
                    }
                }
                ticks += 1;
                if ticks % 50 == 0 || done {
                    let total: u64 = counters
                        .all()
                        .iter()
                        .map(|c: &Arc<Counters>| c.events_suppressed.load(Relaxed))
                        .sum();
                    if total > reported {
                        let _ = writeln!(
                            buf,
                            "{{\"time\":\"{now}\",\"suppressed\":{}}}",
                            total - reported
                        );
                        reported = total;
                    }
                }
                if !buf.is_empty() {
                    let _ = out.write_all(&buf);
                    let _ = out.flush();
                }
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::FlowKey;
    use crate::datapath::events::Action;

    #[derive(Debug)]
    struct Named;
    impl crate::policy::Policy for Named {
        fn decide(&self, _: &crate::policy::FlowQuery) -> crate::policy::Decision {
            crate::policy::Decision::Deny { rule: None }
        }
        fn decide_app(
            &self,
            _: &crate::policy::FlowQuery,
            _: AppProto,
            _: Option<&str>,
        ) -> crate::policy::Decision {
            crate::policy::Decision::Deny { rule: None }
        }
        fn describe(&self, _: u32) -> Option<crate::policy::RuleRef<'_>> {
            Some(crate::policy::RuleRef {
                group: "g \"quoted\"",
                collection: "c\\d",
                rule: "r",
                kind: "network",
            })
        }
    }

    #[test]
    fn the_direct_writer_writes_what_serde_json_would() {
        let a = "198.18.0.11".parse().unwrap();
        let b = "203.0.113.10".parse().unwrap();
        let key = FlowKey::new(a, b, 40000, 443, 6);
        let mut events = vec![
            DecisionEvent::new(7, key, Action::Allow),
            DecisionEvent::new(7, key, Action::Deny).with_reason(DropReason::TcpNonSyn),
        ];
        let mut full = DecisionEvent::new(7, key, Action::Audit)
            .with_rule(Some(3))
            .with_name("we\"ird\\.example");
        full.app = Some(AppProto::Quic);
        full.snat = Some((b, 1024));
        full.dnat = Some((a, 80));
        events.push(full);
        for e in &events {
            let mut direct = Vec::new();
            write_json(&mut direct, e, &Named, "2026-12-01T00:00:00.000Z");
            let mut reference =
                serde_json::to_vec(&to_json(e, &Named, "2026-12-01T00:00:00.000Z")).unwrap();
            reference.push(b'\n');
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(reference).unwrap()
            );
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z"); // date -u -d @1795000000
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
