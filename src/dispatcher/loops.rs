//! More than one event loop (`[server] threads`).
//!
//! Loop 0, the main loop, is the dispatcher as it runs alone: signals, pools, workers,
//! and every connection whose requests go to a pool. Front loops (one thread each) wait
//! on the same listeners and answer, in parallel, what needs no worker: static files,
//! `health` / `ready` / `live` / `status` / `metrics`, static responses, redirects, 400 /
//! 404. When a front connection's next request belongs to a pool (or to a handler or auth
//! check registered in Rust, which are not `Send`), the front loop hands the whole
//! connection to the main loop (`Handoff`): its socket, its unparsed bytes and answers
//! not yet written, between two requests or at a head whose body is still coming. It
//! stays there. A pool request thus never crosses threads: its path is the single loop's,
//! with no channel hop, no cross-thread wake-up and no lock per request, so one thread
//! stays as fast as before and the 2-core numbers in docs/benchmarks.md justify it (the
//! workers need the other core). A keep-alive client pays one handoff; a client that
//! opens a connection per request pays one per request (about 16 µs of CPU here), which
//! is why `threads = "auto"` gives one loop when pools exist (`tuning::loops`).
//!
//! What the loops share (`Shared`): the connection count (`max_connections` is global),
//! the memory budget's total, each loop's counters, and the pools' state as the main loop
//! last published it (at most `PUBLISH_EVERY` old) for the front loops' health answers.
//! Front loops get the main loop's orders over a channel, with a mio `Waker`: a new
//! config, drain, stop.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::{Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;

use super::connection::{Conn, Slot};
use super::timers::Timer;
use super::{ConnKey, Dispatcher, Phase, RunError, TAG_CONN, token};
use crate::config::{Config, SyncKind};
use crate::extensions::Extensions;
use crate::http::Request;
use crate::metrics::{Counters, Metrics};
use crate::sync_handlers::PoolStatus;

/// The token of a loop's `Waker` (tag 0 like `SIGNALS`, key 1).
pub(super) const WAKER: Token = Token(1 << super::TAG_BITS);
/// Longest a front loop's view of the pools lags behind the main loop's.
const PUBLISH_EVERY: Duration = Duration::from_millis(1);
/// While the budget is spent, how often a loop looks whether another loop freed it.
const BUDGET_RECHECK: Duration = Duration::from_millis(10);

/// What the loops share.
pub(super) struct Shared {
    pub open_conns: AtomicUsize,
    pub budget_used: Arc<AtomicU64>,
    counters: Box<[Counters]>,
    pools: Mutex<Arc<PoolsView>>,
}

/// The pools as the main loop last saw them.
#[derive(Debug, Default)]
pub(super) struct PoolsView {
    pub pools: Vec<PoolStatus>,
    pub draining: bool,
}

impl Shared {
    pub fn new(loops: usize) -> Shared {
        Shared {
            open_conns: AtomicUsize::new(0),
            budget_used: Arc::default(),
            counters: (0..loops).map(|_| Counters::default()).collect(),
            pools: Mutex::default(),
        }
    }

    pub fn loops(&self) -> usize {
        self.counters.len()
    }

    pub fn counters(&self, index: usize) -> &Counters {
        &self.counters[index]
    }

    pub fn metrics(&self) -> Metrics {
        Counters::sum(&self.counters)
    }

    pub fn pools(&self) -> Arc<PoolsView> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn publish(&self, view: PoolsView) {
        *self.pools.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }
}

/// Which loop a `Dispatcher` is.
pub(super) enum Role {
    Main(MainLoop),
    Front(FrontLoop),
}

pub(super) struct MainLoop {
    pub signals: Signals,
    fronts: Vec<FrontHandle>,
    /// Connections handed over by front loops, and the sending side they get a copy of.
    inbox: Receiver<Handoff>,
    to_main: Sender<Handoff>,
    /// Wakes the main loop (front loops hold a copy).
    waker: Arc<Waker>,
    next_publish: Instant,
    publish_armed: bool,
    /// A front loop that ended while the server ran: the server stops fast, and `run`
    /// returns the error.
    pub died: Option<usize>,
}

