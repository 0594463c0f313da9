//! More than one event loop (`[server] threads = 2`): front loops answer static files and
//! built-in handlers, and hand a connection whose request needs a pool to the main loop,
//! between requests or at a head whose body is still coming, without losing a byte.
//! Which loop accepts a connection is the kernel's choice (EPOLLEXCLUSIVE wakes an idle
//! one, the front loop first), so each test makes enough connections that both loops
//! take part, and checks the answers whichever loop gave them.

use std::time::Duration;

use crate::util::{Client, TestServer, get};

const READY: Duration = Duration::from_secs(15);

/// `[server]` with `threads` loops, for a config that follows.
fn server_head(threads: usize) -> String {
    format!("[server]\nbind = [\"127.0.0.1:0\"]\naccess_log = \"off\"\nthreads = {threads}\n")
}

fn server(threads: usize) -> TestServer {
    let dir = crate::util::TempDir::new();
    dir.write("www/small.txt", "static bytes\n");
    let config = format!(
        r#"{head}
[[static]]
prefix = "/files/"
path = "{{dir}}/www"

[[sync]]
path = "/health"
kind = "health"

[[sync]]
path = "/metrics"
kind = "metrics"

[[sync]]
path = "/status"
kind = "status"

[[sync]]
path = "/v"
kind = "static_response"
body = "one"

[[pool]]
name = "items"
routes = ["/api/**"]
python = "items_worker:ItemsWorker"
module_path = ["{{repo}}/examples"]
num_workers = 1
"#,
        head = server_head(threads)
    );
    let s = TestServer::start_in(dir, &config);
    assert_eq!(s.wait_ready("items", 1, READY).len(), 1, "pool not ready; log:\n{}", s.log());
    s
}

/// `name{labels} value` from a Prometheus text answer.
fn metric(addr: &str, line_start: &str) -> u64 {
    let text = get(addr, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start).map(|v| v.trim().parse::<u64>().expect("a number")))
        .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
}

