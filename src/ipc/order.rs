//! The frame-order rules of docs/protocol.md ("Ordering rules") for one worker connection,
//! as a state machine: [`FrameOrder`]. The dispatcher and the conformance kit both feed it
//! every worker → dispatcher frame, so the two cannot disagree on what a worker may send.
//!
//! It also owns the protocol state those rules need: whether HELLO was seen, the worker's
//! credits, which requests it holds, which of those are streaming, and which ones the
//! dispatcher already finished itself (late frames for those are dropped, not violations).
//! Sans-IO: it never writes to a pipe or kills anything; the caller acts on the
//! [`Event`] or [`Violation`] it returns.

use std::collections::VecDeque;

use crate::idmap::IdMap;
use std::fmt;

use super::frame::{Frame, FrameError, FrameType};
use super::message::{
    CreditMeta, ForwardMeta, HeartbeatMeta, HelloMeta, LogMeta, ResponseMeta, WsAcceptMeta, WsCloseMeta, WsMessageMeta,
};

/// Abandoned requests the worker no longer holds, remembered (oldest forgotten first) so
/// their late frames are dropped rather than taken for frames about unknown ids.
pub const MAX_FORGOTTEN: usize = 4096;

/// A valid frame, with its meta parsed. Bodies stay in the [`Frame`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The worker is ready; its initial credits are in the meta (0 = starts paused).
    Hello(HelloMeta),
    /// A log record; `request_id` as sent (0 or any id: not checked).
    Log(LogMeta),
    /// Liveness. `extend`: the ids of the meta's `extend` the worker holds and the
    /// dispatcher has not finished (restart their timeout). `ignored`: ids of `in_hand` or
    /// `extend` the worker does not hold (already answered, finished here, or unknown):
    /// a heartbeat is a snapshot that may race with answers, so these are not violations.
    Heartbeat {
        /// Held ids whose timeout restarts now.
        extend: Vec<u64>,
        /// Ids named but not held.
        ignored: Vec<u64>,
    },
    /// New capacity (0 pauses the worker).
    Credit(u32),
    /// Fire-and-forget request to another pool; the data is the frame body.
    Forward(ForwardMeta),
    /// A complete response for a held request, which is now finished.
    Response {
        /// The request.
        id: u64,
        /// Status (200..=599) and headers.
        meta: ResponseMeta,
    },
    /// A held request's response starts streaming.
    StreamStart {
        /// The request.
        id: u64,
        /// Status (200..=599) and headers.
        meta: ResponseMeta,
    },
    /// A piece of a started stream; the data is the frame body.
    StreamChunk {
        /// The request.
        id: u64,
    },
    /// A stream ended; the request is finished.
    StreamEnd {
        /// The request.
        id: u64,
    },
    /// The worker accepts a WebSocket it was given with `WS_OPEN`.
    WsAccept {
        /// The socket.
        id: u64,
        /// Subprotocol and extra handshake headers.
        meta: WsAcceptMeta,
    },
    /// A message for an accepted socket's client; the data is the frame body (UTF-8 when
    /// `text`).
    WsMessage {
        /// The socket.
        id: u64,
        /// Text or binary.
        text: bool,
    },
    /// The worker closes a socket (`accepted`), or refuses one it was offered.
    WsClose {
        /// The socket.
        id: u64,
        /// Close code and reason.
        meta: WsCloseMeta,
        /// Whether the socket had been accepted.
        accepted: bool,
    },
    /// RESPONSE / STREAM_* / WS_* for a request the dispatcher already finished itself (timed
    /// out, client gone): drop it. `finished`: the worker is done with it (RESPONSE or
    /// STREAM_END), so its credit is free again.
    Late {
        /// The request.
        id: u64,
        /// The frame type.
        kind: FrameType,
        /// Whether this frame ends the request on the worker's side.
        finished: bool,
    },
}

