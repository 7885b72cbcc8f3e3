//! New-TCP-connections/s load for benches/throughput.sh, with real kernel sockets.
//!
//! A serial client (one connect at a time) measures round-trip latency, not how many
//! connections an appliance can set up: on one machine the kernel's forwarder runs the whole
//! SYN / SYN-ACK exchange inside the client's own connect(), a separate forwarder (a userspace
//! one, or a kernel on another host) adds a hop. A firewall's connections/s is its capacity:
//! this keeps CONC connects in flight, like many clients behind the appliance.
//!
//! ```sh
//! cargo build --release --example tcpcps
//! target/release/examples/tcpcps serve 0.0.0.0:80 &          # accepts and closes
//! target/release/examples/tcpcps connect 203.0.113.10:80 64 3 # CONC SECS
//! ```
//! `connect` prints the connections established, the seconds it ran, and the failed attempts.
//! Each established connection is closed at once with a reset (SO_LINGER 0: no TIME_WAIT), so
//! the source ports recycle; an attempt not answered in 1 s counts as failed, and those still
//! in flight at the end are not counted.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tollgate_lab::io::tcpprobe::{self, Connecting};

const UNANSWERED: Duration = Duration::from_secs(1);

/// Accepts and closes on `threads` threads sharing one listener.
fn serve(addr: SocketAddrV4, threads: usize) -> ExitCode {
    let l = match tcpprobe::listen(addr, 4096).and_then(|l| l.set_nonblocking(false).map(|()| l)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tcpcps: listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let accept = move |l: std::net::TcpListener| loop {
        match l.accept() {
            // a plain close (FIN): a reset here could reach the client before it even looked at
            // its connect's result, and turn an established connection into ECONNRESET
            Ok((s, _)) => drop(s),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // a connection reset while queued, or out of descriptors for a moment: go on
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    for _ in 1..threads {
        match l.try_clone() {
            Ok(c) => drop(std::thread::spawn(move || accept(c))),
            Err(e) => {
                eprintln!("tcpcps: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    accept(l)
}

/// What one client thread got.
#[derive(Default)]
struct Outcome {
    ok: u64,
    failed: u64,
    /// Why attempts failed.
    why: BTreeMap<String, u64>,
}

impl Outcome {
    fn fail(&mut self, reason: String) {
        self.failed += 1;
        *self.why.entry(reason).or_default() += 1;
    }
}

/// Keeps `conc` connects to `dst` in flight until `end`.
fn client(dst: SocketAddrV4, conc: usize, end: Instant) -> std::io::Result<Outcome> {
    let src = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
    let mut out = Outcome::default();
    let mut live: Vec<(Connecting, Instant)> = Vec::with_capacity(conc);
    loop {
        let now = Instant::now();
        while now < end && live.len() < conc {
            match Connecting::start(src, dst) {
                Ok(c) => live.push((c, now)),
                Err(e) => {
                    out.fail(format!("start: {e}"));
                    break;
                }
            }
        }
        if now >= end {
            return Ok(out); // what is still in flight is not counted
        }
        let refs: Vec<&Connecting> = live.iter().map(|(c, _)| c).collect();
        let ready = tcpprobe::poll_connecting(&refs, Duration::from_millis(10))?;
        drop(refs);
        let mut done = vec![false; live.len()];
        for i in ready {
            done[i] = true;
        }
        let now = Instant::now();
        let mut i = 0;
        while i < live.len() {
            let late = !done[i] && now.duration_since(live[i].1) >= UNANSWERED;
            if !done[i] && !late {
                i += 1;
                continue;
            }
            done.swap_remove(i);
            let (c, _) = live.swap_remove(i);
            match (late, c.result()) {
                (true, _) => out.fail("no answer in 1 s".into()),
                (false, Ok(())) => {
                    out.ok += 1;
                    tcpprobe::abort(c.into_stream());
                }
                (false, Err(e)) => out.fail(e.to_string()),
            }
        }
    }
}

/// `conc` connects in flight in all, spread over `threads` threads, for `secs`.
fn connect(dst: SocketAddrV4, conc: usize, secs: f64, threads: usize) -> ExitCode {
    let threads = threads.min(conc); // every thread keeps at least one connect in flight
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let share = conc / threads + usize::from(t < conc % threads);
            std::thread::spawn(move || client(dst, share, end))
        })
        .collect();
    let mut all = Outcome::default();
    for h in handles {
        match h.join() {
            Ok(Ok(o)) => {
                all.ok += o.ok;
                all.failed += o.failed;
                for (reason, n) in o.why {
                    *all.why.entry(reason).or_default() += n;
                }
            }
            Ok(Err(e)) => {
                eprintln!("tcpcps: poll: {e}");
                return ExitCode::FAILURE;
            }
            Err(_) => return ExitCode::FAILURE,
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    for (reason, n) in &all.why {
        eprintln!("tcpcps: {n} attempts failed: {reason}");
    }
    println!("{} {secs:.3} {}", all.ok, all.failed);
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: tcpcps serve ADDR:PORT [THREADS] | tcpcps connect DST:PORT CONC SECS [THREADS]";
    let _ = tcpprobe::raise_nofile(65_536);
    let threads = |t: Option<&String>| {
        t.map_or(Ok(1), |t| t.parse::<usize>())
            .ok()
            .filter(|&t| t >= 1)
    };
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", addr, ..] if args.len() <= 3 => match (addr.parse(), threads(args.get(2))) {
            (Ok(a), Some(t)) => serve(a, t),
            _ => {
                eprintln!("{usage}: ADDR:PORT an IPv4 socket address, THREADS >= 1");
                ExitCode::from(2)
            }
        },
        ["connect", dst, conc, secs, ..] if args.len() <= 5 => {
            match (
                dst.parse(),
                conc.parse::<usize>(),
                secs.parse::<f64>(),
                threads(args.get(4)),
            ) {
                (Ok(d), Ok(c), Ok(s), Some(t)) if c >= 1 && s.is_finite() && s > 0.0 => {
                    connect(d, c, s, t)
                }
                _ => {
                    eprintln!(
                        "{usage}: DST:PORT an IPv4 socket address, CONC >= 1, SECS > 0, THREADS >= 1"
                    );
                    ExitCode::from(2)
                }
            }
        }
        _ => {
            eprintln!("{usage}");
            ExitCode::from(2)
        }
    }
}
