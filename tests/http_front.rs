//! The HTTP/1.1 front of the real dispatcher: keep-alive, pipelining, HTTP/1.0, HEAD,
//! Expect: 100-continue, request bodies, limits and their statuses, request smuggling
//! shapes, X-Request-ID, sync handlers and auth.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::util::{Client, TempDir, TestServer, get, pid_alive, request};

const CONFIG: &str = r#"
[server]
bind = ["127.0.0.1:0"]
header_timeout = 1
access_log = "off"

[server.limits]
max_request_line = 1024
max_headers = 20
max_header_bytes = 4096
max_body_bytes = 1000

[[static]]
prefix = "/static"
path = "{dir}/www"

[[sync]]
path = "/health"
kind = "health"

[[sync]]
path = "/status"
kind = "status"

[[sync]]
path = "/metrics"
kind = "metrics"

[[sync]]
path = "/fixed"
kind = "static_response"
status = 203
body = "fixed body"
headers = { "x-fixed" = "yes" }

[[sync]]
path = "/go"
kind = "redirect"
location = "https://example.com/there"
status = 301

[[pool]]
name = "echo"
routes = ["/echo/**"]
native = "echo"
num_workers = 1

[[pool]]
name = "chaos"
routes = ["/chaos/**"]
native = "chaos"
num_workers = 2
"#;

fn server() -> TestServer {
    let dir = TempDir::new();
    dir.write("www/a.txt", "hello static\n");
    let s = TestServer::start_in(dir, CONFIG);
    assert_eq!(s.wait_ready("echo", 1, Duration::from_secs(10)).len(), 1, "echo pool not ready");
    assert_eq!(s.wait_ready("chaos", 2, Duration::from_secs(10)).len(), 2, "chaos pool not ready");
    s
}

