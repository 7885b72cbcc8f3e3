//! What a run measured, as data (JSON), a per-second CSV and readable tables.

use std::fmt::Write as _;

use serde::Serialize;

/// The state when an allocation first failed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FirstFailure {
    /// Virtual second of the failure.
    pub t_s: f64,
    /// `out_of_ports`, `host_quota` or `max_flows`.
    pub reason: String,
    /// Flows the engine held (open, closing, TIME_WAIT, abandoned-but-not-expired).
    pub engine_flows: u64,
    /// Connections the workload still had open.
    pub open_conns: u64,
    /// SNAT ports in use over all public addresses.
    pub ports_in_use: u32,
    /// Connections offered before the failing one.
    pub offered_before: u64,
}

/// A span during which new flows failed for lack of ports (or flow-table room).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Outage {
    /// The first failure.
    pub start_s: f64,
    /// The first success after it (None: the run ended first).
    pub end_s: Option<f64>,
    pub duration_s: Option<f64>,
}

/// One virtual second.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Sample {
    /// End of the second (virtual seconds).
    pub t_s: u64,
    pub engine_flows: u64,
    pub open_conns: u64,
    /// New connections offered, succeeded and refused during the second.
    pub offered: u64,
    pub ok: u64,
    pub fail_ports: u64,
    pub fail_quota: u64,
    pub fail_maxflows: u64,
    /// Per public address: ports in use, and as a share of its ports.
    pub ports_in_use: Vec<u32>,
    pub utilisation: Vec<f64>,
    /// Engine flows toward each named destination.
    pub dest_flows: Vec<u32>,
}

impl Sample {
    pub fn new(t_s: u64, ips: usize, dests: usize) -> Self {
        Sample {
            t_s,
            engine_flows: 0,
            open_conns: 0,
            offered: 0,
            ok: 0,
            fail_ports: 0,
            fail_quota: 0,
            fail_maxflows: 0,
            ports_in_use: vec![0; ips],
            utilisation: vec![0.0; ips],
            dest_flows: vec![0; dests],
        }
    }
    /// Allocation failures of any reason in the second.
    pub fn failures(&self) -> u64 {
        self.fail_ports + self.fail_quota + self.fail_maxflows
    }
}

/// Per group of hosts: fairness.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GroupReport {
    pub name: String,
    pub hosts: u32,
    /// Hosts that tried at least one connection.
    pub hosts_active: u32,
    /// Hosts refused at least once (any reason).
    pub hosts_starved: u32,
    pub attempts: u64,
    pub ok: u64,
    pub fail_out_of_ports: u64,
    pub fail_host_quota: u64,
    pub fail_max_flows: u64,
}

/// Per named destination.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DestReport {
    pub dest: String,
    /// Most engine flows toward it at a sampled second.
    pub peak_flows: u64,
    /// That as a share of all SNAT ports (the most flows one destination ip:port can have).
    pub peak_share_of_ports: f64,
}

/// Wall-clock time of `process` for SYNs, by port occupancy when the SYN arrived.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LatencyBucket {
    pub occupancy: String,
    pub samples: u64,
    pub p50_ns: Option<u32>,
    pub p99_ns: Option<u32>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub scenario: String,
    pub mapping: String,
    pub public_ips: u8,
    pub ports_per_ip: u32,
    pub per_host_quota: Option<u32>,
    /// Virtual seconds simulated, and the wall-clock seconds it took.
    pub duration_s: f64,
    pub wall_s: f64,
    /// New connections offered, succeeded, refused by the allocator (any reason).
    pub offered: u64,
    pub succeeded: u64,
    pub failures: u64,
    /// Verdicts that should not happen (a SYN dropped for another reason, a handshake packet
    /// of a granted flow not forwarded). 0 in every shipped scenario.
    pub unexpected_verdicts: u64,
    /// FIN/RST of connections whose flow had already expired in the engine (a connection
    /// longer than its idle timeout without traffic).
    pub late_close_drops: u64,
    /// New connections that took over the port of a closed flow (TIME_WAIT or reset) toward
    /// their destination because no port was left (`time_wait_reuse`).
    pub time_wait_reused: u64,
    pub peak_engine_flows: u64,
    /// First `out_of_ports` / `max_flows` failure.
    pub first_exhaustion: Option<FirstFailure>,
    /// First `host_quota` failure.
    pub first_quota_failure: Option<FirstFailure>,
    pub hosts: u32,
    pub hosts_starved: u32,
    pub groups: Vec<GroupReport>,
    pub dests: Vec<DestReport>,
    pub latency: Vec<LatencyBucket>,
    pub outages: Vec<Outage>,
    /// Virtual seconds from the last exhaustion failure to the next success (None: no
    /// failure, or no success after it).
    pub last_failure_to_success_s: Option<f64>,
    pub samples: Vec<Sample>,
}

