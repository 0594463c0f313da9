//! Request side: the incremental [`RequestReader`] and the parsed [`Request`].
//!
//! The reader owns one connection's receive buffer. Bytes are pushed as they arrive and
//! [`RequestReader::poll`] hands out complete requests in order (pipelining). The head is
//! only handed to httparse once its terminating empty line has been seen, and the scan for
//! that line resumes where it stopped, so tiny reads cost linear time. Framing decisions
//! (Content-Length vs chunked, smuggling checks, limits) are made here, once, from the head.

use crate::config::Limits;

use super::Version;
use super::chunked::ChunkedDecoder;
use super::errors::{HttpError, from_httparse};
use super::host::check_authority;

/// Headers parsed into a stack array before falling back to the heap.
const STACK_HEADERS: usize = 64;
/// Upper bound on the body buffer reserved up front from a declared Content-Length.
const MAX_BODY_PREALLOC: u64 = 64 * 1024;
/// Consumed bytes kept at the front of the buffer before compacting it.
const COMPACT_THRESHOLD: usize = 8 * 1024;

/// A complete request, body de-chunked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method as sent (case-sensitive).
    pub method: String,
    /// Raw request-target as sent.
    pub target: String,
    /// Raw path (still percent-encoded), without the query; `*` for `OPTIONS *`.
    pub path: String,
    /// Raw query without the `?`; `None` when the target has no `?`.
    pub query: Option<String>,
    pub version: Version,
    /// Lower-cased names, order and repeats kept; value bytes >= 0x80 mapped as Latin-1.
    pub headers: Vec<(String, String)>,
    /// Complete body (de-chunked).
    pub body: Vec<u8>,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
}

impl Request {
    /// First value of a header; `lowercase_name` must already be lower-case.
    pub fn header(&self, lowercase_name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == lowercase_name).map(|(_, v)| v.as_str())
    }

    /// Whether this is a HEAD request (the response carries no body bytes).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// What [`RequestReader::poll`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadEvent {
    /// Nothing complete yet: read more from the socket.
    NeedMore,
    /// The head asked `Expect: 100-continue` and no body byte has arrived: write
    /// `HTTP/1.1 100 Continue\r\n\r\n` once, then poll again.
    SendContinue,
    /// A complete request.
    Request(Request),
}

/// Where the reader is, for the caller's idle/header/body timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No byte of the next request buffered.
    Idle,
    /// Receiving a request head.
    Head,
    /// Receiving a request body.
    Body,
}

#[derive(Debug)]
enum State {
    Head(HeadScan),
    Body { request: Box<Request>, body: BodyState, continue_pending: bool },
    Failed(HttpError),
}

/// Progress of the search for the end of the head; offsets are relative to `pos`.
#[derive(Debug, Default, Clone, Copy)]
struct HeadScan {
    /// Bytes already scanned.
    scanned: usize,
    /// Offset of the request line's LF once seen.
    first_line_end: Option<usize>,
    /// Header lines seen so far.
    lines: usize,
    /// Empty lines skipped before the request line.
    skipped: usize,
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// Incremental request reader for one connection.
///
/// Backpressure is the caller's job: while a request is being served, bytes of pipelined
/// requests stay buffered; stop reading from the socket once [`buffered`](Self::buffered)
/// exceeds what you are willing to hold (e.g. `max_header_bytes`).
#[derive(Debug)]
pub struct RequestReader {
    limits: Limits,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    state: State,
}

impl RequestReader {
    pub fn new(limits: Limits) -> Self {
        RequestReader { limits, buf: Vec::new(), pos: 0, state: State::Head(HeadScan::default()) }
    }

    /// Append bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Advance; call repeatedly until `NeedMore`. After an error the connection is done:
    /// answer `err.status` and close (further polls repeat the error).
    pub fn poll(&mut self) -> Result<ReadEvent, HttpError> {
        let result = match &mut self.state {
            State::Failed(err) => return Err(*err),
            State::Head(_) => self.poll_head(),
            State::Body { .. } => self.poll_body(),
        };
        if let Err(err) = result {
            self.state = State::Failed(err);
        }
        result
    }

    pub fn phase(&self) -> Phase {
        match &self.state {
            State::Head(scan) if scan.skipped == 0 && self.buffered() == 0 => Phase::Idle,
            State::Head(_) | State::Failed(_) => Phase::Head,
            State::Body { .. } => Phase::Body,
        }
    }

