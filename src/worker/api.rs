//! The native worker API: the [`NativeWorker`] trait library users implement, the
//! [`WorkerContext`] it talks to the dispatcher through, and the global registry the
//! spawner looks names up in after fork.
//!
//! Everything a worker sends goes through the context as whole frames written to the
//! reply pipe (fd 4) with blocking writes, so frames are never interleaved.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::Instant;

use crate::ipc::{
    ConfigMeta, CreditMeta, ForwardMeta, FrameType, HeartbeatMeta, LogMeta, RequestMeta, ResponseMeta, WsAcceptMeta,
    WsCloseMeta, WsMessageMeta, encode_frame, encode_json,
};

/// A WebSocket handshake relayed by the dispatcher (`WS_OPEN`).
#[derive(Debug, Clone)]
pub struct WsOpen {
    /// The socket's id: messages and closes name it.
    pub id: u64,
    /// The handshake request.
    pub meta: RequestMeta,
    /// Subprotocols the client offered, in its order.
    pub subprotocols: Vec<String>,
}

/// What [`NativeWorker::on_ws_open`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsAnswer {
    /// Accept, optionally choosing one of the offered subprotocols.
    Accept { subprotocol: Option<String> },
    /// Refuse: the client gets 403.
    Refuse,
}

/// One request handed to a worker.
#[derive(Debug, Clone)]
pub struct WorkerRequest {
    /// The dispatcher's request id; answer with it.
    pub id: u64,
    pub meta: RequestMeta,
    pub body: Vec<u8>,
}

/// What [`NativeWorker::handle`] returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Answer now with a complete response.
    Response { status: u16, headers: Vec<(String, String)>, body: Vec<u8> },
    /// The request stays in hand: it is (or was already) answered through the context,
    /// e.g. from [`NativeWorker::on_tick`] or by streaming.
    Deferred,
}

impl Reply {
    /// A `200` response with `content-type: application/json`.
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::Response {
            status,
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body: value.to_string().into_bytes(),
        }
    }
}

/// A worker implemented in Rust, run in a forked (not exec'd) child by [`crate::worker::native_main`].
///
/// All hooks run on the worker's single thread, between heartbeats: a hook that blocks
/// stops the heartbeats, which is how the dispatcher detects a stuck worker.
pub trait NativeWorker {
    /// Called once after the first CONFIG, before HELLO. An `Err` is logged as critical
    /// and the worker exits with status 1.
    fn setup(&mut self, _ctx: &mut WorkerContext) -> Result<(), String> {
        Ok(())
    }
    /// Handle one request. Return [`Reply::Deferred`] to answer later through `ctx`.
    fn handle(&mut self, req: WorkerRequest, ctx: &mut WorkerContext) -> Reply;
    /// The client of request `id` went away; anything sent for it now is dropped.
    fn on_disconnect(&mut self, _id: u64, _ctx: &mut WorkerContext) {}
    /// A new CONFIG arrived (after a reload); `ctx` already holds it.
    fn on_config(&mut self, _ctx: &mut WorkerContext) {}
    /// Called on every turn of the main loop: after each batch of input and after each
    /// heartbeat. Deferred requests are finished from here.
    fn on_tick(&mut self, _ctx: &mut WorkerContext) {}
    /// Called once before a clean exit (STOP or end of the request pipe).
    fn teardown(&mut self, _ctx: &mut WorkerContext) {}
    /// Whether this worker takes WebSockets (said in HELLO; the dispatcher then relays
    /// upgrade requests to it instead of passing them on as plain requests).
    fn websocket(&self) -> bool {
        false
    }
    /// A WebSocket handshake for this worker. Each open socket holds one credit.
    fn on_ws_open(&mut self, _open: WsOpen, _ctx: &mut WorkerContext) -> WsAnswer {
        WsAnswer::Refuse
    }
    /// A complete message from the client of socket `id` (`text` ones are UTF-8).
    fn on_ws_message(&mut self, _id: u64, _text: bool, _data: Vec<u8>, _ctx: &mut WorkerContext) {}
    /// Socket `id` is closed on the client side (`code` as in RFC 6455; 1006 when the
    /// client vanished, 1001 when the server stops). Nothing more can be sent on it.
    fn on_ws_close(&mut self, _id: u64, _code: u16, _ctx: &mut WorkerContext) {}
}

/// Log levels of LOG frames (Python's numbers).
pub mod level {
    pub const DEBUG: u32 = 10;
    pub const INFO: u32 = 20;
    pub const WARNING: u32 = 30;
    pub const ERROR: u32 = 40;
    pub const CRITICAL: u32 = 50;
}

