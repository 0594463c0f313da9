//! Process spawner: starts one worker process with the fd layout of docs/protocol.md
//! (0 = /dev/null, 1/2 = captured stdout/stderr, 3 = request pipe, 4 = reply pipe) and
//! hands the dispatcher its ends of the four pipes.
//!
//! Everything the child needs is prepared here, before the fork: pipes, C strings for the
//! path/argv/envp, uid/gid and groups, rlimit values, /dev/null. The fork itself is in
//! [`fork`] (the crate's only `fork()`), the child's async-signal-safe steps in [`child`].
//!
//! Workers are put in their own session (`setsid`): a Ctrl-C on the dispatcher's terminal
//! signals only the dispatcher, which then stops its workers in order (STOP frame, then
//! SIGKILL after the shutdown timeout) instead of every process dying mid-request at once.

mod child;
mod fork;
pub mod forkserver;

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// What the worker process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// Fork, then exec `argv`; `argv[0]` is looked up in `PATH` (execvp semantics) before
    /// the fork, using the worker's `PATH` (from `SpawnSpec::env` if set there).
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
    },
    /// Fork without exec: the child calls `crate::worker::native_main(&name)` and exits
    /// with its return value.
    Native {
        /// Registered native worker name.
        name: String,
    },
}

impl fmt::Display for Program {
    /// `python3 app.py` for exec'd programs (shortened past 80 chars), `native:echo` for
    /// native ones.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Program::Exec { argv } => {
                let joined = argv.join(" ");
                match joined.char_indices().nth(80) {
                    Some((cut, _)) => write!(f, "{}…", &joined[..cut]),
                    None => f.write_str(&joined),
                }
            }
            Program::Native { name } => write!(f, "native:{name}"),
        }
    }
}

/// Everything needed to start one worker.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// Pool name (exported as `RUSTWORKERS_POOL`).
    pub pool: String,
    /// Slot index in the pool (exported as `RUSTWORKERS_WORKER_ID`).
    pub worker_id: usize,
    /// What to run.
    pub program: Program,
    /// Added to, or overriding, the dispatcher's environment.
    pub env: Vec<(String, String)>,
    /// Working directory of the worker (relative exec paths resolve against it).
    pub cwd: Option<PathBuf>,
    /// Address-space limit (`RLIMIT_AS`) in MiB.
    pub memory_limit_mb: Option<u64>,
    /// User name or numeric uid to run as (needs root).
    pub user: Option<String>,
    /// Group name or numeric gid to run as (default: the user's primary group).
    pub group: Option<String>,
}

/// The dispatcher's side of a freshly started worker. All four pipe ends are
/// non-blocking and close-on-exec; dropping them closes the pipes. The child is not
/// reaped here: the caller owns `pid` and must `waitpid` it.
#[derive(Debug)]
pub struct SpawnedWorker {
    /// The worker's pid (also its session and process-group id).
    pub pid: nix::unistd::Pid,
    /// Frames to the worker (its fd 3).
    pub request_tx: mio::unix::pipe::Sender,
    /// Frames from the worker (its fd 4).
    pub reply_rx: mio::unix::pipe::Receiver,
    /// The worker's stdout (its fd 1).
    pub stdout_rx: mio::unix::pipe::Receiver,
    /// The worker's stderr (its fd 2).
    pub stderr_rx: mio::unix::pipe::Receiver,
}

/// Which worker a [`SpawnError`] is about; displays as ``api/0 (`python3 app.py`)``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnTarget {
    /// Pool name.
    pub pool: String,
    /// Slot index.
    pub worker_id: usize,
    /// The program, as [`Program`]'s `Display` shows it.
    pub program: String,
}

impl fmt::Display for SpawnTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} (`{}`)", self.pool, self.worker_id, self.program)
    }
}

/// A step of the child's setup between fork and exec, as reported through the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ChildStep {
    /// Moving the pipe ends onto fds 0..=5.
    Fds = 1,
    /// `setsid`.
    Setsid = 2,
    /// Signal mask and dispositions.
    Signals = 3,
    /// `PR_SET_PDEATHSIG`.
    Pdeathsig = 4,
    /// `setrlimit(RLIMIT_AS)`.
    MemoryLimit = 5,
    /// `chdir`.
    Chdir = 6,
    /// `setgroups`.
    Setgroups = 7,
    /// `setgid`.
    Setgid = 8,
    /// `setuid`.
    Setuid = 9,
    /// `execve`.
    Exec = 10,
}