/// A frame the worker must not send now: the worker is killed.
#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    /// A frame other than HELLO or LOG before HELLO.
    BeforeHello(FrameType),
    /// HELLO after HELLO.
    SecondHello,
    /// A dispatcher → worker frame type.
    WrongDirection(FrameType),
    /// The meta does not parse as the frame type's shape.
    BadMeta(FrameError),
    /// RESPONSE / STREAM_* for an id this worker was never given (or that it already
    /// finished itself).
    NotHeld {
        /// The frame type.
        kind: FrameType,
        /// The request id.
        id: u64,
    },
    /// STREAM_CHUNK / STREAM_END for a request that has not started streaming.
    BeforeStreamStart {
        /// The frame type.
        kind: FrameType,
        /// The request id.
        id: u64,
    },
    /// RESPONSE / STREAM_START for a request already streaming.
    AfterStreamStart {
        /// The frame type.
        kind: FrameType,
        /// The request id.
        id: u64,
    },
    /// A frame for the wrong kind of request: STREAM_* for a WebSocket, WS_* for a plain
    /// request, WS_ACCEPT twice, WS_MESSAGE_OUT before WS_ACCEPT, RESPONSE after it.
    WrongKind {
        /// The frame type.
        kind: FrameType,
        /// The request id.
        id: u64,
    },
    /// A text WS_MESSAGE_OUT that is not UTF-8.
    BadText {
        /// The socket.
        id: u64,
    },
    /// A final status outside 200..=599.
    BadStatus {
        /// RESPONSE or STREAM_START.
        kind: FrameType,
        /// The request id.
        id: u64,
        /// The status sent.
        status: u16,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::BeforeHello(k) => write!(f, "{k} before HELLO"),
            Violation::SecondHello => f.write_str("second HELLO"),
            Violation::WrongDirection(k) => write!(f, "{k} is not a worker-to-dispatcher frame"),
            Violation::BadMeta(e) => write!(f, "{e}"),
            Violation::NotHeld { kind, id } => {
                write!(f, "{kind} for request {id}, which this worker does not hold")
            }
            Violation::BeforeStreamStart { kind, id } => write!(f, "{kind} for request {id} before STREAM_START"),
            Violation::AfterStreamStart { kind, id } => write!(f, "{kind} for request {id} after STREAM_START"),
            Violation::WrongKind { kind, id } => write!(f, "{kind} does not fit the state of request {id}"),
            Violation::BadText { id } => write!(f, "text WS_MESSAGE_OUT for socket {id} is not UTF-8"),
            Violation::BadStatus { kind, id, status } => {
                write!(f, "{kind} for request {id} with status {status}, not in 200..=599")
            }
        }
    }
}

impl std::error::Error for Violation {}

impl From<FrameError> for Violation {
    fn from(e: FrameError) -> Violation {
        Violation::BadMeta(e)
    }
}

/// Where an open request is, as the worker's frames moved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A REQUEST, not answered yet.
    Request,
    /// STREAM_START sent.
    Streaming,
    /// A WS_OPEN, not accepted yet.
    SocketOffered,
    /// WS_ACCEPT sent: messages flow.
    Socket,
}

/// What the dispatcher knows about one request it gave the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Given, not finished.
    Open(Phase),
    /// Finished by the dispatcher (timeout, client gone) while the worker still has it:
    /// it keeps its credit until the worker answers or a heartbeat no longer lists it.
    Abandoned,
}

/// One request the worker holds: when it was given (the order the worker starts them in)
/// and its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    seq: u64,
    held: Held,
}

/// What a dead worker leaves: requests it may have started (they fail with it) and
/// prefetched ones it cannot have started (they can go to another worker).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Orphans {
    /// Open requests within the worker's credits, oldest given first.
    pub started: Vec<u64>,
    /// Open requests given beyond its credits (prefetch), oldest given first.
    pub unstarted: Vec<u64>,
}

/// Per-worker-connection protocol state and the frame-order rules.
#[derive(Debug, Default)]
pub struct FrameOrder {
    hello: bool,
    credits: u32,
    /// HELLO `prefetch`: requests the worker queues beyond its credits, unstarted. It
    /// starts requests in the order given, at most `credits` at a time.
    prefetch: u32,
    /// Requests given and not finished by the worker (open or abandoned).
    held: IdMap<u64, Entry>,
    /// Sequence number of the next request given.
    next_seq: u64,
    /// Abandoned requests a heartbeat showed the worker dropped, oldest first: no credit,
    /// but a late frame for them is still dropped, not a violation.
    forgotten: VecDeque<u64>,
}

