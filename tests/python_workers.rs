//! The Python shim under the real dispatcher: real `python3 -m rustworkers` worker processes
//! started by the binary, real HTTP. Covers the items example, a Flask app through the WSGI
//! adapter, streams (SSE, NDJSON), deferred replies, keep_alive, stuck/crashing/exiting
//! workers, setup() failure driving the pool degraded, the memory limit, and the
//! conformance kit run against the shim.
//!
//! Fixture workers live in tests/fixtures/python/rw_fixture_worker.py (stdlib only).

use std::time::{Duration, Instant};

use crate::util::{Client, TestServer, get, pid_alive, repo, request};

const READY: Duration = Duration::from_secs(15);

const SERVER_HEAD: &str = r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"

[[sync]]
path = "/health"
kind = "health"

[[sync]]
path = "/status"
kind = "status"
"#;

/// A server with one Python pool `name` whose extra keys are `pool_keys`.
fn start_pool(name: &str, pool_keys: &str) -> TestServer {
    let config = format!("{SERVER_HEAD}\n[[pool]]\nname = \"{name}\"\n{pool_keys}\n");
    TestServer::start(&config)
}

fn items_server() -> TestServer {
    let s = start_pool(
        "items",
        r#"routes = ["/api/**"]
python = "items_worker:ItemsWorker"
module_path = ["{repo}/examples"]
num_workers = 1
"#,
    );
    assert_eq!(s.wait_ready("items", 1, READY).len(), 1, "items pool not ready; log:\n{}", s.log());
    s
}

/// The fixture pool with extra keys (timeouts, limits, kwargs tables go last).
fn fixture_server(extra: &str) -> TestServer {
    fixture_server_n(1, extra)
}

fn fixture_server_n(workers: usize, extra: &str) -> TestServer {
    let s = start_pool(
        "fx",
        &format!(
            r#"routes = ["/fx/**"]
python = "rw_fixture_worker:FixtureWorker"
module_path = ["{{repo}}/tests/fixtures/python"]
num_workers = {workers}
{extra}"#
        ),
    );
    assert_eq!(s.wait_ready("fx", workers, READY).len(), workers, "fixture pool not ready; log:\n{}", s.log());
    s
}

fn flask_server() -> TestServer {
    // Flask is a test dependency (requirements-test.txt): its absence is a failure, not a skip.
    let probe = std::process::Command::new("python3").args(["-c", "import flask"]).output().expect("run python3");
    assert!(
        probe.status.success(),
        "Flask is not importable (pip install -r requirements-test.txt): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let s = start_pool(
        "flask",
        r#"routes = ["/**"]
wsgi = "flask_app:app"
module_path = ["{repo}/examples"]
num_workers = 1
"#,
    );
    assert_eq!(s.wait_ready("flask", 1, READY).len(), 1, "flask pool not ready; log:\n{}", s.log());
    s
}

fn post_json(addr: &str, path: &str, body: &str) -> crate::util::Response {
    request(addr, "POST", path, &[("Content-Type", "application/json")], body.as_bytes())
}

/// Poll `f` until it returns Some or the deadline passes.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pool entry of `/status`.
fn pool_status(s: &TestServer, pool: &str) -> serde_json::Value {
    let v = get(&s.addr, "/status").json();
    v["pools"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == pool).cloned()).unwrap_or_default()
}

// ---------------------------------------------------------------- items example

#[test]
fn items_crud_list_get_post_delete() {
    let s = items_server();
    let addr = &s.addr;

    let r = get(addr, "/api/items");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!([]));
    assert!(r.header("content-type").unwrap_or("").contains("json"), "{:?}", r.headers);

    let r = post_json(addr, "/api/items", r#"{"name": "apple", "qty": 3}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"name": "apple", "qty": 3, "id": 1}));
    let r = post_json(addr, "/api/items", r#"{"name": "pear"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["id"], 2);

    let r = get(addr, "/api/items/1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "apple");

    let r = get(addr, "/api/items");
    assert_eq!(r.json().as_array().map(|a| a.len()), Some(2), "{}", r.text());

    // Missing item: 404 from the handler; a non-int id does not match the route at all.
    let r = get(addr, "/api/items/99");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"], "Not found");

    let r = request(addr, "DELETE", "/api/items/1", &[], b"");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(get(addr, "/api/items/1").status, 404);
    assert_eq!(request(addr, "DELETE", "/api/items/1", &[], b"").status, 404);

    // do_check: a POST without a JSON object is rejected 400 before the handler.
    let r = request(addr, "POST", "/api/items", &[("Content-Type", "text/plain")], b"nope");
    assert_eq!(r.status, 400, "{}", r.text());
    // Invalid JSON never reaches the worker code.
    let r = post_json(addr, "/api/items", "{not json");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "Invalid JSON body");

    // Grouped handler sees the same state.
    let r = get(addr, "/api/status");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["items"], 1);
    assert_eq!(r.json()["worker_id"], 0);
}