fn threads_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn keep_alive_connections_move_to_the_main_loop_with_their_pipeline_intact() {
    let s = server(2);
    assert_eq!(threads_of(s.pid), 2, "one thread per event loop");
    for round in 0..20 {
        let mut c = Client::connect(&s.addr);
        // Static, then a pool request (the handover, if a front loop took the
        // connection), then static again and the pool again on the same connection.
        let r = c.request(b"GET /files/small.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((r.status, r.text().as_str()), (200, "static bytes\n"), "round {round}");
        let r = c.request(b"GET /api/hello HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        let r = c.request(b"GET /v HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((r.status, r.text().as_str()), (200, "one"), "round {round}");
        // A pipeline: static, pool, a POST whose body follows, static; answered in order.
        let body = br#"{"name": "pipelined"}"#;
        let mut raw = Vec::new();
        raw.extend_from_slice(b"GET /files/small.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        raw.extend_from_slice(b"GET /api/hello HTTP/1.1\r\nHost: x\r\n\r\n");
        raw.extend_from_slice(
            format!(
                "POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        raw.extend_from_slice(body);
        raw.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        c.send(&raw);
        let statuses: Vec<u16> = (0..4).map(|_| c.read_response().expect("an answer").status).collect();
        assert_eq!(statuses, [200, 200, 201, 200], "round {round}");
    }
    let front = metric(&s.addr, "rustworkers_loop_requests_total{loop=\"1\"}");
    let main = metric(&s.addr, "rustworkers_loop_requests_total{loop=\"0\"}");
    let handoffs = metric(&s.addr, "rustworkers_handoffs_total");
    assert!(front > 0, "the front loop served nothing (main {main})");
    assert!(handoffs > 0, "no connection was handed over (front {front}, main {main})");
    assert!(handoffs <= 20 + 3, "a connection is handed over once: {handoffs}");
}

#[test]
fn a_head_handed_over_before_its_body_gets_its_100_continue_from_the_main_loop() {
    let s = server(2);
    for round in 0..10 {
        let mut c = Client::connect(&s.addr);
        let r = c.request(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.status, 200);
        let body = br#"{"name": "later"}"#;
        c.send(
            format!(
                "POST /api/items HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        let interim = c.read_response().expect("100 Continue");
        assert_eq!(interim.status, 100, "round {round}");
        c.send(body);
        let r = c.read_response().expect("the answer");
        assert_eq!(r.status, 201, "round {round}: {}", r.text());
        assert_eq!(r.json()["name"], "later");
    }
}

#[test]
fn reload_reaches_every_loop_and_a_graceful_stop_ends_them_all() {
    let s = server(2);
    assert_eq!(get(&s.addr, "/v").text(), "one");
    let config = std::fs::read_to_string(s.dir.path().join("config.toml")).expect("config");
    s.dir.write("config.toml", config.replace("body = \"one\"", "body = \"two\""));
    s.signal(libc::SIGHUP);
    assert!(s.wait_for_log("configuration reloaded", Duration::from_secs(5)), "log:\n{}", s.log());
    // New connections, so that both loops answer some of them.
    for _ in 0..20 {
        assert_eq!(get(&s.addr, "/v").text(), "two");
    }
    // Idle keep-alive connections on whichever loop, and one request in a worker.
    let mut idle: Vec<Client> = (0..6).map(|_| Client::connect(&s.addr)).collect();
    for c in &mut idle {
        assert_eq!(c.request(b"GET /files/small.txt HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    }
    let mut s = s;
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(8)).expect("the server exits");
    assert!(status.success(), "exit {status:?}; log:\n{}", s.log());
    for c in &mut idle {
        assert!(c.is_closed(Duration::from_secs(1)), "an idle connection outlived the stop");
    }
}

#[test]
fn one_loop_runs_one_thread() {
    let s = server(1);
    assert_eq!(threads_of(s.pid), 1);
    assert_eq!(get(&s.addr, "/api/hello").status, 200);
    assert_eq!(metric(&s.addr, "rustworkers_handoffs_total"), 0);
}

#[test]
fn a_websocket_upgrade_on_a_front_connection_is_served_by_the_main_loop() {
    let s = TestServer::start(&format!(
        r#"{}
[[sync]]
path = "/status"
kind = "status"

[[sync]]
path = "/live"
kind = "live"

[[sync]]
path = "/metrics"
kind = "metrics"

[[pool]]
name = "chat"
routes = ["/ws/**"]
python = "ws_worker:ChatWorker"
module_path = ["{{repo}}/tests/fixtures/python"]
num_workers = 1
"#,
        server_head(2)
    ));
    assert_eq!(s.wait_ready("chat", 1, READY).len(), 1, "pool not ready; log:\n{}", s.log());
    for round in 0..10 {
        let mut c = Client::connect(&s.addr);
        assert_eq!(c.request(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n").status, 200, "round {round}");
        let r = c.request(
            b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        assert_eq!(r.status, 101, "round {round}: {}", r.text());
        assert_eq!(r.header("sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        // A masked text frame "hi" (RFC 6455 5.3); the echo comes back unmasked.
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | 2];
        frame.extend_from_slice(&mask);
        frame.extend(b"hi".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        c.send(&frame);
        let echo = c.read_exact_bytes(4, Duration::from_secs(5));
        assert_eq!(echo, [0x81, 2, b'h', b'i'], "round {round}");
    }
    assert!(metric(&s.addr, "rustworkers_handoffs_total") > 0, "no upgrade went through a front loop");
}

#[test]
fn a_reload_cannot_add_a_native_pool_to_several_loops() {
    let s = TestServer::start(&format!("{}\n[[sync]]\npath = \"/live\"\nkind = \"live\"\n", server_head(2)));
    let config = std::fs::read_to_string(s.dir.path().join("config.toml")).expect("config");
    s.dir.write(
        "config.toml",
        format!("{config}\n[[pool]]\nname = \"echo\"\nroutes = [\"/echo/**\"]\nnative = \"echo\"\n")
            .replace("threads = 2", "threads = 1"),
    );
    s.signal(libc::SIGHUP);
    assert!(
        s.wait_for_log("pool `echo` is native, which needs one event loop", Duration::from_secs(5)),
        "log:\n{}",
        s.log()
    );
    assert_eq!(get(&s.addr, "/echo/x").status, 404, "the running config stays");
    assert_eq!(get(&s.addr, "/live").status, 200);
    assert_eq!(threads_of(s.pid), 2);
}
