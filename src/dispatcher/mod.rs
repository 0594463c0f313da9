//! The dispatcher: one thread, one mio `Poll`, every socket and every worker pipe.
//!
//! The loop (`Dispatcher::run`) has three steps per turn, and no step calls back into
//! another:
//!
//! 1. **Events.** Each event's handler changes only its own object (a connection reads
//!    and parses, a worker pipe is read and its frames applied to requests) and records
//!    what must follow in [`Dirty`]: connections to write, pools to pump, workers that
//!    died. Every read has a byte budget, so no client and no worker holds the loop.
//! 2. **Timers.** Deadlines live in one heap ([`timers`]); its nearest entry is the poll
//!    timeout. A fired timer is checked against its owner's state before acting.
//! 3. **Settle.** The loop applies the recorded outcomes: deaths (after reading the dead
//!    worker's pipe to the end), pool pumps, connection writes, until nothing is left.
//!
//! Split by concern: `connection` (a client socket, its clocks and response slots),
//! `requests` (routing and answering requests), `workers` (worker processes: spawn,
//! frames, death, supervision), `output` (captured stdout/stderr), `reload`, `listeners`,
//! `timers`, `budget` (the memory ceiling), `keys`. `LIFECYCLE.md` walks through a request
//! and a worker's life by function name.

mod budget;
mod connection;
mod forkservers;
mod handlers;
mod keys;
mod listeners;
mod loops;
mod output;
mod reload;
mod requests;
mod sockets;
mod timers;
mod tuning;
mod workers;

use std::io;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::signal::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::Config;
use crate::extensions::Extensions;
use crate::pool::Pool;

use crate::idmap::{IdMap, IdSet};
use budget::Budget;
pub use connection::Conn;
use connection::{Clocks, Expiry, Flush, SocketRead};
pub use keys::{ConnKey, PoolId, ReqId, WorkerKey};
use listeners::Listener;
use loops::{Parsed, Role, Shared};
pub use requests::AccessInfo;
pub use timers::Armed;
use timers::{Timer, Timers};
use workers::WorkerProc;

/// After EMFILE/ENFILE on accept, or at `max_connections`, wait this long before
/// accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Read/parse/write rounds for one connection per turn before others get theirs.
const MAX_DRIVE_ROUNDS: usize = 16;
/// Settle passes per turn; what is left waits for the next turn (poll timeout 0).
const MAX_SETTLE_PASSES: usize = 8;

/// Token layout: the low 3 bits say what the token is, the rest is a table key.
const SIGNALS: Token = Token(0);
const TAG_BITS: usize = 3;
const TAG_LISTENER: usize = 1;
const TAG_CONN: usize = 2;
const TAG_WORKER_REPLY: usize = 3;
const TAG_WORKER_REQUEST: usize = 4;
const TAG_WORKER_STDOUT: usize = 5;
const TAG_WORKER_STDERR: usize = 6;
const TAG_FORKSERVER: usize = 7;

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
    /// SIGTERM/SIGINT: no new connections or requests, in-flight requests finish until
    /// the deadline.
    Draining {
        since: Instant,
        deadline: Instant,
    },
    /// Workers were told to stop (or killed): exit once they are reaped and every
    /// answer is written, or at the deadline.
    Stopping {
        since: Instant,
        deadline: Instant,
    },
}

/// Where a pool request is.
#[derive(Debug)]
enum ReqState {
    /// In its pool's queue, with its encoded REQUEST frame.
    Queued { frame: Vec<u8> },
    /// Handed to a worker, no answer yet.
    InWorker(WorkerKey),
    /// Handed to a worker beyond its credits (prefetch), no answer yet: it may not have
    /// started it, so a copy of the frame is kept to give it to another worker if this
    /// one dies first (counted in the buffer budget).
    Prefetched { worker: WorkerKey, frame: Vec<u8> },
    /// The worker started a streamed answer.
    Streaming(WorkerKey),
    /// The worker accepted a WebSocket: messages flow until either side closes.
    Socket(WorkerKey),
}

