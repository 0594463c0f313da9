//! ASGI apps under the real dispatcher: a FastAPI app (tests/fixtures/python/
//! fastapi_fixture.py) run by the shim's ASGI adapter in a `command` pool
//! (`python3 -m rustworkers asgi module:app`), real HTTP: JSON, POST echo, path and query
//! params, a pydantic 422, SSE arriving event by event, many requests at once on ONE
//! worker, lifespan state, a mount point, and a failed lifespan startup driving the
//! pool degraded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::{TestServer, get, request};

const READY: Duration = Duration::from_secs(20);

/// A server with one ASGI pool `name` on `routes` serving `target`, plus /health and
/// /status. A `command` pool gets no PYTHONPATH from the dispatcher: set it in `env`.
fn asgi_server(name: &str, routes: &str, target: &str, extra: &str) -> TestServer {
    // FastAPI is a test dependency (requirements-test.txt): its absence is a failure.
    let probe = std::process::Command::new("python3").args(["-c", "import fastapi"]).output().expect("run python3");
    assert!(
        probe.status.success(),
        "FastAPI is not importable (pip install -r requirements-test.txt): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    TestServer::start(&format!(
        r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"

[[sync]]
path = "/health"
kind = "health"

[[sync]]
path = "/status"
kind = "status"

[[pool]]
name = "{name}"
routes = [{routes}]
command = ["python3", "-m", "rustworkers", "asgi", "{target}"]
num_workers = 1
{extra}
"#
    ))
}

fn fastapi_server() -> TestServer {
    let s = asgi_server(
        "fastapi",
        r#""/api/**""#,
        "fastapi_fixture:app",
        r#"env = { PYTHONPATH = "{repo}/workers:{repo}/tests/fixtures/python" }"#,
    );
    assert_eq!(s.wait_ready("fastapi", 1, READY).len(), 1, "fastapi pool not ready; log:\n{}", s.log());
    s
}

#[test]
fn fastapi_json_echo_path_params_and_422() {
    let s = fastapi_server();
    let addr = &s.addr;

    let r = get(addr, "/api/hello");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"hello": "world"}));
    assert_eq!(r.header("content-type"), Some("application/json"), "{:?}", r.headers);

    let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let r = request(addr, "POST", "/api/echo", &[("Content-Type", "application/octet-stream")], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, body);

    let r = get(addr, "/api/items/42?q=r%C3%BCst");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"item_id": 42, "q": "rüst"}));

    let r =
        request(addr, "PUT", "/api/items/7", &[("Content-Type", "application/json")], br#"{"name": "x", "qty": 3}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"item_id": 7, "name": "x", "qty": 3}));
    let r = request(addr, "PUT", "/api/items/7", &[("Content-Type", "application/json")], br#"{"qty": "many"}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(get(addr, "/api/items/notanint").status, 422);
    assert_eq!(get(addr, "/api/nothing").status, 404);
}

#[test]
fn fastapi_lifespan_state_reaches_requests() {
    let s = fastapi_server();
    let pid = s.worker_pids("fastapi")[0];
    let r = get(&s.addr, "/api/state");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["greeting"], "lifespan says hi", "{v}");
    assert_eq!(v["startup_pid"], pid, "{v}");
    assert_eq!(v["pid"], pid, "{v}");
    assert_eq!(v["root_path"], "", "{v}");
}

#[test]
fn fastapi_mounted_under_a_prefix_with_script_name() {
    let s = asgi_server(
        "mnt",
        r#""/mnt/**""#,
        "fastapi_fixture:app",
        r#"env = { PYTHONPATH = "{repo}/workers:{repo}/tests/fixtures/python", SCRIPT_NAME = "/mnt" }"#,
    );
    assert_eq!(s.wait_ready("mnt", 1, READY).len(), 1, "pool not ready; log:\n{}", s.log());
    let r = get(&s.addr, "/mnt/api/state");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["root_path"], "/mnt");
    assert_eq!(r.json()["path"], "/mnt/api/state");
}