    /// The head of the request whose body is being received (its `body` is what has
    /// arrived so far). Lets the caller refuse a request (e.g. 401) before it answers
    /// `SendContinue` and the client uploads the body for nothing.
    pub fn pending_head(&self) -> Option<&Request> {
        match &self.state {
            State::Body { request, .. } => Some(request),
            _ => None,
        }
    }

    /// Body bytes of the pending request taken in so far (for the body's rate clock).
    pub fn body_received(&self) -> u64 {
        match &self.state {
            State::Body { request, .. } => request.body.len() as u64,
            _ => 0,
        }
    }

    /// Memory the pending body claims: its declared Content-Length in full (the budget
    /// is paid before the bytes arrive), or what a chunked body has so far.
    pub fn body_reserved(&self) -> u64 {
        match &self.state {
            State::Body { request, body: BodyState::Length(remaining), .. } => {
                (request.body.len() as u64).saturating_add(*remaining)
            }
            State::Body { request, body: BodyState::Chunked(_), .. } => request.body.len() as u64,
            _ => 0,
        }
    }

    /// Take the bytes received after the last complete request (a WebSocket client may
    /// send frames right behind its handshake); the reader is left empty.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.pos);
        self.buf.clear();
        self.pos = 0;
        self.state = State::Head(HeadScan::default());
        rest
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Drop consumed bytes; amortized linear because it only moves when most bytes are dead.
    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= COMPACT_THRESHOLD && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    fn poll_head(&mut self) -> Result<ReadEvent, HttpError> {
        let State::Head(scan) = &mut self.state else { return Ok(ReadEvent::NeedMore) };
        let limits = self.limits;

        // RFC 9112 §2.2: ignore empty lines before the request line (bounded).
        if scan.scanned == 0 {
            loop {
                match self.buf.get(self.pos..self.pos + 2) {
                    _ if self.buf.get(self.pos) == Some(&b'\n') => {
                        self.pos += 1;
                        scan.skipped += 1;
                    }
                    Some(b"\r\n") => {
                        self.pos += 2;
                        scan.skipped += 2;
                    }
                    Some([b'\r', _]) => return Err(HttpError::bad_request("malformed line ending")),
                    _ => break,
                }
                if scan.skipped > limits.max_header_bytes {
                    return Err(HttpError::new(431, "request header fields too large"));
                }
            }
            // Nothing yet, or a CR whose LF has not arrived: scanning must not start.
            if matches!(&self.buf[self.pos..], [] | [b'\r']) {
                return Ok(ReadEvent::NeedMore);
            }
        }

        let data = &self.buf[self.pos..];
        let mut head_end = None;
        let mut i = scan.scanned;
        while let Some(off) = data[i..].iter().position(|&b| b == b'\n') {
            let nl = i + off;
            i = nl + 1;
            match scan.first_line_end {
                None => {
                    let line_len = if nl > 0 && data[nl - 1] == b'\r' { nl - 1 } else { nl };
                    if line_len > limits.max_request_line {
                        return Err(HttpError::new(414, "request line too long"));
                    }
                    scan.first_line_end = Some(nl);
                }
                Some(_) => {
                    let empty = data[nl - 1] == b'\n' || (data[nl - 1] == b'\r' && data[nl - 2] == b'\n');
                    if empty {
                        head_end = Some(i);
                        break;
                    }
                    scan.lines += 1;
                    if scan.lines > limits.max_headers {
                        return Err(HttpError::new(431, "too many headers"));
                    }
                }
            }
        }
        scan.scanned = i.max(scan.scanned);
        let Some(head_end) = head_end else {
            scan.scanned = data.len();
            // A pending CR may still complete the request line, hence the +1.
            if scan.first_line_end.is_none() && data.len() > limits.max_request_line + 1 {
                return Err(HttpError::new(414, "request line too long"));
            }
            if data.len() > limits.max_header_bytes {
                return Err(HttpError::new(431, "request header fields too large"));
            }
            return Ok(ReadEvent::NeedMore);
        };
        if head_end > limits.max_header_bytes {
            return Err(HttpError::new(431, "request header fields too large"));
        }

        let lines = scan.lines;
        let first_line_end = scan.first_line_end.unwrap_or(0);
        let head = &data[..head_end];
        let (request, framing, expects_continue) = if lines <= STACK_HEADERS {
            let mut headers = [httparse::EMPTY_HEADER; STACK_HEADERS];
            parse_head(head, &data[..first_line_end], &mut headers, &limits)?
        } else {
            let mut headers = vec![httparse::EMPTY_HEADER; lines];
            parse_head(head, &data[..first_line_end], &mut headers, &limits)?
        };
        self.pos += head_end;

        let body = match framing {
            Framing::None => {
                self.state = State::Head(HeadScan::default());
                return Ok(ReadEvent::Request(request));
            }
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(ChunkedDecoder::new(limits.max_body_bytes, limits.max_header_bytes)),
        };
        let mut request = Box::new(request);
        if let BodyState::Length(n) = body {
            request.body.reserve(n.min(MAX_BODY_PREALLOC) as usize);
        }
        // Only ask for the body when the client is visibly waiting for permission.
        let continue_pending = expects_continue && self.buffered() == 0;
        self.state = State::Body { request, body, continue_pending };
        self.poll_body()
    }