/// What a pool request asks of its worker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReqKind {
    /// An HTTP request (REQUEST).
    Http,
    /// A WebSocket handshake (WS_OPEN): the client's key and offered subprotocols.
    Socket { key: String, subprotocols: Vec<String> },
}

/// How to answer a request: the client's terms.
#[derive(Debug, Clone)]
struct ReplyTo {
    version: crate::http::Version,
    head_only: bool,
    keep_alive: bool,
    x_request_id: String,
    access: AccessInfo,
}

/// A request the dispatcher handed (or will hand) to a pool.
#[derive(Debug)]
struct Inflight {
    /// `None` for a forwarded request whose answer is discarded.
    conn: Option<ConnKey>,
    pool: PoolId,
    deadline: Instant,
    state: ReqState,
    kind: ReqKind,
    reply: ReplyTo,
}

impl Inflight {
    /// The size of its REQUEST frame while it is queued.
    fn frame_len(&self) -> Option<usize> {
        match &self.state {
            ReqState::Queued { frame } => Some(frame.len()),
            _ => None,
        }
    }

    fn worker(&self) -> Option<WorkerKey> {
        match self.state {
            ReqState::Queued { .. } => None,
            ReqState::InWorker(w)
            | ReqState::Prefetched { worker: w, .. }
            | ReqState::Streaming(w)
            | ReqState::Socket(w) => Some(w),
        }
    }
}

/// Outcomes recorded by event handlers, applied by `settle` after the batch.
#[derive(Debug, Default)]
struct Dirty {
    conns: Vec<ConnKey>,
    pools: Vec<PoolId>,
    dying: Vec<(WorkerKey, String)>,
    /// Reply pipes with bytes left after their per-turn budget.
    replies: Vec<WorkerKey>,
    /// Output pipes with bytes left after their per-turn budget.
    output: Vec<WorkerKey>,
    /// Slots may need workers. Spawning waits for `settle`: a worker reaped during the
    /// event batch frees its slab key, and a worker spawned in the same batch would take
    /// it over and receive the dead one's events still in the batch (its reply pipe's
    /// EOF), and be taken for dead.
    manage: bool,
    /// Listeners with connections to accept, for the same reason: a connection closed
    /// in the batch frees its key, and one accepted in the same batch would get its
    /// stale events.
    accept: Vec<usize>,
    /// Workers with WebSocket frames appended to their request pipe this turn: written
    /// once, after every connection of the turn had its say.
    tx: Vec<WorkerKey>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.conns.is_empty()
            && self.pools.is_empty()
            && self.dying.is_empty()
            && self.replies.is_empty()
            && self.output.is_empty()
            && !self.manage
            && self.accept.is_empty()
            && self.tx.is_empty()
    }
}

