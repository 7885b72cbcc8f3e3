//! Decision events: one per new-flow decision, for the control plane's decision log.
//!
//! Workers push fixed-size events into a wait-free SPSC ring; the control plane drains it and
//! writes JSON lines. A token bucket bounds the rate per worker, and a full ring or an empty
//! bucket counts the event as suppressed instead of stalling the packet path.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::{DropReason, Nanos};
use crate::conntrack::FlowKey;
use crate::policy::{AppProto, Policy};

/// What was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Dnat,
    /// An audit-mode collection would have denied it; it was let through.
    Audit,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Dnat => "dnat",
            Action::Audit => "audit",
        }
    }
}

/// Longest name kept in an event (longer SNI/Host values are truncated).
pub const NAME_MAX: usize = 96;

/// The policy a decision was made under. The log names the event's rule from it, as the rule
/// was named then: a reload may rename or renumber rules before the line is written. Taking
/// it costs one atomic increment (no allocation, no lock), and only for an event that passed
/// the rate limit; the log thread drops it, so an old policy is freed there, not on a worker.
#[derive(Clone)]
pub struct DecidedUnder(pub Arc<dyn Policy>);

impl std::fmt::Debug for DecidedUnder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecidedUnder(..)")
    }
}

/// One decision, fixed-size (no allocation on the packet path).
#[derive(Clone, Debug)]
pub struct DecisionEvent {
    pub at: Nanos,
    /// The flow's first packet as it arrived.
    pub flow: FlowKey,
    pub action: Action,
    /// The rule that decided, if any (None: default deny, or a NAT failure).
    pub rule: Option<u32>,
    pub reason: Option<DropReason>,
    /// The SNAT address and port, when the flow was SNATed.
    pub snat: Option<(Ipv4Addr, u16)>,
    /// The DNAT target, when a DNAT rule matched.
    pub dnat: Option<(Ipv4Addr, u16)>,
    pub app: Option<AppProto>,
    name: [u8; NAME_MAX],
    name_len: u8,
    /// Set by [`EventSink::offer`].
    policy: Option<DecidedUnder>,
}

impl DecisionEvent {
    pub fn new(at: Nanos, flow: FlowKey, action: Action) -> Self {
        DecisionEvent {
            at,
            flow,
            action,
            rule: None,
            reason: None,
            snat: None,
            dnat: None,
            app: None,
            name: [0; NAME_MAX],
            name_len: 0,
            policy: None,
        }
    }
    /// Sets the deciding rule.
    pub fn with_rule(mut self, rule: Option<u32>) -> Self {
        self.rule = rule;
        self
    }
    /// Sets the drop reason.
    pub fn with_reason(mut self, reason: DropReason) -> Self {
        self.reason = Some(reason);
        self
    }
    /// Sets the FQDN (SNI or Host) the decision was made on.
    pub fn with_name(mut self, name: &str) -> Self {
        let n = name.len().min(NAME_MAX);
        self.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.name_len = n as u8;
        self
    }
    /// The policy the decision was made under (None for an event that never went through
    /// [`EventSink::offer`]).
    pub fn policy(&self) -> Option<&dyn Policy> {
        self.policy.as_ref().map(|p| p.0.as_ref())
    }
    /// The FQDN, if the decision had one.
    pub fn name(&self) -> Option<&str> {
        (self.name_len > 0)
            .then(|| std::str::from_utf8(&self.name[..usize::from(self.name_len)]).unwrap_or(""))
    }
}

/// The worker's side: a producer with a token bucket.
pub struct EventSink {
    tx: rtrb::Producer<DecisionEvent>,
    /// Events allowed per second, and the bucket's current level.
    rate: u32,
    tokens: u32,
    refilled_at: Nanos,
    pub suppressed: u64,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("rate", &self.rate)
            .field("suppressed", &self.suppressed)
            .finish()
    }
}

/// A ring of `capacity` events and its two ends; `rate` events per second pass the bucket.
pub fn channel(capacity: usize, rate: u32) -> (EventSink, rtrb::Consumer<DecisionEvent>) {
    let (tx, rx) = rtrb::RingBuffer::new(capacity.max(1));
    (
        EventSink {
            tx,
            rate,
            tokens: rate,
            refilled_at: 0,
            suppressed: 0,
        },
        rx,
    )
}

impl EventSink {
    /// Offers an event decided under `policy`; returns false (and counts it) when rate-limited
    /// or the ring is full.
    #[inline]
    pub fn offer(&mut self, now: Nanos, mut e: DecisionEvent, policy: &Arc<dyn Policy>) -> bool {
        if now.saturating_sub(self.refilled_at) >= 1_000_000_000 {
            self.tokens = self.rate;
            self.refilled_at = now;
        }
        if self.tokens == 0 || self.tx.slots() == 0 {
            self.suppressed += 1;
            return false;
        }
        e.policy = Some(DecidedUnder(policy.clone()));
        if self.tx.push(e).is_err() {
            self.suppressed += 1;
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Policy for Nothing {
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
            None
        }
    }

    #[test]
    fn bucket_and_ring_bound_the_flow_of_events() {
        let (mut sink, mut rx) = channel(8, 3);
        let p: Arc<dyn Policy> = Arc::new(Nothing);
        let e = DecisionEvent::new(0, FlowKey::ZERO, Action::Allow).with_name("mcr.microsoft.com");
        let sent = (0..5).filter(|_| sink.offer(10, e.clone(), &p)).count();
        assert_eq!((sent, sink.suppressed), (3, 2));
        assert_eq!(Arc::strong_count(&p), 4, "held by the 3 events in the ring");
        let got = rx.pop().unwrap();
        assert_eq!(got.name(), Some("mcr.microsoft.com"));
        assert!(got.policy().is_some());
        // A second later the bucket is full again.
        assert!(sink.offer(1_000_000_010, e, &p));
    }
}
