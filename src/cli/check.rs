//! `tollgate check FILE`: validate a configuration and print every diagnostic.
//!
//! Exit codes: 0 valid (warnings allowed unless `--deny-warnings`), 1 invalid, 2 usage or I/O
//! error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::{load_file, ConfigErrors};

/// Arguments of `tollgate check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file.
    pub file: PathBuf,
    /// Fail (exit 1) when there are warnings.
    #[arg(long)]
    pub deny_warnings: bool,
}

/// Runs `check`, printing to stdout; returns the exit code.
pub fn run(args: &CheckArgs) -> ExitCode {
    let (code, out) = check_report(args);
    print!("{out}");
    ExitCode::from(code)
}

/// The report text and exit code of `check` (0 ok, 1 errors, 2 unreadable).
pub fn check_report(args: &CheckArgs) -> (u8, String) {
    let name = args.file.display().to_string();
    let mut out = String::new();
    match load_file(&args.file) {
        Ok(l) => {
            for w in &l.warnings {
                out.push_str(&format!("{w}\n"));
            }
            let n = l.warnings.len();
            let fail = args.deny_warnings && n > 0;
            out.push_str(&format!(
                "{name}: {} ({} rules, 0 errors, {n} warning(s){})\n",
                if fail { "rejected" } else { "ok" },
                l.policy.rules().len(),
                if fail { ", --deny-warnings" } else { "" },
            ));
            (u8::from(fail), out)
        }
        Err(e @ ConfigErrors::Unreadable { .. }) => {
            out.push_str(&format!("{e}\n"));
            (2, out)
        }
        Err(e) => {
            let mut all: Vec<_> = e.errors().iter().chain(e.warnings()).collect();
            all.sort_by_key(|d| (d.line, d.col));
            for d in all {
                out.push_str(&format!("{d}\n"));
            }
            out.push_str(&format!(
                "{name}: invalid ({} error(s), {} warning(s))\n",
                e.errors().len(),
                e.warnings().len()
            ));
            (1, out)
        }
    }
}
