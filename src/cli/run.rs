//! `tollgate run`: the foreground daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::control::daemon::{self, ServeOptions};

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
    /// Leave the interfaces' offload settings alone.
    #[arg(long)]
    pub keep_offloads: bool,
}

/// Runs the daemon until SIGTERM/SIGINT; exit code 0 on a clean stop, 1 on an error.
pub fn main(a: RunArgs) -> ExitCode {
    let opts = ServeOptions {
        pcap: a.pcap,
        offloads: !a.keep_offloads,
        ..ServeOptions::default()
    };
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
