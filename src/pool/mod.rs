//! Pools: the dispatcher-side queue of one pool, its worker slots, and the supervision
//! rules (restart backoff, degraded state, parked slots) as plain data.
//!
//! Nothing here does I/O: the dispatcher owns the processes and pipes (`dispatcher::workers`)
//! and asks this module what to do. That keeps the failure policy unit-testable with an
//! injected clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::PoolConfig;
use crate::dispatcher::{Armed, ReqId, WorkerKey};

/// First restart of a slot is immediate; repeated failures back off from here...
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// ...doubling up to this cap.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A worker that lived this long (or served a request) resets its slot's failure count.
const HEALTHY_UPTIME: Duration = Duration::from_secs(5);

/// Whether a pool takes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolHealth {
    Healthy,
    /// Too many restarts in the window, or every slot parked: 503 without Retry-After.
    Degraded {
        since: Instant,
    },
}

/// What occupies one worker position of a pool. The process in it comes and goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// No process: start one at `respawn_at` (`None`: now).
    Empty { respawn_at: Option<Instant> },
    /// A process runs here (starting or ready: the worker table knows which).
    Occupied(WorkerKey),
    /// The last process exited with `permanent_failure_exitcode`: not restarted.
    Parked,
    /// The server is stopping: never started again.
    Stopped,
}

/// One worker position in a pool.
#[derive(Debug, Clone)]
pub struct Slot {
    pub state: SlotState,
    /// Consecutive failures without a healthy run in between.
    pub failures: u32,
}

impl Slot {
    fn new() -> Slot {
        Slot { state: SlotState::Empty { respawn_at: None }, failures: 0 }
    }

    pub fn worker(&self) -> Option<WorkerKey> {
        match self.state {
            SlotState::Occupied(key) => Some(key),
            _ => None,
        }
    }
}

/// Whether a pool's workers take WebSockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// No worker said HELLO yet and the kind does not tell.
    Unknown,
    Yes,
    No,
}

impl Support {
    fn of(kind: &crate::config::WorkerKind) -> Support {
        match kind {
            crate::config::WorkerKind::Asgi { .. } => Support::Yes,
            crate::config::WorkerKind::Wsgi { .. } => Support::No,
            _ => Support::Unknown,
        }
    }
}

/// Why a worker process ended, as far as the restart policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// What the pool decided about an exited worker's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// A new process starts at this time.
    Restart { at: Instant },
    /// Permanent failure: the slot is parked.
    Parked,
    /// The pool is degraded (no restarts until `recovery_interval` or a reload).
    Degraded { became: bool },
    /// The server is stopping, or the slot is gone: nothing starts.
    Nothing,
}

/// A pool: config, queue of request ids, slots and health.
#[derive(Debug)]
pub struct Pool {
    pub config: PoolConfig,
    /// Requests waiting for a worker, oldest first.
    queue: VecDeque<ReqId>,
    /// Deadlines of this pool's requests in the order they were set, for the one timer
    /// that expires them (entries of finished requests are skipped when they surface).
    pub deadlines: VecDeque<(Instant, ReqId)>,
    pub slots: Vec<Slot>,
    pub health: PoolHealth,
    /// Restart times inside `restart_window`, oldest first.
    restarts: VecDeque<Instant>,
    /// Total restarts since start (for metrics).
    pub restarts_total: u64,
    /// Round-robin start position for picking a worker.
    pub next_pick: usize,
    /// The output of the last worker that died before it was ready, and how many times
    /// in a row it was the same (crash-loop logs say it once).
    pub last_failure: Option<(Vec<String>, u32)>,
    /// Whether this pool's workers take WebSockets: known from the kind (ASGI yes, WSGI
    /// no) or learned from the first HELLO. Upgrade requests are relayed while it is not
    /// `No`, else passed on as plain requests.
    pub websockets: Support,
    /// The pool's timer entry (request deadlines, respawns, recovery).
    pub armed: Armed,
    /// Removed from the config by a reload: not routed to, never respawned. Kept in the
    /// table so ids held by requests and workers stay valid.
    pub retired: bool,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Pool {
        let slots = (0..config.num_workers).map(|_| Slot::new()).collect();
        let websockets = Support::of(&config.worker);
        Pool {
            config,
            queue: VecDeque::new(),
            deadlines: VecDeque::new(),
            slots,
            health: PoolHealth::Healthy,
            restarts: VecDeque::new(),
            restarts_total: 0,
            next_pick: 0,
            last_failure: None,
            websockets,
            armed: Armed::default(),
            retired: false,
        }
    }

