//! Requests: route each parsed request (static mounts → sync handlers → pools → 404),
//! answer what the dispatcher answers itself, queue the rest, and finish pool requests
//! (responses, streams, timeouts, failures).

use std::time::Instant;

use log::{debug, info, warn};

use super::connection::{FLOW_PAUSE_AT, FLOW_RESUME_AT, Fill, Reading, Slot, StreamFraming};
use super::loops::{Handed, Parsed, Role};
use super::timers::Timer;
use super::{ConnKey, Dispatcher, Inflight, Phase, PoolId, ReplyTo, ReqId, ReqKind, ReqState, WorkerKey};
use crate::auth::AuthDecision;
use crate::config::{AccessLog, SyncKind};
use crate::http::{self, BodyFraming, ReadEvent, Request, Version};
use crate::ipc::{self, RequestMeta};
use crate::static_files::{self, StaticBody, StaticOutcome};
use crate::websocket::CloseCode;

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
pub(super) enum Route {
    Static(static_files::StaticResponse),
    Sync(usize),
    Pool(PoolId),
    /// No route, or an authoritative static mount without the file.
    NotFound,
    /// The path's percent-encoding is malformed.
    BadPath,
}

/// What the head of a request with a body allows, decided before the body is read.
enum HeadCheck {
    Proceed,
    Refuse { status: u16, body: serde_json::Value },
}

impl Dispatcher {
    /// Take every complete request out of the connection's reader. A head whose body is
    /// still to come is judged first (`check_head`): auth, and room in the memory budget,
    /// are decided before the client uploads anything.
    pub(super) fn parse_requests(&mut self, key: ConnKey, now: Instant) -> Parsed {
        let mut completed = false;
        loop {
            let Some(conn) = self.conns.get_mut(key.0) else { return Parsed::Stay };
            if !conn.open_for_requests() && conn.reading != Reading::PeerClosed
                || conn.slots.len() >= super::connection::MAX_PIPELINE
            {
                break;
            }
            let event = conn.reader.poll();
            if matches!(event, Ok(ReadEvent::NeedMore | ReadEvent::SendContinue))
                && !conn.head_checked
                && let Some(req) = conn.reader.pending_head().cloned()
            {
                let route = self.route(&req);
                if self.belongs_to_main(&route) {
                    // A front loop: the main loop judges this head (and sends the 100).
                    let send_continue = matches!(event, Ok(ReadEvent::SendContinue));
                    return Parsed::HandOff(Handed::Head { send_continue });
                }
                if !self.judge_head(key, &req, &route, now) {
                    return Parsed::Stay;
                }
            }
            let Some(conn) = self.conns.get_mut(key.0) else { return Parsed::Stay };
            match event {
                Ok(ReadEvent::NeedMore) => {
                    if conn.reading == Reading::PeerClosed && conn.reader.buffered() > 0 {
                        // The client closed mid-request: nothing to answer.
                        conn.reader = http::RequestReader::new(self.config.server.limits);
                    }
                    break;
                }
                Ok(ReadEvent::SendContinue) => {
                    // An interim answer goes in order with the pipeline: the client sends
                    // Expect only after its earlier requests.
                    conn.slots.push_back(Slot::done(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(), false));
                }
                Ok(ReadEvent::Request(req)) => {
                    self.shared.counters(self.loop_index).request();
                    let route = self.route(&req);
                    if self.belongs_to_main(&route) {
                        if let Some(conn) = self.conns.get_mut(key.0) {
                            conn.sync_reading(true, now);
                        }
                        return Parsed::HandOff(Handed::Request(req));
                    }
                    completed = true;
                    self.handle_request(key, req, route, now);
                }
                Err(err) => {
                    self.shared.counters(self.loop_index).bad_request();
                    debug!("conn {}: bad request: {} {}", key.0, err.status, err.reason);
                    conn.slots.push_back(Slot::done(err.response_bytes(), true));
                    conn.no_more_requests();
                    return Parsed::Stay;
                }
            }
        }
        if let Some(conn) = self.conns.get_mut(key.0) {
            conn.sync_reading(completed, now);
        }
        Parsed::Stay
    }