impl ChildStep {
    fn from_u32(v: u32) -> Option<ChildStep> {
        use ChildStep::*;
        [Fds, Setsid, Signals, Pdeathsig, MemoryLimit, Chdir, Setgroups, Setgid, Setuid, Exec]
            .into_iter()
            .find(|s| *s as u32 == v)
    }

    fn name(self) -> &'static str {
        match self {
            ChildStep::Fds => "set up fds",
            ChildStep::Setsid => "setsid",
            ChildStep::Signals => "reset signals",
            ChildStep::Pdeathsig => "set PR_SET_PDEATHSIG",
            ChildStep::MemoryLimit => "set memory limit",
            ChildStep::Chdir => "chdir",
            ChildStep::Setgroups => "setgroups",
            ChildStep::Setgid => "setgid",
            ChildStep::Setuid => "setuid",
            ChildStep::Exec => "exec",
        }
    }
}

/// Why a worker could not be started. When a child was forked and failed, it has already
/// been reaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// The spec cannot be turned into a process (empty argv, NUL byte, bad env name…).
    Invalid {
        /// The worker.
        target: SpawnTarget,
        /// What is wrong.
        reason: String,
    },
    /// `user` or `group` names no account on this system (or the lookup failed).
    UnknownAccount {
        /// The worker.
        target: SpawnTarget,
        /// `user` or `group`.
        kind: &'static str,
        /// The name as configured.
        name: String,
        /// The lookup's errno, if it failed rather than found nothing.
        errno: Option<Errno>,
    },
    /// A call in the dispatcher failed (pipe, open /dev/null, fork, …).
    Os {
        /// The worker.
        target: SpawnTarget,
        /// The failing call.
        call: &'static str,
        /// Its errno.
        errno: Errno,
    },
    /// The program was not found on `PATH`, or `execve` failed in the child.
    Exec {
        /// The worker.
        target: SpawnTarget,
        /// The resolved path (or argv[0] when not found on PATH).
        path: String,
        /// `ENOENT`, `EACCES`, `ENOEXEC`, …
        errno: Errno,
    },
    /// A setup step in the child (chdir, setuid, rlimit, …) failed.
    ChildSetup {
        /// The worker.
        target: SpawnTarget,
        /// The failing step.
        step: ChildStep,
        /// Its errno.
        errno: Errno,
    },
}

impl SpawnError {
    /// The worker the error is about.
    pub fn target(&self) -> &SpawnTarget {
        match self {
            SpawnError::Invalid { target, .. }
            | SpawnError::UnknownAccount { target, .. }
            | SpawnError::Os { target, .. }
            | SpawnError::Exec { target, .. }
            | SpawnError::ChildSetup { target, .. } => target,
        }
    }

    /// The OS error behind this one, if any.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SpawnError::Invalid { .. } => None,
            SpawnError::UnknownAccount { errno, .. } => *errno,
            SpawnError::Os { errno, .. } | SpawnError::Exec { errno, .. } | SpawnError::ChildSetup { errno, .. } => {
                Some(*errno)
            }
        }
    }

    /// True when retrying the same spec cannot help (bad spec, missing program, unknown
    /// user): a pool may park the slot instead of backing off and retrying forever.
    pub fn is_permanent(&self) -> bool {
        match self {
            SpawnError::Invalid { .. } | SpawnError::UnknownAccount { errno: None, .. } => true,
            SpawnError::Exec { errno, .. } => {
                matches!(*errno, Errno::ENOENT | Errno::EACCES | Errno::ENOEXEC | Errno::ENOTDIR)
            }
            SpawnError::ChildSetup { step, .. } => {
                matches!(step, ChildStep::Chdir | ChildStep::Setgid | ChildStep::Setuid | ChildStep::Setgroups)
            }
            _ => false,
        }
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not spawn worker {}: ", self.target())?;
        match self {
            SpawnError::Invalid { reason, .. } => f.write_str(reason),
            SpawnError::UnknownAccount { kind, name, errno: None, .. } => {
                write!(f, "no such {kind} {name:?}")
            }
            SpawnError::UnknownAccount { kind, name, errno: Some(e), .. } => {
                write!(f, "could not look up {kind} {name:?}: {}", e.desc())
            }
            SpawnError::Os { call, errno, .. } => write!(f, "{call}: {}", errno.desc()),
            SpawnError::Exec { path, errno, .. } => write!(f, "exec {path}: {}", errno.desc()),
            SpawnError::ChildSetup { step, errno, .. } => {
                write!(f, "{} in the child: {}", step.name(), errno.desc())
            }
        }
    }
}

