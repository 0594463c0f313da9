//! Worker processes as the dispatcher sees them: spawning into pool slots, writing
//! request frames, reading and checking reply frames, capturing stdout/stderr, and
//! supervision (stuck workers, deaths, reaping, restarts).
//!
//! A worker's death is seen twice, by reply-pipe EOF and by SIGCHLD; whichever comes
//! first fails its requests (500) and the reap decides the restart, because only the
//! exit status says whether the slot is parked.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use log::{debug, error, info, log, warn};
use mio::Interest;
use mio::unix::pipe::{Receiver, Sender};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::{Dispatcher, TAG_WORKER_REPLY, TAG_WORKER_REQUEST, TAG_WORKER_STDERR, TAG_WORKER_STDOUT, token};
use crate::config::WorkerKind;
use crate::ipc::{
    self, ConfigMeta, CreditMeta, ForwardMeta, Frame, FrameDecoder, FrameType, HeartbeatMeta, HelloMeta, LogMeta,
    ResponseMeta,
};
use crate::pool::Exit;
use crate::spawn::{self, Program, SpawnSpec};

/// Time between SIGUSR2 (dump your stacks) and SIGKILL for a stuck worker.
const STUCK_GRACE: Duration = Duration::from_secs(2);
/// A worker that closed its reply pipe but has not exited by then is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Longest captured output line; longer ones are split.
const MAX_LINE: usize = 16 * 1024;
/// Ids remembered per worker for dropping late replies.
const MAX_ABANDONED: usize = 4096;