    /// Judge `req`, the head whose body is arriving on `key` and goes to `route`
    /// (`check_head`); the connection's head is then checked. A refused one is answered
    /// and the connection closes after it. Whether it proceeds.
    pub(super) fn judge_head(&mut self, key: ConnKey, req: &Request, route: &Route, now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(key.0) else { return false };
        conn.head_checked = true;
        let HeadCheck::Refuse { status, body } = self.check_head(req, route) else { return true };
        if status == 503 {
            self.budget_refusals.note(now);
        }
        let to = self.reply_to(key, req, now, false);
        // The body is never read: the connection closes after this answer.
        self.reply_json(key, &to, status, &body);
        if let Some(conn) = self.conns.get_mut(key.0) {
            conn.no_more_requests();
        }
        false
    }

    /// Judge a head whose body is still arriving: the auth answer the request would get
    /// (a 401 must not wait for, or follow a 100 Continue for, an upload), and whether
    /// the declared body fits the memory budget (503 if not: the client may retry).
    fn check_head(&self, req: &Request, route: &Route) -> HeadCheck {
        let needs_key = match *route {
            Route::Sync(i) => self.config.syncs[i].auth,
            Route::Pool(_) => true,
            _ => false,
        };
        if needs_key && let AuthDecision::Deny { status, body } = self.check_auth(req) {
            return HeadCheck::Refuse { status, body };
        }
        let declared = req.header("content-length").and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
        if !self.budget.fits(declared) {
            debug!("refusing a {declared}-byte body: {} bytes buffered", self.budget.used());
            return HeadCheck::Refuse {
                status: 503,
                body: serde_json::json!({"error": "server busy: too much buffered; retry later"}),
            };
        }
        HeadCheck::Proceed
    }

    /// Where a request goes (DESIGN decision 8): static mounts, then sync handlers (exact
    /// path), then the first pool whose route matches the decoded path, else 404.
    pub(super) fn route(&self, req: &Request) -> Route {
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
        let pool = match self.role {
            Role::Main(_) => {
                self.pools.iter().position(|p| !p.retired && p.config.routes.iter().any(|r| r.matches(&path)))
            }
            // Front loops have no pools: a match in the config is enough to hand over.
            Role::Front(_) => self.config.pools.iter().position(|p| p.routes.iter().any(|r| r.matches(&path))),
        };
        match pool {
            Some(p) => Route::Pool(PoolId(p)),
            None => Route::NotFound,
        }
    }

    /// The client's terms for answering `req`. Nothing is kept alive once a stop began.
    fn reply_to(&self, key: ConnKey, req: &Request, now: Instant, keep_alive: bool) -> ReplyTo {
        let remote = self.conns.get(key.0).map(|c| c.peer_ip.as_str()).unwrap_or("-");
        ReplyTo {
            version: req.version,
            head_only: req.is_head(),
            keep_alive: keep_alive && self.phase == Phase::Running,
            x_request_id: http::request_id(req),
            access: AccessInfo::of(req, remote, now, self.config.server.access_log != AccessLog::Off),
        }
    }