pub(super) struct FrontLoop {
    orders: Receiver<Order>,
    to_main: Sender<Handoff>,
    main_waker: Arc<Waker>,
    /// The main loop has an auth check registered in Rust: requests it covers go there.
    main_auth: bool,
}

struct FrontHandle {
    /// Set when its thread ends (`EndSignal`).
    ended: Arc<AtomicBool>,
    orders: Sender<Order>,
    waker: Waker,
    thread: Option<JoinHandle<()>>,
}

/// Marks a front loop ended and wakes the main loop when its thread ends, however it
/// ends (a panic included).
struct EndSignal {
    ended: Arc<AtomicBool>,
    main: Arc<Waker>,
}

impl Drop for EndSignal {
    fn drop(&mut self) {
        self.ended.store(true, Ordering::Release);
        let _ = self.main.wake();
    }
}

/// The main loop's orders to a front loop.
enum Order {
    Reload(Box<Config>),
    Drain { deadline: Instant },
    Stop,
}

/// A connection moving from a front loop to the main loop.
pub(super) struct Handoff {
    conn: Conn,
    at: Handed,
}

/// Where the connection's next request was when it was handed over.
pub(super) enum Handed {
    /// Parsed whole (counted already): the main loop routes it.
    Request(Request),
    /// Its head is parsed, its body still coming: the main loop judges the head (auth,
    /// budget) and sends the `100 Continue` the client asked for, if it proceeds.
    Head { send_continue: bool },
}

/// Whether the loop stays as it is or hands the connection over (see `parse_requests`).
pub(super) enum Parsed {
    Stay,
    HandOff(Handed),
}

impl MainLoop {
    pub fn new(signals: Signals, waker: Arc<Waker>) -> MainLoop {
        let (to_main, inbox) = std::sync::mpsc::channel();
        MainLoop {
            signals,
            fronts: Vec::new(),
            inbox,
            to_main,
            waker,
            next_publish: Instant::now(),
            publish_armed: false,
            died: None,
        }
    }
}

impl Dispatcher {
    /// Start the front loops `[server] threads` asks for (the main loop's listeners are
    /// registered after theirs: an idle front loop is woken first for a new connection,
    /// and the main loop, where pool traffic ends up, takes connections when the fronts
    /// are busy). The pools' state is published first, so that a front loop's first
    /// `health` answer is true.
    pub(super) fn start_fronts(&mut self, now: Instant) -> Result<(), RunError> {
        let loops = self.shared.loops();
        let Role::Main(main) = &mut self.role else { return Ok(()) };
        if loops < 2 {
            return Ok(());
        }
        for l in self.listeners.iter_mut() {
            l.share();
        }
        let (to_main, main_waker) = (main.to_main.clone(), main.waker.clone());
        let main_auth = self.ext.auth.is_some();
        let mut fronts = Vec::new();
        for index in 1..loops {
            let poll = Poll::new().map_err(RunError::Poll)?;
            let waker = Waker::new(poll.registry(), WAKER).map_err(RunError::Poll)?;
            let mut copies = Vec::with_capacity(self.listeners.len());
            for (i, l) in self.listeners.iter().enumerate() {
                let fail = |error| RunError::Bind { addr: l.describe(), error };
                let mut copy = l.try_clone().map_err(fail)?;
                poll.registry().register(&mut copy, token(super::TAG_LISTENER, i), Interest::READABLE).map_err(fail)?;
                copies.push(copy);
            }
            let (orders_tx, orders) = std::sync::mpsc::channel();
            let front = FrontLoop { orders, to_main: to_main.clone(), main_waker: main_waker.clone(), main_auth };
            let (config, shared) = (self.config.clone(), self.shared.clone());
            let ended = Arc::new(AtomicBool::new(false));
            let end_flag = ended.clone();
            let thread = std::thread::Builder::new()
                .name(format!("loop-{index}"))
                .spawn(move || {
                    let waker = front.main_waker.clone();
                    let role = Role::Front(front);
                    // The main loop learns of the end through the wake-up below, also after
                    // a panic (unwinding drops this loop's connections and listener copies).
                    let _end = EndSignal { ended: end_flag, main: waker };
                    let mut d = Dispatcher::with_role(config, Extensions::default(), poll, role, copies, shared, index);
                    if let Err(e) = d.run() {
                        error!("event loop {index} stopped: {e}");
                    }
                })
                .map_err(RunError::Poll)?;
            fronts.push(FrontHandle { ended, orders: orders_tx, waker, thread: Some(thread) });
        }
        if let Role::Main(main) = &mut self.role {
            main.fronts = fronts;
        }
        self.publish_pools(now, false);
        info!("{loops} event loops (server.threads)");
        Ok(())
    }

