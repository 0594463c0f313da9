//! One client connection: its socket, request reader, and the in-order response slots
//! that make pipelining work.
//!
//! Every parsed request gets a [`Slot`] at the back of `slots`. Responses may complete
//! out of order (a static file now, a worker reply later), but bytes leave only from the
//! front slot, so clients always see responses in request order.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::config::Limits;
use crate::http::RequestReader;

/// Bytes read from a file per turn when streaming it; also the socket read size.
pub const IO_CHUNK: usize = 64 * 1024;
/// Most unanswered pipelined requests per connection before we stop reading.
pub const MAX_PIPELINE: usize = 32;
/// Output buffered for a connection before we stop reading from it.
pub const MAX_BUFFERED_OUT: usize = 1 << 20;
/// Most bytes read from one socket before the reader parses them.
pub const READ_BUDGET: usize = 256 * 1024;
/// Bytes buffered for a stream's client at which its worker is asked to pause (FLOW)...
pub const FLOW_PAUSE_AT: usize = 1 << 20;
/// ...and at which it is asked to resume.
pub const FLOW_RESUME_AT: usize = 256 * 1024;
/// Most bytes a stream may buffer for a slow client before it is cut.
pub const MAX_STREAM_BUFFER: usize = 8 << 20;

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

/// A file still to be sent for a slot.
#[derive(Debug)]
pub struct FileBody {
    pub file: File,
    pub offset: u64,
    pub remaining: u64,
}

/// What a streamed response still needs at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFraming {
    /// HTTP/1.1: chunked, ends with the last chunk.
    Chunked,
    /// HTTP/1.0: the body ends when the connection closes.
    CloseDelimited,
}

/// One response position in the pipeline.
#[derive(Debug)]
pub struct Slot {
    /// Request id when the response comes from a pool; 0 for answers made here.
    pub req_id: u64,
    /// Bytes ready to be written once this slot is at the front.
    pub buf: Vec<u8>,
    pub file: Option<FileBody>,
    /// Nothing more will be added: pop once `buf` and `file` are written.
    pub done: bool,
    /// Close the connection after this response.
    pub close_after: bool,
    /// Set while a worker streams this response.
    pub stream: Option<StreamFraming>,
    /// HEAD request: the head is sent, never a body.
    pub head_only: bool,
}

