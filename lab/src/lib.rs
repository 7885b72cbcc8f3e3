//! Tollgate's test rig and benchmarks, apart from the appliance: the network-namespace lab
//! ([`lab`]), the SNAT exhaustion benchmarks ([`snatbench`]: the simulator over the real engine,
//! and the live run with real TCP connections against the kernel), and the real TCP clients and
//! servers they use ([`io::tcpprobe`]).
//!
//! Kept out of the `tollgate` crate so the appliance binary carries neither this code nor its
//! dependencies (plotting, fonts, progress bars). `tollgate lab ...` and `tollgate bench ...`
//! run the `tollgate-lab` binary found beside `tollgate`.
#![deny(unsafe_code)]

pub mod cli;
pub mod fabric;
pub mod io;
pub mod lab;
pub mod snatbench;

use std::path::PathBuf;

/// The environment variable naming the appliance binary the lab and the live bench start.
pub const ENV_APPLIANCE: &str = "TOLLGATE_BIN";

/// The `tollgate` binary the lab and the live bench run: `$TOLLGATE_BIN`, else the one beside
/// this binary (cargo builds both into the same directory), else `tollgate` on the `PATH`.
pub fn appliance_binary() -> PathBuf {
    if let Some(p) = std::env::var_os(ENV_APPLIANCE) {
        return PathBuf::from(p);
    }
    if let Ok(me) = std::env::current_exe() {
        // A test binary lives one level further down (target/release/deps/).
        for dir in me.ancestors().skip(1).take(2) {
            let p = dir.join("tollgate");
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from("tollgate")
}