impl FrameOrder {
    /// A worker that has sent nothing yet.
    pub fn new() -> FrameOrder {
        FrameOrder::default()
    }

    /// Whether HELLO was received (requests may be given).
    pub fn ready(&self) -> bool {
        self.hello
    }

    /// The worker's announced capacity (HELLO, then CREDIT).
    pub fn credits(&self) -> u32 {
        self.credits
    }

    /// Requests the worker may still be given now: credits minus every request it holds,
    /// abandoned ones included (it is still busy with them).
    pub fn free_credits(&self) -> usize {
        (self.credits as usize).saturating_sub(self.held.len())
    }

    /// Requests the worker may be given to queue (HELLO `prefetch`) once its credits are
    /// taken; none while it is paused (credits 0).
    pub fn free_prefetch(&self) -> usize {
        if self.credits == 0 {
            return 0;
        }
        (self.credits as usize + self.prefetch as usize).saturating_sub(self.held.len())
    }

    /// A REQUEST for `id` was handed to the worker. Ids are unique per dispatcher, so
    /// giving a held id again is the caller's bug; it is ignored.
    pub fn give(&mut self, id: u64) {
        self.forgotten.retain(|&x| x != id);
        let seq = self.bump();
        self.held.entry(id).or_insert(Entry { seq, held: Held::Open(Phase::Request) });
    }

    /// A WS_OPEN for `id` was handed to the worker.
    pub fn give_socket(&mut self, id: u64) {
        self.forgotten.retain(|&x| x != id);
        let seq = self.bump();
        self.held.entry(id).or_insert(Entry { seq, held: Held::Open(Phase::SocketOffered) });
    }

    /// Give the worker no more prefetch than `max` (the pool's `prefetch`), whatever its
    /// HELLO offered.
    pub fn limit_prefetch(&mut self, max: u32) {
        self.prefetch = self.prefetch.min(max);
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Whether the worker holds `id` and the dispatcher has not finished it.
    pub fn holds(&self, id: u64) -> bool {
        matches!(self.held.get(&id), Some(Entry { held: Held::Open(_), .. }))
    }

    /// Whether `id` is held and streaming, or an accepted socket (FLOW applies to it).
    pub fn is_streaming(&self, id: u64) -> bool {
        matches!(self.held.get(&id), Some(Entry { held: Held::Open(Phase::Streaming | Phase::Socket), .. }))
    }

    /// Open requests (held, not finished by the dispatcher), in no particular order.
    pub fn open(&self) -> impl Iterator<Item = u64> + '_ {
        self.held.iter().filter(|(_, e)| matches!(e.held, Held::Open(_))).map(|(&id, _)| id)
    }

    /// Requests the worker holds, abandoned ones included.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// The dispatcher finished `id` itself (timeout, client gone, stream cut). Returns
    /// true when the worker held it open, i.e. a DISCONNECT should be sent. Later frames
    /// for it are [`Event::Late`].
    pub fn abandon(&mut self, id: u64) -> bool {
        match self.held.get_mut(&id) {
            Some(e) if matches!(e.held, Held::Open(_)) => {
                e.held = Held::Abandoned;
                true
            }
            _ => false,
        }
    }

    /// The worker is gone: the open requests it held, leaving nothing held. It starts
    /// requests in the order given and holds at most `credits` started ones (abandoned
    /// ones included: it may still be busy with them), so the first `credits` held in
    /// that order are the ones it may have started; the rest were queued unstarted.
    pub fn take_open(&mut self) -> Orphans {
        let mut held: Vec<(u64, Entry)> = self.held.drain().collect();
        held.sort_unstable_by_key(|(_, e)| e.seq);
        self.forgotten.clear();
        let mut orphans = Orphans::default();
        for (i, (id, e)) in held.into_iter().enumerate() {
            if !matches!(e.held, Held::Open(_)) {
                continue;
            }
            // A paused worker (credits 0) may still be busy with deferred requests: with
            // nothing to go by, everything counts as started.
            if self.prefetch == 0 || self.credits == 0 || i < self.credits as usize {
                orphans.started.push(id);
            } else {
                orphans.unstarted.push(id);
            }
        }
        orphans
    }