/// Error that stops the server from starting.
#[derive(Debug)]
pub enum RunError {
    Bind {
        addr: String,
        error: io::Error,
    },
    Poll(io::Error),
    Signals(io::Error),
    UnknownNativeWorker {
        pool: String,
        name: String,
    },
    /// A front event loop ended while the server ran (a bug: it panicked). The server
    /// stopped fast, so that a supervisor restarts it whole.
    LoopDied(usize),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Bind { addr, error } => write!(f, "could not listen on {addr}: {error}"),
            RunError::Poll(e) => write!(f, "could not create the event loop: {e}"),
            RunError::Signals(e) => write!(f, "could not install signal handlers: {e}"),
            RunError::LoopDied(index) => {
                write!(f, "event loop {index} stopped unexpectedly: the server stopped (see the log)")
            }
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
    /// The main loop (signals, pools, workers) or a front loop (`loops`).
    role: Role,
    /// What every loop shares: connection count, budget total, counters, pools' view.
    shared: std::sync::Arc<Shared>,
    /// This loop's number (0: the main loop).
    loop_index: usize,
    listeners: Vec<Listener>,
    accept_paused_until: Option<Instant>,
    conns: Slab<Conn>,
    pools: Vec<Pool>,
    workers: Slab<WorkerProc>,
    /// pid → worker key, for reaping.
    pids: IdMap<i32, WorkerKey>,
    inflight: IdMap<ReqId, Inflight>,
    /// Streams whose worker was sent FLOW paused (slow client).
    paused_streams: IdSet<ReqId>,
    next_request_id: u64,
    next_serial: u64,
    phase: Phase,
    started: Instant,
    scratch: Vec<u8>,
    timers: Timers,
    budget: Budget,
    /// Connections that stopped reading because the budget was spent.
    budget_waiters: Vec<ConnKey>,
    /// Bodies refused for the budget, reported in one line at most every 10 s.
    budget_refusals: budget::Refusals,
    /// A `Timer::Budget` is pending (see `recheck_budget_later`).
    budget_recheck_armed: bool,
    dirty: Dirty,
    /// Fork-servers of `preload` pools, by pool index.
    forkservers: Vec<forkservers::PoolForkServer>,
    /// pid → pool, for reaping fork-servers.
    forkserver_pids: IdMap<i32, PoolId>,
    /// PR_SET_CHILD_SUBREAPER: workers forked by a fork-server become our children.
    /// Without it, `preload` pools start workers the ordinary way.
    subreaper: Subreaper,
}

/// Whether the dispatcher is a child subreaper, so the workers a fork-server double-forks
/// become its children. It becomes one only when a pool preloads (at start or on the
/// reload that adds one): otherwise orphaned grandchildren of workers are not its to reap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subreaper {
    NotTried,
    Yes,
    /// Not possible here (said once): preload pools start workers without a fork-server.
    Unavailable,
}

