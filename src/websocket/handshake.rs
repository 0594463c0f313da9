//! The server side of the opening handshake (RFC 6455 §4.2).

use crate::http::{Request, Version};

/// The GUID every server appends to the client's key (RFC 6455 §1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A valid upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// `Sec-WebSocket-Key`, as sent.
    pub key: String,
    /// `Sec-WebSocket-Protocol` offers, in the client's order.
    pub subprotocols: Vec<String>,
}

/// An upgrade request that cannot be accepted, with the status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// 400: the request asks for a WebSocket but is not a valid handshake.
    Bad(&'static str),
    /// 426 with `Sec-WebSocket-Version: 13`: a version this server does not speak.
    Version,
}

impl HandshakeError {
    pub fn status(self) -> u16 {
        match self {
            HandshakeError::Bad(_) => 400,
            HandshakeError::Version => 426,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            HandshakeError::Bad(why) => why,
            HandshakeError::Version => "unsupported Sec-WebSocket-Version (this server speaks 13)",
        }
    }
}

/// Whether `req` asks for a WebSocket (`Upgrade: websocket`), and if so whether it is a
/// valid opening handshake. `None`: an ordinary request.
pub fn check_upgrade(req: &Request) -> Option<Result<Upgrade, HandshakeError>> {
    if !header_tokens(req, "upgrade").any(|t| t.eq_ignore_ascii_case("websocket")) {
        return None;
    }
    Some(validate(req))
}

fn validate(req: &Request) -> Result<Upgrade, HandshakeError> {
    if req.method != "GET" {
        return Err(HandshakeError::Bad("a WebSocket handshake must be a GET"));
    }
    if req.version != Version::Http11 {
        return Err(HandshakeError::Bad("a WebSocket handshake needs HTTP/1.1"));
    }
    if !header_tokens(req, "connection").any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return Err(HandshakeError::Bad("Connection must include upgrade"));
    }
    if !req.body.is_empty() {
        return Err(HandshakeError::Bad("a WebSocket handshake has no body"));
    }
    let mut versions = headers(req, "sec-websocket-version");
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.trim() == "13" => {}
        (None, _) => return Err(HandshakeError::Bad("missing Sec-WebSocket-Version")),
        _ => return Err(HandshakeError::Version),
    }
    let mut keys = headers(req, "sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) if is_key(k.trim()) => k.trim().to_string(),
        _ => return Err(HandshakeError::Bad("Sec-WebSocket-Key must be one base64 value of 16 bytes")),
    };
    let subprotocols = header_tokens(req, "sec-websocket-protocol").map(str::to_string).collect();
    Ok(Upgrade { key, subprotocols })
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    base64(&sha.digest().bytes())
}

fn headers<'a>(req: &'a Request, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    req.headers.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Comma-separated tokens across every header of that name.
fn header_tokens<'a>(req: &'a Request, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers(req, name).flat_map(|v| v.split(',')).map(str::trim).filter(|t| !t.is_empty())
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A key is the base64 of 16 bytes: 22 alphabet characters then `==` (RFC 6455 §4.1).
fn is_key(k: &str) -> bool {
    let b = k.as_bytes();
    b.len() == 24 && b[22..] == *b"==" && b[..22].iter().all(|c| ALPHABET.contains(c))
        // The last character carries 2 bits: the other 4 must be zero.
        && ALPHABET.iter().position(|&c| c == b[21]).is_some_and(|v| v & 0x0f == 0)
}

fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            target: "/ws".into(),
            path: "/ws".into(),
            query: None,
            version: Version::Http11,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: Vec::new(),
            keep_alive: true,
        }
    }

    const GOOD: &[(&str, &str)] = &[
        ("host", "x"),
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
        ("sec-websocket-protocol", "chat, superchat"),
    ];

    #[test]
    fn rfc_sample_key() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn valid_handshake() {
        let up = check_upgrade(&req("GET", GOOD)).unwrap().unwrap();
        assert_eq!(up.subprotocols, vec!["chat", "superchat"]);
        assert!(check_upgrade(&req("GET", &[("host", "x")])).is_none());
    }

    #[test]
    fn invalid_handshakes() {
        let with = |name: &str, value: Option<&str>| {
            let mut h: Vec<(&str, &str)> = GOOD.iter().copied().filter(|(k, _)| *k != name).collect();
            if let Some(v) = value {
                h.push((name, v));
            }
            check_upgrade(&req("GET", &h)).unwrap()
        };
        assert_eq!(with("sec-websocket-version", Some("8")), Err(HandshakeError::Version));
        assert!(matches!(with("sec-websocket-version", None), Err(HandshakeError::Bad(_))));
        assert!(matches!(with("sec-websocket-key", Some("short")), Err(HandshakeError::Bad(_))));
        assert!(matches!(with("sec-websocket-key", Some("dGhlIHNhbXBsZSBub25jZR==")), Err(HandshakeError::Bad(_))));
        assert!(matches!(with("connection", Some("keep-alive")), Err(HandshakeError::Bad(_))));
        assert!(matches!(check_upgrade(&req("POST", GOOD)).unwrap(), Err(HandshakeError::Bad(_))));
        let mut old = req("GET", GOOD);
        old.version = Version::Http10;
        assert!(matches!(check_upgrade(&old).unwrap(), Err(HandshakeError::Bad(_))));
    }
}
