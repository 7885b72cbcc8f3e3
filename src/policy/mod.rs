//! The rule classifier: Azure Firewall's model (rule collection groups and collections by
//! priority; DNAT, then network, then application rules; first match wins; default deny),
//! compiled off the packet path into a structure the datapath queries per new flow.
//!
//! The datapath only sees the [`Policy`] trait: it asks once per new flow, never per packet.

use std::net::Ipv4Addr;

pub mod bitset;
pub mod fqdn;
mod ruleset;

pub use fqdn::{FqdnError, FqdnPattern};
pub use ruleset::{app_l4, reference, Action, FieldMatch, Protocols, RuleKind, RuleSpec, Ruleset};

/// IP protocol numbers the classifier distinguishes (defined in `wire`, re-exported here).
pub use crate::wire::proto;

/// What the datapath knows about the first packet of a flow when it asks the policy.
///
/// For ICMP echo, `sport` is the query id and `dport` is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowQuery {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// Index of a rule in the compiled ruleset; [`Policy::describe`] names it.
pub type RuleId = u32;

/// The application protocol an application rule matched on (`http:80`, `https:443`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppProto {
    /// HTTP/1.x, matched on the Host header.
    Http,
    /// TLS over TCP, matched on the ClientHello SNI.
    Https,
    /// QUIC v1, matched on the SNI inside the decrypted Initial.
    Quic,
}

/// The decision for a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A network (or application) rule allowed the flow.
    Allow { rule: RuleId },
    /// A deny rule matched (`Some`), or nothing matched and the default deny applies (`None`).
    Deny { rule: Option<RuleId> },
    /// A DNAT rule matched: rewrite the destination to `to:to_port`.
    Dnat {
        rule: RuleId,
        to: Ipv4Addr,
        to_port: u16,
    },
    /// Only application rules can decide: hold the first payload, read SNI / Host, then call
    /// [`Policy::decide_app`].
    Inspect,
}

/// Names of the rule behind a decision, for logs and `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleRef<'a> {
    pub group: &'a str,
    pub collection: &'a str,
    pub rule: &'a str,
    /// `"dnat"`, `"network"` or `"application"`.
    pub kind: &'a str,
}

/// The new-flow decision interface the datapath calls. Implementations must be cheap to query
/// (no allocation, no lock) and immutable: a new config builds a new one that is swapped in.
pub trait Policy: Send + Sync {
    /// Decide a new flow from its 5-tuple: DNAT rules, then network rules, then whether any
    /// application rule could still match (then [`Decision::Inspect`]), else default deny.
    fn decide(&self, q: &FlowQuery) -> Decision;
    /// Decide a held flow once its FQDN (SNI or Host, lower-case, no trailing dot) is known;
    /// `fqdn` is `None` when the client sent none (a TLS flow without SNI).
    fn decide_app(&self, q: &FlowQuery, app: AppProto, fqdn: Option<&str>) -> Decision;
    /// The names of a rule, for logs.
    fn describe(&self, rule: RuleId) -> Option<RuleRef<'_>>;
    /// Every DNAT target (translated address, port, protocol; port 0 when the rule keeps the
    /// original port). With several workers, the datapath steers a DNAT flow's both directions
    /// to one worker by these.
    fn dnat_targets(&self) -> &[(Ipv4Addr, u16, u8)] {
        &[]
    }
    /// The public side of every DNAT rule toward a SNAT address: (address, protocol, first
    /// port, last port). SNAT never hands these ports out on that address (a reply to a SNAT
    /// flow and a new connection to the DNAT rule would look alike), and with several
    /// workers the datapath keeps these flows on worker 0.
    fn dnat_publics(&self) -> &[(Ipv4Addr, u8, u16, u16)] {
        &[]
    }
    /// Whether the rule belongs to a collection in audit mode: a [`Decision::Deny`] naming it is
    /// to be logged as "would deny" and the flow let through (treated as allowed).
    fn is_audit(&self, _rule: RuleId) -> bool {
        false
    }
    /// Rules numbered `0..rule_count()` (for per-rule hit counters).
    fn rule_count(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests;
