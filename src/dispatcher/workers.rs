//! Worker processes as the dispatcher sees them: spawning into pool slots, writing
//! request frames, reading and checking reply frames, death, and supervision (stuck
//! workers, reaping, restarts).
//!
//! A worker's death is seen by reply-pipe EOF, a failed write, a kill, or SIGCHLD.
//! Whichever comes first records it (`Dirty::dying`); `worker_died` then reads the reply
//! pipe to its end before failing anything, so every answer the worker sent is delivered
//! (a reload or recycling retires workers that answer and exit at once). The reap decides
//! the restart, because only the exit status says whether the slot is parked.

use std::io::{self, Read, Write};
use std::time::Instant;

use log::{debug, error, info, log, warn};
use mio::Interest;
use mio::unix::pipe::{Receiver, Sender};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::forkservers::ForkAsk;
use super::output::{Capture, OutputPipe, Turn, Which};
use super::timers::{Armed, Timer};
use super::{
    Dispatcher, Phase, PoolId, ReqId, ReqState, TAG_WORKER_REPLY, TAG_WORKER_REQUEST, TAG_WORKER_STDERR,
    TAG_WORKER_STDOUT, WorkerKey, token, tuning,
};
use crate::config::WorkerKind;
use crate::ipc::{self, ConfigMeta, Event, Frame, FrameDecoder, FrameOrder, FrameType};
use crate::pool::{AfterExit, Exit};
use crate::spawn::{self, Program, SpawnSpec, SpawnedWorker};

/// Bytes read from one reply pipe per turn (the rest next turn).
const REPLY_TURN_BUDGET: usize = 1 << 20;
/// Most bytes read from a dead worker's reply pipe: what it wrote before dying is in the
/// pipe buffer (at most a few hundred KiB on Linux); a child it forked could keep
/// writing, so the drain is bounded.
const DEATH_DRAIN_LIMIT: usize = 16 << 20;
/// Frames waiting toward one worker's request pipe before no more requests are handed
/// to it (a frame is always accepted when nothing waits, so any size fits).
const MAX_WORKER_BACKLOG: usize = 1 << 20;

/// Only requests whose frame is at most this big are prefetched: a copy is kept until the
/// answer, and a big body's cost dwarfs the wake-up that prefetch saves.
const MAX_PREFETCH_FRAME: usize = 64 * 1024;

/// How a worker was picked for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// Within its credits: it starts the request as soon as it reads it.
    Credit,
    /// Beyond its credits (HELLO `prefetch`): it queues the request unstarted.
    Prefetch,
}

/// Where a worker process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcState {
    /// Started, HELLO not yet received.
    Starting,
    Ready,
    /// STOP sent: no new requests; it answers what it holds and exits.
    Stopping,
    /// Dead or being killed: pipes closed, waiting for the reap (SIGKILL after
    /// `exit_grace`).
    Exiting {
        since: Instant,
    },
}

/// Whether the worker was sent SIGKILL (so a second one is pointless).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    NotSent,
    /// SIGUSR2 was sent at this time: SIGKILL follows after `stuck_grace`.
    Warned(Instant),
    Sent,
}

/// One worker process.
#[derive(Debug)]
pub struct WorkerProc {
    serial: u64,
    pool: PoolId,
    /// Its slot in the pool; `None` once retired (reload, shrink).
    slot: Option<usize>,
    pid: Pid,
    request_tx: Option<Sender>,
    tx_buf: Vec<u8>,
    tx_pos: usize,
    /// The request pipe has been full since then (a worker that stops reading is stuck).
    tx_blocked_since: Option<Instant>,
    reply_rx: Option<Receiver>,
    decoder: FrameDecoder,
    stdout: Option<OutputPipe>,
    stderr: Option<OutputPipe>,
    capture: Capture,
    state: ProcState,
    kill: Kill,
    /// The protocol state (credits, requests held, streams, late ids) and its rules:
    /// the one validator shared with the conformance kit.
    order: FrameOrder,
    last_heartbeat: Instant,
    started: Instant,
    /// When it said HELLO (`None`: it never did, so its death is a failed start).
    ready_at: Option<Instant>,
    served: u64,
    armed: Armed,
    /// Connections whose WebSocket messages wait for room in this worker's pipe.
    ws_waiters: Vec<super::ConnKey>,
    /// It said HELLO `websocket`: it may be given `WS_OPEN`.
    websocket: bool,
    /// When a reload or shrink retired it: its open WebSockets get until
    /// `shutdown_timeout` after this, then are closed with 1001.
    retired_at: Option<Instant>,
}

impl WorkerProc {
    fn free_credits(&self) -> usize {
        self.order.free_credits()
    }

    fn backlog(&self) -> usize {
        self.tx_buf.len() - self.tx_pos
    }

    fn name(&self) -> &str {
        &self.capture.name
    }

    fn alive(&self) -> bool {
        !matches!(self.state, ProcState::Exiting { .. })
    }
}

/// Build the spawn spec for one slot of a pool.
pub(super) fn spawn_spec(pool: &crate::config::PoolConfig, slot: usize) -> SpawnSpec {
    let mut env: Vec<(String, String)> = pool.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let program = match (&pool.worker, pool.worker.python_app()) {
        (WorkerKind::Native(name), _) => Program::Native { name: name.clone() },
        (WorkerKind::Command(argv), _) => Program::Exec { argv: argv.clone() },
        (_, Some(app)) => {
            let cmd = crate::python::shim_command(app.interpreter, &app.args(), app.module_path);
            if let Some(path) = cmd.pythonpath {
                env.push(("PYTHONPATH".into(), path));
            }
            env.push(("PYTHONUNBUFFERED".into(), "1".into()));
            Program::Exec { argv: cmd.argv }
        }
        // Every other kind is a Python app; an empty argv would fail to spawn, counted.
        (_, None) => Program::Exec { argv: Vec::new() },
    };
    SpawnSpec {
        pool: pool.name.clone(),
        worker_id: slot,
        program,
        env,
        cwd: pool.cwd.clone(),
        memory_limit_mb: pool.memory_limit_mb,
        user: pool.user.clone(),
        group: pool.group.clone(),
    }
}

