//! `tollgate flows`, `stats`, `snat`, `reload`: clients of the running daemon's admin socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use crate::control::admin::{default_socket_path, request};
use crate::io::IoStats;

/// Where the daemon listens.
#[derive(Debug, Args, Clone)]
pub struct SocketArg {
    /// The daemon's admin socket (`appliance.admin_socket` in its configuration; by default
    /// /run/tollgate/admin.sock, or admin-NAME.sock beside it when run in the named network
    /// namespace NAME, as with `ip netns exec NAME`).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tollgate flows`.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Only flows whose inside source is in this prefix (or address).
    #[arg(long)]
    pub src: Option<String>,
    /// Only flows whose original destination is in this prefix (or address).
    #[arg(long)]
    pub dst: Option<String>,
    /// syn_sent, established, closing, time_wait, closed, udp, icmp, inspecting or revoked.
    #[arg(long)]
    pub state: Option<String>,
    /// tcp, udp or icmp.
    #[arg(long)]
    pub proto: Option<String>,
    /// At most this many flows.
    #[arg(long, default_value_t = 1000)]
    pub limit: u64,
    #[command(flatten)]
    pub sock: SocketArg,
}

/// Arguments of `tollgate snat`.
#[derive(Debug, Args)]
pub struct SnatArgs {
    /// How many inside hosts and destinations to list.
    #[arg(long, default_value_t = 10)]
    pub top: u64,
    #[command(flatten)]
    pub sock: SocketArg,
}