    fn poll_body(&mut self) -> Result<ReadEvent, HttpError> {
        let State::Body { request, body, continue_pending } = &mut self.state else {
            return Ok(ReadEvent::NeedMore);
        };
        if *continue_pending {
            *continue_pending = false;
            if self.buf.len() == self.pos {
                return Ok(ReadEvent::SendContinue);
            }
        }
        let available = &self.buf[self.pos..];
        let done = match body {
            BodyState::Length(remaining) => {
                let take = available.len().min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                request.body.extend_from_slice(&available[..take]);
                self.pos += take;
                *remaining -= take as u64;
                *remaining == 0
            }
            BodyState::Chunked(decoder) => {
                let progress = decoder.decode(available, &mut request.body)?;
                self.pos += progress.consumed;
                progress.done
            }
        };
        if !done {
            return Ok(ReadEvent::NeedMore);
        }
        match std::mem::replace(&mut self.state, State::Head(HeadScan::default())) {
            State::Body { request, .. } => Ok(ReadEvent::Request(*request)),
            // The state was Body above; keep whatever it is rather than panic.
            other => {
                self.state = other;
                Ok(ReadEvent::NeedMore)
            }
        }
    }
}

/// How the body of a parsed head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Parse a complete head (ending with its empty line) and decide the body framing.
fn parse_head<'b>(
    head: &'b [u8],
    request_line: &[u8],
    headers: &mut [httparse::Header<'b>],
    limits: &Limits,
) -> Result<(Request, Framing, bool), HttpError> {
    let mut parsed = httparse::Request::new(headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HttpError::bad_request("malformed request head")),
        Err(httparse::Error::Version) => return Err(version_error(request_line)),
        Err(err) => return Err(from_httparse(err)),
    }
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version) else {
        return Err(HttpError::bad_request("malformed request line"));
    };
    let version = if minor == 0 { Version::Http10 } else { Version::Http11 };
    let (path, query) = split_target(method, target)?;

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut hosts = 0usize;
    let mut expects_continue = false;
    let mut out_headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = latin1(h.value);
        match name.as_str() {
            "content-length" => {
                let n = parse_content_length(&value)?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(HttpError::bad_request("conflicting content-length headers"));
                }
                content_length = Some(n);
            }
            "transfer-encoding" => {
                check_transfer_encoding(&value)?;
                if transfer_encoding {
                    // A second field line means chunked twice or a non-final chunked.
                    return Err(HttpError::bad_request("transfer-encoding repeated"));
                }
                transfer_encoding = true;
            }
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    conn_close |= token.eq_ignore_ascii_case("close");
                    conn_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
            "host" => {
                check_authority(h.value)?;
                hosts += 1;
            }
            "expect" if version == Version::Http11 => {
                if !value.trim().eq_ignore_ascii_case("100-continue") {
                    return Err(HttpError::new(417, "unsupported expectation"));
                }
                expects_continue = true;
            }
            _ => {}
        }
        out_headers.push((name, value));
    }

    // RFC 9112 §3.2: exactly one Host on 1.1; more than one is ambiguous on any version.
    if hosts > 1 || (hosts == 0 && version == Version::Http11) {
        return Err(HttpError::bad_request("missing or repeated host header"));
    }
    let framing = match (transfer_encoding, content_length) {
        (true, Some(_)) => return Err(HttpError::bad_request("both content-length and transfer-encoding")),
        (true, None) if version == Version::Http10 => {
            return Err(HttpError::bad_request("transfer-encoding on http/1.0"));
        }
        (true, None) => Framing::Chunked,
        (false, Some(n)) if n > limits.max_body_bytes => {
            return Err(HttpError::new(413, "request body too large"));
        }
        (false, Some(0)) | (false, None) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
    };
    let keep_alive = match version {
        Version::Http11 => !conn_close,
        Version::Http10 => conn_keep_alive && !conn_close,
    };
    let request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        path,
        query,
        version,
        headers: out_headers,
        body: Vec::new(),
        keep_alive,
    };
    Ok((request, framing, expects_continue && framing != Framing::None))
}