impl Dispatcher {
    /// Start a process in every empty slot that is due, and arm each pool's next event.
    pub(super) fn manage_pools(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        for p in 0..self.pools.len() {
            self.manage_forkserver(PoolId(p), now);
            let mut waiting = false;
            for slot in self.pools[p].slots_to_spawn(now) {
                match self.fork_from_server(PoolId(p), slot, now) {
                    ForkAsk::NoServer => self.spawn_worker(PoolId(p), slot, None, now),
                    // One request at a time: the other slots wait for its answer (or for
                    // the app's import), which marks the pools for management again; its
                    // deadline is armed. Arming the due slots' time would spin.
                    ForkAsk::Asked | ForkAsk::Wait => {
                        waiting = true;
                        break;
                    }
                }
            }
            if waiting {
                continue;
            }
            if let Some(at) = self.pools[p].next_event() {
                self.arm_pool(PoolId(p), at);
            }
        }
    }

    /// Start a worker in `slot`, or take the one a fork-server forked for it (`forked`).
    /// A forked worker whose slot is no longer wanted (a stop, a resize, a reload since the
    /// request) is killed; it is our child, reaped like any.
    pub(super) fn spawn_worker(&mut self, p: PoolId, slot: usize, forked: Option<SpawnedWorker>, now: Instant) {
        let name = format!("{}/{}", self.pools[p.0].name(), slot);
        if let Some(w) = &forked
            && (matches!(self.phase, Phase::Stopping { .. })
                || self.pools[p.0].retired
                || !self.pools[p.0].slots_to_spawn(now).contains(&slot))
        {
            debug!("worker {name} forked after its slot was no longer wanted: killed");
            let _ = kill(w.pid, Signal::SIGKILL);
            return;
        }
        let how = if forked.is_some() { " by the fork-server" } else { "" };
        let pool = &self.pools[p.0];
        // The ordinary spawn's spec (command line, shim lookup) only when it is needed.
        let spawned = match forked.map_or_else(|| spawn::spawn_worker(&spawn_spec(&pool.config, slot)), Ok) {
            Ok(s) => s,
            Err(e) => {
                error!("worker {name} could not be started: {e}");
                // Counted like a crash so the slot backs off instead of spinning.
                let after = self.pools[p.0].on_spawn_failed(slot, now);
                self.log_after_exit(p, &name, after, None);
                return;
            }
        };
        let entry = self.workers.vacant_entry();
        let key = WorkerKey(entry.key());
        let serial = self.next_serial;
        self.next_serial += 1;
        let cfg = &pool.config;
        let mut w = WorkerProc {
            serial,
            pool: p,
            slot: Some(slot),
            pid: spawned.pid,
            request_tx: Some(spawned.request_tx),
            tx_buf: Vec::new(),
            tx_pos: 0,
            tx_blocked_since: None,
            reply_rx: Some(spawned.reply_rx),
            decoder: FrameDecoder::new(ipc::frame_limit_for_body(cfg.max_frame_bytes)),
            stdout: Some(OutputPipe::new(spawned.stdout_rx)),
            stderr: Some(OutputPipe::new(spawned.stderr_rx)),
            capture: Capture::new(name, spawned.pid.as_raw(), tuning::max_output_rate(cfg), now),
            state: ProcState::Starting,
            kill: Kill::NotSent,
            order: FrameOrder::new(),
            last_heartbeat: now,
            started: now,
            ready_at: None,
            served: 0,
            armed: Armed::default(),
            ws_waiters: Vec::new(),
            websocket: false,
            retired_at: None,
        };
        let reg = self.poll.registry();
        let ok = w
            .reply_rx
            .as_mut()
            .is_some_and(|r| reg.register(r, token(TAG_WORKER_REPLY, key.0), Interest::READABLE).is_ok())
            && w.request_tx
                .as_mut()
                .is_some_and(|t| reg.register(t, token(TAG_WORKER_REQUEST, key.0), Interest::WRITABLE).is_ok())
            && w.stdout
                .as_mut()
                .is_some_and(|o| reg.register(&mut o.rx, token(TAG_WORKER_STDOUT, key.0), Interest::READABLE).is_ok())
            && w.stderr
                .as_mut()
                .is_some_and(|o| reg.register(&mut o.rx, token(TAG_WORKER_STDERR, key.0), Interest::READABLE).is_ok());
        let config = ConfigMeta {
            // 2: the dispatcher relays WebSockets to workers that say so in HELLO.
            protocol: 2,
            pool: cfg.name.clone(),
            worker_id: slot,
            heartbeat_interval: cfg.heartbeat_interval.as_secs_f64(),
            timeout: cfg.timeout.as_secs_f64(),
            log_level: cfg.log_level.clone(),
            kwargs: cfg.kwargs.clone(),
            max_frame_bytes: ipc::frame_limit_for_body(self.config.server.limits.max_body_bytes),
        };
        let config_sent = ipc::encode_json(&mut w.tx_buf, FrameType::Config, 0, &config, &[]);
        info!("worker {} started (pid {}){how}", w.name(), w.pid);
        self.pids.insert(w.pid.as_raw(), key);
        self.pools[p.0].occupy(slot, key);
        entry.insert(w);
        self.arm_worker(key, now);
        if let Err(e) = config_sent {
            self.dirty.dying.push((key, format!("could not be sent its CONFIG: {e}")));
            return;
        }
        if !ok {
            self.dirty.dying.push((key, "could not register its pipes".into()));
            return;
        }
        self.flush_worker(key);
    }

