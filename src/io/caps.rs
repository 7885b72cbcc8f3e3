//! Dropping Linux capabilities once the dataplane is up. Capabilities belong to threads, so each
//! thread drops its own: workers after opening their rings keep none; control threads (metrics,
//! admin, reload, logs, neighbours) keep none; the main thread keeps only CAP_NET_ADMIN, which
//! undoing the host preparation at exit needs (nft, ethtool, sysctls), and so does the one
//! thread that reads the closed host policy's nftables counter on request (`tg-host-counter`).
//! The bounding set is cut too, so a program these threads run (nft) can never regain more.

use caps::{CapSet, Capability, CapsHashSet};

/// Keeps only `keep` on the calling thread: effective, permitted, inheritable, ambient and
/// bounding sets. Errors (e.g. not running with capabilities at all) are returned, not fatal.
pub fn retain_on_this_thread(keep: &[Capability]) -> Result<(), caps::errors::CapsError> {
    let keep: CapsHashSet = keep.iter().copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, still effective here. Without
    // it (e.g. systemd's CapabilityBoundingSet already cut it) the bounding set stays as the
    // service manager set it, and the sets below are still cleared.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for c in caps::all() {
            if !keep.contains(&c) && caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, c)?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    Ok(())
}

/// Drops every capability of the calling thread.
pub fn drop_all_on_this_thread() -> Result<(), caps::errors::CapsError> {
    retain_on_this_thread(&[])
}

/// What the main thread keeps: undoing the host preparation needs CAP_NET_ADMIN.
pub const MAIN_THREAD_KEEPS: [Capability; 1] = [Capability::CAP_NET_ADMIN];

/// The effective capability mask of one thread, from `/proc/<pid>/task/<tid>/status` (for
/// tests and `tollgate stats`).
pub fn effective_mask(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

static CONTROL_THREADS_DROP: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Asks every control thread started from now on to drop its capabilities (the daemon sets
/// this; tests that run the pieces in-process leave it off).
pub fn control_threads_drop(on: bool) {
    CONTROL_THREADS_DROP.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Called first by every control thread (metrics, admin, reload, logs, neighbours, notify).
pub fn enter_control_thread() {
    if CONTROL_THREADS_DROP.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = drop_all_on_this_thread();
    }
}
