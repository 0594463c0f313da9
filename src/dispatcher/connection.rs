//! One client connection: its socket, its request reader with the clocks that bound it,
//! and the in-order response slots that make pipelining work.
//!
//! State is two enums, as in hyper's h1 `Conn`: [`Reading`] says what the client owes us
//! (and by when), [`Writing`] what we owe the client. Every parsed request gets a [`Slot`]
//! at the back of `slots`. Responses may complete out of order (a static file now, a
//! worker reply later), but bytes leave only from the front slot, so clients always see
//! responses in request order.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use super::keys::ReqId;
use super::timers::Armed;
use crate::config::{Limits, ServerConfig};
use crate::http::{Phase, RequestReader};

/// Bytes read from a file per turn when streaming it; also the socket read size.
pub const IO_CHUNK: usize = 64 * 1024;
/// File bodies from this size on go out with `sendfile` (after their head, in a write of
/// its own); smaller ones are read into the head's write, one syscall for both.
const SENDFILE_MIN: u64 = IO_CHUNK as u64;
/// Most bytes one `sendfile` call is asked for: other connections get their turn.
const SENDFILE_CHUNK: usize = 1 << 20;
/// Most unanswered pipelined requests per connection before we stop reading.
pub const MAX_PIPELINE: usize = 32;
/// Most bytes read from one socket per turn: the reader only enforces its limits when
/// polled, and other connections get their turn.
pub const READ_BUDGET: usize = 256 * 1024;
/// What a connection holding nothing may read per turn while the global buffer budget
/// is spent: enough for a request head (a health probe still gets through), too little
/// for many connections to add up.
pub const STARVED_READ: usize = 4096;
/// Bytes buffered for a stream's client at which its worker is asked to pause (FLOW)...
pub const FLOW_PAUSE_AT: usize = 1 << 20;
/// ...and at which it is asked to resume.
pub const FLOW_RESUME_AT: usize = 256 * 1024;

/// A client socket, TCP or Unix.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream {
    /// Write with `MSG_MORE` on TCP: more data follows at once (a file body after its
    /// head), so the kernel does not push a short segment for the head alone.
    fn write_more(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            #[cfg(target_os = "linux")]
            Stream::Tcp(s) => {
                use std::os::fd::AsRawFd;
                // SAFETY: send(2) on the socket we own, from a live slice with its length.
                let n = unsafe {
                    libc::send(s.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_MORE | libc::MSG_NOSIGNAL)
                };
                if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
            }
            #[cfg(not(target_os = "linux"))]
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    /// `sendfile(2)` from `file` at `offset` (advanced by what was sent): the kernel
    /// copies file pages to the socket, nothing passes through user space.
    fn send_file(&mut self, file: &File, offset: &mut u64, count: usize) -> io::Result<usize> {
        let mut off = i64::try_from(*offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let sent = match self {
            Stream::Tcp(s) => nix::sys::sendfile::sendfile64(&*s, file, Some(&mut off), count),
            Stream::Unix(s) => nix::sys::sendfile::sendfile64(&*s, file, Some(&mut off), count),
        }
        .map_err(io::Error::from)?;
        *offset += sent as u64;
        Ok(sent)
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// What the client owes us, and the clock that bounds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Between requests (keep-alive): closed after `keepalive_timeout` once every
    /// response is written.
    Idle { since: Instant },
    /// A request head is arriving: complete by `started + header_timeout`. The clock
    /// starts with the first byte of a head, pipelined leftovers included.
    Head { started: Instant },
    /// A request body is arriving: no gap over `body_timeout`, and on average at least
    /// `body_min_rate` bytes a second after a first `body_timeout` of grace.
    Body { started: Instant, last: Instant, received: u64 },
    /// A WebSocket handshake waits for its worker's answer: no further HTTP request is
    /// read (what follows it may already be WebSocket frames).
    Upgrading,
    /// An accepted WebSocket: `last` is when the client last sent anything (idle clock).
    WebSocket { last: Instant },
    /// The peer closed its sending side.
    PeerClosed,
    /// No further request will be read: the last answer closes the connection.
    Done,
}

/// What we owe the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writing {
    /// Nothing waits on the socket.
    Ready,
    /// The socket is full since `since` (no progress): cut after `write_timeout`.
    Blocked { since: Instant },
}

/// What the socket may still hold for us (sozu's readiness: with edge-triggered epoll the
/// connection, not the kernel, remembers that it is still readable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketRead {
    /// A read came back short or WouldBlock: a new edge comes with new bytes.
    Drained,
    /// We stopped before draining (budget, back-pressure): read again when allowed.
    Pending,
    /// epoll saw the peer's half-close: read to EOF, never stop at a short read.
    HangUp,
}

