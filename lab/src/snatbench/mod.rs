//! `tollgate bench snat`: an engine-level SNAT simulator.
//!
//! It drives the real [`Worker::process`](tollgate::datapath::Worker::process) with synthetic TCP
//! connections (SYN from the inside, SYN-ACK back on the translated tuple, optional data, then
//! a FIN, RST or idle close) in virtual time: the simulator advances `now`, so an hour of
//! traffic runs in seconds. It calls `housekeeping` between batches as the daemon does, and
//! counts allocation failures from the verdicts (`out_of_ports`, `host_quota`, `max_flows`).
//!
//! What it reports per run: flows held at the first failure, failures per virtual second,
//! port utilisation per public address and per destination, the share of hosts refused at
//! least once, the wall-clock time of `process` for SYNs by port occupancy, and the outages
//! (first failure to next success).
//!
//! [`live`] asks the same question with real connections through real namespaces, Tollgate
//! against the kernel's nftables masquerade (`tollgate bench snat-live`).

pub mod live;
mod plot;
mod report;
mod scenario;
mod sim;

pub use plot::write_plots;
pub use report::{
    compare_table, CompareRow, DestReport, FirstFailure, GroupReport, LatencyBucket, Outage,
    Report, Sample,
};
pub use scenario::{
    Arrival, CloseMix, DestSpec, DurationDist, Group, Mapping, Phase, Scenario, ScenarioError,
    TimeoutSpec,
};
pub use sim::{engine_config, public_addr, run, Observer, Silent, CLOCK_ORIGIN, LATENCY_BUCKETS};

use tollgate::policy::{AppProto, Decision, FlowQuery, Policy, RuleRef};

/// Allows every flow, so the benchmark measures NAT, not rules: the allocator, the flow table
/// and expiry are the real engine's; the rule classifier is out of the picture.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAllPolicy;

impl Policy for AllowAllPolicy {
    fn decide(&self, _: &FlowQuery) -> Decision {
        Decision::Allow { rule: 0 }
    }
    fn decide_app(&self, _: &FlowQuery, _: AppProto, _: Option<&str>) -> Decision {
        Decision::Allow { rule: 0 }
    }
    fn describe(&self, _: u32) -> Option<RuleRef<'_>> {
        None
    }
}

/// The comparison `--compare` runs: the same scenario with each mapping mode (EIM with port
/// sharing, strict EIM, APDM) and 1, 2 and 4 public addresses.
pub fn compare(base: &Scenario, obs: &mut dyn FnMut(&Report)) -> Vec<CompareRow> {
    let mut rows = Vec::new();
    for mapping in [
        Mapping::EndpointIndependent,
        Mapping::EndpointIndependentStrict,
        Mapping::AddressAndPortDependent,
    ] {
        for ips in [1u8, 2, 4] {
            let mut s = base.clone();
            s.mapping = mapping;
            s.public_ips = ips;
            let r = run(&s, &mut Silent);
            obs(&r);
            rows.push(CompareRow::of(&r));
        }
    }
    rows
}