    /// Take a new config (a reload): health and restart history start afresh, the slot
    /// count follows `num_workers`. Returns the worker keys of slots that went away.
    pub fn reconfigure(&mut self, config: PoolConfig) -> Vec<WorkerKey> {
        let n = config.num_workers;
        self.config = config;
        self.revive();
        self.resize(n)
    }

    /// Forget health and restart history (a reload, even of an unchanged pool: the
    /// operator may have fixed what made it crash). Empty and parked slots start again.
    pub fn revive(&mut self) {
        self.health = PoolHealth::Healthy;
        self.restarts.clear();
        for slot in &mut self.slots {
            slot.failures = 0;
            if matches!(slot.state, SlotState::Empty { .. } | SlotState::Parked) {
                slot.state = SlotState::Empty { respawn_at: None };
            }
        }
    }

    /// Grow or shrink to `n` slots (SIGTTIN/SIGTTOU, reload). Returns the worker keys of
    /// removed slots, for the caller to retire.
    pub fn resize(&mut self, n: usize) -> Vec<WorkerKey> {
        let n = n.max(1);
        let removed = if self.slots.len() > n { self.slots.split_off(n) } else { Vec::new() };
        while self.slots.len() < n {
            self.slots.push(Slot::new());
        }
        self.config.num_workers = n;
        self.next_pick %= n;
        removed.into_iter().filter_map(|s| s.worker()).collect()
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn is_degraded(&self) -> bool {
        matches!(self.health, PoolHealth::Degraded { .. })
    }

    pub fn parked_count(&self) -> usize {
        self.slots.iter().filter(|s| s.state == SlotState::Parked).count()
    }

    pub fn restarts_in_window(&self) -> usize {
        self.restarts.len()
    }

    /// Workers occupying slots (starting or ready).
    pub fn workers(&self) -> impl Iterator<Item = WorkerKey> + '_ {
        self.slots.iter().filter_map(Slot::worker)
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn queue_front(&self) -> Option<ReqId> {
        self.queue.front().copied()
    }

    pub fn queued(&self) -> impl Iterator<Item = ReqId> + '_ {
        self.queue.iter().copied()
    }

    pub fn enqueue(&mut self, id: ReqId, deadline: Instant) {
        self.queue.push_back(id);
        self.deadlines.push_back((deadline, id));
    }

    /// Put a request back at the head of the queue (its worker died before starting it).
    pub fn requeue_front(&mut self, id: ReqId) {
        self.queue.push_front(id);
    }

    pub fn dequeue(&mut self, id: ReqId) -> bool {
        match self.queue.iter().position(|&q| q == id) {
            Some(pos) => {
                self.queue.remove(pos);
                true
            }
            None => false,
        }
    }

    pub fn drain_queue(&mut self) -> Vec<ReqId> {
        self.queue.drain(..).collect()
    }