fn opt_ns(v: Option<u32>) -> String {
    v.map_or("-".into(), |n| format!("{n}"))
}

impl Report {
    /// Longest outage that ended, in virtual seconds.
    pub fn longest_outage_s(&self) -> Option<f64> {
        self.outages
            .iter()
            .filter_map(|o| o.duration_s)
            .max_by(f64::total_cmp)
    }

    /// The summary tables, as printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut o = String::new();
        let q = self
            .per_host_quota
            .map_or("none".to_string(), |q| q.to_string());
        let _ = writeln!(
            o,
            "== {}: {} x {} public IP(s), {} ports each, per-host quota {}",
            self.scenario, self.mapping, self.public_ips, self.ports_per_ip, q
        );
        let _ = writeln!(
            o,
            "virtual {:.0} s in {:.2} s wall; offered {}, ok {}, refused {} ({:.2} %), peak engine flows {}",
            self.duration_s,
            self.wall_s,
            self.offered,
            self.succeeded,
            self.failures,
            100.0 * self.failures as f64 / (self.offered.max(1)) as f64,
            self.peak_engine_flows
        );
        if self.time_wait_reused > 0 {
            let _ = writeln!(
                o,
                "ports taken over from closed flows (TIME_WAIT or reset) under pressure: {}",
                self.time_wait_reused
            );
        }
        match &self.first_exhaustion {
            Some(f) => {
                let _ = writeln!(
                    o,
                    "first exhaustion ({}) at t={:.3} s: engine flows {}, open connections {}, ports in use {}",
                    f.reason, f.t_s, f.engine_flows, f.open_conns, f.ports_in_use
                );
            }
            None => {
                let _ = writeln!(o, "no port exhaustion");
            }
        }
        if let Some(f) = &self.first_quota_failure {
            let _ = writeln!(
                o,
                "first host_quota refusal at t={:.3} s (engine flows {})",
                f.t_s, f.engine_flows
            );
        }
        if !self.outages.is_empty() {
            let ended = self.outages.iter().filter(|x| x.end_s.is_some()).count();
            let _ = writeln!(
                o,
                "outages: {} ({} recovered); longest recovered {} s; last failure -> next success {} s{}",
                self.outages.len(),
                ended,
                self.longest_outage_s()
                    .map_or("-".into(), |d| format!("{d:.3}")),
                self.last_failure_to_success_s
                    .map_or("-".into(), |d| format!("{d:.3}")),
                if self.outages.last().is_some_and(|x| x.end_s.is_none()) {
                    " (still failing at the end)"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(
            o,
            "\n{:<16} {:>6} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "group", "hosts", "starved", "share", "attempts", "ok", "no-port", "quota"
        );
        for g in &self.groups {
            let _ = writeln!(
                o,
                "{:<16} {:>6} {:>7} {:>7.1}% {:>9} {:>9} {:>9} {:>9}",
                g.name,
                g.hosts_active,
                g.hosts_starved,
                100.0 * f64::from(g.hosts_starved) / f64::from(g.hosts_active.max(1)),
                g.attempts,
                g.ok,
                g.fail_out_of_ports + g.fail_max_flows,
                g.fail_host_quota
            );
        }
        if !self.dests.is_empty() {
            let _ = writeln!(
                o,
                "\n{:<22} {:>10} {:>12}",
                "destination", "peak flows", "of all ports"
            );
            for d in &self.dests {
                let _ = writeln!(
                    o,
                    "{:<22} {:>10} {:>11.1}%",
                    d.dest,
                    d.peak_flows,
                    100.0 * d.peak_share_of_ports
                );
            }
        }
        let _ = writeln!(
            o,
            "\n{:<16} {:>9} {:>9} {:>9}",
            "occupancy", "SYNs", "p50 ns", "p99 ns"
        );
        for b in &self.latency {
            if b.samples == 0 {
                continue;
            }
            let _ = writeln!(
                o,
                "{:<16} {:>9} {:>9} {:>9}",
                b.occupancy,
                b.samples,
                opt_ns(b.p50_ns),
                opt_ns(b.p99_ns)
            );
        }
        if self.unexpected_verdicts > 0 || self.late_close_drops > 0 {
            let _ = writeln!(
                o,
                "\nunexpected verdicts {}, closes after expiry {}",
                self.unexpected_verdicts, self.late_close_drops
            );
        }
        o
    }

    /// One CSV line per virtual second.
    pub fn csv(&self) -> String {
        let mut o = String::from(
            "scenario,mapping,public_ips,t_s,engine_flows,open_conns,offered,ok,fail_out_of_ports,fail_host_quota,fail_max_flows",
        );
        let ips = usize::from(self.public_ips);
        for i in 0..ips {
            let _ = write!(o, ",ports_in_use_ip{i},utilisation_ip{i}");
        }
        for d in &self.dests {
            let _ = write!(o, ",flows_to_{}", d.dest);
        }
        o.push('\n');
        for s in &self.samples {
            let _ = write!(
                o,
                "{},{},{},{},{},{},{},{},{},{},{}",
                self.scenario,
                self.mapping,
                self.public_ips,
                s.t_s,
                s.engine_flows,
                s.open_conns,
                s.offered,
                s.ok,
                s.fail_ports,
                s.fail_quota,
                s.fail_maxflows
            );
            for i in 0..ips {
                let _ = write!(o, ",{},{:.5}", s.ports_in_use[i], s.utilisation[i]);
            }
            for f in &s.dest_flows {
                let _ = write!(o, ",{f}");
            }
            o.push('\n');
        }
        o
    }

    /// The line printed for a sampled second while running.
    pub fn progress_header(ips: usize) -> String {
        let mut o = format!(
            "{:>6} {:>9} {:>9} {:>8} {:>8} {:>8}",
            "t s", "flows", "open", "offered", "ok", "refused"
        );
        for i in 0..ips.min(4) {
            let _ = write!(o, " {:>7}", format!("ip{i}%"));
        }
        o
    }

    pub fn progress_line(s: &Sample) -> String {
        let mut o = format!(
            "{:>6} {:>9} {:>9} {:>8} {:>8} {:>8}",
            s.t_s,
            s.engine_flows,
            s.open_conns,
            s.offered,
            s.ok,
            s.failures()
        );
        for u in s.utilisation.iter().take(4) {
            let _ = write!(o, " {:>7.1}", 100.0 * u);
        }
        o
    }
}

/// A row of the policy comparison.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CompareRow {
    pub mapping: String,
    pub public_ips: u8,
    pub ports_total: u64,
    /// Engine flows held at the first exhaustion (None: no exhaustion).
    pub flows_at_first_failure: Option<u64>,
    pub peak_engine_flows: u64,
    pub offered: u64,
    pub failures: u64,
    /// Connections that took over a closed flow's port (TIME_WAIT or reset) for want of one.
    pub time_wait_reused: u64,
    pub hosts_starved: u32,
    pub hosts: u32,
}

impl CompareRow {
    pub fn of(r: &Report) -> Self {
        CompareRow {
            mapping: r.mapping.clone(),
            public_ips: r.public_ips,
            ports_total: u64::from(r.ports_per_ip) * u64::from(r.public_ips),
            flows_at_first_failure: r.first_exhaustion.as_ref().map(|f| f.engine_flows),
            peak_engine_flows: r.peak_engine_flows,
            offered: r.offered,
            failures: r.failures,
            time_wait_reused: r.time_wait_reused,
            hosts_starved: r.hosts_starved,
            hosts: r.hosts,
        }
    }
}

/// The comparison as a table.
pub fn compare_table(scenario: &str, rows: &[CompareRow]) -> String {
    let mut o = format!("== {scenario}: what each allocation policy buys\n");
    let _ = writeln!(
        o,
        "{:<10} {:>4} {:>8} {:>18} {:>11} {:>10} {:>10} {:>12} {:>14}",
        "mode",
        "IPs",
        "ports",
        "flows@1st failure",
        "peak flows",
        "offered",
        "refused",
        "taken over",
        "hosts starved"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "{:<10} {:>4} {:>8} {:>18} {:>11} {:>10} {:>10} {:>12} {:>9}/{:<4}",
            r.mapping,
            r.public_ips,
            r.ports_total,
            r.flows_at_first_failure
                .map_or("none".into(), |f| f.to_string()),
            r.peak_engine_flows,
            r.offered,
            r.failures,
            r.time_wait_reused,
            r.hosts_starved,
            r.hosts
        );
    }
    o
}