impl std::error::Error for SpawnError {}

/// Starts one worker as `spec` says. Returns once the child has exec'd (or, for a native
/// worker, is about to enter `native_main`); a failure of exec or of any setup step in the
/// child is returned as an error with the child already reaped.
pub fn spawn_worker(spec: &SpawnSpec) -> Result<SpawnedWorker, SpawnError> {
    fork::spawn(plan(spec)?)
}

/// A fork-server as the dispatcher holds it: its control socket (its fds 3 and 4) and
/// its output pipes.
#[derive(Debug)]
pub struct SpawnedForkServer {
    pub pid: nix::unistd::Pid,
    /// Blocking, close-on-exec; the fork-server reads requests and writes answers on it.
    pub control: std::os::unix::net::UnixStream,
    pub stdout_rx: mio::unix::pipe::Receiver,
    pub stderr_rx: mio::unix::pipe::Receiver,
}

/// Starts a fork-server process as `spec` says (same environment, limits, user and cwd as
/// a worker), with a Unix socket on its fds 3 and 4 in place of the frame pipes.
pub fn spawn_forkserver(spec: &SpawnSpec) -> Result<SpawnedForkServer, SpawnError> {
    let s = fork::spawn_with(plan(spec)?, true)?;
    match s.channel {
        fork::Channel::Control(control) => {
            Ok(SpawnedForkServer { pid: s.pid, control, stdout_rx: s.stdout_rx, stderr_rx: s.stderr_rx })
        }
        fork::Channel::Pipes { .. } => unreachable!("spawn_with(.., true) makes a socket"),
    }
}

/// Everything `fork::spawn` needs, resolved before the fork.
fn plan(spec: &SpawnSpec) -> Result<fork::Plan, SpawnError> {
    let target = SpawnTarget { pool: spec.pool.clone(), worker_id: spec.worker_id, program: spec.program.to_string() };
    let invalid = |reason: String| SpawnError::Invalid { target: target.clone(), reason };

    let env = build_env(spec).map_err(invalid)?;
    // Native workers get the same envp: the child installs it as `environ` (a pointer
    // store, no allocation) right before entering native_main.
    let envp = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(&kv, "environment variable")
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let image = match &spec.program {
        Program::Exec { argv } => {
            let first = argv.first().ok_or_else(|| invalid("empty argv".to_string()))?;
            let path_var = env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_os_str());
            let path = resolve_program(first, path_var).map_err(|errno| SpawnError::Exec {
                target: target.clone(),
                path: first.clone(),
                errno,
            })?;
            let argv = argv
                .iter()
                .map(|a| cstring(a.as_bytes(), "argument"))
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?;
            let path = cstring(path.as_os_str().as_bytes(), "program path").map_err(invalid)?;
            fork::Image::Exec { path, argv: fork::CStrArray::new(argv) }
        }
        Program::Native { name } => fork::Image::Native { name: name.clone() },
    };

    let cwd = match &spec.cwd {
        Some(dir) => Some(cstring(dir.as_os_str().as_bytes(), "cwd").map_err(invalid)?),
        None => None,
    };
    let creds = resolve_credentials(spec, &target)?;
    let memory_limit = spec.memory_limit_mb.map(|mb| mb.saturating_mul(1024 * 1024));

    Ok(fork::Plan { target, image, envp: fork::CStrArray::new(envp), cwd, creds, memory_limit })
}

/// uid, gid and supplementary groups to switch to, resolved before the fork (the lookups
/// read files and allocate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub uid: Option<libc::uid_t>,
    pub gid: Option<libc::gid_t>,
    /// Set with setgroups when we switch user or group; `None` leaves them alone.
    pub groups: Option<Vec<libc::gid_t>>,
}