/// Why a write to the dispatcher failed.
#[derive(Debug)]
pub enum WorkerError {
    /// The reply pipe is gone (the dispatcher closed it or died).
    ReplyPipe { fd: RawFd, error: io::Error },
    /// The request pipe could not be read.
    RequestPipe { fd: RawFd, error: io::Error },
    /// The dispatcher sent something this runtime cannot accept; treated as fatal.
    Protocol { what: String },
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerError::ReplyPipe { fd, error } => write!(f, "could not write to reply pipe fd {fd}: {error}"),
            WorkerError::RequestPipe { fd, error } => write!(f, "could not read request pipe fd {fd}: {error}"),
            WorkerError::Protocol { what } => write!(f, "protocol violation from dispatcher: {what}"),
        }
    }
}

impl std::error::Error for WorkerError {}

/// Where frames go: the real reply pipe, or memory (unit tests of a worker).
enum Output {
    Fd(RawFd),
    Memory(Vec<u8>),
}

/// A worker's handle on the dispatcher: config, requests in hand, and every send.
pub struct WorkerContext {
    config: ConfigMeta,
    output: Output,
    /// Requests received and not yet finished; reported in every heartbeat.
    in_hand: BTreeSet<u64>,
    /// Requests started as streams (so STREAM_* for them is legal).
    streaming: BTreeSet<u64>,
    /// Streams and sockets the dispatcher asked to pause (FLOW).
    paused: BTreeSet<u64>,
    /// Accepted WebSockets.
    sockets: BTreeSet<u64>,
    credits: u32,
    pub(crate) hello_sent: bool,
    heartbeats_sent: u64,
    pub(crate) last_heartbeat: Instant,
    /// First write error; the main loop exits on it.
    pub(crate) broken: Option<WorkerError>,
    scratch: Vec<u8>,
}

impl fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerContext")
            .field("pool", &self.config.pool)
            .field("worker_id", &self.config.worker_id)
            .field("in_hand", &self.in_hand)
            .field("credits", &self.credits)
            .finish()
    }
}

impl WorkerContext {
    /// A context writing frames to `fd` (fd 4 in a worker process).
    pub fn for_fd(config: ConfigMeta, fd: RawFd) -> WorkerContext {
        WorkerContext::with_output(config, Output::Fd(fd))
    }

    /// A context collecting frames in memory, for unit-testing a worker without a
    /// process: call [`WorkerContext::take_output`] and decode with `ipc::FrameDecoder`.
    pub fn in_memory(config: ConfigMeta) -> WorkerContext {
        WorkerContext::with_output(config, Output::Memory(Vec::new()))
    }

    fn with_output(config: ConfigMeta, output: Output) -> WorkerContext {
        WorkerContext {
            config,
            output,
            in_hand: BTreeSet::new(),
            streaming: BTreeSet::new(),
            paused: BTreeSet::new(),
            sockets: BTreeSet::new(),
            credits: 1,
            hello_sent: false,
            heartbeats_sent: 0,
            last_heartbeat: Instant::now(),
            broken: None,
            scratch: Vec::new(),
        }
    }

    /// Bytes written so far by an [`WorkerContext::in_memory`] context (empty for fds).
    pub fn take_output(&mut self) -> Vec<u8> {
        match &mut self.output {
            Output::Memory(buf) => std::mem::take(buf),
            Output::Fd(_) => Vec::new(),
        }
    }