/// httparse reports any unexpected version text as `Version`; a well-formed but
/// unsupported `HTTP/x.y` deserves 505, garbage deserves 400.
fn version_error(request_line: &[u8]) -> HttpError {
    let line = request_line.strip_suffix(b"\r").unwrap_or(request_line);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [_, _, version] = parts.as_slice() else {
        return HttpError::bad_request("malformed request line");
    };
    let well_formed = version.strip_prefix(b"HTTP/").is_some_and(|v| {
        let mut parts = v.splitn(2, |&b| b == b'.');
        let major = parts.next().unwrap_or(b"");
        let minor_ok = parts.next().is_none_or(|m| !m.is_empty() && m.iter().all(u8::is_ascii_digit));
        !major.is_empty() && major.iter().all(u8::is_ascii_digit) && minor_ok
    });
    if well_formed && *version != b"HTTP/1.0" && *version != b"HTTP/1.1" {
        HttpError::new(505, "http version not supported")
    } else {
        HttpError::bad_request("malformed http version")
    }
}

/// Content-Length must be plain digits: no sign, no hex, no list, no spaces inside.
fn parse_content_length(value: &str) -> Result<u64, HttpError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::bad_request("malformed content-length"));
    }
    // All digits, so the only failure is overflow: certainly larger than any limit.
    value.parse::<u64>().map_err(|_| HttpError::new(413, "request body too large"))
}

/// Only a single `chunked` coding is supported. Other codings are 501 (RFC 9112 §6.1:
/// "not understood"); `chunked` not last, repeated, or an empty list element is 400.
fn check_transfer_encoding(value: &str) -> Result<(), HttpError> {
    let codings: Vec<&str> = value.split(',').map(|c| c.trim_matches([' ', '\t'])).collect();
    let Some((last, rest)) = codings.split_last() else {
        return Err(HttpError::bad_request("malformed transfer-encoding"));
    };
    if codings.iter().any(|c| c.is_empty()) {
        return Err(HttpError::bad_request("malformed transfer-encoding"));
    }
    if !last.eq_ignore_ascii_case("chunked") || rest.iter().any(|c| c.eq_ignore_ascii_case("chunked")) {
        return Err(HttpError::bad_request("transfer-encoding must end with a single chunked"));
    }
    if !rest.is_empty() {
        return Err(HttpError::new(501, "unsupported transfer-encoding"));
    }
    Ok(())
}

