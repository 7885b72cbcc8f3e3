//! Hot reload: on SIGHUP or when the configuration file changes, the file is parsed and
//! compiled on this thread (off the packet path) and, if valid, its policy is published to the
//! workers, which adopt it between batches: established flows the new rules still allow keep
//! going, flows they deny are cut (TCP reset both ways) at their next packet. A broken file is
//! rejected with every error and its file:line:col, and the running configuration stays.
//! Settings that cannot change live (interfaces, routes, SNAT pool, inside prefixes) are
//! reported as needing a restart and left as they run.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::config::Loaded;
use crate::datapath::updates::PolicyCell;
use crate::datapath::EngineConfig;

/// The configuration the daemon runs: its file, the settings fixed at start, the policy cell
/// the workers follow, and the last loaded file (for `tollgate explain` against it). Reloads
/// from SIGHUP, a file change and `tollgate reload` go through [`LiveConfig::reload`], one at
/// a time.
pub struct LiveConfig {
    pub path: PathBuf,
    running: EngineConfig,
    running_dns: crate::config::DnsSettings,
    /// The DNAT claims the host tables were built from at start.
    running_dnat: Vec<super::host::DnatClaim>,
    pub cell: Arc<PolicyCell>,
    loaded: Mutex<Arc<Loaded>>,
    one_at_a_time: Mutex<()>,
    /// What the resolver last found for each destination FQDN (kept across reloads).
    resolved: Mutex<BTreeMap<String, Vec<Ipv4Addr>>>,
}

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConfig")
            .field("path", &self.path)
            .field("generation", &self.cell.generation())
            .finish()
    }
}

impl LiveConfig {
    pub fn new(path: PathBuf, loaded: Loaded, cell: Arc<PolicyCell>) -> Arc<Self> {
        Arc::new(LiveConfig {
            path,
            running: loaded.engine.clone(),
            running_dns: loaded.dns.clone(),
            running_dnat: super::host::dnat_claims(loaded.policy.rules()),
            cell,
            loaded: Mutex::new(Arc::new(loaded)),
            one_at_a_time: Mutex::new(()),
            resolved: Mutex::new(BTreeMap::new()),
        })
    }

    /// `l` with the resolved addresses of its destination FQDNs compiled into its policy.
    fn with_resolved(&self, mut l: Loaded) -> Loaded {
        let names = l.policy.destination_names();
        if names.is_empty() {
            return l;
        }
        let map = self
            .resolved
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        l.fqdn_addresses = names
            .iter()
            .filter_map(|n| map.get(n).map(|a| (n.clone(), a.clone())))
            .collect();
        let fa = &l.fqdn_addresses;
        l.policy = Arc::new(
            l.policy
                .with_resolved(|n| fa.get(n).cloned().unwrap_or_default()),
        );
        l
    }

    /// Records new addresses for destination FQDNs (names absent from `update` keep theirs),
    /// recompiles the running policy with them and publishes it: established flows keep going
    /// as after a reload, flows the new sets no longer allow are cut at their next packet.
    /// Returns the new policy generation.
    pub fn apply_resolved(&self, update: &BTreeMap<String, Vec<Ipv4Addr>>) -> u64 {
        let _one = self.one_at_a_time.lock();
        if let Ok(mut m) = self.resolved.lock() {
            for (k, v) in update {
                m.insert(k.clone(), v.clone());
            }
        }
        let cur = (*self.loaded()).clone();
        let l = self.with_resolved(cur);
        self.cell.publish(l.policy.clone());
        if let Ok(mut cur) = self.loaded.lock() {
            *cur = Arc::new(l);
        }
        self.cell.generation()
    }

