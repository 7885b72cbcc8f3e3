//! `tollgate lab up|down|status|run`: the network-namespace lab.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::lab;

/// Arguments of `tollgate lab`.
#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub action: LabAction,
}

/// What to do with the lab.
#[derive(Debug, Subcommand)]
pub enum LabAction {
    /// Create the namespaces and start the servers and the appliance; leave them running.
    Up {
        /// The shape: `one-arm` (Azure's single-NIC NVA behind a UDR, in an emulated VNet
        /// fabric with a 1:1 public IP and a platform address) or `two-arm`.
        #[arg(long, default_value = "one-arm")]
        topology: lab::Topology,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Worker threads of the appliance (default: the configuration's).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Remove what `lab up` created (every recorded lab, or the one with this prefix).
    Down {
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Show the recorded labs.
    Status,
    /// Up, real traffic through the appliance, a PASS/FAIL report, down. Exit 1 if a check failed.
    Run {
        /// The shape: `one-arm` (Azure's single-NIC NVA behind a UDR, in an emulated VNet
        /// fabric with a 1:1 public IP and a platform address) or `two-arm`.
        #[arg(long, default_value = "one-arm")]
        topology: lab::Topology,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Worker threads of the appliance (default: the configuration's).
        #[arg(long)]
        workers: Option<usize>,
    },
}

/// The configuration for `topology` from the repository's `config/`; the two-arm lab falls
/// back to `tests/lab.toml`.
fn default_config(c: Option<PathBuf>, topology: lab::Topology) -> PathBuf {
    c.unwrap_or_else(|| {
        let main = Path::new(topology.default_config());
        if main.exists() || topology != lab::Topology::TwoArm {
            main.to_path_buf()
        } else {
            PathBuf::from("tests/lab.toml")
        }
    })
}

fn abs(p: PathBuf) -> PathBuf {
    std::fs::canonicalize(&p).unwrap_or(p)
}

/// Runs a lab action.
pub fn main(a: LabArgs) -> ExitCode {
    let exe = crate::appliance_binary();
    match a.action {
        LabAction::Run {
            config,
            workers,
            topology,
        } => {
            let stop = match tollgate::control::daemon::stop_on_signals() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("tollgate lab: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match lab::run_lab(
                &exe,
                &abs(default_config(config, topology)),
                topology,
                workers,
                stop,
            ) {
                Ok((report, ok)) => {
                    print!("{report}");
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("tollgate lab: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        LabAction::Up {
            config,
            workers,
            topology,
        } => {
            let cfg = abs(default_config(config, topology));
            let r = (|| -> Result<(), lab::LabError> {
                let mut l = lab::Lab::up_with(&lab::new_prefix(), topology)?;
                l.start_servers()?;
                l.warm_neighbours();
                let log = l.dir.join("appliance.log");
                let exe_s = exe.to_string_lossy().to_string();
                let cfg_s = cfg.to_string_lossy().to_string();
                let w = workers.map(|w| w.to_string());
                let mut args = vec![exe_s.as_str(), "run", "--config", cfg_s.as_str()];
                if let Some(w) = &w {
                    args.extend(["--workers", w.as_str()]);
                }
                let unit = lab::as_unit(&args);
                let args: Vec<&str> = unit.iter().map(String::as_str).collect();
                l.spawn("appliance", "app", &args, &log)?;
                if !l.wait_spawned_appliance(Duration::from_secs(10)) {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(lab::LabError::Appliance(text.trim().to_string()));
                }
                println!("lab {} is up (appliance log: {})", l.prefix, log.display());
                println!(
                    "try: ip netns exec {}node1 curl http://203.0.113.10/",
                    l.prefix
                );
                let state = l.detach()?;
                println!("state: {}; remove with: tollgate lab down", state.display());
                Ok(())
            })();
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tollgate lab: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        LabAction::Down { prefix } => match lab::down_recorded(prefix.as_deref()) {
            Ok(v) if v.is_empty() => {
                println!("no lab was up");
                ExitCode::SUCCESS
            }
            Ok(v) => {
                println!("removed {}", v.join(" "));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tollgate lab: {e}");
                ExitCode::FAILURE
            }
        },
        LabAction::Status => {
            print!("{}", lab::status_recorded());
            ExitCode::SUCCESS
        }
    }
}
