//! systemd readiness and watchdog (sd_notify protocol, `Type=notify` + `WatchdogSec=`): one
//! datagram per state to the socket in `$NOTIFY_SOCKET`. READY=1 once every worker runs;
//! WATCHDOG=1 at half the watchdog interval while the workers' heartbeats move, so systemd
//! restarts an appliance whose dataplane stalled; STOPPING=1 at shutdown. Without
//! `$NOTIFY_SOCKET` (not under systemd) nothing is sent.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::mgmt::{Beats, Health};
use super::registry::Registry;

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace); None when unset.
    pub fn from_env() -> io::Result<Option<Self>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(None),
            Some(p) => Self::to(&p.to_string_lossy()).map(Some),
        }
    }

    pub fn to(path: &str) -> io::Result<Self> {
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(path)?,
        };
        // Never block on a receiver that does not read (a full queue drops the message).
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok(Notifier { sock, addr })
    }

    /// Sends one state line (`READY=1`, `WATCHDOG=1`, `STATUS=...`).
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(|_| ())
    }
}

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this process).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_string_lossy() != std::process::id().to_string() {
            return None;
        }
    }
    let us: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (us > 0).then(|| Duration::from_micros(us))
}

/// The message logged (at info) once every worker runs (rings open, tables built): what the
/// lab and the tests wait for before they send traffic, with or without systemd. In every log
/// format.
pub const READY_MESSAGE: &str = "ready: every worker runs";

/// [`READY_MESSAGE`] as the text log format writes it.
pub const READY_LINE: &str = "tollgate: ready: every worker runs";

/// Logs [`READY_MESSAGE`] once the dataplane is up and, under systemd (`n`), sends READY=1,
/// keeps its watchdog fed while it is healthy, and sends STOPPING=1 when `stop` is set.
pub fn spawn(
    n: Option<Notifier>,
    reg: Arc<Registry>,
    status: String,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    let wd = if n.is_some() {
        watchdog_interval()
    } else {
        None
    };
    let send = move |state: &str| {
        if let Some(n) = &n {
            let _ = n.send(state);
        }
    };
    std::thread::Builder::new()
        .name("tollgate-notify".into())
        .spawn(move || {
            crate::io::caps::enter_control_thread();
            let mut beats = Beats::default();
            let mut ready = false;
            let mut last_ping = Instant::now();
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let h = beats.health(&reg, Instant::now());
                if !ready && reg.ready() {
                    ready = true;
                    log::info!("{READY_MESSAGE}");
                    send(&format!("READY=1\nSTATUS={status}"));
                }
                if let Some(every) = wd {
                    if ready && h != Health::Unhealthy && last_ping.elapsed() >= every / 2 {
                        send("WATCHDOG=1");
                        last_ping = Instant::now();
                    }
                }
            }
            send("STOPPING=1");
        })
}