fn call(sock: &SocketArg, req: Value) -> Result<Value, ExitCode> {
    let path = sock.socket.clone().unwrap_or_else(default_socket_path);
    match request(&path, &req) {
        Ok(v) => match v.get("error").and_then(Value::as_str) {
            Some(e) => {
                eprintln!("tollgate: {e}");
                Err(ExitCode::from(2))
            }
            None => Ok(v),
        },
        Err(e) => {
            eprintln!("tollgate: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// Asks the daemon and shows the answer: JSON with `--json`, else `render`'s text. Exit 1 when
/// the daemon says `"ok": false` (a rejected reload), 2 for a refused request.
fn run(sock: &SocketArg, req: Value, render: impl FnOnce(&Value)) -> ExitCode {
    let v = match call(sock, req) {
        Ok(v) => v,
        Err(c) => return c,
    };
    if sock.json {
        print_json(&v);
    } else {
        render(&v);
    }
    if v.get("ok").and_then(Value::as_bool) == Some(false) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(o) => o.to_string(),
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `tollgate flows`: the live flows, like `conntrack -L`.
pub fn flows(a: &FlowsArgs) -> ExitCode {
    let req = json!({
        "cmd": "flows", "src": a.src, "dst": a.dst, "state": a.state, "proto": a.proto,
        "limit": a.limit,
    });
    run(&a.sock, req, print_flows)
}

fn print_flows(v: &Value) {
    let empty = Vec::new();
    let fl = v.get("flows").and_then(Value::as_array).unwrap_or(&empty);
    println!(
        "{:<5} {:<12} {:<22} {:<22} {:<22} {:>8} {:>8} {:>7} {:>7}  rule",
        "proto", "state", "source", "destination", "snat", "pkts out", "pkts in", "age s", "ttl s"
    );
    for f in fl {
        let snat = s(f, "translated_source");
        let shown = if snat == s(f, "source") {
            "-".into()
        } else {
            snat
        };
        println!(
            "{:<5} {:<12} {:<22} {:<22} {:<22} {:>8} {:>8} {:>7} {:>7}  {}",
            s(f, "protocol"),
            s(f, "state"),
            s(f, "source"),
            s(f, "destination"),
            shown,
            s(f, "packets_out"),
            s(f, "packets_in"),
            s(f, "age_secs"),
            s(f, "expires_in_secs"),
            s(f, "rule"),
        );
    }
    println!(
        "{} shown, {} matched, {} tracked{}",
        fl.len(),
        s(v, "matched"),
        s(v, "total"),
        match v.get("workers_not_answering").and_then(Value::as_u64) {
            Some(n) if n > 0 => format!(" ({n} worker(s) did not answer)"),
            _ => String::new(),
        }
    );
}

/// `tollgate stats`: counters summed over the workers.
pub fn stats(a: &SocketArg) -> ExitCode {
    run(a, json!({"cmd": "stats"}), print_stats)
}

fn print_stats(v: &Value) {
    for k in [
        "uptime_secs",
        "config",
        "policy_generation",
        "rx_packets",
        "rx_bytes",
        "tx_packets",
        "tx_bytes",
        "local_packets",
        "replies",
        "flows",
        "flows_created",
        "flows_expired",
        "flows_removed",
        "snat_eim_collision_moved",
        "snat_time_wait_reused",
        "decision_events_suppressed",
    ] {
        println!("{k:<28} {}", s(v, k));
    }
    // null when the host is left open ([host] policy = "open")
    if let Some(n) = v.get("host_closed_drops").and_then(Value::as_u64) {
        println!("{:<28} {n}", "host_closed_drops");
    }
    if let Some(d) = v.get("drops").and_then(Value::as_object) {
        for (r, n) in d {
            println!("{:<28} {n}", format!("drop.{r}"));
        }
    }
    print!("{}", io_table(v));
}

/// The `io` list of a `stats` answer as a table: one row per I/O counter (in
/// [`IoStats::FIELDS`] order), one column per interface; empty without the list.
fn io_table(v: &Value) -> String {
    let Some(io) = v
        .get("io")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    else {
        return String::new();
    };
    let names: Vec<String> = io.iter().map(|x| s(x, "interface")).collect();
    let widths: Vec<usize> = names.iter().map(|n| n.len().max(10)).collect();
    let mut out = format!("{:<28}", "io (per interface)");
    for (n, w) in names.iter().zip(&widths) {
        out.push_str(&format!(" {n:>w$}"));
    }
    out.push('\n');
    for (k, _) in IoStats::FIELDS {
        out.push_str(&format!("{:<28}", format!("  {k}")));
        for (x, w) in io.iter().zip(&widths) {
            out.push_str(&format!(" {:>w$}", s(x, k)));
        }
        out.push('\n');
    }
    out
}

/// `tollgate snat`: port use per public address, the hosts holding most, the busiest
/// destinations.
pub fn snat(a: &SnatArgs) -> ExitCode {
    run(&a.sock, json!({"cmd": "snat", "top": a.top}), print_snat)
}

fn print_snat(v: &Value) {
    let empty = Vec::new();
    let arr = |k: &str| v.get(k).and_then(Value::as_array).unwrap_or(&empty).clone();
    println!(
        "{:<16} {:<6} {:>10} {:>8} {:>8}",
        "address", "proto", "ports used", "ports", "use"
    );
    for x in arr("addresses") {
        let u = x.get("utilisation").and_then(Value::as_f64).unwrap_or(0.0);
        println!(
            "{:<16} {:<6} {:>10} {:>8} {:>7.1}%",
            s(&x, "address"),
            s(&x, "protocol"),
            s(&x, "ports_used"),
            s(&x, "ports"),
            u * 100.0
        );
    }
    println!("\ntop inside hosts by ports held:");
    for x in arr("top_hosts") {
        println!("  {:<16} {}", s(&x, "host"), s(&x, "ports"));
    }
    let c = v.get("destinations_census");
    let n = |k: &str| {
        c.and_then(|c| c.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    if c.and_then(|c| c.get("exact")).and_then(Value::as_bool) == Some(false) {
        println!(
            "\nbusiest destinations (SNATed flows, estimated from a sample of {} of {} flows):",
            n("flows_seen"),
            n("flows")
        );
    } else {
        println!("\nbusiest destinations (SNATed flows):");
    }
    for x in arr("top_destinations") {
        println!(
            "  {:<22} {:<5} {}",
            s(&x, "destination"),
            s(&x, "protocol"),
            s(&x, "flows")
        );
    }
}

/// `tollgate reload`: asks the daemon to reload its file now and prints the outcome; exit 1
/// when the file was rejected (the running configuration stays).
pub fn reload(a: &SocketArg) -> ExitCode {
    run(a, json!({"cmd": "reload"}), |v| {
        println!("{}", s(v, "message"))
    })
}

/// `tollgate explain` without `--config`: against the running daemon's configuration.
pub fn explain_live(
    sock: &SocketArg,
    src: &str,
    dst: &str,
    proto: &str,
    sni: Option<&str>,
) -> ExitCode {
    let req = json!({"cmd": "explain", "src": src, "dst": dst, "proto": proto, "sni": sni});
    run(sock, req, |v| print!("{}", s(v, "text")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_table_has_a_row_per_counter_and_a_column_per_interface() {
        let v = json!({"io": [
            {"interface": "tg-in", "rx_oversize": 12, "link_errors": 1},
            {"interface": "a-much-longer-name", "rx_oversize": 0},
        ]});
        let t = io_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 1 + IoStats::COUNT, "{t}");
        assert!(lines[0].starts_with("io (per interface)"), "{t}");
        assert!(lines[0].ends_with("     tg-in a-much-longer-name"), "{t}");
        let row = |k: &str| {
            lines
                .iter()
                .find(|l| l.trim_start().starts_with(&format!("{k} ")))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>())
                .unwrap_or_else(|| panic!("{k} missing: {t}"))
        };
        assert_eq!(row("rx_oversize"), ["12", "0"]);
        assert_eq!(row("link_errors"), ["1", "-"]);
        assert_eq!(io_table(&json!({})), "");
    }
}
