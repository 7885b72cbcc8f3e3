//! Real TCP clients and servers for the live benchmarks: nonblocking connects with an explicit
//! source address and port, polled together, and a listener with a large backlog. The sockets
//! are the kernel's own (`socket`, `bind`, `connect`, `poll`), created in whatever network
//! namespace the calling thread is in ([`NetnsHandle::enter`] moves the thread), so one thread
//! can hold connections from several namespaces at once.

use std::fs::File;
use std::io;
use std::mem::size_of;
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// An open network namespace (`/var/run/netns/NAME`) the calling thread can enter at any time.
#[derive(Debug)]
pub struct NetnsHandle {
    file: File,
}

impl NetnsHandle {
    /// Opens the named namespace.
    pub fn open(name: &str) -> io::Result<NetnsHandle> {
        Ok(NetnsHandle {
            file: File::open(format!("/var/run/netns/{name}"))?,
        })
    }

    /// Moves the calling thread into the namespace; sockets it creates afterwards live there.
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: setns on a namespace file descriptor we hold open; it affects only the
        // calling thread's network namespace.
        let rc = unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn set_int(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: `v` is a live c_int and its size is passed; the fd is owned and open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn tcp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); a non-negative result is a new descriptor we own.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: &OwnedFd, a: SocketAddrV4) -> io::Result<()> {
    let sa = sockaddr(a);
    // SAFETY: `sa` is a valid sockaddr_in and its exact size is passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A TCP connect in progress on a nonblocking socket.
#[derive(Debug)]
pub struct Connecting {
    fd: OwnedFd,
}

impl Connecting {
    /// Creates a socket, binds it to `src` and starts connecting to `dst`. An explicit source
    /// port is bound with SO_REUSEADDR; port 0 leaves the choice to connect(2)
    /// (IP_BIND_ADDRESS_NO_PORT), which avoids tuples still in TIME_WAIT. An error known at
    /// once (the SYN could not even be sent, or the address is busy) is returned here.
    pub fn start(src: SocketAddrV4, dst: SocketAddrV4) -> io::Result<Connecting> {
        let fd = tcp_socket()?;
        if src.port() == 0 {
            set_int(&fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
        } else {
            set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        }
        bind(&fd, src)?;
        let sa = sockaddr(dst);
        // SAFETY: `sa` is a valid sockaddr_in and its exact size is passed.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(Connecting { fd })
    }

    /// The result of a finished connect (after [`poll_connecting`] reported it): Ok when the
    /// connection is established, else the error the kernel recorded (ECONNREFUSED for a
    /// reset, EHOSTUNREACH / ENETUNREACH for ICMP unreachable, ETIMEDOUT...).
    pub fn result(&self) -> io::Result<()> {
        let err = tollgate::io::take_socket_error(self.fd.as_raw_fd())?;
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        Ok(())
    }

    /// The local address the socket is bound to.
    pub fn local_port(&self) -> io::Result<u16> {
        // SAFETY: zeroed sockaddr_in is a valid value for getsockname to fill.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `sa` and `len` are live; `len` holds sa's size.
        let rc = unsafe {
            libc::getsockname(
                self.fd.as_raw_fd(),
                (&mut sa as *mut libc::sockaddr_in).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u16::from_be(sa.sin_port))
    }

    /// The connected socket as a std stream (still nonblocking).
    pub fn into_stream(self) -> TcpStream {
        TcpStream::from(self.fd)
    }
}

/// Waits up to `timeout` until at least one of `conns` has finished connecting (established
/// or failed); returns the indices of those that finished.
pub fn poll_connecting(conns: &[&Connecting], timeout: Duration) -> io::Result<Vec<usize>> {
    let mut fds: Vec<libc::pollfd> = conns
        .iter()
        .map(|c| libc::pollfd {
            fd: c.fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a live array of `fds.len()` pollfd entries.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(Vec::new());
        }
        return Err(e);
    }
    Ok(fds
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0)
        .map(|(i, _)| i)
        .collect())
}

/// Closes a stream with a reset (SO_LINGER 0): no TIME_WAIT on this side.
pub fn abort(s: TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `l` is a live linger struct and its size is passed; the fd is open.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// A nonblocking TCP listener on `addr` with SO_REUSEADDR and the given backlog (the kernel
/// caps it at net.core.somaxconn).
pub fn listen(addr: SocketAddrV4, backlog: i32) -> io::Result<TcpListener> {
    let fd = tcp_socket()?;
    set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    bind(&fd, addr)?;
    // SAFETY: listen(2) on a bound socket we own.
    let rc = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(fd))
}

pub use tollgate::io::raise_nofile;
