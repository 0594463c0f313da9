//! WSGI apps beyond Flask's basics through the real dispatcher: a Django project
//! (tests/fixtures/python/djangoproj) served by the shim's WSGI adapter
//! (`get_wsgi_application`) and its ASGI adapter (`get_asgi_application`, a `command`
//! pool), and WSGI streaming (a Django `StreamingHttpResponse`, a Flask
//! `stream_with_context` generator) arriving chunk by chunk as produced.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{TestServer, get, request};

const READY: Duration = Duration::from_secs(20);

fn require(module: &str) {
    let probe = Command::new("python3").args(["-c", &format!("import {module}")]).output().expect("run python3");
    assert!(
        probe.status.success(),
        "{module} is not importable (pip install -r requirements-test.txt): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

fn server(pool: &str) -> TestServer {
    require("django");
    require("flask");
    let s = TestServer::start(&format!(
        r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"

[[sync]]
path = "/status"
kind = "status"

[[pool]]
name = "app"
{pool}
num_workers = 1
"#
    ));
    assert_eq!(s.wait_ready("app", 1, READY).len(), 1, "pool not ready; log:\n{}", s.log());
    s
}

fn django_wsgi() -> TestServer {
    server(
        r#"routes = ["/dj/**"]
wsgi = "djangoproj.wsgi:application"
module_path = ["{repo}/tests/fixtures/python"]
env = { DJANGO_SETTINGS_MODULE = "djangoproj.settings" }"#,
    )
}

fn django_asgi() -> TestServer {
    server(
        r#"routes = ["/dj/**"]
command = ["python3", "-m", "rustworkers", "asgi", "djangoproj.asgi:application"]
env = { PYTHONPATH = "{repo}/workers:{repo}/tests/fixtures/python", DJANGO_SETTINGS_MODULE = "djangoproj.settings" }"#,
    )
}

/// The Django views answer the same through either adapter.
fn django_views(s: &TestServer) {
    let addr = &s.addr;
    let r = get(addr, "/dj/hello?name=pony");
    assert_eq!(r.status, 200, "{}\nlog:\n{}", r.text(), s.log());
    let v = r.json();
    assert_eq!(
        (v["hello"].as_str(), v["path"].as_str(), v["method"].as_str()),
        (Some("pony"), Some("/dj/hello"), Some("GET"))
    );
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = request(
        addr,
        "POST",
        "/dj/items",
        &[("Content-Type", "application/json")],
        br#"{"name": "caf\u00e9", "qty": 2}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"name": "café", "qty": 2, "id": 1}));
    let r = request(addr, "POST", "/dj/items", &[("Content-Type", "application/json")], b"{nope");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(get(addr, "/dj/items").json(), serde_json::json!({"items": [{"name": "café", "qty": 2, "id": 1}]}));

    // CSRF middleware is on: the form view refuses a POST without a token.
    let r = request(addr, "POST", "/dj/form", &[("Content-Type", "application/x-www-form-urlencoded")], b"a=1");
    assert_eq!(r.status, 403, "{}", r.text());
    let r = get(addr, "/dj/nowhere");
    assert_eq!(r.status, 404);
    let r = get(addr, "/dj/async");
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"async": true})));
}

/// GET `path` and return when each of `marks` first appeared in the raw response (the
/// whole response must end within 10 s).
fn arrival_times(addr: &str, path: &str, marks: &[&str]) -> (Vec<Duration>, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let began = Instant::now();
    let deadline = began + Duration::from_secs(10);
    let mut buf = Vec::new();
    let mut seen: Vec<Option<Duration>> = vec![None; marks.len()];
    let mut tmp = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "response not complete: {:?}", String::from_utf8_lossy(&buf));
        match c.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
        let text = String::from_utf8_lossy(&buf);
        for (i, m) in marks.iter().enumerate() {
            if seen[i].is_none() && text.contains(m) {
                seen[i] = Some(began.elapsed());
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let times = seen.into_iter().map(|t| t.unwrap_or_else(|| panic!("marks missing in {text:?}"))).collect();
    (times, text)
}

fn assert_spread(times: &[Duration], gap: Duration, text: &str) {
    for w in times.windows(2) {
        assert!(w[1] - w[0] >= gap, "chunks arrived together {times:?}: {text:?}");
    }
}

#[test]
fn django_through_the_wsgi_adapter() {
    let s = django_wsgi();
    django_views(&s);
    // StreamingHttpResponse: each line reaches the client when produced (chunked).
    let (times, text) = arrival_times(&s.addr, "/dj/stream?n=3&gap=0.4", &["line 0\n", "line 1\n", "line 2\n"]);
    assert!(text.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{text}");
    assert_spread(&times, Duration::from_millis(250), &text);
}

#[test]
fn django_through_the_asgi_adapter() {
    let s = django_asgi();
    django_views(&s);
    // Django streams async iterators under ASGI (a sync one it consumes whole first).
    let (times, text) = arrival_times(&s.addr, "/dj/astream?n=3&gap=0.4", &["line 0\n", "line 1\n", "line 2\n"]);
    assert_spread(&times, Duration::from_millis(250), &text);
}

#[test]
fn flask_generator_streams_chunk_by_chunk() {
    let s = server(
        r#"routes = ["/**"]
wsgi = "wsgi_stream:app"
module_path = ["{repo}/tests/fixtures/python"]"#,
    );
    let marks = ["chunk 0 of fl", "chunk 1 of fl", "chunk 2 of fl", "chunk 3 of fl"];
    let (times, text) = arrival_times(&s.addr, "/stream?n=4&gap=0.3&name=fl", &marks);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{text}");
    assert_spread(&times, Duration::from_millis(200), &text);
    // A plain view is still one response with a length; close() ran for both.
    let r = get(&s.addr, "/plain");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"plain body"[..]));
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(get(&s.addr, "/closed").json(), serde_json::json!({"closed": 2}));
    // An error mid-stream cuts the response (no terminating chunk); the worker lives on.
    let (_, text) = arrival_times(&s.addr, "/boom-mid", &["first\n"]);
    assert!(!text.ends_with("0\r\n\r\n"), "aborted stream ended cleanly: {text:?}");
    assert_eq!(get(&s.addr, "/plain").status, 200);
}
