//! Pools: the dispatcher-side queue of one pool, its worker slots, and the supervision
//! rules (restart backoff, degraded state, parked slots) as plain data.
//!
//! Nothing here does I/O: the dispatcher owns the processes and pipes (`dispatcher::workers`)
//! and asks this module what to do. That keeps the failure policy unit-testable with an
//! injected clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::PoolConfig;

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

/// One worker position in a pool. The process in it comes and goes.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Key of the live process in the dispatcher's worker table.
    pub worker: Option<usize>,
    /// Consecutive failures without a healthy run in between.
    pub failures: u32,
    /// When the next process may be started (`None`: start now when empty).
    pub respawn_at: Option<Instant>,
    /// The worker exited with `permanent_failure_exitcode`: not restarted.
    pub parked: bool,
}

/// Why a worker process ended, as far as the restart policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// A pool: config, queue of request ids, slots and health.
#[derive(Debug)]
pub struct Pool {
    pub config: PoolConfig,
    /// Requests waiting for a worker, oldest first.
    pub queue: VecDeque<u64>,
    pub slots: Vec<Slot>,
    pub health: PoolHealth,
    /// Restart times inside `restart_window`, oldest first.
    restarts: VecDeque<Instant>,
    /// Total restarts since start (for metrics).
    pub restarts_total: u64,
    /// Round-robin start position for picking a worker.
    pub next_pick: usize,
    /// Removed from the config by a reload: not routed to, never respawned. Kept in the
    /// table so indices held by requests and workers stay valid.
    pub retired: bool,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Pool {
        let slots = (0..config.num_workers)
            .map(|_| Slot { worker: None, failures: 0, respawn_at: None, parked: false })
            .collect();
        Pool {
            config,
            queue: VecDeque::new(),
            slots,
            health: PoolHealth::Healthy,
            restarts: VecDeque::new(),
            restarts_total: 0,
            next_pick: 0,
            retired: false,
        }
    }

    /// Take a new config (a reload): health and restart history start afresh, the slot
    /// count follows `num_workers`. Returns the worker keys of slots that went away.
    pub fn reconfigure(&mut self, config: PoolConfig) -> Vec<usize> {
        let n = config.num_workers;
        self.config = config;
        self.health = PoolHealth::Healthy;
        self.restarts.clear();
        for slot in &mut self.slots {
            slot.failures = 0;
            slot.parked = false;
            slot.respawn_at = None;
        }
        self.resize(n)
    }

