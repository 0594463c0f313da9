//! The HTTP/1.1 front codec, sans-IO.
//!
//! Owns request parsing ([`RequestReader`]: httparse heads, Content-Length and chunked
//! bodies, limits, smuggling checks, pipelining, `Expect: 100-continue`), response
//! serialization ([`encode_head`], [`encode_response`], [`encode_chunk`]) and the small
//! helpers the dispatcher needs around them ([`percent_decode`], [`request_id`],
//! [`json_error`]). It never touches a socket: the dispatcher pushes the bytes it read and
//! writes the bytes produced here, which keeps every rule unit-testable.

mod chunked;
pub mod date;
mod errors;
mod host;
#[cfg(test)]
pub(crate) mod proptests;
mod request;
mod response;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use errors::HttpError;
pub use request::{Phase, ReadEvent, Request, RequestReader};
pub use response::{BodyFraming, LAST_CHUNK, encode_chunk, encode_head, encode_response, json_error, reason_phrase};

/// The HTTP versions spoken; anything else is 505.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    /// `"1.0"` or `"1.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "1.0",
            Version::Http11 => "1.1",
        }
    }
}

/// Longest client-supplied X-Request-ID kept as is.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request's X-Request-ID: the client's value when sane (1..=128 chars of
/// `[A-Za-z0-9._:-]`), else a fresh 16-hex-digit id unique within this process.
pub fn request_id(req: &Request) -> String {
    if let Some(id) = req.header("x-request-id") {
        let sane = (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if sane {
            return id.to_owned();
        }
    }
    generate_request_id()
}

/// A fresh 16-hex-digit request id (for requests that did not come from a client).
pub fn request_id_fresh() -> String {
    generate_request_id()
}

/// The current time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), cached per second.
pub fn http_date_now() -> String {
    let mut out = Vec::with_capacity(29);
    response::push_http_date(&mut out);
    // The date is built from ASCII digits and names only.
    String::from_utf8(out).unwrap_or_default()
}

fn generate_request_id() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        mix64(nanos ^ (u64::from(std::process::id()) << 32))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // seed + n*odd is distinct for every n, and mix64 is a bijection: no repeats in-process,
    // while ids from different processes and restarts look unrelated.
    format!("{:016x}", mix64(seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15))))
}

/// splitmix64 finalizer (a bijection on u64).
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The value of one hex digit (either case), for percent-escapes and chunk sizes.
pub fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode a path. `Err` on a `%` not followed by two hex digits. `+` stays `+`.
#[allow(clippy::result_unit_err)] // contract signature; the only failure is "malformed escape"
pub fn percent_decode(s: &str) -> Result<Vec<u8>, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|&b| hex_digit(b)).ok_or(())?;
            let lo = bytes.get(i + 2).and_then(|&b| hex_digit(b)).ok_or(())?;
            out.push(hi * 16 + lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn req_with(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            target: "/".into(),
            path: "/".into(),
            query: None,
            version: Version::Http11,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: Vec::new(),
            keep_alive: true,
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%20b"), Ok(b"/a b".to_vec()));
        assert_eq!(percent_decode("%2F%2f%41"), Ok(b"//A".to_vec()));
        assert_eq!(percent_decode("a+b"), Ok(b"a+b".to_vec()));
        assert_eq!(percent_decode("%ff%00"), Ok(vec![0xff, 0]));
        assert_eq!(percent_decode(""), Ok(vec![]));
        for bad in ["%", "%2", "%zz", "%2g", "/x%", "%%41"] {
            assert_eq!(percent_decode(bad), Err(()), "{bad}");
        }
    }

    #[test]
    fn client_request_id_kept_when_sane() {
        assert_eq!(request_id(&req_with(&[("x-request-id", "abc-123_x.y:z")])), "abc-123_x.y:z");
        let long = "a".repeat(128);
        assert_eq!(request_id(&req_with(&[("x-request-id", &long)])), long);
    }

    #[test]
    fn insane_request_id_replaced() {
        let too_long = "a".repeat(129);
        for bad in ["", "has space", "semi;colon", "caf\u{e9}", too_long.as_str()] {
            let id = request_id(&req_with(&[("x-request-id", bad)]));
            assert_ne!(id, bad);
            assert_eq!(id.len(), 16);
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn generated_ids_are_unique() {
        let req = req_with(&[]);
        let ids: HashSet<String> = (0..10_000).map(|_| request_id(&req)).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn fresh_ids_and_date() {
        let a = request_id_fresh();
        assert_eq!(a.len(), 16);
        assert_ne!(a, request_id_fresh());
        let d = http_date_now();
        assert_eq!(d.len(), 29);
        assert!(d.ends_with(" GMT") && d.as_bytes()[3] == b',', "{d}");
    }

    #[test]
    fn version_strings() {
        assert_eq!(Version::Http10.as_str(), "1.0");
        assert_eq!(Version::Http11.as_str(), "1.1");
    }

    #[test]
    fn error_response_is_complete_json_and_closes() {
        let err = HttpError { status: 431, reason: "too many headers" };
        let bytes = err.response_bytes();
        let text = String::from_utf8(bytes).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head/body split");
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\nconnection: close"));
        assert!(head.contains("\r\ncontent-type: application/json"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        assert_eq!(body, r#"{"error":"too many headers"}"#);
    }
}