#[test]
fn items_wrong_method_is_405_with_allow() {
    let s = items_server();
    let r = request(&s.addr, "PUT", "/api/items", &[("Content-Type", "application/json")], b"{}");
    assert_eq!(r.status, 405, "{}", r.text());
    let allow = r.header("allow").unwrap_or_else(|| panic!("no Allow header: {:?}", r.headers));
    let mut methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    methods.sort();
    assert_eq!(methods, ["GET", "POST"], "Allow: {allow}");

    let r = request(&s.addr, "PATCH", "/api/items/1", &[], b"");
    assert_eq!(r.status, 405, "{}", r.text());
    let allow = r.header("allow").unwrap_or("");
    assert!(allow.contains("GET") && allow.contains("DELETE"), "Allow: {allow}");

    // An unknown path under the pool's routes is the worker's 404.
    let r = get(&s.addr, "/api/nothing-here");
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn items_query_parsing_reaches_handler() {
    let s = items_server();
    let r = get(&s.addr, "/api/slow?seconds=0.05&other=x+y");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"slept": 0.05}));
    // SSE route takes ?count=N.
    let r = get(&s.addr, "/api/items/events?count=2");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().matches("event: tick").count(), 2, "{}", r.text());
}

#[test]
fn kwargs_from_config_reach_worker() {
    let s = fixture_server(
        r#"
[pool.kwargs]
greeting = "hello"
answer = 42
ratio = 0.5
flags = [true, false]
nested = { a = "b" }
"#,
    );
    let r = get(&s.addr, "/fx/kwargs");
    assert_eq!(r.status, 200, "{}", r.text());
    let kw = &r.json()["kwargs"];
    assert_eq!(kw["greeting"], "hello", "{kw}");
    assert_eq!(kw["answer"], 42, "{kw}");
    assert_eq!(kw["ratio"], 0.5, "{kw}");
    assert_eq!(kw["flags"], serde_json::json!([true, false]), "{kw}");
    assert_eq!(kw["nested"], serde_json::json!({"a": "b"}), "{kw}");
}

// ---------------------------------------------------------------- Flask through WSGI

