//! The `tollgate-lab` command line (`tollgate lab ...` and `tollgate bench ...` run it).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod lab;

/// Tollgate's network-namespace lab and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "tollgate", bin_name = "tollgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The network-namespace lab: up, down, status, run.
    Lab(lab::LabArgs),
    /// Benchmarks (`bench snat`: the SNAT simulator; `bench snat-live`: real connections).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Runs the command line.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Lab(a) => lab::main(a),
        Command::Bench(b) => bench::main(&b),
    }
}
