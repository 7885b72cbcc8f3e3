//! `tollgate explain`: how the configuration decides one flow, and what almost matched.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::load_file;
use crate::policy::FlowQuery;
pub use crate::tools::explain::explain;
use crate::tools::explain::parse_query;

/// Arguments of `tollgate explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The configuration file; without it, the running daemon's configuration (over its admin
    /// socket).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Source address, optionally with a port (IP or IP:PORT).
    #[arg(long)]
    pub src: String,
    /// Destination address and port (IP:PORT; the port may be left out for icmp).
    #[arg(long)]
    pub dst: String,
    /// tcp, udp or icmp.
    #[arg(long)]
    pub proto: String,
    /// Evaluate application rules with this FQDN (TLS SNI, HTTP Host or QUIC SNI).
    #[arg(long)]
    pub sni: Option<String>,
    #[command(flatten)]
    pub sock: super::admin::SocketArg,
}

/// Runs `explain`; exit code 0 on success (whatever the decision), 1 invalid config, 2 usage.
pub fn run(args: &ExplainArgs) -> ExitCode {
    let q = match parse_flow(args) {
        Ok(q) => q,
        Err(m) => {
            eprintln!("tollgate explain: {m}");
            return ExitCode::from(2);
        }
    };
    let Some(config) = &args.config else {
        return super::admin::explain_live(
            &args.sock,
            &args.src,
            &args.dst,
            &args.proto,
            args.sni.as_deref(),
        );
    };
    match load_file(config) {
        Ok(l) => {
            print!("{}", explain(&l, &q, args.sni.as_deref()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            for d in e.errors() {
                eprintln!("{d}");
            }
            ExitCode::from(if e.errors().is_empty() { 2 } else { 1 })
        }
    }
}

/// Parses the flow arguments.
pub fn parse_flow(args: &ExplainArgs) -> Result<FlowQuery, String> {
    parse_query(&args.src, &args.dst, &args.proto)
}
