//! Counters kept by the dispatcher, exposed by the `metrics` sync handler in the
//! Prometheus text format.

/// Monotonic counters since start.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub connections_total: u64,
    pub requests_total: u64,
    pub bad_requests: u64,
    /// Pool responses by status class: 1xx..5xx at index 1..=5.
    pub pool_responses: [u64; 6],
}

impl Metrics {
    pub fn count_status(&mut self, status: u16) {
        let class = (status / 100) as usize;
        if let Some(c) = self.pool_responses.get_mut(class) {
            *c += 1;
        }
    }
}
