//! `tollgate lab ...` and `tollgate bench ...`: the lab and the benchmarks are a separate
//! binary, `tollgate-lab` (crate `lab/`), so the appliance carries neither their code nor their
//! dependencies. These subcommands hand their arguments to it unchanged.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Args;

/// Everything after the subcommand, `--help` included, for `tollgate-lab`.
#[derive(Debug, Args)]
pub struct Passthrough {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// The name of the lab and bench binary.
pub const LAB_BINARY: &str = "tollgate-lab";

/// Where `tollgate-lab` is: beside this binary (where cargo and the packages put it), else on
/// the `PATH`.
fn lab_binary() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|me| me.parent().map(|d| d.join(LAB_BINARY)))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(LAB_BINARY))
                .find(|p| p.is_file())
        })
    })
}

/// Replaces this process with `tollgate-lab SUBCOMMAND ARGS...` (same PID, so signals and
/// waiting parents see the lab itself); tells how to get it when it is missing.
pub fn run(subcommand: &str, a: Passthrough) -> ExitCode {
    let Some(bin) = lab_binary() else {
        eprintln!(
            "tollgate: `tollgate {subcommand}` runs the {LAB_BINARY} binary, which is not beside this one nor on the PATH; build it with `cargo build --release --workspace` (the appliance image does not ship it)"
        );
        return ExitCode::from(2);
    };
    let mut cmd = Command::new(&bin);
    cmd.arg(subcommand).args(&a.args);
    // The appliance the lab starts is this binary, unless the caller already chose one.
    if std::env::var_os("TOLLGATE_BIN").is_none() {
        if let Ok(me) = std::env::current_exe() {
            cmd.env("TOLLGATE_BIN", me);
        }
    }
    let err = cmd.exec();
    eprintln!("tollgate: cannot run {}: {err}", bin.display());
    ExitCode::FAILURE
}
