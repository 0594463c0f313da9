//! Requests: route each parsed request (static mounts → sync handlers → pools → 404),
//! answer what the dispatcher answers itself, queue the rest, and finish pool requests
//! (responses, streams, timeouts, failures).

use std::time::Instant;

use log::{debug, info, warn};

use super::connection::{Slot, StreamFraming};
use super::{Dispatcher, Inflight};
use crate::auth::AuthDecision;
use crate::config::{AccessLog, SyncKind};
use crate::http::{self, BodyFraming, ReadEvent, Request, Version};
use crate::ipc::{self, FrameType, RequestMeta};
use crate::static_files::{self, StaticBody, StaticOutcome};

/// What the access log needs about a request.
#[derive(Debug, Clone, Default)]
pub struct AccessInfo {
    pub remote: String,
    pub method: String,
    pub target: String,
    pub version: &'static str,
    pub referer: String,
    pub user_agent: String,
    pub started: Option<Instant>,
}

impl AccessInfo {
    /// `logged`: the access log is on. Referer and user agent serve only it; method and
    /// target also name a dead worker's victims, so they are always kept.
    fn of(req: &Request, remote: &str, now: Instant, logged: bool) -> AccessInfo {
        let header = |name| if logged { req.header(name).unwrap_or("-").to_string() } else { String::new() };
        AccessInfo {
            remote: remote.to_string(),
            method: req.method.clone(),
            target: req.target.clone(),
            version: req.version.as_str(),
            referer: header("referer"),
            user_agent: header("user-agent"),
            started: Some(now),
        }
    }
}

/// Where a request goes; see `Dispatcher::route`.
enum Route {
    Static(static_files::StaticResponse),
    Sync(usize),
    Pool(usize),
    /// No route, or an authoritative static mount without the file.
    NotFound,
    /// The path's percent-encoding is malformed.
    BadPath,
}

/// How to answer a request the dispatcher answers itself.
struct ReplyTo {
    key: usize,
    version: Version,
    head_only: bool,
    keep_alive: bool,
    x_request_id: String,
    access: AccessInfo,
}

