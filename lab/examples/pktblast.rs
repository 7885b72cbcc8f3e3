//! Minimum-size UDP frames from a raw AF_PACKET socket, for the one-CPU layout of
//! benches/throughput.sh (`LAYOUT=onecpu`): a load generator that costs little per frame, so one
//! CPU offers more than the appliance on the other CPU can take.
//!
//! Every frame is a 60-byte Ethernet frame (64 bytes on a wire with the FCS): Ethernet 14 + IPv4
//! 20 + UDP 8 + 18 bytes of payload. The frames of FLOWS flows are built once, up front: flow `i`
//! comes from source port `1024 + i % 64512` of address `SRC + i / 64512` (so up to 64,512 flows
//! per source address; the client must hold those addresses), to DST:PORT, through the gateway
//! whose MAC is GWMAC (the appliance's inside interface). The IPv4 header checksum is right; the
//! UDP checksum is 0 (none). They go out round-robin over the flows, BATCH frames per
//! `sendmmsg` (default 64), for SECS seconds, at RATE frames/s (a token bucket of one batch;
//! 0 = as fast as it can), from a thread pinned to CPU (default 0; -1 = not pinned).
//!
//! ```sh
//! cargo build --release -p tollgate-lab --example pktblast
//! target/release/examples/pktblast eth0 02:00:00:00:00:01 198.18.0.11 203.0.113.10:7 1000 3 300000
//! ```
//! Prints the frames sent (the kernel took them), the seconds it sent for, and the frames the
//! kernel refused (the device dropped them at once: for a veth, its peer's receive ring was
//! full), which are not in the first number. Refused frames use up the rate as sent ones do:
//! at a RATE, sent + refused is what was offered.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const FRAME_LEN: usize = 60;
const PAYLOAD_LEN: usize = FRAME_LEN - 14 - 20 - 8;
const PORTS_PER_ADDR: usize = 65536 - 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: pktblast IFACE GWMAC SRC DST:PORT FLOWS SECS RATE [BATCH] [CPU]";
    if args.len() < 7 {
        eprintln!("{usage}");
        return ExitCode::from(2);
    }
    let parsed = (
        parse_mac(&args[1]),
        args[2].parse::<Ipv4Addr>(),
        args[3].parse::<SocketAddrV4>(),
        args[4].parse::<usize>(),
        args[5].parse::<f64>(),
        args[6].parse::<u64>(),
        args.get(7).map_or(Ok(64), |b| b.parse::<usize>()),
        args.get(8).map_or(Ok(0), |c| c.parse::<i64>()),
    );
    let (Some(gw), Ok(src), Ok(dst), Ok(flows), Ok(secs), Ok(rate), Ok(batch), Ok(cpu)) = parsed
    else {
        eprintln!("{usage}: GWMAC aa:bb:cc:dd:ee:ff, SRC an IPv4 address, DST:PORT an IPv4 socket address, FLOWS RATE BATCH CPU integers, SECS seconds");
        return ExitCode::from(2);
    };
    if flows == 0 || !secs.is_finite() || secs <= 0.0 || batch == 0 || batch > 1024 {
        eprintln!("{usage}: FLOWS >= 1, SECS > 0, 1 <= BATCH <= 1024");
        return ExitCode::from(2);
    }
    let iface = &args[0];
    if cpu >= 0 {
        if let Err(e) = pin(cpu as usize) {
            eprintln!("pktblast: pinning to CPU {cpu}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let own = match std::fs::read_to_string(format!("/sys/class/net/{iface}/address")) {
        Ok(t) => match parse_mac(t.trim()) {
            Some(m) => m,
            None => {
                eprintln!("pktblast: {iface}: no Ethernet address");
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("pktblast: {iface}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let frames = build_frames(own, gw, src, dst, flows);
    let sock = match Sock::open(iface) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pktblast: AF_PACKET socket on {iface}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (sent, refused, took) = blast(&sock, &frames, batch, rate, Duration::from_secs_f64(secs));
    println!("{sent} {took:.6} {refused}");
    eprintln!(
        "pktblast: {flows} flows {src} -> {dst} on {iface}, {FRAME_LEN}-byte frames ({PAYLOAD_LEN} B UDP payload), rate {}, {sent} sent in {took:.3} s ({:.0}/s), {refused} refused",
        if rate == 0 { "flat out".to_string() } else { format!("{rate}/s") },
        sent as f64 / took
    );
    ExitCode::SUCCESS
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// One frame per flow, back to back (`FRAME_LEN` bytes each).
fn build_frames(
    own: [u8; 6],
    gw: [u8; 6],
    src: Ipv4Addr,
    dst: SocketAddrV4,
    flows: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; flows * FRAME_LEN];
    for (i, f) in out.chunks_exact_mut(FRAME_LEN).enumerate() {
        let saddr = Ipv4Addr::from(u32::from(src).wrapping_add((i / PORTS_PER_ADDR) as u32));
        let sport = (1024 + i % PORTS_PER_ADDR) as u16;
        f[0..6].copy_from_slice(&gw);
        f[6..12].copy_from_slice(&own);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((FRAME_LEN - 14) as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64; // TTL
        ip[9] = 17; // UDP
        ip[12..16].copy_from_slice(&saddr.octets());
        ip[16..20].copy_from_slice(&dst.ip().octets());
        let csum = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        let udp = &mut f[34..42];
        udp[0..2].copy_from_slice(&sport.to_be_bytes());
        udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
        udp[4..6].copy_from_slice(&((8 + PAYLOAD_LEN) as u16).to_be_bytes());
        // udp[6..8]: checksum 0 = none
        f[42..].fill(0x5a);
    }
    out
}

fn ipv4_checksum(hdr: &[u8]) -> u16 {
    let mut sum: u32 = hdr
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `frames` round-robin, `batch` per `sendmmsg`, at `rate` frames/s (0: flat out), until
/// `window` has passed: (sent, refused, seconds).
fn blast(sock: &Sock, frames: &[u8], batch: usize, rate: u64, window: Duration) -> (u64, u64, f64) {
    let n = frames.len() / FRAME_LEN;
    let mut iovs: Vec<libc::iovec> = (0..batch)
        .map(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: FRAME_LEN,
        })
        .collect();
    // SAFETY: mmsghdr is plain old data; all-zero is a message with no name and no control data.
    let mut msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    let (mut sent, mut refused, mut next) = (0u64, 0u64, 0usize);
    let start = Instant::now();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= window {
            return (sent, refused, elapsed.as_secs_f64());
        }
        let mut want = batch;
        if rate > 0 {
            // token bucket of one batch: what the rate allows by now, less what went out
            let allowed = (rate as f64 * elapsed.as_secs_f64()) as u64 + batch as u64;
            let attempted = sent + refused;
            if allowed <= attempted {
                // the next frame is due once the rate has earned it
                let due = (attempted + 1).saturating_sub(batch as u64) as f64 / rate as f64;
                let ahead = Duration::from_secs_f64(due).saturating_sub(elapsed);
                // sleep, not spin: the generator shares its CPU with the sink
                std::thread::sleep(ahead);
                continue;
            }
            want = want.min((allowed - attempted) as usize);
        }
        for (iov, msg) in iovs.iter_mut().zip(msgs.iter_mut()).take(want) {
            iov.iov_base = frames[next * FRAME_LEN..].as_ptr() as *mut libc::c_void;
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            next = if next + 1 == n { 0 } else { next + 1 };
        }
        // SAFETY: `msgs[..want]` are valid mmsghdrs, each pointing at one iovec of `iovs` that
        // points at FRAME_LEN bytes inside `frames`; all outlive the call, which only reads the
        // frames (the kernel writes msg_len, inside `msgs`).
        let r = unsafe { libc::sendmmsg(sock.0, msgs.as_mut_ptr(), want as libc::c_uint, 0) };
        if r < 0 {
            // a full queue (ENOBUFS) or the like: the whole batch is refused, carry on
            refused += want as u64;
        } else {
            sent += r as u64;
            refused += (want - r as usize) as u64;
        }
    }
}

/// An AF_PACKET raw socket bound to one interface (sends need no address).
struct Sock(libc::c_int);

impl Sock {
    fn open(iface: &str) -> std::io::Result<Sock> {
        let name = std::ffi::CString::new(iface).map_err(std::io::Error::other)?;
        // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // protocol 0: the socket receives nothing, it only sends
        // SAFETY: plain system call with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sock = Sock(fd);
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid starting value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed; `fd` is our open socket.
        let r = unsafe {
            libc::bind(
                fd,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // a send buffer big enough that the sender never waits for the receiver: a frame's skb
        // is charged to this socket until the receiving side frees it, and with the default
        // (~200 KiB, ~280 small frames) a veth peer's backlog or NAPI ring would pace the
        // generator instead of dropping what it cannot take, as a NIC's ring would
        // (SO_SNDBUFFORCE needs CAP_NET_ADMIN; SO_SNDBUF, capped at wmem_max, otherwise)
        let big: libc::c_int = 64 << 20;
        for opt in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
            // SAFETY: `big` is a valid c_int of the size passed; `fd` is our open socket.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    &big as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
        }
        // straight to the driver, past the (veth: empty) qdisc layer: less per frame
        let one: libc::c_int = 1;
        // SAFETY: `one` is a valid c_int of the size passed; failure only costs speed.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(sock)
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this value owns, once.
        unsafe { libc::close(self.0) };
    }
}

/// Pins the calling thread (the only one) to `cpu`.
fn pin(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::other("CPU number out of range"));
    }
    // SAFETY: cpu_set_t is plain old data; all-zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes inside a valid set; `cpu < CPU_SETSIZE` (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
