//! The JSON meta of each frame type (docs/protocol.md, "Frame types"), as serde structs.
//!
//! Unknown fields are ignored, so a newer peer may add fields without breaking an older
//! one; fields a peer may omit carry `#[serde(default)]`.

use serde::{Deserialize, Serialize};

/// `CONFIG` meta: the worker's settings, sent first and after each reload.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ConfigMeta {
    /// Protocol version, 1.
    pub protocol: u32,
    /// Pool name.
    pub pool: String,
    /// Slot index in the pool, from 0.
    pub worker_id: usize,
    /// Seconds between heartbeats.
    pub heartbeat_interval: f64,
    /// The pool's request timeout in seconds.
    pub timeout: f64,
    /// Python-style level name, e.g. `warning`.
    pub log_level: String,
    /// Free-form worker arguments from the pool config.
    pub kwargs: serde_json::Map<String, serde_json::Value>,
    /// Largest frame (header + meta + body) the dispatcher may send this worker; its
    /// decoder must accept every frame up to this size. Follows from the body limit
    /// ([`crate::ipc::frame_limit_for_body`]). A dispatcher that predates the field sends
    /// none: the worker then assumes the historical 64 MiB body limit.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u64,
}

/// What a worker assumes when CONFIG has no `max_frame_bytes`: the 64 MiB frame body
/// limit every worker used before the field existed.
pub const LEGACY_MAX_FRAME_BYTES: u64 = 20 + (1 << 20) + (64 << 20);

fn default_max_frame_bytes() -> u64 {
    LEGACY_MAX_FRAME_BYTES
}

/// `REQUEST` meta.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RequestMeta {
    /// HTTP method as received.
    pub method: String,
    /// Raw path, still percent-encoded, without the query.
    pub path: String,
    /// Raw query without `?`; `None` when the target had no `?`.
    pub query: Option<String>,
    /// Lower-cased names, order and repeats preserved.
    pub headers: Vec<(String, String)>,
    /// Client address.
    pub remote_addr: String,
    /// Client port.
    pub remote_port: u16,
    /// `1.0` or `1.1`.
    pub http_version: String,
    /// The request's X-Request-ID (received or generated).
    pub x_request_id: String,
    /// True for a request injected by another worker's `FORWARD`.
    #[serde(default)]
    pub forwarded: bool,
    /// Whatever the auth check attached (`null` when nothing).
    #[serde(default)]
    pub context: serde_json::Value,
}

impl RequestMeta {
    /// Exactly serde's JSON for this struct (its field order; `proptests` checks it byte
    /// for byte), written without serde's per-byte escaping loop: every request carries
    /// one, and its strings almost never need an escape (a string that does goes to
    /// serde_json).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"method\":");
        json_str(out, &self.method);
        out.extend_from_slice(b",\"path\":");
        json_str(out, &self.path);
        out.extend_from_slice(b",\"query\":");
        match &self.query {
            Some(q) => json_str(out, q),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"headers\":[");
        for (i, (name, value)) in self.headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            json_str(out, name);
            out.push(b',');
            json_str(out, value);
            out.push(b']');
        }
        out.extend_from_slice(b"],\"remote_addr\":");
        json_str(out, &self.remote_addr);
        out.extend_from_slice(b",\"remote_port\":");
        out.extend_from_slice(self.remote_port.to_string().as_bytes());
        out.extend_from_slice(b",\"http_version\":");
        json_str(out, &self.http_version);
        out.extend_from_slice(b",\"x_request_id\":");
        json_str(out, &self.x_request_id);
        out.extend_from_slice(if self.forwarded { b",\"forwarded\":true" } else { b",\"forwarded\":false" });
        out.extend_from_slice(b",\"context\":");
        if self.context.is_null() {
            out.extend_from_slice(b"null");
        } else if serde_json::to_writer(&mut *out, &self.context).is_err() {
            out.extend_from_slice(b"null"); // a Value always serializes; unreachable
        }
        out.push(b'}');
    }
}

/// A JSON string as serde_json writes it: copied between quotes when nothing in it needs
/// an escape (controls, `"`, `\\`; serde_json leaves the rest of UTF-8 as is).
fn json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\""); // writing to a Vec cannot fail; unreachable
    }
}

/// `RESPONSE` and `STREAM_START` meta.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ResponseMeta {
    /// HTTP status of a final response, 200..=599.
    pub status: u16,
    /// Response headers (framing headers are ignored by the dispatcher).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// `HELLO` meta.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HelloMeta {
    /// The worker's pid.
    pub pid: u32,
    /// Requests the worker takes at once.
    #[serde(default = "default_credits")]
    pub credits: u32,
    /// The worker takes WebSockets (`WS_OPEN`); only protocol 2 workers say so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub websocket: bool,
    /// Requests the worker may be given beyond its credits, to queue unstarted: it
    /// starts requests in the order given, at most `credits` at a time (docs/protocol.md,
    /// "Prefetch"). 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefetch: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_credits() -> u32 {
    1
}