fn resolve_credentials(spec: &SpawnSpec, target: &SpawnTarget) -> Result<Credentials, SpawnError> {
    use nix::unistd::{Group, User};
    let unknown = |kind, name: &str, errno| SpawnError::UnknownAccount {
        target: target.clone(),
        kind,
        name: name.to_string(),
        errno,
    };
    let user = match &spec.user {
        None => None,
        Some(name) => {
            let found = match name.parse::<u32>() {
                Ok(uid) => User::from_uid(nix::unistd::Uid::from_raw(uid)),
                Err(_) => User::from_name(name),
            };
            match found {
                Ok(Some(u)) => Some(u),
                // A numeric uid without a passwd entry is still a valid uid to run as.
                Ok(None) if name.parse::<u32>().is_ok() => None,
                Ok(None) => return Err(unknown("user", name, None)),
                Err(e) => return Err(unknown("user", name, Some(e))),
            }
        }
    };
    let uid = match (&spec.user, &user) {
        (_, Some(u)) => Some(u.uid.as_raw()),
        (Some(name), None) => name.parse::<u32>().ok(),
        (None, None) => None,
    };
    let gid = match &spec.group {
        Some(name) => match name.parse::<u32>() {
            Ok(gid) => Some(gid),
            Err(_) => match Group::from_name(name) {
                Ok(Some(g)) => Some(g.gid.as_raw()),
                Ok(None) => return Err(unknown("group", name, None)),
                Err(e) => return Err(unknown("group", name, Some(e))),
            },
        },
        None => user.as_ref().map(|u| u.gid.as_raw()),
    };
    let groups = match (gid, &user) {
        (None, _) => None,
        (Some(gid), Some(u)) => Some(supplementary_groups(u, gid)),
        (Some(gid), None) => Some(vec![gid]),
    };
    Ok(Credentials { uid, gid, groups })
}

/// The user's groups as `initgroups` would set them (it cannot run after fork: it reads
/// /etc/group and allocates).
#[cfg(target_os = "linux")]
fn supplementary_groups(user: &nix::unistd::User, gid: libc::gid_t) -> Vec<libc::gid_t> {
    let name = CString::new(user.name.as_bytes()).ok();
    match name.map(|n| nix::unistd::getgrouplist(&n, nix::unistd::Gid::from_raw(gid))) {
        Some(Ok(list)) => list.into_iter().map(|g| g.as_raw()).collect(),
        _ => vec![gid],
    }
}

#[cfg(not(target_os = "linux"))]
fn supplementary_groups(_user: &nix::unistd::User, gid: libc::gid_t) -> Vec<libc::gid_t> {
    vec![gid]
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString, String> {
    CString::new(bytes).map_err(|_| format!("{what} contains a NUL byte: {:?}", String::from_utf8_lossy(bytes)))
}

/// The worker's environment: the dispatcher's, then `spec.env` (later wins), then the
/// protocol variables, which always win.
fn build_env(spec: &SpawnSpec) -> Result<Vec<(OsString, OsString)>, String> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let mut set = |k: OsString, v: OsString| {
        env.retain(|(old, _)| *old != k);
        env.push((k, v));
    };
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!("invalid environment variable name {k:?}"));
        }
        set(k.into(), v.into());
    }
    let protocol = [
        ("RUSTWORKERS_PROTOCOL", "1".to_string()),
        ("RUSTWORKERS_REQUEST_FD", "3".to_string()),
        ("RUSTWORKERS_REPLY_FD", "4".to_string()),
        ("RUSTWORKERS_POOL", spec.pool.clone()),
        ("RUSTWORKERS_WORKER_ID", spec.worker_id.to_string()),
    ];
    for (k, v) in protocol {
        set(k.into(), v.into());
    }
    Ok(env)
}

/// Default search path when neither the worker's nor the dispatcher's env has `PATH`
/// (what glibc's execvp uses, minus the current directory).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// execvp's lookup, done before the fork: a name with a `/` is used as is (relative to the
/// worker's cwd, since exec runs after chdir); otherwise the first executable regular file
/// in `PATH`. Not found → ENOENT, or EACCES if only non-executable candidates exist.
pub(crate) fn resolve_program(name: &str, path_var: Option<&OsStr>) -> Result<PathBuf, Errno> {
    if name.is_empty() {
        return Err(Errno::ENOENT);
    }
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut denied = false;
    for dir in std::env::split_paths(path_var) {
        // Empty entries mean "current directory" to execvp; a server should not pick
        // programs from wherever it was started, so they are skipped.
        if dir.as_os_str().is_empty() {
            continue;
        }
        let candidate = dir.join(name);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
        denied |= candidate.is_file();
    }
    Err(if denied { Errno::EACCES } else { Errno::ENOENT })
}

fn is_executable_file(path: &Path) -> bool {
    use nix::unistd::{AccessFlags, access};
    path.is_file() && access(path, AccessFlags::X_OK).is_ok()
}

#[cfg(test)]
mod tests;