    pub fn pool(&self) -> &str {
        &self.config.pool
    }
    pub fn worker_id(&self) -> usize {
        self.config.worker_id
    }
    /// The pool's `kwargs` table from the config.
    pub fn kwargs(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.config.kwargs
    }
    pub fn config(&self) -> &ConfigMeta {
        &self.config
    }
    pub(crate) fn set_config(&mut self, config: ConfigMeta) {
        self.config = config;
    }
    /// Requests received and not yet answered.
    pub fn in_hand(&self) -> impl Iterator<Item = u64> + '_ {
        self.in_hand.iter().copied()
    }
    pub fn is_in_hand(&self, id: u64) -> bool {
        self.in_hand.contains(&id)
    }
    /// True while the dispatcher asks to hold STREAM_CHUNKs of stream `id` (FLOW).
    pub fn is_paused(&self, id: u64) -> bool {
        self.paused.contains(&id)
    }
    /// Heartbeats sent since start (by the loop, `heartbeat()` or `keep_alive()`).
    pub fn heartbeats_sent(&self) -> u64 {
        self.heartbeats_sent
    }
    pub fn credits(&self) -> u32 {
        self.credits
    }

    pub(crate) fn accept_request(&mut self, id: u64) {
        self.in_hand.insert(id);
    }
    pub(crate) fn forget(&mut self, id: u64) {
        self.in_hand.remove(&id);
        self.streaming.remove(&id);
        self.sockets.remove(&id);
        self.paused.remove(&id);
    }
    pub(crate) fn set_paused(&mut self, id: u64, paused: bool) {
        if paused && self.streaming.contains(&id) {
            self.paused.insert(id);
        } else {
            self.paused.remove(&id);
        }
    }

    /// Write bytes as they are to the reply pipe. Chaos testing only: anything not a
    /// well-formed frame kills the worker.
    pub(crate) fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if self.broken.is_some() {
            return Err(());
        }
        match &mut self.output {
            Output::Memory(buf) => {
                buf.extend_from_slice(bytes);
                Ok(())
            }
            Output::Fd(fd) => match write_all_fd(*fd, bytes) {
                Ok(()) => Ok(()),
                Err(error) => {
                    self.broken = Some(WorkerError::ReplyPipe { fd: *fd, error });
                    Err(())
                }
            },
        }
    }

    /// Encode one frame and write it whole.
    pub(crate) fn send_frame<T: serde::Serialize>(&mut self, kind: FrameType, id: u64, meta: &T, body: &[u8]) -> bool {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let ok = encode_json(&mut buf, kind, id, meta, body).is_ok() && self.write_raw(&buf).is_ok();
        self.scratch = buf;
        ok
    }

    fn send_empty(&mut self, kind: FrameType, id: u64, body: &[u8]) -> bool {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let ok = encode_frame(&mut buf, kind, id, b"", body).is_ok() && self.write_raw(&buf).is_ok();
        self.scratch = buf;
        ok
    }

    /// Answer request `id`. Returns false when nothing was sent: the request is not in
    /// hand (already answered, streamed, or its client disconnected) or the pipe broke.
    pub fn send_response(&mut self, id: u64, status: u16, headers: Vec<(String, String)>, body: &[u8]) -> bool {
        if !self.in_hand.contains(&id) || self.streaming.contains(&id) {
            return false;
        }
        self.forget(id);
        self.send_frame(FrameType::Response, id, &ResponseMeta { status, headers }, body)
    }

    /// Start streaming the response of request `id`.
    pub fn stream_start(&mut self, id: u64, status: u16, headers: Vec<(String, String)>) -> bool {
        if !self.in_hand.contains(&id) || self.streaming.contains(&id) {
            return false;
        }
        self.streaming.insert(id);
        self.send_frame(FrameType::StreamStart, id, &ResponseMeta { status, headers }, b"")
    }

    /// Send one chunk of a started stream (false when not started or gone).
    pub fn stream_chunk(&mut self, id: u64, data: &[u8]) -> bool {
        if !self.streaming.contains(&id) {
            return false;
        }
        self.send_empty(FrameType::StreamChunk, id, data)
    }

    /// Finish a started stream; the request leaves the hand.
    pub fn stream_end(&mut self, id: u64) -> bool {
        if !self.streaming.contains(&id) {
            return false;
        }
        self.forget(id);
        self.send_empty(FrameType::StreamEnd, id, b"")
    }

    /// Accept WebSocket `id` (called by the runtime with the worker's answer).
    pub(crate) fn ws_accept(&mut self, id: u64, subprotocol: Option<String>) -> bool {
        if !self.in_hand.contains(&id) || self.sockets.contains(&id) {
            return false;
        }
        self.sockets.insert(id);
        self.send_frame(FrameType::WsAccept, id, &WsAcceptMeta { subprotocol, headers: Vec::new() }, b"")
    }

    /// Whether `id` is an open WebSocket of this worker.
    pub fn is_socket(&self, id: u64) -> bool {
        self.sockets.contains(&id)
    }

    /// Send a message on WebSocket `id` (`text` must be UTF-8). False when the socket is
    /// not open (closed by the client, or never accepted) or the pipe broke.
    pub fn ws_send(&mut self, id: u64, text: bool, data: &[u8]) -> bool {
        if !self.sockets.contains(&id) || (text && std::str::from_utf8(data).is_err()) {
            return false;
        }
        self.send_frame(FrameType::WsMessageOut, id, &WsMessageMeta { text }, data)
    }

    /// Close WebSocket `id` with a code and reason, or refuse one not yet accepted. The
    /// socket's credit is free again.
    pub fn ws_close(&mut self, id: u64, code: u16, reason: &str) -> bool {
        if !self.in_hand.contains(&id) {
            return false;
        }
        self.forget(id);
        self.send_frame(FrameType::WsCloseOut, id, &WsCloseMeta { code, reason: reason.to_string() }, b"")
    }

    /// Send a heartbeat now (the loop sends them by itself every `heartbeat_interval`).
    pub fn heartbeat(&mut self) -> bool {
        self.send_heartbeat(Vec::new())
    }

    /// Restart request `id`'s pool timeout now (sends a heartbeat with `extend: [id]`).
    /// Call it between slices of long work; it also resets the stuck clock.
    pub fn keep_alive(&mut self, id: u64) -> bool {
        if !self.in_hand.contains(&id) {
            return false;
        }
        self.send_heartbeat(vec![id])
    }

    pub(crate) fn send_heartbeat(&mut self, extend: Vec<u64>) -> bool {
        let meta = HeartbeatMeta { in_hand: self.in_hand.iter().copied().collect(), extend };
        self.last_heartbeat = Instant::now();
        self.heartbeats_sent += 1;
        self.send_frame(FrameType::Heartbeat, 0, &meta, b"")
    }

    /// A LOG record at `level` (see [`level`]), logged by the dispatcher under this worker's name.
    pub fn log(&mut self, level: u32, msg: &str) -> bool {
        let meta =
            LogMeta { level, name: format!("{}[{}]", self.config.pool, self.config.worker_id), msg: msg.to_string() };
        self.send_frame(FrameType::Log, 0, &meta, b"")
    }

    /// Hand `body` to the pool routing `route` as a fire-and-forget POST.
    pub fn forward(&mut self, route: &str, body: &[u8]) -> bool {
        self.forward_with(route, "POST", None, body)
    }

    /// [`WorkerContext::forward`] with an explicit method and content type.
    pub fn forward_with(&mut self, route: &str, method: &str, content_type: Option<&str>, body: &[u8]) -> bool {
        let meta = ForwardMeta {
            route: route.to_string(),
            method: method.to_string(),
            content_type: content_type.map(str::to_string),
        };
        self.send_frame(FrameType::Forward, 0, &meta, body)
    }

    /// Set how many requests this worker takes at once (0 pauses it). Before HELLO
    /// (in `setup`) this only sets the credits HELLO announces.
    pub fn set_credits(&mut self, credits: u32) -> bool {
        self.credits = credits;
        if !self.hello_sent {
            return true;
        }
        self.send_frame(FrameType::Credit, 0, &CreditMeta { credits }, b"")
    }
}