    /// Grow or shrink to `n` slots (SIGTTIN/SIGTTOU, reload). Returns the worker keys of
    /// removed slots, for the caller to retire.
    pub fn resize(&mut self, n: usize) -> Vec<usize> {
        let n = n.max(1);
        let removed = if self.slots.len() > n { self.slots.split_off(n) } else { Vec::new() };
        while self.slots.len() < n {
            self.slots.push(Slot { worker: None, failures: 0, respawn_at: None, parked: false });
        }
        self.config.num_workers = n;
        self.next_pick %= n;
        removed.into_iter().filter_map(|s| s.worker).collect()
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn is_degraded(&self) -> bool {
        matches!(self.health, PoolHealth::Degraded { .. })
    }

    pub fn parked_count(&self) -> usize {
        self.slots.iter().filter(|s| s.parked).count()
    }

    pub fn restarts_in_window(&self) -> usize {
        self.restarts.len()
    }

    /// Record that the process of `slot` ended. Returns whether the pool just became degraded.
    /// `uptime` and `served` tell whether it was a healthy run (which forgives past failures).
    pub fn on_worker_exit(&mut self, slot: usize, exit: Exit, uptime: Duration, served: u64, now: Instant) -> bool {
        let Some(s) = self.slots.get_mut(slot) else { return false };
        s.worker = None;
        if let (Exit::Code(code), Some(permanent)) = (exit, self.config.permanent_failure_exitcode)
            && code == permanent
        {
            // Parked: neither restarted nor counted as a restart.
            s.parked = true;
            s.respawn_at = None;
            return self.update_degraded(now);
        }
        if uptime >= HEALTHY_UPTIME || served > 0 {
            s.failures = 0;
        }
        s.failures += 1;
        s.respawn_at = Some(now + backoff(s.failures));
        self.restarts.push_back(now);
        self.restarts_total += 1;
        self.update_degraded(now)
    }

    /// Forget restarts that left the window; clear the degraded state after
    /// `recovery_interval`. Returns true when health changed.
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
                for s in self.slots.iter_mut().filter(|s| s.worker.is_none() && !s.parked) {
                    s.respawn_at = None;
                }
                return true;
            }
        }
        false
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
    /// stops trying until `recovery_interval` (or a reload) clears the state. None for a pool
    /// a reload removed.
    pub fn slots_to_spawn(&self, now: Instant) -> Vec<usize> {
        if self.is_degraded() || self.retired {
            return Vec::new();
        }
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.worker.is_none() && !s.parked && s.respawn_at.is_none_or(|t| t <= now))
            .map(|(i, _)| i)
            .collect()
    }

    /// Seconds until a backing-off slot is due again (for Retry-After), at least 1.
    pub fn retry_after(&self, now: Instant) -> u64 {
        self.slots
            .iter()
            .filter(|s| !s.parked)
            .filter_map(|s| s.respawn_at)
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
        })
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
        assert!(!p.on_worker_exit(0, Exit::Signal(9), Duration::ZERO, 0, now));
        assert!(!p.on_worker_exit(0, Exit::Signal(9), Duration::ZERO, 0, now));
        assert!(p.on_worker_exit(0, Exit::Signal(9), Duration::ZERO, 0, now));
        assert!(p.is_degraded());
        assert!(p.slots_to_spawn(now + Duration::from_secs(5)).is_empty(), "no restarts while degraded");
        assert!(!p.tick(now + Duration::from_secs(5)));
        assert!(p.tick(now + Duration::from_secs(11)));
        assert!(!p.is_degraded());
        assert!(p.slots_to_spawn(now + Duration::from_secs(11)).contains(&0), "tries again after recovery");
    }

    #[test]
    fn permanent_exit_parks_without_counting() {
        let now = Instant::now();
        let mut p = pool(10, Some(3), None);
        p.on_worker_exit(0, Exit::Code(3), Duration::ZERO, 0, now);
        assert!(p.slots[0].parked);
        assert_eq!(p.restarts_in_window(), 0);
        assert!(!p.is_degraded());
        assert_eq!(p.slots_to_spawn(now), vec![1]);
        assert!(p.on_worker_exit(1, Exit::Code(3), Duration::ZERO, 0, now));
        assert!(p.is_degraded());
    }

    #[test]
    fn resize_and_reconfigure() {
        let now = Instant::now();
        let mut p = pool(1, None, None);
        p.slots[0].worker = Some(7);
        p.slots[1].worker = Some(8);
        assert_eq!(p.resize(3), Vec::<usize>::new());
        assert_eq!(p.slots_to_spawn(now), vec![2]);
        assert_eq!(p.resize(1), vec![8]);
        assert_eq!(p.slots.len(), 1);
        p.on_worker_exit(0, Exit::Signal(9), Duration::ZERO, 0, now);
        p.on_worker_exit(0, Exit::Signal(9), Duration::ZERO, 0, now);
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
        p.on_worker_exit(0, Exit::Code(1), Duration::ZERO, 0, now);
        p.on_worker_exit(0, Exit::Code(1), Duration::ZERO, 0, now);
        assert_eq!(p.slots[0].failures, 2);
        assert!(p.slots_to_spawn(now).iter().all(|&s| s != 0));
        p.on_worker_exit(0, Exit::Code(1), Duration::from_secs(60), 0, now);
        assert_eq!(p.slots[0].failures, 1);
        assert!(p.slots_to_spawn(now).contains(&0));
    }
}
