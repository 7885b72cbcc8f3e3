//! Admission of a new flow, in two steps. [`plan`] reads the first packet, the zones and the
//! policy and says what should happen (zone -> policy -> NAT intent), changing nothing; it
//! can be read and tested as a function of its inputs. [`commit`] carries an admission out
//! against the tables (SNAT allocation or takeover, insertion, inspection set-up) and undoes
//! its own steps when a later one fails. The worker logs and forwards around them.

use std::net::Ipv4Addr;

use super::super::counters::bump;
use super::super::events::{Action, DecisionEvent};
use super::super::{DropReason, EngineConfig, Nanos, Verdict};
use super::parse::{Icmp, Parsed};
use super::tables::Tables;
use crate::conntrack::{
    Dir, Flow, FlowKey, FlowVerdict, InspectKind, TcpState, TcpTrack, TimeoutClass,
};
use crate::nat::{AllocError, SnatRule};
use crate::policy::{Decision, FlowQuery, Policy, RuleId};
use crate::wire::l4::tcp_flags;
use crate::wire::proto;

/// Closed flows (of each of the reset and TIME_WAIT lists, oldest first) a SYN that found no
/// SNAT port looks at for one toward its destination it may take over: bounds the work per
/// SYN whatever the table holds.
const TAKEOVER_WALK: usize = 64;

/// What should happen to the first packet of a flow the table does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Not admitted, nothing to log: the verdict.
    Refuse(Verdict),
    /// Denied by the policy: dropped under `reason` and logged under `rule` (None: default
    /// deny).
    Deny {
        rule: Option<RuleId>,
        reason: DropReason,
    },
    /// TCP that is not a SYN: dropped. `hint`: from inside and not a RST, the mark of a
    /// connection that did not start through the appliance (an asymmetric route), worth a log
    /// line.
    NonSyn {
        hint: bool,
    },
    /// Admissible, but its TTL ends here: an ICMP time exceeded back.
    TtlExceeded,
    Admit(Intent),
}

/// An admission decided: the rule, and how the flow's reply direction will read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Intent {
    pub rule: RuleId,
    /// Source of the reply: the destination, or the DNAT target.
    pub reply_src: Ipv4Addr,
    /// Its port (0 for ICMP).
    pub reply_sport: u16,
    /// Held for an application-rule verdict.
    pub inspect: Option<InspectKind>,
    /// An audit-mode collection would deny: logged as such, let through.
    pub audit: bool,
    /// Translated to a SNAT address and port.
    pub snat: bool,
}

/// Zone, then policy, then NAT: what admitting the first packet `p` of a flow means.
pub(super) fn plan(cfg: &EngineConfig, policy: &dyn Policy, p: &Parsed) -> Plan {
    let from_inside = cfg.is_inside(p.src);
    let to_public = cfg.is_public(p.dst);
    if !from_inside && !to_public {
        if p.proto == proto::TCP && p.tcp_flags & tcp_flags::SYN == 0 {
            return Plan::Refuse(Verdict::Drop(DropReason::TcpNonSyn));
        }
        return Plan::Refuse(Verdict::Drop(if cfg.is_inside(p.dst) {
            DropReason::Unsolicited
        } else {
            DropReason::UnknownSource
        }));
    }
    if p.proto == proto::TCP
        && p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) != tcp_flags::SYN
    {
        if to_public && !cfg.in_snat_range(p.dport) {
            return Plan::Refuse(Verdict::Local);
        }
        // A SYN-ACK or ACK from inside with no flow: the connection did not start through
        // the appliance (classically: in through a public load balancer, out via the UDR).
        return Plan::NonSyn {
            hint: from_inside && p.tcp_flags & tcp_flags::RST == 0,
        };
    }
    if p.proto == proto::ICMP && p.icmp != Icmp::EchoRequest {
        return Plan::Refuse(if to_public {
            Verdict::Local
        } else {
            Verdict::Drop(DropReason::Unsolicited)
        });
    }
    if p.ttl <= 1 {
        return Plan::TtlExceeded;
    }
    let q = FlowQuery {
        src: p.src,
        dst: p.dst,
        proto: p.proto,
        sport: p.sport,
        dport: p.dport,
    };
    let decision = policy.decide(&q);
    // Traffic to a public address is only ever admitted by a DNAT rule.
    if to_public && !matches!(decision, Decision::Dnat { .. }) {
        let port = if p.proto == proto::ICMP { 0 } else { p.dport };
        return Plan::Refuse(if p.proto == proto::ICMP || !cfg.in_snat_range(port) {
            Verdict::Local
        } else {
            Verdict::Drop(DropReason::Unsolicited)
        });
    }
    let mut inspect = None;
    let mut audit = false;
    let (rule, reply_src, reply_sport) = match decision {
        Decision::Allow { rule } => (rule, p.dst, p.dport),
        Decision::Deny { rule: Some(r) } if policy.is_audit(r) => {
            audit = true;
            (r, p.dst, p.dport)
        }
        Decision::Dnat { rule, to, to_port } => (rule, to, to_port),
        Decision::Deny { rule: Some(r) } => {
            return Plan::Deny {
                rule: Some(r),
                reason: DropReason::RuleDeny,
            }
        }
        Decision::Inspect if p.proto == proto::TCP => {
            inspect = Some(InspectKind::Tcp);
            (0, p.dst, p.dport)
        }
        Decision::Inspect if p.proto == proto::UDP && p.payload != 0 => {
            inspect = Some(InspectKind::Quic);
            (0, p.dst, p.dport)
        }
        Decision::Deny { rule: None } | Decision::Inspect => {
            return Plan::Deny {
                rule: None,
                reason: DropReason::DefaultDeny,
            }
        }
    };
    let reply_sport = if p.proto == proto::ICMP {
        0
    } else {
        reply_sport
    };
    // SNAT unless the flow arrives from outside (DNAT) or goes to an exempt prefix: the
    // rule `explain` prints too.
    let snat = cfg.nat.snat_rule(&cfg.inside_prefixes, p.src, reply_src) == SnatRule::Snat;
    Plan::Admit(Intent {
        rule,
        reply_src,
        reply_sport,
        inspect,
        audit,
        snat,
    })
}

