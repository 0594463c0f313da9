//! The one mapping from front-end parse failures to HTTP status codes.
//!
//! Every rejection the codec makes is an [`HttpError`]: a status and a short static reason.
//! The dispatcher answers it with [`HttpError::response_bytes`] and closes the connection,
//! because after a framing error the position of the next request is unknown.

use std::fmt;

use super::Version;
use super::response::{encode_response, json_error};

/// A request the codec refuses; answer `status` and close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpError {
    /// HTTP status to answer with (400, 413, 414, 417, 431, 501, 505).
    pub status: u16,
    /// Short lowercase explanation, sent as `{"error": reason}`.
    pub reason: &'static str,
}

impl HttpError {
    pub(crate) const fn new(status: u16, reason: &'static str) -> HttpError {
        HttpError { status, reason }
    }

    /// 400 with `reason`.
    pub(crate) const fn bad_request(reason: &'static str) -> HttpError {
        HttpError::new(400, reason)
    }

    /// The full response: status line, JSON body `{"error": reason}`, `connection: close`.
    pub fn response_bytes(&self) -> Vec<u8> {
        let (headers, body) = json_error(self.status, self.reason);
        let mut out = Vec::with_capacity(160 + body.len());
        encode_response(Version::Http11, self.status, &headers, &body, false, false, &mut out);
        out
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http {}: {}", self.status, self.reason)
    }
}

impl std::error::Error for HttpError {}

/// Map an httparse failure to a status. `Version` is refined by the caller (505 vs 400).
pub(crate) fn from_httparse(err: httparse::Error) -> HttpError {
    use httparse::Error as E;
    match err {
        E::TooManyHeaders => HttpError::new(431, "too many headers"),
        E::Version => HttpError::bad_request("malformed http version"),
        E::HeaderName => HttpError::bad_request("malformed header name"),
        E::HeaderValue => HttpError::bad_request("malformed header value"),
        E::NewLine => HttpError::bad_request("malformed line ending"),
        E::Token => HttpError::bad_request("malformed request line"),
        E::Status => HttpError::bad_request("malformed request line"),
    }
}
