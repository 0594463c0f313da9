//! Fork-servers of `preload = true` pools: one process per pool that imported the app
//! once and forks its workers on request (workers/rustworkers/forkserver.py).
//!
//! The dispatcher stays the one supervisor: it is a child subreaper, the fork-server
//! double-forks, so every worker is the dispatcher's child, reaped and restarted like one
//! it forked itself. A fork-server that dies, hangs or fails to start costs only speed:
//! the pool's workers are then started the ordinary way (fork + exec) while a new
//! fork-server is started after `RESTART_DELAY`.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::Interest;
use mio::unix::SourceFd;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::keys::PoolId;
use super::output::{self, Capture, OutputPipe, Which};
use super::{Dispatcher, Subreaper, TAG_FORKSERVER, token, tuning};
use crate::spawn::{self, SpawnedWorker};

/// How long one fork request may take before the fork-server is given up on.
const FORK_TIMEOUT: Duration = Duration::from_millis(250);
/// Wait before starting a new fork-server after one died or failed.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Token sub-channels of a fork-server (`key = pool * 4 + channel`).
const CH_CONTROL: usize = 0;
const CH_STDOUT: usize = 1;
const CH_STDERR: usize = 2;

/// Where a pool's fork-server is.
#[derive(Debug)]
pub(super) enum ForkServerState {
    /// Importing the app; the pool's workers wait for it until `deadline`.
    Starting { deadline: Instant },
    /// Takes fork requests.
    Ready,
}

/// One pool's fork-server process.
#[derive(Debug)]
pub(super) struct ForkServer {
    pid: Pid,
    control: UnixStream,
    state: ForkServerState,
    stdout: Option<OutputPipe>,
    stderr: Option<OutputPipe>,
    capture: Capture,
}

/// A pool's fork-server slot.
#[derive(Debug, Default)]
pub(super) enum PoolForkServer {
    /// Not a preload pool (or not started yet).
    #[default]
    None,
    Running(Box<ForkServer>),
    /// Died or failed: workers start the ordinary way until a new one is started then.
    Down { retry_at: Instant },
}

impl Dispatcher {
    /// Whether the pool's workers must wait (its fork-server is still importing the app).
    pub(super) fn forkserver_starting(&self, p: PoolId) -> bool {
        matches!(
            self.forkservers.get(p.0),
            Some(PoolForkServer::Running(fs)) if matches!(fs.state, ForkServerState::Starting { .. })
        )
    }

    /// Start the pool's fork-server if it is a preload pool without one (and its retry
    /// time has come); give up on one that did not get ready in time.
    pub(super) fn manage_forkserver(&mut self, p: PoolId, now: Instant) {
        if self.forkservers.len() <= p.0 {
            self.forkservers.resize_with(p.0 + 1, PoolForkServer::default);
        }
        let pool = &self.pools[p.0];
        if pool.retired || !pool.config.preload || pool.is_degraded() {
            return; // a degraded pool starts nothing until it recovers or is reloaded
        }
        if self.subreaper == Subreaper::NotTried {
            self.subreaper = super::become_subreaper(); // a reload added a preload pool
        }
        if self.subreaper != Subreaper::Yes {
            return;
        }
        let pool = &self.pools[p.0];
        match &self.forkservers[p.0] {
            PoolForkServer::Running(fs) => {
                if let ForkServerState::Starting { deadline } = fs.state
                    && now >= deadline
                {
                    error!("fork-server of pool {} not ready after {:?}: killed", pool.name(), pool.config.stuck_timeout);
                    self.stop_forkserver(p, now);
                }
                return;
            }
            PoolForkServer::Down { retry_at } if now < *retry_at => {
                self.arm_pool(p, *retry_at);
                return;
            }
            _ => {}
        }
        let cfg = &pool.config;
        let Some(app) = cfg.worker.python_app() else { return };
        let mut args = vec!["forkserver".to_string()];
        args.extend(app.args());
        let mut spec = super::workers::spawn_spec(cfg, 0);
        let cmd = crate::python::shim_command(app.interpreter, &args, app.module_path);
        spec.program = spawn::Program::Exec { argv: cmd.argv };
        let name = format!("{}/forkserver", cfg.name);
        let spawned = match spawn::spawn_forkserver(&spec) {
            Ok(s) => s,
            Err(e) => {
                error!("fork-server of pool {} could not be started: {e}", cfg.name);
                self.forkservers[p.0] = PoolForkServer::Down { retry_at: now + RESTART_DELAY };
                self.arm_pool(p, now + RESTART_DELAY);
                return;
            }
        };
        let deadline = now + cfg.stuck_timeout;
        let mut fs = ForkServer {
            pid: spawned.pid,
            control: spawned.control,
            state: ForkServerState::Starting { deadline },
            stdout: Some(OutputPipe::new(spawned.stdout_rx)),
            stderr: Some(OutputPipe::new(spawned.stderr_rx)),
            capture: Capture::new(name, spawned.pid.as_raw(), tuning::max_output_rate(cfg), now),
        };
        fs.capture.ready(); // its lines are logged as they come
        let reg = self.poll.registry();
        let fd = fs.control.as_raw_fd();
        let _ = reg.register(&mut SourceFd(&fd), token(TAG_FORKSERVER, p.0 * 4 + CH_CONTROL), Interest::READABLE);
        if let Some(o) = fs.stdout.as_mut() {
            let _ = reg.register(&mut o.rx, token(TAG_FORKSERVER, p.0 * 4 + CH_STDOUT), Interest::READABLE);
        }
        if let Some(o) = fs.stderr.as_mut() {
            let _ = reg.register(&mut o.rx, token(TAG_FORKSERVER, p.0 * 4 + CH_STDERR), Interest::READABLE);
        }
        info!("fork-server of pool {} started (pid {}): importing the app", cfg.name, fs.pid);
        self.forkserver_pids.insert(fs.pid.as_raw(), p);
        self.forkservers[p.0] = PoolForkServer::Running(Box::new(fs));
        self.arm_pool(p, deadline);
    }

