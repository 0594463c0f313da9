//! Authentication of requests: API keys from the config (compared in constant time)
//! and an optional check registered from Rust code (the uhttp-workers `do_check` role
//! on the dispatcher side).

use crate::config::AuthConfig;
use crate::http::Request;

/// What an auth check decided.
#[derive(Debug, Clone)]
pub enum AuthDecision {
    /// Go on; `context` travels to the worker with the request (`Request.context`).
    Allow { context: serde_json::Value },
    /// Answer now with this status and JSON body.
    Deny { status: u16, body: serde_json::Value },
}

/// A check registered from Rust code; runs after the API-key check passed.
pub type AuthCheck = Box<dyn Fn(&Request) -> AuthDecision>;

/// Check the configured API key header.
pub fn check_api_key(auth: &AuthConfig, req: &Request) -> AuthDecision {
    let presented = req.header(&auth.header).unwrap_or("");
    // Compare against every key without stopping early, so timing reveals nothing.
    let mut ok = false;
    for key in &auth.keys {
        ok |= constant_time_eq(presented.as_bytes(), key.as_bytes());
    }
    if ok && !presented.is_empty() {
        AuthDecision::Allow { context: serde_json::Value::Null }
    } else {
        AuthDecision::Deny { status: 401, body: serde_json::json!({"error": "unauthorized"}) }
    }
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | ((a.len() ^ b.len()) >> 8) as u8;
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0 && a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