impl Slot {
    pub fn pending(req_id: u64, head_only: bool) -> Slot {
        Slot { req_id, buf: Vec::new(), file: None, done: false, close_after: false, stream: None, head_only }
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

#[derive(Debug)]
pub struct Conn {
    pub stream: Stream,
    pub peer_ip: String,
    pub peer_port: u16,
    pub reader: RequestReader,
    pub slots: VecDeque<Slot>,
    out: Vec<u8>,
    out_pos: usize,
    /// The socket may have more to read (we stopped early for back-pressure).
    pub read_pending: bool,
    /// The peer closed its sending side.
    pub peer_closed: bool,
    /// Set when no further request will be read (close after the last slot).
    pub no_more_requests: bool,
    /// A response that closes the connection is in `out`: close once it is written.
    close_when_flushed: bool,
    /// epoll reported the peer's half-close: read until EOF, never stop at a short read.
    pub hangup_seen: bool,
    pub last_read: Instant,
    pub last_write: Instant,
    /// When the first byte of the request head now being read arrived.
    pub head_started: Option<Instant>,
    pub interest: Interest,
}

impl Conn {
    pub fn new(stream: Stream, peer_ip: String, peer_port: u16, limits: Limits, now: Instant) -> Conn {
        Conn {
            stream,
            peer_ip,
            peer_port,
            reader: RequestReader::new(limits),
            slots: VecDeque::new(),
            out: Vec::new(),
            out_pos: 0,
            read_pending: true,
            peer_closed: false,
            no_more_requests: false,
            close_when_flushed: false,
            hangup_seen: false,
            last_read: now,
            last_write: now,
            head_started: None,
            interest: Interest::READABLE,
        }
    }

    /// Whether we should read more requests now (back-pressure on pipelining and output).
    pub fn wants_read(&self) -> bool {
        !self.no_more_requests
            && !self.peer_closed
            && self.slots.len() < MAX_PIPELINE
            && self.out.len() - self.out_pos < MAX_BUFFERED_OUT
    }

    /// Read until WouldBlock or back-pressure; bytes go into the request reader.
    /// Returns false when the connection failed and must be dropped.
    pub fn read_available(&mut self, scratch: &mut [u8], now: Instant) -> bool {
        // Parse between reads: the reader only enforces its limits when polled, so bytes
        // read in one go are bounded here.
        let mut budget = READ_BUDGET;
        while self.wants_read() && budget > 0 {
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.peer_closed = true;
                    self.read_pending = false;
                    return true;
                }
                Ok(n) => {
                    if self.head_started.is_none() && matches!(self.reader.phase(), crate::http::Phase::Idle) {
                        self.head_started = Some(now);
                    }
                    self.reader.push(&scratch[..n]);
                    self.last_read = now;
                    budget = budget.saturating_sub(n);
                    if n < scratch.len() && !self.hangup_seen {
                        // A short read drained the socket: with edge-triggered epoll, more
                        // data arriving later raises a new event, so skip the read that
                        // would only say WouldBlock.
                        self.read_pending = false;
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_pending = false;
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        // Stopped for back-pressure: there may be more to read later.
        self.read_pending = true;
        true
    }

    /// Find the slot of a pool request.
    pub fn slot_mut(&mut self, req_id: u64) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.req_id == req_id && req_id != 0)
    }

    /// Bytes buffered for a slot (to cap streams to slow clients).
    pub fn buffered_for(&self, req_id: u64) -> usize {
        let front = self.slots.front().is_some_and(|s| s.req_id == req_id);
        let own = self.slots.iter().find(|s| s.req_id == req_id).map_or(0, |s| s.buf.len());
        if front { own + self.out.len() - self.out_pos } else { own }
    }

    /// Write what is ready, front slot first.
    pub fn flush(&mut self, now: Instant) -> Flush {
        loop {
            if let Some(flush) = self.gather() {
                return flush;
            }
            if self.out_pos >= self.out.len() {
                self.out.clear();
                self.out_pos = 0;
                return if self.close_when_flushed { Flush::Close } else { Flush::Idle };
            }
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Flush::Close,
                Ok(n) => {
                    self.out_pos += n;
                    self.last_write = now;
                    if self.out_pos == self.out.len() {
                        self.out.clear();
                        self.out_pos = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Flush::Close,
            }
        }
    }

    /// Move what is ready into `out`, front slot first, up to about one chunk: a head and
    /// its body, and pipelined responses, then leave in one write. `Some` = close now (a
    /// file under a response shrank, so its framing can no longer be kept).
    fn gather(&mut self) -> Option<Flush> {
        while !self.close_when_flushed && self.out.len() - self.out_pos < IO_CHUNK {
            let Some(front) = self.slots.front_mut() else { break };
            if !front.buf.is_empty() {
                if self.out_pos == self.out.len() {
                    self.out.clear();
                    self.out_pos = 0;
                    std::mem::swap(&mut self.out, &mut front.buf);
                } else {
                    self.out.extend_from_slice(&front.buf);
                    front.buf.clear();
                }
                continue;
            }
            if let Some(body) = front.file.as_mut() {
                let start = self.out.len();
                let want = (body.remaining as usize).min(IO_CHUNK);
                self.out.resize(start + want, 0);
                match body.file.read_at(&mut self.out[start..], body.offset) {
                    Ok(0) | Err(_) => {
                        self.out.truncate(start);
                        return Some(Flush::Close);
                    }
                    Ok(n) => {
                        self.out.truncate(start + n);
                        body.offset += n as u64;
                        body.remaining -= n as u64;
                        if body.remaining == 0 {
                            front.file = None;
                        }
                    }
                }
                continue;
            }
            if !front.done {
                break; // waiting for a worker
            }
            self.close_when_flushed = front.close_after;
            self.slots.pop_front();
        }
        None
    }

    /// Whether output is waiting on the socket.
    pub fn has_unsent_output(&self) -> bool {
        self.out_pos < self.out.len()
    }
}