#[test]
fn fastapi_sse_arrives_event_by_event() {
    let s = fastapi_server();
    let mut c = TcpStream::connect(&s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /api/sse?count=3&gap=0.4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut seen = Vec::new();
    let mut arrived = Vec::new();
    let mut buf = [0u8; 4096];
    while arrived.len() < 3 {
        let n = c.read(&mut buf).expect("read");
        assert!(n > 0, "stream closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        while arrived.len() < 3 && text.contains(&format!("data: {}\n\n", arrived.len())) {
            arrived.push(Instant::now());
        }
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{text}");
    assert!(text.contains("text/event-stream"), "{text}");
    // Each event reached the client when the app produced it (0.4 s apart), not all
    // at the end of the stream.
    let spread = arrived[2] - arrived[0];
    assert!(spread >= Duration::from_millis(600), "events arrived together ({spread:?}): {text}");
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    seen.extend_from_slice(&rest);
    assert!(String::from_utf8_lossy(&seen).ends_with("0\r\n\r\n"), "no terminating chunk");
}

#[test]
fn one_asgi_worker_serves_many_requests_at_once() {
    let s = fastapi_server();
    let pid = s.worker_pids("fastapi")[0];
    let addr = s.addr.clone();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || get(&addr, "/api/sleep?s=0.3"))
        })
        .collect();
    for h in handles {
        let r = h.join().expect("client thread");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["pid"], pid, "served by another process: {}", r.text());
    }
    let elapsed = t0.elapsed();
    // One at a time this takes 20 x 0.3 s = 6 s; on one event loop about 0.3 s.
    assert!(elapsed < Duration::from_secs(3), "20 sleeping requests took {elapsed:?}: not concurrent");
}

#[test]
fn failed_lifespan_startup_degrades_the_pool() {
    let s = asgi_server(
        "broken",
        r#""/api/**""#,
        "fastapi_fixture:failing",
        r#"max_restarts = 2
restart_window = 60
env = { PYTHONPATH = "{repo}/workers:{repo}/tests/fixtures/python" }"#,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = get(&s.addr, "/status").json();
        let degraded = v["pools"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "broken"))
            .map(|p| p["degraded"] == true);
        if degraded == Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "pool never degraded; log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = get(&s.addr, "/api/hello");
    assert_eq!(r.status, 503, "{}", r.text());
    let log = s.log();
    assert!(log.contains("fastapi fixture startup marker"), "no startup error in the log:\n{log}");
    assert!(log.contains("Traceback"), "no traceback:\n{log}");
    assert!(log.contains("exited with status 3"), "failed start must exit 3:\n{log}");
}

