//! Response serialization: status line, sanitized headers, framing, chunks.
//!
//! Headers arrive from workers and handlers, so they are untrusted: anything that could
//! split the response (CR, LF, NUL, a non-token name) is dropped, and the framing headers
//! are always written here from [`BodyFraming`], never copied from the caller.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Version;

/// Chunked terminator: the last chunk with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// `content-length: N`.
    Length(u64),
    /// `transfer-encoding: chunked`; the caller writes [`encode_chunk`]s and [`LAST_CHUNK`].
    Chunked,
    /// No length: the body ends when the connection closes (forces `connection: close`).
    CloseDelimited,
}

/// Headers the codec writes itself; copies from callers are dropped.
const HOP_BY_HOP: [&str; 4] = ["content-length", "transfer-encoding", "connection", "keep-alive"];

/// Serialize a response head into `out`.
///
/// `headers` are filtered (see module docs); `date` and `server: rustworkers` are added unless
/// present. A status outside 100..=999 is a caller bug and is written as 500.
pub fn encode_head(
    version: Version,
    status: u16,
    headers: &[(String, String)],
    framing: BodyFraming,
    keep_alive: bool,
    out: &mut Vec<u8>,
) {
    let status = if (100..=999).contains(&status) { status } else { 500 };
    // We always speak HTTP/1.1 (RFC 9110 §2.5); the client's version only shapes keep-alive.
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");

    let mut has_date = false;
    let mut has_server = false;
    for (name, value) in headers {
        if !is_token(name) || !is_safe_value(value) {
            continue;
        }
        if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            continue;
        }
        has_date |= name.eq_ignore_ascii_case("date");
        has_server |= name.eq_ignore_ascii_case("server");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_server {
        out.extend_from_slice(b"server: rustworkers\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        push_http_date(out);
        out.extend_from_slice(b"\r\n");
    }

    // 1xx, 204 and 304 never carry a body, so they get no framing headers (RFC 9110 §8.6).
    let bodiless = status < 200 || status == 204 || status == 304;
    let keep_alive = keep_alive && framing != BodyFraming::CloseDelimited;
    if !bodiless {
        match framing {
            BodyFraming::Length(n) => {
                out.extend_from_slice(b"content-length: ");
                push_decimal(out, n);
                out.extend_from_slice(b"\r\n");
            }
            BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            BodyFraming::CloseDelimited => {}
        }
    }
    match (version, keep_alive) {
        (Version::Http11, false) | (Version::Http10, false) => out.extend_from_slice(b"connection: close\r\n"),
        (Version::Http10, true) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        (Version::Http11, true) => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Head and body in one buffer. `head_only` (HEAD) keeps the body's content-length but
/// writes no body bytes.
pub fn encode_response(
    version: Version,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
    out: &mut Vec<u8>,
) {
    out.reserve(128 + body.len());
    encode_head(version, status, headers, BodyFraming::Length(body.len() as u64), keep_alive, out);
    let bodiless = status < 200 || status == 204 || status == 304;
    if !head_only && !bodiless {
        out.extend_from_slice(body);
    }
}

/// Append one chunk: `<hex len>\r\n<data>\r\n`. Empty data writes nothing (an empty chunk
/// would end the body).
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    out.reserve(data.len() + 20);
    push_hex(out, data.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The standard reason phrase, or the class name for unregistered codes.
#[allow(clippy::match_overlapping_arm)] // class ranges are fallbacks after the exact codes
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        511 => "Network Authentication Required",
        100..=199 => "Informational",
        200..=299 => "Success",
        300..=399 => "Redirection",
        400..=499 => "Client Error",
        500..=599 => "Server Error",
        _ => "Unknown",
    }
}

/// `(headers, body)` for a JSON error `{"error": message}`.
pub fn json_error(status: u16, message: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let _ = status; // the status goes on the status line; kept for call-site symmetry
    let mut body = Vec::with_capacity(message.len() + 16);
    body.extend_from_slice(b"{\"error\":");
    // serde_json escaping of a &str into a Vec cannot fail.
    if serde_json::to_writer(&mut body, message).is_err() {
        body.extend_from_slice(b"\"\"");
    }
    body.extend_from_slice(b"}");
    (vec![("content-type".to_string(), "application/json".to_string())], body)
}

/// RFC 9110 token: what a header name may be.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

fn is_safe_value(s: &str) -> bool {
    !s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

thread_local! {
    /// (unix second, formatted IMF-fixdate): formatting once per second is plenty.
    static DATE_CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

pub(crate) fn push_http_date(out: &mut Vec<u8>) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    DATE_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != now {
            *cache = (now, format_http_date(now));
        }
        out.extend_from_slice(&cache.1);
    });
}

/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT` (29 bytes).
pub(crate) fn format_http_date(unix_secs: u64) -> [u8; 29] {
    let text = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(unix_secs));
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    if text.len() == out.len() {
        out.copy_from_slice(text.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn head(version: Version, status: u16, headers: &[(&str, &str)], framing: BodyFraming, ka: bool) -> String {
        let mut out = Vec::new();
        encode_head(version, status, &h(headers), framing, ka, &mut out);
        String::from_utf8(out).expect("ascii head")
    }

    fn lines(s: &str) -> Vec<&str> {
        s.split("\r\n").collect()
    }

    #[test]
    fn basic_head_with_length() {
        let s = head(Version::Http11, 200, &[("content-type", "text/plain")], BodyFraming::Length(5), true);
        let l = lines(&s);
        assert_eq!(l[0], "HTTP/1.1 200 OK");
        assert!(l.contains(&"content-type: text/plain"));
        assert!(l.contains(&"content-length: 5"));
        assert!(l.contains(&"server: rustworkers"));
        assert!(l.iter().any(|x| x.starts_with("date: ") && x.ends_with(" GMT") && x.len() == 35));
        assert!(!s.to_ascii_lowercase().contains("connection"));
        assert!(s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn keep_alive_headers_by_version() {
        let s = head(Version::Http10, 200, &[], BodyFraming::Length(0), true);
        assert!(lines(&s).contains(&"connection: keep-alive"));
        let s = head(Version::Http10, 200, &[], BodyFraming::Length(0), false);
        assert!(lines(&s).contains(&"connection: close"));
        let s = head(Version::Http11, 200, &[], BodyFraming::Length(0), false);
        assert!(lines(&s).contains(&"connection: close"));
    }

    #[test]
    fn chunked_and_close_delimited_framing() {
        let s = head(Version::Http11, 200, &[], BodyFraming::Chunked, true);
        assert!(lines(&s).contains(&"transfer-encoding: chunked"));
        assert!(!s.contains("content-length"));
        let s = head(Version::Http11, 200, &[], BodyFraming::CloseDelimited, true);
        assert!(lines(&s).contains(&"connection: close"), "close-delimited forces close");
        assert!(!s.contains("content-length") && !s.contains("transfer-encoding"));
    }

    #[test]
    fn unsafe_and_hop_by_hop_headers_are_dropped() {
        let s = head(
            Version::Http11,
            200,
            &[
                ("x-ok", "fine"),
                ("x-split", "a\r\nset-cookie: evil"),
                ("x-nul", "a\0b"),
                ("bad name", "v"),
                ("bad:name", "v"),
                ("", "v"),
                ("Content-Length", "999"),
                ("Transfer-Encoding", "chunked"),
                ("Connection", "upgrade"),
                ("Keep-Alive", "timeout=5"),
            ],
            BodyFraming::Length(2),
            true,
        );
        assert!(lines(&s).contains(&"x-ok: fine"));
        for bad in
            ["x-split", "set-cookie", "x-nul", "bad", "999", "Transfer-Encoding", "Connection", "Keep-Alive", ": v"]
        {
            assert!(!s.contains(bad), "{bad} leaked into {s:?}");
        }
        assert_eq!(s.matches("content-length").count(), 1);
    }

    #[test]
    fn caller_date_and_server_are_kept() {
        let s = head(Version::Http11, 200, &[("Server", "app"), ("Date", "x")], BodyFraming::Length(0), true);
        assert!(lines(&s).contains(&"Server: app") && lines(&s).contains(&"Date: x"));
        assert!(!s.contains("rustworkers") && !s.contains("date: "));
    }

    #[test]
    fn bodiless_statuses_have_no_framing() {
        for status in [101u16, 204, 304] {
            let mut out = Vec::new();
            encode_response(Version::Http11, status, &[], b"ignored", true, false, &mut out);
            let s = String::from_utf8(out).expect("ascii");
            assert!(!s.contains("content-length") && !s.contains("ignored"), "{status}: {s}");
        }
    }

    #[test]
    fn invalid_status_becomes_500_and_unknown_gets_class_phrase() {
        assert!(
            head(Version::Http11, 42, &[], BodyFraming::Length(0), true)
                .starts_with("HTTP/1.1 500 Internal Server Error\r\n")
        );
        assert!(head(Version::Http11, 299, &[], BodyFraming::Length(0), true).starts_with("HTTP/1.1 299 Success\r\n"));
    }

    #[test]
    fn encode_response_full_and_head_only() {
        let mut out = Vec::new();
        encode_response(Version::Http11, 404, &[], b"nope", true, false, &mut out);
        let s = String::from_utf8(out).expect("ascii");
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n") && s.ends_with("\r\n\r\nnope"));
        assert!(s.contains("content-length: 4\r\n"));
        let mut out = Vec::new();
        encode_response(Version::Http11, 200, &[], b"body!", true, true, &mut out);
        let s = String::from_utf8(out).expect("ascii");
        assert!(s.contains("content-length: 5\r\n") && s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn chunks() {
        let mut out = Vec::new();
        encode_chunk(b"", &mut out);
        assert!(out.is_empty());
        encode_chunk(b"hello", &mut out);
        encode_chunk(&[b'x'; 26], &mut out);
        out.extend_from_slice(LAST_CHUNK);
        let mut expected = b"5\r\nhello\r\n1a\r\n".to_vec();
        expected.extend_from_slice(&[b'x'; 26]);
        expected.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(out, expected);
    }

    #[test]
    fn json_error_escapes() {
        let (headers, body) = json_error(400, "bad \"quote\"\n");
        assert_eq!(headers, h(&[("content-type", "application/json")]));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid json");
        assert_eq!(v["error"], "bad \"quote\"\n");
    }

    #[test]
    fn http_dates() {
        assert_eq!(&format_http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format_http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format_http_date(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&format_http_date(1_735_689_599), b"Tue, 31 Dec 2024 23:59:59 GMT");
    }

    #[test]
    fn decimal_and_hex() {
        let mut out = Vec::new();
        push_decimal(&mut out, 0);
        out.push(b' ');
        push_decimal(&mut out, u64::MAX);
        out.push(b' ');
        push_hex(&mut out, 0xdead_beef);
        assert_eq!(out, b"0 18446744073709551615 deadbeef");
    }
}
