//! Entering a named network namespace (`ip netns add NAME`) from the calling thread.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Moves the calling thread into `/var/run/netns/NAME`; threads it spawns afterwards inherit it.
pub fn enter(name: &str) -> io::Result<()> {
    let f = File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: setns on a valid namespace file descriptor affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