/// Split a request-target into (path, query). Origin-form and absolute-form are accepted;
/// `*` only for OPTIONS; authority-form (CONNECT) and fragments are not.
fn split_target(method: &str, target: &str) -> Result<(String, Option<String>), HttpError> {
    const BAD: HttpError = HttpError::bad_request("malformed request target");
    if target.contains('#') {
        return Err(BAD);
    }
    let rest = if target.starts_with('/') {
        target
    } else if target == "*" {
        return if method == "OPTIONS" { Ok(("*".to_owned(), None)) } else { Err(BAD) };
    } else {
        let after_scheme = strip_prefix_ignore_case(target, "http://")
            .or_else(|| strip_prefix_ignore_case(target, "https://"))
            .ok_or(BAD)?;
        let authority_end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
        // RFC 9110 §4.2.1: an http(s) URI with an empty host is invalid; §4.2.4: userinfo
        // is an error (check_authority refuses `@`).
        if authority_end == 0 {
            return Err(BAD);
        }
        check_authority(&after_scheme.as_bytes()[..authority_end])?;
        &after_scheme[authority_end..]
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (rest, None),
    };
    let path = if path.is_empty() { "/".to_owned() } else { path.to_owned() };
    Ok((path, query))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Header bytes as a String, mapping obs-text (>= 0x80) as Latin-1.
fn latin1(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if bytes.is_ascii() => s.to_owned(),
        _ => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits =
        Limits { max_request_line: 100, max_headers: 10, max_header_bytes: 512, max_body_bytes: 1000 };

    /// Feed `input` in one push or byte by byte; collect requests until NeedMore at the end.
    fn feed(input: &[u8], limits: Limits, bytewise: bool) -> Result<(Vec<Request>, usize), HttpError> {
        let mut reader = RequestReader::new(limits);
        let mut out = Vec::new();
        let mut continues = 0;
        let chunks: Vec<&[u8]> = if bytewise { input.chunks(1).collect() } else { vec![input] };
        for chunk in chunks {
            reader.push(chunk);
            loop {
                match reader.poll()? {
                    ReadEvent::NeedMore => break,
                    ReadEvent::SendContinue => continues += 1,
                    ReadEvent::Request(r) => out.push(r),
                }
            }
        }
        Ok((out, continues))
    }

    /// Both feeding modes must agree on the requests (or the error status).
    fn parse_all(input: &[u8], limits: Limits) -> Result<Vec<Request>, HttpError> {
        let whole = feed(input, limits, false).map(|(r, _)| r);
        let bytewise = feed(input, limits, true).map(|(r, _)| r);
        match (&whole, &bytewise) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "whole vs bytewise"),
            (Err(a), Err(b)) => assert_eq!(a.status, b.status, "whole vs bytewise error"),
            _ => panic!("whole {whole:?} vs bytewise {bytewise:?}"),
        }
        whole
    }

    /// `req!(name, bytes, |reqs| assertions)` or `req!(name, bytes, Err(status))`.
    macro_rules! req {
        ($name:ident, $input:expr, Err($status:expr)) => {
            #[test]
            fn $name() {
                let err = parse_all($input, LIMITS).expect_err("should be rejected");
                assert_eq!(err.status, $status, "{err:?}");
            }
        };
        ($name:ident, $input:expr, |$r:ident| $body:expr) => {
            #[test]
            fn $name() {
                let reqs = parse_all($input, LIMITS).expect("should parse");
                assert_eq!(reqs.len(), 1, "{reqs:?}");
                let $r = &reqs[0];
                $body
            }
        };
    }

    // --- plain requests
    req!(simple_get, b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n", |r| {
        assert_eq!((r.method.as_str(), r.path.as_str(), r.query.as_deref()), ("GET", "/index.html", None));
        assert_eq!(r.version, Version::Http11);
        assert!(r.keep_alive && r.body.is_empty());
        assert_eq!(r.headers, vec![("host".to_owned(), "a".to_owned())]);
    });
    req!(query_split, b"GET /a%20b?x=1&y=?z HTTP/1.1\r\nHost: a\r\n\r\n", |r| {
        assert_eq!((r.path.as_str(), r.query.as_deref()), ("/a%20b", Some("x=1&y=?z")));
        assert_eq!(r.target, "/a%20b?x=1&y=?z");
    });
    req!(empty_query, b"GET /?  HTTP/1.1\r\nHost: a\r\n\r\n", Err(400));
    req!(empty_query_kept, b"GET /p? HTTP/1.1\r\nHost: a\r\n\r\n", |r| assert_eq!(r.query.as_deref(), Some("")));
    req!(
        header_names_lowercased_repeats_kept,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nACCEPT:  text/html \r\n\r\n",
        |r| {
            assert_eq!(r.header("x-a"), Some("1"));
            assert_eq!(r.headers.iter().filter(|(n, _)| n == "x-a").count(), 2);
            assert_eq!(r.header("accept"), Some("text/html"));
        }
    );
    req!(latin1_values, b"GET / HTTP/1.1\r\nHost: a\r\nX-N: caf\xe9\r\n\r\n", |r| assert_eq!(
        r.header("x-n"),
        Some("caf\u{e9}")
    ));
    req!(bare_lf_line_endings, b"GET / HTTP/1.1\nHost: a\n\n", |r| assert_eq!(r.path, "/"));
    req!(leading_empty_lines_ignored, b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", |r| assert_eq!(r.path, "/"));
    req!(head_method, b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", |r| assert!(r.is_head()));
    req!(absolute_form, b"GET http://example.com:8080/path?x HTTP/1.1\r\nHost: a\r\n\r\n", |r| {
        assert_eq!((r.path.as_str(), r.query.as_deref()), ("/path", Some("x")));
        assert_eq!(r.target, "http://example.com:8080/path?x");
    });
    req!(absolute_form_no_path, b"GET HTTPS://example.com?q HTTP/1.1\r\nHost: a\r\n\r\n", |r| {
        assert_eq!((r.path.as_str(), r.query.as_deref()), ("/", Some("q")));
    });
    req!(absolute_form_no_authority, b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", Err(400));
    req!(options_star, b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", |r| assert_eq!(r.path, "*"));
    req!(star_not_options, b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", Err(400));
    req!(relative_target, b"GET index.html HTTP/1.1\r\nHost: a\r\n\r\n", Err(400));
    req!(authority_form, b"CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n", Err(400));
    req!(fragment_rejected, b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", Err(400));

    // --- keep-alive
    req!(http11_close, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n", |r| assert!(!r.keep_alive));
    req!(http11_close_in_list, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", |r| assert!(
        !r.keep_alive
    ));
    req!(http10_default_close, b"GET / HTTP/1.0\r\n\r\n", |r| {
        assert_eq!(r.version, Version::Http10);
        assert!(!r.keep_alive);
    });
    req!(http10_keep_alive, b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", |r| assert!(r.keep_alive));

    // --- versions and malformed heads
    req!(http2_is_505, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Err(505));
    req!(http12_is_505, b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", Err(505));
    req!(http3_no_minor_is_505, b"GET / HTTP/3\r\nHost: a\r\n\r\n", Err(505));
    req!(garbage_version_is_400, b"GET / HTTX/1.1\r\nHost: a\r\n\r\n", Err(400));
    req!(lowercase_version_is_400, b"GET / http/1.1\r\nHost: a\r\n\r\n", Err(400));
    req!(missing_version, b"GET /\r\nHost: a\r\n\r\n", Err(400));
    req!(space_before_colon, b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", Err(400));
    req!(obs_fold, b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  continued\r\n\r\n", Err(400));
    req!(bad_header_name, b"GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n", Err(400));
    req!(missing_host_http11, b"GET / HTTP/1.1\r\n\r\n", Err(400));
    req!(double_host, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Err(400));
    req!(double_identical_host, b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Err(400));
    req!(double_host_http10, b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", Err(400));
    req!(host_with_space, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Err(400));
    req!(host_with_slash, b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Err(400));
    req!(host_with_userinfo, b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", Err(400));
    req!(host_port_out_of_range, b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", Err(400));
    req!(host_port_not_digits, b"GET / HTTP/1.1\r\nHost: a:x\r\n\r\n", Err(400));
    req!(host_bad_on_http10, b"GET / HTTP/1.0\r\nHost: a b\r\n\r\n", Err(400));
    req!(host_empty_port_ok, b"GET / HTTP/1.1\r\nHost: a:\r\n\r\n", |r| assert_eq!(r.header("host"), Some("a:")));
    req!(host_empty_ok, b"GET / HTTP/1.1\r\nHost:\r\n\r\n", |r| assert_eq!(r.header("host"), Some("")));
    req!(host_ipv6_ok, b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", |r| assert_eq!(
        r.header("host"),
        Some("[::1]:8080")
    ));
    req!(host_trailing_space_trimmed, b"GET / HTTP/1.1\r\nHost: a:80 \r\n\r\n", |r| assert_eq!(
        r.header("host"),
        Some("a:80")
    ));
    req!(absolute_form_userinfo, b"GET http://u@a/x HTTP/1.1\r\nHost: a\r\n\r\n", Err(400));
    req!(absolute_form_bad_port, b"GET http://a:99999/x HTTP/1.1\r\nHost: a\r\n\r\n", Err(400));
    req!(lone_cr_before_request, b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", Err(400));
    req!(unknown_expectation, b"POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", Err(417));

    // --- limits
    req!(request_line_too_long, format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100)).as_bytes(), Err(414));
    req!(request_line_too_long_unterminated, format!("GET /{}", "a".repeat(200)).as_bytes(), Err(414));
    req!(
        request_line_at_limit,
        format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(86)).as_bytes(),
        |r| assert_eq!(r.path.len(), 87)
    );
    req!(too_many_headers, format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: 1\r\n".repeat(10)).as_bytes(), Err(431));
    req!(
        max_headers_ok,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: 1\r\n".repeat(9)).as_bytes(),
        |r| assert_eq!(r.headers.len(), 10)
    );
    req!(head_too_large, format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(500)).as_bytes(), Err(431));
    req!(head_too_large_unterminated, format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(600)).as_bytes(), Err(431));
    req!(body_over_limit_from_length, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n", Err(413));
    req!(
        body_at_limit,
        format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{}", "b".repeat(1000)).as_bytes(),
        |r| assert_eq!(r.body.len(), 1000)
    );
    req!(
        chunked_over_limit,
        format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n{}\r\n1\r\n", "b".repeat(1000))
            .as_bytes(),
        Err(413)
    );

    // --- bodies
    req!(content_length_body, b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", |r| assert_eq!(
        r.body,
        b"hello"
    ));
    req!(
        identical_duplicate_length_ok,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        |r| assert_eq!(r.body, b"ok")
    );
    req!(zero_length, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", |r| assert!(r.body.is_empty()));
    req!(chunked_body, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n", |r| assert_eq!(r.body, b"hello world"));
    req!(
        chunked_case_insensitive,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
        |r| assert!(r.body.is_empty())
    );
    req!(get_with_body, b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", |r| assert_eq!(r.body, b"abc"));
    req!(http10_length_body, b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc", |r| assert_eq!(r.body, b"abc"));

    // --- smuggling
    req!(
        cl_and_te,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Err(400)
    );
    req!(
        te_and_cl,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        Err(400)
    );
    req!(
        differing_lengths,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        Err(400)
    );
    req!(length_plus_sign, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", Err(400));
    req!(length_hex, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", Err(400));
    req!(length_inner_space, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello", Err(400));
    req!(length_list, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", Err(400));
    req!(length_empty, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", Err(400));
    req!(length_negative, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", Err(400));
    req!(length_overflow, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", Err(413));
    req!(te_not_chunked_last, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Err(400));
    req!(te_gzip_only, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", Err(400));
    req!(te_gzip_then_chunked_501, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Err(501));
    req!(te_chunked_twice, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Err(400));
    req!(
        te_two_fields,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        Err(400)
    );
    req!(te_empty, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", Err(400));
    req!(te_junk_suffix, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n", Err(400));
    req!(te_on_http10, b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Err(400));
    req!(bad_chunk_size, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", Err(400));
    req!(
        chunk_missing_crlf,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
        Err(400)
    );
    req!(
        chunk_size_overflow,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
        Err(400)
    );

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let input = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n\
GET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let reqs = parse_all(input, LIMITS).expect("pipelined");
        let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/1", "/2", "/3", "/4"]);
        assert_eq!(reqs[1].body, b"abc");
        assert_eq!(reqs[2].body, b"z");
        assert!(!reqs[3].keep_alive);
    }

    #[test]
    fn partial_head_then_rest() {
        let mut reader = RequestReader::new(LIMITS);
        assert_eq!(reader.phase(), Phase::Idle);
        reader.push(b"GET / HT");
        assert_eq!(reader.poll(), Ok(ReadEvent::NeedMore));
        assert_eq!(reader.phase(), Phase::Head);
        reader.push(b"TP/1.1\r\nHost: a\r\n\r\nGET /next");
        assert!(matches!(reader.poll(), Ok(ReadEvent::Request(r)) if r.path == "/"));
        assert_eq!(reader.poll(), Ok(ReadEvent::NeedMore));
        assert_eq!(reader.phase(), Phase::Head);
        assert_eq!(reader.buffered(), 9);
    }

    #[test]
    fn phases_through_a_body() {
        let mut reader = RequestReader::new(LIMITS);
        reader.push(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab");
        assert_eq!(reader.poll(), Ok(ReadEvent::NeedMore));
        assert_eq!(reader.phase(), Phase::Body);
        reader.push(b"cd");
        assert!(matches!(reader.poll(), Ok(ReadEvent::Request(r)) if r.body == b"abcd"));
        assert_eq!(reader.phase(), Phase::Idle);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn expect_continue_once_when_body_not_sent() {
        let mut reader = RequestReader::new(LIMITS);
        reader.push(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(reader.poll(), Ok(ReadEvent::SendContinue));
        assert_eq!(reader.pending_head().map(|r| r.method.as_str()), Some("PUT"));
        assert_eq!(reader.poll(), Ok(ReadEvent::NeedMore));
        reader.push(b"abc");
        assert!(matches!(reader.poll(), Ok(ReadEvent::Request(r)) if r.body == b"abc"));
    }

    #[test]
    fn expect_continue_skipped_when_body_already_here_or_absent_or_too_large() {
        let (reqs, continues) =
            feed(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc", LIMITS, false)
                .expect("ok");
        assert_eq!((reqs.len(), continues), (1, 0));
        let (reqs, continues) =
            feed(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", LIMITS, false).expect("ok");
        assert_eq!((reqs.len(), continues), (1, 0));
        let err =
            feed(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n", LIMITS, false)
                .expect_err("413 before continue");
        assert_eq!(err.status, 413);
    }

    #[test]
    fn errors_are_sticky() {
        let mut reader = RequestReader::new(LIMITS);
        reader.push(b"GET / HTTP/9.9\r\nHost: a\r\n\r\n");
        assert_eq!(reader.poll().map_err(|e| e.status), Err(505));
        reader.push(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(reader.poll().map_err(|e| e.status), Err(505));
    }

    #[test]
    fn many_headers_use_heap_path() {
        let limits = Limits { max_headers: 200, max_header_bytes: 8192, ..LIMITS };
        let input = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X-H: v\r\n".repeat(150));
        let reqs = parse_all(input.as_bytes(), limits).expect("parse");
        assert_eq!(reqs[0].headers.len(), 151);
    }

    #[test]
    fn endless_empty_lines_are_bounded() {
        let err = feed(&b"\r\n".repeat(300), LIMITS, false).expect_err("bounded");
        assert_eq!(err.status, 431);
    }

    #[test]
    fn byte_by_byte_large_bodies_are_linear() {
        // 2 MB in 1-byte pushes: quadratic rescanning would take minutes, linear is instant.
        let limits = Limits { max_body_bytes: 4 << 20, ..LIMITS };
        let n = 1 << 20;
        let mut input = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        input.extend(std::iter::repeat_n(b'x', n));
        input.extend_from_slice(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        for _ in 0..1024 {
            input.extend_from_slice(b"400\r\n");
            input.extend(std::iter::repeat_n(b'y', 1024));
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(b"0\r\n\r\n");
        let start = std::time::Instant::now();
        let (reqs, _) = feed(&input, limits, true).expect("parse");
        assert_eq!(reqs.len(), 2);
        assert_eq!((reqs[0].body.len(), reqs[1].body.len()), (n, n));
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "too slow: {:?}", start.elapsed());
    }

    #[test]
    fn buffer_is_compacted_across_many_requests() {
        let mut reader = RequestReader::new(LIMITS);
        let one = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for _ in 0..10_000 {
            reader.push(one);
            reader.push(&one[..5]);
            assert!(matches!(reader.poll(), Ok(ReadEvent::Request(_))));
            reader.push(&one[5..]);
            assert!(matches!(reader.poll(), Ok(ReadEvent::Request(_))));
            assert_eq!(reader.poll(), Ok(ReadEvent::NeedMore));
        }
        assert!(reader.buf.capacity() < 64 * 1024, "buffer grew to {}", reader.buf.capacity());
    }

    #[test]
    fn target_splitting() {
        assert_eq!(split_target("GET", "/a?b").ok(), Some(("/a".to_owned(), Some("b".to_owned()))));
        assert_eq!(split_target("GET", "//x").ok(), Some(("//x".to_owned(), None)));
        assert_eq!(split_target("GET", "http://h").ok(), Some(("/".to_owned(), None)));
        assert!(split_target("GET", "ftp://h/x").is_err());
        assert!(split_target("GET", "").is_err());
    }
}