    /// A process started in `slot`.
    pub fn occupy(&mut self, slot: usize, key: WorkerKey) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.state = SlotState::Occupied(key);
        }
    }

    /// A worker left its slot without exiting yet (retired by reload or shrink): the slot
    /// starts a successor at once.
    pub fn vacate(&mut self, slot: usize, key: WorkerKey) {
        if let Some(s) = self.slots.get_mut(slot)
            && s.state == SlotState::Occupied(key)
        {
            s.state = SlotState::Empty { respawn_at: None };
        }
    }

    /// The server stops: no slot starts a process again.
    pub fn stop(&mut self) {
        for s in &mut self.slots {
            if !matches!(s.state, SlotState::Occupied(_)) {
                s.state = SlotState::Stopped;
            }
        }
    }

    /// Record that the process of `slot` (key `key`) ended and decide what comes next.
    /// `uptime` and `served` tell whether it was a healthy run (which forgives past
    /// failures).
    pub fn on_worker_exit(
        &mut self,
        slot: usize,
        key: WorkerKey,
        exit: Exit,
        uptime: Duration,
        served: u64,
        now: Instant,
    ) -> AfterExit {
        let permanent = self.config.permanent_failure_exitcode;
        let Some(s) = self.slots.get_mut(slot) else { return AfterExit::Nothing };
        match s.state {
            SlotState::Occupied(k) if k == key => {}
            SlotState::Stopped => return AfterExit::Nothing,
            // Not this slot's process any more (retired): its exit changes nothing here.
            _ => return AfterExit::Nothing,
        }
        if let (Exit::Code(code), Some(permanent)) = (exit, permanent)
            && code == permanent
        {
            // Parked: neither restarted nor counted as a restart.
            s.state = SlotState::Parked;
            return match self.update_degraded(now) {
                true => AfterExit::Degraded { became: true },
                false => AfterExit::Parked,
            };
        }
        if uptime >= HEALTHY_UPTIME || served > 0 {
            s.failures = 0;
        }
        s.failures += 1;
        let at = now + backoff(s.failures);
        s.state = SlotState::Empty { respawn_at: Some(at) };
        self.restarts.push_back(now);
        self.restarts_total += 1;
        if self.update_degraded(now) {
            return AfterExit::Degraded { became: true };
        }
        if self.is_degraded() {
            return AfterExit::Degraded { became: false };
        }
        AfterExit::Restart { at }
    }

    /// A process for `slot` could not even be started: counted like a crash.
    pub fn on_spawn_failed(&mut self, slot: usize, now: Instant) -> AfterExit {
        let Some(s) = self.slots.get_mut(slot) else { return AfterExit::Nothing };
        s.failures += 1;
        let at = now + backoff(s.failures).max(BACKOFF_BASE);
        s.state = SlotState::Empty { respawn_at: Some(at) };
        self.restarts.push_back(now);
        self.restarts_total += 1;
        if self.update_degraded(now) {
            return AfterExit::Degraded { became: true };
        }
        AfterExit::Restart { at }
    }

    /// Forget restarts that left the window; clear the degraded state after
    /// `recovery_interval`. Returns true when the pool just recovered.
    pub fn tick(&mut self, now: Instant) -> bool {
        let window = self.config.restart_window;
        while let Some(&t) = self.restarts.front() {
            if now.duration_since(t) > window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if let PoolHealth::Degraded { since } = self.health {
            let all_parked = !self.slots.is_empty() && self.parked_count() == self.slots.len();
            if let Some(recovery) = self.config.recovery_interval
                && !all_parked
                && now.duration_since(since) >= recovery
            {
                self.health = PoolHealth::Healthy;
                self.restarts.clear();
                // The recovery interval was the wait: empty slots try again at once.
                for s in &mut self.slots {
                    if matches!(s.state, SlotState::Empty { .. }) {
                        s.state = SlotState::Empty { respawn_at: None };
                    }
                }
                return true;
            }
        }
        false
    }

    /// When `tick` or `slots_to_spawn` next has something to do: a respawn coming due,
    /// or the end of the recovery interval.
    pub fn next_event(&self) -> Option<Instant> {
        if self.retired {
            return None;
        }
        match self.health {
            PoolHealth::Degraded { since } => self.config.recovery_interval.map(|r| since + r),
            PoolHealth::Healthy => self
                .slots
                .iter()
                .filter_map(|s| match s.state {
                    SlotState::Empty { respawn_at: Some(t) } => Some(t),
                    _ => None,
                })
                .min(),
        }
    }

    fn update_degraded(&mut self, now: Instant) -> bool {
        if self.is_degraded() {
            return false;
        }
        let all_parked = !self.slots.is_empty() && self.parked_count() == self.slots.len();
        if all_parked || self.restarts.len() > self.config.max_restarts as usize {
            self.health = PoolHealth::Degraded { since: now };
            return true;
        }
        false
    }

    /// Slots that need a process started now. None while degraded: a crash-looping pool
    /// stops trying until `recovery_interval` (or a reload) clears the state. None for a
    /// pool a reload removed.
    pub fn slots_to_spawn(&self, now: Instant) -> Vec<usize> {
        if self.is_degraded() || self.retired {
            return Vec::new();
        }
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.state, SlotState::Empty { respawn_at } if respawn_at.is_none_or(|t| t <= now)))
            .map(|(i, _)| i)
            .collect()
    }

    /// Whether it has a worker or one is due to start now (a slot freed by a reap,
    /// reload or resize in this loop turn, or waiting for the fork-server): requests
    /// queue for it rather than being refused.
    pub fn can_serve_soon(&self, now: Instant) -> bool {
        self.workers().next().is_some() || !self.slots_to_spawn(now).is_empty()
    }

    /// Seconds until a backing-off slot is due again (for Retry-After), at least 1.
    pub fn retry_after(&self, now: Instant) -> u64 {
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                SlotState::Empty { respawn_at: Some(t) } => Some(t),
                _ => None,
            })
            .map(|t| t.saturating_duration_since(now).as_secs() + 1)
            .min()
            .unwrap_or(1)
    }
}