/// A captured stdout/stderr pipe and its partial line.
#[derive(Debug)]
struct OutputPipe {
    rx: Receiver,
    partial: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcState {
    /// Started, HELLO not yet received.
    Starting,
    Ready,
    /// STOP sent: no new requests.
    Stopping,
    /// Pipes closed (EOF, violation or kill): waiting for the reap.
    Dead {
        since: Instant,
    },
}

/// One worker process.
#[derive(Debug)]
pub struct WorkerProc {
    pool: usize,
    slot: usize,
    pid: Pid,
    /// `pool/slot`, used in every log line about this worker.
    name: String,
    request_tx: Option<Sender>,
    tx_buf: Vec<u8>,
    tx_pos: usize,
    tx_blocked: bool,
    reply_rx: Option<Receiver>,
    decoder: FrameDecoder,
    stdout: Option<OutputPipe>,
    stderr: Option<OutputPipe>,
    state: ProcState,
    credits: u32,
    /// Requests handed to this worker and not yet answered by it (abandoned ones too:
    /// the worker is still busy with them).
    in_hand: Vec<u64>,
    /// Requests the dispatcher finished itself (timeout, client gone), oldest first; late
    /// frames for them are dropped. Bounded by `MAX_ABANDONED`.
    abandoned: VecDeque<u64>,
    /// Streams started and not ended.
    streams: HashSet<u64>,
    last_heartbeat: Instant,
    started: Instant,
    served: u64,
    usr2_at: Option<Instant>,
    killed: bool,
    /// Requests failed at death, kept for the death log line.
    victims: Vec<String>,
    /// Detached from its slot by a reload or a shrink: it finishes what it holds after
    /// STOP and exits; its slot (if still there) already has a successor.
    retired: bool,
}

impl WorkerProc {
    fn free_credits(&self) -> usize {
        (self.credits as usize).saturating_sub(self.in_hand.len())
    }
}

/// Build the spawn spec for one slot of a pool.
fn spawn_spec(pool: &crate::config::PoolConfig, slot: usize) -> SpawnSpec {
    let mut env: Vec<(String, String)> = pool.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let program = match &pool.worker {
        WorkerKind::Native(name) => Program::Native { name: name.clone() },
        WorkerKind::Command(argv) => Program::Exec { argv: argv.clone() },
        WorkerKind::Python { target, interpreter, module_path }
        | WorkerKind::Wsgi { target, interpreter, module_path } => {
            let mode = if matches!(pool.worker, WorkerKind::Python { .. }) { "worker" } else { "wsgi" };
            let cmd = crate::python::shim_command(interpreter, &[mode.into(), target.clone()], module_path);
            if let Some(path) = cmd.pythonpath {
                env.push(("PYTHONPATH".into(), path));
            }
            env.push(("PYTHONUNBUFFERED".into(), "1".into()));
            Program::Exec { argv: cmd.argv }
        }
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
    /// Start a process in every empty slot that is due.
    pub(super) fn spawn_due_workers(&mut self, now: Instant) {
        for p in 0..self.pools.len() {
            for slot in self.pools[p].slots_to_spawn(now) {
                self.spawn_worker(p, slot, now);
            }
        }
    }

    fn spawn_worker(&mut self, p: usize, slot: usize, now: Instant) {
        let pool = &self.pools[p];
        let name = format!("{}/{}", pool.name(), slot);
        let spec = spawn_spec(&pool.config, slot);
        let spawned = match spawn::spawn_worker(&spec) {
            Ok(s) => s,
            Err(e) => {
                error!("{e}");
                // Count it like a crash so the slot backs off instead of spinning.
                if self.pools[p].on_worker_exit(slot, Exit::Code(127), Duration::ZERO, 0, now) {
                    warn!("pool {} degraded: too many restarts", self.pools[p].name());
                }
                return;
            }
        };
        let entry = self.workers.vacant_entry();
        let key = entry.key();
        let mut w = WorkerProc {
            pool: p,
            slot,
            pid: spawned.pid,
            name,
            request_tx: Some(spawned.request_tx),
            tx_buf: Vec::new(),
            tx_pos: 0,
            tx_blocked: false,
            reply_rx: Some(spawned.reply_rx),
            // Config caps max_frame_bytes at the wire's u32 body length.
            decoder: FrameDecoder::new(u32::try_from(pool.config.max_frame_bytes).unwrap_or(u32::MAX)),
            stdout: Some(OutputPipe { rx: spawned.stdout_rx, partial: Vec::new() }),
            stderr: Some(OutputPipe { rx: spawned.stderr_rx, partial: Vec::new() }),
            state: ProcState::Starting,
            credits: 0,
            in_hand: Vec::new(),
            abandoned: VecDeque::new(),
            streams: HashSet::new(),
            last_heartbeat: now,
            started: now,
            served: 0,
            usr2_at: None,
            killed: false,
            victims: Vec::new(),
            retired: false,
        };
        let reg = self.poll.registry();
        let ok = w
            .reply_rx
            .as_mut()
            .is_some_and(|r| reg.register(r, token(TAG_WORKER_REPLY, key), Interest::READABLE).is_ok())
            && w.request_tx
                .as_mut()
                .is_some_and(|t| reg.register(t, token(TAG_WORKER_REQUEST, key), Interest::WRITABLE).is_ok())
            && w.stdout
                .as_mut()
                .is_some_and(|o| reg.register(&mut o.rx, token(TAG_WORKER_STDOUT, key), Interest::READABLE).is_ok())
            && w.stderr
                .as_mut()
                .is_some_and(|o| reg.register(&mut o.rx, token(TAG_WORKER_STDERR, key), Interest::READABLE).is_ok());
        let config = ConfigMeta {
            protocol: 1,
            pool: pool.config.name.clone(),
            worker_id: slot,
            heartbeat_interval: pool.config.heartbeat_interval.as_secs_f64(),
            timeout: pool.config.timeout.as_secs_f64(),
            log_level: pool.config.log_level.clone(),
            kwargs: pool.config.kwargs.clone(),
        };
        ipc::encode_json(&mut w.tx_buf, FrameType::Config, 0, &config, &[]);
        info!("worker {} started (pid {})", w.name, w.pid);
        self.pids.insert(w.pid.as_raw(), key);
        self.pools[p].slots[slot].worker = Some(key);
        self.pools[p].slots[slot].respawn_at = None;
        entry.insert(w);
        if !ok {
            self.worker_died(key, "could not register its pipes", now);
            return;
        }
        self.flush_worker(key);
    }

    /// Hand queued requests to workers with free credits.
    pub(super) fn pump_pool(&mut self, p: usize, now: Instant) {
        while let Some(&id) = self.pools[p].queue.front() {
            let Some(inf) = self.inflight.get(&id) else {
                self.pools[p].queue.pop_front();
                continue;
            };
            if now >= inf.deadline {
                // Expired in the queue: it never reaches a worker.
                self.fail_request(id, 504, "gateway timeout", now);
                continue;
            }
            let Some(key) = self.pick_worker(p) else { return };
            self.pools[p].queue.pop_front();
            let Some(inf) = self.inflight.get_mut(&id) else { continue };
            inf.worker = Some(key);
            let frame = inf.frame.take().unwrap_or_default();
            let w = &mut self.workers[key];
            w.in_hand.push(id);
            w.tx_buf.extend_from_slice(&frame);
            self.flush_worker(key);
        }
    }

    /// The ready worker with free credits, round-robin from the pool's pick position.
    fn pick_worker(&mut self, p: usize) -> Option<usize> {
        let pool = &mut self.pools[p];
        let n = pool.slots.len();
        for i in 0..n {
            let slot = (pool.next_pick + i) % n;
            if let Some(key) = pool.slots[slot].worker
                && let Some(w) = self.workers.get(key)
                && w.state == ProcState::Ready
                && w.free_credits() > 0
            {
                pool.next_pick = (slot + 1) % n;
                return Some(key);
            }
        }
        None
    }

    /// Write buffered frames to a worker's request pipe.
    pub(super) fn flush_worker(&mut self, key: usize) {
        let Some(w) = self.workers.get_mut(key) else { return };
        let Some(tx) = w.request_tx.as_mut() else { return };
        while w.tx_pos < w.tx_buf.len() {
            match tx.write(&w.tx_buf[w.tx_pos..]) {
                Ok(n) => w.tx_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    w.tx_blocked = true;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EPIPE: the worker closed its request pipe; it is dying or dead.
                    let why = format!("request pipe write failed: {e}");
                    self.worker_died(key, &why, Instant::now());
                    return;
                }
            }
        }
        w.tx_buf.clear();
        w.tx_pos = 0;
        w.tx_blocked = false;
    }

    /// Read and handle every frame the worker sent.
    /// `hangup`: epoll reported the write end closed, so read on to EOF even after a short
    /// read (otherwise a short read means the pipe is drained: a later write raises a new
    /// edge-triggered event).
    pub(super) fn read_worker_replies(&mut self, key: usize, hangup: bool) {
        let now = Instant::now();
        let mut eof = false;
        {
            let Some(w) = self.workers.get_mut(key) else { return };
            let Some(rx) = w.reply_rx.as_mut() else { return };
            loop {
                match rx.read(&mut self.scratch) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        w.decoder.push(&self.scratch[..n]);
                        if n < self.scratch.len() && !hangup {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
        }
        loop {
            let Some(w) = self.workers.get_mut(key) else { return };
            match w.decoder.next_frame() {
                Ok(Some(frame)) => {
                    if let Err(why) = self.handle_worker_frame(key, frame, now) {
                        self.protocol_violation(key, &why, now);
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.protocol_violation(key, &e.to_string(), now);
                    return;
                }
            }
        }
        if eof {
            self.worker_died(key, "closed its reply pipe", now);
        }
    }

    fn protocol_violation(&mut self, key: usize, why: &str, now: Instant) {
        if let Some(w) = self.workers.get_mut(key) {
            error!("worker {} (pid {}) broke the protocol: {why}; killing it", w.name, w.pid);
            let _ = kill(w.pid, Signal::SIGKILL);
            w.killed = true;
        }
        self.worker_died(key, "protocol violation", now);
    }

    /// One frame from a worker. Err = protocol violation.
    fn handle_worker_frame(&mut self, key: usize, frame: Frame, now: Instant) -> Result<(), String> {
        let w = &mut self.workers[key];
        if w.state == ProcState::Starting && frame.kind != FrameType::Hello && frame.kind != FrameType::Log {
            return Err(format!("{} before HELLO", frame.kind.name()));
        }
        let id = frame.request_id;
        match frame.kind {
            FrameType::Hello => {
                if w.state != ProcState::Starting {
                    return Err("second HELLO".into());
                }
                let hello: HelloMeta = frame.meta_json().map_err(|e| e.to_string())?;
                w.state = ProcState::Ready;
                w.credits = hello.credits;
                w.last_heartbeat = now;
                info!(
                    "worker {} ready (pid {}, {} credit(s), {:?} after start)",
                    w.name,
                    w.pid,
                    hello.credits,
                    now - w.started
                );
                let p = w.pool;
                self.pump_pool(p, now);
            }
            FrameType::Heartbeat => {
                let hb: HeartbeatMeta = frame.meta_json().map_err(|e| e.to_string())?;
                w.last_heartbeat = now;
                w.usr2_at = None;
                // Abandoned requests the worker no longer holds free their credit.
                // (They stay in `abandoned`: a reply may still be on its way.)
                let abandoned = &w.abandoned;
                w.in_hand.retain(|id| !abandoned.contains(id) || hb.in_hand.contains(id));
                for id in &hb.extend {
                    if w.in_hand.contains(id)
                        && let Some(inf) = self.inflight.get_mut(id)
                    {
                        inf.deadline = now + self.pools[inf.pool].config.timeout;
                    }
                }
                let p = w.pool;
                self.pump_pool(p, now);
            }
            FrameType::Log => {
                let rec: LogMeta = frame.meta_json().map_err(|e| e.to_string())?;
                let level = match rec.level {
                    0..=10 => log::Level::Debug,
                    11..=20 => log::Level::Info,
                    21..=30 => log::Level::Warn,
                    _ => log::Level::Error,
                };
                let who = if rec.name.is_empty() { w.name.clone() } else { format!("{} {}", w.name, rec.name) };
                let critical = if rec.level >= 50 { "CRITICAL " } else { "" };
                log!(target: "worker", level, "[{who}] {critical}{}", rec.msg);
            }
            FrameType::Credit => {
                let c: CreditMeta = frame.meta_json().map_err(|e| e.to_string())?;
                w.credits = c.credits;
                let p = w.pool;
                self.pump_pool(p, now);
            }
            FrameType::Forward => {
                let fwd: ForwardMeta = frame.meta_json().map_err(|e| e.to_string())?;
                let from = w.name.clone();
                self.forward(&from, fwd, frame.body, now);
            }
            FrameType::Response | FrameType::StreamStart | FrameType::StreamChunk | FrameType::StreamEnd => {
                let finished = matches!(frame.kind, FrameType::Response | FrameType::StreamEnd);
                if w.abandoned.contains(&id) {
                    // A late frame for a request finished here (504, client gone): dropped.
                    if finished {
                        w.abandoned.retain(|&x| x != id);
                        w.in_hand.retain(|&x| x != id);
                        w.streams.remove(&id);
                        let p = w.pool;
                        self.pump_pool(p, now);
                    } else if frame.kind == FrameType::StreamStart {
                        w.streams.insert(id);
                    }
                    return Ok(());
                }
                if !w.in_hand.contains(&id) {
                    return Err(format!("{} for request {id}, which this worker does not hold", frame.kind.name()));
                }
                let streaming = w.streams.contains(&id);
                match frame.kind {
                    FrameType::Response | FrameType::StreamStart if streaming => {
                        return Err(format!("{} for request {id} after STREAM_START", frame.kind.name()));
                    }
                    FrameType::StreamChunk | FrameType::StreamEnd if !streaming => {
                        return Err(format!("{} for request {id} before STREAM_START", frame.kind.name()));
                    }
                    _ => {}
                }
                // Validated before the request leaves `in_hand`: on a violation the request
                // is still this worker's, so the death answers it 500 (not a 504 much later).
                let meta: Option<ResponseMeta> = match frame.kind {
                    FrameType::Response | FrameType::StreamStart => {
                        let meta: ResponseMeta = frame.meta_json().map_err(|e| e.to_string())?;
                        // A final status: 1xx are interim (a 100/101 "final" answer would
                        // desynchronize the client), and RFC 9110 §15 makes 600+ invalid.
                        if !(200..=599).contains(&meta.status) {
                            return Err(format!("status {} out of range 200..=599", meta.status));
                        }
                        Some(meta)
                    }
                    _ => None,
                };
                if finished {
                    w.in_hand.retain(|&x| x != id);
                    w.streams.remove(&id);
                    w.served += 1;
                } else if frame.kind == FrameType::StreamStart {
                    w.streams.insert(id);
                }
                let p = w.pool;
                match (frame.kind, meta) {
                    (FrameType::Response, Some(meta)) => {
                        self.complete_request(id, meta.status, meta.headers, &frame.body, now);
                    }
                    (FrameType::StreamStart, Some(meta)) => {
                        self.start_stream(id, meta.status, meta.headers, now);
                    }
                    (FrameType::StreamChunk, _) => {
                        if !self.stream_chunk(id, &frame.body, now) {
                            self.worker_abandoned(key, id);
                        }
                    }
                    _ => self.end_stream(id, now),
                }
                if finished {
                    self.pump_pool(p, now);
                }
            }
            other => return Err(format!("{} is not a worker-to-dispatcher frame", other.name())),
        }
        Ok(())
    }

    /// The dispatcher finished a request the worker still holds: tell it, drop late frames.
    pub(super) fn worker_abandoned(&mut self, key: usize, id: u64) {
        let Some(w) = self.workers.get_mut(key) else { return };
        if !w.in_hand.contains(&id) || matches!(w.state, ProcState::Dead { .. }) {
            return;
        }
        if w.abandoned.len() >= MAX_ABANDONED {
            w.abandoned.pop_front();
        }
        w.abandoned.push_back(id);
        ipc::encode_frame(&mut w.tx_buf, FrameType::Disconnect, id, &[], &[]);
        self.flush_worker(key);
    }

    /// FLOW for one of the worker's streams.
    pub(super) fn send_flow(&mut self, key: usize, id: u64, paused: bool) {
        let Some(w) = self.workers.get_mut(key) else { return };
        if !w.streams.contains(&id) || matches!(w.state, ProcState::Dead { .. }) {
            return;
        }
        ipc::encode_json(&mut w.tx_buf, FrameType::Flow, id, &ipc::FlowMeta { paused }, &[]);
        self.flush_worker(key);
    }

    /// Captured stdout/stderr: log complete lines under the worker's name.
    pub(super) fn read_worker_output(&mut self, key: usize, is_stderr: bool) {
        let Some(w) = self.workers.get_mut(key) else { return };
        let name = w.name.clone();
        let pid = w.pid;
        let pipe = if is_stderr { &mut w.stderr } else { &mut w.stdout };
        let Some(out) = pipe.as_mut() else { return };
        let stream = if is_stderr { "stderr" } else { "stdout" };
        let mut eof = false;
        loop {
            match out.rx.read(&mut self.scratch) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    out.partial.extend_from_slice(&self.scratch[..n]);
                    while let Some(pos) = out.partial.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = out.partial.drain(..=pos).collect();
                        log_output_line(&name, pid, stream, &line[..line.len() - 1]);
                    }
                    if out.partial.len() > MAX_LINE {
                        let line: Vec<u8> = std::mem::take(&mut out.partial);
                        log_output_line(&name, pid, stream, &line);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if eof {
            if !out.partial.is_empty() {
                log_output_line(&name, pid, stream, &std::mem::take(&mut out.partial));
            }
            if let Some(mut o) = pipe.take() {
                let _ = self.poll.registry().deregister(&mut o.rx);
            }
        }
    }

    /// A worker is gone or must be: fail its requests, close its pipes. The reap (or a
    /// kill after a grace period) completes the job.
    pub(super) fn worker_died(&mut self, key: usize, why: &str, now: Instant) {
        let Some(w) = self.workers.get_mut(key) else { return };
        if matches!(w.state, ProcState::Dead { .. }) {
            return;
        }
        w.state = ProcState::Dead { since: now };
        let reg = self.poll.registry();
        if let Some(mut tx) = w.request_tx.take() {
            let _ = reg.deregister(&mut tx);
        }
        if let Some(mut rx) = w.reply_rx.take() {
            let _ = reg.deregister(&mut rx);
        }
        let victims: Vec<u64> = std::mem::take(&mut w.in_hand);
        let name = w.name.clone();
        let pid = w.pid;
        let mut described = Vec::new();
        for id in &victims {
            if let Some(inf) = self.inflight.get(id) {
                described.push(format!("{id} {} {}", inf.access.method, inf.access.target));
            }
        }
        // Output may still hold the worker's last words (a traceback): drain it now.
        self.read_worker_output(key, false);
        self.read_worker_output(key, true);
        if described.is_empty() {
            info!("worker {name} (pid {pid}) {why}");
        } else {
            warn!("worker {name} (pid {pid}) {why}; failing its requests: [{}]", described.join(", "));
        }
        if let Some(w) = self.workers.get_mut(key) {
            w.victims = described;
        }
        for id in victims {
            self.fail_request(id, 500, "worker died", now);
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
        let Some(key) = self.pids.remove(&pid.as_raw()) else {
            debug!("reaped unknown child {pid}");
            return;
        };
        let how = match exit {
            Exit::Code(c) => format!("exited with status {c}"),
            Exit::Signal(s) => format!("was killed by signal {s}"),
        };
        self.worker_died(key, &how, now);
        // Drain what is left of its output before the pipes go.
        self.read_worker_output(key, false);
        self.read_worker_output(key, true);
        let mut w = self.workers.remove(key);
        for mut o in [w.stdout.take(), w.stderr.take()].into_iter().flatten() {
            let _ = self.poll.registry().deregister(&mut o.rx);
        }
        if w.retired {
            info!("retired worker {} (pid {}) {how}", w.name, w.pid);
            return;
        }
        let stopping = self.phase != super::Phase::Running;
        let uptime = now - w.started;
        let pool = &mut self.pools[w.pool];
        if stopping {
            // Shutting down: the slot stays empty.
            pool.slots[w.slot].worker = None;
            pool.slots[w.slot].respawn_at = Some(now + Duration::from_secs(3600));
            return;
        }
        let became_degraded = pool.on_worker_exit(w.slot, exit, uptime, w.served, now);
        let slot = &pool.slots[w.slot];
        if slot.parked {
            warn!("worker {} (pid {}) {how}: permanent failure, slot parked", w.name, w.pid);
        } else {
            let delay = slot.respawn_at.map(|t| t.saturating_duration_since(now)).unwrap_or_default();
            info!("worker {} (pid {}) {how}; restarting in {:?}", w.name, w.pid, delay);
        }
        if became_degraded {
            warn!(
                "pool {} degraded: {} restarts in {:?} (max {}) or all slots parked",
                pool.name(),
                pool.restarts_in_window(),
                pool.config.restart_window,
                pool.config.max_restarts
            );
            let queued: Vec<u64> = pool.queue.drain(..).collect();
            for id in queued {
                self.fail_request(id, 503, "service degraded", now);
            }
        }
        self.spawn_due_workers(now);
    }

    /// Stuck workers (no heartbeat for stuck_timeout): SIGUSR2, then SIGKILL after a grace.
    /// Workers that closed their pipes but linger: SIGKILL.
    pub(super) fn supervise_workers(&mut self, now: Instant) {
        let mut died = Vec::new();
        for (key, w) in self.workers.iter_mut() {
            if w.killed {
                continue;
            }
            if let ProcState::Dead { since } = w.state {
                if now.duration_since(since) > EXIT_GRACE {
                    let _ = kill(w.pid, Signal::SIGKILL);
                    w.killed = true;
                }
                continue;
            }
            let stuck_timeout = self.pools[w.pool].config.stuck_timeout;
            if now.duration_since(w.last_heartbeat) <= stuck_timeout {
                continue;
            }
            let held: Vec<String> = w
                .in_hand
                .iter()
                .map(|id| match self.inflight.get(id) {
                    Some(inf) => format!("{id} {} {}", inf.access.method, inf.access.target),
                    None => id.to_string(),
                })
                .collect();
            match w.usr2_at {
                None => {
                    warn!(
                        "worker {} (pid {}) sent no heartbeat for {:?}: SIGUSR2 (stack dump), holding [{}]",
                        w.name,
                        w.pid,
                        now.duration_since(w.last_heartbeat),
                        held.join(", ")
                    );
                    let _ = kill(w.pid, Signal::SIGUSR2);
                    w.usr2_at = Some(now);
                }
                Some(at) if now.duration_since(at) >= STUCK_GRACE => {
                    warn!("worker {} (pid {}) stuck: SIGKILL, holding [{}]", w.name, w.pid, held.join(", "));
                    let _ = kill(w.pid, Signal::SIGKILL);
                    w.killed = true;
                    died.push(key);
                }
                Some(_) => {}
            }
        }
        for key in died {
            self.worker_died(key, "was stuck and killed", now);
        }
    }

    /// Detach a worker from its slot and STOP it: it takes no new requests, answers those
    /// it holds, and exits; the slot starts a successor at once (reload, SIGTTOU).
    pub(super) fn retire_worker(&mut self, key: usize) {
        let Some(w) = self.workers.get_mut(key) else { return };
        if w.retired {
            return;
        }
        w.retired = true;
        if let Some(slot) = self.pools[w.pool].slots.get_mut(w.slot)
            && slot.worker == Some(key)
        {
            slot.worker = None;
            slot.respawn_at = None;
        }
        if matches!(w.state, ProcState::Dead { .. }) {
            return;
        }
        info!("retiring worker {} (pid {}): finishing {} request(s), then exiting", w.name, w.pid, w.in_hand.len());
        w.state = ProcState::Stopping;
        ipc::encode_frame(&mut w.tx_buf, FrameType::Stop, 0, &[], &[]);
        self.flush_worker(key);
    }

    /// Graceful end: STOP to every worker; the reap frees them.
    pub(super) fn stop_all_workers(&mut self) {
        let keys: Vec<usize> = self.workers.iter().map(|(k, _)| k).collect();
        for key in keys {
            let w = &mut self.workers[key];
            if matches!(w.state, ProcState::Dead { .. }) {
                continue;
            }
            w.state = ProcState::Stopping;
            ipc::encode_frame(&mut w.tx_buf, FrameType::Stop, 0, &[], &[]);
            self.flush_worker(key);
        }
    }

    pub(super) fn kill_all_workers(&mut self) {
        for (_, w) in self.workers.iter_mut() {
            if !w.killed {
                let _ = kill(w.pid, Signal::SIGKILL);
                w.killed = true;
            }
        }
    }

    /// Per-worker numbers for the status handler.
    pub(super) fn worker_status(&self, key: usize, now: Instant) -> Option<crate::sync_handlers::WorkerStatus> {
        let w = self.workers.get(key)?;
        Some(crate::sync_handlers::WorkerStatus {
            slot: w.slot,
            pid: w.pid.as_raw(),
            alive: !matches!(w.state, ProcState::Dead { .. }),
            ready: w.state == ProcState::Ready,
            last_heartbeat_age: now.duration_since(w.last_heartbeat).as_secs_f64(),
            in_hand: w.in_hand.len(),
            served: w.served,
            credits: w.credits,
        })
    }
}

fn log_output_line(name: &str, pid: Pid, stream: &str, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    if stream == "stderr" {
        warn!(target: "worker", "[{name} pid={pid} stderr] {text}");
    } else {
        info!(target: "worker", "[{name} pid={pid} stdout] {text}");
    }
}