    /// Route and answer (or queue) one request.
    pub(super) fn handle_request(&mut self, key: ConnKey, req: Request, route: Route, now: Instant) {
        let to = self.reply_to(key, &req, now, req.keep_alive);
        match route {
            Route::Static(resp) => self.reply_static(key, &to, resp),
            Route::NotFound => self.reply_error(key, &to, 404, "not found"),
            Route::BadPath => {
                let to = ReplyTo { keep_alive: false, ..to };
                self.reply_error(key, &to, 400, "malformed percent-encoding in path");
            }
            Route::Sync(i) => {
                let route = self.config.syncs[i].clone();
                if route.auth
                    && let AuthDecision::Deny { status, body } = self.check_auth(&req)
                {
                    return self.reply_json(key, &to, status, &body);
                }
                let read_only = matches!(
                    route.kind,
                    SyncKind::Health | SyncKind::Ready | SyncKind::Live | SyncKind::Status | SyncKind::Metrics
                );
                if read_only && req.method != "GET" && req.method != "HEAD" {
                    let (mut headers, body) = http::json_error(405, "method not allowed");
                    headers.push(("allow".into(), "GET, HEAD".into()));
                    return self.reply(key, &to, 405, headers, body);
                }
                let resp = self.run_sync_handler(&route, &req, now);
                self.reply(key, &to, resp.status, resp.headers, resp.body);
            }
            Route::Pool(p) => {
                let context = match self.check_auth(&req) {
                    AuthDecision::Allow { context } => context,
                    AuthDecision::Deny { status, body } => return self.reply_json(key, &to, status, &body),
                };
                if let Err((status, msg, retry_after)) = self.admit(p, now) {
                    let (mut headers, body) = http::json_error(status, msg);
                    if let Some(secs) = retry_after {
                        headers.push(("retry-after".into(), secs.to_string()));
                    }
                    return self.reply(key, &to, status, headers, body);
                }
                if self.pools[p.0].websockets != crate::pool::Support::No
                    && self.pools[p.0].config.websocket
                    && let Some(upgrade) = crate::websocket::check_upgrade(&req)
                {
                    return match upgrade {
                        Ok(up) => self.open_socket(key, to, req, up, p, context, now),
                        Err(e) => {
                            let (mut headers, body) = http::json_error(e.status(), e.reason());
                            if e.status() == 426 {
                                headers.push(("sec-websocket-version".into(), "13".into()));
                            }
                            let to = ReplyTo { keep_alive: false, ..to };
                            self.reply(key, &to, e.status(), headers, body)
                        }
                    };
                }
                self.enqueue(key, to, req, p, context, now);
            }
        }
    }

    /// Give a request to pool `p`: an id, an in-flight record with its encoded frame, a
    /// pending slot on its connection, a place in the queue.
    fn enqueue(
        &mut self,
        key: ConnKey,
        to: ReplyTo,
        mut req: Request,
        p: PoolId,
        context: serde_json::Value,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get(key.0) else { return };
        let body = std::mem::take(&mut req.body);
        let meta = request_meta(conn, req, &to.x_request_id, context);
        let id = self.alloc_request_id();
        let frame = match encode_request(id, &meta, &body) {
            Ok(frame) => frame,
            Err(e) => {
                // The limits that stop these at the reader come first; this catches what
                // they let through (a head whose JSON form outgrows the meta limit).
                let status = match e {
                    ipc::EncodeError::MetaTooLarge { .. } => 431,
                    ipc::EncodeError::BodyTooLarge { .. } => 413,
                };
                let to = ReplyTo { keep_alive: false, ..to };
                return self.reply_error(key, &to, status, &e.to_string());
            }
        };
        self.new_request(id, Some(key), p, frame, ReqKind::Http, to.clone(), now);
        let keep_alive = to.keep_alive;
        self.push_slot(key, Slot::pending(id, to.head_only), keep_alive);
    }

    pub(super) fn alloc_request_id(&mut self) -> ReqId {
        let id = ReqId(self.next_request_id);
        self.next_request_id += 1;
        id
    }

