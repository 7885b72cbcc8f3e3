//! Many-flow UDP load for benches/throughput.sh: iperf3 stops at 128 streams, the issue asks for
//! 1000+ flows. Opens FLOWS sockets (FLOWS source ports, so FLOWS 5-tuples, FLOWS conntrack
//! entries and FLOWS SNAT mappings) connected to one destination, and sends LEN-byte datagrams
//! round-robin over them, one `send` per datagram as iperf3 does, as fast as it can for SECS,
//! from THREADS threads (default 1), each over its share of the sockets.
//!
//! ```sh
//! cargo build --release --example udpflood
//! target/release/examples/udpflood 203.0.113.10:7 1024 3 64 2    # 2 sender threads
//! ```
//! Prints the datagrams sent, then the seconds it sent for. Send errors (a full queue, an ICMP
//! error reported on a connected socket) are counted apart and do not stop it; the receiver's
//! count is what a benchmark reports.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: udpflood DST:PORT FLOWS SECS [LEN] [THREADS]";
    let (Some(dst), Some(flows), Some(secs)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let parsed = (
        dst.parse::<SocketAddr>(),
        flows.parse::<usize>(),
        secs.parse::<f64>(),
        args.get(3).map_or(Ok(64), |l| l.parse::<usize>()),
        args.get(4).map_or(Ok(1), |t| t.parse::<usize>()),
    );
    let (Ok(dst), Ok(flows), Ok(secs), Ok(len), Ok(threads)) = parsed else {
        eprintln!(
            "{usage}: DST:PORT an IPv4 socket address, FLOWS, LEN and THREADS integers, SECS seconds"
        );
        return ExitCode::from(2);
    };
    if flows == 0 || !secs.is_finite() || secs <= 0.0 || len > 65_507 || threads == 0 {
        eprintln!("{usage}: FLOWS >= 1, SECS > 0, LEN <= 65507, THREADS >= 1");
        return ExitCode::from(2);
    }
    let mut socks = Vec::with_capacity(flows);
    for _ in 0..flows {
        let s = match UdpSocket::bind("0.0.0.0:0").and_then(|s| s.connect(dst).map(|()| s)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("udpflood: socket {} of {flows}: {e}", socks.len() + 1);
                return ExitCode::FAILURE;
            }
        };
        socks.push(s);
    }
    let window = Duration::from_secs_f64(secs);
    let start = Instant::now();
    // THREADS senders, each over its share of the sockets: one sender is one CPU, and the
    // kernel's forwarding runs inside the senders' system calls
    let threads = threads.min(flows);
    let mut handles = Vec::new();
    for t in 0..threads {
        let share = flows / threads + usize::from(t < flows % threads);
        let mine: Vec<UdpSocket> = socks.drain(..share).collect();
        handles.push(std::thread::spawn(move || {
            send_for(&mine, len, start, window)
        }));
    }
    let (mut sent, mut errors) = (0u64, 0u64);
    for h in handles {
        let (s, e) = h.join().unwrap_or((0, 0));
        sent += s;
        errors += e;
    }
    let took = start.elapsed().as_secs_f64();
    println!("{sent} {took:.6}");
    eprintln!(
        "udpflood: {flows} flows to {dst} from {threads} threads, {sent} datagrams of {len} B in {took:.3} s ({:.0}/s), {errors} send errors",
        sent as f64 / took
    );
    ExitCode::SUCCESS
}

/// Sends LEN-byte datagrams round-robin over `socks` until `window` has passed since `start`:
/// (sent, send errors).
fn send_for(socks: &[UdpSocket], len: usize, start: Instant, window: Duration) -> (u64, u64) {
    let payload = vec![0x5au8; len];
    let (mut sent, mut errors) = (0u64, 0u64);
    loop {
        // the clock is read once per round of the sockets (at least every 64), not per datagram
        for chunk in socks.chunks(64) {
            for s in chunk {
                match s.send(&payload) {
                    Ok(_) => sent += 1,
                    Err(_) => errors += 1,
                }
            }
            if start.elapsed() >= window {
                return (sent, errors);
            }
        }
    }
}
