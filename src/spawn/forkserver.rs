//! The dispatcher's side of a fork-server (a pool with `preload = true`): asking it for
//! one worker. The protocol (one JSON line each way, four pipe ends passed with
//! SCM_RIGHTS) is described in `workers/rustworkers/forkserver.py` and docs/python.md.
//!
//! Nothing here blocks: the dispatcher asks (`ask_fork`, one small message on an empty
//! socket), reads what arrived when the socket is readable (`read_lines`), and takes the
//! answer (`take_answer`). It bounds the wait with a timer of its own.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

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

/// Read what the non-blocking socket has into `buf`; -> the first complete line (taken
/// out of `buf`), `None` while it is incomplete. EOF, a line over `MAX_ANSWER` and read
/// errors are errors. Edge-triggered callers call it until it returns `None`.
pub fn read_lines(sock: &mut UnixStream, buf: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = buf[..end].to_vec();
            buf.drain(..=end);
            return Ok(Some(line));
        }
        if buf.len() > MAX_ANSWER {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "answer line too long"));
        }
        let mut chunk = [0u8; 512];
        match sock.read(&mut chunk) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the fork-server closed its socket")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// A fork request sent, its answer not read yet: the dispatcher's ends of the new
/// worker's four pipes (dropping it closes them: a worker forked meanwhile sees EOF and
/// exits).
#[derive(Debug)]
pub struct PendingFork {
    request_w: OwnedFd,
    reply_r: OwnedFd,
    stdout_r: OwnedFd,
    stderr_r: OwnedFd,
}

/// Ask the fork-server on `sock` (non-blocking, with no request outstanding) for worker
/// `worker_id`: the worker's ends of four new pipes go with the request (SCM_RIGHTS).
pub fn ask_fork(sock: &mut UnixStream, worker_id: usize) -> io::Result<PendingFork> {
    let (request_r, request_w) = pipe()?;
    let (reply_r, reply_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let line = format!("{{\"worker_id\":{worker_id},\"dispatcher\":{}}}\n", std::process::id());
    let fds = [request_r.as_raw_fd(), reply_w.as_raw_fd(), stdout_w.as_raw_fd(), stderr_w.as_raw_fd()];
    let iov = [io::IoSlice::new(line.as_bytes())];
    // The socket is empty (one request at a time, each answered before the next): the
    // short line goes whole, or the fork-server is given up on.
    let sent =
        sendmsg::<()>(sock.as_fd().as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
            .map_err(io::Error::from)?;
    if sent < line.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "the fork request did not fit its socket"));
    }
    // The worker's ends are ours to close now: the fork-server holds copies.
    drop((request_r, reply_w, stdout_w, stderr_w));
    Ok(PendingFork { request_w, reply_r, stdout_r, stderr_r })
}

/// The fork-server's answer `line` to `pending`; -> the worker, as `spawn_worker` returns
/// it. The worker is a child of the dispatcher (re-parented: the dispatcher is a child
/// subreaper).
pub fn take_answer(pending: PendingFork, line: &[u8]) -> io::Result<SpawnedWorker> {
    let answer: Answer = serde_json::from_slice(line)
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
    let request_tx = mio::unix::pipe::Sender::from(pending.request_w);
    let reply_rx = mio::unix::pipe::Receiver::from(pending.reply_r);
    let stdout_rx = mio::unix::pipe::Receiver::from(pending.stdout_r);
    let stderr_rx = mio::unix::pipe::Receiver::from(pending.stderr_r);
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
