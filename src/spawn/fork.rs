//! The crate's only `fork()`, with the parent's half of the spawn: pipes and /dev/null are
//! opened here, every raw pointer the child needs is computed here, and after the fork the
//! parent waits on the CLOEXEC error pipe to learn whether the child got to exec.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use libc::c_char;
use nix::errno::Errno;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::child::{ChildImage, ChildPlan};
use super::{ChildStep, Credentials, SpawnError, SpawnTarget, SpawnedWorker};

/// A NULL-terminated array of C strings (argv/envp) built before the fork. The pointers
/// stay valid while `self` lives: moving the `Vec<CString>` does not move the strings.
#[derive(Debug)]
pub(super) struct CStrArray {
    _strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl CStrArray {
    pub(super) fn new(strings: Vec<CString>) -> Self {
        let ptrs = strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        CStrArray { _strings: strings, ptrs }
    }

    fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

/// What the child becomes.
#[derive(Debug)]
pub(super) enum Image {
    Exec { path: CString, argv: CStrArray },
    Native { name: String },
}

/// Everything resolved from the spec, still in Rust types.
#[derive(Debug)]
pub(super) struct Plan {
    pub target: SpawnTarget,
    pub image: Image,
    pub envp: CStrArray,
    pub cwd: Option<CString>,
    pub creds: Credentials,
    /// Address-space limit in bytes.
    pub memory_limit: Option<u64>,
}

/// Upper bound for the fd-closing loop when `close_range` is unavailable and
/// `RLIMIT_NOFILE` is unlimited.
const CLOSE_LOOP_CAP: libc::c_int = 1 << 20;

/// The child's fds 3 and 4, as the parent holds them.
#[derive(Debug)]
pub(super) enum Channel {
    /// A worker: frames in on a pipe (its fd 3), frames out on another (its fd 4).
    Pipes { request_w: OwnedFd, reply_r: OwnedFd },
    /// A fork-server: one Unix stream socket on both fds 3 and 4, so that pipe ends can
    /// travel over it (SCM_RIGHTS).
    Control(std::os::unix::net::UnixStream),
}

/// The parent's side of a spawned child, before it is wrapped for its use.
pub(super) struct Spawned {
    pub pid: Pid,
    pub channel: Channel,
    pub stdout_rx: mio::unix::pipe::Receiver,
    pub stderr_rx: mio::unix::pipe::Receiver,
}

pub(super) fn spawn(plan: Plan) -> Result<SpawnedWorker, SpawnError> {
    let target = plan.target.clone();
    let s = spawn_with(plan, false)?;
    let Channel::Pipes { request_w, reply_r } = s.channel else { unreachable!("spawn_with(.., false) makes pipes") };
    let io = (|| -> std::io::Result<SpawnedWorker> {
        let request_tx = mio::unix::pipe::Sender::from(request_w);
        let reply_rx = mio::unix::pipe::Receiver::from(reply_r);
        request_tx.set_nonblocking(true)?;
        reply_rx.set_nonblocking(true)?;
        Ok(SpawnedWorker { pid: s.pid, request_tx, reply_rx, stdout_rx: s.stdout_rx, stderr_rx: s.stderr_rx })
    })();
    io.map_err(|e| {
        let _ = nix::sys::signal::kill(s.pid, nix::sys::signal::Signal::SIGKILL);
        reap(s.pid);
        SpawnError::Os {
            target,
            call: "set O_NONBLOCK",
            errno: e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO),
        }
    })
}

pub(super) fn spawn_with(plan: Plan, control: bool) -> Result<Spawned, SpawnError> {
    let os = |call: &'static str, errno: Errno| SpawnError::Os { target: plan.target.clone(), call, errno };

    // (read end, write end) of each pipe; all CLOEXEC, the child's ends are dup2'ed onto
    // 0..=4 (which clears CLOEXEC on the copies). A fork-server gets one socket instead
    // of the two frame pipes.
    let (channel, child_3, child_4) = if control {
        let (parent, child) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| os("socketpair", e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO)))?;
        let child = OwnedFd::from(child);
        let child_dup =
            child.try_clone().map_err(|e| os("dup", e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO)))?;
        (Channel::Control(parent), child, child_dup)
    } else {
        let (request_r, request_w) = cloexec_pipe().map_err(|e| os("pipe", e))?;
        let (reply_r, reply_w) = cloexec_pipe().map_err(|e| os("pipe", e))?;
        (Channel::Pipes { request_w, reply_r }, request_r, reply_w)
    };
    let (stdout_r, stdout_w) = cloexec_pipe().map_err(|e| os("pipe", e))?;
    let (stderr_r, stderr_w) = cloexec_pipe().map_err(|e| os("pipe", e))?;
    let (error_r, error_w) = cloexec_pipe().map_err(|e| os("pipe", e))?;
    let devnull = open_devnull().map_err(|e| os("open /dev/null", e))?;

    let rlimit_as = match plan.memory_limit {
        None => None,
        Some(bytes) => {
            let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_AS)
                .map_err(|e| os("getrlimit", e))?;
            // An unprivileged process cannot raise its hard limit: cap at it.
            let lim = (bytes as libc::rlim_t).min(hard);
            Some(libc::rlimit { rlim_cur: lim, rlim_max: lim })
        }
    };
    let max_fd = match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft < CLOSE_LOOP_CAP as libc::rlim_t => soft as libc::c_int,
        _ => CLOSE_LOOP_CAP,
    };

    let child_plan = ChildPlan {
        stdio: [
            devnull.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
            child_3.as_raw_fd(),
            child_4.as_raw_fd(),
        ],
        error_fd: error_w.as_raw_fd(),
        max_fd,
        parent_pid: nix::unistd::getpid().as_raw(),
        rlimit_as,
        cwd: plan.cwd.as_ref().map(|c| c.as_ptr()),
        uid: plan.creds.uid,
        gid: plan.creds.gid,
        groups: plan.creds.groups.as_deref(),
        envp: plan.envp.as_ptr(),
        image: match &plan.image {
            Image::Exec { path, argv } => ChildImage::Exec { path: path.as_ptr(), argv: argv.as_ptr() },
            Image::Native { name } => ChildImage::Native { name },
        },
    };

    // SAFETY: the dispatcher is single-threaded, and in any case the child only runs
    // `child::run`, which makes raw async-signal-safe libc calls on data prepared above
    // (no allocation, no locks, no Drop, never returns): dup2 the pipe ends onto 0..=4 and
    // the error pipe onto 5, close every other fd, setsid, block signals and reset every
    // disposition to SIG_DFL, setrlimit(RLIMIT_AS), setgroups/setgid/setuid, chdir,
    // PR_SET_PDEATHSIG + getppid re-check, empty the signal mask, then execve — or, for a
    // native worker, install envp as `environ`, close the error pipe and call
    // `crate::worker::native_main`, then `_exit`. Any failure is written to the error pipe
    // as (step, errno) followed by `_exit(127)`.
    let fork_result = unsafe { nix::unistd::fork() };
    let pid = match fork_result {
        Err(e) => return Err(os("fork", e)),
        Ok(nix::unistd::ForkResult::Child) => unsafe { super::child::run(&child_plan) },
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
    };

    // Close our copies of the child's ends: the reply/stdout/stderr pipes must see EOF when
    // the child dies, and the error pipe EOF when it execs.
    drop((child_3, child_4, stdout_w, stderr_w, devnull, error_w));

    if let Some(failure) = read_child_failure(&error_r) {
        reap(pid);
        return Err(match failure {
            Ok((ChildStep::Exec, errno)) => SpawnError::Exec {
                target: plan.target.clone(),
                path: match &plan.image {
                    Image::Exec { path, .. } => path.to_string_lossy().into_owned(),
                    Image::Native { name } => name.clone(),
                },
                errno,
            },
            Ok((step, errno)) => SpawnError::ChildSetup { target: plan.target.clone(), step, errno },
            Err(errno) => os("read error pipe", errno),
        });
    }

    let worker = (|| -> std::io::Result<Spawned> {
        let stdout_rx = mio::unix::pipe::Receiver::from(stdout_r);
        let stderr_rx = mio::unix::pipe::Receiver::from(stderr_r);
        stdout_rx.set_nonblocking(true)?;
        stderr_rx.set_nonblocking(true)?;
        Ok(Spawned { pid, channel, stdout_rx, stderr_rx })
    })();
    worker.map_err(|e| {
        // The child is running but unusable; do not leave it behind.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        reap(pid);
        os("set O_NONBLOCK", e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO))
    })
}

