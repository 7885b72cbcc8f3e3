//! `tollgate run`: the foreground daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::control::daemon::{self, ServeOptions};
use crate::control::logging::{self, Filter, FormatChoice};
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
    /// Packet I/O: auto (AF_XDP where its program attaches with zero-copy, else AF_PACKET), af_xdp or
    /// af_packet (overrides $TOLLGATE_BACKEND and `appliance.backend`).
    #[arg(long, value_parser = ["auto", "af_xdp", "af_packet"])]
    pub backend: Option<String>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// How `tollgate run` logs (its messages on stderr; the decision log on stdout is apart).
#[derive(Clone, Debug, Default, Args)]
pub struct LogArgs {
    /// Messages at this level and above: off, error, warn, info (the default), debug, trace.
    /// Short for --log-filter LEVEL.
    #[arg(long, value_name = "LEVEL", value_parser = logging::parse_level, conflicts_with = "log_filter")]
    pub log_level: Option<log::LevelFilter>,
    /// Levels per target, RUST_LOG style: `warn,tollgate::control::dns=debug`. Overrides
    /// $TOLLGATE_LOG, which overrides $RUST_LOG.
    #[arg(long, value_name = "FILTER", value_parser = Filter::parse)]
    pub log_filter: Option<Filter>,
    /// auto: journald (`<N>` priorities, no time) when stderr is the journal, else text.
    /// Overrides $TOLLGATE_LOG_FORMAT.
    #[arg(long, value_name = "FORMAT", value_enum)]
    pub log_format: Option<FormatChoice>,
}

impl LogArgs {
    /// The command line's part of the log settings (the environment fills the rest).
    pub fn settings(&self) -> logging::Settings {
        logging::Settings {
            filter: self
                .log_filter
                .clone()
                .or_else(|| self.log_level.map(Filter::level)),
            format: self.log_format,
        }
    }
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
    opts.backend = a.backend.as_deref().and_then(crate::io::Backend::parse);
    if a.rx_ring == "v3" {
        opts.af.rx_version = crate::io::afpacket::RxRingVersion::V3;
    }
    opts
}

/// Runs the daemon until SIGTERM/SIGINT; exit code 0 on a clean stop, 1 on an error.
pub fn main(a: RunArgs) -> ExitCode {
    logging::init(&a.log.settings());
    let opts = serve_options(&a);
    match daemon::run_from_file(&a.config, opts, a.workers) {
        Ok(_) => {
            log::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
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
    fn the_log_options_make_the_command_lines_settings() {
        let s = parse(&[]).expect("plain").log.settings();
        assert_eq!(
            (s.filter, s.format),
            (None, None),
            "the environment decides"
        );
        let s = parse(&["--log-level", "debug"])
            .expect("level")
            .log
            .settings();
        assert_eq!(s.filter, Some(Filter::level(log::LevelFilter::Debug)));
        let s = parse(&[
            "--log-filter",
            "warn,tollgate::control::dns=trace",
            "--log-format",
            "json",
        ])
        .expect("filter")
        .log
        .settings();
        let f = s.filter.expect("a filter");
        assert_eq!(
            f.level_for("tollgate::control::dns"),
            log::LevelFilter::Trace
        );
        assert_eq!(
            f.level_for("tollgate::control::reload"),
            log::LevelFilter::Warn
        );
        assert_eq!(s.format, Some(FormatChoice::Json));
        assert_eq!(
            parse(&["--log-format", "journald"])
                .expect("journald")
                .log
                .log_format,
            Some(FormatChoice::Journald)
        );
        // refused at parse time: a bad level, a bad filter, both forms at once, a bad format
        assert!(parse(&["--log-level", "loud"]).is_err());
        assert!(parse(&["--log-filter", "tollgate=loud"]).is_err());
        assert!(parse(&["--log-level", "info", "--log-filter", "warn"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
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