    /// Record a pool request with its encoded frame and queue it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_request(
        &mut self,
        id: ReqId,
        conn: Option<ConnKey>,
        p: PoolId,
        frame: Vec<u8>,
        kind: ReqKind,
        reply: ReplyTo,
        now: Instant,
    ) {
        let deadline = now + self.pools[p.0].config.timeout;
        self.hold(0, frame.len() as u64);
        self.pools[p.0].enqueue(id, deadline);
        self.arm_pool(p, deadline);
        self.inflight.insert(id, Inflight { conn, pool: p, deadline, state: ReqState::Queued { frame }, kind, reply });
        self.dirty.pools.push(p);
    }

    /// A static file answer: the head now, the file streamed by `Conn::flush`.
    fn reply_static(&mut self, key: ConnKey, to: &ReplyTo, resp: static_files::StaticResponse) {
        let mut headers = resp.headers;
        headers.push(("x-request-id".into(), to.x_request_id.clone()));
        let body_len = resp.body.len();
        let mut buf = Vec::new();
        http::encode_head(to.version, resp.status, &headers, BodyFraming::Length(body_len), to.keep_alive, &mut buf);
        let mut slot = Slot::done(buf, !to.keep_alive);
        slot.head_only = to.head_only;
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
        self.log_access(&to.access, resp.status, body_len);
        self.push_slot(key, slot, to.keep_alive);
    }

    /// Add a slot; after a non-keep-alive response nothing more is read.
    fn push_slot(&mut self, key: ConnKey, slot: Slot, keep_alive: bool) {
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        conn.slots.push_back(slot);
        if !keep_alive {
            conn.no_more_requests();
        }
    }

    /// Whether a pool takes one more request: Err((status, message, retry-after)).
    fn admit(&self, p: PoolId, now: Instant) -> Result<(), (u16, &'static str, Option<u64>)> {
        let pool = &self.pools[p.0];
        if pool.is_degraded() {
            return Err((503, "service degraded", None));
        }
        if !pool.can_serve_soon(now) {
            return Err((503, "no worker available", Some(pool.retry_after(now))));
        }
        if pool.queue_len() >= self.config.server.max_pending {
            return Err((503, "server overloaded", Some(1)));
        }
        Ok(())
    }

    /// An error answer made here: `{"error": message}`.
    pub(super) fn reply_error(&mut self, key: ConnKey, to: &ReplyTo, status: u16, message: &str) {
        let (headers, body) = http::json_error(status, message);
        self.reply(key, to, status, headers, body);
    }

    fn reply_json(&mut self, key: ConnKey, to: &ReplyTo, status: u16, value: &serde_json::Value) {
        let headers = vec![("content-type".to_string(), "application/json".to_string())];
        self.reply(key, to, status, headers, serde_json::to_vec(value).unwrap_or_default());
    }

    /// A complete answer made here (sync handlers, errors): encoded into its slot now.
    fn reply(&mut self, key: ConnKey, to: &ReplyTo, status: u16, mut headers: Vec<(String, String)>, body: Vec<u8>) {
        headers.push(("x-request-id".into(), to.x_request_id.clone()));
        let mut buf = Vec::new();
        http::encode_response(to.version, status, &headers, &body, to.keep_alive, to.head_only, &mut buf);
        self.log_access(&to.access, status, body.len() as u64);
        self.push_slot(key, Slot::done(buf, !to.keep_alive), to.keep_alive);
    }

    /// Answer an error on a connection whose framing can no longer be trusted (a client
    /// too slow to send its request), and close it. With answers still pending the
    /// connection just closes: an error cannot overtake them.
    pub(super) fn answer_error_and_close(&mut self, key: ConnKey, status: u16, message: &str) {
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        if conn.slots.is_empty() {
            let (headers, body) = http::json_error(status, message);
            let mut buf = Vec::new();
            http::encode_response(Version::Http11, status, &headers, &body, false, false, &mut buf);
            conn.slots.push_back(Slot::done(buf, true));
            conn.no_more_requests();
            self.dirty.conns.push(key);
        } else {
            self.close_conn(key);
        }
    }

    /// Whether the answer to request `id` may keep its connection open. Once a stop
    /// began, no new request is read, but those already accepted on the connection
    /// (pipelined behind this one) still get their answers: only the last one closes.
    /// Closing after an earlier one would throw away answers already made, and requests
    /// a worker already ran.
    fn keep_alive(&self, id: ReqId, inf: &Inflight) -> bool {
        if !inf.reply.keep_alive {
            return false;
        }
        if self.phase == Phase::Running {
            return true;
        }
        inf.conn
            .and_then(|c| self.conns.get(c.0))
            .is_some_and(|c| c.slots.iter().position(|s| s.req == Some(id)).is_some_and(|i| i + 1 < c.slots.len()))
    }

    /// A worker answered a request.
    pub(super) fn complete_request(&mut self, id: ReqId, status: u16, headers: Vec<(String, String)>, body: &[u8]) {
        let Some(inf) = self.take_request(id) else { return };
        self.counters().count_status(status);
        let Some(key) = inf.conn else { return }; // forwarded: answer discarded
        let keep_alive = self.keep_alive(id, &inf);
        let mut headers = headers;
        headers.push(("x-request-id".into(), inf.reply.x_request_id.clone()));
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        let Some(slot) = conn.slot_mut(id) else { return };
        let version = inf.reply.version;
        let head_only = inf.reply.head_only;
        // A worker that handles HEAD itself (a WSGI app) sends no body but the length the
        // GET body would have; content-length: 0 would be a lie (RFC 9110 §8.6).
        let head_length = if head_only && body.is_empty() { worker_content_length(&headers) } else { None };
        if let Some(n) = head_length {
            http::encode_head(version, status, &headers, BodyFraming::Length(n), keep_alive, &mut slot.buf);
        } else {
            http::encode_response(version, status, &headers, body, keep_alive, head_only, &mut slot.buf);
        }
        slot.fill = Fill::Done;
        slot.close_after = !keep_alive;
        if !keep_alive {
            conn.no_more_requests();
        }
        self.log_access(&inf.reply.access, status, body.len() as u64);
        self.dirty.conns.push(key);
    }

    /// A worker starts streaming a response.
    pub(super) fn start_stream(&mut self, id: ReqId, worker: WorkerKey, status: u16, headers: Vec<(String, String)>) {
        let may_keep = self.inflight.get(&id).is_some_and(|inf| self.keep_alive(id, inf));
        let Some(inf) = self.inflight.get_mut(&id) else { return };
        if let ReqState::Prefetched { frame, .. } = std::mem::replace(&mut inf.state, ReqState::Streaming(worker)) {
            self.hold(frame.len() as u64, 0); // started: it can no longer go elsewhere
        }
        let Some(inf) = self.inflight.get_mut(&id) else { return };
        self.shared.counters(self.loop_index).count_status(status);
        let Some(key) = inf.conn else { return };
        let mut headers = headers;
        headers.push(("x-request-id".into(), inf.reply.x_request_id.clone()));
        let (framing, stream, keep_alive) = if inf.reply.version == Version::Http10 {
            (BodyFraming::CloseDelimited, StreamFraming::CloseDelimited, false)
        } else {
            (BodyFraming::Chunked, StreamFraming::Chunked, may_keep)
        };
        let version = inf.reply.version;
        let head_only = inf.reply.head_only;
        let access = inf.reply.access.clone();
        self.log_access(&access, status, 0);
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        let Some(slot) = conn.slot_mut(id) else { return };
        http::encode_head(version, status, &headers, framing, keep_alive, &mut slot.buf);
        slot.fill = Fill::Streaming(stream);
        slot.close_after = !keep_alive;
        if head_only {
            // HEAD: the head is the whole answer; later chunks are dropped.
            slot.fill = Fill::Done;
        }
        if !keep_alive {
            conn.no_more_requests();
        }
        self.dirty.conns.push(key);
    }

    /// A stream chunk from a worker. Returns false when the client is gone or too slow
    /// (the caller then tells the worker with DISCONNECT).
    pub(super) fn stream_chunk(&mut self, id: ReqId, data: &[u8]) -> bool {
        let Some(inf) = self.inflight.get(&id) else { return true };
        let Some(key) = inf.conn else { return true };
        let cap = super::tuning::max_connection_buffer(&self.config.server).max(FLOW_PAUSE_AT * 2);
        // No connection or no slot left for it (a HEAD answer is complete at STREAM_START
        // and its slot may be gone): the request is over here. Forget it, or it would stay
        // in flight for ever and hold a graceful stop until shutdown_timeout.
        let Some(conn) = self.conns.get_mut(key.0) else {
            self.take_request(id);
            return false;
        };
        if conn.buffered_for(id) > cap {
            warn!("request {id}: client reads too slowly and the worker ignores FLOW; cutting the stream");
            self.take_request(id);
            self.close_conn(key);
            return false;
        }
        let Some(slot) = conn.slot_mut(id) else {
            self.take_request(id);
            return false;
        };
        match slot.fill {
            Fill::Streaming(StreamFraming::Chunked) => http::encode_chunk(data, &mut slot.buf),
            Fill::Streaming(StreamFraming::CloseDelimited) => slot.buf.extend_from_slice(data),
            Fill::Done | Fill::Waiting | Fill::Upgraded => return true,
        }
        self.dirty.conns.push(key);
        self.stream_back_pressure(id);
        true
    }

    /// FLOW (docs/protocol.md): ask the worker to pause a stream whose client has
    /// `FLOW_PAUSE_AT` bytes waiting, and to resume once it is down to `FLOW_RESUME_AT`.
    /// The hard cap (`max_connection_buffer`) still cuts a worker that ignores it.
    pub(super) fn stream_back_pressure(&mut self, id: ReqId) {
        let Some(inf) = self.inflight.get(&id) else {
            self.paused_streams.remove(&id);
            return;
        };
        let (Some(key), ReqState::Streaming(worker) | ReqState::Socket(worker)) = (inf.conn, &inf.state) else {
            return;
        };
        let worker = *worker;
        let Some(conn) = self.conns.get(key.0) else { return };
        let buffered = conn.buffered_for(id);
        let paused = self.paused_streams.contains(&id);
        let change = if !paused && buffered > FLOW_PAUSE_AT {
            self.paused_streams.insert(id);
            true
        } else if paused && buffered <= FLOW_RESUME_AT {
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

    /// A stream ended; `aborted`: the worker's app failed mid-stream, so the connection is
    /// cut without the last chunk (the client sees a truncated body, not a clean end).
    pub(super) fn end_stream(&mut self, id: ReqId, aborted: bool) {
        let Some(inf) = self.take_request(id) else { return };
        let Some(key) = inf.conn else { return };
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        let Some(slot) = conn.slot_mut(id) else { return };
        let cut = aborted && matches!(slot.fill, Fill::Streaming(_));
        if cut {
            slot.close_after = true;
        } else if slot.fill == Fill::Streaming(StreamFraming::Chunked) {
            slot.buf.extend_from_slice(http::LAST_CHUNK);
        }
        slot.fill = Fill::Done;
        if cut {
            conn.no_more_requests();
        }
        self.dirty.conns.push(key);
    }

    /// Forget a request: out of the in-flight table, its queue place and its budget.
    pub(super) fn take_request(&mut self, id: ReqId) -> Option<Inflight> {
        let inf = self.inflight.remove(&id)?;
        self.paused_streams.remove(&id);
        match &inf.state {
            ReqState::Queued { frame } => {
                self.pools[inf.pool.0].dequeue(id);
                self.hold(frame.len() as u64, 0);
            }
            ReqState::Prefetched { frame, .. } => self.hold(frame.len() as u64, 0),
            _ => {}
        }
        Some(inf)
    }

    /// Answer a pool request with an error made here (500 crash, 504 timeout, 503 shutdown).
    pub(super) fn fail_request(&mut self, id: ReqId, status: u16, message: &str) {
        let Some(inf) = self.take_request(id) else { return };
        self.counters().count_status(status);
        let keep_alive = self.keep_alive(id, &inf);
        let Some(key) = inf.conn else { return };
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        let Some(slot) = conn.slot_mut(id) else { return };
        let mut logged = None;
        if slot.fill == Fill::Upgraded {
            // An open WebSocket: 1001 when the server stops, 1011 when its worker failed.
            let code = if status == 503 { CloseCode::GOING_AWAY } else { CloseCode::INTERNAL };
            crate::websocket::encode_close(&mut slot.buf, code, message);
            slot.fill = Fill::Done;
            slot.close_after = true;
        } else if let Fill::Streaming(_) = slot.fill {
            // Headers are out: the only honest signal left is to cut the connection.
            slot.fill = Fill::Done;
            slot.close_after = true;
        } else {
            let (mut headers, body) = http::json_error(status, message);
            headers.push(("x-request-id".into(), inf.reply.x_request_id.clone()));
            let (version, head_only) = (inf.reply.version, inf.reply.head_only);
            http::encode_response(version, status, &headers, &body, keep_alive, head_only, &mut slot.buf);
            slot.fill = Fill::Done;
            slot.close_after = !keep_alive;
            logged = Some(body.len() as u64);
        }
        if slot.close_after {
            conn.no_more_requests();
        }
        self.dirty.conns.push(key);
        if let Some(bytes) = logged {
            self.log_access(&inf.reply.access, status, bytes);
        }
    }

    /// The client of a request went away: forget it here and tell the worker holding it.
    pub(super) fn abandon_request(&mut self, id: ReqId, client_gone: bool) {
        let Some(inf) = self.take_request(id) else { return };
        if let Some(w) = inf.worker() {
            if client_gone {
                debug!("request {id}: client disconnected while in a worker");
            }
            self.worker_abandoned(w, id, super::sockets::close_for(&inf.kind));
        }
    }

    /// Arm the pool's timer for a deadline (request expiry, respawn, recovery).
    pub(super) fn arm_pool(&mut self, p: PoolId, at: Instant) {
        if self.pools[p.0].armed.needs(at) {
            self.timers.arm(at, Timer::Pool(p));
        }
    }

    /// The pool's timer: expire requests past their deadline (504, whether queued or in
    /// a worker; streams are bounded by the worker's heartbeats instead), recover a
    /// degraded pool, start due workers. Then re-arm at the next deadline.
    pub(super) fn pool_timer(&mut self, p: PoolId, now: Instant) {
        self.pools[p.0].armed.fired();
        let mut next: Option<Instant> = None;
        while let Some(&(at, id)) = self.pools[p.0].deadlines.front() {
            let Some(inf) = self.inflight.get(&id) else {
                self.pools[p.0].deadlines.pop_front();
                continue;
            };
            if inf.deadline > at {
                // Extended by a heartbeat: re-file it at its new deadline.
                let deadline = inf.deadline;
                self.pools[p.0].deadlines.pop_front();
                self.pools[p.0].deadlines.push_back((deadline, id));
                continue;
            }
            if at > now {
                next = Some(at);
                break;
            }
            self.pools[p.0].deadlines.pop_front();
            if matches!(inf.state, ReqState::Streaming(_) | ReqState::Socket(_)) {
                continue;
            }
            let worker = inf.worker();
            let close = super::sockets::close_for(&inf.kind);
            info!("request {id}: timed out {}", if worker.is_some() { "in a worker" } else { "in the queue" });
            self.fail_request(id, 504, "gateway timeout");
            if let Some(w) = worker {
                self.worker_abandoned(w, id, close);
            }
        }
        if self.pools[p.0].tick(now) {
            info!("pool {} recovered after recovery_interval: starting its workers", self.pools[p.0].name());
        }
        self.dirty.manage = true;
        if let Some(at) = next {
            self.arm_pool(p, at);
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
        let p = PoolId(p);
        if self.admit(p, now).is_err() {
            warn!("{from}: forward to {}: pool {} cannot take it; dropped", meta.route, self.pools[p.0].name());
            return;
        }
        // Workers accept bodies up to max_body_bytes (CONFIG max_frame_bytes).
        if body.len() as u64 > self.config.server.limits.max_body_bytes {
            warn!("{from}: forward to {}: body of {} bytes over max_body_bytes; dropped", meta.route, body.len());
            return;
        }
        if !self.budget.fits(body.len() as u64) {
            warn!("{from}: forward to {}: the buffer budget is spent; dropped", meta.route);
            return;
        }
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
        let id = self.alloc_request_id();
        let frame = match encode_request(id, &req_meta, &body) {
            Ok(frame) => frame,
            Err(e) => {
                warn!("{from}: forward to {}: {e}; dropped", meta.route);
                return;
            }
        };
        let reply = ReplyTo {
            version: Version::Http11,
            head_only: false,
            keep_alive: false,
            x_request_id: String::new(),
            access: AccessInfo::default(),
        };
        self.new_request(id, None, p, frame, ReqKind::Http, reply, now);
    }

    pub(super) fn log_access(&self, a: &AccessInfo, status: u16, bytes: u64) {
        crate::logging::access(self.config.server.access_log, a, status, bytes);
    }
}

/// The meta a worker gets for a client's request (REQUEST, and WS_OPEN's request part).
pub(super) fn request_meta(
    conn: &super::Conn,
    req: Request,
    x_request_id: &str,
    context: serde_json::Value,
) -> RequestMeta {
    RequestMeta {
        method: req.method,
        path: req.path,
        query: req.query,
        headers: req.headers,
        remote_addr: conn.peer_ip.clone(),
        remote_port: conn.peer_port,
        http_version: req.version.as_str().to_string(),
        x_request_id: x_request_id.to_string(),
        forwarded: false,
        context,
    }
}

/// A REQUEST frame, or why the protocol cannot carry it.
fn encode_request(id: ReqId, meta: &RequestMeta, body: &[u8]) -> Result<Vec<u8>, ipc::EncodeError> {
    let mut frame = Vec::with_capacity(256 + body.len());
    ipc::encode_request(&mut frame, id.0, meta, body)?;
    Ok(frame)
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
