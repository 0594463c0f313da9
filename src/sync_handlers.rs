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
    /// Event loops of the dispatcher (`[server] threads`).
    pub loops: usize,
    pub draining: bool,
    pub pools: Vec<PoolStatus>,
    #[serde(skip)]
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub degraded: bool,
    /// Whether `ready` waits for this pool.
    pub readiness: bool,
    pub workers_alive: usize,
    /// Workers that said HELLO and are not stopping: the ones that take requests.
    pub workers_ready: usize,
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

/// A pool as `health` and `ready` see it.
fn pool_state(p: &PoolStatus) -> &'static str {
    if p.degraded {
        "degraded"
    } else if p.workers_ready > 0 {
        "ok"
    } else {
        "unavailable"
    }
}

/// `health`: each pool as it is: "ok" only with a ready worker, else "unavailable" or
/// "degraded". 200 while any pool serves (status "ok", or "partial" when some do not);
/// 503 when no pool can serve, or while draining.
pub fn health(s: &ServerStatus) -> SyncResponse {
    let pools: serde_json::Map<String, serde_json::Value> =
        s.pools.iter().map(|p| (p.name.clone(), serde_json::Value::from(pool_state(p)))).collect();
    let serving = s.pools.iter().filter(|p| pool_state(p) == "ok").count();
    let (code, status) = if s.draining {
        (503, "draining")
    } else if serving == s.pools.len() {
        (200, "ok")
    } else if serving > 0 {
        (200, "partial")
    } else {
        (503, "unavailable")
    };
    SyncResponse::json(code, &serde_json::json!({"status": status, "pools": pools}))
}

/// `ready` (for load balancers and Kubernetes readiness probes): 503 while draining, or
/// while a pool that counts for readiness (`readiness = true`, the default) has no ready
/// worker; else 200.
pub fn ready(s: &ServerStatus) -> SyncResponse {
    let waiting: Vec<&str> =
        s.pools.iter().filter(|p| p.readiness && pool_state(p) != "ok").map(|p| p.name.as_str()).collect();
    if s.draining {
        SyncResponse::json(503, &serde_json::json!({"status": "draining"}))
    } else if waiting.is_empty() {
        SyncResponse::json(200, &serde_json::json!({"status": "ready"}))
    } else {
        SyncResponse::json(503, &serde_json::json!({"status": "not ready", "pools": waiting}))
    }
}

/// `live` (liveness probes): 200 whenever the loop answers, draining included; a
/// liveness failure should mean "restart me", which a draining server is not.
pub fn live(s: &ServerStatus) -> SyncResponse {
    SyncResponse::json(200, &serde_json::json!({"status": "alive", "draining": s.draining}))
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
    let _ = writeln!(out, "# TYPE rustworkers_loop_requests_total counter");
    for (i, n) in m.loop_requests.iter().enumerate() {
        let _ = writeln!(out, "rustworkers_loop_requests_total{{loop=\"{i}\"}} {n}");
    }
    let _ = writeln!(out, "# TYPE rustworkers_handoffs_total counter\nrustworkers_handoffs_total {}", m.handoffs_total);
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
