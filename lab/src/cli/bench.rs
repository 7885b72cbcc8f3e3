//! `tollgate bench snat`: argument parsing and output for the SNAT simulator.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::snatbench::{
    self, CloseMix, DestSpec, Group, Mapping, Observer, Report, Sample, Scenario, TimeoutSpec,
};

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Engine-level SNAT simulator: synthetic connections through the real engine in virtual
    /// time (flows at first failure, utilisation, fairness, latency by occupancy, recovery).
    Snat(Box<SnatArgs>),
    /// Live SNAT exhaustion: real TCP connections through real namespaces with a small port
    /// pool, Tollgate against the kernel's nftables masquerade, side by side (root).
    SnatLive(Box<SnatLiveArgs>),
}

/// Arguments of `tollgate bench snat-live`.
#[derive(Debug, Args)]
pub struct SnatLiveArgs {
    /// The SNAT port pool of the exhaustion phase, LOW-HIGH (both engines).
    #[arg(long, default_value = "1024-2047")]
    pub ports: String,
    /// TCP connections attempted and held in the exhaustion phase.
    #[arg(long, default_value_t = 1100)]
    pub flows: usize,
    /// Inside hosts the connections come from (1-64).
    #[arg(long, default_value_t = 2)]
    pub hosts: usize,
    /// Connects in flight at most.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Connect timeout, seconds (1.5 covers one SYN retransmission).
    #[arg(long, default_value_t = 1.5)]
    pub connect_timeout: f64,
    /// The NAT's TCP TIME_WAIT, seconds (Tollgate tcp_time_wait and the kernel's
    /// nf_conntrack_tcp_timeout_time_wait).
    #[arg(long, default_value_t = 5)]
    pub time_wait: u32,
    /// Give up waiting for recovery after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub recovery_max: u64,
    /// Recovery after the flows idle out instead of after closing them: the NAT's TCP
    /// established timeout in seconds (Tollgate tcp_established, the kernel's
    /// nf_conntrack_tcp_timeout_established); the flows stay open and idle.
    #[arg(long)]
    pub idle_timeout: Option<u32>,
    /// Connections per host in the colliding-source-ports phase (0: skip it).
    #[arg(long, default_value_t = 2000)]
    pub collide_flows: usize,
    /// Tollgate worker threads (each owns a slice of the port pool).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Tollgate drops silently on exhaustion instead of answering ICMP 3/13.
    #[arg(long)]
    pub no_icmp: bool,
    /// Run only one engine: kernel or tollgate.
    #[arg(long, value_parser = ["kernel", "tollgate"])]
    pub only: Option<String>,
    /// Tollgate's SNAT mapping mode, one Tollgate run each: eim-shared (endpoint-independent
    /// with port sharing, the configuration's default), eim-strict (port_sharing = false),
    /// apdm (address-and-port-dependent), a comma-separated list of them, or all.
    #[arg(long, default_value = "eim-shared")]
    pub mapping: String,
    /// What to run: single (one server: exhaustion, recovery, colliding ports), two-servers
    /// (the two-server case only) or all.
    #[arg(long, default_value = "all", value_parser = ["all", "single", "two-servers"])]
    pub case: String,
    /// The two-server case: a pool of N ports from the low end of --ports, N connections to
    /// server A (203.0.113.10) and N to server B (203.0.113.20), interleaved, each from its own
    /// inside endpoint (0: skip it).
    #[arg(long, default_value_t = 64)]
    pub two_servers: usize,
    /// Repeat the whole run this many times (fresh namespaces each time) and print the
    /// medians after the per-run tables.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Write the report as JSON (with --runs > 1: an array of reports).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Workload and NAT settings. With `--scenario`, the flags given override the file's
/// top-level settings; without it they describe a one-group workload.
#[derive(Debug, Args)]
pub struct SnatArgs {
    /// Scenario TOML file (see benches/snat/).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Virtual seconds to simulate.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Inside hosts (one-group workload).
    #[arg(long, default_value_t = 50)]
    pub hosts: u32,
    /// New connections per second, all hosts together (one-group workload).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Evenly spaced arrivals instead of Poisson.
    #[arg(long)]
    pub fixed_arrivals: bool,
    /// Connection duration in seconds (one-group workload; `inf` keeps them open).
    #[arg(long, default_value_t = 5.0)]
    pub conn_duration: f64,
    /// Close mix as fin,rst,idle weights (one-group workload).
    #[arg(long, default_value = "1,0,0")]
    pub close: String,
    /// The hot destination (one-group workload).
    #[arg(long, default_value = "203.0.113.50:443")]
    pub dest: SocketAddrV4,
    /// Add a long tail of this many destinations, weighted `--tail-weight` (one-group).
    #[arg(long, default_value_t = 0)]
    pub tail: u32,
    #[arg(long, default_value_t = 0.5)]
    pub tail_weight: f64,
    /// Public (SNAT) addresses.
    #[arg(long)]
    pub public_ips: Option<u8>,
    #[arg(long)]
    pub port_min: Option<u16>,
    #[arg(long)]
    pub port_max: Option<u16>,
    /// endpoint-independent (eim) or address-and-port-dependent (apdm).
    #[arg(long)]
    pub mapping: Option<String>,
    /// Per-host SNAT quota (0: none).
    #[arg(long)]
    pub quota: Option<u32>,
    /// TCP established idle timeout, seconds.
    #[arg(long)]
    pub tcp_established: Option<u32>,
    /// TCP TIME_WAIT timeout, seconds.
    #[arg(long)]
    pub time_wait: Option<u32>,
    /// Seconds a freed port rests before reuse.
    #[arg(long)]
    pub cooldown: Option<u32>,
    /// Keep every closed flow's port for its whole TIME_WAIT (or reset) timeout, even when no
    /// port is left (`[snat] time_wait_reuse = false`).
    #[arg(long)]
    pub no_time_wait_reuse: bool,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the full report (with per-second samples) as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write one CSV line per virtual second.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write PNG and SVG plots into this directory.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Run the scenario with EIM and APDM and 1, 2, 4 public IPs; print flows held at the
    /// first failure for each.
    #[arg(long)]
    pub compare: bool,
    /// Print a table line every this many virtual seconds (0: none).
    #[arg(long, default_value_t = 0)]
    pub every: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn scenario_of(a: &SnatArgs) -> Result<Scenario, String> {
    let mut s = match &a.scenario {
        Some(p) => Scenario::load(&p.to_string_lossy()).map_err(|e| e.to_string())?,
        None => {
            let w: Vec<f64> = a
                .close
                .split(',')
                .map(|x| x.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| "--close takes three numbers: fin,rst,idle".to_string())?;
            let [fin, rst, idle] = w[..] else {
                return Err("--close takes three numbers: fin,rst,idle".into());
            };
            let mut dest = vec![DestSpec {
                addr: Some(*a.dest.ip()),
                port: a.dest.port(),
                tail: 0,
                weight: 1.0,
            }];
            if a.tail > 0 {
                dest[0].weight = 1.0 - a.tail_weight;
                dest.push(DestSpec {
                    addr: None,
                    port: 443,
                    tail: a.tail,
                    weight: a.tail_weight,
                });
            }
            Scenario {
                name: "cli".into(),
                description: String::new(),
                duration_s: 60.0,
                seed: 1,
                public_ips: 1,
                port_min: 1024,
                port_max: 65535,
                mapping: Mapping::default(),
                per_host_quota: None,
                reuse_cooldown_s: 2,
                time_wait_reuse: true,
                max_flows: 1 << 18,
                housekeeping_ms: 10,
                housekeeping_budget: 1024,
                timeouts: TimeoutSpec::default(),
                groups: vec![Group {
                    name: "hosts".into(),
                    hosts: a.hosts,
                    rate: a.rate,
                    phases: vec![],
                    arrival: if a.fixed_arrivals {
                        snatbench::Arrival::Fixed
                    } else {
                        snatbench::Arrival::Poisson
                    },
                    duration_s: a.conn_duration,
                    duration_dist: snatbench::DurationDist::Fixed,
                    close: CloseMix { fin, rst, idle },
                    data_packets: 0,
                    max_connections: None,
                    dest,
                }],
            }
        }
    };
    if let Some(d) = a.duration {
        s.duration_s = d;
    }
    if let Some(v) = a.public_ips {
        s.public_ips = v;
    }
    if let Some(v) = a.port_min {
        s.port_min = v;
    }
    if let Some(v) = a.port_max {
        s.port_max = v;
    }
    if let Some(m) = &a.mapping {
        s.mapping = Mapping::parse(m).ok_or_else(|| {
            format!("unknown mapping {m}: endpoint-independent or address-and-port-dependent")
        })?;
    }
    if let Some(q) = a.quota {
        s.per_host_quota = (q > 0).then_some(q);
    }
    if let Some(v) = a.tcp_established {
        s.timeouts.tcp_established = v;
    }
    if let Some(v) = a.time_wait {
        s.timeouts.tcp_time_wait = v;
    }
    if let Some(v) = a.cooldown {
        s.reuse_cooldown_s = v;
    }
    if a.no_time_wait_reuse {
        s.time_wait_reuse = false;
    }
    if let Some(v) = a.seed {
        s.seed = v;
    }
    s.validate().map_err(|e| e.to_string())?;
    Ok(s)
}

struct Bar {
    pb: ProgressBar,
    every: u64,
}

impl Observer for Bar {
    fn second(&mut self, s: &Sample, duration_s: u64) {
        self.pb.set_length(duration_s);
        self.pb.set_position(s.t_s);
        self.pb
            .set_message(format!("flows {} refused {}", s.engine_flows, s.failures()));
        if self.every > 0 && s.t_s % self.every == 0 {
            self.pb.println(Report::progress_line(s));
        }
    }
}

fn write(path: &PathBuf, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn snat(a: &SnatArgs) -> Result<(), String> {
    let s = scenario_of(a)?;
    if a.compare {
        let mut reports = Vec::new();
        let rows = snatbench::compare(&s, &mut |r| {
            if !a.quiet {
                eprintln!(
                    "ran {} {} x {} IP in {:.2} s",
                    r.scenario, r.mapping, r.public_ips, r.wall_s
                );
            }
            reports.push(r.clone());
        });
        print!("{}", snatbench::compare_table(&s.name, &rows));
        if let Some(p) = &a.json {
            let j = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
            write(p, &j)?;
        }
        if let Some(p) = &a.csv {
            let csv: String = reports
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let c = r.csv();
                    if i == 0 {
                        c
                    } else {
                        c.lines().skip(1).map(|l| format!("{l}\n")).collect()
                    }
                })
                .collect();
            write(p, &csv)?;
        }
        return Ok(());
    }
    let pb = if a.quiet {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
    } else {
        ProgressBar::new(s.duration_s.ceil() as u64)
    };
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} virtual s {msg}")
            .expect("literal template"),
    );
    if a.every > 0 {
        pb.println(Report::progress_header(usize::from(s.public_ips)));
    }
    let mut bar = Bar { pb, every: a.every };
    let r = snatbench::run(&s, &mut bar);
    bar.pb.finish_and_clear();
    print!("{}", r.summary());
    if let Some(p) = &a.json {
        write(
            p,
            &serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?,
        )?;
    }
    if let Some(p) = &a.csv {
        write(p, &r.csv())?;
    }
    if let Some(d) = &a.plot {
        let files = snatbench::write_plots(&r, d).map_err(|e| format!("plotting failed: {e}"))?;
        for f in files {
            eprintln!("wrote {}", f.display());
        }
    }
    Ok(())
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("--ports takes LOW-HIGH (e.g. 1024-2047), not {s}");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a = a.trim().parse::<u16>().map_err(|_| bad())?;
    let b = b.trim().parse::<u16>().map_err(|_| bad())?;
    Ok((a, b))
}