    /// The configuration last applied.
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .lock()
            .map(|l| l.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Reads, validates and compiles the file; if valid, publishes its policy to the workers.
    /// The outcome says what happened (with every file:line:col on error), for the log and
    /// for `tollgate reload`.
    pub fn reload(&self) -> ReloadOutcome {
        let _one = self.one_at_a_time.lock();
        let path = &self.path;
        match crate::config::load_file(path) {
            Ok(l) => {
                let l = self.with_resolved(l);
                let mut notes = Vec::new();
                let e = &l.engine;
                let r = &self.running;
                if e.interfaces != r.interfaces
                    || e.routes != r.routes
                    || e.nat != r.nat
                    || e.inside_prefixes != r.inside_prefixes
                {
                    notes.push("interface, route, SNAT or inside-prefix settings changed: they need a restart and were left as they run");
                }
                if super::host::dnat_claims(l.policy.rules()) != self.running_dnat {
                    notes.push("DNAT rules' public addresses or ports changed: the host's nftables tables keep the kernel off the ones the daemon started with until a restart (a new DNAT port outside the SNAT range may meet the kernel's RST)");
                }
                if l.dns != self.running_dns {
                    notes.push(
                        "[dns] settings changed: they need a restart and were left as they run",
                    );
                }
                self.cell.publish(l.policy.clone());
                let summary = format!(
                    "reload: {} applied (policy generation {}); flows the new rules deny are cut at their next packet",
                    path.display(),
                    self.cell.generation()
                );
                let warnings = l.warnings.clone();
                if let Ok(mut cur) = self.loaded.lock() {
                    *cur = Arc::new(l);
                }
                ReloadOutcome {
                    applied: true,
                    summary,
                    notes,
                    warnings,
                }
            }
            Err(err) => {
                let mut summary = format!(
                    "reload: {} rejected, the running configuration stays: {err}",
                    path.display()
                );
                for d in err.errors() {
                    summary.push_str(&format!("\n  {d}"));
                }
                ReloadOutcome {
                    applied: false,
                    summary,
                    notes: Vec::new(),
                    warnings: Vec::new(),
                }
            }
        }
    }
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Whether the file was applied (else it was rejected and the running configuration stays).
    pub applied: bool,
    /// `reload: PATH applied (policy generation N); ...`, or `reload: PATH rejected, ...: WHY`
    /// followed by each error (`\n  FILE:LINE:COL: error: ...`).
    pub summary: String,
    /// Changed settings that need a restart and were left as they run.
    pub notes: Vec<&'static str>,
    /// The applied file's warnings.
    pub warnings: Vec<crate::config::Diagnostic>,
}

impl ReloadOutcome {
    /// What `tollgate reload` prints: `tollgate: ` and the summary, then a line per note and
    /// warning.
    pub fn text(&self) -> String {
        let mut msg = format!("tollgate: {}", self.summary);
        for n in &self.notes {
            msg.push_str(&format!("\ntollgate: reload: warning: {n}"));
        }
        for w in &self.warnings {
            msg.push_str(&format!("\ntollgate: {w}"));
        }
        msg
    }

    /// Logs the outcome: the summary at info when applied, at error when rejected (`how`, e.g.
    /// ` (asked over the admin socket)`, ends its first line), then each note and warning at
    /// warning level.
    pub fn log(&self, how: &str) {
        let (first, rest) = match self.summary.split_once('\n') {
            Some((f, r)) => (f, format!("\n{r}")),
            None => (self.summary.as_str(), String::new()),
        };
        if self.applied {
            log::info!("{first}{how}{rest}");
        } else {
            log::error!("{first}{how}{rest}");
        }
        for n in &self.notes {
            log::warn!("reload: {n}");
        }
        for w in &self.warnings {
            super::logging::config_warning(w);
        }
    }
}

fn mtime(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Watches `hup` (set by SIGHUP) and the file's modification time (every 100 ms) until `stop`.
pub fn spawn(
    live: Arc<LiveConfig>,
    hup: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tollgate-reload".into())
        .spawn(move || {
            crate::io::caps::enter_control_thread();
            let path = live.path.clone();
            let mut seen = mtime(&path);
            // The service tags file the configuration names: a newer one is a reload too.
            let mut tags = live.loaded().service_tags_file.clone();
            let mut seen_tags = tags.as_deref().and_then(mtime);
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
                let tags_changed = {
                    let m = tags.as_deref().and_then(mtime);
                    m.is_some() && m != seen_tags
                };
                if tags_changed {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let hupped = hup.swap(false, Relaxed);
                if hupped || changed || tags_changed {
                    log::debug!(
                        "reload: {} ({})",
                        path.display(),
                        if hupped {
                            "SIGHUP"
                        } else if changed {
                            "the file changed"
                        } else {
                            "the service tags file changed"
                        }
                    );
                    live.reload().log("");
                    tags = live.loaded().service_tags_file.clone();
                    seen_tags = tags.as_deref().and_then(mtime);
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_that_changes_a_dnat_port_says_the_host_tables_need_a_restart() {
        let lab = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab.toml");
        let text = std::fs::read_to_string(lab).expect("lab config");
        let dir = std::env::temp_dir().join(format!("tollgate-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("tollgate.toml");
        std::fs::write(&path, &text).expect("write");
        let loaded = crate::config::load_file(&path).expect("lab config loads");
        let cell = PolicyCell::new(loaded.policy.clone());
        let live = LiveConfig::new(path.clone(), loaded, cell);
        // the same file again: nothing to say about DNAT
        let same = live.reload();
        assert!(same.applied, "same file reloads: {}", same.text());
        let same = same.text();
        assert!(!same.contains("DNAT rules"), "{same}");
        // the DNAT rule moves from 8080 to 8443
        assert!(text.contains("destination_ports = [\"8080\"]"));
        std::fs::write(
            &path,
            text.replace(
                "destination_ports = [\"8080\"]",
                "destination_ports = [\"8443\"]",
            ),
        )
        .expect("write");
        let moved = live.reload();
        assert!(moved.applied, "changed file reloads: {}", moved.text());
        let moved = moved.text();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            moved.contains("warning: DNAT rules' public addresses or ports changed"),
            "{moved}"
        );
    }
}
