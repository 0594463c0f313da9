//! Deadlines: one min-heap of every timer the loop owns; its nearest entry is the poll
//! timeout (sozu's master loop), so an idle server does not wake up at all.
//!
//! Entries are hints, never the truth: when one fires, its owner compares it with the
//! deadline its own state holds now (a connection's reading state, a request's deadline,
//! a worker's heartbeat clock) and acts, re-arms, or ignores it. That keeps the heap free
//! of cancellation bookkeeping. Owners arm a timer only when their deadline moves earlier
//! than the one already armed (see `Armed`), so the heap holds about one entry per object.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::keys::{ConnKey, PoolId, WorkerKey};

/// What a deadline belongs to. Connections and workers carry the serial of the object
/// they were armed for: slab keys are reused, serials never are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// A connection's read or write clock.
    Conn(ConnKey, u64),
    /// A worker's heartbeat, stop or exit clock, or its output-rate refill.
    Worker(WorkerKey, u64),
    /// The oldest request deadline of a pool; respawn and recovery times.
    Pool(PoolId),
    /// Accepting resumes (after EMFILE or the connection limit).
    Accept,
    /// The graceful-stop or fast-stop deadline.
    Shutdown,
    /// The main loop publishes the pools' state for front loops (`loops`).
    Publish,
    /// A loop looks again whether the shared budget has room (`loops`).
    Budget,
}

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub fn arm(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// Time until the nearest deadline (`None`: nothing armed, wait for events).
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.heap.peek().map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    /// Pop every timer due at `now`.
    pub fn expired(&mut self, now: Instant) -> Vec<Timer> {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, t))) = self.heap.pop() {
                due.push(t);
            }
        }
        due.sort_unstable();
        due.dedup();
        due
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

/// The deadline currently armed for one object, so it re-arms only when a new deadline
/// comes earlier (a later one is found when the earlier entry fires).
#[derive(Debug, Default, Clone, Copy)]
pub struct Armed(Option<Instant>);

impl Armed {
    /// Whether `at` needs a new heap entry; records it if so.
    pub fn needs(&mut self, at: Instant) -> bool {
        match self.0 {
            Some(t) if t <= at => false,
            _ => {
                self.0 = Some(at);
                true
            }
        }
    }

    /// The armed entry fired.
    pub fn fired(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_first_and_deduplicated() {
        let now = Instant::now();
        let mut t = Timers::default();
        assert_eq!(t.timeout(now), None);
        t.arm(now + Duration::from_secs(5), Timer::Accept);
        t.arm(now + Duration::from_secs(1), Timer::Pool(PoolId(0)));
        t.arm(now + Duration::from_secs(1), Timer::Pool(PoolId(0)));
        assert_eq!(t.timeout(now), Some(Duration::from_secs(1)));
        assert!(t.expired(now).is_empty());
        assert_eq!(t.expired(now + Duration::from_secs(2)), vec![Timer::Pool(PoolId(0))]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn armed_only_moves_earlier() {
        let now = Instant::now();
        let mut a = Armed::default();
        assert!(a.needs(now + Duration::from_secs(5)));
        assert!(!a.needs(now + Duration::from_secs(9)));
        assert!(a.needs(now + Duration::from_secs(1)));
        a.fired();
        assert!(a.needs(now + Duration::from_secs(9)));
    }
}