#[test]
fn request_timeout_cancels_only_that_request() {
    let s = asgi_server(
        "fastapi",
        r#""/api/**""#,
        "fastapi_fixture:app",
        r#"timeout = 1
env = { PYTHONPATH = "{repo}/workers:{repo}/tests/fixtures/python" }"#,
    );
    assert_eq!(s.wait_ready("fastapi", 1, READY).len(), 1, "pool not ready; log:\n{}", s.log());
    let pid = s.worker_pids("fastapi")[0];
    let addr = s.addr.clone();
    let slow = std::thread::spawn(move || get(&addr, "/api/sleep?s=30"));
    let addr = s.addr.clone();
    let short = std::thread::spawn(move || get(&addr, "/api/sleep?s=0.5"));
    let r = short.join().expect("client thread");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = slow.join().expect("client thread");
    assert_eq!(r.status, 504, "{}", r.text());
    // The timed-out request's task was cancelled in the worker, which lives on.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&s.addr, "/api/cancelled");
        assert_eq!(r.status, 200, "{}", r.text());
        if r.json()["sleep"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "slow request never cancelled: {}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.worker_pids("fastapi"), [pid]);
}

#[test]
fn conformance_kit_passes_against_asgi_adapter() {
    let root = crate::util::repo();
    let out = std::process::Command::new(crate::util::binary())
        .args(["conformance", "--stream-path", "/stream?n=3", "--"])
        .args(["python3", "-m", "rustworkers", "asgi", "asgi_fixture:app"])
        .env("PYTHONPATH", format!("{0}/workers:{0}/tests/fixtures/python", root.display()))
        .output()
        .expect("run conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "conformance failed ({:?}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(stdout.contains("streamed response"), "stream case did not run:\n{stdout}");
}

/// The dedicated `asgi =` key: a 2-worker FastAPI pool, with `pool_extra` keys
/// (`concurrency`, `preload`, ...).
fn asgi_key_server(pool_extra: &str) -> TestServer {
    let s = TestServer::start(&format!(
        r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"
max_connections = 1000

[[sync]]
path = "/status"
kind = "status"

[[pool]]
name = "fastapi"
routes = ["/api/**"]
asgi = "fastapi_fixture:app"
module_path = ["{{repo}}/tests/fixtures/python"]
num_workers = 2
{pool_extra}
"#
    ));
    assert_eq!(s.wait_ready("fastapi", 2, READY).len(), 2, "asgi pool not ready; log:\n{}", s.log());
    s
}

#[test]
fn asgi_key_two_workers_serve_200_concurrent_sleeps_together() {
    let s = asgi_key_server("concurrency = 150");
    // 200 clients at once, each awaiting asyncio.sleep(0.5): with 2 × 150 concurrency they
    // all sleep together (~0.5 s); one at a time per worker would take 50 s.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(200));
    let began = Instant::now();
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let addr = s.addr.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                get(&addr, "/api/sleep?s=0.5").status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let took = began.elapsed();
    eprintln!("200 concurrent 0.5 s sleeps on a 2-worker ASGI pool took {took:.2?}");
    assert!(statuses.iter().all(|&c| c == 200), "{statuses:?}");
    assert!(took < Duration::from_secs(5), "not concurrent: {took:?}");
}

#[test]
fn fastapi_dependencies_and_background_tasks() {
    let s = asgi_key_server("concurrency = 150");
    let r = get(&s.addr, "/api/page?limit=3&offset=9");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"limit": 3, "offset": 9}));
    assert_eq!(get(&s.addr, "/api/page?limit=x").status, 422);
    // A background task runs after the response is sent, in the same worker: poll its
    // worker (either of the two) until the count shows it ran.
    let before: u64 =
        (0..4).map(|_| get(&s.addr, "/api/background").json()["done"].as_u64().unwrap_or(0)).max().unwrap();
    let r = request(&s.addr, "POST", "/api/background", &[], b"");
    assert_eq!(r.json()["queued"], true);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let done = get(&s.addr, "/api/background").json()["done"].as_u64().unwrap_or(0);
        if done > before {
            break;
        }
        assert!(Instant::now() < deadline, "the background task never ran");
    }
}

/// A FastAPI pool with `preload = true`: its workers come from the fork-server (lifespan
/// runs in each), serve, and a killed one is replaced from it.
#[test]
fn fastapi_preloaded_pool_serves_and_replaces_a_killed_worker() {
    let s = asgi_key_server("preload = true\nmax_restarts = 100");
    let workers = s.wait_ready("fastapi", 2, READY);
    assert_eq!(s.log_count("by the fork-server"), 2, "log:\n{}", s.log());
    let r = get(&s.addr, "/api/hello");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"hello": "world"}));
    crate::util::kill(workers[0], libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = s.worker_pids("fastapi");
        if now.len() == 2 && !now.contains(&workers[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "the killed worker was not replaced; log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(s.log_count("by the fork-server"), 3, "log:\n{}", s.log());
    for _ in 0..4 {
        assert_eq!(get(&s.addr, "/api/hello").status, 200);
    }
}
