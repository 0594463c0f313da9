//! Frame layout of the pipe protocol (docs/protocol.md): the 20-byte big-endian header,
//! the encoder, and the incremental, defensive decoder.
//!
//! The decoder is fed whatever a non-blocking read returned (any split, any number of
//! frames per read) and hands out whole frames. Every header field is validated as soon as
//! its bytes arrive and every length is checked against its limit before anything is
//! allocated for it, so a worker that writes garbage costs at most what it already sent.
//! Any error is final for the stream: the caller treats it as a protocol violation and
//! kills the worker (there is no way to re-synchronise a byte stream after a bad header).

use std::fmt;

/// The two magic bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"RW";
/// Protocol version carried in every header.
pub const VERSION: u8 = 1;
/// Size of the fixed header: magic(2) version(1) type(1) request_id(8) meta_len(4) body_len(4).
pub const HEADER_LEN: usize = 20;
/// Largest meta part accepted (1 MiB).
pub const MAX_META_LEN: u32 = 1 << 20;

/// The frame types of protocol version 1. Values 1..=15 travel dispatcher → worker,
/// 16.. worker → dispatcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// First frame to a worker, and again after a reload.
    Config = 1,
    /// One HTTP request.
    Request = 2,
    /// Finish the requests in hand, then exit.
    Stop = 3,
    /// The client of a request went away.
    Disconnect = 4,
    /// Advisory back-pressure for a stream or a WebSocket.
    Flow = 5,
    /// A WebSocket handshake to accept or refuse.
    WsOpen = 6,
    /// A complete message from a WebSocket client.
    WsMessage = 7,
    /// The WebSocket is closed on the client side.
    WsClose = 8,
    /// First frame from a worker, once set up.
    Hello = 16,
    /// A complete response.
    Response = 17,
    /// Status and headers of a streamed response.
    StreamStart = 18,
    /// A piece of a streamed response body.
    StreamChunk = 19,
    /// End of a streamed response.
    StreamEnd = 20,
    /// Liveness plus the request ids in hand.
    Heartbeat = 21,
    /// A log record.
    Log = 22,
    /// The worker's capacity (0 pauses it).
    Credit = 23,
    /// Fire-and-forget request to another pool.
    Forward = 24,
    /// The worker accepts a WebSocket.
    WsAccept = 25,
    /// A complete message for a WebSocket client.
    WsMessageOut = 26,
    /// The worker closes (or refuses) a WebSocket.
    WsCloseOut = 27,
}

impl FrameType {
    /// Every frame type, in wire-value order.
    pub const ALL: [FrameType; 20] = [
        FrameType::Config,
        FrameType::Request,
        FrameType::Stop,
        FrameType::Disconnect,
        FrameType::Flow,
        FrameType::WsOpen,
        FrameType::WsMessage,
        FrameType::WsClose,
        FrameType::Hello,
        FrameType::Response,
        FrameType::StreamStart,
        FrameType::StreamChunk,
        FrameType::StreamEnd,
        FrameType::Heartbeat,
        FrameType::Log,
        FrameType::Credit,
        FrameType::Forward,
        FrameType::WsAccept,
        FrameType::WsMessageOut,
        FrameType::WsCloseOut,
    ];

    /// The frame type with wire value `v`, if there is one.
    pub fn from_u8(v: u8) -> Option<FrameType> {
        Some(match v {
            1 => FrameType::Config,
            2 => FrameType::Request,
            3 => FrameType::Stop,
            4 => FrameType::Disconnect,
            5 => FrameType::Flow,
            6 => FrameType::WsOpen,
            7 => FrameType::WsMessage,
            8 => FrameType::WsClose,
            16 => FrameType::Hello,
            17 => FrameType::Response,
            18 => FrameType::StreamStart,
            19 => FrameType::StreamChunk,
            20 => FrameType::StreamEnd,
            21 => FrameType::Heartbeat,
            22 => FrameType::Log,
            23 => FrameType::Credit,
            24 => FrameType::Forward,
            25 => FrameType::WsAccept,
            26 => FrameType::WsMessageOut,
            27 => FrameType::WsCloseOut,
            _ => return None,
        })
    }