#[test]
fn flask_get_post_form_query_headers() {
    let s = flask_server();
    let addr = &s.addr;

    let r = get(addr, "/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("rustworkers + Flask"), "{}", r.text());
    assert!(r.header("content-type").unwrap_or("").starts_with("text/html"), "{:?}", r.headers);

    // Query string, percent-encoded.
    let r = get(addr, "/hello?name=r%C3%BCst+workers");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"hello": "rüst workers"}));
    assert_eq!(get(addr, "/hello").json(), serde_json::json!({"hello": "world"}));

    let r = post_json(addr, "/echo", r#"{"a": [1, 2, {"b": null}], "s": "é"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"a": [1, 2, {"b": null}], "s": "é"}));

    let r = request(
        addr,
        "POST",
        "/form",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"x=1&y=two+words&z=%26",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"x": "1", "y": "two words", "z": "&"}));

    let r = request(addr, "GET", "/headers", &[("X-Custom-Thing", "value 1"), ("Accept", "text/plain")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let h = r.json();
    assert_eq!(h["x-custom-thing"], "value 1", "{h}");
    assert_eq!(h["accept"], "text/plain", "{h}");
    assert_eq!(h["host"], "test", "{h}");
}

#[test]
fn flask_head_keeps_get_content_length_without_body() {
    let s = flask_server();
    let get_len = get(&s.addr, "/hello").body.len();
    assert!(get_len > 0);
    let r = request(&s.addr, "HEAD", "/hello", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // RFC 9110 §8.6: a HEAD content-length, if sent, is the GET body's length (Flask sends
    // it with no body; the dispatcher must not rewrite it to 0).
    assert_eq!(r.header("content-length"), Some(get_len.to_string().as_str()), "{:?}", r.headers);
    // The connection framing is still right: a raw HEAD then GET on one connection.
    let mut c = Client::connect(&s.addr);
    c.send(b"HEAD /hello HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.read_response_to(true).expect("HEAD response");
    assert_eq!(r.status, 200);
    let r = keepalive_get(&mut c, "/hello");
    assert_eq!(r.json(), serde_json::json!({"hello": "world"}));
}

#[test]
fn flask_cookies_in_and_out() {
    let s = flask_server();
    let r = request(&s.addr, "GET", "/cookies", &[("Cookie", "a=1; b=two")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"a": "1", "b": "two"}));
    let set_cookie: Vec<&str> = r.headers.iter().filter(|(k, _)| k == "set-cookie").map(|(_, v)| v.as_str()).collect();
    assert!(set_cookie.iter().any(|v| v.starts_with("visited=yes")), "Set-Cookie: {set_cookie:?}");

    // Two Cookie header lines are merged for the app.
    let r = request(&s.addr, "GET", "/cookies", &[("Cookie", "a=1"), ("Cookie", "c=3")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"a": "1", "c": "3"}));
}

#[test]
fn flask_404_and_exception_500_worker_lives_on() {
    let s = flask_server();
    let pid = s.worker_pids("flask")[0];
    assert_eq!(get(&s.addr, "/missing").status, 404);
    assert_eq!(get(&s.addr, "/no/such/route").status, 404);

    let r = get(&s.addr, "/boom");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(s.wait_for_log("RuntimeError: boom", Duration::from_secs(10)), "no traceback in log:\n{}", s.log());
    assert!(s.log().contains("Traceback"), "no traceback in log:\n{}", s.log());

    // Same worker process serves the next request.
    let r = get(&s.addr, "/hello");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.worker_pids("flask"), vec![pid]);
    assert!(pid_alive(pid));
}

// ---------------------------------------------------------------- streams

/// Send one GET on `c` (keep-alive) and read the response.
fn keepalive_get(c: &mut Client, path: &str) -> crate::util::Response {
    c.request(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
}

#[test]
fn sse_stream_events_in_order_then_end() {
    let s = fixture_server("");
    let mut c = Client::connect(&s.addr);
    let r = keepalive_get(&mut c, "/fx/sse?count=5");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{:?}", r.headers);
    assert!(r.header("content-type").unwrap_or("").starts_with("text/event-stream"), "{:?}", r.headers);
    let text = r.text();
    let ids: Vec<i64> =
        text.lines().filter_map(|l| l.strip_prefix("id: ")).map(|v| v.trim().parse().unwrap()).collect();
    assert_eq!(ids, [0, 1, 2, 3, 4], "{text}");
    assert_eq!(text.matches("event: tick").count(), 5, "{text}");
    let data: Vec<serde_json::Value> =
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(data, (0..5).map(|n| serde_json::json!({"n": n})).collect::<Vec<_>>(), "{text}");
    // The terminating chunk arrived (read_response returned), and the connection is
    // reusable: the stream really ended.
    let r = keepalive_get(&mut c, "/fx/pid");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn ndjson_stream_lines_in_order() {
    let s = fixture_server("");
    let mut c = Client::connect(&s.addr);
    let r = keepalive_get(&mut c, "/fx/ndjson?count=4");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{:?}", r.headers);
    assert!(r.header("content-type").unwrap_or("").contains("ndjson"), "{:?}", r.headers);
    let lines: Vec<serde_json::Value> = r.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, (0..4).map(|n| serde_json::json!({"n": n, "sq": n * n})).collect::<Vec<_>>());
    assert_eq!(keepalive_get(&mut c, "/fx/pid").status, 200);
}

// ---------------------------------------------------------------- deferred replies

#[test]
fn deferred_reply_from_on_idle() {
    let s = fixture_server("heartbeat_interval = 0.2\n");
    let r = get(&s.addr, "/fx/defer-idle");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"answered_by": "on_idle"}));
}