    /// Check one worker → dispatcher frame against the rules and apply it.
    pub fn check(&mut self, frame: &Frame) -> Result<Event, Violation> {
        let kind = frame.kind;
        if !self.hello && !matches!(kind, FrameType::Hello | FrameType::Log) {
            // Dispatcher → worker types are reported as such even before HELLO.
            return Err(if is_worker_frame(kind) {
                Violation::BeforeHello(kind)
            } else {
                Violation::WrongDirection(kind)
            });
        }
        match kind {
            FrameType::Hello => {
                if self.hello {
                    return Err(Violation::SecondHello);
                }
                let meta: HelloMeta = frame.meta_json()?;
                self.hello = true;
                self.credits = meta.credits;
                self.prefetch = meta.prefetch;
                Ok(Event::Hello(meta))
            }
            FrameType::Log => Ok(Event::Log(frame.meta_json()?)),
            FrameType::Heartbeat => {
                let meta: HeartbeatMeta = frame.meta_json()?;
                // Abandoned requests the worker no longer lists free their credit; they
                // are remembered in case a reply is already on its way.
                let dropped: Vec<u64> = self
                    .held
                    .iter()
                    .filter(|(id, e)| e.held == Held::Abandoned && !meta.in_hand.contains(id))
                    .map(|(&id, _)| id)
                    .collect();
                for id in dropped {
                    self.held.remove(&id);
                    self.remember(id);
                }
                let extend = meta.extend.iter().copied().filter(|&id| self.holds(id)).collect();
                let ignored = meta.in_hand.iter().chain(&meta.extend).copied().filter(|id| !self.held.contains_key(id));
                let mut ignored: Vec<u64> = ignored.collect();
                ignored.dedup();
                Ok(Event::Heartbeat { extend, ignored })
            }
            FrameType::Credit => {
                let meta: CreditMeta = frame.meta_json()?;
                self.credits = meta.credits;
                Ok(Event::Credit(meta.credits))
            }
            FrameType::Forward => Ok(Event::Forward(frame.meta_json()?)),
            FrameType::Response
            | FrameType::StreamStart
            | FrameType::StreamChunk
            | FrameType::StreamEnd
            | FrameType::WsAccept
            | FrameType::WsMessageOut
            | FrameType::WsCloseOut => self.check_answer(frame),
            FrameType::Config
            | FrameType::Request
            | FrameType::Stop
            | FrameType::Disconnect
            | FrameType::Flow
            | FrameType::WsOpen
            | FrameType::WsMessage
            | FrameType::WsClose => Err(Violation::WrongDirection(kind)),
        }
    }

    fn check_answer(&mut self, frame: &Frame) -> Result<Event, Violation> {
        let (kind, id) = (frame.kind, frame.request_id);
        let finishes = matches!(kind, FrameType::Response | FrameType::StreamEnd | FrameType::WsCloseOut);
        let phase = match self.held.get(&id).map(|e| e.held) {
            Some(Held::Open(phase)) => phase,
            Some(Held::Abandoned) => {
                // Finished here already: dropped unchecked (docs/protocol.md).
                if finishes {
                    self.held.remove(&id);
                    self.remember(id);
                }
                return Ok(Event::Late { id, kind, finished: finishes });
            }
            None if self.forgotten.contains(&id) => return Ok(Event::Late { id, kind, finished: false }),
            None => return Err(Violation::NotHeld { kind, id }),
        };
        // Checked before the state changes: on a violation the request is still held, so
        // the caller fails it as the dead worker's (500), not as a timeout later.
        let (event, next) = match (kind, phase) {
            (FrameType::Response | FrameType::StreamStart, Phase::Streaming) => {
                return Err(Violation::AfterStreamStart { kind, id });
            }
            (FrameType::StreamChunk | FrameType::StreamEnd, Phase::Request) => {
                return Err(Violation::BeforeStreamStart { kind, id });
            }
            (FrameType::Response, Phase::Request | Phase::SocketOffered) | (FrameType::StreamStart, Phase::Request) => {
                let meta: ResponseMeta = frame.meta_json()?;
                // 1xx are interim (a final 1xx would desynchronise the client), and
                // RFC 9110 §15 makes 600 and above invalid on the wire.
                if !(200..=599).contains(&meta.status) {
                    return Err(Violation::BadStatus { kind, id, status: meta.status });
                }
                if kind == FrameType::Response {
                    (Event::Response { id, meta }, None)
                } else {
                    (Event::StreamStart { id, meta }, Some(Phase::Streaming))
                }
            }
            (FrameType::StreamChunk, Phase::Streaming) => (Event::StreamChunk { id }, Some(Phase::Streaming)),
            (FrameType::StreamEnd, Phase::Streaming) => (Event::StreamEnd { id }, None),
            (FrameType::WsAccept, Phase::SocketOffered) => {
                (Event::WsAccept { id, meta: frame.meta_json()? }, Some(Phase::Socket))
            }
            (FrameType::WsMessageOut, Phase::Socket) => {
                let meta: WsMessageMeta = frame.meta_json()?;
                if meta.text && std::str::from_utf8(&frame.body).is_err() {
                    return Err(Violation::BadText { id });
                }
                (Event::WsMessage { id, text: meta.text }, Some(Phase::Socket))
            }
            (FrameType::WsCloseOut, Phase::SocketOffered | Phase::Socket) => {
                let meta: WsCloseMeta = frame.meta_json()?;
                (Event::WsClose { id, meta, accepted: phase == Phase::Socket }, None)
            }
            _ => return Err(Violation::WrongKind { kind, id }),
        };
        match next {
            None => {
                self.held.remove(&id);
            }
            Some(p) => {
                if let Some(e) = self.held.get_mut(&id) {
                    e.held = Held::Open(p);
                }
            }
        }
        Ok(event)
    }