    /// Hand queued requests to workers with free credits. A request waits (and is
    /// answered 504 at its deadline if it must) while its client has
    /// `max_connection_buffer` unread, or, while the buffer budget is spent, anything
    /// unread: the clients holding the memory wait, the others are served.
    pub(super) fn pump_pool(&mut self, p: PoolId, _now: Instant) {
        // Finished requests leave the deadline list here, not only when the pool's timer
        // fires: answers come about in order, so the list stays as short as what is open.
        while let Some(&(_, id)) = self.pools[p.0].deadlines.front() {
            if self.inflight.contains_key(&id) {
                break;
            }
            self.pools[p.0].deadlines.pop_front();
        }
        if self.pools[p.0].queue_len() == 0 {
            return;
        }
        let cap = tuning::max_connection_buffer(&self.config.server);
        let candidates: Vec<ReqId> = self.pools[p.0].queued().take(256).collect();
        let mut given: Vec<WorkerKey> = Vec::new();
        let exhausted = self.budget.exhausted();
        for id in candidates {
            let Some(inf) = self.inflight.get(&id) else {
                self.pools[p.0].dequeue(id);
                continue;
            };
            // A client with `cap` unread waits; past the global budget, so does every
            // client with anything unread (the ones holding the memory), while clients
            // that read their answers are still served.
            let limit = if exhausted { 1 } else { cap };
            if let Some(c) = inf.conn
                && self.conns.get(c.0).is_some_and(|c| c.unsent() >= limit)
            {
                continue;
            }
            let socket = matches!(inf.kind, super::ReqKind::Socket { .. });
            let prefetchable = !socket && inf.frame_len().is_some_and(|n| n <= MAX_PREFETCH_FRAME);
            let Some((key, pick)) = self.pick_worker(p, socket, prefetchable) else { break };
            let Some(inf) = self.inflight.get_mut(&id) else { continue };
            let ReqState::Queued { frame } = std::mem::replace(&mut inf.state, ReqState::InWorker(key)) else {
                continue;
            };
            if pick == Pick::Prefetch {
                // Kept until answered, in case the worker dies before starting it.
                inf.state = ReqState::Prefetched { worker: key, frame: frame.clone() };
                self.hold(0, frame.len() as u64);
            }
            self.pools[p.0].dequeue(id);
            let w = &mut self.workers[key.0];
            if socket {
                w.order.give_socket(id.0);
            } else {
                w.order.give(id.0);
            }
            if w.tx_buf.is_empty() {
                w.tx_buf = frame; // the budget already counts it
            } else {
                w.tx_buf.extend_from_slice(&frame);
            }
            if !given.contains(&key) {
                given.push(key);
            }
        }
        // One write per worker for everything given in this pass.
        for key in given {
            self.flush_worker(key);
        }
    }

    /// The ready worker with a free credit and room in its pipe, round-robin from the
    /// pool's pick position. When every worker's credits are taken and the request may
    /// be prefetched, the worker with the most prefetch room (the least queued).
    fn pick_worker(&mut self, p: PoolId, socket: bool, prefetchable: bool) -> Option<(WorkerKey, Pick)> {
        let pool = &mut self.pools[p.0];
        let n = pool.slots.len();
        let usable = |w: &WorkerProc| {
            w.state == ProcState::Ready && w.backlog() < MAX_WORKER_BACKLOG && (w.websocket || !socket)
        };
        for i in 0..n {
            let slot = (pool.next_pick + i) % n;
            if let Some(key) = pool.slots[slot].worker()
                && let Some(w) = self.workers.get(key.0)
                && usable(w)
                && w.free_credits() > 0
            {
                pool.next_pick = (slot + 1) % n;
                return Some((key, Pick::Credit));
            }
        }
        if !prefetchable {
            return None;
        }
        let mut best: Option<(usize, WorkerKey)> = None;
        for i in 0..n {
            let slot = (pool.next_pick + i) % n;
            if let Some(key) = pool.slots[slot].worker()
                && let Some(w) = self.workers.get(key.0)
                && usable(w)
            {
                let room = w.order.free_prefetch();
                if room > 0 && best.is_none_or(|(r, _)| room > r) {
                    best = Some((room, key));
                }
            }
        }
        best.map(|(_, key)| (key, Pick::Prefetch))
    }

