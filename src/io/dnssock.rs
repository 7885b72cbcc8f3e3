//! The socket calls the control plane's resolver (`control::dns`) needs and `std` lacks: a TCP
//! socket bound to a chosen port before it connects, a connect with a timeout on that socket,
//! `connect(AF_UNSPEC)` to make it unconnected again with its port kept, and a UDP receive
//! buffer size.
//!
//! Why reuse one TCP socket: its port may be privileged (below 1024), and binding such a port
//! needs CAP_NET_BIND_SERVICE, which the control threads drop once the daemon is up. A socket
//! bound explicitly keeps its port across `connect(AF_UNSPEC)` (Linux `tcp_disconnect`: the
//! port is released only for sockets that were not bound by the user, SOCK_BINDPORT_LOCK),
//! and connecting a bound socket needs no capability.

use std::io;
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A TCP socket bound to `addr` and not connected ([`connect_before`] connects it,
/// [`disconnect`] makes it unconnected again). Binding a port below 1024 needs
/// CAP_NET_BIND_SERVICE.
pub fn tcp_socket(addr: SocketAddrV4) -> io::Result<TcpStream> {
    // SAFETY: plain socket(2) call; the result is checked and owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sa = sockaddr_in(addr);
    // SAFETY: `sa` is a valid sockaddr_in for the duration of the call and its size is passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpStream::from(fd))
}

/// Connects the (bound, unconnected) socket `s` to `to` within `timeout`; leaves it blocking.
pub fn connect_before(s: &TcpStream, to: SocketAddrV4, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    s.set_nonblocking(true)?;
    let sa = sockaddr_in(to);
    // SAFETY: `sa` is a valid sockaddr_in for the duration of the call and its size is passed.
    let r = unsafe {
        libc::connect(
            s.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no connection in time",
                ));
            }
            let ms = left.as_millis().clamp(1, 60_000) as libc::c_int;
            let mut p = libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: `p` is one live pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut p, 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n > 0 {
                break;
            }
        }
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
    }
    s.set_nonblocking(false)
}

/// Makes `s` unconnected again (`connect` with AF_UNSPEC): an open connection is aborted
/// (RST, so neither side keeps TIME_WAIT), and an explicitly bound port stays the socket's.
pub fn disconnect(s: &TcpStream) {
    // SAFETY: an all-zero sockaddr is a valid value; only its family is read for AF_UNSPEC.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: `sa` is a valid sockaddr for the duration of the call and its size is passed.
    unsafe {
        libc::connect(
            s.as_raw_fd(),
            &sa,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        );
    }
}

/// Asks for a receive buffer of `bytes` on `sock` (the kernel doubles it); best effort.
pub fn set_rcvbuf(sock: &UdpSocket, bytes: usize) {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: `v` is a live c_int for the duration of the call and its exact size is passed;
    // the descriptor is owned by `sock`.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
