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

#[derive(Debug)]
pub enum Listener {
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
            Listener::Tcp(TcpListener::from_std(std_listener), local)
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
            Listener::Unix(l, path.clone())
        }
    };
    Ok(listener)
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
        match self {
            Listener::Tcp(_, a) => a.to_string(),
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    /// Accept one connection: the stream, the peer's IP (bare, IPv4-mapped unmapped) and port.
    pub fn accept(&mut self) -> io::Result<(Stream, String, u16)> {
        match self {
            Listener::Tcp(l, _) => {
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
            Listener::Unix(l, _) => {
                let (s, _) = l.accept()?;
                Ok((Stream::Unix(s), "unix".to_string(), 0))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Source for Listener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l, _) => l.register(r, t, i),
            Listener::Unix(l, _) => l.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l, _) => l.reregister(r, t, i),
            Listener::Unix(l, _) => l.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l, _) => l.deregister(r),
            Listener::Unix(l, _) => l.deregister(r),
        }
    }
}