/// A committed admission: the flow's slab index, and the decision event to log (None for a
/// flow under inspection: its name decides, later).
#[derive(Debug)]
pub(super) struct Admitted {
    pub idx: u32,
    pub event: Option<DecisionEvent>,
}

/// A commit that failed; the tables are as they were (but for takeover evictions).
#[derive(Clone, Copy, Debug)]
pub(super) struct Refused {
    pub reason: DropReason,
    /// Logged as a deny event under the intent's rule.
    pub logged: bool,
    /// Answered with an ICMP destination unreachable (code 13, administratively prohibited).
    pub unreachable: bool,
}

impl Refused {
    fn silent(reason: DropReason) -> Self {
        Refused {
            reason,
            logged: false,
            unreachable: false,
        }
    }
}

/// Carries out `intent` for the flow `key` whose first packet is `p`: allocates its SNAT port
/// (taking over a closed flow's under pressure), inserts it, and sets up its inspection.
pub(super) fn commit(
    t: &mut Tables,
    cfg: &EngineConfig,
    now: Nanos,
    key: FlowKey,
    p: &Parsed,
    intent: &Intent,
) -> Result<Admitted, Refused> {
    let &Intent {
        rule,
        reply_src,
        reply_sport,
        snat,
        ..
    } = intent;
    let (reply, snat_idx) = if snat {
        let flows = &t.flows;
        let (rs, rsp, proto_) = (reply_src, reply_sport, p.proto);
        let taken =
            |addr: Ipv4Addr, port: u16| flows.contains(&FlowKey::new(rs, addr, rsp, port, proto_));
        let mut granted = t.snat.allocate(&key, now, taken);
        // Under pressure only (no free port, none shareable toward this destination): a
        // SYN may take over the port of a closed flow toward the same remote endpoint.
        let mut evict = None;
        if granted == Err(AllocError::OutOfPorts)
            && p.proto == proto::TCP
            && cfg.nat.time_wait_reuse
        {
            if let Some((old, ai, port)) = closed_holder(t, &key, reply_src, reply_sport) {
                granted = t.snat.allocate_reclaimed(&key, ai, port);
                evict = granted.is_ok().then_some(old);
            }
        }
        if let Some(old) = evict {
            // After the grant, so the port never looks free; before the insert, which
            // needs the reply tuple gone.
            t.drop_flow(old, now, true);
            bump(&t.counters.snat_time_wait_reused, 1);
        }
        match granted {
            Ok(g) => {
                if g.moved {
                    bump(&t.counters.eim_collision_moved, 1);
                }
                (
                    FlowKey::new(reply_src, g.addr, reply_sport, g.port, p.proto),
                    g.addr_idx,
                )
            }
            Err(e) => {
                return Err(Refused {
                    reason: match e {
                        AllocError::OutOfPorts => DropReason::OutOfPorts,
                        AllocError::HostQuota => DropReason::HostQuota,
                    },
                    logged: true,
                    unreachable: cfg.icmp_on_exhaustion,
                })
            }
        }
    } else {
        let (sport, dport) = if p.proto == proto::ICMP {
            (0, p.sport)
        } else {
            (reply_sport, p.sport)
        };
        (FlowKey::new(reply_src, p.src, sport, dport, p.proto), 0)
    };
    // A granted SNAT port was checked free toward this destination; without SNAT another
    // flow may already answer on this tuple.
    if !snat && t.flows.contains(&reply) {
        return Err(Refused::silent(DropReason::Unsolicited));
    }
    let class = match p.proto {
        proto::TCP => TimeoutClass::TcpSyn,
        proto::UDP => TimeoutClass::Udp,
        _ => TimeoutClass::Icmp,
    };
    let idx = match t.flows.insert(key, reply, class, now) {
        Ok(i) => i,
        Err(_) => {
            if snat {
                t.snat.release(&key, snat_idx, reply.dport(), now);
            }
            return Err(Refused {
                logged: true,
                ..Refused::silent(DropReason::MaxFlows)
            });
        }
    };
    // Counted once in the table, so created - removed is what the table holds.
    bump(&t.counters.flows_created, 1);
    let f = t.flows.get_mut(idx);
    f.set_verdict(FlowVerdict::Allowed { rule: rule as u16 });
    f.snat_idx = snat_idx;
    if p.proto == proto::TCP {
        f.tcp = TcpTrack::opened();
    }
    if let Some(kind) = intent.inspect {
        let Some(slot) = t.inspect.take(idx, p.seq.wrapping_add(1), now) else {
            t.remove(idx, now);
            return Err(Refused::silent(DropReason::InspectBudget));
        };
        t.flows
            .get_mut(idx)
            .set_verdict(FlowVerdict::Inspecting { kind, slot });
        return Ok(Admitted { idx, event: None });
    }
    let dnat =
        reply_src != p.dst || reply_sport != if p.proto == proto::ICMP { 0 } else { p.dport };
    let mut e = DecisionEvent::new(
        now,
        key,
        match (intent.audit, dnat) {
            (true, _) => Action::Audit,
            (false, true) => Action::Dnat,
            (false, false) => Action::Allow,
        },
    );
    e.rule = Some(rule);
    e.snat = snat.then(|| (reply.dst(), reply.dport()));
    e.dnat = dnat.then(|| (reply.src(), reply.sport()));
    Ok(Admitted {
        idx,
        event: Some(e),
    })
}