    fn remember(&mut self, id: u64) {
        if self.forgotten.len() >= MAX_FORGOTTEN {
            self.forgotten.pop_front();
        }
        self.forgotten.push_back(id);
    }
}

/// Whether a frame type travels worker → dispatcher.
fn is_worker_frame(kind: FrameType) -> bool {
    (kind as u8) >= 16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: FrameType, id: u64, meta: &str) -> Frame {
        Frame { kind, request_id: id, meta: meta.as_bytes().to_vec(), body: Vec::new() }
    }
    fn hello(credits: u32) -> Frame {
        frame(FrameType::Hello, 0, &format!(r#"{{"pid":1,"credits":{credits}}}"#))
    }
    fn response(id: u64, status: u16) -> Frame {
        frame(FrameType::Response, id, &format!(r#"{{"status":{status}}}"#))
    }
    fn start(id: u64) -> Frame {
        frame(FrameType::StreamStart, id, r#"{"status":200}"#)
    }
    fn chunk(id: u64) -> Frame {
        frame(FrameType::StreamChunk, id, "")
    }
    fn end(id: u64) -> Frame {
        frame(FrameType::StreamEnd, id, "")
    }
    fn heartbeat(in_hand: &[u64], extend: &[u64]) -> Frame {
        frame(FrameType::Heartbeat, 0, &serde_json::json!({"in_hand": in_hand, "extend": extend}).to_string())
    }
    fn log() -> Frame {
        frame(FrameType::Log, 0, r#"{"level":20,"msg":"m"}"#)
    }
    fn ready(credits: u32) -> FrameOrder {
        let mut o = FrameOrder::new();
        assert!(matches!(o.check(&hello(credits)), Ok(Event::Hello(_))));
        o
    }

    #[test]
    fn only_log_before_hello() {
        let mut o = FrameOrder::new();
        assert!(!o.ready());
        assert!(matches!(o.check(&log()), Ok(Event::Log(_))));
        for f in [heartbeat(&[], &[]), frame(FrameType::Credit, 0, r#"{"credits":1}"#), response(1, 200), end(1)] {
            assert_eq!(o.check(&f), Err(Violation::BeforeHello(f.kind)), "{:?}", f.kind);
        }
        let fwd = frame(FrameType::Forward, 0, r#"{"route":"/x"}"#);
        assert_eq!(o.check(&fwd), Err(Violation::BeforeHello(FrameType::Forward)));
        assert!(matches!(o.check(&hello(2)), Ok(Event::Hello(HelloMeta { credits: 2, .. }))));
        assert!(o.ready());
        assert!(matches!(o.check(&log()), Ok(Event::Log(_))));
    }

    #[test]
    fn hello_once_and_zero_credits_is_a_paused_start() {
        let mut o = ready(0);
        assert_eq!((o.credits(), o.free_credits()), (0, 0));
        assert_eq!(o.check(&hello(1)), Err(Violation::SecondHello));
        assert_eq!(o.check(&frame(FrameType::Credit, 0, r#"{"credits":3}"#)), Ok(Event::Credit(3)));
        assert_eq!(o.free_credits(), 3);
        assert_eq!(o.check(&frame(FrameType::Credit, 0, r#"{"credits":0}"#)), Ok(Event::Credit(0)));
        assert_eq!(o.free_credits(), 0);
    }

    #[test]
    fn dispatcher_frames_from_a_worker_are_violations() {
        for kind in [FrameType::Config, FrameType::Request, FrameType::Stop, FrameType::Disconnect, FrameType::Flow] {
            assert_eq!(FrameOrder::new().check(&frame(kind, 0, "")), Err(Violation::WrongDirection(kind)));
            assert_eq!(ready(1).check(&frame(kind, 0, "")), Err(Violation::WrongDirection(kind)));
        }
    }

    #[test]
    fn bad_meta_is_a_violation() {
        let mut o = FrameOrder::new();
        assert!(matches!(o.check(&frame(FrameType::Hello, 0, "")), Err(Violation::BadMeta(_))));
        assert!(matches!(o.check(&frame(FrameType::Log, 0, "[]")), Err(Violation::BadMeta(_))));
        let mut o = ready(1);
        o.give(1);
        for f in [
            frame(FrameType::Heartbeat, 0, r#"{"in_hand":"x"}"#),
            frame(FrameType::Credit, 0, r#"{"credits":-1}"#),
            frame(FrameType::Forward, 0, "{}"),
            frame(FrameType::Response, 1, r#"{"status":"200"}"#),
        ] {
            assert!(matches!(o.check(&f), Err(Violation::BadMeta(_))), "{:?}", f.kind);
        }
        assert!(o.holds(1), "a bad RESPONSE leaves the request held");
    }

    #[test]
    fn answers_only_for_held_requests() {
        let mut o = ready(2);
        assert_eq!(o.check(&response(5, 200)), Err(Violation::NotHeld { kind: FrameType::Response, id: 5 }));
        o.give(5);
        assert_eq!((o.holds(5), o.free_credits()), (true, 1));
        assert!(matches!(o.check(&response(5, 200)), Ok(Event::Response { id: 5, .. })));
        assert_eq!((o.holds(5), o.free_credits()), (false, 2));
        // Answered once: a second answer is about a request it no longer holds.
        assert_eq!(o.check(&response(5, 200)), Err(Violation::NotHeld { kind: FrameType::Response, id: 5 }));
        assert_eq!(o.check(&chunk(6)), Err(Violation::NotHeld { kind: FrameType::StreamChunk, id: 6 }));
    }

    #[test]
    fn status_must_be_final() {
        let mut o = ready(4);
        for (id, status) in [(1, 100), (2, 199), (3, 600)] {
            o.give(id);
            assert_eq!(
                o.check(&response(id, status)),
                Err(Violation::BadStatus { kind: FrameType::Response, id, status })
            );
            assert!(o.holds(id));
        }
        o.give(4);
        let f = frame(FrameType::StreamStart, 4, r#"{"status":101}"#);
        assert_eq!(o.check(&f), Err(Violation::BadStatus { kind: FrameType::StreamStart, id: 4, status: 101 }));
        assert!(matches!(o.check(&response(4, 599)), Ok(Event::Response { .. })));
    }

    #[test]
    fn stream_order() {
        let mut o = ready(1);
        o.give(7);
        assert_eq!(o.check(&chunk(7)), Err(Violation::BeforeStreamStart { kind: FrameType::StreamChunk, id: 7 }));
        assert_eq!(o.check(&end(7)), Err(Violation::BeforeStreamStart { kind: FrameType::StreamEnd, id: 7 }));
        assert!(matches!(o.check(&start(7)), Ok(Event::StreamStart { id: 7, .. })));
        assert!(o.is_streaming(7));
        assert_eq!(o.check(&start(7)), Err(Violation::AfterStreamStart { kind: FrameType::StreamStart, id: 7 }));
        assert_eq!(o.check(&response(7, 200)), Err(Violation::AfterStreamStart { kind: FrameType::Response, id: 7 }));
        assert_eq!(o.check(&chunk(7)), Ok(Event::StreamChunk { id: 7 }));
        assert_eq!(o.free_credits(), 0);
        assert_eq!(o.check(&end(7)), Ok(Event::StreamEnd { id: 7 }));
        assert!(!o.holds(7) && !o.is_streaming(7));
        assert_eq!(o.free_credits(), 1);
        assert_eq!(o.check(&chunk(7)), Err(Violation::NotHeld { kind: FrameType::StreamChunk, id: 7 }));
    }

    #[test]
    fn answers_in_any_order() {
        let mut o = ready(3);
        for id in [1, 2, 3] {
            o.give(id);
        }
        assert!(o.check(&start(2)).is_ok());
        assert!(o.check(&response(3, 200)).is_ok());
        assert!(o.check(&chunk(2)).is_ok());
        assert!(o.check(&response(1, 204)).is_ok());
        assert!(o.check(&end(2)).is_ok());
        assert_eq!(o.held_count(), 0);
    }

    #[test]
    fn late_frames_for_abandoned_requests_are_dropped() {
        let mut o = ready(2);
        o.give(1);
        o.give(2);
        assert!(o.check(&start(2)).is_ok());
        assert!(o.abandon(1) && o.abandon(2));
        assert!(!o.abandon(1), "already abandoned");
        assert!(!o.abandon(99), "never held");
        assert!(!o.holds(1) && !o.is_streaming(2));
        // Still busy with them: their credits stay taken.
        assert_eq!(o.free_credits(), 0);
        // Any frame for them, in any order, is dropped; the finishing one frees the credit.
        assert_eq!(o.check(&chunk(1)), Ok(Event::Late { id: 1, kind: FrameType::StreamChunk, finished: false }));
        assert_eq!(o.check(&chunk(2)), Ok(Event::Late { id: 2, kind: FrameType::StreamChunk, finished: false }));
        assert_eq!(o.check(&response(1, 700)), Ok(Event::Late { id: 1, kind: FrameType::Response, finished: true }));
        assert_eq!(o.free_credits(), 1);
        assert_eq!(o.check(&end(2)), Ok(Event::Late { id: 2, kind: FrameType::StreamEnd, finished: true }));
        assert_eq!(o.free_credits(), 2);
        // After the finishing frame, more frames for it are still just late.
        assert_eq!(o.check(&chunk(2)), Ok(Event::Late { id: 2, kind: FrameType::StreamChunk, finished: false }));
    }

    #[test]
    fn heartbeat_frees_abandoned_requests_the_worker_dropped() {
        let mut o = ready(2);
        o.give(1);
        o.give(2);
        o.abandon(1);
        o.abandon(2);
        // Still listed: still busy.
        assert_eq!(o.check(&heartbeat(&[1, 2], &[])), Ok(Event::Heartbeat { extend: vec![], ignored: vec![] }));
        assert_eq!(o.free_credits(), 0);
        // No longer listed: credit free, a late reply is still dropped.
        assert!(o.check(&heartbeat(&[2], &[])).is_ok());
        assert_eq!(o.free_credits(), 1);
        assert_eq!(o.check(&response(1, 200)), Ok(Event::Late { id: 1, kind: FrameType::Response, finished: false }));
    }

    #[test]
    fn heartbeat_extends_only_held_requests_and_tolerates_unknown_ids() {
        let mut o = ready(3);
        o.give(1);
        o.give(2);
        o.abandon(2);
        let ev = o.check(&heartbeat(&[1, 2, 8], &[1, 2, 9]));
        assert_eq!(ev, Ok(Event::Heartbeat { extend: vec![1], ignored: vec![8, 9] }));
        assert!(o.holds(1));
    }

    #[test]
    fn log_may_name_any_request() {
        let mut o = ready(1);
        assert!(matches!(o.check(&frame(FrameType::Log, 12345, r#"{"level":40,"msg":"x"}"#)), Ok(Event::Log(_))));
    }

    #[test]
    fn take_open_returns_the_victims() {
        let mut o = ready(3);
        o.give(1);
        o.give(2);
        o.give(3);
        o.abandon(3);
        let orphans = o.take_open();
        assert_eq!(orphans, Orphans { started: vec![1, 2], unstarted: vec![] });
        assert_eq!(o.held_count(), 0);
        let mut open: Vec<u64> = o.open().collect();
        open.sort_unstable();
        assert!(open.is_empty());
    }

    fn hello_prefetch(credits: u32, prefetch: u32) -> FrameOrder {
        let mut o = FrameOrder::new();
        let meta = format!(r#"{{"pid":1,"credits":{credits},"prefetch":{prefetch}}}"#);
        assert!(matches!(o.check(&frame(FrameType::Hello, 0, &meta)), Ok(Event::Hello(_))));
        o
    }

    #[test]
    fn prefetch_is_room_beyond_the_credits_and_none_while_paused() {
        let mut o = hello_prefetch(1, 2);
        assert_eq!((o.free_credits(), o.free_prefetch()), (1, 3));
        o.give(1);
        assert_eq!((o.free_credits(), o.free_prefetch()), (0, 2));
        o.give(2);
        o.give(3);
        assert_eq!(o.free_prefetch(), 0);
        assert_eq!(o.check(&frame(FrameType::Credit, 0, r#"{"credits":0}"#)), Ok(Event::Credit(0)));
        assert_eq!(o.free_prefetch(), 0);
        assert_eq!(ready(4).free_prefetch(), 4, "without prefetch it is the free credits");
    }

    #[test]
    fn a_dead_worker_started_only_its_credits_worth_in_the_order_given() {
        let mut o = hello_prefetch(1, 3);
        // Given 9, 4, 7 in that order: the worker started 9 only.
        o.give(9);
        o.give(4);
        o.give(7);
        assert_eq!(o.take_open(), Orphans { started: vec![9], unstarted: vec![4, 7] });

        // A deferred request raised its credits to 2; an abandoned one still counts.
        let mut o = hello_prefetch(1, 3);
        o.give(1);
        o.give(2);
        o.give(3);
        o.give(4);
        assert_eq!(o.check(&frame(FrameType::Credit, 0, r#"{"credits":2}"#)), Ok(Event::Credit(2)));
        o.abandon(1);
        assert_eq!(o.take_open(), Orphans { started: vec![2], unstarted: vec![3, 4] });

        // Paused: nothing tells what it started, so everything did.
        let mut o = hello_prefetch(1, 3);
        o.give(1);
        o.give(2);
        assert_eq!(o.check(&frame(FrameType::Credit, 0, r#"{"credits":0}"#)), Ok(Event::Credit(0)));
        assert_eq!(o.take_open(), Orphans { started: vec![1, 2], unstarted: vec![] });
    }

    #[test]
    fn forgotten_ids_are_bounded() {
        let mut o = ready(1);
        for id in 0..(MAX_FORGOTTEN as u64 + 10) {
            o.give(id);
            o.abandon(id);
            assert!(o.check(&response(id, 200)).is_ok());
        }
        assert_eq!(o.forgotten.len(), MAX_FORGOTTEN);
        // The oldest are forgotten for good: a frame for them is about an unknown id.
        assert!(matches!(o.check(&response(0, 200)), Err(Violation::NotHeld { .. })));
        assert!(matches!(o.check(&response(MAX_FORGOTTEN as u64 + 9, 200)), Ok(Event::Late { .. })));
    }

    #[test]
    fn violations_read_well() {
        assert_eq!(Violation::BeforeHello(FrameType::Heartbeat).to_string(), "HEARTBEAT before HELLO");
        assert_eq!(
            Violation::NotHeld { kind: FrameType::Response, id: 3 }.to_string(),
            "RESPONSE for request 3, which this worker does not hold"
        );
        assert_eq!(
            Violation::BadStatus { kind: FrameType::Response, id: 3, status: 99 }.to_string(),
            "RESPONSE for request 3 with status 99, not in 200..=599"
        );
        assert_eq!(Violation::WrongDirection(FrameType::Stop).to_string(), "STOP is not a worker-to-dispatcher frame");
    }
}
