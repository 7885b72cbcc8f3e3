//! Command-line interface: thin argument parsing that calls into the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;

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
    /// Benchmarks (`bench snat`: the SNAT simulator).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
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
        Command::Bench(b) => bench::main(&b),
    }
}
