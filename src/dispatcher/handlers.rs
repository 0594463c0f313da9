//! The dispatcher's side of sync handlers and auth: building the status snapshot and
//! running the configured checks.

use std::time::Instant;

use std::sync::atomic::Ordering::Relaxed;

use super::Dispatcher;
use super::loops::Role;
use crate::auth::{self, AuthDecision};
use crate::config::{SyncKind, SyncRoute};
use crate::http::Request;
use crate::sync_handlers::{self, PoolStatus, ServerStatus, SyncResponse};

impl Dispatcher {
    /// A snapshot of the server for `status`, `health`, `metrics` and custom handlers. A
    /// front loop reports the pools as the main loop last published them.
    pub(super) fn server_status(&self, now: Instant) -> ServerStatus {
        let (pools, main_draining) = match self.role {
            Role::Main(_) => (self.pool_statuses(now), false),
            Role::Front(_) => {
                let view = self.shared.pools();
                (view.pools.clone(), view.draining)
            }
        };
        ServerStatus {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            uptime_seconds: now.duration_since(self.started).as_secs_f64(),
            connections: self.shared.open_conns.load(Relaxed),
            loops: self.shared.loops(),
            draining: self.phase != super::Phase::Running || main_draining,
            pools,
            metrics: self.shared.metrics(),
        }
    }

    /// The pools' state, as the main loop sees it.
    pub(super) fn pool_statuses(&self, now: Instant) -> Vec<PoolStatus> {
        self.pools
            .iter()
            .filter(|p| !p.retired)
            .map(|p| {
                let workers: Vec<_> = p.workers().filter_map(|k| self.worker_status(k, now)).collect();
                PoolStatus {
                    name: p.name().to_string(),
                    degraded: p.is_degraded(),
                    readiness: super::tuning::readiness(&p.config),
                    workers_alive: workers.iter().filter(|w| w.alive).count(),
                    workers_ready: p.workers().filter(|&k| self.worker_ready(k)).count(),
                    workers_parked: p.parked_count(),
                    workers_configured: p.slots.len(),
                    queue_depth: p.queue_len(),
                    restarts_in_window: p.restarts_in_window(),
                    restarts_total: p.restarts_total,
                    workers,
                }
            })
            .collect()
    }

    pub(super) fn run_sync_handler(&self, route: &SyncRoute, req: &Request, now: Instant) -> SyncResponse {
        match &route.kind {
            SyncKind::Health => sync_handlers::health(&self.server_status(now)),
            SyncKind::Status => sync_handlers::status(&self.server_status(now)),
            SyncKind::Metrics => sync_handlers::metrics(&self.server_status(now)),
            SyncKind::Ready => sync_handlers::ready(&self.server_status(now)),
            SyncKind::Live => sync_handlers::live(&self.server_status(now)),
            SyncKind::StaticResponse { status, body, headers } => {
                sync_handlers::static_response(*status, body, headers)
            }
            SyncKind::Redirect { location, status } => sync_handlers::redirect(location, *status),
            SyncKind::Custom(name) => match self.ext.sync.get(name) {
                Some(handler) => handler(req, &self.server_status(now)),
                None => SyncResponse::json(500, &serde_json::json!({"error": "handler not registered"})),
            },
        }
    }

    /// API keys from `[auth]`, then the registered check, if any.
    pub(super) fn check_auth(&self, req: &Request) -> AuthDecision {
        if let Some(cfg) = &self.config.auth
            && let deny @ AuthDecision::Deny { .. } = auth::check_api_key(cfg, req)
        {
            return deny;
        }
        match &self.ext.auth {
            Some(check) => check(req),
            None => AuthDecision::Allow { context: serde_json::Value::Null },
        }
    }
}
