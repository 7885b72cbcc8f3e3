//! A stand-in for `tollgate run` on the lab/bench topology with a built-in allow-from-inside
//! policy, for benches/throughput.sh before the TOML loader is on the branch:
//!
//! ```sh
//! cargo build --release --example bench_appliance
//! TG_RUN=target/release/examples/bench_appliance benches/throughput.sh
//! ```
//! Accepts (and ignores) the `run --config FILE` arguments; honours `--workers N`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use tollgate::control::daemon::{self, ServeOptions};
use tollgate::datapath::{EngineConfig, Iface, IfaceRole, Worker};
use tollgate::nat::NatConfig;
use tollgate::policy::{AppProto, Decision, FlowQuery, Policy, RuleRef};

#[derive(Debug)]
struct AllowInside;

impl Policy for AllowInside {
    fn decide(&self, q: &FlowQuery) -> Decision {
        if q.src.octets()[0] == 198 && (q.src.octets()[1] & 0xfe) == 18 {
            Decision::Allow { rule: 1 }
        } else {
            Decision::Deny { rule: None }
        }
    }
    fn decide_app(&self, _: &FlowQuery, _: AppProto, _: Option<&str>) -> Decision {
        Decision::Deny { rule: None }
    }
    fn describe(&self, _: u32) -> Option<RuleRef<'_>> {
        None
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let workers = args
        .iter()
        .position(|a| a == "--workers")
        .and_then(|i| args.get(i + 1))
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    let ip = |s: &str| s.parse::<Ipv4Addr>().expect("literal");
    let cfg = EngineConfig {
        interfaces: vec![
            Iface {
                name: "tg-in".into(),
                role: IfaceRole::Inside,
                addrs: vec![ip("198.18.0.1")],
                gateway: None,
                connected: vec!["198.18.0.0/24".parse().expect("literal")],
                mtu: 1500,
            },
            Iface {
                name: "tg-out".into(),
                role: IfaceRole::Outside,
                addrs: vec![ip("203.0.113.1")],
                gateway: Some(ip("203.0.113.254")),
                connected: vec!["203.0.113.0/24".parse().expect("literal")],
                mtu: 1500,
            },
        ],
        routes: vec![],
        inside_prefixes: vec!["198.18.0.0/15".parse().expect("literal")],
        nat: NatConfig {
            public_addrs: vec![ip("203.0.113.1")],
            reuse_cooldown: 0,
            ..NatConfig::default()
        },
        timeouts: Default::default(),
        max_flows_per_worker: 1 << 18,
        mss_clamp: None,
        icmp_on_exhaustion: false,
        icmp_source: ip("198.18.0.1"),
    };
    let stop = match daemon::stop_on_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench_appliance: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let engine = Arc::new(cfg.clone());
    let policy: Arc<dyn Policy> = Arc::new(AllowInside);
    let mut opts = ServeOptions {
        workers,
        ..ServeOptions::default()
    };
    if args.windows(2).any(|w| w[0] == "--rx-ring" && w[1] == "v3") {
        opts.af.rx_version = tollgate::io::afpacket::RxRingVersion::V3;
    }
    match daemon::serve(
        &cfg,
        &opts,
        |i, n| Worker::new(engine.clone(), policy.clone(), i, n, 7),
        stop,
    ) {
        Ok(t) => {
            eprint!("{}", daemon::format_counters(&t));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_appliance: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