/// A closed TCP flow (reset, or FIN both ways: TIME_WAIT) holding the reply tuple
/// (`remote`:`rport` -> public address, port) that the new SYN `orig` may take over when
/// no SNAT port is left for it: its slab index and public (address index, port). The
/// endpoint's own mapping port first (then its flow keeps its endpoint-independent port),
/// else the oldest reset flows, then the oldest TIME_WAIT flows, at most
/// [`TAKEOVER_WALK`] of each: oldest first, so the connection that has been quiet longest
/// goes. A destination whose walk found nothing fails at once until a closed flow changes.
fn closed_holder(
    t: &mut Tables,
    orig: &FlowKey,
    remote: Ipv4Addr,
    rport: u16,
) -> Option<(u32, u8, u16)> {
    let publics = t.snat.addrs();
    let holds = |f: &Flow| {
        matches!(f.tcp.state, TcpState::TimeWait | TcpState::Closed)
            && f.reply.src() == remote
            && f.reply.sport() == rport
            && f.reply.proto() == proto::TCP
            && f.reply.dst() != f.orig.src()
            && publics.get(usize::from(f.snat_idx)) == Some(&f.reply.dst())
    };
    let snat = &t.snat;
    let usable = |f: &Flow| holds(f) && snat.reclaimable(&f.orig, f.snat_idx, f.reply.dport());
    if let Some((ai, port)) = t.snat.mapping_of(orig) {
        let addr = publics[usize::from(ai)];
        let k = FlowKey::new(remote, addr, rport, port, proto::TCP);
        if let Some((idx, Dir::Reply)) = t.flows.lookup(&k) {
            if usable(t.flows.get(idx)) {
                return Some((idx, ai, port));
            }
        }
    }
    if t.takeover_failed == Some((remote, rport, t.closed_epoch)) {
        return None;
    }
    for class in [TimeoutClass::TcpClosed, TimeoutClass::TcpTimeWait] {
        let found = t
            .flows
            .oldest_in(class)
            .take(TAKEOVER_WALK)
            .find(|(_, f)| usable(f));
        if let Some((idx, f)) = found {
            return Some((idx, f.snat_idx, f.reply.dport()));
        }
    }
    t.takeover_failed = Some((remote, rport, t.closed_epoch));
    None
}