/// A file still to be sent for a slot.
#[derive(Debug)]
pub struct FileBody {
    pub file: File,
    pub offset: u64,
    pub remaining: u64,
}

/// What happens once `out` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterOut {
    KeepOpen,
    Close,
}

/// How a streamed response is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFraming {
    /// HTTP/1.1: chunked, ends with the last chunk.
    Chunked,
    /// HTTP/1.0: the body ends when the connection closes.
    CloseDelimited,
}

/// How far a slot's response is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Waiting for a worker's answer.
    Waiting,
    /// A worker streams it: chunks are appended as they come.
    Streaming(StreamFraming),
    /// An accepted WebSocket: its frames are appended for as long as it is open.
    Upgraded,
    /// Nothing more will be added: pop once `buf` and `file` are written.
    Done,
}

/// One response position in the pipeline.
#[derive(Debug)]
pub struct Slot {
    /// The pool request answering here; `None` for answers made by the dispatcher.
    pub req: Option<ReqId>,
    /// Bytes ready to be written once this slot is at the front.
    pub buf: Vec<u8>,
    pub file: Option<FileBody>,
    pub fill: Fill,
    /// Close the connection after this response.
    pub close_after: bool,
    /// HEAD request: the head is sent, never a body.
    pub head_only: bool,
}

impl Slot {
    pub fn pending(req: ReqId, head_only: bool) -> Slot {
        Slot { req: Some(req), buf: Vec::new(), file: None, fill: Fill::Waiting, close_after: false, head_only }
    }

    /// A complete answer made here.
    pub fn done(buf: Vec<u8>, close_after: bool) -> Slot {
        Slot { req: None, buf, file: None, fill: Fill::Done, close_after, head_only: false }
    }
}

/// What happened while flushing a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Flush {
    /// All that can be written now is written.
    Idle,
    /// The socket is full: wait for writable.
    Blocked,
    /// Close now: a response said so, or the peer is gone.
    Close,
}

/// What a connection's nearest deadline does when it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Idle keep-alive over, or the client stopped reading: close without a word.
    Close,
    /// The client was too slow sending a request: 408, then close.
    RequestTimeout,
    /// A WebSocket has been quiet for half its idle timeout: ping it.
    WsPing,
    /// A WebSocket has been quiet for its whole idle timeout: close it.
    WsIdle,
}

/// The clocks a connection is held to, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    pub keepalive: Duration,
    pub header: Duration,
    pub body: Duration,
    pub body_min_rate: u64,
    pub write: Duration,
    /// A WebSocket's idle timeout (its pool's `websocket_idle_timeout`).
    pub ws_idle: Duration,
}