#[test]
fn deferred_reply_from_another_request() {
    let s = fixture_server("");
    let mut parked = Client::connect(&s.addr);
    parked.send(b"GET /fx/park HTTP/1.1\r\nHost: test\r\n\r\n");
    // The park request reaches the (single) worker before or after the first release;
    // release until it has released one.
    let released = poll(Duration::from_secs(10), || {
        let r = get(&s.addr, "/fx/release");
        assert_eq!(r.status, 200, "{}", r.text());
        (r.json()["released"] == 1).then_some(())
    });
    assert!(released.is_some(), "parked request never reached the worker");
    let r = parked.read_response().expect("no response to the parked request");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"answered_by": "release", "index": 0}));
}

// ---------------------------------------------------------------- keep_alive

#[test]
fn keep_alive_extends_pool_timeout() {
    let s = fixture_server("timeout = 1\n");
    // Control: a handler that sleeps without keep_alive is cut off at the timeout.
    let r = get(&s.addr, "/fx/slow-silent?seconds=2");
    assert_eq!(r.status, 504, "{}", r.text());
    // Let the worker finish that handler: a request queued behind it would time out in
    // the queue, not in a handler.
    let free = poll(Duration::from_secs(10), || (get(&s.addr, "/fx/pid").status == 200).then_some(()));
    assert!(free.is_some(), "worker never became free again; log:\n{}", s.log());
    // keep_alive every 0.2 s carries a 3 s handler past the 1 s timeout.
    let r = get(&s.addr, "/fx/slow?seconds=3");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"slept": 3.0}));
}

// ---------------------------------------------------------------- failures

#[test]
fn stuck_handler_killed_with_stack_dump_and_pool_recovers() {
    let s = fixture_server("stuck_timeout = 2\nheartbeat_interval = 0.2\n");
    let old = s.worker_pids("fx");
    let r = get(&s.addr, "/fx/stuck");
    assert_eq!(r.status, 500, "{}", r.text());
    // faulthandler's dump (SIGUSR2 before SIGKILL) lands in the log via the stderr pipe.
    let dumped = poll(Duration::from_secs(10), || {
        let log = s.log();
        (log.contains("File") && log.contains("rw_fixture_worker")).then_some(())
    });
    assert!(dumped.is_some(), "no faulthandler stack dump in log:\n{}", s.log());
    assert!(s.log().contains("in stuck"), "dump does not name the stuck function:\n{}", s.log());
    let new = poll(Duration::from_secs(15), || {
        let pids = s.worker_pids("fx");
        (pids.len() == 1 && pids != old).then_some(pids)
    })
    .unwrap_or_else(|| panic!("no replacement worker; log:\n{}", s.log()));
    assert!(!pid_alive(old[0]), "stuck worker {} still alive", old[0]);
    let r = get(&s.addr, "/fx/pid");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["pid"], new[0]);
}

#[test]
fn setup_crash_drives_pool_degraded() {
    let s = start_pool(
        "crash",
        r#"routes = ["/never/**"]
python = "rw_fixture_worker:SetupCrashWorker"
module_path = ["{repo}/tests/fixtures/python"]
num_workers = 1
max_restarts = 2
restart_window = 60
"#,
    );
    let degraded = poll(Duration::from_secs(20), || (pool_status(&s, "crash")["degraded"] == true).then_some(()));
    assert!(degraded.is_some(), "pool never degraded; log:\n{}", s.log());
    let h = get(&s.addr, "/health");
    assert_eq!(h.status, 503, "{}", h.text());
    assert_eq!(h.json()["pools"]["crash"], "degraded", "{}", h.text());
    let r = get(&s.addr, "/never");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_none(), "degraded 503 must not carry Retry-After: {:?}", r.headers);
    let log = s.log();
    assert!(log.contains("CRITICAL"), "no CRITICAL line:\n{log}");
    assert!(log.contains("Traceback"), "no traceback:\n{log}");
    assert!(log.contains("ValueError: fixture setup marker"), "no exception line:\n{log}");
    // A crash loop is told once in full, then one line per repeat, and the degrade line
    // names its cause.
    assert_eq!(log.matches("Traceback").count(), 1, "traceback repeated:\n{log}");
    assert!(log.contains("exited before it was ready"), "{log}");
    assert!(log.contains("same error as before"), "{log}");
    assert!(log.contains("degraded") && log.contains("cause: ValueError: fixture setup marker"), "{log}");
}