    /// The protocol document's name, e.g. `STREAM_START`.
    pub fn name(self) -> &'static str {
        match self {
            FrameType::Config => "CONFIG",
            FrameType::Request => "REQUEST",
            FrameType::Stop => "STOP",
            FrameType::Disconnect => "DISCONNECT",
            FrameType::Flow => "FLOW",
            FrameType::WsOpen => "WS_OPEN",
            FrameType::WsMessage => "WS_MESSAGE",
            FrameType::WsClose => "WS_CLOSE",
            FrameType::Hello => "HELLO",
            FrameType::Response => "RESPONSE",
            FrameType::StreamStart => "STREAM_START",
            FrameType::StreamChunk => "STREAM_CHUNK",
            FrameType::StreamEnd => "STREAM_END",
            FrameType::Heartbeat => "HEARTBEAT",
            FrameType::Log => "LOG",
            FrameType::Credit => "CREDIT",
            FrameType::Forward => "FORWARD",
            FrameType::WsAccept => "WS_ACCEPT",
            FrameType::WsMessageOut => "WS_MESSAGE_OUT",
            FrameType::WsCloseOut => "WS_CLOSE_OUT",
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The frame type.
    pub kind: FrameType,
    /// The request this frame is about, 0 when none.
    pub request_id: u64,
    /// Raw JSON meta; empty means `{}`.
    pub meta: Vec<u8>,
    /// Raw body bytes.
    pub body: Vec<u8>,
}

impl Frame {
    /// Parses the meta part as `T`. An empty meta parses as `{}`. The meta must be a JSON
    /// object: serde would otherwise also accept a struct written as an array, which the
    /// protocol does not allow.
    pub fn meta_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, FrameError> {
        let text: &[u8] = if self.meta.is_empty() { b"{}" } else { &self.meta };
        let first = text.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(FrameError::BadMeta { kind: self.kind, error: "meta is not a JSON object".to_string() });
        }
        serde_json::from_slice(text).map_err(|e| FrameError::BadMeta { kind: self.kind, error: e.to_string() })
    }
}

