//! The server's frame codec (RFC 6455 §5): an incremental decoder of client frames that
//! reassembles fragmented messages and enforces the protocol's rules, and encoders for
//! server frames (never masked).
//!
//! Every rule the client can break maps to the close code the RFC gives it: a protocol
//! error is 1002, a text message that is not UTF-8 is 1007, a message over the limit is
//! 1009. The decoder holds at most one frame and one partial message, each bounded by
//! the message limit, so its memory is bounded whatever the client sends.

use std::fmt;

/// Close codes the dispatcher uses (RFC 6455 §7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL: CloseCode = CloseCode(1002);
    /// "No status received": what a close frame without a code means (never sent).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// The connection dropped without a close frame (never sent).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    pub const INVALID_DATA: CloseCode = CloseCode(1007);
    pub const POLICY: CloseCode = CloseCode(1008);
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    pub const INTERNAL: CloseCode = CloseCode(1011);

    /// Whether a peer may put this code on the wire (§7.4.1, §7.4.2).
    pub fn sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl Opcode {
    fn from_u8(v: u8) -> Option<Opcode> {
        Some(match v {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// What the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    /// A complete message (fragments joined); `text` messages are valid UTF-8.
    Message { text: bool, data: Vec<u8> },
    /// A ping: answer with a pong carrying the same payload.
    Ping(Vec<u8>),
    /// A pong (to our ping, or unsolicited): proof of life only.
    Pong,
    /// The client closes: `code` is `NO_STATUS` when its frame had none.
    Close { code: CloseCode, reason: String },
}

/// The client broke the protocol: close with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: CloseCode,
    pub reason: &'static str,
}

fn violation<T>(code: CloseCode, reason: &'static str) -> Result<T, Violation> {
    Err(Violation { code, reason })
}

/// Incremental decoder of client → server frames.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
    max_message: usize,
    /// A fragmented message in progress: its kind and what arrived so far.
    partial: Option<(bool, Vec<u8>)>,
    failed: Option<Violation>,
}

impl Decoder {
    pub fn new(max_message: usize) -> Decoder {
        Decoder { buf: Vec::new(), pos: 0, max_message, partial: None, failed: None }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= 64 * 1024 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held: undecoded input and the partial message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos + self.partial.as_ref().map_or(0, |(_, d)| d.len())
    }

    /// Whether enough undecoded input waits that reading more would only grow it.
    pub fn full(&self) -> bool {
        self.buf.len() - self.pos > self.max_message + 14
    }

    /// The next event, `Ok(None)` when more input is needed. After an error the decoder
    /// stays failed.
    pub fn next_event(&mut self) -> Result<Option<WsEvent>, Violation> {
        if let Some(v) = self.failed {
            return Err(v);
        }
        let result = self.decode();
        if let Err(v) = result {
            self.failed = Some(v);
        }
        result
    }

    fn decode(&mut self) -> Result<Option<WsEvent>, Violation> {
        loop {
            let data = &self.buf[self.pos..];
            if data.len() < 2 {
                return Ok(None);
            }
            let (b0, b1) = (data[0], data[1]);
            if b0 & 0x70 != 0 {
                return violation(CloseCode::PROTOCOL, "reserved bits set (no extension was negotiated)");
            }
            let fin = b0 & 0x80 != 0;
            let Some(opcode) = Opcode::from_u8(b0 & 0x0f) else {
                return violation(CloseCode::PROTOCOL, "unknown opcode");
            };
            if b1 & 0x80 == 0 {
                return violation(CloseCode::PROTOCOL, "client frames must be masked");
            }
            let (len, mut at) = match b1 & 0x7f {
                126 => match data.get(2..4) {
                    Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                    None => return Ok(None),
                },
                127 => match data.get(2..10) {
                    Some(b) => {
                        let n = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                        if n >> 63 != 0 {
                            return violation(CloseCode::PROTOCOL, "64-bit length with the top bit set");
                        }
                        (n, 10)
                    }
                    None => return Ok(None),
                },
                n => (u64::from(n), 2),
            };
            if opcode.is_control() && (!fin || len > 125) {
                return violation(CloseCode::PROTOCOL, "control frames are unfragmented and at most 125 bytes");
            }
            let so_far = self.partial.as_ref().map_or(0, |(_, d)| d.len()) as u64;
            if so_far.saturating_add(len) > self.max_message as u64 {
                return violation(CloseCode::TOO_BIG, "message over the size limit");
            }
            let Some(mask) = data.get(at..at + 4) else { return Ok(None) };
            let mask = [mask[0], mask[1], mask[2], mask[3]];
            at += 4;
            let len = len as usize; // bounded by max_message above
            let Some(payload) = data.get(at..at + len) else { return Ok(None) };
            let payload: Vec<u8> = payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]).collect();
            self.pos += at + len;
            match opcode {
                Opcode::Ping => return Ok(Some(WsEvent::Ping(payload))),
                Opcode::Pong => return Ok(Some(WsEvent::Pong)),
                Opcode::Close => return close_event(&payload).map(Some),
                Opcode::Text | Opcode::Binary => {
                    if self.partial.is_some() {
                        return violation(CloseCode::PROTOCOL, "a new message began inside a fragmented one");
                    }
                    let text = opcode == Opcode::Text;
                    if fin {
                        return message(text, payload).map(Some);
                    }
                    self.partial = Some((text, payload));
                }
                Opcode::Continuation => {
                    let Some((text, mut so_far)) = self.partial.take() else {
                        return violation(CloseCode::PROTOCOL, "continuation frame without a message to continue");
                    };
                    so_far.extend_from_slice(&payload);
                    if fin {
                        return message(text, so_far).map(Some);
                    }
                    self.partial = Some((text, so_far));
                }
            }
        }
    }
}