#[test]
fn handler_exception_500_traceback_logged_worker_lives_on() {
    let s = fixture_server("");
    let pid = s.worker_pids("fx")[0];
    let r = get(&s.addr, "/fx/boom");
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["error"], "fixture boom marker");
    assert!(s.wait_for_log("RuntimeError: fixture boom marker", Duration::from_secs(10)), "log:\n{}", s.log());
    assert!(s.log().contains("Traceback"), "log:\n{}", s.log());
    let r = get(&s.addr, "/fx/pid");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["pid"], pid);
}

#[test]
fn sys_exit_with_permanent_failure_code_parks_slot() {
    let s = fixture_server_n(2, "permanent_failure_exitcode = 7\n");
    let r = get(&s.addr, "/fx/exit?code=7");
    assert_eq!(r.status, 500, "{}", r.text());
    let parked = poll(Duration::from_secs(10), || {
        let p = pool_status(&s, "fx");
        (p["workers_parked"] == 1 && p["workers_alive"] == 1).then_some(p)
    });
    assert!(parked.is_some(), "slot not parked: {}\nlog:\n{}", pool_status(&s, "fx"), s.log());
    // It stays parked (no respawn), and the other worker keeps serving.
    std::thread::sleep(Duration::from_millis(500));
    let p = pool_status(&s, "fx");
    assert_eq!(p["workers_parked"], 1, "{p}");
    assert_eq!(s.worker_pids("fx").len(), 1, "{p}");
    assert_eq!(get(&s.addr, "/fx/pid").status, 200);
    assert_eq!(get(&s.addr, "/health").status, 200);

    // A different exit code is an ordinary crash: restarted, not parked.
    let r = get(&s.addr, "/fx/exit?code=3");
    assert_eq!(r.status, 500, "{}", r.text());
    let back = poll(Duration::from_secs(15), || {
        (s.worker_pids("fx").len() == 1 && pool_status(&s, "fx")["restarts_total"] == 1).then_some(())
    });
    assert!(back.is_some(), "{}\nlog:\n{}", pool_status(&s, "fx"), s.log());
    assert_eq!(pool_status(&s, "fx")["workers_parked"], 1);
}

#[test]
fn memory_limit_allocation_fails_and_pool_still_answers() {
    let s = fixture_server("memory_limit_mb = 200\n");
    let r = get(&s.addr, "/fx/alloc");
    assert!(
        (500..600).contains(&r.status),
        "expected 5xx for a 1 GiB allocation under a 200 MiB limit, got {}: {}",
        r.status,
        r.text()
    );
    let ok = poll(Duration::from_secs(15), || (get(&s.addr, "/fx/pid").status == 200).then_some(()));
    assert!(ok.is_some(), "pool does not answer after the allocation failure; log:\n{}", s.log());
}

// ---------------------------------------------------------------- conformance kit