/// Why a byte stream or a frame's meta is not valid protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The header does not start with `RW`.
    BadMagic([u8; 2]),
    /// The header carries a version other than [`VERSION`].
    BadVersion(u8),
    /// The header carries a type value with no [`FrameType`].
    UnknownType(u8),
    /// `meta_len` is over [`MAX_META_LEN`].
    MetaTooLarge {
        /// Declared meta length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The whole frame (`HEADER_LEN + meta_len + body_len`) is over the decoder's
    /// `max_frame`.
    FrameTooLarge {
        /// Declared frame length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The meta is not a JSON object of the shape the frame type needs.
    BadMeta {
        /// The frame whose meta failed.
        kind: FrameType,
        /// serde_json's message.
        error: String,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic(m) => {
                write!(f, "bad frame magic {:02x} {:02x} (expected \"RW\")", m[0], m[1])
            }
            FrameError::BadVersion(v) => {
                write!(f, "unsupported protocol version {v} (expected {VERSION})")
            }
            FrameError::UnknownType(t) => write!(f, "unknown frame type {t}"),
            FrameError::MetaTooLarge { len, max } => {
                write!(f, "frame meta of {len} bytes is over the limit of {max}")
            }
            FrameError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes is over the limit of {max}")
            }
            FrameError::BadMeta { kind, error } => write!(f, "bad {kind} meta: {error}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Largest `body_len` the wire format can carry (a u32). A body larger than this cannot be
/// sent in one frame: the dispatcher must refuse it (413) before it tries.
pub const MAX_BODY_LEN: u64 = u32::MAX as u64;

/// The frame size limit (`max_frame_bytes`) needed so that a REQUEST carrying a body of
/// `max_body_bytes` fits: the header, the largest meta the protocol allows, and the body.
///
/// This is the one place the rule lives. The dispatcher sends the result to every worker
/// in CONFIG (`max_frame_bytes`) and sizes its own decoders from it, so an operator who
/// raises `max_body_bytes` gets those bodies delivered instead of workers killed by a
/// frame over a fixed limit. Bodies over [`MAX_BODY_LEN`] cannot be framed at all, so
/// the result never exceeds the largest frame the format can express.
pub fn frame_limit_for_body(max_body_bytes: u64) -> u64 {
    HEADER_LEN as u64 + u64::from(MAX_META_LEN) + max_body_bytes.min(MAX_BODY_LEN)
}

/// A frame the encoder refuses to produce because no peer may accept it. The output
/// buffer is left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The meta is longer than [`MAX_META_LEN`].
    MetaTooLarge {
        /// Meta length in bytes.
        len: usize,
    },
    /// The body is longer than [`MAX_BODY_LEN`].
    BodyTooLarge {
        /// Body length in bytes.
        len: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::MetaTooLarge { len } => {
                write!(f, "frame meta of {len} bytes is over the limit of {MAX_META_LEN}")
            }
            EncodeError::BodyTooLarge { len } => {
                write!(f, "frame body of {len} bytes is over the limit of {MAX_BODY_LEN}")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

fn meta_len_u32(len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len).ok().filter(|&n| n <= MAX_META_LEN).ok_or(EncodeError::MetaTooLarge { len })
}

fn body_len_u32(len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len).map_err(|_| EncodeError::BodyTooLarge { len })
}

/// Appends one frame to `out`, or leaves `out` unchanged when `meta` is over
/// [`MAX_META_LEN`] or `body` over [`MAX_BODY_LEN`].
pub fn encode_frame(
    out: &mut Vec<u8>,
    kind: FrameType,
    request_id: u64,
    meta: &[u8],
    body: &[u8],
) -> Result<(), EncodeError> {
    let meta_len = meta_len_u32(meta.len())?;
    let body_len = body_len_u32(body.len())?;
    out.reserve(HEADER_LEN + meta.len() + body.len());
    put_header(out, kind, request_id, meta_len, body_len);
    out.extend_from_slice(meta);
    out.extend_from_slice(body);
    Ok(())
}

/// Appends one frame whose meta is `meta` serialized as JSON. The JSON is written straight
/// into `out` and the header's `meta_len` patched afterwards (no temporary buffer). On
/// error `out` is truncated back to its length on entry.
pub fn encode_json<T: serde::Serialize>(
    out: &mut Vec<u8>,
    kind: FrameType,
    request_id: u64,
    meta: &T,
    body: &[u8],
) -> Result<(), EncodeError> {
    encode_with(out, kind, request_id, body, |out| {
        if let Err(e) = serde_json::to_writer(&mut *out, meta) {
            // Only possible for a Serialize impl that refuses (e.g. non-string map keys):
            // a programming error. Send `{}` rather than a half-written meta.
            log::error!("could not serialize {kind} meta: {e}");
            return false;
        }
        true
    })
}

/// Appends one REQUEST frame (`RequestMeta::write_json`, the hot path's encoder).
pub fn encode_request(
    out: &mut Vec<u8>,
    request_id: u64,
    meta: &super::RequestMeta,
    body: &[u8],
) -> Result<(), EncodeError> {
    encode_with(out, FrameType::Request, request_id, body, |out| {
        meta.write_json(out);
        true
    })
}

/// Appends one frame whose meta `write_meta` appends (false: it failed, and the meta is
/// sent empty).
fn encode_with(
    out: &mut Vec<u8>,
    kind: FrameType,
    request_id: u64,
    body: &[u8],
    write_meta: impl FnOnce(&mut Vec<u8>) -> bool,
) -> Result<(), EncodeError> {
    let body_len = body_len_u32(body.len())?;
    let start = out.len();
    put_header(out, kind, request_id, 0, body_len);
    let meta_start = out.len();
    if !write_meta(out) {
        out.truncate(meta_start);
    }
    let meta_len = match meta_len_u32(out.len() - meta_start) {
        Ok(n) => n,
        Err(e) => {
            out.truncate(start);
            return Err(e);
        }
    };
    out[start + 12..start + 16].copy_from_slice(&meta_len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Appends one frame with an empty meta (`{}`) and an empty body (STOP, DISCONNECT):
/// the only frames whose encoding cannot fail.
pub fn encode_empty(out: &mut Vec<u8>, kind: FrameType, request_id: u64) {
    put_header(out, kind, request_id, 0, 0);
}

fn put_header(out: &mut Vec<u8>, kind: FrameType, request_id: u64, meta_len: u32, body_len: u32) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&request_id.to_be_bytes());
    out.extend_from_slice(&meta_len.to_be_bytes());
    out.extend_from_slice(&body_len.to_be_bytes());
}

/// A validated header, kept while the meta and body are still arriving.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: FrameType,
    request_id: u64,
    meta_len: usize,
    body_len: usize,
}

/// Incremental frame decoder: `push` bytes as they are read, then call `next_frame` until
/// it returns `Ok(None)`.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: u64,
    /// Received bytes; `buf[pos..]` is not yet consumed.
    buf: Vec<u8>,
    pos: usize,
    /// The header of the frame being assembled, once all 20 bytes were validated.
    header: Option<Header>,
    /// The first error, returned again on every later call: the stream is unusable.
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder accepting frames of up to `max_frame` bytes in all (header, meta and
    /// body), with a meta of at most [`MAX_META_LEN`]. Compute `max_frame` with
    /// [`frame_limit_for_body`] from the largest body the peer may send.
    pub fn new(max_frame: u64) -> Self {
        FrameDecoder { max_frame, buf: Vec::new(), pos: 0, header: None, failed: None }
    }

    /// Changes the frame limit for frames whose header has not arrived yet, e.g. once a
    /// worker has read `max_frame_bytes` from CONFIG.
    pub fn set_max_frame(&mut self, max_frame: u64) {
        self.max_frame = max_frame;
    }

    /// The current frame limit.
    pub fn max_frame(&self) -> u64 {
        self.max_frame
    }

    /// Appends bytes read from the pipe.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        // Compact before growing so the buffer stays bounded by one frame plus one read,
        // instead of everything ever received.
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos >= self.buf.len() / 2) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or the (sticky)
    /// protocol error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.decode() {
            Ok(f) => Ok(f),
            Err(e) => {
                self.failed = Some(e.clone());
                // Nothing buffered is usable any more; free it.
                self.buf = Vec::new();
                self.pos = 0;
                Err(e)
            }
        }
    }

    /// Bytes received but not yet returned as frames. Callers cap this (with the limits
    /// above, one frame never needs more than `max_frame`).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn decode(&mut self) -> Result<Option<Frame>, FrameError> {
        let header = match self.header {
            Some(h) => h,
            None => match self.parse_header()? {
                Some(h) => {
                    self.pos += HEADER_LEN;
                    self.header = Some(h);
                    h
                }
                None => return Ok(None),
            },
        };
        let avail = &self.buf[self.pos..];
        if avail.len() < header.meta_len + header.body_len {
            return Ok(None);
        }
        let (meta, rest) = avail.split_at(header.meta_len);
        let frame = Frame {
            kind: header.kind,
            request_id: header.request_id,
            meta: meta.to_vec(),
            body: rest[..header.body_len].to_vec(),
        };
        self.pos += header.meta_len + header.body_len;
        self.header = None;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(Some(frame))
    }

    /// Validates the header field by field as far as bytes are available, so garbage is
    /// reported as early as possible (a bad magic after 2 bytes, not 20).
    fn parse_header(&self) -> Result<Option<Header>, FrameError> {
        let h = &self.buf[self.pos..];
        if h.len() >= 2 && h[..2] != MAGIC {
            return Err(FrameError::BadMagic([h[0], h[1]]));
        }
        if h.len() >= 3 && h[2] != VERSION {
            return Err(FrameError::BadVersion(h[2]));
        }
        let kind = match h.get(3) {
            Some(&t) => FrameType::from_u8(t).ok_or(FrameError::UnknownType(t))?,
            None => return Ok(None),
        };
        if h.len() < HEADER_LEN {
            return Ok(None);
        }
        let request_id = u64::from_be_bytes(be_bytes(&h[4..12]));
        let meta_len = u32::from_be_bytes(be_bytes(&h[12..16]));
        let body_len = u32::from_be_bytes(be_bytes(&h[16..20]));
        if meta_len > MAX_META_LEN {
            return Err(FrameError::MetaTooLarge { len: meta_len, max: MAX_META_LEN });
        }
        let frame_len = HEADER_LEN as u64 + u64::from(meta_len) + u64::from(body_len);
        if frame_len > self.max_frame {
            return Err(FrameError::FrameTooLarge { len: frame_len, max: self.max_frame });
        }
        // Within `max_frame`, so within memory on 64-bit targets; a 32-bit target whose
        // usize cannot hold the payload treats it as too large.
        let too_large = FrameError::FrameTooLarge { len: frame_len, max: self.max_frame };
        let meta_len = usize::try_from(meta_len).map_err(|_| too_large.clone())?;
        let body_len = usize::try_from(body_len).map_err(|_| too_large.clone())?;
        meta_len.checked_add(body_len).ok_or(too_large)?;
        Ok(Some(Header { kind, request_id, meta_len, body_len }))
    }
}