/// `--mapping`: all, or a comma-separated list of eim-shared, eim-strict, apdm (and the
/// configuration's names).
fn parse_mappings(s: &str) -> Result<Vec<Mapping>, String> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(vec![
            Mapping::EndpointIndependent,
            Mapping::EndpointIndependentStrict,
            Mapping::AddressAndPortDependent,
        ]);
    }
    let mut v = Vec::new();
    for m in s.split(',') {
        let m = Mapping::parse(m.trim()).ok_or_else(|| {
            format!("--mapping takes eim-shared, eim-strict, apdm or all, not {m}")
        })?;
        if !v.contains(&m) {
            v.push(m);
        }
    }
    Ok(v)
}

fn snat_live(a: &SnatLiveArgs) -> Result<(), String> {
    let (lo, hi) = parse_ports(&a.ports)?;
    if !a.connect_timeout.is_finite() || a.connect_timeout <= 0.0 || a.connect_timeout > 60.0 {
        return Err("--connect-timeout takes 0 to 60 seconds".into());
    }
    let exe = crate::appliance_binary();
    let mut o = snatbench::live::LiveOptions::new(exe);
    o.port_min = lo;
    o.port_max = hi;
    o.flows = a.flows;
    o.hosts = a.hosts;
    o.concurrency = a.concurrency;
    o.connect_timeout = std::time::Duration::from_secs_f64(a.connect_timeout);
    o.time_wait_s = a.time_wait;
    o.recovery_max = std::time::Duration::from_secs(a.recovery_max);
    o.collide_flows = a.collide_flows;
    o.idle_timeout_s = a.idle_timeout;
    o.workers = a.workers;
    o.icmp_on_exhaustion = !a.no_icmp;
    o.mappings = parse_mappings(&a.mapping)?;
    o.single = a.case != "two-servers";
    if a.case == "single" {
        o.two_servers = 0;
    } else {
        o.two_servers = a.two_servers;
        if a.case == "two-servers" && a.two_servers == 0 {
            return Err("--case two-servers needs --two-servers above 0".into());
        }
    }
    o.kernel = a.only.as_deref() != Some("tollgate");
    o.tollgate = a.only.as_deref() != Some("kernel");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    if a.runs == 0 || a.runs > 100 {
        return Err("--runs takes 1 to 100".into());
    }
    let quiet = a.quiet;
    let mut reports = Vec::new();
    for i in 0..a.runs {
        if a.runs > 1 && !quiet {
            eprintln!("run {} of {}", i + 1, a.runs);
        }
        let r = snatbench::live::run(&o, stop.clone(), &mut |m| {
            if !quiet {
                eprintln!("{m}");
            }
        })
        .map_err(|e| e.to_string())?;
        print!("{}", r.table());
        reports.push(r);
    }
    if a.runs > 1 {
        println!();
        print!("{}", snatbench::live::median_table(&reports));
    }
    if let Some(p) = &a.json {
        let j = if a.runs > 1 {
            serde_json::to_string_pretty(&reports)
        } else {
            serde_json::to_string_pretty(&reports[0])
        };
        write(p, &j.map_err(|e| e.to_string())?)?;
    }
    Ok(())
}

/// Runs a bench subcommand.
pub fn main(cmd: &BenchCommand) -> ExitCode {
    let res = match cmd {
        BenchCommand::Snat(a) => snat(a),
        BenchCommand::SnatLive(a) => snat_live(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate bench: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_lists() {
        use Mapping::*;
        assert_eq!(parse_mappings("eim-shared"), Ok(vec![EndpointIndependent]));
        assert_eq!(
            parse_mappings("apdm, eim-strict,apdm"),
            Ok(vec![AddressAndPortDependent, EndpointIndependentStrict])
        );
        assert_eq!(
            parse_mappings("ALL"),
            Ok(vec![
                EndpointIndependent,
                EndpointIndependentStrict,
                AddressAndPortDependent
            ])
        );
        assert!(parse_mappings("eim,nope").is_err());
    }
}