#[test]
fn conformance_kit_passes_against_python_shim() {
    let root = repo();
    let out = std::process::Command::new(crate::util::binary())
        .args([
            "conformance",
            "--stream-path",
            "/api/items/events?count=3",
            "--",
            "python3",
            "-m",
            "rustworkers",
            "worker",
            "items_worker:ItemsWorker",
        ])
        .env("PYTHONPATH", format!("{}/workers:{}/examples", root.display(), root.display()))
        .output()
        .expect("run conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "conformance failed ({:?}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(stdout.contains("streamed response"), "stream case did not run:\n{stdout}");
}

#[test]
fn late_reply_after_timeout_is_dropped_worker_lives_on() {
    let s = fixture_server("timeout = 1\n");
    let pid = s.worker_pids("fx")[0];
    let r = get(&s.addr, "/fx/park");
    assert_eq!(r.status, 504, "{}", r.text());
    // The worker still holds the parked request and answers it now: the dispatcher drops
    // that late RESPONSE (the id is finished) without killing the worker.
    let r = get(&s.addr, "/fx/release");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["released"], 1);
    let r = get(&s.addr, "/fx/pid");
    assert_eq!(r.json()["pid"], pid);
    assert_eq!(s.worker_pids("fx"), vec![pid], "log:\n{}", s.log());
}

#[test]
fn idle_python_worker_heartbeats_keep_it_alive() {
    let s = fixture_server("stuck_timeout = 1\nheartbeat_interval = 0.2\n");
    let pid = s.worker_pids("fx")[0];
    // Several stuck_timeouts of idleness: heartbeats from the shim's loop must keep it.
    std::thread::sleep(Duration::from_millis(3000));
    let p = pool_status(&s, "fx");
    assert_eq!(p["restarts_total"], 0, "{p}\nlog:\n{}", s.log());
    assert_eq!(s.worker_pids("fx"), vec![pid]);
    assert!(p["workers"][0]["last_heartbeat_age"].as_f64().unwrap_or(99.0) < 1.0, "{p}");
}

#[test]
fn sse_stream_to_http10_client_is_close_delimited() {
    let s = fixture_server("");
    let raw = crate::util::raw_exchange(&s.addr, b"GET /fx/sse?count=3 HTTP/1.0\r\nHost: test\r\n\r\n");
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(crate::util::status_of(&raw), 200, "{text}");
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding"), "{head}");
    let ids: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert_eq!(ids, ["0", "1", "2"], "{body}");
}

/// Prefetch: requests given to a worker beyond its credits that it has not started go to
/// another worker (here: its replacement) when it dies; only the one it was serving fails.
#[test]
fn prefetched_requests_survive_their_workers_death() {
    let s = fixture_server("prefetch = 4\nmax_restarts = 100");
    let old_pid = s.wait_ready("fx", 1, READY)[0];
    let dir = crate::util::TempDir::new();
    let gate = dir.path().join("gate");
    let gate_q = gate.display().to_string();
    let addr = s.addr.clone();
    let dying = std::thread::spawn(move || get(&addr, &format!("/fx/die-at-gate?path={gate_q}")).status);
    let started = gate.with_extension("started");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the gated request never started; log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    // Three more while the only worker is busy: all prefetched to it, none left queued.
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let addr = s.addr.clone();
            std::thread::spawn(move || get(&addr, "/fx/pid"))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = pool_status(&s, "fx");
        if p["queue_depth"] == 0 && p["workers"][0]["in_hand"] == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "requests were not prefetched: {p}");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(&gate, b"").unwrap();
    assert_eq!(dying.join().unwrap(), 500, "the started request fails with its worker");
    for t in waiting {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "a prefetched request was lost: {}", r.text());
        assert_ne!(r.json()["pid"], old_pid, "answered by the replacement");
    }
    assert!(s.log().contains("3 prefetched request(s) unstarted: queued again"), "log:\n{}", s.log());
}

// ---------------------------------------------------------------- preload (fork-server)

/// The parent pid and session id of a process, from /proc.
fn ppid_and_sid(pid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    (f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0), f.get(3).and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// The fork-server: the server's one child that is not a ready worker.
fn forkserver_pid(s: &TestServer, workers: &[i32]) -> i32 {
    let others: Vec<i32> = s.children().into_iter().filter(|p| !workers.contains(p)).collect();
    assert_eq!(
        others.len(),
        1,
        "expected one fork-server beside the workers {workers:?}: {others:?}; log:\n{}",
        s.log()
    );
    others[0]
}

/// Wait until `f` holds, or fail with `what` and the server's log.
fn wait_until(s: &TestServer, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "{what}; log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn preloaded_workers_are_the_dispatchers_children_supervised_like_any_other() {
    let mut s = fixture_server_n(2, "preload = true\nmax_restarts = 100");
    let workers = s.wait_ready("fx", 2, READY);
    let fs = forkserver_pid(&s, &workers);
    assert_eq!(s.log_count("by the fork-server"), 2, "both workers forked by it; log:\n{}", s.log());
    for &w in &workers {
        let (ppid, sid) = ppid_and_sid(w);
        assert_eq!(ppid, s.pid, "worker {w} is the dispatcher's child (subreaper)");
        assert_eq!(sid, w, "worker {w} leads its own session");
    }
    // A killed worker is reaped and replaced from the fork-server, like any worker.
    crate::util::kill(workers[0], libc::SIGKILL);
    wait_until(&s, "the killed worker was not replaced", || {
        let now = s.worker_pids("fx");
        now.len() == 2 && !now.contains(&workers[0])
    });
    assert!(s.log().contains(&format!("(pid {}) was killed by signal 9", workers[0])), "log:\n{}", s.log());
    assert_eq!(s.log_count("by the fork-server"), 3, "log:\n{}", s.log());
    let replacement = *s.worker_pids("fx").iter().find(|p| !workers.contains(p)).unwrap();
    assert_eq!(ppid_and_sid(replacement).0, s.pid);
    assert_eq!(get(&s.addr, "/fx/pid").status, 200);
    // A graceful stop leaves nothing behind: workers and the fork-server are reaped.
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(15)).expect("server did not stop");
    assert!(status.success(), "{status:?}; log:\n{}", s.log());
    for pid in [fs, workers[1], replacement] {
        assert!(!pid_alive(pid), "pid {pid} outlived the server");
    }
}

