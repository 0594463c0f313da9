//! The built-in `echo` worker: answers every request with a JSON description of it.
//! Used by tests and benchmarks, so it does no per-request logging and serializes
//! straight from borrowed fields.

use serde::Serialize;

use super::api::{NativeWorker, Reply, WorkerContext, WorkerRequest, WsAnswer, WsOpen};

/// Echoes the request back as JSON.
#[derive(Debug, Default)]
pub struct Echo;

pub(crate) fn factory() -> Box<dyn NativeWorker> {
    Box::new(Echo)
}

/// The JSON body `echo` answers with.
#[derive(Serialize)]
struct EchoBody<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a [(String, String)],
    body: std::borrow::Cow<'a, str>,
    body_len: usize,
    worker_id: usize,
    pid: u32,
    x_request_id: &'a str,
    remote_addr: &'a str,
}

/// Serialize the description of `req` that `echo` answers with.
pub fn describe(req: &WorkerRequest, ctx: &WorkerContext) -> Vec<u8> {
    let body = EchoBody {
        method: &req.meta.method,
        path: &req.meta.path,
        query: req.meta.query.as_deref(),
        headers: &req.meta.headers,
        body: String::from_utf8_lossy(&req.body),
        body_len: req.body.len(),
        worker_id: ctx.worker_id(),
        pid: std::process::id(),
        x_request_id: &req.meta.x_request_id,
        remote_addr: &req.meta.remote_addr,
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

impl NativeWorker for Echo {
    fn handle(&mut self, req: WorkerRequest, ctx: &mut WorkerContext) -> Reply {
        Reply::Response {
            status: 200,
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body: describe(&req, ctx),
        }
    }

    /// WebSockets: accepted with the client's first subprotocol (a query `refuse` is
    /// refused), every message echoed back as it came; the text message `close` closes
    /// the socket with 4000.
    fn websocket(&self) -> bool {
        true
    }

    fn on_ws_open(&mut self, open: WsOpen, _ctx: &mut WorkerContext) -> WsAnswer {
        if open.meta.query.as_deref() == Some("refuse") {
            return WsAnswer::Refuse;
        }
        WsAnswer::Accept { subprotocol: open.subprotocols.first().cloned() }
    }

    fn on_ws_message(&mut self, id: u64, text: bool, data: Vec<u8>, ctx: &mut WorkerContext) {
        if text && data == b"close" {
            ctx.ws_close(id, 4000, "closed on request");
        } else {
            ctx.ws_send(id, text, &data);
        }
    }
}