    pub(super) fn counters(&self) -> &Counters {
        self.shared.counters(self.loop_index)
    }

    /// A loop's `Waker` fired: the main loop adopts handed-over connections, a front loop
    /// takes its orders.
    pub(super) fn woken(&mut self, now: Instant) {
        match &mut self.role {
            Role::Main(main) => {
                let handed: Vec<Handoff> = main.inbox.try_iter().collect();
                let died = main.fronts.iter().position(|f| f.ended.load(Ordering::Acquire));
                for h in handed {
                    self.adopt(h, now);
                }
                if let (Some(i), Phase::Running) = (died, self.phase)
                    && let Role::Main(main) = &mut self.role
                {
                    main.died = Some(i + 1);
                    error!("event loop {} stopped while the server runs: stopping", i + 1);
                    self.fast_stop("an event loop died");
                }
            }
            Role::Front(front) => {
                let mut orders = Vec::new();
                loop {
                    match front.orders.try_recv() {
                        Ok(order) => orders.push(order),
                        Err(TryRecvError::Empty) => break,
                        // The main loop is gone: stop serving.
                        Err(TryRecvError::Disconnected) => {
                            orders.push(Order::Stop);
                            break;
                        }
                    }
                }
                for order in orders {
                    match order {
                        Order::Reload(config) => {
                            self.budget.set_limit(super::tuning::max_buffered_bytes(&config.server));
                            self.config = *config;
                        }
                        Order::Drain { deadline } => self.drain_until(now, deadline),
                        Order::Stop if matches!(self.phase, Phase::Stopping { .. }) => {}
                        Order::Stop => self.fast_stop("the main loop stops"),
                    }
                }
            }
        }
    }

    /// Does a request routed to `route` need the main loop? Only front loops ask.
    pub(super) fn belongs_to_main(&self, route: &super::requests::Route) -> bool {
        use super::requests::Route;
        let Role::Front(front) = &self.role else { return false };
        match route {
            Route::Pool(_) => true,
            Route::Sync(i) => {
                let sync = &self.config.syncs[*i];
                matches!(sync.kind, SyncKind::Custom(_)) || sync.auth && front.main_auth
            }
            Route::Static(_) | Route::NotFound | Route::BadPath => false,
        }
    }

    /// Give connection `key` to the main loop. Its budget holding goes with it (released
    /// here, counted again there); the connection count does not change.
    pub(super) fn hand_off(&mut self, key: ConnKey, at: Handed) {
        let Role::Front(front) = &self.role else { return };
        let Some(mut conn) = self.conns.try_remove(key.0) else { return };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let held = std::mem::take(&mut conn.held);
        let sent = front.to_main.send(Handoff { conn, at });
        let _ = front.main_waker.wake();
        self.counters().handoff();
        self.hold(held, 0);
        if sent.is_err() {
            // The main loop is gone; the connection closed when the message dropped.
            self.shared.open_conns.fetch_sub(1, Relaxed);
        }
    }

