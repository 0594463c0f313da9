//! The dispatcher: one thread, one mio `Poll`, every socket and every worker pipe.
//!
//! The loop (see `Dispatcher::run`) waits for events, handles each by its token's kind
//! (listener, client connection, worker pipe, signals), then runs the periodic duties in
//! `tick`: timeouts of connections and requests, stuck workers, reaping, respawning, and
//! pool health. Nothing in the loop blocks: sockets and pipes are non-blocking and files
//! are streamed in chunks under write readiness.
//!
//! Split by concern: `connection` (one client socket and its pipelined response slots),
//! `requests` (routing a parsed request to static files, sync handlers or a pool, and
//! answering it), `workers` (worker processes: spawn, frames, death, supervision),
//! `listeners` (binding). `LIFECYCLE.md` beside this file walks through a request and a
//! worker's life by function name.

mod connection;
mod handlers;
mod listeners;
mod reload;
mod requests;
mod workers;

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::signal::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::Config;
use crate::extensions::Extensions;
use crate::metrics::Metrics;
use crate::pool::Pool;

pub use connection::Conn;
use listeners::Listener;
pub use requests::AccessInfo;
use workers::WorkerProc;

/// How often periodic duties run at most; also the longest poll wait.
const TICK: Duration = Duration::from_millis(50);
/// After EMFILE/ENFILE on accept, wait this long before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Read/parse/write rounds for one connection per event before others get their turn.
const MAX_DRIVE_ROUNDS: usize = 16;

/// Token layout: the low 3 bits say what the token is, the rest is a table key.
const SIGNALS: Token = Token(0);
const TAG_BITS: usize = 3;
const TAG_LISTENER: usize = 1;
const TAG_CONN: usize = 2;
const TAG_WORKER_REPLY: usize = 3;
const TAG_WORKER_REQUEST: usize = 4;
const TAG_WORKER_STDOUT: usize = 5;
const TAG_WORKER_STDERR: usize = 6;

fn token(tag: usize, key: usize) -> Token {
    Token((key << TAG_BITS) | tag)
}

fn split_token(t: Token) -> (usize, usize) {
    (t.0 & ((1 << TAG_BITS) - 1), t.0 >> TAG_BITS)
}

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// SIGTERM/SIGINT: no new connections, in-flight requests finish until the deadline.
    Draining {
        deadline: Instant,
    },
    /// Done: the loop exits once workers are gone or the deadline passed.
    Stopping {
        deadline: Instant,
    },
}

/// A request the dispatcher handed (or will hand) to a pool.
#[derive(Debug)]
struct Inflight {
    /// Connection key; `None` for a forwarded request whose answer is discarded.
    conn: Option<usize>,
    pool: usize,
    /// Worker key once handed over.
    worker: Option<usize>,
    deadline: Instant,
    /// The encoded REQUEST frame, until it is handed to a worker.
    frame: Option<Vec<u8>>,
    streaming: bool,
    keep_alive: bool,
    head_only: bool,
    /// The client's HTTP version (1.0 clients get close-delimited streams).
    version: crate::http::Version,
    x_request_id: String,
    access: requests::AccessInfo,
}

/// Error that stops the server from starting.
#[derive(Debug)]
pub enum RunError {
    Bind { addr: String, error: io::Error },
    Poll(io::Error),
    Signals(io::Error),
    UnknownNativeWorker { pool: String, name: String },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Bind { addr, error } => write!(f, "could not listen on {addr}: {error}"),
            RunError::Poll(e) => write!(f, "could not create the event loop: {e}"),
            RunError::Signals(e) => write!(f, "could not install signal handlers: {e}"),
            RunError::UnknownNativeWorker { pool, name } => {
                write!(f, "pool `{pool}`: no native worker named `{name}` is registered (built-in: echo, chaos)")
            }
        }
    }
}

impl std::error::Error for RunError {}

/// The dispatcher process state.
pub struct Dispatcher {
    config: Config,
    /// Where SIGHUP re-reads the config from (`None` for the embedded default).
    config_path: Option<std::path::PathBuf>,
    ext: Extensions,
    poll: Poll,
    signals: Signals,
    listeners: Vec<Listener>,
    accept_paused_until: Option<Instant>,
    conns: Slab<Conn>,
    pools: Vec<Pool>,
    workers: Slab<WorkerProc>,
    /// pid → worker key, for reaping.
    pids: HashMap<i32, usize>,
    inflight: HashMap<u64, Inflight>,
    /// Streams whose worker was sent FLOW paused (slow client).
    paused_streams: std::collections::HashSet<u64>,
    next_request_id: u64,
    metrics: Metrics,
    phase: Phase,
    last_tick: Instant,
    started: Instant,
    scratch: Vec<u8>,
}

