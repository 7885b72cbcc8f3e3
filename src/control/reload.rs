//! Hot reload: on SIGHUP or when the configuration file changes, the file is parsed and
//! compiled on this thread (off the packet path) and, if valid, its policy is published to the
//! workers, which adopt it between batches: established flows the new rules still allow keep
//! going, flows they deny are cut (TCP reset both ways) at their next packet. A broken file is
//! rejected with every error and its file:line:col, and the running configuration stays.
//! Settings that cannot change live (interfaces, routes, SNAT pool, inside prefixes) are
//! reported as needing a restart and left as they run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::datapath::updates::PolicyCell;
use crate::datapath::EngineConfig;

/// The outcome of one reload attempt, as logged.
pub fn reload_once(
    path: &std::path::Path,
    running: &EngineConfig,
    cell: &PolicyCell,
) -> Result<String, String> {
    match crate::config::load_file(path) {
        Ok(l) => {
            let mut notes = Vec::new();
            let e = &l.engine;
            if e.interfaces != running.interfaces
                || e.routes != running.routes
                || e.nat != running.nat
                || e.inside_prefixes != running.inside_prefixes
            {
                notes.push("interface, route, SNAT or inside-prefix settings changed: they need a restart and were left as they run");
            }
            cell.publish(l.policy.clone());
            let mut msg = format!(
                "tollgate: reload: {} applied (policy generation {}); flows the new rules deny are cut at their next packet",
                path.display(),
                cell.generation()
            );
            for n in notes {
                msg.push_str(&format!("\ntollgate: reload: warning: {n}"));
            }
            for w in &l.warnings {
                msg.push_str(&format!("\ntollgate: {w}"));
            }
            Ok(msg)
        }
        Err(err) => {
            let mut msg = format!(
                "tollgate: reload: {} rejected, the running configuration stays: {err}",
                path.display()
            );
            for d in err.errors() {
                msg.push_str(&format!("\n  {d}"));
            }
            Err(msg)
        }
    }
}

fn mtime(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Watches `hup` (set by SIGHUP) and the file's modification time (every 100 ms) until `stop`.
pub fn spawn(
    path: PathBuf,
    running: EngineConfig,
    cell: Arc<PolicyCell>,
    hup: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tollgate-reload".into())
        .spawn(move || {
            let mut seen = mtime(&path);
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let changed = {
                    let m = mtime(&path);
                    let c = m.is_some() && m != seen;
                    if c {
                        // Let the writer finish before reading.
                        std::thread::sleep(Duration::from_millis(100));
                        seen = mtime(&path);
                    }
                    c
                };
                if hup.swap(false, Relaxed) || changed {
                    match reload_once(&path, &running, &cell) {
                        Ok(m) | Err(m) => eprintln!("{m}"),
                    }
                }
            }
        })
}
