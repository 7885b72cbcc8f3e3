//! Warnings from the I/O layer. When an interface's `rx_oversize` grows (frames too large for
//! the receive buffers, dropped before the engine sees them), a warning says so, what causes
//! it and what to do, at most once per interface per [`WARN_EVERY`]; the frames of the quiet
//! time are counted in the next one. Reads the counters the workers publish
//! ([`Registry::io_stats`]), and logs what the workers posted to [`IoNotices`] (a link going
//! down, capabilities not dropped): the workers never log themselves. Never touches the packet
//! path.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::registry::Registry;
use crate::io::{IoNotices, IoStats};

/// At most one warning per interface this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// How often the counters are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One interface: the count last warned about and when.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    warned_at_count: u64,
    warned: Option<Instant>,
}

/// Remembers what was said per interface (by position in the list it is given).
#[derive(Debug, Default)]
pub struct OversizeWatch {
    seen: Vec<Seen>,
}

impl OversizeWatch {
    /// The warnings due at `now` for the per-interface counters `io` (name, counters).
    pub fn check(&mut self, io: &[(String, IoStats)], now: Instant) -> Vec<String> {
        self.seen.resize(io.len(), Seen::default());
        let mut out = Vec::new();
        for ((name, s), seen) in io.iter().zip(self.seen.iter_mut()) {
            let total = s.rx_oversize;
            if total <= seen.warned_at_count {
                continue;
            }
            if seen
                .warned
                .is_some_and(|t| now.saturating_duration_since(t) < WARN_EVERY)
            {
                continue;
            }
            out.push(oversize_warning(name, total - seen.warned_at_count, total));
            *seen = Seen {
                warned_at_count: total,
                warned: Some(now),
            };
        }
        out
    }
}

/// The warning for `new` more oversized frames on `iface` (`total` since the start).
pub fn oversize_warning(iface: &str, new: u64, total: u64) -> String {
    let (frames, were) = if new == 1 {
        ("frame", "was")
    } else {
        ("frames", "were")
    };
    format!(
        "{iface}: {new} received {frames} larger than the receive buffers {were} dropped (rx_oversize, {total} since start): a host on this link sends jumbo frames (give the link's hosts the mtu configured for {iface}), or GRO built super-frames above 64 KiB (BIG TCP: keep gro_max_size at 65536, see ip -d link show {iface})"
    )
}

/// Until `stop`: logs the workers' notices every 100 ms (and once more at the end) and checks
/// the registry's I/O counters every second, logging the warnings.
pub fn spawn(
    reg: Arc<Registry>,
    notices: IoNotices,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tollgate-iowatch".into())
        .spawn(move || {
            crate::io::caps::enter_control_thread();
            let mut watch = OversizeWatch::default();
            let mut last = Instant::now();
            let tell = |notices: &IoNotices| {
                for n in notices.take() {
                    log::warn!("{n}");
                }
            };
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                tell(&notices);
                if last.elapsed() < CHECK_EVERY {
                    continue;
                }
                last = Instant::now();
                for line in watch.check(&reg.io_stats(), last) {
                    log::warn!("{line}");
                }
            }
            tell(&notices);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(tg_in: u64, tg_out: u64) -> Vec<(String, IoStats)> {
        let s = |n| IoStats {
            rx_oversize: n,
            ..IoStats::default()
        };
        vec![("tg-in".into(), s(tg_in)), ("tg-out".into(), s(tg_out))]
    }

    #[test]
    fn oversize_growth_is_told_once_per_interface_per_ten_seconds() {
        let mut w = OversizeWatch::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(w.check(&io(0, 0), at(0)).is_empty(), "nothing lost");
        // the first growth is told at once
        let l = w.check(&io(12, 0), at(1));
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(
            l[0].starts_with("tg-in: 12 received frames larger than the receive buffers were dropped (rx_oversize, 12 since start): "),
            "{}",
            l[0]
        );
        assert!(l[0].contains("jumbo frames"), "{}", l[0]);
        // more within 10 s: quiet, but another interface is told on its own
        let l = w.check(&io(20, 1), at(5));
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(
            l[0].starts_with("tg-out: 1 received frame larger than the receive buffers was dropped (rx_oversize, 1 since start)"),
            "{}",
            l[0]
        );
        assert!(w.check(&io(30, 1), at(10)).is_empty());
        // 10 s after the last line: the frames of the quiet time, all of them
        let l = w.check(&io(30, 1), at(11));
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(
            l[0].starts_with("tg-in: 18 received frames larger than the receive buffers were dropped (rx_oversize, 30 since start)"),
            "{}",
            l[0]
        );
        // no growth, nothing to say, however long
        assert!(w.check(&io(30, 1), at(100)).is_empty());
        assert_eq!(w.check(&io(31, 1), at(101)).len(), 1);
    }
}