fn become_subreaper() -> Subreaper {
    #[cfg(target_os = "linux")]
    {
        match nix::sys::prctl::set_child_subreaper(true) {
            Ok(()) => Subreaper::Yes,
            Err(e) => {
                log::warn!("PR_SET_CHILD_SUBREAPER failed ({e}): preload pools start workers without a fork-server");
                Subreaper::Unavailable
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        log::warn!("preload needs PR_SET_CHILD_SUBREAPER (Linux): pools start workers without a fork-server");
        Subreaper::Unavailable
    }
}

impl Dispatcher {
    /// Bind every address, set up signals, start every pool's workers.
    pub fn new(config: Config, ext: Extensions) -> Result<Dispatcher, RunError> {
        let subreaper = if config.pools.iter().any(|p| p.preload) { become_subreaper() } else { Subreaper::NotTried };
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
        let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), loops::WAKER).map_err(RunError::Poll)?);

        let mut listeners = Vec::new();
        for bind in &config.server.bind {
            listeners.push(listeners::bind(bind, config.server.backlog)?);
        }
        let shared = std::sync::Arc::new(Shared::new(tuning::loops(&config)));
        let main = Role::Main(loops::MainLoop::new(signals, waker));
        let mut d = Dispatcher::with_role(config, ext, poll, main, listeners, shared, 0);
        d.subreaper = subreaper;
        let now = Instant::now();
        d.start_fronts(now)?;
        for (i, l) in d.listeners.iter_mut().enumerate() {
            d.poll
                .registry()
                .register(l, token(TAG_LISTENER, i), Interest::READABLE)
                .map_err(|error| RunError::Bind { addr: l.describe(), error })?;
            // Tests and operators read the actual address (port 0 is resolved here).
            info!("listening on {}", l.describe());
        }
        d.manage_pools(now);
        Ok(d)
    }

    /// A loop's state, before any pool starts.
    fn with_role(
        config: Config,
        ext: Extensions,
        poll: Poll,
        role: Role,
        listeners: Vec<Listener>,
        shared: std::sync::Arc<Shared>,
        loop_index: usize,
    ) -> Dispatcher {
        let pools = match role {
            Role::Main(_) => config.pools.iter().cloned().map(Pool::new).collect(),
            Role::Front(_) => Vec::new(),
        };
        let budget = Budget::shared(tuning::max_buffered_bytes(&config.server), shared.budget_used.clone());
        Dispatcher {
            config_path: reload::config_file(&config),
            config,
            ext,
            poll,
            role,
            shared,
            loop_index,
            listeners,
            accept_paused_until: None,
            conns: Slab::new(),
            pools,
            workers: Slab::new(),
            pids: IdMap::default(),
            inflight: IdMap::default(),
            paused_streams: IdSet::default(),
            next_request_id: 1,
            next_serial: 1,
            phase: Phase::Running,
            started: Instant::now(),
            scratch: vec![0; connection::IO_CHUNK],
            timers: Timers::default(),
            budget,
            budget_waiters: Vec::new(),
            budget_refusals: budget::Refusals::default(),
            budget_recheck_armed: false,
            dirty: Dirty::default(),
            forkservers: Vec::new(),
            forkserver_pids: IdMap::default(),
            subreaper: Subreaper::NotTried,
        }
    }

    /// The event loop. Returns when the server has stopped.
    pub fn run(&mut self) -> Result<(), RunError> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout =
                if self.dirty.is_empty() { self.timers.timeout(Instant::now()) } else { Some(Duration::ZERO) };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(RunError::Poll(e));
            }
            for event in events.iter() {
                let (tag, key) = split_token(event.token());
                match (event.token(), tag) {
                    (SIGNALS, _) => self.handle_signals(),
                    (loops::WAKER, _) => self.woken(Instant::now()),
                    (_, TAG_LISTENER) => self.dirty.accept.push(key),
                    (_, TAG_CONN) => self.conn_event(ConnKey(key), event.is_read_closed()),
                    (_, TAG_WORKER_REPLY) => self.read_worker_replies(WorkerKey(key), event.is_read_closed()),
                    (_, TAG_WORKER_REQUEST) => self.flush_worker(WorkerKey(key)),
                    (_, TAG_WORKER_STDOUT) => self.read_worker_output(WorkerKey(key), output::Which::Stdout),
                    (_, TAG_WORKER_STDERR) => self.read_worker_output(WorkerKey(key), output::Which::Stderr),
                    (_, TAG_FORKSERVER) => self.forkserver_event(key),
                    _ => {} // sporadic events for closed tokens happen
                }
            }
            let now = Instant::now();
            for timer in self.timers.expired(now) {
                self.fire(timer, now);
            }
            self.settle(now);
            self.publish_pools(now, false);
            self.recheck_budget_later(now);
            if self.should_exit(now) {
                self.finish_stop();
                return match self.role {
                    Role::Main(ref main) => main.died.map_or(Ok(()), |i| Err(RunError::LoopDied(i))),
                    Role::Front(_) => Ok(()),
                };
            }
        }
    }

    /// Apply the outcomes recorded during the batch. Each step may record more (a death
    /// answers requests, whose connections then need a write); passes repeat until
    /// nothing is left, at most `MAX_SETTLE_PASSES` (the rest waits one turn).
    fn settle(&mut self, now: Instant) {
        for _ in 0..MAX_SETTLE_PASSES {
            if self.dirty.is_empty() {
                break;
            }
            for (key, why) in std::mem::take(&mut self.dirty.dying) {
                self.worker_died(key, &why, now);
            }
            if std::mem::take(&mut self.dirty.manage) {
                self.manage_pools(now);
            }
            let mut listeners = std::mem::take(&mut self.dirty.accept);
            listeners.sort_unstable();
            listeners.dedup();
            for key in listeners {
                self.accept_all(key);
            }
            let mut pools = std::mem::take(&mut self.dirty.pools);
            pools.sort_unstable();
            pools.dedup();
            for p in pools {
                self.pump_pool(p, now);
            }
            let mut conns = std::mem::take(&mut self.dirty.conns);
            conns.sort_unstable();
            conns.dedup();
            for key in conns {
                self.service_conn(key, now);
            }
            let mut tx = std::mem::take(&mut self.dirty.tx);
            tx.sort_unstable();
            tx.dedup();
            for key in tx {
                self.flush_worker(key);
            }
            for key in std::mem::take(&mut self.dirty.replies) {
                self.read_worker_replies(key, false);
            }
        }
        // Captured output gets one budgeted turn per loop turn, after everything else:
        // logging is the slow part of a flood, and it must not crowd out clients.
        let mut output = std::mem::take(&mut self.dirty.output);
        output.sort_unstable();
        output.dedup();
        for key in output {
            self.read_worker_output(key, output::Which::Stdout);
            self.read_worker_output(key, output::Which::Stderr);
        }
        if let Phase::Draining { .. } = self.phase {
            self.advance_shutdown(now);
        }
    }

    fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Conn(key, serial) => self.conn_timer(key, serial, now),
            Timer::Worker(key, serial) => self.worker_timer(key, serial, now),
            Timer::Pool(p) => self.pool_timer(p, now),
            Timer::Accept => {
                if self.accept_paused_until.is_some_and(|t| t <= now) {
                    self.accept_paused_until = None;
                    for i in 0..self.listeners.len() {
                        self.accept_all(i);
                    }
                }
            }
            Timer::Shutdown => self.advance_shutdown(now),
            Timer::Publish => self.publish_pools(now, true),
            Timer::Budget => self.budget_recheck(),
        }
    }

    /// Signals arrive through signal-hook's self-pipe: drain first, then act.
    fn handle_signals(&mut self) {
        let Role::Main(main) = &mut self.role else { return };
        let pending: Vec<i32> = main.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGCHLD => self.reap_workers(),
                SIGTERM | SIGINT => self.begin_drain(sig),
                SIGQUIT => self.fast_stop("SIGQUIT"),
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
            if self.shared.open_conns.load(std::sync::atomic::Ordering::Relaxed) >= self.config.server.max_connections {
                // Leave the rest in the kernel backlog; retried when the timer fires.
                self.pause_accepting(now);
                return;
            }
            let Some(listener) = self.listeners.get_mut(index) else { return };
            match listener.accept() {
                Ok((stream, ip, port)) => {
                    let entry = self.conns.vacant_entry();
                    let key = ConnKey(entry.key());
                    let serial = self.next_serial;
                    self.next_serial += 1;
                    let mut conn = Conn::new(serial, stream, ip, port, self.config.server.limits, now);
                    if self
                        .poll
                        .registry()
                        .register(&mut conn.stream, token(TAG_CONN, key.0), Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    entry.insert(conn);
                    self.shared.open_conns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.counters().connection();
                    // Edge-triggered: data may already be waiting.
                    self.service_conn(key, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning on a
                    // listener that stays readable.
                    warn!("accept failed on {}: {e}; pausing accepts for {:?}", listener.describe(), ACCEPT_BACKOFF);
                    self.pause_accepting(now);
                    return;
                }
            }
        }
    }

    fn pause_accepting(&mut self, now: Instant) {
        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
        self.timers.arm(now + ACCEPT_BACKOFF, Timer::Accept);
    }

    /// Readiness on a client socket.
    fn conn_event(&mut self, key: ConnKey, hangup: bool) {
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        conn.socket = if hangup { SocketRead::HangUp } else { SocketRead::Pending };
        self.service_conn(key, Instant::now());
    }

    /// Read, parse and answer what a connection allows, write what is ready, then set its
    /// interest and clocks, or close it. Bounded: a deep pipeline gets `MAX_DRIVE_ROUNDS`
    /// and the rest next turn.
    fn service_conn(&mut self, key: ConnKey, now: Instant) {
        let cap = tuning::max_connection_buffer(&self.config.server);
        for round in 0..MAX_DRIVE_ROUNDS {
            let Some(conn) = self.conns.get_mut(key.0) else { return };
            // Past the memory ceiling, only a connection holding nothing reads, and only a
            // head's worth; the others wait (their clocks stopped) until room frees.
            let read_limit = match (self.budget.exhausted(), conn.held) {
                (false, _) => connection::READ_BUDGET,
                (true, 0) => connection::STARVED_READ,
                (true, _) => 0,
            };
            let wants = conn.wants_read(cap) && read_limit > 0;
            if read_limit == 0 && conn.wants_read(cap) {
                self.budget_waiters.push(key);
            }
            conn.set_paused(!wants && conn.open_for_requests(), now);
            let socket = conn.ws.is_some();
            let parsed = if wants && conn.socket != SocketRead::Drained {
                if !conn.read_available(&mut self.scratch, read_limit, now) {
                    return self.close_conn(key);
                }
                if !socket { self.parse_requests(key, now) } else { Parsed::Stay }
            } else if wants && !socket && conn.reader.buffered() > 0 && round == 0 {
                // Pipelined bytes read earlier, held back until now.
                self.parse_requests(key, now)
            } else {
                Parsed::Stay
            };
            if let Parsed::HandOff(at) = parsed {
                return self.hand_off(key, at);
            }
            if socket {
                // Frames decoded (or held while the worker's pipe was full) are relayed.
                self.pump_socket(key);
            }
            if self.client_gone(key) {
                return self.close_conn(key);
            }
            let Some(conn) = self.conns.get_mut(key.0) else { return };
            let before = conn.unsent();
            let flush = conn.flush(now);
            let close = match flush {
                Flush::Close => true,
                Flush::Blocked => false,
                Flush::Idle => conn.finished(),
            };
            if close {
                return self.close_conn(key);
            }
            let unsent = conn.unsent();
            let interest =
                if flush == Flush::Blocked { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            if conn.interest != interest {
                conn.interest = interest;
                let _ = self.poll.registry().reregister(&mut conn.stream, token(TAG_CONN, key.0), interest);
            }
            // Room freed: requests of this client held in pool queues may go now.
            if before >= cap && unsent < cap {
                self.mark_queued_pools();
            }
            self.resume_streams(key);
            // Accounted every round: the next round's reads see the budget as it is.
            self.account_conn(key);
            let Some(conn) = self.conns.get_mut(key.0) else { return };
            let again = conn.wants_read(cap)
                && !self.budget.exhausted()
                && flush != Flush::Blocked
                && (conn.socket != SocketRead::Drained || conn.reader.buffered() > 0 && round == 0);
            if !again || round + 1 == MAX_DRIVE_ROUNDS {
                if again {
                    self.dirty.conns.push(key);
                }
                break;
            }
        }
        self.account_conn(key);
        self.arm_conn(key, now);
    }

    /// Keep the budget's count of a connection's memory current.
    fn account_conn(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        let (before, after) = (conn.held, conn.memory());
        conn.held = after;
        self.hold(before, after);
    }

    /// An owner's holding in the memory budget went from `before` to `after` bytes.
    fn hold(&mut self, before: u64, after: u64) {
        let was_exhausted = self.budget.exhausted();
        self.budget.change(before, after);
        if was_exhausted && !self.budget.exhausted() {
            self.budget_freed();
        }
    }

    /// The budget has room again: queued requests may go to workers, and connections
    /// that stopped reading for it read again.
    fn budget_freed(&mut self) {
        self.mark_queued_pools();
        let waiters = std::mem::take(&mut self.budget_waiters);
        self.dirty.conns.extend(waiters);
    }

    /// Pools with waiting requests get pumped after this batch.
    fn mark_queued_pools(&mut self) {
        for (i, p) in self.pools.iter().enumerate() {
            if p.queue_len() > 0 {
                self.dirty.pools.push(PoolId(i));
            }
        }
    }

    fn arm_conn(&mut self, key: ConnKey, _now: Instant) {
        let clocks = Clocks::of(&self.config.server);
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        if let Some((at, _)) = conn.deadline(&clocks)
            && conn.armed.needs(at)
        {
            self.timers.arm(at, Timer::Conn(key, conn.serial));
        }
    }

    fn conn_timer(&mut self, key: ConnKey, serial: u64, now: Instant) {
        let clocks = Clocks::of(&self.config.server);
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        if conn.serial != serial {
            return;
        }
        conn.armed.fired();
        match conn.deadline(&clocks) {
            Some((at, Expiry::Close)) if at <= now => self.close_conn(key),
            Some((at, Expiry::RequestTimeout)) if at <= now => {
                self.answer_error_and_close(key, 408, "request timeout");
            }
            Some((at, Expiry::WsPing)) if at <= now => self.ping_socket(key, now),
            Some((at, Expiry::WsIdle)) if at <= now => {
                self.close_socket_of(key, crate::websocket::CloseCode::NORMAL, "idle timeout");
            }
            _ => self.arm_conn(key, now),
        }
    }

    /// The client closed its side while requests are still in pools: like nginx, treat it
    /// as gone (its workers get DISCONNECT) instead of holding workers for a reader that
    /// left.
    fn client_gone(&self, key: ConnKey) -> bool {
        self.conns.get(key.0).is_some_and(|c| {
            c.reading == connection::Reading::PeerClosed
                && c.slots.iter().any(|s| s.req.is_some() && s.fill != connection::Fill::Done)
        })
    }

    /// After writing to a client, resume its paused streams that drained (FLOW).
    fn resume_streams(&mut self, key: ConnKey) {
        if self.paused_streams.is_empty() {
            return;
        }
        let ids: Vec<ReqId> = self
            .paused_streams
            .iter()
            .copied()
            .filter(|id| self.inflight.get(id).is_none_or(|i| i.conn == Some(key)))
            .collect();
        for id in ids {
            self.stream_back_pressure(id);
        }
    }

    fn close_conn(&mut self, key: ConnKey) {
        if !self.conns.contains(key.0) {
            return;
        }
        let mut conn = self.conns.remove(key.0);
        let open = self.shared.open_conns.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.hold(conn.held, 0);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        // Requests still waiting for this client: tell their workers, drop queued ones.
        for id in conn.slots.iter().filter(|s| s.fill != connection::Fill::Done).filter_map(|s| s.req) {
            self.abandon_request(id, true);
        }
        if self.phase == Phase::Running && open == self.config.server.max_connections {
            // A place freed under the connection limit: accept again without waiting.
            self.accept_paused_until = None;
            for i in 0..self.listeners.len() {
                self.accept_all(i);
            }
        }
    }

    /// SIGTERM/SIGINT. The first starts a graceful stop; a second one while stopping
    /// escalates to the fast stop (gunicorn's behaviour: an operator pressing Ctrl-C twice
    /// means it).
    fn begin_drain(&mut self, sig: i32) {
        let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
        if self.phase != Phase::Running {
            warn!("{name} again during a graceful stop: stopping now");
            return self.fast_stop(name);
        }
        let now = Instant::now();
        let deadline = now + self.config.server.shutdown_timeout;
        info!(
            "{name}: graceful stop: no new connections; finishing in-flight requests for up to {:?}",
            self.config.server.shutdown_timeout
        );
        self.fronts_drain(deadline);
        self.drain_until(now, deadline);
    }

    /// The graceful stop, in any loop: listeners closed, idle connections closed, busy
    /// ones closing after their last answer, until `deadline`.
    fn drain_until(&mut self, now: Instant, deadline: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        self.phase = Phase::Draining { since: now, deadline };
        self.timers.arm(deadline, Timer::Shutdown);
        // Idle connections close now; busy ones take no further request and close after
        // their last answer (which says `connection: close`).
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            let conn = &mut self.conns[k];
            conn.no_more_requests();
            self.dirty.conns.push(ConnKey(k));
        }
        self.advance_shutdown(now);
    }

    /// SIGQUIT (or a second TERM/INT): kill workers, exit once they are reaped.
    fn fast_stop(&mut self, why: &str) {
        if let Role::Main(_) = self.role {
            info!("{why}: fast stop: killing workers");
        }
        self.fronts_stop();
        let now = Instant::now();
        self.stop_all_forkservers(now);
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        self.kill_all_workers();
        for p in &mut self.pools {
            p.stop();
        }
        let since = match self.phase {
            Phase::Running => now,
            Phase::Draining { since, .. } | Phase::Stopping { since, .. } => since,
        };
        let deadline = now + tuning::fast_stop_timeout(&self.config.server);
        self.phase = Phase::Stopping { since, deadline };
        self.timers.arm(deadline, Timer::Shutdown);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.close_conn(ConnKey(k));
        }
    }

    fn advance_shutdown(&mut self, now: Instant) {
        match self.phase {
            Phase::Running => {}
            Phase::Draining { since, deadline } => {
                let busy = !self.inflight.is_empty();
                if busy && now < deadline {
                    return;
                }
                if busy {
                    warn!("shutdown timeout: answering {} unfinished request(s) 503", self.inflight.len());
                    let ids: Vec<ReqId> = self.inflight.keys().copied().collect();
                    for id in ids {
                        self.fail_request(id, 503, "server shutting down");
                    }
                    self.kill_all_workers();
                } else {
                    self.stop_all_workers();
                }
                self.stop_all_forkservers(now);
                for p in &mut self.pools {
                    p.stop();
                }
                let deadline = deadline.max(now) + tuning::fast_stop_timeout(&self.config.server);
                self.phase = Phase::Stopping { since, deadline };
                self.timers.arm(deadline, Timer::Shutdown);
            }
            Phase::Stopping { deadline, .. } => {
                if now >= deadline {
                    self.kill_all_workers();
                }
            }
        }
    }

    fn should_exit(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Stopping { deadline, .. } => {
                let conns_done = self.conns.iter().all(|(_, c)| c.slots.is_empty() && !c.has_unsent_output());
                (self.workers.is_empty() && conns_done && self.fronts_done()) || now >= deadline
            }
            _ => false,
        }
    }

    /// Last steps before returning from `run`: no child may be left behind.
    fn finish_stop(&mut self) {
        self.stop_all_forkservers(Instant::now());
        if !self.workers.is_empty() || !self.forkserver_pids.is_empty() {
            self.kill_all_workers();
            let deadline = Instant::now() + tuning::fast_stop_timeout(&self.config.server);
            while (!self.workers.is_empty() || !self.forkserver_pids.is_empty()) && Instant::now() < deadline {
                self.reap_workers();
                if !self.workers.is_empty() || !self.forkserver_pids.is_empty() {
                    // Blocking here is fine: the loop is over, and the children were
                    // SIGKILLed, so their exit is a matter of the kernel's scheduling.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            if !self.workers.is_empty() {
                error!("{} worker(s) could not be reaped at exit", self.workers.len());
            }
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close_conn(ConnKey(key));
        }
        self.join_fronts();
        if let Role::Front(_) = self.role {
            return;
        }
        let stop_took = match self.phase {
            Phase::Draining { since, .. } | Phase::Stopping { since, .. } => since.elapsed(),
            Phase::Running => Duration::ZERO,
        };
        info!("stopped (uptime {:.1} s, stop took {} ms)", self.started.elapsed().as_secs_f64(), stop_took.as_millis());
    }
}
