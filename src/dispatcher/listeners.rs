//! Listening sockets: TCP (IPv4/IPv6) and Unix, with the configured backlog.

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use mio::event::Source;
use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Registry, Token};

use super::RunError;
use super::connection::Stream;
use crate::config::BindAddr;

/// A listening socket, as one event loop holds it.
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    /// Whether dropping it removes a Unix socket's file: only the original does, not
    /// the copies other loops hold.
    owner: bool,
    /// Registered with EPOLLEXCLUSIVE: when several loops wait on the same listener, a
    /// new connection wakes one of them (an idle one), not all.
    shared: bool,
}

#[derive(Debug)]
enum Socket {
    Tcp(TcpListener, std::net::SocketAddr),
    Unix(UnixListener, PathBuf),
}

pub fn bind(addr: &BindAddr, backlog: u32) -> Result<Listener, RunError> {
    let describe = match addr {
        BindAddr::Tcp(a) => a.to_string(),
        BindAddr::Unix(p) => format!("unix:{}", p.display()),
    };
    let fail = |error: io::Error| RunError::Bind { addr: describe.clone(), error };
    let listener = match addr {
        BindAddr::Tcp(a) => {
            // std sets SO_REUSEADDR and CLOEXEC; mio's bind would also do, but std lets us
            // set the backlog afterwards with a second listen().
            let std_listener = std::net::TcpListener::bind(a).map_err(fail)?;
            std_listener.set_nonblocking(true).map_err(fail)?;
            let local = std_listener.local_addr().map_err(fail)?;
            set_backlog(std_listener.as_raw_fd(), backlog).map_err(fail)?;
            Socket::Tcp(TcpListener::from_std(std_listener), local)
        }
        BindAddr::Unix(path) => {
            // A stale socket file from a previous run would make bind fail.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    let _ = std::fs::remove_file(path);
                }
            }
            let l = UnixListener::bind(path).map_err(fail)?;
            set_backlog(l.as_raw_fd(), backlog).map_err(fail)?;
            Socket::Unix(l, path.clone())
        }
    };
    Ok(Listener { socket: listener, owner: true, shared: false })
}

/// Calling listen() again on a listening socket updates its backlog.
fn set_backlog(fd: i32, backlog: u32) -> io::Result<()> {
    let backlog = backlog.min(i32::MAX as u32) as i32;
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe { libc::listen(fd, backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Listener {
    pub fn describe(&self) -> String {
        match &self.socket {
            Socket::Tcp(_, a) => a.to_string(),
            Socket::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    /// From now on registered for loops that share it (see `shared`).
    pub fn share(&mut self) {
        self.shared = true;
    }

    /// Another loop's handle on the same listening socket (a dup'ed descriptor).
    pub fn try_clone(&self) -> io::Result<Listener> {
        use std::os::fd::{FromRawFd, IntoRawFd};
        let socket = match &self.socket {
            Socket::Tcp(l, a) => {
                // SAFETY: the descriptor is valid (ours) for the duration of the borrow;
                // the borrowed std listener is turned back into a raw fd, never closed.
                let std_l = unsafe { std::net::TcpListener::from_raw_fd(l.as_raw_fd()) };
                let copy = std_l.try_clone();
                let _ = std_l.into_raw_fd();
                Socket::Tcp(TcpListener::from_std(copy?), *a)
            }
            Socket::Unix(l, p) => {
                // SAFETY: as above.
                let std_l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(l.as_raw_fd()) };
                let copy = std_l.try_clone();
                let _ = std_l.into_raw_fd();
                Socket::Unix(UnixListener::from_std(copy?), p.clone())
            }
        };
        Ok(Listener { socket, owner: false, shared: self.shared })
    }

    fn raw_fd(&self) -> i32 {
        match &self.socket {
            Socket::Tcp(l, _) => l.as_raw_fd(),
            Socket::Unix(l, _) => l.as_raw_fd(),
        }
    }

    /// Accept one connection: the stream, the peer's IP (bare, IPv4-mapped unmapped) and port.
    pub fn accept(&mut self) -> io::Result<(Stream, String, u16)> {
        match &mut self.socket {
            Socket::Tcp(l, _) => {
                let (s, peer) = l.accept()?;
                let _ = s.set_nodelay(true);
                let ip = match peer.ip() {
                    std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                        Some(v4) => v4.to_string(),
                        None => v6.to_string(),
                    },
                    v4 => v4.to_string(),
                };
                Ok((Stream::Tcp(s), ip, peer.port()))
            }
            Socket::Unix(l, _) => {
                let (s, _) = l.accept()?;
                Ok((Stream::Unix(s), "unix".to_string(), 0))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let (Socket::Unix(_, path), true) = (&self.socket, self.owner) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Source for Listener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if self.shared {
            return epoll_exclusive(r, self.raw_fd(), t);
        }
        match &mut self.socket {
            Socket::Tcp(l, _) => l.register(r, t, i),
            Socket::Unix(l, _) => l.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match &mut self.socket {
            Socket::Tcp(l, _) => l.reregister(r, t, i),
            Socket::Unix(l, _) => l.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if self.shared {
            // SAFETY: plain syscall on descriptors we own.
            let rc =
                unsafe { libc::epoll_ctl(r.as_raw_fd(), libc::EPOLL_CTL_DEL, self.raw_fd(), std::ptr::null_mut()) };
            return if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
        }
        match &mut self.socket {
            Socket::Tcp(l, _) => l.deregister(r),
            Socket::Unix(l, _) => l.deregister(r),
        }
    }
}

/// mio has no EPOLLEXCLUSIVE: register the listener on the loop's epoll ourselves, with
/// the token mio reads back from the event's data. Edge-triggered like mio's own
/// registrations (the loop accepts until EAGAIN). Elsewhere every loop is woken.
#[cfg(target_os = "linux")]
fn epoll_exclusive(r: &Registry, fd: i32, t: Token) -> io::Result<()> {
    let mut event =
        libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE) as u32, u64: t.0 as u64 };
    // SAFETY: plain syscall on descriptors we own; `event` outlives the call.
    if unsafe { libc::epoll_ctl(r.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
