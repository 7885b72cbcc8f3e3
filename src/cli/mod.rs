//! Command-line interface: thin argument parsing that calls into the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod admin;
pub mod check;
pub mod explain;
pub mod external;
pub mod import;
pub mod run;

/// Tollgate: a userspace firewall and SNAT router for egress behind a user-defined route.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the drop reasons the dataplane counts.
    Reasons,
    /// Validate a configuration file: print every error and warning with FILE:LINE:COL.
    Check(check::CheckArgs),
    /// Show how the configuration decides one flow, and which rules almost matched.
    Explain(explain::ExplainArgs),
    /// Write a configuration from another firewall's policy: `import azure-policy FILE...`
    /// (exit 1 when anything was not carried over).
    #[command(subcommand)]
    Import(import::ImportCmd),
    /// Run the appliance in the foreground until SIGTERM/SIGINT.
    Run(run::RunArgs),
    /// The network-namespace lab: up, down, status, run (runs the `tollgate-lab` binary).
    #[command(disable_help_flag = true)]
    Lab(external::Passthrough),
    /// The running daemon's flows (like `conntrack -L`), over its admin socket.
    Flows(admin::FlowsArgs),
    /// The running daemon's counters (packets, flows, drops by reason).
    Stats(admin::SocketArg),
    /// The running daemon's SNAT use per public address, top hosts and destinations.
    Snat(admin::SnatArgs),
    /// Makes the running daemon reload its configuration file now and prints the outcome.
    Reload(admin::SocketArg),
    /// Benchmarks: `bench snat` (the SNAT simulator), `bench snat-live` (real connections)
    /// (runs the `tollgate-lab` binary).
    #[command(disable_help_flag = true)]
    Bench(external::Passthrough),
}

/// Runs the command line; the exit code is documented in the README.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Reasons => {
            for r in crate::datapath::DropReason::ALL {
                println!("{}", r.as_str());
            }
            ExitCode::SUCCESS
        }
        Command::Check(a) => check::run(&a),
        Command::Explain(a) => explain::run(&a),
        Command::Import(c) => import::run(&c),
        Command::Run(a) => run::main(a),
        Command::Lab(a) => external::run("lab", a),
        Command::Bench(a) => external::run("bench", a),
        Command::Flows(a) => admin::flows(&a),
        Command::Stats(a) => admin::stats(&a),
        Command::Snat(a) => admin::snat(&a),
        Command::Reload(a) => admin::reload(&a),
    }
}