#[test]
fn sigkill_of_the_forkserver_keeps_its_workers_and_a_new_one_takes_over() {
    let s = fixture_server_n(2, "preload = true\nmax_restarts = 100");
    let workers = s.wait_ready("fx", 2, READY);
    let fs = forkserver_pid(&s, &workers);
    crate::util::kill(fs, libc::SIGKILL);
    wait_until(&s, "the fork-server's death was not reported", || {
        s.log().contains(&format!("fork-server of pool fx (pid {fs}) was killed by signal 9"))
    });
    // Its workers serve on, untouched.
    for _ in 0..4 {
        let r = get(&s.addr, "/fx/pid");
        assert_eq!(r.status, 200);
        assert!(workers.contains(&(r.json()["pid"].as_i64().unwrap() as i32)));
    }
    wait_until(&s, "no new fork-server got ready", || s.log_count("fork-server of pool fx ready") == 2);
    let workers_now = s.worker_pids("fx");
    assert_eq!(workers_now, workers, "the workers were not restarted");
    let fs2 = forkserver_pid(&s, &workers);
    assert_ne!(fs2, fs);
    crate::util::kill(workers[1], libc::SIGKILL);
    wait_until(&s, "the killed worker was not replaced", || {
        let now = s.worker_pids("fx");
        now.len() == 2 && !now.contains(&workers[1])
    });
    assert_eq!(
        s.log_count("by the fork-server"),
        3,
        "the replacement came from the new fork-server; log:\n{}",
        s.log()
    );
}

#[test]
fn a_hung_forkserver_is_given_up_and_workers_start_without_it() {
    let s = fixture_server_n(1, "preload = true\nmax_restarts = 100");
    let workers = s.wait_ready("fx", 1, READY);
    let fs = forkserver_pid(&s, &workers);
    crate::util::kill(fs, libc::SIGSTOP);
    crate::util::kill(workers[0], libc::SIGKILL);
    wait_until(&s, "no replacement without the hung fork-server", || {
        let now = s.worker_pids("fx");
        now.len() == 1 && now[0] != workers[0]
    });
    let log = s.log();
    assert!(log.contains("failed to fork a worker: no answer in time"), "log:\n{log}");
    wait_until(&s, "the hung fork-server was not killed and reaped", || !pid_alive(fs));
    assert_eq!(get(&s.addr, "/fx/pid").status, 200);
    // A new fork-server takes over later.
    wait_until(&s, "no new fork-server", || s.log_count("fork-server of pool fx ready") == 2);
}