fn message(text: bool, data: Vec<u8>) -> Result<WsEvent, Violation> {
    if text && std::str::from_utf8(&data).is_err() {
        return violation(CloseCode::INVALID_DATA, "text message is not UTF-8");
    }
    Ok(WsEvent::Message { text, data })
}

fn close_event(payload: &[u8]) -> Result<WsEvent, Violation> {
    match payload {
        [] => Ok(WsEvent::Close { code: CloseCode::NO_STATUS, reason: String::new() }),
        [_] => violation(CloseCode::PROTOCOL, "close frame with a 1-byte payload"),
        [a, b, rest @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*a, *b]));
            if !code.sendable() {
                return violation(CloseCode::PROTOCOL, "close code not allowed on the wire");
            }
            match std::str::from_utf8(rest) {
                Ok(reason) => Ok(WsEvent::Close { code, reason: reason.to_string() }),
                Err(_) => violation(CloseCode::INVALID_DATA, "close reason is not UTF-8"),
            }
        }
    }
}

/// Append one unmasked, unfragmented server frame.
pub fn encode_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    out.push(0x80 | opcode as u8);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Append a close frame. A code that may not go on the wire (1005, 1006) becomes 1000;
/// the reason is cut at a character boundary to fit the 125-byte control payload.
pub fn encode_close(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    let code = if code.sendable() { code } else { CloseCode::NORMAL };
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.0.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(out, Opcode::Close, &payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A client frame: masked with `mask`.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<WsEvent>, Violation> {
        let mut d = Decoder::new(max);
        d.push(bytes);
        let mut out = Vec::new();
        while let Some(e) = d.next_event()? {
            out.push(e);
        }
        Ok(out)
    }

    const M: [u8; 4] = [1, 2, 3, 4];

    #[test]
    fn messages_fragments_and_control_frames() {
        let mut b = client_frame(true, 1, b"hello", M);
        b.extend(client_frame(false, 2, b"ab", M));
        b.extend(client_frame(true, 9, b"p", M)); // a ping between fragments is allowed
        b.extend(client_frame(true, 0, b"cd", M));
        b.extend(client_frame(true, 8, &[0x03, 0xe8, b'o', b'k'], M));
        assert_eq!(
            decode_all(&b, 1024).unwrap(),
            vec![
                WsEvent::Message { text: true, data: b"hello".to_vec() },
                WsEvent::Ping(b"p".to_vec()),
                WsEvent::Message { text: false, data: b"abcd".to_vec() },
                WsEvent::Close { code: CloseCode::NORMAL, reason: "ok".into() },
            ]
        );
        let big = vec![7u8; 70_000];
        assert_eq!(
            decode_all(&client_frame(true, 2, &big, M), 100_000).unwrap(),
            vec![WsEvent::Message { text: false, data: big }]
        );
    }

    #[test]
    fn violations_map_to_close_codes() {
        let code = |b: Vec<u8>| decode_all(&b, 16).unwrap_err().code;
        assert_eq!(code(client_frame(true, 1, &[0xff, 0xfe], M)), CloseCode::INVALID_DATA);
        assert_eq!(code(client_frame(true, 2, &[0; 17], M)), CloseCode::TOO_BIG);
        let mut two = client_frame(false, 2, &[0; 10], M);
        two.extend(client_frame(true, 0, &[0; 10], M));
        assert_eq!(code(two), CloseCode::TOO_BIG);
        assert_eq!(code(client_frame(true, 0, b"x", M)), CloseCode::PROTOCOL);
        assert_eq!(code(client_frame(true, 3, b"x", M)), CloseCode::PROTOCOL);
        assert_eq!(code(client_frame(false, 9, b"x", M)), CloseCode::PROTOCOL);
        assert_eq!(code(client_frame(true, 8, &[3], M)), CloseCode::PROTOCOL);
        assert_eq!(code(client_frame(true, 8, &[0x03, 0xed], M)), CloseCode::PROTOCOL); // 1005
        let mut nested = client_frame(false, 1, b"a", M);
        nested.extend(client_frame(true, 1, b"b", M));
        assert_eq!(code(nested), CloseCode::PROTOCOL);
        let mut unmasked = client_frame(true, 1, b"a", M);
        unmasked[1] &= 0x7f;
        assert_eq!(code(unmasked), CloseCode::PROTOCOL);
        let mut rsv = client_frame(true, 1, b"a", M);
        rsv[0] |= 0x40;
        assert_eq!(code(rsv), CloseCode::PROTOCOL);
    }

    #[test]
    fn encoders() {
        let mut out = Vec::new();
        encode_frame(&mut out, Opcode::Text, b"hi");
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        out.clear();
        encode_frame(&mut out, Opcode::Binary, &[0; 300]);
        assert_eq!(&out[..4], &[0x82, 126, 1, 44]);
        out.clear();
        encode_close(&mut out, CloseCode::ABNORMAL, &"é".repeat(100));
        assert_eq!(out[0], 0x88);
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= 125);
        assert_eq!(&out[2..4], &1000u16.to_be_bytes());
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any bytes, any split: never a panic, and the same events or error as one push.
        #[test]
        fn any_bytes_any_split(bytes in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..512) {
            let whole = decode_all(&bytes, 256);
            let cut = cut.min(bytes.len());
            let mut d = Decoder::new(256);
            d.push(&bytes[..cut]);
            let mut events = Vec::new();
            let mut result = Ok(());
            loop {
                match d.next_event() {
                    Ok(Some(e)) => events.push(e),
                    Ok(None) => break,
                    Err(v) => { result = Err(v); break; }
                }
            }
            if result.is_ok() {
                d.push(&bytes[cut..]);
                loop {
                    match d.next_event() {
                        Ok(Some(e)) => events.push(e),
                        Ok(None) => break,
                        Err(v) => { result = Err(v); break; }
                    }
                }
            }
            match (whole, result) {
                (Ok(w), Ok(())) => prop_assert_eq!(w, events),
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "split changed the outcome: {:?} vs {:?}", a, b),
            }
        }

        /// Fragmenting a message any way and masking it any way gives it back whole.
        #[test]
        fn fragments_round_trip(data in proptest::collection::vec(any::<u8>(), 0..300), sizes in proptest::collection::vec(1usize..50, 1..8), mask in any::<[u8; 4]>()) {
            let mut bytes = Vec::new();
            let mut rest = &data[..];
            let mut first = true;
            for (i, size) in sizes.iter().enumerate() {
                let last = i + 1 == sizes.len();
                let take = if last { rest.len() } else { (*size).min(rest.len()) };
                let opcode = if first { 2 } else { 0 };
                bytes.extend(client_frame(last, opcode, &rest[..take], mask));
                rest = &rest[take..];
                first = false;
            }
            prop_assert_eq!(decode_all(&bytes, 1024).unwrap(), vec![WsEvent::Message { text: false, data: data.clone() }]);
        }
    }
}