impl Clocks {
    pub fn of(s: &ServerConfig) -> Clocks {
        Clocks {
            keepalive: s.keepalive_timeout,
            header: s.header_timeout,
            body: s.body_timeout,
            body_min_rate: super::tuning::body_min_rate(s),
            write: s.write_timeout,
            ws_idle: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
pub struct Conn {
    /// Unique for the life of the process (slab keys are reused): timers carry it.
    pub serial: u64,
    pub stream: Stream,
    pub peer_ip: String,
    pub peer_port: u16,
    pub reader: RequestReader,
    pub reading: Reading,
    pub writing: Writing,
    pub socket: SocketRead,
    pub slots: VecDeque<Slot>,
    out: Vec<u8>,
    out_pos: usize,
    /// Set while reading is held back by us (pipeline depth, unsent output): the client's
    /// clocks stop, since it is waiting for us.
    paused_since: Option<Instant>,
    /// Auth, route and budget were decided for the head whose body is arriving.
    pub head_checked: bool,
    /// A response that closes the connection went into `out`: nothing more is gathered,
    /// and the connection closes once `out` is written.
    then: AfterOut,
    pub last_write: Instant,
    pub interest: Interest,
    pub armed: Armed,
    /// Bytes this connection holds in the global budget, as last accounted.
    pub held: u64,
    /// The WebSocket this connection became, once its handshake was accepted.
    pub ws: Option<Box<WsConn>>,
}

/// An accepted WebSocket on a connection.
#[derive(Debug)]
pub struct WsConn {
    /// The socket's request id (its worker knows it by this id).
    pub id: ReqId,
    pub decoder: crate::websocket::Decoder,
    /// A ping was sent since the client last sent anything.
    pub pinged: bool,
    pub idle: Duration,
}

impl Conn {
    pub fn new(serial: u64, stream: Stream, peer_ip: String, peer_port: u16, limits: Limits, now: Instant) -> Conn {
        Conn {
            serial,
            stream,
            peer_ip,
            peer_port,
            reader: RequestReader::new(limits),
            reading: Reading::Idle { since: now },
            writing: Writing::Ready,
            socket: SocketRead::Pending,
            slots: VecDeque::new(),
            out: Vec::new(),
            out_pos: 0,
            paused_since: None,
            head_checked: false,
            then: AfterOut::KeepOpen,
            last_write: now,
            interest: Interest::READABLE,
            armed: Armed::default(),
            held: 0,
            ws: None,
        }
    }

    /// Whether more requests may come on this connection.
    pub fn open_for_requests(&self) -> bool {
        matches!(self.reading, Reading::Idle { .. } | Reading::Head { .. } | Reading::Body { .. })
    }

    /// Whether the socket is read now: for requests, or for an accepted WebSocket's
    /// frames (while the decoder has room).
    fn reads(&self) -> bool {
        match self.reading {
            Reading::WebSocket { .. } => self.ws.as_ref().is_some_and(|ws| !ws.decoder.full()),
            _ => self.open_for_requests(),
        }
    }

    /// Whether we read from the socket now: not after the last request, and not while
    /// the client has `MAX_PIPELINE` answers pending or `cap` unsent bytes (it must read
    /// before it may send more).
    pub fn wants_read(&self, cap: usize) -> bool {
        self.reads() && self.slots.len() < MAX_PIPELINE && self.unsent() < cap
    }

    /// Record whether reading is held back by us, stopping or restarting the clocks.
    pub fn set_paused(&mut self, paused: bool, now: Instant) {
        match (paused, self.paused_since) {
            (true, None) => self.paused_since = Some(now),
            (false, Some(since)) => {
                self.paused_since = None;
                // The time we made the client wait does not count against it.
                let waited = now.saturating_duration_since(since);
                match &mut self.reading {
                    Reading::Head { started } => *started += waited,
                    Reading::Body { started, last, .. } => {
                        *started += waited;
                        *last = now;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Read until WouldBlock or the budget; bytes go into the request reader.
    /// Returns false when the connection failed and must be dropped.
    pub fn read_available(&mut self, scratch: &mut [u8], limit: usize, now: Instant) -> bool {
        let mut budget = limit;
        while budget > 0 {
            let want = scratch.len().min(budget);
            match self.stream.read(&mut scratch[..want]) {
                Ok(0) => {
                    self.socket = SocketRead::Drained;
                    self.reading = Reading::PeerClosed;
                    return true;
                }
                Ok(n) => {
                    match self.ws.as_mut() {
                        Some(ws) => ws.decoder.push(&scratch[..n]),
                        None => self.reader.push(&scratch[..n]),
                    }
                    budget = budget.saturating_sub(n);
                    match &mut self.reading {
                        Reading::Idle { .. } => self.reading = Reading::Head { started: now },
                        Reading::Body { last, received, .. } => {
                            *last = now;
                            *received += n as u64;
                        }
                        Reading::WebSocket { last } => {
                            *last = now;
                            if let Some(ws) = self.ws.as_mut() {
                                ws.pinged = false;
                            }
                        }
                        _ => {}
                    }
                    if n < want && self.socket != SocketRead::HangUp {
                        // A short read drained the socket: a later write raises a new
                        // edge, so skip the read that would only say WouldBlock.
                        self.socket = SocketRead::Drained;
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.socket = SocketRead::Drained;
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.socket != SocketRead::HangUp {
            self.socket = SocketRead::Pending;
        }
        true
    }

    /// After parsing: align the clocks with where the reader is. `completed`: a request
    /// was taken out, so a head now in progress is a new one (its clock starts now).
    pub fn sync_reading(&mut self, completed: bool, now: Instant) {
        if !self.open_for_requests() {
            return;
        }
        let phase = self.reader.phase();
        self.reading = match (self.reading, phase) {
            (Reading::Idle { since }, Phase::Idle) => Reading::Idle { since },
            (_, Phase::Idle) => Reading::Idle { since: now },
            (Reading::Head { started }, Phase::Head) if !completed => Reading::Head { started },
            (_, Phase::Head) => Reading::Head { started: now },
            (r @ Reading::Body { .. }, Phase::Body) if !completed => r,
            (_, Phase::Body) => {
                self.head_checked = false;
                Reading::Body { started: now, last: now, received: self.reader.body_received() }
            }
        };
        if phase != Phase::Body {
            self.head_checked = false;
        }
    }

    /// The nearest deadline and what it does. Clocks that measure the client stop while
    /// we hold it back (`paused_since`).
    pub fn deadline(&self, c: &Clocks) -> Option<(Instant, Expiry)> {
        let write = match self.writing {
            Writing::Blocked { since } => Some((since + c.write, Expiry::Close)),
            Writing::Ready => None,
        };
        let read = if self.paused_since.is_some() {
            None
        } else {
            match self.reading {
                Reading::Idle { since } if self.slots.is_empty() && self.unsent() == 0 => {
                    Some((since.max(self.last_write) + c.keepalive, Expiry::Close))
                }
                Reading::Head { started } => Some((started + c.header, Expiry::RequestTimeout)),
                Reading::WebSocket { last } => {
                    let idle = self.ws.as_ref().map_or(c.ws_idle, |ws| ws.idle);
                    match self.ws.as_ref().is_some_and(|ws| ws.pinged) {
                        true => Some((last + idle, Expiry::WsIdle)),
                        false => Some((last + idle / 2, Expiry::WsPing)),
                    }
                }
                Reading::Body { started, last, received } => {
                    let gap = last + c.body;
                    let by_rate = match c.body_min_rate {
                        0 => gap,
                        rate => started + c.body + Duration::from_secs_f64(received as f64 / rate as f64),
                    };
                    Some((gap.min(by_rate), Expiry::RequestTimeout))
                }
                _ => None,
            }
        };
        match (read, write) {
            (Some(r), Some(w)) => Some(if w.0 < r.0 { w } else { r }),
            (r, w) => r.or(w),
        }
    }

    /// Find the slot of a pool request.
    pub fn slot_mut(&mut self, req: ReqId) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.req == Some(req))
    }

    /// Bytes buffered for one request's response (to pause or cut slow streams).
    pub fn buffered_for(&self, req: ReqId) -> usize {
        let front = self.slots.front().is_some_and(|s| s.req == Some(req));
        let own = self.slots.iter().find(|s| s.req == Some(req)).map_or(0, |s| s.buf.len());
        if front { own + self.out.len() - self.out_pos } else { own }
    }

    /// Response bytes waiting for the client, in `out` and in the slots.
    pub fn unsent(&self) -> usize {
        self.out.len() - self.out_pos + self.slots.iter().map(|s| s.buf.len()).sum::<usize>()
    }

    /// Bytes this connection makes the dispatcher hold: unsent responses, unparsed input,
    /// and the body being received (a declared Content-Length counts in full from the
    /// head on, so a slow upload is paid for before it arrives).
    pub fn memory(&self) -> u64 {
        let ws = self.ws.as_ref().map_or(0, |ws| ws.decoder.buffered() as u64);
        self.unsent() as u64 + self.reader.buffered() as u64 + self.reader.body_reserved() + ws
    }

    /// Whether output is waiting on the socket.
    pub fn has_unsent_output(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Whether every answer is written and no request can come: close.
    pub fn finished(&self) -> bool {
        self.slots.is_empty() && !self.has_unsent_output() && !self.open_for_requests()
    }

    /// Stop reading requests: the answers already pending are the last ones.
    pub fn no_more_requests(&mut self) {
        if self.open_for_requests() {
            self.reading = Reading::Done;
        }
    }

    /// Write what is ready, front slot first.
    pub fn flush(&mut self, now: Instant) -> Flush {
        loop {
            let closing = match self.gather() {
                Ok(closing) => closing,
                Err(()) => return Flush::Close,
            };
            if self.out_pos >= self.out.len() {
                self.out.clear();
                self.out_pos = 0;
                match self.send_front_file() {
                    Ok(0) => {}
                    Ok(_) => {
                        self.last_write = now;
                        self.writing = Writing::Ready;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if self.writing == Writing::Ready {
                            self.writing = Writing::Blocked { since: now };
                        }
                        return Flush::Blocked;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Flush::Close,
                }
                self.writing = Writing::Ready;
                return if closing { Flush::Close } else { Flush::Idle };
            }
            let file_follows = self.out_pos < self.out.len()
                && self
                    .slots
                    .front()
                    .is_some_and(|s| s.buf.is_empty() && s.file.as_ref().is_some_and(|f| f.remaining >= SENDFILE_MIN));
            let wrote = if file_follows {
                self.stream.write_more(&self.out[self.out_pos..])
            } else {
                self.stream.write(&self.out[self.out_pos..])
            };
            match wrote {
                Ok(0) => return Flush::Close,
                Ok(n) => {
                    self.out_pos += n;
                    self.last_write = now;
                    self.writing = Writing::Ready;
                    if self.out_pos == self.out.len() {
                        self.out.clear();
                        self.out_pos = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.writing == Writing::Ready {
                        self.writing = Writing::Blocked { since: now };
                    }
                    return Flush::Blocked;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Flush::Close,
            }
        }
    }

    /// With `out` written: send the front slot's big file body with `sendfile` (`gather`
    /// leaves those to it). -> bytes sent (0: nothing to send this way). A file that
    /// shrank under its response is an error: its framing can no longer be kept.
    fn send_front_file(&mut self) -> io::Result<usize> {
        let Some(front) = self.slots.front_mut() else { return Ok(0) };
        if !front.buf.is_empty() {
            return Ok(0);
        }
        let Some(body) = front.file.as_mut() else { return Ok(0) };
        let want = usize::try_from(body.remaining).unwrap_or(usize::MAX).min(SENDFILE_CHUNK);
        let sent = self.stream.send_file(&body.file, &mut body.offset, want)?;
        if sent == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank under its response"));
        }
        body.remaining = body.remaining.saturating_sub(sent as u64);
        if body.remaining == 0 {
            front.file = None;
        }
        Ok(sent)
    }

    /// Move what is ready into `out`, front slot first, up to about one chunk: a head and
    /// its body, and pipelined responses, then leave in one write. `Ok(true)`: a response
    /// that closes the connection is in `out` (nothing after it is sent). `Err`: a file
    /// under a response shrank, so its framing can no longer be kept: close now.
    fn gather(&mut self) -> Result<bool, ()> {
        while self.then == AfterOut::KeepOpen && self.out.len() - self.out_pos < IO_CHUNK {
            let Some(front) = self.slots.front_mut() else { break };
            if !front.buf.is_empty() {
                if self.out_pos == self.out.len() {
                    self.out.clear();
                    self.out_pos = 0;
                    std::mem::swap(&mut self.out, &mut front.buf);
                } else {
                    self.out.extend_from_slice(&front.buf);
                    front.buf = Vec::new();
                }
                continue;
            }
            if let Some(body) = front.file.as_mut() {
                if body.remaining >= SENDFILE_MIN {
                    break; // `send_front_file` sends it once `out` is written
                }
                let start = self.out.len();
                let want = usize::try_from(body.remaining).unwrap_or(usize::MAX).min(IO_CHUNK);
                self.out.resize(start + want, 0);
                match body.file.read_at(&mut self.out[start..], body.offset) {
                    Ok(0) | Err(_) => {
                        self.out.truncate(start);
                        return Err(());
                    }
                    Ok(n) => {
                        self.out.truncate(start + n);
                        body.offset += n as u64;
                        body.remaining = body.remaining.saturating_sub(n as u64);
                        if body.remaining == 0 {
                            front.file = None;
                        }
                    }
                }
                continue;
            }
            if front.fill != Fill::Done {
                break; // waiting for a worker, or an open WebSocket
            }
            let close = front.close_after;
            self.slots.pop_front();
            if close {
                // Nothing after a closing answer is sent: later slots are dropped by the
                // caller when it closes.
                self.then = AfterOut::Close;
                self.no_more_requests();
            }
        }
        Ok(self.then == AfterOut::Close)
    }
}