/// Restart delay after `failures` consecutive failures: 0 for the first, then exponential.
pub fn backoff(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (failures - 2).min(16);
    (BACKOFF_BASE * factor).min(BACKOFF_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RoutePattern, WorkerKind};

    fn pool(max_restarts: u32, permanent: Option<i32>, recovery: Option<Duration>) -> Pool {
        Pool::new(PoolConfig {
            name: "t".into(),
            routes: vec![RoutePattern::Fallback],
            worker: WorkerKind::Native("echo".into()),
            num_workers: 2,
            timeout: Duration::from_secs(30),
            stuck_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(1),
            max_restarts,
            restart_window: Duration::from_secs(300),
            recovery_interval: recovery,
            permanent_failure_exitcode: permanent,
            log_level: "warning".into(),
            memory_limit_mb: None,
            env: Default::default(),
            cwd: None,
            user: None,
            group: None,
            kwargs: Default::default(),
            max_frame_bytes: 1 << 20,
            stuck_grace: Duration::from_secs(2),
            exit_grace: Duration::from_secs(2),
            max_output_rate: 1 << 20,
            readiness: true,
            websocket: true,
            max_message_bytes: 1 << 20,
            websocket_idle_timeout: Duration::from_secs(60),
            prefetch: 0,
            preload: false,
        })
    }

    const K: WorkerKey = WorkerKey(7);

    /// Occupy `slot` with `K` and report its exit.
    fn exit(p: &mut Pool, slot: usize, exit: Exit, uptime: Duration, now: Instant) -> AfterExit {
        p.occupy(slot, K);
        p.on_worker_exit(slot, K, exit, uptime, 0, now)
    }

    #[test]
    fn backoff_is_immediate_then_exponential_and_capped() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(250));
        assert_eq!(backoff(3), Duration::from_millis(500));
        assert_eq!(backoff(40), BACKOFF_CAP);
    }

    #[test]
    fn degraded_after_more_than_max_restarts_then_recovers() {
        let now = Instant::now();
        let mut p = pool(2, None, Some(Duration::from_secs(10)));
        assert_eq!(exit(&mut p, 0, Exit::Signal(9), Duration::ZERO, now), AfterExit::Restart { at: now });
        assert!(matches!(exit(&mut p, 0, Exit::Signal(9), Duration::ZERO, now), AfterExit::Restart { .. }));
        assert_eq!(exit(&mut p, 0, Exit::Signal(9), Duration::ZERO, now), AfterExit::Degraded { became: true });
        assert!(p.is_degraded());
        assert!(p.slots_to_spawn(now + Duration::from_secs(5)).is_empty(), "no restarts while degraded");
        assert_eq!(p.next_event(), Some(now + Duration::from_secs(10)));
        assert!(!p.tick(now + Duration::from_secs(5)));
        assert!(p.tick(now + Duration::from_secs(11)));
        assert!(!p.is_degraded());
        assert!(p.slots_to_spawn(now + Duration::from_secs(11)).contains(&0), "tries again after recovery");
    }

    #[test]
    fn revive_clears_degraded_and_parked() {
        let now = Instant::now();
        let mut p = pool(0, Some(3), None);
        assert_eq!(exit(&mut p, 0, Exit::Code(3), Duration::ZERO, now), AfterExit::Parked);
        assert_eq!(exit(&mut p, 1, Exit::Code(1), Duration::ZERO, now), AfterExit::Degraded { became: true });
        assert!(p.slots_to_spawn(now).is_empty());
        assert_eq!(p.next_event(), None, "no recovery_interval: degraded until a reload");
        p.revive();
        assert!(!p.is_degraded());
        assert_eq!(p.slots_to_spawn(now), vec![0, 1]);
    }

    #[test]
    fn permanent_exit_parks_without_counting() {
        let now = Instant::now();
        let mut p = pool(10, Some(3), None);
        assert_eq!(exit(&mut p, 0, Exit::Code(3), Duration::ZERO, now), AfterExit::Parked);
        assert_eq!(p.slots[0].state, SlotState::Parked);
        assert_eq!(p.restarts_in_window(), 0);
        assert!(!p.is_degraded());
        assert_eq!(p.slots_to_spawn(now), vec![1]);
        assert_eq!(exit(&mut p, 1, Exit::Code(3), Duration::ZERO, now), AfterExit::Degraded { became: true });
    }

    #[test]
    fn exit_of_a_retired_worker_changes_nothing() {
        let now = Instant::now();
        let mut p = pool(0, None, None);
        p.occupy(0, K);
        p.vacate(0, K);
        p.occupy(0, WorkerKey(8));
        assert_eq!(p.on_worker_exit(0, K, Exit::Code(1), Duration::ZERO, 0, now), AfterExit::Nothing);
        assert!(!p.is_degraded());
        assert_eq!(p.slots[0].worker(), Some(WorkerKey(8)));
    }

    #[test]
    fn resize_and_reconfigure() {
        let now = Instant::now();
        let mut p = pool(1, None, None);
        p.occupy(0, WorkerKey(7));
        p.occupy(1, WorkerKey(8));
        assert_eq!(p.resize(3), Vec::<WorkerKey>::new());
        assert_eq!(p.slots_to_spawn(now), vec![2]);
        assert_eq!(p.resize(1), vec![WorkerKey(8)]);
        assert_eq!(p.slots.len(), 1);
        p.on_worker_exit(0, WorkerKey(7), Exit::Signal(9), Duration::ZERO, 0, now);
        exit(&mut p, 0, Exit::Signal(9), Duration::ZERO, now);
        assert!(p.is_degraded());
        let mut cfg = p.config.clone();
        cfg.num_workers = 2;
        assert!(p.reconfigure(cfg).is_empty());
        assert!(!p.is_degraded());
        assert_eq!(p.slots_to_spawn(now), vec![0, 1]);
        p.retired = true;
        assert!(p.slots_to_spawn(now).is_empty());
    }

    #[test]
    fn healthy_run_forgives_failures() {
        let now = Instant::now();
        let mut p = pool(100, None, None);
        exit(&mut p, 0, Exit::Code(1), Duration::ZERO, now);
        exit(&mut p, 0, Exit::Code(1), Duration::ZERO, now);
        assert_eq!(p.slots[0].failures, 2);
        assert!(p.slots_to_spawn(now).iter().all(|&s| s != 0));
        exit(&mut p, 0, Exit::Code(1), Duration::from_secs(60), now);
        assert_eq!(p.slots[0].failures, 1);
        assert!(p.slots_to_spawn(now).contains(&0));
    }

    #[test]
    fn queue_operations() {
        let now = Instant::now();
        let mut p = pool(1, None, None);
        p.enqueue(ReqId(1), now);
        p.enqueue(ReqId(2), now);
        assert!(p.dequeue(ReqId(1)));
        assert!(!p.dequeue(ReqId(1)));
        p.requeue_front(ReqId(3));
        assert_eq!(p.queued().collect::<Vec<_>>(), vec![ReqId(3), ReqId(2)]);
        assert_eq!(p.drain_queue().len(), 2);
        assert_eq!(p.queue_len(), 0);
    }
}
