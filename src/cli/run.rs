//! `tollgate run`: the foreground daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::control::daemon::{self, ServeOptions};
use crate::io::runtime::SpinMode;

/// Arguments of `tollgate run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The TOML configuration.
    #[arg(long)]
    pub config: PathBuf,
    /// Record every received and transmitted frame to this classic pcap file.
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// Worker threads (overrides the configuration; 0 = one per CPU).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Turn GRO, GSO, TSO and LRO off on the data interfaces (ethtool -K), restored at exit.
    /// By default the offloads keep the kernel's settings.
    #[arg(long)]
    pub offloads_off: bool,
    /// Leave the interfaces' offload settings alone: the default now, accepted for old unit
    /// files and scripts.
    #[arg(long, hide = true, conflicts_with = "offloads_off")]
    pub keep_offloads: bool,
    /// TPACKET version of the RX rings: v2 (frame-based, the default: no block timeout) or v3
    /// (block-based: a block reaches user space when full or after >= 1 ms).
    #[arg(long, default_value = "v2", value_parser = ["v2", "v3"])]
    pub rx_ring: String,
    /// The admin socket (overrides `appliance.admin_socket`).
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    /// Keep every capability after start (by default workers keep none and the main thread
    /// only CAP_NET_ADMIN, to undo the host preparation at exit).
    #[arg(long)]
    pub keep_caps: bool,
    /// Microseconds a worker keeps polling its rings after its last frame before it sleeps in
    /// poll() (overrides `appliance.busy_poll_us`; 0 = sleep at once).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub busy_poll_us: Option<u64>,
    /// Between busy-poll checks: sched_yield() (`yield`) or CPU pause hints (`pause`)
    /// (overrides `appliance.busy_poll_mode`).
    #[arg(long, value_parser = ["yield", "pause"])]
    pub busy_poll_mode: Option<String>,
}

/// The daemon's options from the command line (the configuration file aside).
fn serve_options(a: &RunArgs) -> ServeOptions {
    let mut opts = ServeOptions {
        pcap: a.pcap.clone(),
        // `--keep-offloads` conflicts with `--offloads-off`: only the latter changes anything
        offloads: a.offloads_off,
        admin_socket: a.admin_socket.clone(),
        drop_caps: !a.keep_caps,
        ..ServeOptions::default()
    };
    opts.busy_poll_us = a.busy_poll_us;
    opts.busy_poll_mode = a.busy_poll_mode.as_deref().map(|m| match m {
        "pause" => SpinMode::Pause,
        _ => SpinMode::Yield,
    });
    if a.rx_ring == "v3" {
        opts.af.rx_version = crate::io::afpacket::RxRingVersion::V3;
    }
    opts
}

/// Runs the daemon until SIGTERM/SIGINT; exit code 0 on a clean stop, 1 on an error.
pub fn main(a: RunArgs) -> ExitCode {
    let opts = serve_options(&a);
    match daemon::run_from_file(&a.config, opts, a.workers) {
        Ok(_) => {
            eprintln!("tollgate: stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["tollgate", "run", "--config", "t.toml"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Run(a) => Ok(a),
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn offloads_are_left_alone_unless_offloads_off_is_given() {
        let a = parse(&[]).expect("plain");
        assert!(
            !serve_options(&a).offloads,
            "the default keeps the kernel's offloads"
        );
        let a = parse(&["--keep-offloads"]).expect("the old flag is still accepted");
        assert!(!serve_options(&a).offloads);
        let a = parse(&["--offloads-off"]).expect("--offloads-off");
        assert!(serve_options(&a).offloads, "--offloads-off turns them off");
        assert!(parse(&["--offloads-off", "--keep-offloads"]).is_err());
    }

    #[test]
    fn keep_offloads_is_hidden_from_the_help() {
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").expect("run");
        let help = run.render_long_help().to_string();
        assert!(help.contains("--offloads-off"), "{help}");
        assert!(!help.contains("--keep-offloads"), "{help}");
    }
}