/// The dispatcher never waits for a fork-server: while a fork request to a stopped one is
/// outstanding (until its 250 ms timeout), the loop answers on. Requests are sent back
/// to back through the whole window; a loop blocked on the answer would hold one of them
/// for most of the 250 ms.
#[test]
fn a_fork_request_never_blocks_the_loop() {
    let s = fixture_server_n(1, "preload = true\nmax_restarts = 100");
    let workers = s.wait_ready("fx", 1, READY);
    let fs = forkserver_pid(&s, &workers);
    crate::util::kill(fs, libc::SIGSTOP);
    crate::util::kill(workers[0], libc::SIGKILL);
    let mut worst = Duration::ZERO;
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.log().contains("failed to fork a worker: no answer in time") {
        assert!(Instant::now() < deadline, "the fork request never timed out; log:\n{}", s.log());
        let began = Instant::now();
        assert_eq!(get(&s.addr, "/status").status, 200, "log:\n{}", s.log());
        worst = worst.max(began.elapsed());
        answered += 1;
    }
    assert!(answered >= 5, "too few requests in the window to tell: {answered}");
    assert!(worst < Duration::from_millis(150), "a request waited {worst:?} while the fork request was out");
    crate::util::kill(fs, libc::SIGKILL);
}

#[test]
fn a_preload_pool_whose_app_does_not_import_degrades_with_the_cause() {
    let s = start_pool(
        "fx",
        r#"routes = ["/fx/**"]
python = "no_such_module_here:Worker"
num_workers = 1
max_restarts = 2
restart_window = 60
preload = true
"#,
    );
    wait_until(&s, "the pool did not degrade", || s.log().contains("pool fx degraded"));
    let log = s.log();
    assert!(log.contains("preloading no_such_module_here:Worker failed"), "log:\n{log}");
    assert!(log.contains("ModuleNotFoundError"), "log:\n{log}");
    let r = get(&s.addr, "/fx/pid");
    assert_eq!(r.status, 503, "{}", r.text());
}

/// A request that expires (504) while prefetched behind a slow one never starts: after a
/// slow handler the worker reads the pipe (and the DISCONNECT) before starting the next
/// request it already holds.
#[test]
fn an_expired_prefetched_request_never_starts_in_a_python_worker() {
    // A heartbeat interval longer than the slow handler: the heartbeat does not end the
    // batch, only the batch window does.
    let s = fixture_server("timeout = 1\nheartbeat_interval = 5");
    let pid = s.wait_ready("fx", 1, READY)[0];
    let in_hand = || pool_status(&s, "fx")["workers"][0]["in_hand"].as_u64().unwrap_or(0);
    let addr = s.addr.clone();
    let first = std::thread::spawn(move || get(&addr, "/fx/slow-silent?seconds=0.5").status);
    wait_until(&s, "the first request never reached the worker", || in_hand() == 1);
    // Both arrive while the worker is busy, so it reads them together: the slow one
    // starts, the other waits in the worker (it would end the worker with status 7).
    let addr = s.addr.clone();
    let slow = std::thread::spawn(move || get(&addr, "/fx/slow-silent?seconds=2.5").status);
    wait_until(&s, "the slow request was not prefetched", || in_hand() == 2);
    let r = get(&s.addr, "/fx/exit?code=7");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(slow.join().unwrap(), 504);
    wait_until(&s, "the worker did not finish the slow request", || in_hand() == 0);
    assert_eq!(get(&s.addr, "/fx/pid").json()["pid"], pid, "the expired request ran; log:\n{}", s.log());
    assert!(!s.log().contains("exited with status 7"), "log:\n{}", s.log());
}

/// A reload that turns `preload` on starts a fork-server, and the pool's new workers
/// come from it (the dispatcher becomes a subreaper then).
#[test]
fn a_reload_that_turns_preload_on_starts_a_forkserver() {
    let s = fixture_server("max_restarts = 100");
    let old = s.wait_ready("fx", 1, READY);
    assert_eq!(s.log_count("by the fork-server"), 0);
    let path = s.dir.path().join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    s.dir.write("config.toml", text.replace("num_workers = 1", "num_workers = 1\npreload = true"));
    s.signal(libc::SIGHUP);
    wait_until(&s, "no fork-server after the reload", || s.log_count("fork-server of pool fx ready") == 1);
    wait_until(&s, "the pool's worker was not replaced from the fork-server", || {
        let now = s.worker_pids("fx");
        now.len() == 1 && now[0] != old[0] && s.log_count("by the fork-server") == 1
    });
    let w = s.worker_pids("fx")[0];
    assert_eq!(ppid_and_sid(w).0, s.pid, "the forked worker is the dispatcher's child");
    assert_eq!(get(&s.addr, "/fx/pid").json()["pid"], w);
}