/// `HEARTBEAT` meta.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct HeartbeatMeta {
    /// Request ids the worker holds.
    #[serde(default)]
    pub in_hand: Vec<u64>,
    /// Request ids whose timeout restarts now (`keep_alive()`).
    #[serde(default)]
    pub extend: Vec<u64>,
}

/// `LOG` meta.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LogMeta {
    /// Python level: 10 debug, 20 info, 30 warning, 40 error, 50 critical.
    pub level: u32,
    /// Logger name.
    #[serde(default)]
    pub name: String,
    /// The message.
    pub msg: String,
}

/// `CREDIT` meta.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CreditMeta {
    /// New capacity; 0 pauses the worker.
    pub credits: u32,
}

/// `FORWARD` meta.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ForwardMeta {
    /// Path used to pick the target pool.
    pub route: String,
    /// Method of the injected request.
    #[serde(default = "default_forward_method")]
    pub method: String,
    /// Content-Type of the injected request.
    #[serde(default)]
    pub content_type: Option<String>,
}

fn default_forward_method() -> String {
    "POST".to_string()
}

/// `FLOW` meta.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FlowMeta {
    /// True: stop sending chunks for this stream; false: resume.
    pub paused: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::frame::{FrameDecoder, FrameType, encode_json};
    use serde_json::json;

    /// Encodes `meta` in a frame, decodes it, and parses the meta back.
    fn round_trip<T>(kind: FrameType, meta: &T) -> T
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        let mut out = Vec::new();
        encode_json(&mut out, kind, 5, meta, b"body").unwrap();
        let mut d = FrameDecoder::new(crate::ipc::frame_limit_for_body(16));
        d.push(&out);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!((f.kind, f.request_id, &f.body[..]), (kind, 5, &b"body"[..]));
        f.meta_json().unwrap()
    }

    #[test]
    fn every_meta_round_trips() {
        let mut kwargs = serde_json::Map::new();
        kwargs.insert("db".into(), json!({"url": "sqlite://", "pool": [1, 2]}));
        let c = ConfigMeta {
            protocol: 1,
            pool: "api".into(),
            worker_id: 3,
            heartbeat_interval: 1.5,
            timeout: 30.0,
            log_level: "warning".into(),
            kwargs,
            max_frame_bytes: crate::ipc::frame_limit_for_body(100 << 20),
        };
        assert_eq!(round_trip(FrameType::Config, &c), c);

        let r = RequestMeta {
            method: "POST".into(),
            path: "/api/it%20ems".into(),
            query: Some("a=1&b=2".into()),
            headers: vec![("host".into(), "x".into()), ("x-a".into(), "1".into()), ("x-a".into(), "é".into())],
            remote_addr: "::1".into(),
            remote_port: 65535,
            http_version: "1.1".into(),
            x_request_id: "abc".into(),
            forwarded: true,
            context: json!({"user": "bob"}),
        };
        assert_eq!(round_trip(FrameType::Request, &r), r);
        let r0 = RequestMeta { query: None, context: serde_json::Value::Null, ..r };
        assert_eq!(round_trip(FrameType::Request, &r0), r0);

        let s = ResponseMeta { status: 404, headers: vec![("content-type".into(), "text/plain".into())] };
        assert_eq!(round_trip(FrameType::Response, &s), s);
        assert_eq!(round_trip(FrameType::StreamStart, &s), s);
        let h = HelloMeta { pid: 1234, credits: 8, websocket: false, prefetch: 0 };
        assert_eq!(round_trip(FrameType::Hello, &h), h);
        let hb = HeartbeatMeta { in_hand: vec![1, u64::MAX], extend: vec![1] };
        assert_eq!(round_trip(FrameType::Heartbeat, &hb), hb);
        let l = LogMeta { level: 40, name: "Items[0]".into(), msg: "boom\nline".into() };
        assert_eq!(round_trip(FrameType::Log, &l), l);
        let cr = CreditMeta { credits: 0 };
        assert_eq!(round_trip(FrameType::Credit, &cr), cr);
        let fw = ForwardMeta { route: "/jobs".into(), method: "PUT".into(), content_type: Some("a/b".into()) };
        assert_eq!(round_trip(FrameType::Forward, &fw), fw);
        let fl = FlowMeta { paused: true };
        assert_eq!(round_trip(FrameType::Flow, &fl), fl);
    }

    #[test]
    fn wire_shape_matches_the_document() {
        let r: RequestMeta = serde_json::from_value(json!({
            "method": "POST", "path": "/api/items", "query": "a=1&b=2",
            "headers": [["host", "example"], ["content-type", "application/json"]],
            "remote_addr": "127.0.0.1", "remote_port": 51234, "http_version": "1.1",
            "x_request_id": "8f1c", "forwarded": false, "context": null
        }))
        .unwrap();
        assert_eq!(r.headers[1], ("content-type".to_string(), "application/json".to_string()));
        assert_eq!(
            serde_json::to_value(&r).unwrap()["headers"],
            json!([["host", "example"], ["content-type", "application/json"]])
        );
    }

    #[test]
    fn omitted_fields_take_their_defaults() {
        // CONFIG from a dispatcher that predates max_frame_bytes.
        let c: ConfigMeta = serde_json::from_value(json!({
            "protocol": 1, "pool": "p", "worker_id": 0, "heartbeat_interval": 1.0,
            "timeout": 30.0, "log_level": "info", "kwargs": {}
        }))
        .unwrap();
        assert_eq!(c.max_frame_bytes, LEGACY_MAX_FRAME_BYTES);
        assert_eq!(LEGACY_MAX_FRAME_BYTES, crate::ipc::frame_limit_for_body(64 << 20));
        let h: HelloMeta = serde_json::from_str(r#"{"pid": 9}"#).unwrap();
        assert_eq!(h.credits, 1);
        let hb: HeartbeatMeta = serde_json::from_str("{}").unwrap();
        assert_eq!(hb, HeartbeatMeta::default());
        let l: LogMeta = serde_json::from_str(r#"{"level": 20, "msg": "m", "extra": 1}"#).unwrap();
        assert_eq!(l.name, "");
        let f: ForwardMeta = serde_json::from_str(r#"{"route": "/x"}"#).unwrap();
        assert_eq!((f.method.as_str(), f.content_type), ("POST", None));
        let s: ResponseMeta = serde_json::from_str(r#"{"status": 204}"#).unwrap();
        assert!(s.headers.is_empty());
        let r: RequestMeta = serde_json::from_value(json!({
            "method": "GET", "path": "/", "query": null, "headers": [],
            "remote_addr": "1.2.3.4", "remote_port": 1, "http_version": "1.0", "x_request_id": ""
        }))
        .unwrap();
        assert!(!r.forwarded && r.context.is_null());
    }

    #[test]
    fn wrong_shapes_are_bad_meta() {
        use crate::ipc::frame::{Frame, FrameError};
        let f = |kind, meta: &str| Frame { kind, request_id: 1, meta: meta.as_bytes().to_vec(), body: vec![] };
        let bad = [
            f(FrameType::Response, r#"{"status": 70000}"#),
            f(FrameType::Response, r#"{"status": "200"}"#),
            f(FrameType::Response, r#"{"status": 200, "headers": [["a"]]}"#),
            f(FrameType::Hello, r#"{"pid": -1}"#),
            f(FrameType::Hello, ""),
        ];
        for fr in &bad[..3] {
            assert!(matches!(fr.meta_json::<ResponseMeta>(), Err(FrameError::BadMeta { .. })), "{fr:?}");
        }
        for fr in &bad[3..] {
            assert!(matches!(fr.meta_json::<HelloMeta>(), Err(FrameError::BadMeta { .. })), "{fr:?}");
        }
    }
}

/// `STREAM_END` meta: `{}`, or `{"abort": true}` when the worker's app failed after the
/// stream started (the dispatcher then cuts the client connection instead of ending the
/// body cleanly).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StreamEndMeta {
    #[serde(default)]
    pub abort: bool,
}

/// `WS_OPEN` meta: the handshake request, as `REQUEST` meta, plus the subprotocols the
/// client offered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WsOpenMeta {
    #[serde(flatten)]
    pub request: RequestMeta,
    #[serde(default)]
    pub subprotocols: Vec<String>,
}

/// `WS_MESSAGE` / `WS_MESSAGE_OUT` meta.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct WsMessageMeta {
    pub text: bool,
}

/// `WS_CLOSE` / `WS_CLOSE_OUT` meta.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WsCloseMeta {
    #[serde(default = "default_close_code")]
    pub code: u16,
    #[serde(default)]
    pub reason: String,
}

fn default_close_code() -> u16 {
    1000
}

/// `WS_ACCEPT` meta.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WsAcceptMeta {
    #[serde(default)]
    pub subprotocol: Option<String>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}