impl Dispatcher {
    /// Bind every address, set up signals, start every pool's workers.
    pub fn new(config: Config, ext: Extensions) -> Result<Dispatcher, RunError> {
        for pool in &config.pools {
            if let crate::config::WorkerKind::Native(name) = &pool.worker
                && !crate::worker::is_registered(name)
            {
                return Err(RunError::UnknownNativeWorker { pool: pool.name.clone(), name: name.clone() });
            }
        }
        let poll = Poll::new().map_err(RunError::Poll)?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGCHLD, SIGHUP, SIGUSR1, SIGTTIN, SIGTTOU])
            .map_err(RunError::Signals)?;
        poll.registry().register(&mut signals, SIGNALS, Interest::READABLE).map_err(RunError::Signals)?;

        let mut listeners = Vec::new();
        for (i, bind) in config.server.bind.iter().enumerate() {
            let mut l = listeners::bind(bind, config.server.backlog)?;
            poll.registry()
                .register(&mut l, token(TAG_LISTENER, i), Interest::READABLE)
                .map_err(|error| RunError::Bind { addr: l.describe(), error })?;
            // Tests and operators read the actual address (port 0 is resolved here).
            eprintln!("rustworkers: listening on {}", l.describe());
            listeners.push(l);
        }
        let pools = config.pools.iter().cloned().map(Pool::new).collect();
        let now = Instant::now();
        let mut d = Dispatcher {
            config_path: reload::config_file(&config),
            config,
            ext,
            poll,
            signals,
            listeners,
            accept_paused_until: None,
            conns: Slab::new(),
            pools,
            workers: Slab::new(),
            pids: HashMap::new(),
            inflight: HashMap::new(),
            paused_streams: std::collections::HashSet::new(),
            next_request_id: 1,
            metrics: Metrics::default(),
            phase: Phase::Running,
            last_tick: now,
            started: now,
            scratch: vec![0; connection::IO_CHUNK],
        };
        d.spawn_due_workers(now);
        Ok(d)
    }

    /// The event loop. Returns when the server has stopped.
    pub fn run(&mut self) -> Result<(), RunError> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(RunError::Poll(e));
            }
            for event in events.iter() {
                let (tag, key) = split_token(event.token());
                match (event.token(), tag) {
                    (SIGNALS, _) => self.handle_signals(),
                    (_, TAG_LISTENER) => self.accept_all(key),
                    (_, TAG_CONN) => {
                        if event.is_read_closed()
                            && let Some(conn) = self.conns.get_mut(key)
                        {
                            conn.hangup_seen = true;
                        }
                        self.drive_conn(key)
                    }
                    (_, TAG_WORKER_REPLY) => self.read_worker_replies(key, event.is_read_closed()),
                    (_, TAG_WORKER_REQUEST) => self.flush_worker(key),
                    (_, TAG_WORKER_STDOUT) => self.read_worker_output(key, false),
                    (_, TAG_WORKER_STDERR) => self.read_worker_output(key, true),
                    _ => {} // sporadic events for closed tokens happen
                }
            }
            let now = Instant::now();
            if now.duration_since(self.last_tick) >= TICK {
                self.last_tick = now;
                self.tick(now);
            }
            if self.should_exit(now) {
                self.finish_stop();
                return Ok(());
            }
        }
    }

    fn poll_timeout(&self) -> Duration {
        TICK.saturating_sub(self.last_tick.elapsed())
    }

    /// Signals arrive through signal-hook's self-pipe: drain first, then act.
    fn handle_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGCHLD => self.reap_workers(),
                SIGTERM | SIGINT => self.begin_drain(),
                SIGQUIT => self.fast_stop(),
                SIGHUP => self.reload(),
                SIGUSR1 => info!("SIGUSR1: logs go to stderr; nothing to reopen"),
                SIGTTIN => self.resize_pools(1),
                SIGTTOU => self.resize_pools(-1),
                _ => {}
            }
        }
    }

    fn accept_all(&mut self, index: usize) {
        if self.phase != Phase::Running || self.accept_paused_until.is_some() {
            return;
        }
        let now = Instant::now();
        loop {
            if self.conns.len() >= self.config.server.max_connections {
                // Leave the rest in the kernel backlog; retried on the next tick.
                self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                return;
            }
            let Some(listener) = self.listeners.get_mut(index) else { return };
            match listener.accept() {
                Ok((stream, ip, port)) => {
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    let mut conn = Conn::new(stream, ip, port, self.config.server.limits, now);
                    if self
                        .poll
                        .registry()
                        .register(&mut conn.stream, token(TAG_CONN, key), Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    entry.insert(conn);
                    self.metrics.connections_total += 1;
                    // Edge-triggered: data may already be waiting.
                    self.drive_conn(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning on a
                    // listener that stays readable.
                    warn!("accept failed on {}: {e}; pausing accepts for {:?}", listener.describe(), ACCEPT_BACKOFF);
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Read, parse, answer and write for one connection; close it when finished.
    fn drive_conn(&mut self, key: usize) {
        // Bounded so one client with a deep pipeline cannot hold the loop; what is left is
        // picked up by `tick` (`read_pending`).
        for _ in 0..MAX_DRIVE_ROUNDS {
            let now = Instant::now();
            let ok = match self.conns.get_mut(key) {
                Some(conn) => conn.read_available(&mut self.scratch, now),
                None => return,
            };
            if !ok {
                self.close_conn(key);
                return;
            }
            self.parse_requests(key, now);
            if self.client_gone(key) {
                self.close_conn(key);
                return;
            }
            let more = self.write_conn(key, now);
            self.resume_streams(key);
            if !more {
                return;
            }
        }
    }

    /// The client closed its side while requests are still in pools: like nginx, treat it
    /// as gone (its workers get DISCONNECT) instead of holding workers for a reader that
    /// left.
    fn client_gone(&self, key: usize) -> bool {
        self.conns.get(key).is_some_and(|c| c.peer_closed && c.slots.iter().any(|s| s.req_id != 0 && !s.done))
    }

    /// Write what is ready on a connection; if it then wants to read more, drive it.
    fn flush_conn(&mut self, key: usize, now: Instant) {
        if self.write_conn(key, now) {
            self.drive_conn(key);
        } else {
            self.resume_streams(key);
        }
    }

    /// After writing to a client, resume its paused streams that drained (FLOW).
    fn resume_streams(&mut self, key: usize) {
        if self.paused_streams.is_empty() {
            return;
        }
        let ids: Vec<u64> = self
            .paused_streams
            .iter()
            .copied()
            .filter(|id| self.inflight.get(id).is_none_or(|i| i.conn == Some(key)))
            .collect();
        for id in ids {
            self.stream_back_pressure(id);
        }
    }

    /// Write what is ready, then set the connection's interest or close it. Returns true
    /// when reading had stopped for back-pressure and may resume now.
    fn write_conn(&mut self, key: usize, now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(key) else { return false };
        let result = conn.flush(now);
        let close = match result {
            connection::Flush::Close => true,
            connection::Flush::Blocked => false,
            connection::Flush::Idle => {
                // Everything answered and nothing more will come.
                conn.slots.is_empty() && (conn.peer_closed || conn.no_more_requests)
            }
        };
        if close {
            self.close_conn(key);
            return false;
        }
        let want_write = result == connection::Flush::Blocked;
        let interest = if want_write { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        if conn.interest != interest {
            conn.interest = interest;
            let _ = self.poll.registry().reregister(&mut conn.stream, token(TAG_CONN, key), interest);
        }
        conn.read_pending && conn.wants_read() && !want_write
    }

    fn close_conn(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        // Requests still waiting for this client: tell their workers, drop queued ones.
        for slot in conn.slots.iter().filter(|s| s.req_id != 0 && !s.done) {
            self.abandon_request(slot.req_id, true);
        }
    }

    /// Periodic duties: timeouts, supervision, respawns, health.
    fn tick(&mut self, now: Instant) {
        if let Some(until) = self.accept_paused_until
            && now >= until
        {
            self.accept_paused_until = None;
            for i in 0..self.listeners.len() {
                self.accept_all(i);
            }
        }
        // Connections whose reading stopped for back-pressure or fairness.
        let resumable: Vec<usize> =
            self.conns.iter().filter(|(_, c)| c.read_pending && c.wants_read()).map(|(k, _)| k).collect();
        for key in resumable {
            self.drive_conn(key);
        }
        self.expire_connections(now);
        self.expire_requests(now);
        self.supervise_workers(now);
        for p in 0..self.pools.len() {
            if self.pools[p].tick(now) {
                info!("pool {} recovered: healthy again", self.pools[p].name());
            }
        }
        if self.phase == Phase::Running || matches!(self.phase, Phase::Draining { .. }) {
            self.spawn_due_workers(now);
        }
        for p in 0..self.pools.len() {
            self.pump_pool(p, now);
        }
        self.advance_shutdown(now);
    }

    fn expire_connections(&mut self, now: Instant) {
        let s = &self.config.server;
        let (keepalive, header, body, write) = (s.keepalive_timeout, s.header_timeout, s.body_timeout, s.write_timeout);
        let draining = self.phase != Phase::Running;
        let mut to_close = Vec::new();
        let mut to_timeout = Vec::new();
        for (key, conn) in self.conns.iter() {
            if conn.has_unsent_output() && now.duration_since(conn.last_write) > write {
                to_close.push(key);
                continue;
            }
            match conn.reader.phase() {
                crate::http::Phase::Idle => {
                    let idle_since = conn.last_read.max(conn.last_write);
                    if conn.slots.is_empty() && (draining || now.duration_since(idle_since) > keepalive) {
                        to_close.push(key);
                    }
                }
                crate::http::Phase::Head => {
                    if conn.head_started.is_some_and(|t| now.duration_since(t) > header) {
                        to_timeout.push(key);
                    }
                }
                crate::http::Phase::Body => {
                    if now.duration_since(conn.last_read) > body {
                        to_timeout.push(key);
                    }
                }
            }
        }
        for key in to_close {
            self.close_conn(key);
        }
        for key in to_timeout {
            self.answer_error_and_close(key, 408, "request timeout", now);
        }
    }

    fn begin_drain(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let deadline = Instant::now() + self.config.server.shutdown_timeout;
        info!(
            "graceful stop: no new connections; finishing in-flight requests for up to {:?}",
            self.config.server.shutdown_timeout
        );
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        self.phase = Phase::Draining { deadline };
    }

    /// SIGQUIT: kill workers, exit at once.
    fn fast_stop(&mut self) {
        info!("fast stop: killing workers");
        self.listeners.clear();
        self.kill_all_workers();
        self.phase = Phase::Stopping { deadline: Instant::now() + Duration::from_secs(2) };
    }

    fn advance_shutdown(&mut self, now: Instant) {
        match self.phase {
            Phase::Running => {}
            Phase::Draining { deadline } => {
                let busy = !self.inflight.is_empty();
                if busy && now < deadline {
                    return;
                }
                if busy {
                    warn!("shutdown timeout: answering {} unfinished request(s) 503", self.inflight.len());
                    let ids: Vec<u64> = self.inflight.keys().copied().collect();
                    for id in ids {
                        self.fail_request(id, 503, "server shutting down", now);
                    }
                    self.kill_all_workers();
                } else {
                    self.stop_all_workers();
                }
                self.phase = Phase::Stopping { deadline: deadline.max(now + Duration::from_secs(1)) };
            }
            Phase::Stopping { deadline } => {
                if now >= deadline {
                    self.kill_all_workers();
                }
            }
        }
    }

    fn should_exit(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Stopping { deadline } => {
                self.reap_workers();
                let conns_done = self.conns.iter().all(|(_, c)| c.slots.is_empty() && !c.has_unsent_output());
                (self.workers.is_empty() && conns_done) || now >= deadline + Duration::from_secs(3)
            }
            _ => false,
        }
    }

    /// Last steps before returning from `run`: no child may be left behind.
    fn finish_stop(&mut self) {
        if !self.workers.is_empty() {
            self.kill_all_workers();
            let deadline = Instant::now() + Duration::from_secs(2);
            while !self.workers.is_empty() && Instant::now() < deadline {
                self.reap_workers();
                std::thread::sleep(Duration::from_millis(10));
            }
            if !self.workers.is_empty() {
                error!("{} worker(s) could not be reaped at exit", self.workers.len());
            }
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close_conn(key);
        }
        info!("stopped after {:?}", self.started.elapsed());
    }
}