/// Send `raw` on a fresh connection, expect one response with `status`, then the close.
fn expect_status_then_close(addr: &str, raw: &[u8], status: u16) {
    let mut c = Client::connect(addr);
    c.send(raw);
    let resp = c.read_response().unwrap_or_else(|| panic!("no response to {:?}", String::from_utf8_lossy(raw)));
    assert_eq!(resp.status, status, "for {:?}: {}", String::from_utf8_lossy(raw), resp.text());
    assert!(
        c.is_closed(Duration::from_secs(5)),
        "connection left open after {status} for {:?}",
        String::from_utf8_lossy(raw)
    );
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let s = server();
    let mut c = Client::connect(&s.addr);
    for i in 0..5 {
        let r = c.request(format!("GET /echo/k{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["path"], format!("/echo/k{i}"));
        let r = c.request(b"GET /static/a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.body, b"hello static\n");
        let r = c.request(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200);
    }
    assert!(!c.is_closed(Duration::from_millis(200)), "keep-alive connection closed early");
}

#[test]
fn pipelined_requests_answered_in_order_slow_pool_before_fast_health() {
    let s = server();
    let mut c = Client::connect(&s.addr);
    c.send(
        b"GET /static/a.txt HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /chaos/slow?sleep=300 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /health HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /echo/p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz\
          GET /fixed HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let r1 = c.read_response().expect("static");
    assert_eq!(r1.status, 200);
    assert_eq!(r1.body, b"hello static\n");
    let r2 = c.read_response().expect("chaos");
    assert_eq!(r2.status, 200, "{}", r2.text());
    assert_eq!(r2.json()["chaos"], "sleep", "{}", r2.text());
    let r3 = c.read_response().expect("health after chaos");
    assert_eq!(r3.status, 200);
    assert!(r3.text().contains('{'), "health body: {}", r3.text());
    let r4 = c.read_response().expect("echo");
    assert_eq!(r4.json()["body"], "xyz");
    let r5 = c.read_response().expect("fixed");
    assert_eq!(r5.status, 203);
    assert_eq!(r5.body, b"fixed body");
}

#[test]
fn http10_closes_by_default_and_keeps_alive_when_asked() {
    let s = server();
    let mut c = Client::connect(&s.addr);
    c.send(b"GET /health HTTP/1.0\r\n\r\n");
    let r = c.read_response().expect("response");
    assert_eq!(r.status, 200);
    assert!(c.is_closed(Duration::from_secs(5)), "HTTP/1.0 without keep-alive left open");

    let mut c = Client::connect(&s.addr);
    for _ in 0..3 {
        let r = c.request(b"GET /static/a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello static\n");
        assert!(r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")), "{:?}", r.headers);
    }
    assert!(!c.is_closed(Duration::from_millis(200)));
}

#[test]
fn head_has_no_body_and_same_content_length() {
    let s = server();
    for path in ["/static/a.txt", "/health", "/echo/h", "/fixed"] {
        let mut c = Client::connect(&s.addr);
        let g = c.request(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        c.send(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let h = c.read_response_to(true).expect("HEAD response");
        assert_eq!(h.status, g.status, "{path}");
        if path != "/echo/h" && path != "/health" {
            // Bodies of echo/health vary (method, uptime); the length must match for fixed ones.
            assert_eq!(h.header("content-length"), g.header("content-length"), "{path}");
        } else {
            assert!(h.header("content-length").is_some() || h.header("transfer-encoding").is_some(), "{path}");
        }
        // No body bytes may follow a HEAD response: the next request's answer comes next.
        let n = c.request(b"GET /static/a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(n.status, 200, "{path}: a body followed the HEAD response");
        assert_eq!(n.body, b"hello static\n", "{path}");
    }
}

#[test]
fn expect_100_continue_gets_interim_then_final() {
    let s = server();
    let mut c = Client::connect(&s.addr);
    c.send(b"POST /echo/e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.read_response().expect("interim");
    assert_eq!(interim.status, 100);
    c.send(b"hello");
    let r = c.read_response().expect("final");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "hello");
}

#[test]
fn expect_100_continue_over_limit_gets_413_without_interim() {
    let s = server();
    let mut c = Client::connect(&s.addr);
    c.send(b"POST /echo/e HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n");
    let r = c.read_response().expect("response");
    assert_eq!(r.status, 413);
}

#[test]
fn chunked_and_content_length_bodies_reach_the_worker() {
    let s = server();
    let mut c = Client::connect(&s.addr);
    let r = c.request(b"POST /echo/c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\na;ext=1\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "abc0123456789");
    assert_eq!(r.json()["body_len"], 13);
    let r = c.request(b"PUT /echo/l HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world");
    assert_eq!(r.json()["body"], "hello world");
    assert_eq!(r.json()["method"], "PUT");
    // Body split over several writes.
    c.send(b"POST /echo/s HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nabc");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"def");
    let r = c.read_response().expect("split body");
    assert_eq!(r.json()["body"], "abcdef");
}

#[test]
fn connection_close_is_honoured() {
    let s = server();
    for path in ["/health", "/static/a.txt", "/echo/x"] {
        let mut c = Client::connect(&s.addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
        let r = c.read_response().expect("response");
        assert_eq!(r.status, 200);
        assert!(r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")), "{path}: {:?}", r.headers);
        assert!(c.is_closed(Duration::from_secs(5)), "{path}: not closed");
    }
}

#[test]
fn limits_answer_with_their_status_and_close() {
    let s = server();
    let long = format!("GET /echo/{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(2000));
    expect_status_then_close(&s.addr, long.as_bytes(), 414);

    let mut many = String::from("GET /health HTTP/1.1\r\nHost: t\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    expect_status_then_close(&s.addr, many.as_bytes(), 431);

    let big = format!("GET /health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "b".repeat(5000));
    expect_status_then_close(&s.addr, big.as_bytes(), 431);

    expect_status_then_close(&s.addr, b"POST /echo/b HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n", 413);

    let mut chunked = b"POST /echo/b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"190\r\n");
        chunked.extend_from_slice(&[b'z'; 400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    expect_status_then_close(&s.addr, &chunked, 413);

    expect_status_then_close(&s.addr, b"GARBAGE\r\n\r\n", 400);
    expect_status_then_close(&s.addr, b"GET /health HTTP/1.1\r\nBad Header Without Colon\r\n\r\n", 400);
    expect_status_then_close(&s.addr, b"GET /health HTTP/1.1\r\n\r\n", 400); // no Host
    expect_status_then_close(&s.addr, b"GET /health HTTP/2.0\r\nHost: t\r\n\r\n", 505);

    // Body exactly at the limit is fine.
    let r = request(&s.addr, "POST", "/echo/ok", &[], &[b'k'; 1000]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 1000);
    assert_eq!(get(&s.addr, "/health").status, 200);
}

#[test]
fn header_timeout_answers_408_and_closes() {
    let s = server();
    let mut c = Client::connect(&s.addr);
    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Half");
    let started = Instant::now();
    let r = c.read_response().expect("408 response");
    assert_eq!(r.status, 408);
    assert!(started.elapsed() >= Duration::from_millis(500), "408 before header_timeout");
    assert!(c.is_closed(Duration::from_secs(5)));
    assert_eq!(get(&s.addr, "/health").status, 200);
}

#[test]
fn smuggling_shapes_rejected_with_400_and_close() {
    let s = server();
    let shapes: &[&[u8]] = &[
        // CL + TE
        b"POST /echo/s HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // TE + CL (other order)
        b"POST /echo/s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        // differing duplicate CL
        b"POST /echo/s HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        // CL list with differing values
        b"POST /echo/s HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 4\r\n\r\nabcd",
        // TE not ending in chunked
        b"POST /echo/s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        // unknown TE alone
        b"POST /echo/s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
        // bad chunk size
        b"POST /echo/s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        // chunk size with a sign
        b"POST /echo/s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n",
        // CL with a sign
        b"POST /echo/s HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
        b"POST /echo/s HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\nabc",
        // CL not a number
        b"POST /echo/s HTTP/1.1\r\nHost: t\r\nContent-Length: 3x\r\n\r\nabc",
    ];
    for raw in shapes {
        expect_status_then_close(&s.addr, raw, 400);
    }
    // Identical duplicate CL is allowed (RFC 9110 §8.6) or rejected, but never misframed:
    // the pipelined second request must not be swallowed into the body.
    let mut c = Client::connect(&s.addr);
    c.send(b"POST /echo/d HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabcGET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response().expect("response");
    if r.status == 200 {
        assert_eq!(r.json()["body"], "abc");
        assert_eq!(c.read_response().expect("second").status, 200);
    } else {
        assert_eq!(r.status, 400);
    }
}

#[test]
fn x_request_id_kept_when_sane_else_generated() {
    let s = server();
    let r = request(&s.addr, "GET", "/echo/r", &[("X-Request-ID", "abc-123_x.y")], b"");
    assert_eq!(r.header("x-request-id"), Some("abc-123_x.y"));
    assert_eq!(r.json()["x_request_id"], "abc-123_x.y");

    let r = request(&s.addr, "GET", "/echo/r", &[], b"");
    let generated = r.header("x-request-id").expect("generated id").to_string();
    assert!(!generated.is_empty());
    assert_eq!(r.json()["x_request_id"], generated.as_str());
    let r2 = request(&s.addr, "GET", "/echo/r", &[], b"");
    assert_ne!(r2.header("x-request-id"), Some(generated.as_str()), "ids must differ");

    let long = "x".repeat(300);
    for bad in ["has spaces in it", long.as_str(), "quote\"d", "semi;colon"] {
        let r = request(&s.addr, "GET", "/echo/r", &[("X-Request-ID", bad)], b"");
        let id = r.header("x-request-id").expect("id");
        assert_ne!(id, bad);
        assert!(!id.is_empty() && !id.contains(' ') && id.len() <= 128, "{id:?}");
        assert_eq!(r.json()["x_request_id"], id);
    }
    // Sync and static answers carry it too.
    let r = request(&s.addr, "GET", "/health", &[("X-Request-ID", "hc-1")], b"");
    assert_eq!(r.header("x-request-id"), Some("hc-1"));
    let r = request(&s.addr, "GET", "/static/a.txt", &[("X-Request-ID", "st-1")], b"");
    assert_eq!(r.header("x-request-id"), Some("st-1"));
}

#[test]
fn sync_handlers_health_status_fixed_redirect_metrics() {
    let s = server();
    let h = get(&s.addr, "/health");
    assert_eq!(h.status, 200);
    assert!(h.header("content-type").unwrap_or("").contains("json"), "{:?}", h.headers);
    let _ = h.json();

    let st = get(&s.addr, "/status");
    assert_eq!(st.status, 200);
    let v = st.json();
    let pools = v["pools"].as_array().expect("pools array");
    let echo = pools.iter().find(|p| p["name"] == "echo").expect("echo pool");
    assert_eq!(echo["workers"].as_array().expect("workers").len(), 1);
    let pid = echo["workers"][0]["pid"].as_i64().expect("pid") as i32;
    assert!(pid_alive(pid));
    assert!(s.children().contains(&pid));

    let f = get(&s.addr, "/fixed");
    assert_eq!(f.status, 203);
    assert_eq!(f.body, b"fixed body");
    assert_eq!(f.header("x-fixed"), Some("yes"));
    assert!(f.header("content-type").unwrap_or("").starts_with("text/plain"));

    let g = get(&s.addr, "/go");
    assert_eq!(g.status, 301);
    assert_eq!(g.header("location"), Some("https://example.com/there"));

    let _ = get(&s.addr, "/echo/m");
    let m = get(&s.addr, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap_or("").starts_with("text/plain"), "{:?}", m.headers);
    let text = m.text();
    assert!(text.contains("# TYPE"), "{text}");
    assert!(text.contains("echo"), "{text}");
}

#[test]
fn unknown_path_is_404() {
    let s = server();
    assert_eq!(get(&s.addr, "/nowhere").status, 404);
    assert_eq!(get(&s.addr, "/echoes").status, 404);
    assert_eq!(get(&s.addr, "/echo").status, 200);
}

const AUTH_CONFIG: &str = r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"

[[sync]]
path = "/health"
kind = "health"

[[sync]]
path = "/status"
kind = "status"

[[sync]]
path = "/secret"
kind = "static_response"
body = "secret"
auth = true

[auth]
keys = ["k-one"]
keys_file = "{dir}/keys.txt"

[[pool]]
name = "echo"
routes = ["/echo/**"]
native = "echo"
num_workers = 1
"#;

#[test]
fn auth_guards_pool_routes_and_opted_in_sync_routes() {
    let dir = TempDir::new();
    dir.write("keys.txt", "# comment\n\n  k-from-file  \n");
    let s = TestServer::start_in(dir, AUTH_CONFIG);
    s.wait_ready("echo", 1, Duration::from_secs(10));

    let r = get(&s.addr, "/echo/a");
    assert_eq!(r.status, 401);
    assert!(r.header("content-type").unwrap_or("").contains("json"));
    let _ = r.json();
    assert_eq!(request(&s.addr, "GET", "/echo/a", &[("X-Api-Key", "wrong")], b"").status, 401);
    assert_eq!(request(&s.addr, "GET", "/echo/a", &[("X-Api-Key", "k-one")], b"").status, 200);
    assert_eq!(request(&s.addr, "GET", "/echo/a", &[("x-api-key", "k-from-file")], b"").status, 200);
    assert_eq!(request(&s.addr, "GET", "/echo/a", &[("X-Api-Key", "# comment")], b"").status, 401);
    assert_eq!(request(&s.addr, "GET", "/echo/a", &[("X-Api-Key", "")], b"").status, 401);

    // Sync routes are free unless they opt in.
    assert_eq!(get(&s.addr, "/health").status, 200);
    assert_eq!(get(&s.addr, "/status").status, 200);
    assert_eq!(get(&s.addr, "/secret").status, 401);
    let r = request(&s.addr, "GET", "/secret", &[("X-Api-Key", "k-one")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"secret");

    // 401 on a keep-alive connection does not break the connection's framing.
    let mut c = Client::connect(&s.addr);
    let r = c.request(b"POST /echo/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(r.status, 401);
    if !c.is_closed(Duration::from_millis(100)) {
        let r = c.request(b"GET /echo/y HTTP/1.1\r\nHost: t\r\nX-Api-Key: k-one\r\n\r\n");
        assert_eq!(r.status, 200);
    }
}

#[test]
fn garbage_burst_never_crashes_the_dispatcher() {
    let s = server();
    let garbage: Vec<Vec<u8>> = vec![
        b"\r\n\r\n".to_vec(),
        b"\0\0\0\0\0\0\0\0\r\n\r\n".to_vec(),
        vec![0xff; 3000],
        b"GET\r\n\r\n".to_vec(),
        b"GET / \r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: t\r\n: novalue\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\nHost: t\r\n\r\n".to_vec(),
        b"GET http://evil/x HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        b"GET /%zz HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        b"GET /echo/%ff%fe HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        b"GET /static/%00 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        b"POST /echo/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n".to_vec(),
        b"POST /echo/x HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: t\r\nX: \x01\x02\r\n\r\n".to_vec(),
        b"GET /\xc3\x28 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\nHost: t\n\n".to_vec(),
        b"GET /echo/x HTTP/1.1\r\nHost: t\r\n Folded: header\r\n\r\n".to_vec(),
    ];
    for g in &garbage {
        let mut c = Client::connect(&s.addr);
        c.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.send(g);
        // Shut our side so nothing waits for more bytes; drain whatever comes back.
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = c.stream.read_to_end(&mut out);
        if !out.is_empty() {
            assert!(out.starts_with(b"HTTP/1."), "not HTTP for {g:?}: {:?}", String::from_utf8_lossy(&out));
        }
        assert!(pid_alive(s.pid), "dispatcher died on {g:?}");
    }
    // Abrupt disconnects in the middle of a request.
    for _ in 0..5 {
        let mut c = Client::connect(&s.addr);
        c.send(b"POST /echo/x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc");
        drop(c);
    }
    let r = get(&s.addr, "/health");
    assert_eq!(r.status, 200);
    assert_eq!(request(&s.addr, "GET", "/echo/after", &[], b"").status, 200);
    assert!(pid_alive(s.pid));
}

#[test]
fn expect_100_continue_refused_by_auth_before_the_body() {
    let dir = TempDir::new();
    dir.write("keys.txt", "k-from-file\n");
    let s = TestServer::start_in(dir, AUTH_CONFIG);
    s.wait_ready("echo", 1, Duration::from_secs(10));
    // Wrong key: the final 401 comes at once, with no 100 Continue before it, then the close.
    let mut c = Client::connect(&s.addr);
    c.send(
        b"POST /echo/up HTTP/1.1\r\nHost: t\r\nX-Api-Key: wrong\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n",
    );
    let r = c.read_response().expect("401");
    assert_eq!(r.status, 401, "got {} before the body was sent", r.status);
    assert!(c.is_closed(Duration::from_secs(5)), "connection kept open with an unread body");
    // Same on a sync route that opted in.
    let mut c = Client::connect(&s.addr);
    c.send(b"POST /secret HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.read_response().expect("401").status, 401);
    // Right key: 100, then the final answer after the body.
    let mut c = Client::connect(&s.addr);
    c.send(
        b"POST /echo/up HTTP/1.1\r\nHost: t\r\nX-Api-Key: k-one\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(c.read_response().expect("100").status, 100);
    c.send(b"hello");
    let r = c.read_response().expect("final");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "hello");
    // Routes without auth still get their 100 (health is GET/HEAD only: 405 after the body).
    let mut c = Client::connect(&s.addr);
    c.send(b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.read_response().expect("100").status, 100);
    c.send(b"{}");
    let r = c.read_response().expect("final");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}
