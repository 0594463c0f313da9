//! Built-in sync handlers, answered inside the dispatcher loop: `health`, `status`,
//! `metrics`, `static_response`, `redirect` (custom ones come from `Extensions`).
//!
//! They read a [`ServerStatus`] snapshot that the dispatcher builds, so they never see
//! the dispatcher's internals.

use serde::Serialize;

use crate::metrics::Metrics;

/// A response made by a sync handler.
#[derive(Debug, Clone)]
pub struct SyncResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SyncResponse {
    pub fn json(status: u16, value: &impl Serialize) -> SyncResponse {
        SyncResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    pub fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> SyncResponse {
        SyncResponse { status, headers: vec![("content-type".into(), content_type.into())], body: body.into() }
    }
}

/// The server state handlers report on.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub version: &'static str,
    pub pid: u32,
    pub uptime_seconds: f64,
    pub connections: usize,
    pub draining: bool,
    pub pools: Vec<PoolStatus>,
    #[serde(skip)]
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub degraded: bool,
    pub workers_alive: usize,
    pub workers_parked: usize,
    pub workers_configured: usize,
    pub queue_depth: usize,
    pub restarts_in_window: usize,
    pub restarts_total: u64,
    pub workers: Vec<WorkerStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    pub slot: usize,
    pub pid: i32,
    pub alive: bool,
    pub ready: bool,
    pub last_heartbeat_age: f64,
    pub in_hand: usize,
    pub served: u64,
    pub credits: u32,
}

/// `health`: 200 when every pool is healthy, 503 while any is degraded.
pub fn health(s: &ServerStatus) -> SyncResponse {
    let degraded: Vec<&str> = s.pools.iter().filter(|p| p.degraded).map(|p| p.name.as_str()).collect();
    let pools: serde_json::Map<String, serde_json::Value> = s
        .pools
        .iter()
        .map(|p| (p.name.clone(), serde_json::Value::from(if p.degraded { "degraded" } else { "ok" })))
        .collect();
    if degraded.is_empty() && !s.draining {
        SyncResponse::json(200, &serde_json::json!({"status": "ok", "pools": pools}))
    } else {
        let status = if s.draining { "draining" } else { "degraded" };
        SyncResponse::json(503, &serde_json::json!({"status": status, "pools": pools}))
    }
}

/// `ready`: placeholder answering what `health` answers.
pub fn ready(s: &ServerStatus) -> SyncResponse {
    // wired by the dispatcher
    health(s)
}

/// `live`: placeholder answering what `health` answers.
pub fn live(s: &ServerStatus) -> SyncResponse {
    // wired by the dispatcher
    health(s)
}

/// `status`: the whole snapshot as JSON.
pub fn status(s: &ServerStatus) -> SyncResponse {
    SyncResponse::json(200, s)
}

/// `metrics`: Prometheus text exposition.
pub fn metrics(s: &ServerStatus) -> SyncResponse {
    use std::fmt::Write;
    let m = &s.metrics;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# TYPE rustworkers_connections_total counter\nrustworkers_connections_total {}",
        m.connections_total
    );
    let _ = writeln!(out, "# TYPE rustworkers_requests_total counter\nrustworkers_requests_total {}", m.requests_total);
    let _ = writeln!(
        out,
        "# TYPE rustworkers_bad_requests_total counter\nrustworkers_bad_requests_total {}",
        m.bad_requests
    );
    let _ = writeln!(out, "# TYPE rustworkers_connections gauge\nrustworkers_connections {}", s.connections);
    let _ = writeln!(out, "# TYPE rustworkers_pool_responses_total counter");
    for class in 1..=5 {
        let _ = writeln!(out, "rustworkers_pool_responses_total{{class=\"{class}xx\"}} {}", m.pool_responses[class]);
    }
    let gauges = [
        ("rustworkers_pool_degraded", "gauge"),
        ("rustworkers_pool_workers_alive", "gauge"),
        ("rustworkers_pool_queue_depth", "gauge"),
        ("rustworkers_pool_restarts_total", "counter"),
    ];
    for (name, kind) in gauges {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for p in &s.pools {
            let v = match name {
                "rustworkers_pool_degraded" => p.degraded as u64,
                "rustworkers_pool_workers_alive" => p.workers_alive as u64,
                "rustworkers_pool_queue_depth" => p.queue_depth as u64,
                _ => p.restarts_total,
            };
            let _ = writeln!(out, "{name}{{pool=\"{}\"}} {v}", p.name);
        }
    }
    SyncResponse::text(200, "text/plain; version=0.0.4", out)
}

/// `static_response`: fixed status, body and headers.
pub fn static_response(status: u16, body: &str, headers: &[(String, String)]) -> SyncResponse {
    let mut resp = SyncResponse { status, headers: headers.to_vec(), body: body.as_bytes().to_vec() };
    if !resp.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        resp.headers.push(("content-type".into(), "text/plain; charset=utf-8".into()));
    }
    resp
}

/// `redirect`: Location with the configured status.
pub fn redirect(location: &str, status: u16) -> SyncResponse {
    SyncResponse { status, headers: vec![("location".into(), location.into())], body: Vec::new() }
}
