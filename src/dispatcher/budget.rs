//! The one owner of the dispatcher's memory ceiling: every buffered request body, queued
//! request frame, and response waiting for a client is counted here
//! (`[server] max_buffered_bytes`). Past the limit, new request bodies are refused with
//! 503 and no new request is handed to a worker (whose answer would need room), so the
//! total stays within the formula in docs/config.md whatever clients and workers do.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One loop's handle on the budget. With more than one event loop (`[server] threads`)
/// every loop counts into the same total; each keeps its own copy of the limit (set by
/// the config it runs).
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: Arc<AtomicU64>,
}

impl Budget {
    #[cfg(test)]
    pub fn new(limit: u64) -> Budget {
        Budget::shared(limit, Arc::default())
    }

    /// A budget counting into `used`, which other loops count into too.
    pub fn shared(limit: u64, used: Arc<AtomicU64>) -> Budget {
        Budget { limit, used }
    }

    /// Whether `more` bytes fit under the limit now.
    pub fn fits(&self, more: u64) -> bool {
        self.used().saturating_add(more) <= self.limit
    }

    pub fn exhausted(&self) -> bool {
        self.used() >= self.limit
    }

    /// An owner's holding changed from `before` to `after` bytes.
    pub fn change(&mut self, before: u64, after: u64) {
        if before == after {
            return;
        }
        // Saturating, as a miscount must not wrap into "exhausted forever".
        let _ = self.used.fetch_update(Relaxed, Relaxed, |u| Some(u.saturating_sub(before).saturating_add(after)));
    }

    pub fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }
}

/// Request bodies refused for the budget: counted, and logged in one line at most every
/// `REPORT_EVERY` (a client must not be able to flood the log with them).
#[derive(Debug, Default)]
pub struct Refusals {
    count: u64,
    reported: Option<std::time::Instant>,
}

const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Refusals {
    pub fn note(&mut self, now: std::time::Instant) {
        self.count += 1;
        if self.reported.is_none_or(|t| now.duration_since(t) >= REPORT_EVERY) {
            log::warn!(
                "server.max_buffered_bytes is spent: {} request bodies refused with 503 since the last report",
                self.count
            );
            self.count = 0;
            self.reported = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn counts_changes_and_refuses_past_the_limit() {
        let mut b = Budget::new(100);
        assert!(b.fits(100));
        b.change(0, 60);
        assert!(!b.fits(41));
        b.change(60, 20);
        assert_eq!(b.used(), 20);
        assert!(b.fits(80));
        b.change(20, 0);
        assert!(!b.exhausted());
    }
}