    /// An event on a fork-server's socket or output.
    pub(super) fn forkserver_event(&mut self, key: usize) {
        let (p, channel) = (PoolId(key / 4), key % 4);
        let now = Instant::now();
        let Some(PoolForkServer::Running(fs)) = self.forkservers.get_mut(p.0) else { return };
        match channel {
            CH_CONTROL => {
                if !matches!(fs.state, ForkServerState::Starting { .. }) {
                    return; // a ready one only answers requests, read where they are made
                }
                let line = spawn::forkserver::read_line(&mut fs.control, now + FORK_TIMEOUT);
                match line.ok().and_then(|l| serde_json::from_slice::<spawn::forkserver::Ready>(&l).ok()) {
                    Some(ready) if ready.ready => {
                        let fd = fs.control.as_raw_fd();
                        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                        fs.state = ForkServerState::Ready;
                        info!("fork-server of pool {} ready (pid {})", self.pools[p.0].name(), ready.pid);
                        self.dirty.pools.push(p);
                        self.dirty.manage = true;
                    }
                    _ => {
                        // EOF (it failed to import: its traceback is on its stderr) or junk.
                        self.stop_forkserver(p, now);
                        self.dirty.manage = true;
                    }
                }
            }
            CH_STDOUT | CH_STDERR => {
                let which = if channel == CH_STDOUT { Which::Stdout } else { Which::Stderr };
                let pipe = if channel == CH_STDOUT { &mut fs.stdout } else { &mut fs.stderr };
                // Only import-time output: a few bounded turns, then whatever is left
                // waits (a fork-server that floods its pipe blocks itself, not us).
                output::read_turns(&mut fs.capture, pipe, which, &mut self.scratch, self.poll.registry(), now, 16);
            }
            _ => {}
        }
    }

    /// A worker for slot `slot` of pool `p` from its fork-server: `None` when the pool
    /// has no ready fork-server or it failed (then it is stopped, and the caller spawns
    /// the worker the ordinary way).
    pub(super) fn fork_from_server(&mut self, p: PoolId, slot: usize, now: Instant) -> Option<SpawnedWorker> {
        let Some(PoolForkServer::Running(fs)) = self.forkservers.get_mut(p.0) else { return None };
        if !matches!(fs.state, ForkServerState::Ready) {
            return None;
        }
        match spawn::forkserver::fork_worker(&mut fs.control, slot, FORK_TIMEOUT) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(
                    "fork-server of pool {} (pid {}) failed to fork a worker: {e}; starting it without",
                    self.pools[p.0].name(),
                    fs.pid
                );
                self.stop_forkserver(p, now);
                None
            }
        }
    }

    /// Kill a pool's fork-server (its workers live on: they are the dispatcher's
    /// children); the reap forgets its pid. A preload pool gets a new one later.
    pub(super) fn stop_forkserver(&mut self, p: PoolId, now: Instant) {
        let Some(slot) = self.forkservers.get_mut(p.0) else { return };
        let PoolForkServer::Running(fs) = std::mem::replace(slot, PoolForkServer::Down { retry_at: now + RESTART_DELAY })
        else {
            return;
        };
        let reg = self.poll.registry();
        let fd = fs.control.as_raw_fd();
        if matches!(fs.state, ForkServerState::Starting { .. }) {
            let _ = reg.deregister(&mut SourceFd(&fd));
        }
        for mut o in [fs.stdout, fs.stderr].into_iter().flatten() {
            let _ = reg.deregister(&mut o.rx);
        }
        let _ = kill(fs.pid, Signal::SIGKILL);
        debug!("fork-server of pool {} (pid {}) stopped", self.pools[p.0].name(), fs.pid);
        if !self.pools[p.0].retired && self.pools[p.0].config.preload {
            self.arm_pool(p, now + RESTART_DELAY);
        }
    }

    /// A reload changed the pool: its fork-server (if any) goes, and a new one (if it
    /// preloads now) starts right away rather than after `RESTART_DELAY`.
    pub(super) fn replace_forkserver(&mut self, p: PoolId, now: Instant) {
        self.stop_forkserver(p, now);
        if let Some(slot) = self.forkservers.get_mut(p.0) {
            *slot = PoolForkServer::None;
        }
    }

    /// Every fork-server, at stop or when pools change.
    pub(super) fn stop_all_forkservers(&mut self, now: Instant) {
        for p in 0..self.forkservers.len() {
            self.stop_forkserver(PoolId(p), now);
            self.forkservers[p] = PoolForkServer::None;
        }
    }

    /// A reaped child that is a fork-server (`true`), logged; `false` for other pids.
    pub(super) fn forkserver_reaped(&mut self, pid: Pid, how: &str) -> bool {
        let Some(p) = self.forkserver_pids.remove(&pid.as_raw()) else { return false };
        let now = Instant::now();
        let current = matches!(self.forkservers.get(p.0), Some(PoolForkServer::Running(fs)) if fs.pid == pid);
        if current {
            warn!(
                "fork-server of pool {} (pid {pid}) {how}; its workers live on, new ones start without it until it is back",
                self.pools[p.0].name()
            );
            self.stop_forkserver(p, now);
            self.dirty.pools.push(p);
        } else {
            debug!("old fork-server of pool {} (pid {pid}) {how}", self.pools[p.0].name());
        }
        true
    }
}