/// Copies a slice whose length the caller already checked into an array.
fn be_bytes<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample_stream() -> (Vec<u8>, Vec<Frame>) {
        let frames = vec![
            Frame { kind: FrameType::Hello, request_id: 0, meta: br#"{"pid":42}"#.to_vec(), body: vec![] },
            Frame {
                kind: FrameType::Response,
                request_id: 7,
                meta: br#"{"status":200}"#.to_vec(),
                body: b"hello".to_vec(),
            },
            Frame { kind: FrameType::StreamEnd, request_id: u64::MAX, meta: vec![], body: vec![] },
            Frame { kind: FrameType::StreamChunk, request_id: 9, meta: vec![], body: (0..=255u8).collect() },
        ];
        let mut out = Vec::new();
        for f in &frames {
            encode_frame(&mut out, f.kind, f.request_id, &f.meta, &f.body).unwrap();
        }
        (out, frames)
    }

    fn drain(d: &mut FrameDecoder, into: &mut Vec<Frame>) {
        while let Some(f) = d.next_frame().expect("valid stream") {
            into.push(f);
        }
    }

    #[test]
    fn header_layout_is_big_endian() {
        let mut out = Vec::new();
        encode_frame(&mut out, FrameType::Request, 0x0102030405060708, b"{}", b"abc").unwrap();
        assert_eq!(&out[..HEADER_LEN], &[0x52, 0x57, 1, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 2, 0, 0, 0, 3]);
        assert_eq!(&out[HEADER_LEN..], b"{}abc");
    }

    #[test]
    fn every_type_round_trips_through_from_u8() {
        for t in FrameType::ALL {
            assert_eq!(FrameType::from_u8(t as u8), Some(t));
            assert!(!t.name().is_empty());
        }
        let known: Vec<u8> = FrameType::ALL.iter().map(|t| *t as u8).collect();
        for v in 0..=255u8 {
            assert_eq!(FrameType::from_u8(v).is_some(), known.contains(&v), "value {v}");
        }
    }

    #[test]
    fn whole_stream_at_once() {
        let (bytes, frames) = sample_stream();
        let mut d = FrameDecoder::new(1024);
        d.push(&bytes);
        let mut got = Vec::new();
        drain(&mut d, &mut got);
        assert_eq!(got, frames);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn every_split_decodes_the_same() {
        let (bytes, frames) = sample_stream();
        // Two-piece splits at every offset.
        for cut in 0..=bytes.len() {
            let mut d = FrameDecoder::new(1024);
            let mut got = Vec::new();
            d.push(&bytes[..cut]);
            drain(&mut d, &mut got);
            d.push(&bytes[cut..]);
            drain(&mut d, &mut got);
            assert_eq!(got, frames, "cut at {cut}");
            assert_eq!(d.buffered(), 0);
        }
        // One byte at a time.
        let mut d = FrameDecoder::new(1024);
        let mut got = Vec::new();
        for b in &bytes {
            d.push(std::slice::from_ref(b));
            drain(&mut d, &mut got);
        }
        assert_eq!(got, frames);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn buffered_counts_unconsumed_bytes() {
        let (bytes, _) = sample_stream();
        let mut d = FrameDecoder::new(1024);
        d.push(&bytes[..HEADER_LEN + 3]);
        assert_eq!(d.buffered(), HEADER_LEN + 3);
        assert!(d.next_frame().unwrap().is_none());
        // The validated header counts as consumed; the 3 meta bytes do not.
        assert_eq!(d.buffered(), 3);
    }

    #[test]
    fn errors_are_reported_early_and_stick() {
        let mut d = FrameDecoder::new(1024);
        d.push(b"HT");
        assert_eq!(d.next_frame(), Err(FrameError::BadMagic(*b"HT")));
        d.push(b"RW\x01\x10");
        assert_eq!(d.next_frame(), Err(FrameError::BadMagic(*b"HT")));
        assert_eq!(d.buffered(), 0);

        let mut d = FrameDecoder::new(1024);
        d.push(b"RW\x02");
        assert_eq!(d.next_frame(), Err(FrameError::BadVersion(2)));

        let mut d = FrameDecoder::new(1024);
        d.push(b"RW\x01\x09");
        assert_eq!(d.next_frame(), Err(FrameError::UnknownType(9)));

        // Partial magic is not an error yet.
        let mut d = FrameDecoder::new(1024);
        d.push(b"R");
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn oversized_lengths_rejected_before_payload_arrives() {
        let mut hdr = Vec::new();
        put_header(&mut hdr, FrameType::Response, 1, MAX_META_LEN + 1, 0);
        let mut d = FrameDecoder::new(1024);
        d.push(&hdr);
        assert_eq!(d.next_frame(), Err(FrameError::MetaTooLarge { len: MAX_META_LEN + 1, max: MAX_META_LEN }));

        let mut hdr = Vec::new();
        put_header(&mut hdr, FrameType::Response, 1, 2, u32::MAX);
        let mut d = FrameDecoder::new(1024);
        d.push(&hdr);
        let len = HEADER_LEN as u64 + 2 + u64::from(u32::MAX);
        assert_eq!(d.next_frame(), Err(FrameError::FrameTooLarge { len, max: 1024 }));

        // The limit counts header, meta and body together; exactly at it is fine.
        let mut out = Vec::new();
        encode_frame(&mut out, FrameType::StreamChunk, 3, b"{}", &[7u8; 1000]).unwrap();
        assert_eq!(out.len(), 1022);
        let mut d = FrameDecoder::new(1022);
        d.push(&out);
        assert_eq!(d.next_frame().unwrap().unwrap().body.len(), 1000);
        let mut d = FrameDecoder::new(1021);
        d.push(&out);
        assert_eq!(d.next_frame(), Err(FrameError::FrameTooLarge { len: 1022, max: 1021 }));
    }

    #[test]
    fn frame_limit_covers_header_meta_and_body() {
        let limit = frame_limit_for_body(10 << 20);
        assert_eq!(limit, 20 + (1 << 20) + (10 << 20));
        // A REQUEST with the largest meta and a body at the limit decodes.
        let mut hdr = Vec::new();
        put_header(&mut hdr, FrameType::Request, 1, MAX_META_LEN, 10 << 20);
        let mut d = FrameDecoder::new(limit);
        d.push(&hdr);
        assert_eq!(d.next_frame(), Ok(None));
        // Bodies beyond what a u32 can frame do not raise the limit further.
        assert_eq!(frame_limit_for_body(u64::MAX), frame_limit_for_body(MAX_BODY_LEN));
        assert_eq!(frame_limit_for_body(0), 20 + (1 << 20));
    }

    #[test]
    fn oversized_encodes_fail_and_leave_the_buffer_alone() {
        assert_eq!(body_len_u32(u32::MAX as usize), Ok(u32::MAX));
        #[cfg(target_pointer_width = "64")]
        assert_eq!(body_len_u32(u32::MAX as usize + 1), Err(EncodeError::BodyTooLarge { len: 1 << 32 }));
        let max = MAX_META_LEN as usize;
        assert_eq!(meta_len_u32(max), Ok(MAX_META_LEN));
        assert_eq!(meta_len_u32(max + 1), Err(EncodeError::MetaTooLarge { len: max + 1 }));

        let mut out = b"kept".to_vec();
        let big = vec![b' '; max + 1];
        assert_eq!(
            encode_frame(&mut out, FrameType::Log, 0, &big, b""),
            Err(EncodeError::MetaTooLarge { len: max + 1 })
        );
        assert_eq!(out, b"kept");
        // JSON meta is measured after serialization: a string of `max` bytes plus quotes.
        let text = "x".repeat(max);
        assert_eq!(
            encode_json(&mut out, FrameType::Log, 0, &json!({ "msg": text }), b"body"),
            Err(EncodeError::MetaTooLarge { len: max + 10 })
        );
        assert_eq!(out, b"kept");
        assert_eq!(
            EncodeError::BodyTooLarge { len: 5 }.to_string(),
            "frame body of 5 bytes is over the limit of 4294967295"
        );
    }

    #[test]
    fn empty_frames_equal_frames_with_empty_parts() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode_empty(&mut a, FrameType::Disconnect, 9);
        encode_frame(&mut b, FrameType::Disconnect, 9, b"", b"").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), HEADER_LEN);
    }

    #[test]
    fn limit_can_change_between_frames() {
        let mut out = Vec::new();
        encode_frame(&mut out, FrameType::Response, 1, b"", &[1u8; 100]).unwrap();
        let mut d = FrameDecoder::new(50);
        assert_eq!(d.max_frame(), 50);
        d.set_max_frame(120);
        d.push(&out);
        assert_eq!(d.next_frame().unwrap().unwrap().body.len(), 100);
    }

    #[test]
    fn encode_json_patches_meta_len() {
        let mut a = Vec::new();
        encode_json(&mut a, FrameType::Credit, 0, &json!({"credits": 3}), b"x").unwrap();
        let mut b = Vec::new();
        encode_frame(&mut b, FrameType::Credit, 0, br#"{"credits":3}"#, b"x").unwrap();
        assert_eq!(a, b);
        // Appends after existing content without disturbing it.
        let mut c = b"prefix".to_vec();
        encode_json(&mut c, FrameType::Credit, 0, &json!({"credits": 3}), b"x").unwrap();
        assert_eq!(&c[6..], &b[..]);
    }

    #[test]
    fn meta_json_rules() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct M {
            #[serde(default)]
            a: u32,
        }
        let f = |meta: &[u8]| Frame { kind: FrameType::Log, request_id: 0, meta: meta.to_vec(), body: vec![] };
        assert_eq!(f(b"").meta_json::<M>(), Ok(M { a: 0 }));
        assert_eq!(f(b" {\"a\":5}").meta_json::<M>(), Ok(M { a: 5 }));
        // serde would accept a struct as a sequence; the protocol does not.
        assert!(matches!(f(b"[5]").meta_json::<M>(), Err(FrameError::BadMeta { kind: FrameType::Log, .. })));
        assert!(matches!(f(b"{\"a\":").meta_json::<M>(), Err(FrameError::BadMeta { .. })));
        assert!(matches!(f(b"{\"a\":\"x\"}").meta_json::<M>(), Err(FrameError::BadMeta { .. })));
        assert!(matches!(f(b"\xff").meta_json::<M>(), Err(FrameError::BadMeta { .. })));
    }

    #[test]
    fn error_messages_read_well() {
        assert_eq!(FrameError::BadMagic(*b"GE").to_string(), "bad frame magic 47 45 (expected \"RW\")");
        assert_eq!(
            FrameError::FrameTooLarge { len: 10, max: 5 }.to_string(),
            "frame of 10 bytes is over the limit of 5"
        );
        assert_eq!(
            FrameError::BadMeta { kind: FrameType::StreamStart, error: "x".into() }.to_string(),
            "bad STREAM_START meta: x"
        );
    }
}
