//! The child's side of a spawn, between `fork()` and `execve` (or `native_main`).
//!
//! Only raw, async-signal-safe libc calls on data prepared by the parent: no allocation,
//! no locks, no logging, no Drop (nothing here returns). Each failing step writes
//! `(step as u32 BE, errno as i32 BE)` to the error pipe and `_exit(127)`s.
//!
//! Order matters in three places: fds are moved before anything else so failures can be
//! reported on a known fd and no dispatcher fd survives a later step; PR_SET_PDEATHSIG is
//! set after setuid/setgid because the kernel clears it when credentials change; the
//! signal mask is emptied last, once every disposition is back to SIG_DFL.

use libc::{c_char, c_int};
use nix::errno::Errno;

use super::ChildStep;

/// Raw view of the plan, valid in the child because the parent's memory is copied.
pub(super) struct ChildPlan<'a> {
    /// Sources for fds 0, 1, 2, 3, 4.
    pub stdio: [c_int; 5],
    /// Write end of the CLOEXEC error pipe; moved to fd 5.
    pub error_fd: c_int,
    /// Fallback bound for closing fds when close_range is unavailable.
    pub max_fd: c_int,
    pub parent_pid: libc::pid_t,
    pub rlimit_as: Option<libc::rlimit>,
    pub cwd: Option<*const c_char>,
    pub uid: Option<libc::uid_t>,
    pub gid: Option<libc::gid_t>,
    pub groups: Option<&'a [libc::gid_t]>,
    pub envp: *const *const c_char,
    pub image: ChildImage<'a>,
}

pub(super) enum ChildImage<'a> {
    Exec { path: *const c_char, argv: *const *const c_char },
    Native { name: &'a str },
}

/// fd the error pipe lives on in the child; everything above it is closed.
const ERROR_FD: c_int = 5;

/// Highest signal number + 1.
#[cfg(any(target_os = "linux", target_os = "android"))]
const NSIG: c_int = 65;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const NSIG: c_int = 32;

/// Runs in the freshly forked child; never returns.
///
/// # Safety
/// Call only in the child right after `fork()`, with a plan whose pointers are valid.
pub(super) unsafe fn run(plan: &ChildPlan<'_>) -> ! {
    // SAFETY (whole body): raw libc calls on fds and pointers prepared by the parent.
    unsafe {
        let error_fd = match setup_fds(plan) {
            Ok(fd) => fd,
            Err((fd, errno)) => fail(fd, ChildStep::Fds, errno),
        };
        let check = |ok: bool, step: ChildStep| {
            if !ok {
                fail(error_fd, step, Errno::last_raw())
            }
        };

        // Own session and process group: terminal signals go to the dispatcher only.
        check(libc::setsid() != -1, ChildStep::Setsid);

        // Block everything while dispositions are reset, so no inherited handler (e.g.
        // signal-hook's, whose self-pipe is now closed) can run in this process.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        check(libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut()) == 0, ChildStep::Signals);
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut dfl.sa_mask);
        for sig in 1..NSIG {
            // EINVAL for SIGKILL/SIGSTOP and libc-reserved signals: nothing to reset.
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }

        if let Some(lim) = &plan.rlimit_as {
            check(libc::setrlimit(libc::RLIMIT_AS, lim) == 0, ChildStep::MemoryLimit);
        }

        // Groups first (needs root), then gid, then uid (after which we cannot change
        // groups any more).
        if let Some(groups) = plan.groups {
            check(libc::setgroups(groups.len() as _, groups.as_ptr()) == 0, ChildStep::Setgroups);
        }
        if let Some(gid) = plan.gid {
            check(libc::setgid(gid) == 0, ChildStep::Setgid);
        }
        if let Some(uid) = plan.uid {
            check(libc::setuid(uid) == 0, ChildStep::Setuid);
        }

        if let Some(dir) = plan.cwd {
            check(libc::chdir(dir) == 0, ChildStep::Chdir);
        }

        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0, ChildStep::Pdeathsig);
            // The dispatcher may have died before prctl: then nobody would kill us.
            if libc::getppid() != plan.parent_pid {
                libc::_exit(1);
            }
        }

        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        check(libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) == 0, ChildStep::Signals);

        match plan.image {
            ChildImage::Exec { path, argv } => {
                libc::execve(path, argv, plan.envp);
                fail(error_fd, ChildStep::Exec, Errno::last_raw())
            }
            ChildImage::Native { name } => {
                set_environ(plan.envp);
                libc::close(error_fd);
                let code = crate::worker::native_main(name);
                libc::_exit(code)
            }
        }
    }
}