impl Dispatcher {
    /// Take every complete request out of the connection's reader.
    pub(super) fn parse_requests(&mut self, key: usize, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else { return };
            if conn.no_more_requests || conn.slots.len() >= super::connection::MAX_PIPELINE {
                return;
            }
            match conn.reader.poll() {
                Ok(ReadEvent::NeedMore) => {
                    if conn.peer_closed && conn.reader.buffered() > 0 {
                        // The client closed mid-request: nothing to answer.
                        conn.no_more_requests = true;
                        conn.reader = http::RequestReader::new(self.config.server.limits);
                    }
                    return;
                }
                Ok(ReadEvent::SendContinue) => {
                    // Refuse before the client uploads the body: a 401 must not follow a
                    // 100 Continue. The body is never read, so the connection closes.
                    if let Some(req) = conn.reader.pending_head().cloned()
                        && let Some((status, body)) = self.refusal_before_body(&req)
                    {
                        let to = ReplyTo {
                            key,
                            version: req.version,
                            head_only: req.is_head(),
                            keep_alive: false,
                            x_request_id: http::request_id(&req),
                            access: AccessInfo::of(
                                &req,
                                &self.conns[key].peer_ip,
                                now,
                                self.config.server.access_log != AccessLog::Off,
                            ),
                        };
                        self.reply_json(&to, status, &body);
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.no_more_requests = true;
                        }
                        return;
                    }
                    let Some(conn) = self.conns.get_mut(key) else { return };
                    let mut slot = Slot::pending(0, false);
                    slot.buf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    slot.done = true;
                    // An interim response must not wait behind earlier pipelined ones
                    // that are already being answered, but must not overtake them either:
                    // the client only sends Expect after its previous requests, so queueing
                    // it in order is right.
                    conn.slots.push_back(slot);
                }
                Ok(ReadEvent::Request(req)) => {
                    conn.head_started = None;
                    self.metrics.requests_total += 1;
                    self.handle_request(key, req, now);
                }
                Err(err) => {
                    self.metrics.bad_requests += 1;
                    debug!("conn {key}: bad request: {} {}", err.status, err.reason);
                    let conn = &mut self.conns[key];
                    let mut slot = Slot::pending(0, false);
                    slot.buf = err.response_bytes();
                    slot.done = true;
                    slot.close_after = true;
                    conn.slots.push_back(slot);
                    conn.no_more_requests = true;
                    return;
                }
            }
        }
    }

    /// Where a request goes (DESIGN decision 8): static mounts, then sync handlers (exact
    /// path), then the first pool whose route matches the decoded path, else 404.
    fn route(&self, req: &Request) -> Route {
        match static_files::serve(&self.config.statics, &req.method, &req.path, &req.headers) {
            StaticOutcome::Response(resp) => return Route::Static(resp),
            StaticOutcome::NotFound { authoritative: true } => return Route::NotFound,
            StaticOutcome::NotFound { authoritative: false } | StaticOutcome::NoMount => {}
        }
        let Ok(decoded) = http::percent_decode(&req.path) else { return Route::BadPath };
        let path = String::from_utf8_lossy(&decoded);
        if let Some(i) = self.config.syncs.iter().position(|s| s.path == path) {
            return Route::Sync(i);
        }
        match self.pools.iter().position(|p| !p.retired && p.config.routes.iter().any(|r| r.matches(&path))) {
            Some(p) => Route::Pool(p),
            None => Route::NotFound,
        }
    }

    /// The auth refusal `handle_request` would give this request, judged from its head
    /// alone (for Expect: 100-continue). `None` when its route needs no key.
    fn refusal_before_body(&self, req: &Request) -> Option<(u16, serde_json::Value)> {
        let needs_key = match self.route(req) {
            Route::Sync(i) => self.config.syncs[i].auth,
            Route::Pool(_) => true,
            _ => false,
        };
        match needs_key.then(|| self.check_auth(req)) {
            Some(AuthDecision::Deny { status, body }) => Some((status, body)),
            _ => None,
        }
    }

    /// Route and answer (or queue) one request.
    fn handle_request(&mut self, key: usize, req: Request, now: Instant) {
        let draining = self.phase != super::Phase::Running;
        let to = ReplyTo {
            key,
            version: req.version,
            head_only: req.is_head(),
            keep_alive: req.keep_alive && !draining,
            x_request_id: http::request_id(&req),
            access: AccessInfo::of(
                &req,
                &self.conns[key].peer_ip,
                now,
                self.config.server.access_log != AccessLog::Off,
            ),
        };
        match self.route(&req) {
            Route::Static(resp) => self.reply_static(&to, resp),
            Route::NotFound => self.reply_error(&to, 404, "not found"),
            Route::BadPath => {
                let to = ReplyTo { keep_alive: false, ..to };
                self.reply_error(&to, 400, "malformed percent-encoding in path");
            }
            Route::Sync(i) => {
                let route = self.config.syncs[i].clone();
                if route.auth
                    && let AuthDecision::Deny { status, body } = self.check_auth(&req)
                {
                    return self.reply_json(&to, status, &body);
                }
                let read_only = matches!(route.kind, SyncKind::Health | SyncKind::Status | SyncKind::Metrics);
                if read_only && req.method != "GET" && req.method != "HEAD" {
                    let (mut headers, body) = http::json_error(405, "method not allowed");
                    headers.push(("allow".into(), "GET, HEAD".into()));
                    return self.reply(&to, 405, headers, body);
                }
                let resp = self.run_sync_handler(&route, &req, now);
                self.reply(&to, resp.status, resp.headers, resp.body);
            }
            Route::Pool(p) => {
                let context = match self.check_auth(&req) {
                    AuthDecision::Allow { context } => context,
                    AuthDecision::Deny { status, body } => return self.reply_json(&to, status, &body),
                };
                if let Err((status, msg, retry_after)) = self.admit(p, now) {
                    let (mut headers, body) = http::json_error(status, msg);
                    if let Some(secs) = retry_after {
                        headers.push(("retry-after".into(), secs.to_string()));
                    }
                    return self.reply(&to, status, headers, body);
                }
                self.enqueue(to, req, p, context, now);
            }
        }
    }

    /// Give a request to pool `p`: an id, an in-flight record with its encoded frame, a
    /// pending slot on its connection, a place in the queue.
    fn enqueue(&mut self, to: ReplyTo, req: Request, p: usize, context: serde_json::Value, now: Instant) {
        let id = self.next_request_id;
        self.next_request_id += 1;
        let conn = &self.conns[to.key];
        let meta = RequestMeta {
            method: req.method,
            path: req.path,
            query: req.query,
            headers: req.headers,
            remote_addr: conn.peer_ip.clone(),
            remote_port: conn.peer_port,
            http_version: req.version.as_str().to_string(),
            x_request_id: to.x_request_id.clone(),
            forwarded: false,
            context,
        };
        let mut frame = Vec::with_capacity(256 + req.body.len());
        if let Err(e) = ipc::encode_json(&mut frame, FrameType::Request, id, &meta, &req.body) {
            let status = match e {
                ipc::EncodeError::BodyTooLarge { .. } => 413,
                ipc::EncodeError::MetaTooLarge { .. } => 431,
            };
            return self.reply_error(&to, status, "request too large for a worker");
        }
        let pool = &mut self.pools[p];
        pool.queue.push_back(id);
        self.inflight.insert(
            id,
            Inflight {
                conn: Some(to.key),
                pool: p,
                worker: None,
                deadline: now + pool.config.timeout,
                frame: Some(frame),
                streaming: false,
                keep_alive: to.keep_alive,
                head_only: to.head_only,
                version: to.version,
                x_request_id: to.x_request_id,
                access: to.access,
            },
        );
        self.push_slot(to.key, Slot::pending(id, to.head_only), to.keep_alive);
        self.pump_pool(p, now);
    }

    /// A static file answer: the head now, the file streamed by `Conn::flush`.
    fn reply_static(&mut self, to: &ReplyTo, resp: static_files::StaticResponse) {
        let mut headers = resp.headers;
        headers.push(("x-request-id".into(), to.x_request_id.clone()));
        let body_len = resp.body.len();
        let mut slot = Slot::pending(0, to.head_only);
        http::encode_head(
            to.version,
            resp.status,
            &headers,
            BodyFraming::Length(body_len),
            to.keep_alive,
            &mut slot.buf,
        );
        if !to.head_only {
            match resp.body {
                StaticBody::Empty => {}
                StaticBody::Bytes(b) => slot.buf.extend_from_slice(&b),
                StaticBody::File { file, offset, len } => {
                    if len > 0 {
                        slot.file = Some(super::connection::FileBody { file, offset, remaining: len });
                    }
                }
            }
        }
        slot.done = true;
        slot.close_after = !to.keep_alive;
        self.log_access(&to.access, resp.status, body_len);
        self.push_slot(to.key, slot, to.keep_alive);
    }

    /// Add a slot; after a non-keep-alive response nothing more is read.
    fn push_slot(&mut self, key: usize, slot: Slot, keep_alive: bool) {
        let conn = &mut self.conns[key];
        conn.slots.push_back(slot);
        if !keep_alive {
            conn.no_more_requests = true;
        }
    }

    /// Whether a pool takes one more request: Err((status, message, retry-after)).
    fn admit(&self, p: usize, now: Instant) -> Result<(), (u16, &'static str, Option<u64>)> {
        let pool = &self.pools[p];
        if pool.is_degraded() {
            return Err((503, "service degraded", None));
        }
        let live = pool.slots.iter().filter(|s| s.worker.is_some()).count();
        if live == 0 {
            return Err((503, "no worker available", Some(pool.retry_after(now))));
        }
        if pool.queue.len() >= self.config.server.max_pending {
            return Err((503, "server overloaded", Some(1)));
        }
        Ok(())
    }

    /// An error answer made here: `{"error": message}`.
    fn reply_error(&mut self, to: &ReplyTo, status: u16, message: &str) {
        let (headers, body) = http::json_error(status, message);
        self.reply(to, status, headers, body);
    }

    fn reply_json(&mut self, to: &ReplyTo, status: u16, value: &serde_json::Value) {
        let headers = vec![("content-type".to_string(), "application/json".to_string())];
        self.reply(to, status, headers, serde_json::to_vec(value).unwrap_or_default());
    }

    /// A complete answer made here (sync handlers, errors): encoded into its slot now.
    fn reply(&mut self, to: &ReplyTo, status: u16, mut headers: Vec<(String, String)>, body: Vec<u8>) {
        headers.push(("x-request-id".into(), to.x_request_id.clone()));
        let mut slot = Slot::pending(0, to.head_only);
        http::encode_response(to.version, status, &headers, &body, to.keep_alive, to.head_only, &mut slot.buf);
        slot.done = true;
        slot.close_after = !to.keep_alive;
        self.log_access(&to.access, status, body.len() as u64);
        self.push_slot(to.key, slot, to.keep_alive);
    }

    /// Answer an error on a connection whose framing can no longer be trusted, and close it.
    pub(super) fn answer_error_and_close(&mut self, key: usize, status: u16, message: &str, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.slots.is_empty() {
            let (headers, body) = http::json_error(status, message);
            let mut slot = Slot::pending(0, false);
            http::encode_response(Version::Http11, status, &headers, &body, false, false, &mut slot.buf);
            slot.done = true;
            slot.close_after = true;
            conn.slots.push_back(slot);
            conn.no_more_requests = true;
            self.flush_conn(key, now);
        } else {
            self.close_conn(key);
        }
    }

    /// A worker answered a request.
    pub(super) fn complete_request(
        &mut self,
        id: u64,
        status: u16,
        headers: Vec<(String, String)>,
        body: &[u8],
        now: Instant,
    ) {
        let Some(inf) = self.inflight.remove(&id) else { return };
        self.metrics.count_status(status);
        let Some(key) = inf.conn else { return }; // forwarded: answer discarded
        let mut headers = headers;
        headers.push(("x-request-id".into(), inf.x_request_id.clone()));
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Some(slot) = conn.slot_mut(id) else { return };
        let version = inf.version;
        // A worker that handles HEAD itself (a WSGI app) sends no body but the length the
        // GET body would have; content-length: 0 would be a lie (RFC 9110 §8.6).
        let head_length = if inf.head_only && body.is_empty() { worker_content_length(&headers) } else { None };
        if let Some(n) = head_length {
            http::encode_head(version, status, &headers, BodyFraming::Length(n), inf.keep_alive, &mut slot.buf);
        } else {
            http::encode_response(version, status, &headers, body, inf.keep_alive, inf.head_only, &mut slot.buf);
        }
        slot.done = true;
        slot.close_after = !inf.keep_alive;
        self.log_access(&inf.access, status, body.len() as u64);
        self.flush_conn(key, now);
    }

    /// A worker starts streaming a response.
    pub(super) fn start_stream(&mut self, id: u64, status: u16, headers: Vec<(String, String)>, now: Instant) {
        let Some(inf) = self.inflight.get_mut(&id) else { return };
        inf.streaming = true;
        self.metrics.count_status(status);
        let Some(key) = inf.conn else { return };
        let mut headers = headers;
        headers.push(("x-request-id".into(), inf.x_request_id.clone()));
        let (framing, stream, keep_alive) = if inf.version == Version::Http10 {
            (BodyFraming::CloseDelimited, StreamFraming::CloseDelimited, false)
        } else {
            (BodyFraming::Chunked, StreamFraming::Chunked, inf.keep_alive)
        };
        let version = inf.version;
        let head_only = inf.head_only;
        let access = inf.access.clone();
        self.log_access(&access, status, 0);
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Some(slot) = conn.slot_mut(id) else { return };
        http::encode_head(version, status, &headers, framing, keep_alive, &mut slot.buf);
        slot.stream = Some(stream);
        slot.close_after = !keep_alive;
        if head_only {
            // HEAD: the head is the whole answer; later chunks are dropped.
            slot.done = true;
        }
        self.flush_conn(key, now);
    }

    /// A stream chunk from a worker. Returns false when the client is gone or too slow
    /// (the caller then tells the worker with DISCONNECT).
    pub(super) fn stream_chunk(&mut self, id: u64, data: &[u8], now: Instant) -> bool {
        let Some(inf) = self.inflight.get(&id) else { return true };
        let Some(key) = inf.conn else { return true };
        // No connection or no slot left for it (a HEAD answer is complete at STREAM_START
        // and its slot may be gone): the request is over here. Forget it, or it would stay
        // in flight for ever and hold a graceful stop until shutdown_timeout.
        let Some(conn) = self.conns.get_mut(key) else {
            self.inflight.remove(&id);
            return false;
        };
        if conn.buffered_for(id) > super::connection::MAX_STREAM_BUFFER {
            warn!("request {id}: client reads too slowly; cutting the stream");
            self.inflight.remove(&id);
            self.close_conn(key);
            return false;
        }
        let Some(slot) = conn.slot_mut(id) else {
            self.inflight.remove(&id);
            return false;
        };
        if slot.done {
            return true;
        }
        match slot.stream {
            Some(StreamFraming::Chunked) => http::encode_chunk(data, &mut slot.buf),
            Some(StreamFraming::CloseDelimited) => slot.buf.extend_from_slice(data),
            None => return true,
        }
        self.flush_conn(key, now);
        self.stream_back_pressure(id);
        true
    }

    /// FLOW (docs/protocol.md): ask the worker to pause a stream whose client has
    /// `FLOW_PAUSE_AT` bytes waiting, and to resume once it is down to `FLOW_RESUME_AT`.
    /// The hard cap (`MAX_STREAM_BUFFER`) still cuts a worker that ignores it.
    pub(super) fn stream_back_pressure(&mut self, id: u64) {
        let Some(inf) = self.inflight.get(&id) else {
            self.paused_streams.remove(&id);
            return;
        };
        let (Some(key), Some(worker)) = (inf.conn, inf.worker) else { return };
        let Some(conn) = self.conns.get(key) else { return };
        let buffered = conn.buffered_for(id);
        let paused = self.paused_streams.contains(&id);
        let change = if !paused && buffered > super::connection::FLOW_PAUSE_AT {
            self.paused_streams.insert(id);
            true
        } else if paused && buffered <= super::connection::FLOW_RESUME_AT {
            self.paused_streams.remove(&id);
            false
        } else {
            return;
        };
        debug!(
            "request {id}: {} buffered for a slow client: stream {}",
            buffered,
            if change { "paused" } else { "resumed" }
        );
        self.send_flow(worker, id, change);
    }

    pub(super) fn end_stream(&mut self, id: u64, now: Instant) {
        let Some(inf) = self.inflight.remove(&id) else { return };
        let Some(key) = inf.conn else { return };
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Some(slot) = conn.slot_mut(id) else { return };
        if !slot.done && slot.stream == Some(StreamFraming::Chunked) {
            slot.buf.extend_from_slice(http::LAST_CHUNK);
        }
        slot.done = true;
        self.flush_conn(key, now);
    }

    /// Answer a pool request with an error made here (500 crash, 504 timeout, 503 shutdown).
    pub(super) fn fail_request(&mut self, id: u64, status: u16, message: &str, now: Instant) {
        let Some(inf) = self.inflight.remove(&id) else { return };
        if let Some(pos) = self.pools[inf.pool].queue.iter().position(|&q| q == id) {
            self.pools[inf.pool].queue.remove(pos);
        }
        self.metrics.count_status(status);
        let Some(key) = inf.conn else { return };
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Some(slot) = conn.slot_mut(id) else { return };
        if slot.stream.is_some() {
            // Headers are out: the only honest signal left is to cut the connection.
            slot.done = true;
            slot.close_after = true;
        } else {
            let (mut headers, body) = http::json_error(status, message);
            headers.push(("x-request-id".into(), inf.x_request_id.clone()));
            http::encode_response(inf.version, status, &headers, &body, inf.keep_alive, inf.head_only, &mut slot.buf);
            slot.done = true;
            slot.close_after = !inf.keep_alive;
            self.log_access(&inf.access, status, body.len() as u64);
        }
        self.flush_conn(key, now);
    }

    /// The client of a request went away (or it timed out): forget it here and tell the
    /// worker holding it.
    pub(super) fn abandon_request(&mut self, id: u64, client_gone: bool) {
        let Some(inf) = self.inflight.remove(&id) else { return };
        if let Some(pos) = self.pools[inf.pool].queue.iter().position(|&q| q == id) {
            self.pools[inf.pool].queue.remove(pos);
        }
        if let Some(w) = inf.worker {
            if client_gone {
                debug!("request {id}: client disconnected while in a worker");
            }
            self.worker_abandoned(w, id);
        }
    }

    /// Requests past their deadline: 504, whether queued or in a worker.
    pub(super) fn expire_requests(&mut self, now: Instant) {
        let expired: Vec<(u64, Option<usize>)> = self
            .inflight
            .iter()
            .filter(|(_, inf)| !inf.streaming && now >= inf.deadline)
            .map(|(&id, inf)| (id, inf.worker))
            .collect();
        for (id, worker) in expired {
            info!("request {id}: timed out {}", if worker.is_some() { "in a worker" } else { "in the queue" });
            self.fail_request(id, 504, "gateway timeout", now);
            if let Some(w) = worker {
                self.worker_abandoned(w, id);
            }
        }
    }

    /// Inject a request from a worker's FORWARD frame into the pool matching `route`.
    pub(super) fn forward(&mut self, from: &str, meta: ipc::ForwardMeta, body: Vec<u8>, now: Instant) {
        let Some(p) =
            self.pools.iter().position(|p| !p.retired && p.config.routes.iter().any(|r| r.matches(&meta.route)))
        else {
            warn!("{from}: forward to {}: no pool matches; dropped", meta.route);
            return;
        };
        if self.admit(p, now).is_err() {
            warn!("{from}: forward to {}: pool {} cannot take it; dropped", meta.route, self.pools[p].name());
            return;
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        let mut headers = Vec::new();
        if let Some(ct) = &meta.content_type {
            headers.push(("content-type".to_string(), ct.clone()));
        }
        headers.push(("content-length".to_string(), body.len().to_string()));
        let req_meta = RequestMeta {
            method: meta.method.clone(),
            path: meta.route.clone(),
            query: None,
            headers,
            remote_addr: String::new(),
            remote_port: 0,
            http_version: "1.1".into(),
            x_request_id: http::request_id_fresh(),
            forwarded: true,
            context: serde_json::Value::Null,
        };
        // Workers accept bodies up to max_body_bytes (CONFIG max_frame_bytes).
        if body.len() as u64 > self.config.server.limits.max_body_bytes {
            warn!("{from}: forward to {}: body of {} bytes over max_body_bytes; dropped", meta.route, body.len());
            return;
        }
        let mut frame = Vec::new();
        if let Err(e) = ipc::encode_json(&mut frame, FrameType::Request, id, &req_meta, &body) {
            warn!("{from}: forward to {}: {e}; dropped", meta.route);
            return;
        }
        let pool = &mut self.pools[p];
        pool.queue.push_back(id);
        self.inflight.insert(
            id,
            Inflight {
                conn: None,
                pool: p,
                worker: None,
                deadline: now + pool.config.timeout,
                frame: Some(frame),
                streaming: false,
                keep_alive: false,
                head_only: false,
                version: Version::Http11,
                x_request_id: String::new(),
                access: AccessInfo::default(),
            },
        );
        self.pump_pool(p, now);
    }

    fn log_access(&self, a: &AccessInfo, status: u16, bytes: u64) {
        crate::logging::access(self.config.server.access_log, a, status, bytes);
    }
}

/// The worker's own `content-length`, when it sent exactly one that parses (a HEAD answer).
fn worker_content_length(headers: &[(String, String)]) -> Option<u64> {
    let mut values = headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    let (_, v) = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::worker_content_length;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn head_length_taken_only_from_one_clean_worker_value() {
        assert_eq!(worker_content_length(&h(&[("Content-Length", "42")])), Some(42));
        assert_eq!(worker_content_length(&h(&[("x", "1"), ("content-length", " 7 ")])), Some(7));
        assert_eq!(worker_content_length(&h(&[])), None);
        assert_eq!(worker_content_length(&h(&[("content-length", "-1")])), None);
        assert_eq!(worker_content_length(&h(&[("content-length", "+5")])), None);
        assert_eq!(worker_content_length(&h(&[("content-length", "1, 1")])), None);
        assert_eq!(worker_content_length(&h(&[("content-length", "1"), ("Content-Length", "2")])), None);
        assert_eq!(worker_content_length(&h(&[("content-length", "99999999999999999999999")])), None);
    }
}
