//! The L7 hold: the first payload of a flow under an application rule is held, unforwarded,
//! until the name it is decided on (TLS or QUIC SNI, HTTP Host) has been read; then the
//! flow is allowed (the worker releases the held frames in order) or cut.

use super::super::events::{Action, DecisionEvent};
use super::super::inspect::{self, HoldError, InspectPool, L7};
use super::super::{DropReason, Nanos, Offload, Packet};
use super::parse::{l4_checksum_ok, Parsed};
use crate::conntrack::{Flow, FlowVerdict, InspectKind};
use crate::policy::{Decision, FlowQuery, Policy, RuleId};
use crate::wire::gso;
use crate::wire::l4::tcp_flags;

/// What holding a packet of a flow under inspection led to.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Held: the name needs more bytes.
    Held,
    /// The name is allowed under `rule`: release the held frames.
    Allow { rule: RuleId, event: DecisionEvent },
    /// Denied, or the name never comes within budget: cut the flow, logging `event` if any.
    Deny {
        reason: DropReason,
        event: Option<DecisionEvent>,
    },
    /// Dropped; the flow is left as it is.
    Drop(DropReason),
}

/// Readies a payload packet for the hold: completes a partial checksum (a held frame is
/// sent later without its offload metadata; the sender's kernel would have), and refuses a
/// packet the server might not take as the hold reads it. Otherwise a client could show the
/// firewall bytes the server discards (a bad checksum, a fragment whose rest only the server
/// sees) and send others once the flow is released and no longer read.
pub(super) fn check(pkt: &mut Packet<'_>, p: &Parsed) -> Result<(), DropReason> {
    if pkt.offload.csum_partial {
        let off = pkt.offload;
        if !gso::complete_checksum(&mut pkt.buf[..pkt.len], &off) {
            return Err(DropReason::BadOffload);
        }
        pkt.offload = Offload::NONE;
    }
    let verified = pkt
        .buf
        .get(p.l4..p.end)
        .is_some_and(|l4| l4_checksum_ok(l4, p));
    if p.first_frag || !verified {
        return Err(DropReason::InspectUnverifiable);
    }
    Ok(())
}

/// Holds the payload packet `p` (checked by [`check`]) of flow `f` at slab index `idx`, and
/// decides the flow under `policy` once its name is known.
pub(super) fn hold(
    pool: &mut InspectPool,
    policy: &dyn Policy,
    now: Nanos,
    pkt: &Packet<'_>,
    p: &Parsed,
    idx: u32,
    f: &Flow,
) -> Outcome {
    let budget = Outcome::Deny {
        reason: DropReason::InspectBudget,
        event: None,
    };
    let FlowVerdict::Inspecting { kind, slot } = f.verdict() else {
        return Outcome::Drop(DropReason::InspectBudget);
    };
    let (payload, frame) = (&pkt.buf[p.payload..p.payload_end], &pkt.buf[..pkt.len]);
    let mut lower = [0u8; 256];
    let mut raw = [0u8; 256];
    let l7 = if kind == InspectKind::Tcp {
        let Some(slot) = pool.get_mut(slot, idx) else {
            return budget;
        };
        // Data on a SYN (TCP Fast Open) starts one past its sequence number and would hold
        // the handshake itself: not supported on inspected flows, reset as before.
        if p.tcp_flags & tcp_flags::SYN != 0 {
            return budget;
        }
        match slot.hold_segment(p.seq, payload, frame) {
            Ok(()) => inspect::classify(slot.stream(), &mut raw),
            Err(HoldError::Budget) => return budget,
            Err(HoldError::Mismatch) => L7::Mismatch(None),
        }
    } else {
        // QUIC: the datagram is held whole; its Initials are decrypted as they arrive.
        match pool.hold_datagram(slot, idx, frame, payload, &mut raw) {
            Ok(r) => inspect::classify_quic(r, &raw),
            Err(_) => L7::OverBudget,
        }
    };
    let q = FlowQuery {
        src: f.orig.src(),
        dst: f.orig.dst(),
        proto: f.orig.proto(),
        sport: f.orig.sport(),
        dport: f.orig.dport(),
    };
    let (decision, deny_reason, app, name) = match l7 {
        L7::NeedMore => return Outcome::Held,
        L7::OverBudget => return budget,
        L7::Name(app, name) => {
            let name = inspect::lowercase(name, &mut lower);
            (
                policy.decide_app(&q, app, Some(name)),
                DropReason::AppDeny,
                Some(app),
                name,
            )
        }
        L7::NoName(app) => (
            policy.decide_app(&q, app, None),
            DropReason::NoSni,
            Some(app),
            "",
        ),
        L7::Unknown => (Decision::Deny { rule: None }, DropReason::AppDeny, None, ""),
        L7::Mismatch(app) => (
            Decision::Deny { rule: None },
            DropReason::InspectOverlapMismatch,
            app,
            "",
        ),
    };
    let mut e = DecisionEvent::new(now, f.orig, Action::Allow).with_name(name);
    e.app = app;
    let audited = match decision {
        Decision::Deny { rule: Some(r) } if policy.is_audit(r) => Some(r),
        _ => None,
    };
    if audited.is_some() {
        e.action = Action::Audit;
    }
    match audited
        .map(|rule| Decision::Allow { rule })
        .unwrap_or(decision)
    {
        Decision::Allow { rule } => {
            e.rule = Some(rule);
            e.snat = (f.reply.dst() != f.orig.src()).then(|| (f.reply.dst(), f.reply.dport()));
            Outcome::Allow { rule, event: e }
        }
        d => {
            e.action = Action::Deny;
            e.reason = Some(deny_reason);
            e.rule = match d {
                Decision::Deny { rule } => rule,
                _ => None,
            };
            Outcome::Deny {
                reason: deny_reason,
                event: Some(e),
            }
        }
    }
}