/// Puts the five stdio sources on 0..=4 and the error pipe on [`ERROR_FD`], then closes
/// every fd above it. Returns the error fd, or the fd to report on and the errno.
unsafe fn setup_fds(plan: &ChildPlan<'_>) -> Result<c_int, (c_int, c_int)> {
    unsafe {
        let mut src = plan.stdio;
        let mut err = plan.error_fd;
        // A source already sitting on one of the target slots 0..=5 (possible when the
        // dispatcher started with closed stdio) would be clobbered by an earlier dup2:
        // lift such sources above the slots first.
        for fd in src.iter_mut().chain(std::iter::once(&mut err)) {
            if *fd <= ERROR_FD {
                let lifted = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, ERROR_FD + 1);
                if lifted < 0 {
                    return Err((plan.error_fd, Errno::last_raw()));
                }
                *fd = lifted;
            }
        }
        // dup2 onto a different fd clears CLOEXEC on the copy, which is what 0..=4 need;
        // the error pipe must keep it so that a successful exec closes it.
        if libc::dup2(err, ERROR_FD) < 0 || libc::fcntl(ERROR_FD, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
            return Err((err, Errno::last_raw()));
        }
        for (target, fd) in src.iter().enumerate() {
            if libc::dup2(*fd, target as c_int) < 0 {
                return Err((ERROR_FD, Errno::last_raw()));
            }
        }
        close_from(ERROR_FD + 1, plan.max_fd);
        Ok(ERROR_FD)
    }
}

/// Closes every fd >= `first`.
unsafe fn close_from(first: c_int, max_fd: c_int) {
    unsafe {
        #[cfg(target_os = "linux")]
        if libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, 0 as libc::c_uint) == 0 {
            return;
        }
        // Kernels before 5.9 (ENOSYS) and other systems: close one by one.
        for fd in first..max_fd {
            libc::close(fd);
        }
    }
}

#[cfg(not(target_vendor = "apple"))]
unsafe extern "C" {
    static mut environ: *const *const c_char;
}

/// Installs `envp` as the process environment: a pointer store, no allocation (setenv is
/// not async-signal-safe). The arrays live in this process's copy of the parent's heap.
unsafe fn set_environ(envp: *const *const c_char) {
    unsafe {
        #[cfg(not(target_vendor = "apple"))]
        {
            environ = envp;
        }
        #[cfg(target_vendor = "apple")]
        {
            *libc::_NSGetEnviron() = envp as *mut *mut c_char;
        }
    }
}

/// Reports `(step, errno)` on `fd` and exits 127 (the shell's "could not execute").
unsafe fn fail(fd: c_int, step: ChildStep, errno: c_int) -> ! {
    unsafe {
        let mut rec = [0u8; 8];
        rec[..4].copy_from_slice(&(step as u32).to_be_bytes());
        rec[4..].copy_from_slice(&errno.to_be_bytes());
        let mut off = 0;
        while off < rec.len() {
            let n = libc::write(fd, rec[off..].as_ptr().cast(), rec.len() - off);
            if n > 0 {
                off += n as usize;
            } else if n < 0 && Errno::last_raw() == libc::EINTR {
                continue;
            } else {
                break;
            }
        }
        libc::_exit(127)
    }
}