/// `write(2)` until everything is written, retrying on EINTR. Blocking fd.
pub(crate) fn write_all_fd(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid readable slice for its length; fd is owned by the caller.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if err.kind() == io::ErrorKind::WouldBlock {
                wait_fd(fd, libc::POLLOUT, -1);
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// `poll(2)` one fd for `events`, `timeout_ms` (-1 = forever). Returns revents (0 on timeout).
pub(crate) fn wait_fd(fd: RawFd, events: libc::c_short, timeout_ms: libc::c_int) -> libc::c_short {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: one valid pollfd on the stack.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if n <= 0 { 0 } else { pfd.revents }
}

/// A registered native worker: name → constructor.
type Factory = fn() -> Box<dyn NativeWorker>;

/// Global registry. Filled before the dispatcher starts; forked children inherit a copy.
static REGISTRY: Mutex<Vec<(String, Factory)>> = Mutex::new(Vec::new());

/// Register a native worker under `name` (pool config: `native = "name"`). A later
/// registration of the same name replaces the earlier one. Call before the dispatcher starts.
pub fn register_native(name: &str, factory: fn() -> Box<dyn NativeWorker>) {
    let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    reg.retain(|(n, _)| n != name);
    reg.push((name.to_string(), factory));
}

/// True for a registered name and for the built-ins `echo` and `chaos`.
pub fn is_registered(name: &str) -> bool {
    lookup(name).is_some()
}

pub(crate) fn lookup(name: &str) -> Option<Factory> {
    let reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, f)) = reg.iter().find(|(n, _)| n == name) {
        return Some(*f);
    }
    match name {
        "echo" => Some(super::echo::factory),
        "chaos" => Some(super::chaos::factory),
        _ => None,
    }
}