    /// Take over a connection from a front loop: a fresh serial and timers here, then
    /// its request (or head) as if parsed here.
    fn adopt(&mut self, h: Handoff, now: Instant) {
        let Handoff { mut conn, at } = h;
        let entry = self.conns.vacant_entry();
        let key = ConnKey(entry.key());
        conn.serial = self.next_serial;
        self.next_serial += 1;
        conn.armed = Default::default();
        conn.interest = Interest::READABLE;
        // Registering reports the socket's current readiness: nothing is missed.
        if self.poll.registry().register(&mut conn.stream, token(TAG_CONN, key.0), Interest::READABLE).is_err() {
            self.shared.open_conns.fetch_sub(1, Relaxed);
            return;
        }
        entry.insert(conn);
        if self.phase != Phase::Running
            && let Some(c) = self.conns.get_mut(key.0)
        {
            c.no_more_requests();
        }
        match at {
            Handed::Request(req) => {
                let route = self.route(&req);
                self.handle_request(key, req, route, now);
            }
            Handed::Head { send_continue } => {
                let head = self.conns.get(key.0).and_then(|c| c.reader.pending_head().cloned());
                let proceeds = head.is_none_or(|req| {
                    let route = self.route(&req);
                    self.judge_head(key, &req, &route, now)
                });
                if proceeds
                    && send_continue
                    && let Some(c) = self.conns.get_mut(key.0)
                {
                    c.slots.push_back(Slot::done(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(), false));
                }
            }
        }
        self.service_conn(key, now);
    }

    /// The main loop, after each turn: publish the pools' state for the front loops, at
    /// most every `PUBLISH_EVERY` (a timer publishes the last change of a burst).
    pub(super) fn publish_pools(&mut self, now: Instant, timer: bool) {
        let Role::Main(main) = &mut self.role else { return };
        if main.fronts.is_empty() {
            return;
        }
        if timer {
            main.publish_armed = false;
        }
        if now < main.next_publish {
            if !main.publish_armed {
                main.publish_armed = true;
                let at = main.next_publish;
                self.timers.arm(at, Timer::Publish);
            }
            return;
        }
        main.next_publish = now + PUBLISH_EVERY;
        let view = PoolsView { pools: self.pool_statuses(now), draining: self.phase != Phase::Running };
        self.shared.publish(view);
    }

    /// With other loops counting into the budget, a loop whose budget is spent cannot
    /// learn from its own frees alone when room comes back: it looks again periodically.
    pub(super) fn recheck_budget_later(&mut self, now: Instant) {
        if self.shared.loops() > 1 && self.budget.exhausted() && !self.budget_recheck_armed {
            self.budget_recheck_armed = true;
            self.timers.arm(now + BUDGET_RECHECK, Timer::Budget);
        }
    }

    pub(super) fn budget_recheck(&mut self) {
        self.budget_recheck_armed = false;
        if !self.budget.exhausted() {
            self.budget_freed();
        }
    }

    /// Tell every front loop.
    fn order_fronts(&mut self, order: impl Fn() -> Order) {
        if let Role::Main(main) = &mut self.role {
            for f in &main.fronts {
                let _ = f.orders.send(order());
                let _ = f.waker.wake();
            }
        }
    }

    pub(super) fn fronts_reload(&mut self) {
        let config = self.config.clone();
        self.order_fronts(|| Order::Reload(Box::new(config.clone())));
    }

    pub(super) fn fronts_drain(&mut self, deadline: Instant) {
        self.order_fronts(|| Order::Drain { deadline });
    }

    pub(super) fn fronts_stop(&mut self) {
        self.order_fronts(|| Order::Stop);
    }

    /// Every front loop has returned (the main loop exits only then).
    pub(super) fn fronts_done(&self) -> bool {
        match &self.role {
            Role::Main(main) => main.fronts.iter().all(|f| f.ended.load(Ordering::Acquire)),
            Role::Front(_) => true,
        }
    }

    /// At exit: stop the front loops, wait for them, close what they handed over since.
    pub(super) fn join_fronts(&mut self) {
        self.fronts_stop();
        let Role::Main(main) = &mut self.role else { return };
        for f in &mut main.fronts {
            if let Some(t) = f.thread.take()
                && t.join().is_err()
            {
                warn!("an event loop panicked");
            }
        }
        let late = main.inbox.try_iter().count();
        if late > 0 {
            info!("closed {late} connection(s) handed over during the stop");
            self.shared.open_conns.fetch_sub(late, Relaxed);
        }
    }
}
