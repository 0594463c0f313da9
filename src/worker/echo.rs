//! The built-in `echo` worker: answers every request with a JSON description of it.
//! Used by tests and benchmarks, so it does no per-request logging.

use super::api::{NativeWorker, Reply, WorkerContext, WorkerRequest};

/// Echoes the request back as JSON.
#[derive(Debug, Default)]
pub struct Echo;

pub(crate) fn factory() -> Box<dyn NativeWorker> {
    Box::new(Echo)
}

/// The JSON body `echo` answers with.
pub fn describe(req: &WorkerRequest, ctx: &WorkerContext) -> serde_json::Value {
    serde_json::json!({
        "method": req.meta.method,
        "path": req.meta.path,
        "query": req.meta.query,
        "headers": req.meta.headers,
        "body": String::from_utf8_lossy(&req.body),
        "body_len": req.body.len(),
        "worker_id": ctx.worker_id(),
        "pid": std::process::id(),
        "x_request_id": req.meta.x_request_id,
        "remote_addr": req.meta.remote_addr,
    })
}

impl NativeWorker for Echo {
    fn handle(&mut self, req: WorkerRequest, ctx: &mut WorkerContext) -> Reply {
        Reply::json(200, &describe(&req, ctx))
    }
}
