//! WebSockets through the dispatcher (docs/protocol.md, "WebSockets"): the handshake is
//! a pool request (`WS_OPEN`) that its worker accepts or refuses; once accepted, the
//! connection's slot stays open (`Fill::Upgraded`) and whole messages are relayed both
//! ways. The dispatcher owns the socket: it answers pings, pings quiet clients, checks
//! every frame (`websocket::Decoder`), and closes with the code the situation calls for.

use std::time::Instant;

use log::{debug, warn};

use super::connection::{Fill, Reading, Slot, WsConn};
use super::{ConnKey, Dispatcher, PoolId, ReplyTo, ReqId, ReqKind, ReqState, WorkerKey, tuning};
use crate::http::{self, Request};
use crate::ipc::{self, FrameType, WsAcceptMeta, WsCloseMeta, WsMessageMeta, WsOpenMeta};
use crate::websocket::{self, CloseCode, Decoder, Opcode, Upgrade, WsEvent};

/// Response headers a worker may not set on a 101: the dispatcher owns the handshake.
const HANDSHAKE_HEADERS: [&str; 6] =
    ["upgrade", "connection", "content-length", "transfer-encoding", "sec-websocket-accept", "sec-websocket-protocol"];

impl Dispatcher {
    /// A valid handshake for a pool that takes WebSockets: `WS_OPEN` goes through the
    /// pool's queue like a request; the connection reads nothing more until it is
    /// answered.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_socket(
        &mut self,
        key: ConnKey,
        to: ReplyTo,
        req: Request,
        up: Upgrade,
        p: PoolId,
        context: serde_json::Value,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get(key.0) else { return };
        let meta = WsOpenMeta {
            request: super::requests::request_meta(conn, req, &to.x_request_id, context),
            subprotocols: up.subprotocols.clone(),
        };
        // A refusal (RESPONSE, or WS_CLOSE_OUT before accepting) ends the connection.
        let to = ReplyTo { keep_alive: false, ..to };
        let id = self.alloc_request_id();
        let mut frame = Vec::new();
        if let Err(e) = ipc::encode_json(&mut frame, FrameType::WsOpen, id.0, &meta, &[]) {
            return self.reply_error(key, &to, 431, &e.to_string());
        }
        let kind = ReqKind::Socket { key: up.key, subprotocols: up.subprotocols };
        self.new_request(id, Some(key), p, frame, kind, to, now);
        if let Some(conn) = self.conns.get_mut(key.0) {
            conn.slots.push_back(Slot::pending(id, false));
            conn.reading = Reading::Upgrading;
        }
    }

    /// `WS_ACCEPT`: answer 101 and turn the connection into a WebSocket.
    pub(super) fn accept_socket(&mut self, id: ReqId, worker: WorkerKey, meta: WsAcceptMeta, now: Instant) {
        let Some(inf) = self.inflight.get_mut(&id) else { return };
        let ReqKind::Socket { key: client_key, subprotocols } = &inf.kind else { return };
        inf.state = ReqState::Socket(worker);
        let subprotocol = match meta.subprotocol {
            Some(s) if subprotocols.contains(&s) => Some(s),
            Some(s) => {
                warn!("socket {id}: the worker chose subprotocol {s:?}, which the client did not offer; none sent");
                None
            }
            None => None,
        };
        let accept = websocket::accept_key(client_key);
        let (conn_key, access, x_request_id) = (inf.conn, inf.reply.access.clone(), inf.reply.x_request_id.clone());
        let pool = inf.pool;
        self.counters().count_status(101);
        let Some(key) = conn_key else { return };
        let cfg = &self.pools[pool.0].config;
        let (idle, max_message) = (tuning::websocket_idle_timeout(cfg), tuning::max_message_bytes(cfg));
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        let Some(slot) = conn.slot_mut(id) else { return };
        let mut head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n"
        );
        if let Some(s) = &subprotocol {
            head.push_str(&format!("sec-websocket-protocol: {s}\r\n"));
        }
        for (name, value) in &meta.headers {
            let lower = name.to_ascii_lowercase();
            let clean = |s: &str| !s.is_empty() && !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
            if HANDSHAKE_HEADERS.contains(&lower.as_str())
                || !clean(name)
                || value.bytes().any(|b| b == b'\r' || b == b'\n')
            {
                continue;
            }
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("x-request-id: {x_request_id}\r\n\r\n"));
        slot.buf.extend_from_slice(head.as_bytes());
        slot.fill = Fill::Upgraded;
        // Frames the client sent right behind its handshake are the socket's first bytes.
        let mut decoder = Decoder::new(max_message);
        decoder.push(&conn.reader.take_buffered());
        conn.ws = Some(Box::new(WsConn { id, decoder, pinged: false, idle }));
        conn.reading = Reading::WebSocket { last: now };
        self.log_access(&access, 101, 0);
        self.dirty.conns.push(key);
    }

    /// Decode what the client sent and relay it: messages to the worker, pongs to pings,
    /// a close (or a broken rule) ends the socket. Stops while the worker's pipe is full:
    /// undecoded bytes then fill the decoder, and reading stops (`Decoder::full`).
    pub(super) fn pump_socket(&mut self, key: ConnKey) {
        loop {
            let Some(conn) = self.conns.get_mut(key.0) else { return };
            if !matches!(conn.reading, Reading::WebSocket { .. }) {
                return;
            }
            let Some(ws) = conn.ws.as_mut() else { return };
            let id = ws.id;
            let Some(worker) = self.inflight.get(&id).and_then(|inf| inf.worker()) else { return };
            if !self.worker_has_room(worker, key) {
                return;
            }
            let Some(conn) = self.conns.get_mut(key.0) else { return };
            let Some(ws) = conn.ws.as_mut() else { return };
            match ws.decoder.next_event() {
                Ok(None) => return,
                Ok(Some(WsEvent::Message { text, data })) => {
                    self.send_to_worker(worker, FrameType::WsMessage, id, &WsMessageMeta { text }, &data);
                }
                Ok(Some(WsEvent::Ping(payload))) => {
                    if let Some(slot) = conn.slot_mut(id) {
                        websocket::encode_frame(&mut slot.buf, Opcode::Pong, &payload);
                    }
                    self.dirty.conns.push(key);
                }
                Ok(Some(WsEvent::Pong)) => {}
                Ok(Some(WsEvent::Close { code, reason })) => {
                    debug!("socket {id}: client closed with {code}");
                    // Echo the client's code (RFC 6455 §5.5.1); a codeless close gets a
                    // codeless answer.
                    let echo = if code == CloseCode::NO_STATUS { None } else { Some(code) };
                    self.end_socket(key, id, echo, "", code, &reason);
                    return;
                }
                Err(v) => {
                    debug!("socket {id}: {} ({})", v.reason, v.code);
                    self.end_socket(key, id, Some(v.code), v.reason, v.code, v.reason);
                    return;
                }
            }
        }
    }

    /// Close a socket from the dispatcher's side: a close frame to the client (`to_client`,
    /// `None` = a close frame without code), `WS_CLOSE` with `code` to its worker, and the
    /// connection ends once the frame is written.
    fn end_socket(
        &mut self,
        key: ConnKey,
        id: ReqId,
        to_client: Option<CloseCode>,
        client_reason: &str,
        code: CloseCode,
        reason: &str,
    ) {
        if let Some(inf) = self.take_request(id)
            && let Some(worker) = inf.worker()
        {
            self.worker_abandoned(worker, id, Some((code, reason)));
        }
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        if let Some(slot) = conn.slot_mut(id) {
            match to_client {
                Some(c) => websocket::encode_close(&mut slot.buf, c, client_reason),
                None => websocket::encode_frame(&mut slot.buf, Opcode::Close, &[]),
            }
            slot.fill = Fill::Done;
            slot.close_after = true;
        }
        conn.ws = None;
        conn.reading = Reading::Done;
        self.dirty.conns.push(key);
    }

    /// The dispatcher closes the socket on connection `key` (idle timeout).
    pub(super) fn close_socket_of(&mut self, key: ConnKey, code: CloseCode, reason: &str) {
        let Some(id) = self.conns.get(key.0).and_then(|c| c.ws.as_ref()).map(|ws| ws.id) else { return };
        self.end_socket(key, id, Some(code), reason, code, reason);
    }

    /// A quiet socket gets a ping; a client that answers nothing is closed at the idle
    /// timeout.
    pub(super) fn ping_socket(&mut self, key: ConnKey, now: Instant) {
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        let Some(ws) = conn.ws.as_mut() else { return };
        ws.pinged = true;
        let id = ws.id;
        if let Some(slot) = conn.slot_mut(id) {
            websocket::encode_frame(&mut slot.buf, Opcode::Ping, b"rustworkers");
        }
        self.dirty.conns.push(key);
        self.arm_conn(key, now);
    }

    /// `WS_MESSAGE_OUT`: a message for the client. A client that does not read gets its
    /// worker paused (FLOW); past the cap, the socket is closed with 1008.
    pub(super) fn socket_send(&mut self, id: ReqId, text: bool, data: &[u8]) {
        let Some(key) = self.inflight.get(&id).and_then(|inf| inf.conn) else { return };
        let cap = tuning::max_connection_buffer(&self.config.server).max(super::connection::FLOW_PAUSE_AT * 2);
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        if conn.buffered_for(id) > cap {
            warn!("socket {id}: the client reads too slowly and the worker ignores FLOW; closing with 1008");
            return self.end_socket(
                key,
                id,
                Some(CloseCode::POLICY),
                "client too slow",
                CloseCode::POLICY,
                "client too slow",
            );
        }
        let Some(slot) = conn.slot_mut(id) else { return };
        if slot.fill != Fill::Upgraded {
            return;
        }
        websocket::encode_frame(&mut slot.buf, if text { Opcode::Text } else { Opcode::Binary }, data);
        self.dirty.conns.push(key);
        self.stream_back_pressure(id);
    }

    /// `WS_CLOSE_OUT`: the worker closes its socket (a close frame to the client), or
    /// refuses one it never accepted (403).
    pub(super) fn socket_closed_by_worker(&mut self, id: ReqId, meta: WsCloseMeta, accepted: bool) {
        let Some(inf) = self.take_request(id) else { return };
        let Some(key) = inf.conn else { return };
        if !accepted {
            self.counters().count_status(403);
            let (mut headers, body) = http::json_error(403, "WebSocket refused");
            headers.push(("x-request-id".into(), inf.reply.x_request_id.clone()));
            self.log_access(&inf.reply.access, 403, body.len() as u64);
            let Some(conn) = self.conns.get_mut(key.0) else { return };
            let Some(slot) = conn.slot_mut(id) else { return };
            http::encode_response(inf.reply.version, 403, &headers, &body, false, false, &mut slot.buf);
            slot.fill = Fill::Done;
            slot.close_after = true;
            conn.reading = Reading::Done;
            self.dirty.conns.push(key);
            return;
        }
        let Some(conn) = self.conns.get_mut(key.0) else { return };
        if let Some(slot) = conn.slot_mut(id) {
            websocket::encode_close(&mut slot.buf, CloseCode(meta.code), &meta.reason);
            slot.fill = Fill::Done;
            slot.close_after = true;
        }
        conn.ws = None;
        conn.reading = Reading::Done;
        self.dirty.conns.push(key);
    }

    /// A request frame to a worker for one of its sockets.
    fn send_to_worker<T: serde::Serialize>(
        &mut self,
        worker: WorkerKey,
        kind: FrameType,
        id: ReqId,
        meta: &T,
        body: &[u8],
    ) {
        let before = self.worker_backlog(worker);
        if let Some(buf) = self.worker_tx(worker) {
            // Bounded by max_message_bytes, which the config keeps under the frame limit.
            let _ = ipc::encode_json(buf, kind, id.0, meta, body);
        }
        let after = self.worker_backlog(worker);
        self.hold(before as u64, after as u64);
        self.dirty.tx.push(worker); // written once per turn, with the other sockets' frames
    }
}

/// The close code the worker is told when the dispatcher gives up a socket request it
/// holds for `reason`.
pub(super) fn close_for(kind: &ReqKind) -> Option<(CloseCode, &'static str)> {
    match kind {
        ReqKind::Socket { .. } => Some((CloseCode::ABNORMAL, "client gone")),
        ReqKind::Http => None,
    }
}

/// The protocol's form of a close for `WS_CLOSE` (1005 stays 1005: the worker learns the
/// client sent no code).
pub(super) fn close_meta(code: CloseCode, reason: &str) -> WsCloseMeta {
    WsCloseMeta { code: code.0, reason: reason.to_string() }
}