/// Blocks until the child execs (EOF, `None`) or reports a failed step. `Some(Err)` when
/// the pipe itself misbehaves or carries a short/unknown record.
fn read_child_failure(error_r: &OwnedFd) -> Option<Result<(ChildStep, Errno), Errno>> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled tail of a local buffer from an fd we own.
        let n = unsafe { libc::read(error_r.as_raw_fd(), buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ if Errno::last() == Errno::EINTR => continue,
            _ => return Some(Err(Errno::last())),
        }
    }
    match got {
        0 => None,
        8 => {
            let step = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let errno = Errno::from_raw(i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]));
            Some(ChildStep::from_u32(step).map(|s| (s, errno)).ok_or(Errno::EPROTO))
        }
        _ => Some(Err(Errno::EPROTO)),
    }
}

/// Waits for a child that is exiting by itself (it `_exit`s right after reporting).
fn reap(pid: Pid) {
    while let Err(Errno::EINTR) = waitpid(pid, None) {}
}

fn open_devnull() -> Result<OwnedFd, Errno> {
    // SAFETY: a static NUL-terminated path; the returned fd is owned right away.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pipe with both ends close-on-exec. pipe2 makes that atomic where it exists; elsewhere
/// the flag is set right after, which is enough because the dispatcher does not fork from
/// another thread in between.
fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds: [RawFd; 2] = [-1, -1];
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    // SAFETY: `fds` is a valid 2-element array for the kernel to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    )))]
    // SAFETY: as above.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    if rc != 0 {
        return Err(Errno::last());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    )))]
    for fd in [&r, &w] {
        // SAFETY: plain fcntl on an fd we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
            return Err(Errno::last());
        }
    }
    Ok((r, w))
}