    /// Write buffered frames to a worker's request pipe. A failed write records the
    /// worker as dying; the death is handled after the batch.
    pub(super) fn flush_worker(&mut self, key: WorkerKey) {
        let Some(w) = self.workers.get_mut(key.0) else { return };
        let before = w.backlog();
        let Some(tx) = w.request_tx.as_mut() else { return };
        let mut failed = None;
        while w.tx_pos < w.tx_buf.len() {
            match tx.write(&w.tx_buf[w.tx_pos..]) {
                Ok(n) => w.tx_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let written = before - w.backlog();
        if w.tx_pos == w.tx_buf.len() {
            w.tx_buf = Vec::new();
            w.tx_pos = 0;
            w.tx_blocked_since = None;
        } else if written > 0 || w.tx_blocked_since.is_none() {
            w.tx_blocked_since = Some(Instant::now());
        }
        let p = w.pool;
        if w.backlog() < MAX_WORKER_BACKLOG && !w.ws_waiters.is_empty() {
            // Room again: sockets that stopped relaying to this worker go on.
            let waiters = std::mem::take(&mut w.ws_waiters);
            self.dirty.conns.extend(waiters);
        }
        self.hold(written as u64, 0);
        if let Some(e) = failed {
            // EPIPE: the worker closed its request pipe; it is dying or dead.
            self.dirty.dying.push((key, format!("closed its request pipe ({e})")));
        } else if written > 0 {
            self.dirty.pools.push(p);
        }
    }

    /// Read and apply what the worker sent, up to `REPLY_TURN_BUDGET` (the rest next
    /// turn). `hangup`: epoll saw the write end close, so read on to EOF even after a
    /// short read.
    pub(super) fn read_worker_replies(&mut self, key: WorkerKey, hangup: bool) {
        let now = Instant::now();
        match self.read_reply_pipe(key, REPLY_TURN_BUDGET, hangup) {
            Turn::Eof => {
                self.apply_worker_frames(key, now);
                self.dirty.dying.push((key, "closed its reply pipe".into()));
            }
            Turn::More => {
                self.apply_worker_frames(key, now);
                self.dirty.replies.push(key);
            }
            Turn::Drained => self.apply_worker_frames(key, now),
        }
    }

    /// Read up to `budget` bytes from the reply pipe into the decoder.
    fn read_reply_pipe(&mut self, key: WorkerKey, budget: usize, hangup: bool) -> Turn {
        let Some(w) = self.workers.get_mut(key.0) else { return Turn::Drained };
        let Some(rx) = w.reply_rx.as_mut() else { return Turn::Drained };
        let mut left = budget;
        while left > 0 {
            match rx.read(&mut self.scratch) {
                Ok(0) => return Turn::Eof,
                Ok(n) => {
                    w.decoder.push(&self.scratch[..n]);
                    left = left.saturating_sub(n);
                    if n < self.scratch.len() && !hangup {
                        return Turn::Drained;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Turn::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Turn::Eof,
            }
        }
        Turn::More
    }

    /// Apply every complete frame in the worker's decoder. A frame that breaks the
    /// protocol kills the worker (its death is handled after the batch).
    fn apply_worker_frames(&mut self, key: WorkerKey, now: Instant) {
        loop {
            let Some(w) = self.workers.get_mut(key.0) else { return };
            match w.decoder.next_frame() {
                Ok(Some(frame)) => {
                    if let Err(why) = self.handle_worker_frame(key, frame, now) {
                        return self.protocol_violation(key, &why);
                    }
                }
                Ok(None) => return,
                Err(e) => return self.protocol_violation(key, &e.to_string()),
            }
        }
    }

    fn protocol_violation(&mut self, key: WorkerKey, why: &str) {
        if let Some(w) = self.workers.get_mut(key.0) {
            error!("worker {} (pid {}) broke the protocol: {why}; killing it", w.name(), w.pid);
            let _ = kill(w.pid, Signal::SIGKILL);
            w.kill = Kill::Sent;
            // No further frame of it is read: the death must not drain a broken stream.
            w.reply_rx = None;
        }
        self.dirty.dying.push((key, "protocol violation".into()));
    }

    /// One frame from a worker, checked by its `FrameOrder`. Err = protocol violation.
    fn handle_worker_frame(&mut self, key: WorkerKey, frame: Frame, now: Instant) -> Result<(), String> {
        let Some(w) = self.workers.get_mut(key.0) else { return Ok(()) };
        let event = w.order.check(&frame).map_err(|v| v.to_string())?;
        let p = w.pool;
        match event {
            Event::Hello(hello) => {
                w.websocket = hello.websocket;
                w.order.limit_prefetch(self.pools[p.0].config.prefetch);
                // All workers of a pool run one program: the first HELLO tells.
                if self.pools[p.0].websockets == crate::pool::Support::Unknown {
                    self.pools[p.0].websockets =
                        if hello.websocket { crate::pool::Support::Yes } else { crate::pool::Support::No };
                }
                // A worker sent STOP while still starting (reload, graceful stop) stays
                // `Stopping`: it finishes and exits without new requests.
                if w.state == ProcState::Starting {
                    w.state = ProcState::Ready;
                }
                w.ready_at = Some(now);
                w.last_heartbeat = now;
                w.capture.ready();
                info!(
                    "worker {} ready (pid {}, {} credit(s), {:?} after start)",
                    w.name(),
                    w.pid,
                    hello.credits,
                    now - w.started
                );
                self.dirty.pools.push(p);
            }
            Event::Heartbeat { extend, .. } => {
                w.last_heartbeat = now;
                if let Kill::Warned(_) = w.kill {
                    w.kill = Kill::NotSent;
                }
                for raw in extend {
                    if let Some(inf) = self.inflight.get_mut(&ReqId(raw)) {
                        inf.deadline = now + self.pools[inf.pool.0].config.timeout;
                    }
                }
                // Abandoned requests the worker no longer lists freed their credit.
                self.dirty.pools.push(p);
            }
            Event::Log(rec) => {
                let level = match rec.level {
                    0..=10 => log::Level::Debug,
                    11..=20 => log::Level::Info,
                    21..=30 => log::Level::Warn,
                    _ => log::Level::Error,
                };
                let who = if rec.name.is_empty() { w.name().to_string() } else { format!("{} {}", w.name(), rec.name) };
                let critical = if rec.level >= 50 { "CRITICAL " } else { "" };
                log!(target: "worker", level, "[{who}] {critical}{}", rec.msg);
            }
            Event::Credit(_) => self.dirty.pools.push(p),
            Event::Forward(fwd) => {
                let from = w.name().to_string();
                self.forward(&from, fwd, frame.body, now);
            }
            Event::Response { id, meta } => {
                w.served += 1;
                self.dirty.pools.push(p);
                self.complete_request(ReqId(id), meta.status, meta.headers, &frame.body);
            }
            Event::StreamStart { id, meta } => self.start_stream(ReqId(id), key, meta.status, meta.headers),
            Event::StreamChunk { id } => {
                if !self.stream_chunk(ReqId(id), &frame.body) {
                    self.worker_abandoned(key, ReqId(id), None);
                }
            }
            Event::StreamEnd { id } => {
                w.served += 1;
                self.dirty.pools.push(p);
                // `{"abort": true}`: the app failed after the head went out; the client
                // must see a cut stream, not a clean end.
                let aborted = frame.meta_json::<ipc::StreamEndMeta>().is_ok_and(|m| m.abort);
                self.end_stream(ReqId(id), aborted);
            }
            Event::WsAccept { id, meta } => self.accept_socket(ReqId(id), key, meta, now),
            Event::WsMessage { id, text } => self.socket_send(ReqId(id), text, &frame.body),
            Event::WsClose { id, meta, accepted } => {
                w.served += 1;
                self.dirty.pools.push(p);
                self.socket_closed_by_worker(ReqId(id), meta, accepted);
            }
            Event::Late { id, kind, finished } => {
                debug!("request {id}: late {} dropped", kind.name());
                if finished {
                    self.dirty.pools.push(p);
                }
            }
        }
        Ok(())
    }

    /// The dispatcher finished a request the worker still holds: tell it, drop late frames.
    /// `close`: the request is a WebSocket, told `WS_CLOSE` with this code instead of
    /// `DISCONNECT`.
    pub(super) fn worker_abandoned(
        &mut self,
        key: WorkerKey,
        id: ReqId,
        close: Option<(crate::websocket::CloseCode, &str)>,
    ) {
        let Some(w) = self.workers.get_mut(key.0) else { return };
        if !w.alive() || !w.order.abandon(id.0) {
            return;
        }
        let before = w.backlog();
        match close {
            None => ipc::encode_empty(&mut w.tx_buf, FrameType::Disconnect, id.0),
            Some((code, reason)) => {
                let meta = super::sockets::close_meta(code, reason);
                // A code and a short reason always fit a frame.
                let _ = ipc::encode_json(&mut w.tx_buf, FrameType::WsClose, id.0, &meta, &[]);
            }
        }
        let after = w.backlog();
        self.hold(before as u64, after as u64);
        self.flush_worker(key);
    }

    /// Bytes waiting toward a worker's request pipe.
    pub(super) fn worker_backlog(&self, key: WorkerKey) -> usize {
        self.workers.get(key.0).map_or(0, WorkerProc::backlog)
    }

    /// A live worker's outgoing buffer, to append a frame to (then `flush_worker`).
    pub(super) fn worker_tx(&mut self, key: WorkerKey) -> Option<&mut Vec<u8>> {
        self.workers.get_mut(key.0).filter(|w| w.alive()).map(|w| &mut w.tx_buf)
    }

    /// Whether a socket's next message may go to `key` now; if not, the connection is
    /// serviced again once the worker's pipe has room.
    pub(super) fn worker_has_room(&mut self, key: WorkerKey, conn: super::ConnKey) -> bool {
        let Some(w) = self.workers.get_mut(key.0) else { return false };
        if w.backlog() < MAX_WORKER_BACKLOG {
            return true;
        }
        if !w.ws_waiters.contains(&conn) {
            w.ws_waiters.push(conn);
        }
        false
    }

    /// FLOW for one of the worker's streams.
    pub(super) fn send_flow(&mut self, key: WorkerKey, id: ReqId, paused: bool) {
        let Some(w) = self.workers.get_mut(key.0) else { return };
        if !w.order.is_streaming(id.0) || !w.alive() {
            return;
        }
        // A two-field meta always fits a frame.
        let _ = ipc::encode_json(&mut w.tx_buf, FrameType::Flow, id.0, &ipc::FlowMeta { paused }, &[]);
        self.flush_worker(key);
    }

    /// Captured stdout/stderr: one budgeted turn; more next turn, or once the worker's
    /// output rate allows.
    pub(super) fn read_worker_output(&mut self, key: WorkerKey, which: Which) {
        let now = Instant::now();
        let Some(w) = self.workers.get_mut(key.0) else { return };
        let pipe = match which {
            Which::Stdout => &mut w.stdout,
            Which::Stderr => &mut w.stderr,
        };
        let Some(out) = pipe.as_mut() else { return };
        if let Some(at) = w.capture.throttled_until(now) {
            // Over its rate: one dropped turn per throttle interval at most, so a flood
            // costs the loop almost nothing (the worker waits on its full pipe meanwhile).
            if w.armed.needs(at) {
                self.timers.arm(at, Timer::Worker(key, w.serial));
            }
            return;
        }
        match w.capture.read(out, which, &mut self.scratch, now) {
            Turn::Drained => {}
            Turn::More => match w.capture.throttled_until(now) {
                Some(at) => {
                    if w.armed.needs(at) {
                        self.timers.arm(at, Timer::Worker(key, w.serial));
                    }
                }
                None => self.dirty.output.push(key),
            },
            Turn::Eof => {
                if let Some(mut o) = pipe.take() {
                    let _ = self.poll.registry().deregister(&mut o.rx);
                }
            }
        }
        w.capture.report_dropped(now, false);
    }

    /// A worker is gone or must be: read what it sent to the end, apply it, then fail
    /// the requests it still holds (500), close its pipes. The reap (or a kill after
    /// `exit_grace`) completes the job.
    pub(super) fn worker_died(&mut self, key: WorkerKey, why: &str, now: Instant) {
        let Some(w) = self.workers.get_mut(key.0) else { return };
        if !w.alive() {
            return;
        }
        let was_ready = w.ready_at.is_some();
        w.state = ProcState::Exiting { since: now };
        // Death is final only after the pipe is drained: a worker that answered and then
        // exited (STOP, recycling) must not have its answers turned into 500s.
        self.read_reply_pipe(key, DEATH_DRAIN_LIMIT, true);
        self.apply_worker_frames(key, now);
        let Some(w) = self.workers.get_mut(key.0) else { return };
        let reg = self.poll.registry();
        if let Some(mut tx) = w.request_tx.take() {
            let _ = reg.deregister(&mut tx);
        }
        if let Some(mut rx) = w.reply_rx.take() {
            let _ = reg.deregister(&mut rx);
        }
        let unsent = w.backlog() as u64;
        w.tx_buf = Vec::new();
        w.tx_pos = 0;
        let orphans = w.order.take_open();
        let (name, pid, pool) = (w.name().to_string(), w.pid, w.pool);
        self.hold(unsent, 0);
        let mut victims: Vec<ReqId> = orphans.started.into_iter().map(ReqId).collect();
        // Prefetched requests it cannot have started go back to the head of the queue, in
        // the order they were given; any other kind stays a victim.
        let mut requeued = 0;
        for raw in orphans.unstarted.into_iter().rev() {
            let id = ReqId(raw);
            let Some(inf) = self.inflight.get_mut(&id) else { continue };
            match std::mem::replace(&mut inf.state, ReqState::InWorker(key)) {
                ReqState::Prefetched { frame, .. } => {
                    inf.state = ReqState::Queued { frame };
                    self.pools[pool.0].requeue_front(id);
                    requeued += 1;
                }
                other => {
                    inf.state = other;
                    victims.push(id);
                }
            }
        }
        if requeued > 0 {
            info!("worker {name} (pid {pid}) died with {requeued} prefetched request(s) unstarted: queued again");
        }
        let described: Vec<String> = victims
            .iter()
            .filter_map(|id| {
                self.inflight.get(id).map(|inf| format!("{id} {} {}", inf.reply.access.method, inf.reply.access.target))
            })
            .collect();
        // Output may still hold the worker's last words (a traceback): read them now.
        self.drain_output(key, now);
        if !was_ready {
            // Reported with its exit status when reaped.
        } else if described.is_empty() {
            // Without victims the reap says it, with the exit status and its level.
            debug!("worker {name} (pid {pid}) {why}");
        } else {
            warn!("worker {name} (pid {pid}) {why}; failing its requests: [{}]", described.join(", "));
        }
        for id in victims {
            self.fail_request(id, 500, "worker died");
        }
        self.dirty.pools.push(pool);
        self.arm_worker(key, now);
    }

    /// Read a dying worker's output pipes, bounded.
    fn drain_output(&mut self, key: WorkerKey, now: Instant) {
        for which in [Which::Stdout, Which::Stderr] {
            let Some(w) = self.workers.get_mut(key.0) else { return };
            let pipe = match which {
                Which::Stdout => &mut w.stdout,
                Which::Stderr => &mut w.stderr,
            };
            super::output::read_turns(&mut w.capture, pipe, which, &mut self.scratch, self.poll.registry(), now, 4);
        }
    }

    /// SIGCHLD: reap every exited child; free and maybe restart their slots.
    pub(super) fn reap_workers(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(WaitStatus::Exited(pid, code)) => self.worker_reaped(pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.worker_reaped(pid, Exit::Signal(sig as i32)),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    error!("waitpid failed: {e}");
                    return;
                }
            }
        }
    }

    fn worker_reaped(&mut self, pid: Pid, exit: Exit) {
        let now = Instant::now();
        let how = match exit {
            Exit::Code(c) => format!("exited with status {c}"),
            Exit::Signal(s) => format!("was killed by signal {s} ({})", signal_name(s)),
        };
        let Some(key) = self.pids.remove(&pid.as_raw()) else {
            if !self.forkserver_reaped(pid, &how) {
                debug!("reaped unknown child {pid}");
            }
            return;
        };
        let was_ready = self.workers.get(key.0).is_some_and(|w| w.ready_at.is_some());
        self.worker_died(key, &how, now);
        self.drain_output(key, now);
        let mut w = self.workers.remove(key.0);
        for mut o in [w.stdout.take(), w.stderr.take()].into_iter().flatten() {
            let _ = self.poll.registry().deregister(&mut o.rx);
        }
        w.capture.report_dropped(now, true);
        let last_words = w.capture.last_words();
        let name = w.name().to_string();
        let Some(slot) = w.slot else {
            info!("retired worker {name} (pid {pid}) {how}");
            return;
        };
        let p = w.pool;
        if self.phase != Phase::Running {
            // Stopping: the slot stays empty; nothing to restart or count.
            self.pools[p.0].vacate(slot, key);
            self.pools[p.0].stop();
            let level = if exit == Exit::Code(0) { log::Level::Info } else { log::Level::Warn };
            log!(level, "worker {name} (pid {pid}) {how}");
            return;
        }
        let after = self.pools[p.0].on_worker_exit(slot, key, exit, now - w.started, w.served, now);
        if !was_ready {
            self.report_failed_start(p, &name, pid, &how, last_words);
        } else if after == AfterExit::Nothing {
            info!("worker {name} (pid {pid}) {how}");
        } else if exit != Exit::Code(0) {
            warn!("worker {name} (pid {pid}) {how}");
        } else {
            info!("worker {name} (pid {pid}) {how}");
        }
        self.log_after_exit(p, &name, after, Some(&how));
        self.dirty.manage = true;
    }

    /// A worker died before HELLO: its held output is the reason. The first failure of
    /// a pool is logged in full; the same words again are one line with a count.
    fn report_failed_start(&mut self, p: PoolId, name: &str, pid: Pid, how: &str, words: Vec<(Which, String)>) {
        let text: Vec<String> = words.iter().map(|(_, l)| l.clone()).collect();
        let pool = &mut self.pools[p.0];
        let cause = text.iter().rev().find(|l| !l.trim().is_empty()).cloned().unwrap_or_default();
        if pool.last_failure.as_ref().is_some_and(|(t, _)| *t == text) {
            if let Some((_, n)) = pool.last_failure.as_mut() {
                *n += 1;
                warn!(
                    "worker {name} (pid {pid}) exited before it was ready ({how}): same error as before, {} times now",
                    n
                );
            }
            return;
        }
        warn!(
            "worker {name} (pid {pid}) exited before it was ready ({how}){}",
            if cause.is_empty() { String::new() } else { format!(": {cause}") }
        );
        for (which, line) in &words {
            super::output::log_line(name, pid.as_raw(), *which, line);
        }
        pool.last_failure = Some((text, 1));
    }

    /// Say what follows a worker's exit, once, in one wording.
    fn log_after_exit(&mut self, p: PoolId, name: &str, after: AfterExit, how: Option<&str>) {
        let now = Instant::now();
        match after {
            AfterExit::Restart { at } => {
                let delay = at.saturating_duration_since(now);
                if delay.is_zero() {
                    debug!("worker {name}: restarting now");
                } else {
                    info!("worker {name}: restarting in {delay:.1?} (backoff)");
                }
                self.arm_pool(p, at);
            }
            AfterExit::Parked => warn!("worker {name}: permanent failure exit code, slot parked"),
            AfterExit::Degraded { became: true } => {
                let pool = &self.pools[p.0];
                let cause = match (&pool.last_failure, how) {
                    (Some((text, _)), _) if !text.is_empty() => {
                        text.iter().rev().find(|l| !l.trim().is_empty()).cloned().unwrap_or_default()
                    }
                    (_, Some(how)) => format!("last worker {how}"),
                    _ => "workers could not be started".into(),
                };
                let why = if pool.parked_count() == pool.slots.len() {
                    "every slot parked".to_string()
                } else {
                    format!(
                        "{} restarts in {:?} (max {})",
                        pool.restarts_in_window(),
                        pool.config.restart_window,
                        pool.config.max_restarts
                    )
                };
                let until = match pool.config.recovery_interval {
                    Some(r) => format!("retrying in {r:?}"),
                    None => "until a reload (SIGHUP)".into(),
                };
                error!("pool {} degraded: {why}; cause: {cause}; answering 503, {until}", pool.name());
                let queued = self.pools[p.0].drain_queue();
                for id in queued {
                    self.fail_request(id, 503, "service degraded");
                }
                if let Some(at) = self.pools[p.0].next_event() {
                    self.arm_pool(p, at);
                }
            }
            AfterExit::Degraded { became: false } | AfterExit::Nothing => {}
        }
    }

    fn arm_worker(&mut self, key: WorkerKey, now: Instant) {
        let Some(at) = self.worker_deadline(key, now) else { return };
        let Some(w) = self.workers.get_mut(key.0) else { return };
        if w.armed.needs(at) {
            self.timers.arm(at, Timer::Worker(key, w.serial));
        }
    }

    /// The next time supervision has something to check for this worker.
    fn worker_deadline(&self, key: WorkerKey, _now: Instant) -> Option<Instant> {
        let w = self.workers.get(key.0)?;
        let cfg = &self.pools[w.pool.0].config;
        match (w.state, w.kill) {
            (_, Kill::Sent) => None,
            (ProcState::Exiting { since }, _) => Some(since + tuning::exit_grace(cfg)),
            (_, Kill::Warned(at)) => Some(at + tuning::stuck_grace(cfg)),
            _ => {
                let silent = w.last_heartbeat + cfg.stuck_timeout;
                let mut at = match w.tx_blocked_since {
                    Some(t) => silent.min(t + cfg.stuck_timeout),
                    None => silent,
                };
                if let Some(r) = w.retired_at
                    && w.order.held_count() > 0
                {
                    at = at.min(r + self.config.server.shutdown_timeout);
                }
                Some(at)
            }
        }
    }

    /// A worker's timer: gunicorn's "murder" step for one worker. No heartbeat for
    /// `stuck_timeout` (or a request pipe it has not read for as long): SIGUSR2 (stack
    /// dump), then SIGKILL after `stuck_grace`. A worker whose pipes closed but which has
    /// not exited after `exit_grace`: SIGKILL. Also resumes rate-limited output.
    pub(super) fn worker_timer(&mut self, key: WorkerKey, serial: u64, now: Instant) {
        let Some(w) = self.workers.get_mut(key.0) else { return };
        if w.serial != serial {
            return;
        }
        w.armed.fired();
        if w.stdout.is_some() || w.stderr.is_some() {
            self.dirty.output.push(key);
        }
        if w.retired_at.is_some_and(|r| now >= r + self.config.server.shutdown_timeout) {
            self.close_retired_sockets(key);
        }
        let Some(w) = self.workers.get_mut(key.0) else { return };
        let cfg = &self.pools[w.pool.0].config;
        let stuck_timeout = cfg.stuck_timeout;
        let grace = tuning::stuck_grace(cfg);
        let exit_grace = tuning::exit_grace(cfg);
        match (w.state, w.kill) {
            (_, Kill::Sent) => {}
            (ProcState::Exiting { since }, _) => {
                if now.duration_since(since) >= exit_grace {
                    warn!(
                        "worker {} (pid {}) did not exit {exit_grace:?} after its pipes closed: SIGKILL",
                        w.name(),
                        w.pid
                    );
                    let _ = kill(w.pid, Signal::SIGKILL);
                    w.kill = Kill::Sent;
                }
            }
            (_, Kill::Warned(at)) => {
                if now.duration_since(at) >= grace {
                    let held = self.describe_held(key);
                    let Some(w) = self.workers.get_mut(key.0) else { return };
                    warn!("worker {} (pid {}) stuck: SIGKILL, holding [{held}]", w.name(), w.pid);
                    let _ = kill(w.pid, Signal::SIGKILL);
                    w.kill = Kill::Sent;
                    self.dirty.dying.push((key, "was stuck and killed".into()));
                }
            }
            (_, Kill::NotSent) => {
                let silent = now.duration_since(w.last_heartbeat);
                let blocked = w.tx_blocked_since.map(|t| now.duration_since(t));
                let why = if silent > stuck_timeout {
                    Some(format!("sent no heartbeat for {silent:.1?}"))
                } else {
                    blocked.filter(|b| *b > stuck_timeout).map(|b| format!("has not read its request pipe for {b:.1?}"))
                };
                if let Some(why) = why {
                    let held = self.describe_held(key);
                    let Some(w) = self.workers.get_mut(key.0) else { return };
                    warn!("worker {} (pid {}) {why}: SIGUSR2 (stack dump), holding [{held}]", w.name(), w.pid);
                    let _ = kill(w.pid, Signal::SIGUSR2);
                    w.kill = Kill::Warned(now);
                }
            }
        }
        self.arm_worker(key, now);
    }

    fn describe_held(&self, key: WorkerKey) -> String {
        let Some(w) = self.workers.get(key.0) else { return String::new() };
        w.order
            .open()
            .map(ReqId)
            .map(|id| match self.inflight.get(&id) {
                Some(inf) => format!("{id} {} {}", inf.reply.access.method, inf.reply.access.target),
                None => id.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Detach a worker from its slot and STOP it: it takes no new requests, answers those
    /// it holds, and exits; the slot starts a successor at once (reload, SIGTTOU).
    pub(super) fn retire_worker(&mut self, key: WorkerKey) {
        let Some(w) = self.workers.get_mut(key.0) else { return };
        let Some(slot) = w.slot.take() else { return };
        self.pools[w.pool.0].vacate(slot, key);
        let now = Instant::now();
        w.retired_at = Some(now);
        if !w.alive() {
            return;
        }
        info!(
            "retiring worker {} (pid {}): finishing {} request(s), then exiting",
            w.name(),
            w.pid,
            w.order.held_count()
        );
        w.state = ProcState::Stopping;
        ipc::encode_empty(&mut w.tx_buf, FrameType::Stop, 0);
        self.flush_worker(key);
        self.arm_worker(key, now);
    }

    /// A retired worker's drain deadline passed: its open WebSockets are closed with 1001
    /// (the client may reconnect to a new worker), so it can finish and exit.
    fn close_retired_sockets(&mut self, key: WorkerKey) {
        let Some(w) = self.workers.get(key.0) else { return };
        let sockets: Vec<ReqId> = w
            .order
            .open()
            .map(ReqId)
            .filter(|id| self.inflight.get(id).is_some_and(|inf| matches!(inf.state, ReqState::Socket(_))))
            .collect();
        for id in sockets {
            info!(
                "socket {id}: its worker was retired {:?} ago; closing it (1001)",
                self.config.server.shutdown_timeout
            );
            self.fail_request(id, 503, "server restarting");
            self.worker_abandoned(key, id, Some((crate::websocket::CloseCode::GOING_AWAY, "server restarting")));
        }
    }

    /// Graceful end: STOP to every worker; the reap frees them.
    pub(super) fn stop_all_workers(&mut self) {
        let keys: Vec<usize> = self.workers.iter().map(|(k, _)| k).collect();
        for key in keys {
            let w = &mut self.workers[key];
            if !w.alive() || w.state == ProcState::Stopping {
                continue;
            }
            w.state = ProcState::Stopping;
            ipc::encode_empty(&mut w.tx_buf, FrameType::Stop, 0);
            self.flush_worker(WorkerKey(key));
        }
    }

    pub(super) fn kill_all_workers(&mut self) {
        for (_, w) in self.workers.iter_mut() {
            if w.kill != Kill::Sent {
                let _ = kill(w.pid, Signal::SIGKILL);
                w.kill = Kill::Sent;
            }
        }
    }

    /// Whether a worker is ready for requests.
    pub(super) fn worker_ready(&self, key: WorkerKey) -> bool {
        self.workers.get(key.0).is_some_and(|w| w.state == ProcState::Ready)
    }

    /// Per-worker numbers for the status handler.
    pub(super) fn worker_status(&self, key: WorkerKey, now: Instant) -> Option<crate::sync_handlers::WorkerStatus> {
        let w = self.workers.get(key.0)?;
        Some(crate::sync_handlers::WorkerStatus {
            slot: w.slot.unwrap_or(usize::MAX),
            pid: w.pid.as_raw(),
            alive: w.alive(),
            ready: w.state == ProcState::Ready,
            last_heartbeat_age: now.duration_since(w.last_heartbeat).as_secs_f64(),
            in_hand: w.order.held_count(),
            served: w.served,
            credits: w.order.credits(),
        })
    }
}

/// A signal's name for log lines (`SIGKILL`), or `signal N`.
fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {sig}"))
}
