//! Counters kept by the dispatcher, exposed by the `metrics` sync handler in the
//! Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Monotonic counters since start, summed over the dispatcher's event loops.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub connections_total: u64,
    pub requests_total: u64,
    pub bad_requests: u64,
    /// Pool responses by status class: 1xx..5xx at index 1..=5.
    pub pool_responses: [u64; 6],
    /// Requests parsed by each event loop (`[server] threads`), loop 0 first.
    pub loop_requests: Vec<u64>,
    /// Connections a front loop handed to the main loop (their request needed a pool).
    pub handoffs_total: u64,
}

/// One event loop's counters. Each loop writes only its own (relaxed atomics, a cache
/// line apiece, so loops do not contend); readers sum them.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Counters {
    connections_total: AtomicU64,
    requests_total: AtomicU64,
    bad_requests: AtomicU64,
    pool_responses: [AtomicU64; 6],
    handoffs: AtomicU64,
}

impl Counters {
    pub fn connection(&self) {
        self.connections_total.fetch_add(1, Relaxed);
    }

    pub fn request(&self) {
        self.requests_total.fetch_add(1, Relaxed);
    }

    pub fn bad_request(&self) {
        self.bad_requests.fetch_add(1, Relaxed);
    }

    pub fn handoff(&self) {
        self.handoffs.fetch_add(1, Relaxed);
    }

    pub fn count_status(&self, status: u16) {
        let class = (status / 100) as usize;
        if let Some(c) = self.pool_responses.get(class) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// The totals of every loop's counters.
    pub fn sum(loops: &[Counters]) -> Metrics {
        let mut m = Metrics::default();
        for c in loops {
            m.connections_total += c.connections_total.load(Relaxed);
            let requests = c.requests_total.load(Relaxed);
            m.requests_total += requests;
            m.loop_requests.push(requests);
            m.bad_requests += c.bad_requests.load(Relaxed);
            m.handoffs_total += c.handoffs.load(Relaxed);
            for (sum, class) in m.pool_responses.iter_mut().zip(&c.pool_responses) {
                *sum += class.load(Relaxed);
            }
        }
        m
    }
}
