//! The configuration loader `tollgate check` uses (`config::load_file` reads the file, then
//! `config::load_str`) on arbitrary text: it must never panic, and it keeps its promises:
//! either a complete configuration within the documented ranges, or at least one error; every
//! diagnostic names the origin and a position inside the text (1-based line, column at most one
//! past the line's last character), sorted by position; a position that points at no token
//! (line 1, column 1 of a text that starts with blank or comment) belongs to one of the few
//! file-level messages, which are about something missing rather than something written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::config::{load_str, ConfigErrors, Diagnostic, Severity};

#[path = "../../tests/engine_util/kit.rs"]
mod kit;
use kit::WorkerKit;

const ORIGIN: &str = "fuzz.toml";

/// Diagnostics about what the file lacks, reported at 1:1 because nothing in it can be named.
const FILE_LEVEL: [&str; 5] = [
    "no [[interface]] is configured",
    "more than 255 interfaces are configured",
    "appliance.icmp_source is not set",
    "snat.addresses is empty",
    "(the default; set dns.source_port)",
];

fn check_position(text: &str, lines: &[&str], d: &Diagnostic) {
    assert_eq!(d.origin, ORIGIN, "{d}");
    assert!(
        d.line >= 1 && d.line <= lines.len(),
        "line out of the text: {d}"
    );
    let chars = lines[d.line - 1].chars().count();
    assert!(
        d.col >= 1 && d.col <= chars + 1,
        "column out of line {}: {d}",
        d.line
    );
    // TOML's blanks: space, tab, newline (LF or CRLF); a comment starts with '#'.
    let starts_token =
        !(text.is_empty() || text.starts_with([' ', '\t', '\n', '#']) || text.starts_with("\r\n"));
    if (d.line, d.col) == (1, 1) && !starts_token {
        assert!(
            FILE_LEVEL.iter().any(|m| d.message.contains(m)),
            "a diagnostic without a position: {d}"
        );
    }
    // Display is what `tollgate check` prints.
    let shown = d.to_string();
    assert!(shown.starts_with(&format!("{ORIGIN}:{}:{}: ", d.line, d.col)));
}

fn sorted(ds: &[Diagnostic]) -> bool {
    ds.windows(2)
        .all(|w| (w[0].line, w[0].col) <= (w[1].line, w[1].col))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The positions are computed like LineIndex: lines split at '\n' (a '\r' before it is part
    // of the line).
    let lines: Vec<&str> = text.split('\n').collect();
    match load_str(&text, ORIGIN) {
        Ok(l) => {
            for w in &l.warnings {
                assert_eq!(w.severity, Severity::Warning);
                check_position(&text, &lines, w);
            }
            assert!(sorted(&l.warnings));
            let e = &l.engine;
            assert!(!e.interfaces.is_empty() && e.interfaces.len() <= 255);
            assert!(e.interfaces.iter().all(|i| (576..=9216).contains(&i.mtu)));
            assert!(!e.nat.public_addrs.is_empty());
            assert!(e.nat.port_min >= 1 && e.nat.port_min <= e.nat.port_max);
            assert!(e.max_flows_per_worker >= 1);
            assert!(e.mss_clamp.is_none_or(|m| (536..=9176).contains(&m)));
            assert!(l.workers >= 1);
            assert!(l.dns.min_refresh <= l.dns.max_refresh);
            // A valid configuration builds a worker (the flow limit and the public addresses
            // capped to keep each input fast): routes, DNAT reservations and slices.
            if e.nat.public_addrs.len() <= 4 {
                let mut cfg = e.clone();
                cfg.max_flows_per_worker = cfg.max_flows_per_worker.min(64);
                let w = WorkerKit::new()
                    .config(cfg)
                    .policy(l.policy.clone())
                    .seed(1)
                    .build();
                assert_eq!(w.flow_count(), 0);
            }
        }
        Err(ConfigErrors::Unreadable { .. }) => panic!("load_str never reads a file"),
        Err(ConfigErrors::Invalid {
            origin,
            errors,
            warnings,
        }) => {
            assert_eq!(origin, ORIGIN);
            assert!(!errors.is_empty(), "invalid, with no error");
            for d in &errors {
                assert_eq!(d.severity, Severity::Error);
                check_position(&text, &lines, d);
            }
            for d in &warnings {
                assert_eq!(d.severity, Severity::Warning);
                check_position(&text, &lines, d);
            }
            assert!(sorted(&errors) && sorted(&warnings));
        }
    }
});
