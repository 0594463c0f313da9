//! The dispatcher's side of a fork-server (a pool with `preload = true`): asking it for
//! one worker. The protocol (one JSON line each way, four pipe ends passed with
//! SCM_RIGHTS) is described in `workers/rustworkers/forkserver.py` and docs/python.md.
//!
//! The request is synchronous but bounded: the fork-server only forks (its app was
//! imported before it said ready), which takes a few milliseconds; past `timeout` the
//! caller gives up on it (and kills it) and spawns the worker the ordinary way.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::unistd::Pid;

use super::SpawnedWorker;

/// Longest answer line accepted from a fork-server.
const MAX_ANSWER: usize = 4096;

/// The fork-server's first line: it imported the app and takes requests.
#[derive(Debug, serde::Deserialize)]
pub struct Ready {
    pub ready: bool,
    pub pid: u32,
}

#[derive(Debug, serde::Deserialize)]
struct Answer {
    pid: Option<i32>,
    error: Option<String>,
}

/// Read one `\n`-terminated line from a blocking socket, waiting at most until
/// `deadline`. Bytes after the newline would belong to no request: there are none, since
/// the fork-server answers each request once.
pub fn read_line(sock: &mut UnixStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
        }
        sock.set_read_timeout(Some(left))?;
        let n = match sock.read(&mut byte) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the fork-server closed its socket")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
            }
            Err(e) => return Err(e),
        };
        line.extend_from_slice(&byte[..n]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            return Ok(line);
        }
        if line.len() > MAX_ANSWER {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "answer line too long"));
        }
    }
}

/// Ask the fork-server on `sock` for worker `worker_id`; -> the worker with the
/// dispatcher's ends of its four pipes, as `spawn_worker` returns it. The worker is a
/// child of the dispatcher (re-parented: the dispatcher is a child subreaper).
pub fn fork_worker(sock: &mut UnixStream, worker_id: usize, timeout: Duration) -> io::Result<SpawnedWorker> {
    let deadline = Instant::now() + timeout;
    let (request_r, request_w) = pipe()?;
    let (reply_r, reply_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let line = format!("{{\"worker_id\":{worker_id},\"dispatcher\":{}}}\n", std::process::id());
    let fds = [request_r.as_raw_fd(), reply_w.as_raw_fd(), stdout_w.as_raw_fd(), stderr_w.as_raw_fd()];
    sock.set_write_timeout(Some(timeout))?;
    let iov = [io::IoSlice::new(line.as_bytes())];
    let sent = sendmsg::<()>(sock.as_fd().as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .map_err(io::Error::from)?;
    if sent < line.len() {
        // The fds went with the first byte; the rest of the line follows plainly.
        sock.write_all(&line.as_bytes()[sent..])?;
    }
    // Ours to close now: the worker holds its own copies.
    drop((request_r, reply_w, stdout_w, stderr_w));
    let answer = read_line(sock, deadline)?;
    let answer: Answer = serde_json::from_slice(&answer)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad answer: {e}")))?;
    let pid = match (answer.pid, answer.error) {
        (Some(pid), _) if pid > 1 => Pid::from_raw(pid),
        (_, Some(err)) => return Err(io::Error::other(format!("the fork-server could not fork: {err}"))),
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "answer without a pid")),
    };
    // The worker was re-parented to us before the answer: a pid that is not our child
    // (a confused or hostile fork-server) is never taken, so never signalled.
    if parent_of(pid) != Some(nix::unistd::getpid()) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("pid {pid} is not our child")));
    }
    let request_tx = mio::unix::pipe::Sender::from(request_w);
    let reply_rx = mio::unix::pipe::Receiver::from(reply_r);
    let stdout_rx = mio::unix::pipe::Receiver::from(stdout_r);
    let stderr_rx = mio::unix::pipe::Receiver::from(stderr_r);
    request_tx.set_nonblocking(true)?;
    reply_rx.set_nonblocking(true)?;
    stdout_rx.set_nonblocking(true)?;
    stderr_rx.set_nonblocking(true)?;
    Ok(SpawnedWorker { pid, request_tx, reply_rx, stdout_rx, stderr_rx })
}

/// The parent pid of `pid`, from /proc (Linux; `None` elsewhere or if it is gone).
fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses (which may hold anything): state, then ppid.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse::<i32>().ok().map(Pid::from_raw)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn parent_of_reads_the_ppid_and_refuses_strangers() {
        let me = nix::unistd::getpid();
        assert_eq!(parent_of(me), Some(nix::unistd::getppid()));
        // pid 1 is nobody's child here; a pid that does not exist has no parent.
        assert_ne!(parent_of(Pid::from_raw(1)), Some(me));
        assert_eq!(parent_of(Pid::from_raw(i32::MAX)), None);
    }
}
