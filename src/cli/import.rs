//! `tollgate import azure-policy FILE... [-o OUT] [--into BASE] [--policy NAME] [--public-ip A=B]`.
//!
//! Exit codes: 0 everything was carried over; 1 the output was written but something was left
//! out, narrowed, widened (a deny) or is not enforced (listed on stderr and at the top of the
//! output); 2 usage error, unreadable input, or nothing to import; 3 with `--into`, the output
//! was written but `tollgate check` finds errors in it (listed on stderr).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::tools::import::azure::{self, Base, Options};

/// `tollgate import SOURCE`.
#[derive(Debug, Subcommand)]
pub enum ImportCmd {
    /// An Azure Firewall Policy: an ARM template (or Bicep compiled to JSON), a rule collection
    /// group, or `az network firewall policy rule-collection-group list` output; IP groups and
    /// the parent policy (basePolicy) from the same or further files.
    AzurePolicy(AzurePolicyArgs),
}

/// Arguments of `tollgate import azure-policy`.
#[derive(Debug, Args)]
pub struct AzurePolicyArgs {
    /// JSON files: the policy, its rule collection groups, its IP groups, its parent policy.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write the configuration here (default: stdout).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// A Tollgate configuration with the appliance, interfaces and SNAT (and no rules) to write
    /// the rules into; the result is then checked as `tollgate check` would.
    #[arg(long)]
    pub into: Option<PathBuf>,
    /// The policy to import when the input holds several.
    #[arg(long)]
    pub policy: Option<String>,
    /// PUBLIC=ADDRESS: the firewall's public IP a DNAT rule names, and the Tollgate address
    /// that stands for it (in Azure, the private IP of the NIC configuration it maps to).
    #[arg(long = "public-ip", value_parser = parse_pair)]
    pub public_ips: Vec<(Ipv4Addr, Ipv4Addr)>,
}

fn parse_pair(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let (a, b) = s
        .split_once('=')
        .ok_or_else(|| format!("\"{s}\" is not PUBLIC=ADDRESS"))?;
    let p = |x: &str| {
        x.trim()
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("\"{x}\" is not an IPv4 address"))
    };
    Ok((p(a)?, p(b)?))
}

/// Runs `import`.
pub fn run(cmd: &ImportCmd) -> ExitCode {
    match cmd {
        ImportCmd::AzurePolicy(a) => azure_policy(a),
    }
}

fn azure_policy(a: &AzurePolicyArgs) -> ExitCode {
    let fail = |m: String| {
        eprintln!("tollgate import azure-policy: {m}");
        ExitCode::from(2)
    };
    let mut inputs = Vec::new();
    for f in &a.files {
        let name = f.display().to_string();
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => return fail(format!("{name}: {e}")),
        };
        match serde_json::from_str(&text) {
            Ok(v) => inputs.push((name, v)),
            Err(e) => return fail(format!("{name}:{}:{}: {e}", e.line(), e.column())),
        }
    }
    let base = match &a.into {
        Some(p) => {
            let name = p.display().to_string();
            match std::fs::read_to_string(p) {
                Ok(t) => match Base::parse(&name, &t) {
                    Ok(b) => Some(b),
                    Err(e) => return fail(e.to_string()),
                },
                Err(e) => return fail(format!("{name}: {e}")),
            }
        }
        None => None,
    };
    let opts = Options {
        policy: a.policy.clone(),
        public_ips: a.public_ips.clone(),
        base,
    };
    let out = match azure::import(&inputs, &opts) {
        Ok(o) => o,
        Err(e) => return fail(e.to_string()),
    };
    let dest = a
        .output
        .as_ref()
        .map_or("stdout".to_string(), |p| p.display().to_string());
    match &a.output {
        Some(p) => {
            if let Err(e) = std::fs::write(p, &out.toml) {
                return fail(format!("{dest}: {e}"));
            }
        }
        None => print!("{}", out.toml),
    }
    for f in &out.findings {
        eprintln!("{f}");
    }
    let lossy = out.left_out();
    eprintln!(
        "tollgate import azure-policy: {} of {} rule(s) written to {dest}; {}",
        out.rules_out,
        out.rules_in,
        if lossy {
            "some parts were NOT carried over as in Azure (listed above)"
        } else {
            "everything was carried over"
        }
    );
    if a.into.is_some() {
        if let Err(e) = crate::config::load_str(&out.toml, &dest) {
            for d in e.errors() {
                eprintln!("{d}");
            }
            eprintln!("tollgate import azure-policy: {dest} does not pass tollgate check");
            return ExitCode::from(3);
        }
    }
    ExitCode::from(u8::from(lossy))
}
