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
use crate::spawn;

/// How long one fork request may take before the fork-server is given up on (the loop
/// never waits for it: a timer does).
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
    /// A fork request for `slot` is out; its answer is due by `deadline`. The pool's
    /// other empty slots wait for it (one request at a time).
    Forking { slot: usize, pending: spawn::forkserver::PendingFork, deadline: Instant },
}

/// What asking a pool's fork-server for a worker did.
pub(super) enum ForkAsk {
    /// Asked: the worker comes with the answer.
    Asked,
    /// It is importing the app or answering another request: the slot waits.
    Wait,
    /// No fork-server to ask (or it just failed): start the worker the ordinary way.
    NoServer,
}

/// One pool's fork-server process.
#[derive(Debug)]
pub(super) struct ForkServer {
    pid: Pid,
    /// Non-blocking, registered for reading for the fork-server's whole life.
    control: UnixStream,
    /// Bytes of an answer line not complete yet.
    line: Vec<u8>,
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
    Down {
        retry_at: Instant,
    },
}

impl Dispatcher {
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
                match fs.state {
                    ForkServerState::Starting { deadline } if now >= deadline => {
                        error!(
                            "fork-server of pool {} not ready after {:?}: killed",
                            pool.name(),
                            pool.config.stuck_timeout
                        );
                        self.stop_forkserver(p, now);
                    }
                    ForkServerState::Forking { deadline, .. } if now >= deadline => {
                        warn!(
                            "fork-server of pool {} (pid {}) failed to fork a worker: no answer in time \
                             ({FORK_TIMEOUT:?}); starting it without",
                            pool.name(),
                            fs.pid
                        );
                        self.stop_forkserver(p, now);
                    }
                    _ => {}
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
        if let Err(e) = spawned.control.set_nonblocking(true) {
            error!("fork-server of pool {}: its socket: {e}", cfg.name);
        }
        let mut fs = ForkServer {
            pid: spawned.pid,
            control: spawned.control,
            line: Vec::new(),
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
            CH_CONTROL => self.read_forkserver(p, now),
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

    /// The fork-server's socket is readable: its ready line, a fork answer, or its end.
    fn read_forkserver(&mut self, p: PoolId, now: Instant) {
        loop {
            let Some(PoolForkServer::Running(fs)) = self.forkservers.get_mut(p.0) else { return };
            let line = match spawn::forkserver::read_lines(&mut fs.control, &mut fs.line) {
                Ok(Some(line)) => line,
                Ok(None) => return,
                Err(e) if matches!(fs.state, ForkServerState::Ready) => {
                    // It died (its reaping reports how and replaces it) or closed its
                    // socket: then the next request fails and replaces it.
                    debug!("fork-server of pool {} (pid {}): {e}", self.pools[p.0].name(), fs.pid);
                    let fd = fs.control.as_raw_fd();
                    let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    return;
                }
                Err(e) => {
                    // Starting: it failed to import (its traceback is on its stderr) or
                    // died; forking: the worker starts without it.
                    let what = if matches!(fs.state, ForkServerState::Forking { .. }) {
                        "failed to fork a worker"
                    } else {
                        "stopped before it was ready"
                    };
                    warn!("fork-server of pool {} (pid {}) {what}: {e}", self.pools[p.0].name(), fs.pid);
                    return self.give_up_forkserver(p, now);
                }
            };
            match std::mem::replace(&mut fs.state, ForkServerState::Ready) {
                ForkServerState::Starting { .. } => match serde_json::from_slice::<spawn::forkserver::Ready>(&line) {
                    Ok(ready) if ready.ready => {
                        info!("fork-server of pool {} ready (pid {})", self.pools[p.0].name(), ready.pid);
                        self.dirty.pools.push(p);
                        self.dirty.manage = true;
                    }
                    _ => {
                        warn!("fork-server of pool {}: not a ready line: killed", self.pools[p.0].name());
                        return self.give_up_forkserver(p, now);
                    }
                },
                ForkServerState::Forking { slot, pending, .. } => {
                    match spawn::forkserver::take_answer(pending, &line) {
                        Ok(worker) => self.spawn_worker(p, slot, Some(worker), now),
                        Err(e) => {
                            warn!(
                                "fork-server of pool {} (pid {}) failed to fork a worker: {e}; starting it without",
                                self.pools[p.0].name(),
                                fs.pid
                            );
                            // The next manage starts that slot's worker without it.
                            return self.give_up_forkserver(p, now);
                        }
                    }
                    // The pool's next empty slot, if any, is asked for now.
                    self.dirty.manage = true;
                }
                ForkServerState::Ready => {
                    warn!("fork-server of pool {}: an answer nobody asked for: killed", self.pools[p.0].name());
                    return self.give_up_forkserver(p, now);
                }
            }
        }
    }

    /// A fork-server that broke its protocol or failed a request: stopped, and the pools
    /// managed again (its slots start workers the ordinary way until a new one is ready).
    fn give_up_forkserver(&mut self, p: PoolId, now: Instant) {
        self.stop_forkserver(p, now);
        self.dirty.manage = true;
    }

    /// Ask pool `p`'s fork-server for a worker for `slot`; the answer arrives as an event
    /// (`read_forkserver`), or does not by `FORK_TIMEOUT` (`manage_forkserver`).
    pub(super) fn fork_from_server(&mut self, p: PoolId, slot: usize, now: Instant) -> ForkAsk {
        let Some(PoolForkServer::Running(fs)) = self.forkservers.get_mut(p.0) else { return ForkAsk::NoServer };
        if !matches!(fs.state, ForkServerState::Ready) {
            return ForkAsk::Wait;
        }
        match spawn::forkserver::ask_fork(&mut fs.control, slot) {
            Ok(pending) => {
                let deadline = now + FORK_TIMEOUT;
                fs.state = ForkServerState::Forking { slot, pending, deadline };
                self.arm_pool(p, deadline);
                ForkAsk::Asked
            }
            Err(e) => {
                warn!(
                    "fork-server of pool {} (pid {}) could not be asked for a worker: {e}; starting it without",
                    self.pools[p.0].name(),
                    fs.pid
                );
                self.stop_forkserver(p, now);
                ForkAsk::NoServer
            }
        }
    }

    /// Kill a pool's fork-server (its workers live on: they are the dispatcher's
    /// children); the reap forgets its pid. A preload pool gets a new one later.
    pub(super) fn stop_forkserver(&mut self, p: PoolId, now: Instant) {
        let Some(slot) = self.forkservers.get_mut(p.0) else { return };
        let PoolForkServer::Running(fs) =
            std::mem::replace(slot, PoolForkServer::Down { retry_at: now + RESTART_DELAY })
        else {
            return;
        };
        let reg = self.poll.registry();
        let fd = fs.control.as_raw_fd();
        let _ = reg.deregister(&mut SourceFd(&fd));
        // A pending fork's pipe ends close with `fs`: a worker forked meanwhile reads EOF
        // and exits (it is our child, reaped like any).
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
