//! Worker pools under the real binary: the echo round trip (binary bodies, X-Request-ID),
//! every worker failure mode of the chaos worker answered with its status while the pool
//! recovers, queue expiry and max_pending, worker output and LOG frames in the log,
//! keep_alive, streaming, client disconnects, fd hygiene of workers, the conformance kit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{Client, TempDir, TestServer, binary, get, raw_exchange, repo, request, zombies_of};

const BASE: &str = r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"
{server_extra}

[[sync]]
path = "/health"
kind = "health"

[[sync]]
path = "/status"
kind = "status"

[[pool]]
name = "echo"
routes = ["/echo/**"]
native = "echo"
num_workers = 1

[[pool]]
name = "chaos"
routes = ["/chaos/**"]
native = "chaos"
{pool_extra}
"#;

/// A server with an `echo` pool (1 worker) and a `chaos` pool configured by `pool_extra`
/// (must include `num_workers`), waiting for `ready` chaos workers.
fn chaos_server(pool_extra: &str, server_extra: &str, ready: usize) -> TestServer {
    let cfg = BASE.replace("{pool_extra}", pool_extra).replace("{server_extra}", server_extra);
    let s = TestServer::start(&cfg);
    assert_eq!(s.wait_ready("echo", 1, Duration::from_secs(10)).len(), 1, "echo not ready:\n{}", s.log());
    if ready > 0 {
        assert_eq!(s.wait_ready("chaos", ready, Duration::from_secs(10)).len(), ready, "chaos not ready:\n{}", s.log());
    }
    s
}

pub fn pool_status(s: &TestServer, pool: &str) -> serde_json::Value {
    let v = get(&s.addr, "/status").json();
    v["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == pool).cloned())
        .unwrap_or_else(|| panic!("no pool {pool} in /status: {v}"))
}

/// Poll `f` until it returns Some or the deadline passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The pool answers a plain request 200 again (within a generous deadline) and the
/// dispatcher has reaped every dead worker.
fn assert_recovers(s: &TestServer) {
    let ok = poll(Duration::from_secs(10), || (get(&s.addr, "/chaos/ok").status == 200).then_some(()));
    assert!(ok.is_some(), "pool did not recover:\n{}", s.log());
    let reaped = poll(Duration::from_secs(5), || zombies_of(s.pid).is_empty().then_some(()));
    assert!(reaped.is_some(), "zombies left: {:?}", zombies_of(s.pid));
}

fn fd_set(pid: i32) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    fds.sort();
    fds
}

fn fd_targets(pid: i32) -> Vec<String> {
    fd_set(pid)
        .into_iter()
        .map(|fd| {
            format!(
                "{fd} -> {}",
                std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).map(|p| p.display().to_string()).unwrap_or_default()
            )
        })
        .collect()
}

// ---------------------------------------------------------------- echo round trip

#[test]
fn echo_round_trips_method_path_query_headers_body() {
    let s = chaos_server("num_workers = 1", "", 1);
    let r = request(
        &s.addr,
        "PUT",
        "/echo/a/b%20c?x=1&y=two",
        &[("X-Custom", "hello"), ("Content-Type", "text/plain")],
        b"payload-body",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/echo/a/b%20c", "{v}");
    assert_eq!(v["query"], "x=1&y=two");
    assert_eq!(v["body"], "payload-body");
    assert_eq!(v["body_len"], 12);
    let headers = v["headers"].as_array().expect("headers array");
    let has = |k: &str, val: &str| {
        headers.iter().any(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(k)) && h[1] == val)
    };
    assert!(has("x-custom", "hello"), "{v}");
    assert!(has("content-type", "text/plain"), "{v}");
    assert!(v["pid"].as_i64().unwrap_or(0) > 0);
}

#[test]
fn echo_binary_body_keeps_every_byte_value() {
    let s = chaos_server("num_workers = 1", "", 1);
    let body: Vec<u8> = (0..=255u8).collect();
    let r = request(&s.addr, "POST", "/echo/bin", &[("Content-Type", "application/octet-stream")], &body);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["body_len"], 256, "{v}");
    // echo renders the body as (lossy) UTF-8: it equals the lossy rendering of exactly
    // these 256 bytes, so every byte arrived in order (ASCII verbatim, the rest counted).
    assert_eq!(v["body"].as_str().unwrap(), String::from_utf8_lossy(&body), "{v}");
}

const BIN_WORKER: &str = r#"
import os
from rustworkers import Worker, api


class BinWorker(Worker):
    @api("/bin/echo", "POST")
    def echo(self, request):
        return bytes(request.data or b"")

    @api("/bin/partial", "GET")
    def partial(self, request):
        os.write(1, b"line-one\nline-two-without-newline")
        os.write(2, b"err-tail-without-newline")
        os._exit(3)

    @api("/bin/pid", "GET")
    def pid(self, request):
        return {"pid": os.getpid()}
"#;

fn command_server() -> TestServer {
    let dir = TempDir::new();
    dir.write("binworker.py", BIN_WORKER);
    let s = TestServer::start_in(
        dir,
        r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"

[[sync]]
path = "/status"
kind = "status"

[[pool]]
name = "bin"
routes = ["/bin/**"]
command = ["python3", "-m", "rustworkers", "worker", "binworker:BinWorker"]
env = { PYTHONPATH = "{repo}/workers:{dir}" }
num_workers = 1
"#,
    );
    assert_eq!(s.wait_ready("bin", 1, Duration::from_secs(20)).len(), 1, "bin worker not ready:\n{}", s.log());
    s
}

#[test]
fn command_worker_binary_body_round_trip_exact() {
    let s = command_server();
    let mut body: Vec<u8> = (0..=255u8).collect();
    body.extend((0..=255u8).rev());
    let r = request(&s.addr, "POST", "/bin/echo", &[("Content-Type", "application/octet-stream")], &body);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.log());
    assert_eq!(r.body, body, "binary body changed on the way through the worker");
}

#[test]
fn x_request_id_reaches_worker_and_comes_back() {
    let s = chaos_server("num_workers = 1", "", 1);
    let r = request(&s.addr, "GET", "/echo/rid", &[("X-Request-ID", "rid-abc-123")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["x_request_id"], "rid-abc-123");
    assert_eq!(r.header("x-request-id"), Some("rid-abc-123"));
    // Without one, the dispatcher makes one up and the worker sees the same id.
    let r = get(&s.addr, "/echo/rid");
    let sent = r.header("x-request-id").expect("generated x-request-id").to_string();
    assert!(!sent.is_empty());
    assert_eq!(r.json()["x_request_id"], sent.as_str());
}

// ---------------------------------------------------------------- failures → status, recovery

/// `?query` to a 1-worker chaos pool answers `status`; the pool then answers 200 again,
/// with a new worker process when `new_pid`, and no zombie is left.
fn failure_then_recovery(query: &str, status: u16, new_pid: bool) -> TestServer {
    let s = chaos_server("num_workers = 1", "", 1);
    let before = s.worker_pids("chaos");
    let r = get(&s.addr, &format!("/chaos/x?{query}"));
    assert_eq!(r.status, status, "{query}: {}\n{}", r.text(), s.log());
    assert_recovers(&s);
    if new_pid {
        let after = s.wait_ready("chaos", 1, Duration::from_secs(10));
        assert_eq!(after.len(), 1);
        assert_ne!(after, before, "{query}: worker was not replaced");
    }
    s
}

#[test]
fn worker_exit_is_500_and_pool_recovers() {
    let s = failure_then_recovery("exit=3", 500, true);
    assert!(s.log().contains("exit"), "{}", s.log());
}

#[test]
fn worker_abort_is_500_and_pool_recovers() {
    failure_then_recovery("abort=1", 500, true);
}

#[test]
fn worker_segv_is_500_and_pool_recovers() {
    failure_then_recovery("segv=1", 500, true);
}

#[test]
fn garbage_frame_is_500_protocol_violation_and_pool_recovers() {
    let s = failure_then_recovery("garbage=1", 500, true);
    assert!(s.log().contains("broke the protocol"), "no protocol violation logged:\n{}", s.log());
}

#[test]
fn oversized_frame_is_500_and_pool_recovers() {
    let s = failure_then_recovery("oversized=1", 500, true);
    assert!(s.log().contains("broke the protocol"), "{}", s.log());
}

#[test]
fn stream_chunk_before_start_is_500_and_pool_recovers() {
    failure_then_recovery("bad_order=1", 500, true);
}

#[test]
fn foreign_response_id_is_500_and_pool_recovers() {
    failure_then_recovery("foreign=1", 500, true);
}

#[test]
fn spinning_worker_is_killed_after_usr2_and_request_gets_500() {
    let s = chaos_server("num_workers = 1\nstuck_timeout = 2\nheartbeat_interval = 0.2\ntimeout = 30", "", 1);
    let before = s.worker_pids("chaos");
    let r = get(&s.addr, "/chaos/spinner?spin=1");
    assert_eq!(r.status, 500, "{}", r.text());
    let log = s.log();
    assert!(log.contains("SIGUSR2"), "no SIGUSR2 step logged:\n{log}");
    assert!(log.contains("stuck: SIGKILL, holding ["), "{log}");
    assert!(log.contains("/chaos/spinner?spin=1"), "the held request is not named:\n{log}");
    // The worker's own note of the SIGUSR2 reached the log through its captured stderr.
    assert!(log.contains("stderr] native worker: SIGUSR2 received"), "{log}");
    assert_recovers(&s);
    assert_ne!(s.wait_ready("chaos", 1, Duration::from_secs(10)), before);
}

#[test]
fn request_past_pool_timeout_is_504_worker_kept() {
    let s = chaos_server("num_workers = 1\ntimeout = 1", "", 1);
    let before = s.worker_pids("chaos");
    let r = get(&s.addr, "/chaos/slow?sleep=3000");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_recovers(&s);
    assert_eq!(s.worker_pids("chaos"), before, "a slow worker is not a dead worker");
}

#[test]
fn request_expiring_in_queue_is_504_and_never_reaches_a_worker() {
    // prefetch = 0: the second request stays in the dispatcher's queue (the prefetch case,
    // where it waits in the worker and is dropped there, is the next test).
    let s = chaos_server("num_workers = 1\ntimeout = 1\nprefetch = 0", "", 1);
    let addr = s.addr.clone();
    let busy = std::thread::spawn(move || get(&addr, "/chaos/busy?sleep=2500").status);
    // Let the sleeper reach the worker first.
    let held = poll(Duration::from_secs(5), || (pool_status(&s, "chaos")["workers"][0]["in_hand"] == 1).then_some(()));
    assert!(held.is_some(), "sleeper not in the worker");
    let r = get(&s.addr, "/chaos/queued?stdout=queued-request-reached-worker");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(busy.join().unwrap(), 504);
    // Wait for the worker to finish the sleeper, then: only the sleeper was served.
    let idle = poll(Duration::from_secs(6), || (pool_status(&s, "chaos")["workers"][0]["in_hand"] == 0).then_some(()));
    assert!(idle.is_some());
    assert_eq!(get(&s.addr, "/chaos/ok").status, 200);
    let served = pool_status(&s, "chaos")["workers"][0]["served"].as_u64().unwrap();
    assert!(served <= 2, "expired request was served too: served = {served}");
    assert!(!s.log().contains("queued-request-reached-worker"), "expired request reached the worker:\n{}", s.log());
}

#[test]
fn request_expiring_while_prefetched_is_504_and_never_starts() {
    let s = chaos_server("num_workers = 1\ntimeout = 1", "", 1);
    let addr = s.addr.clone();
    let busy = std::thread::spawn(move || get(&addr, "/chaos/busy?sleep=2500").status);
    let held = poll(Duration::from_secs(5), || (pool_status(&s, "chaos")["workers"][0]["in_hand"] == 1).then_some(()));
    assert!(held.is_some(), "sleeper not in the worker");
    let addr = s.addr.clone();
    let queued = std::thread::spawn(move || get(&addr, "/chaos/queued?stdout=prefetched-request-started").status);
    // Prefetched: the worker holds it beside the sleeper; the dispatcher's queue is empty.
    let prefetched = poll(Duration::from_secs(5), || {
        let p = pool_status(&s, "chaos");
        (p["workers"][0]["in_hand"] == 2 && p["queue_depth"] == 0).then_some(())
    });
    assert!(prefetched.is_some(), "not prefetched: {}", pool_status(&s, "chaos"));
    assert_eq!(queued.join().unwrap(), 504);
    assert_eq!(busy.join().unwrap(), 504);
    let idle = poll(Duration::from_secs(6), || (pool_status(&s, "chaos")["workers"][0]["in_hand"] == 0).then_some(()));
    assert!(idle.is_some(), "{}", pool_status(&s, "chaos"));
    assert_eq!(get(&s.addr, "/chaos/ok").status, 200);
    assert!(!s.log().contains("prefetched-request-started"), "the expired request started:\n{}", s.log());
}

#[test]
fn max_pending_exceeded_is_503() {
    // prefetch = 0: queued requests stay in the dispatcher's queue, which max_pending bounds.
    let s = chaos_server("num_workers = 1\ntimeout = 30\nprefetch = 0", "max_pending = 1", 1);
    let a = s.addr.clone();
    let busy = std::thread::spawn(move || get(&a, "/chaos/busy?sleep=1500").status);
    assert!(
        poll(Duration::from_secs(5), || (pool_status(&s, "chaos")["workers"][0]["in_hand"] == 1).then_some(()))
            .is_some()
    );
    let a = s.addr.clone();
    let queued = std::thread::spawn(move || get(&a, "/chaos/queued").status);
    assert!(
        poll(Duration::from_secs(5), || (pool_status(&s, "chaos")["queue_depth"] == 1).then_some(())).is_some(),
        "second request not queued"
    );
    let r = get(&s.addr, "/chaos/over");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(busy.join().unwrap(), 200);
    assert_eq!(queued.join().unwrap(), 200);
    assert_eq!(get(&s.addr, "/chaos/ok").status, 200);
}

// ---------------------------------------------------------------- worker output and logs

#[test]
fn worker_stdout_and_stderr_lines_are_logged_under_worker_name() {
    let s = chaos_server("num_workers = 1", "", 1);
    assert_eq!(get(&s.addr, "/chaos/x?stdout=hello-marker-out").status, 200);
    assert_eq!(get(&s.addr, "/chaos/x?stderr=hello-marker-err").status, 200);
    assert!(s.wait_for_log("stdout] hello-marker-out", Duration::from_secs(5)), "{}", s.log());
    assert!(s.wait_for_log("stderr] hello-marker-err", Duration::from_secs(5)), "{}", s.log());
    let line = s.log().lines().find(|l| l.contains("hello-marker-out")).unwrap().to_string();
    assert!(line.contains("chaos"), "line does not name the worker: {line}");
}

#[test]
fn log_frames_are_logged_under_worker_name() {
    let s = chaos_server("num_workers = 1", "", 1);
    assert_eq!(get(&s.addr, "/chaos/x?log=log-frame-marker").status, 200);
    assert!(s.wait_for_log("log-frame-marker", Duration::from_secs(5)), "{}", s.log());
    let line = s.log().lines().find(|l| l.contains("log-frame-marker")).unwrap().to_string();
    assert!(line.contains("[chaos"), "line does not name the worker: {line}");
}

// ---------------------------------------------------------------- keep_alive, streams

#[test]
fn keep_alive_extends_request_timeout_and_stuck_clock() {
    let s = chaos_server("num_workers = 1\ntimeout = 1\nstuck_timeout = 1.5\nheartbeat_interval = 0.2", "", 1);
    let before = s.worker_pids("chaos");
    let r = get(&s.addr, "/chaos/long?keepalive=3000");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.log());
    assert_eq!(r.json()["chaos"], "keepalive");
    assert_eq!(s.worker_pids("chaos"), before, "worker was killed although it called keep_alive");
    assert!(!s.log().contains("SIGUSR2"), "{}", s.log());
}

#[test]
fn stream_is_chunked_with_chunks_in_order() {
    let s = chaos_server("num_workers = 1", "", 1);
    let raw = raw_exchange(&s.addr, b"GET /chaos/s?stream=5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, mut rest) = text.split_once("\r\n\r\n").expect("response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    let mut chunks = Vec::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).expect("hex size");
        if n == 0 {
            break;
        }
        chunks.push(after[..n].to_string());
        rest = &after[n + 2..];
    }
    let body: String = chunks.concat();
    assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
    assert_eq!(chunks.len(), 5, "expected one HTTP chunk per worker chunk: {chunks:?}");
}

// ---------------------------------------------------------------- disconnects

#[test]
fn client_disconnect_while_in_worker_keeps_worker_and_dispatcher() {
    let s = chaos_server("num_workers = 1", "", 1);
    let before = s.worker_pids("chaos");
    {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.write_all(b"GET /chaos/d?sleep=500 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        // Give the dispatcher the request, then vanish.
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..3 {
        assert_eq!(get(&s.addr, "/chaos/after").status, 200, "{}", s.log());
    }
    let mut c = Client::connect(&s.addr);
    let r = c.request(b"GET /echo/ka HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(s.worker_pids("chaos"), before, "worker was replaced after a client disconnect");
    assert!(zombies_of(s.pid).is_empty());
}

// ---------------------------------------------------------------- fd hygiene

#[test]
fn native_worker_has_only_protocol_fds() {
    let s = chaos_server("num_workers = 1", "", 1);
    // Keep a client connection open while we look, so a leaked client socket would show.
    let mut c = Client::connect(&s.addr);
    assert_eq!(c.request(b"GET /chaos/x HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
    let pid = s.worker_pids("chaos")[0];
    assert_eq!(fd_set(pid), vec![0, 1, 2, 3, 4], "{:?}", fd_targets(pid));
    // A worker forked while a client is connected (the replacement after a crash).
    assert_eq!(get(&s.addr, "/chaos/x?exit=1").status, 500);
    let pids = poll(Duration::from_secs(10), || s.worker_pids("chaos").into_iter().find(|&p| p != pid))
        .expect("no replacement worker");
    assert_eq!(fd_set(pids), vec![0, 1, 2, 3, 4], "{:?}", fd_targets(pids));
    let mut buf = [0u8; 1];
    c.stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let _ = c.stream.read(&mut buf);
}

#[test]
fn command_worker_has_only_protocol_fds() {
    let s = command_server();
    let mut c = Client::connect(&s.addr);
    let r = c.request(b"GET /bin/pid HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let pid = r.json()["pid"].as_i64().unwrap() as i32;
    assert_eq!(s.worker_pids("bin"), vec![pid]);
    let fds = fd_targets(pid);
    assert!(!fds.iter().any(|f| f.contains("socket:")), "socket leaked into worker: {fds:?}");
    // Beyond 0-4 the shim only has its own selector: an epoll watching its own fds 3/4
    // (the dispatcher's epoll, if leaked, would watch the listener and client sockets).
    let inherited: Vec<i32> = fd_set(pid)
        .into_iter()
        .filter(|&fd| {
            let link =
                std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).map(|p| p.display().to_string()).unwrap_or_default();
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
            let own_epoll = link == "anon_inode:[eventpoll]"
                && info.lines().filter(|l| l.starts_with("tfd:")).all(|l| {
                    let tfd: i32 = l.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(-1);
                    tfd == 3 || tfd == 4
                });
            fd > 4 && !own_epoll
        })
        .collect();
    assert!(inherited.is_empty(), "unexpected fds in the worker: {inherited:?} of {fds:?}");
    assert_eq!(&fd_set(pid)[..5], &[0, 1, 2, 3, 4], "{fds:?}");
}

// ---------------------------------------------------------------- conformance kit

fn run_conformance(args: &[&str], env: &[(&str, String)]) {
    let mut cmd = Command::new(binary());
    cmd.arg("conformance").args(args).current_dir(repo());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "conformance failed ({:?}):\n{stdout}\n{stderr}", out.status);
    let summary =
        stdout.lines().find(|l| l.contains(" passed, ")).unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    assert!(summary.trim_end().ends_with("passed, 0 failed"), "{summary}");
    let passed: usize = summary.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(passed >= 5, "too few cases ran: {summary}");
}

#[test]
fn conformance_kit_passes_native_echo() {
    run_conformance(&["--native", "echo"], &[]);
}

#[test]
fn conformance_kit_finds_the_bundled_shim_like_pools_do() {
    // Issue 8.1: the documented command from a clean clone, with no PYTHONPATH at all.
    let out = Command::new(binary())
        .args(["conformance", "--", "python3", "-m", "rustworkers", "worker", "examples.items_worker:ItemsWorker"])
        .current_dir(repo())
        .env_remove("PYTHONPATH")
        .output()
        .expect("run conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "conformance failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn conformance_kit_passes_python_items_worker() {
    let pp = format!("{}/workers:{}", repo().display(), repo().display());
    run_conformance(
        &["--", "python3", "-m", "rustworkers", "worker", "examples.items_worker:ItemsWorker"],
        &[("PYTHONPATH", pp)],
    );
}

#[test]
fn invalid_worker_status_is_500_at_once_and_pool_recovers() {
    // Worker statuses that are not a final HTTP status: the worker broke the protocol, its
    // request gets 500 right away (not a 504 after the pool timeout), and the pool recovers.
    let s = chaos_server("num_workers = 1\ntimeout = 20", "", 1);
    for bad in [0u16, 99, 100, 101, 199, 600, 999] {
        let t0 = Instant::now();
        let raw = raw_exchange(
            &s.addr,
            format!("GET /chaos/x?status={bad} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let text = String::from_utf8_lossy(&raw).into_owned();
        assert!(text.starts_with("HTTP/1.1 500 "), "status={bad}: {text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "status={bad}: more than one response head: {text}");
        assert!(t0.elapsed() < Duration::from_secs(10), "status={bad}: answered only after {:?}", t0.elapsed());
        assert_recovers(&s);
    }
    assert!(s.log().contains("broke the protocol"));
}

#[test]
fn worker_204_and_304_are_sent_without_body() {
    let s = chaos_server("num_workers = 1", "", 1);
    for st in [204u16, 304] {
        let mut c = Client::connect(&s.addr);
        c.send(format!("GET /chaos/x?status={st} HTTP/1.1\r\nHost: t\r\n\r\nGET /chaos/next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
        let r = c.read_response().expect("first response");
        assert_eq!(r.status, st);
        assert_eq!(r.header("transfer-encoding"), None, "{st}: {:?}", r.headers);
        // The second pipelined response must follow directly: no body bytes in between.
        let next = c.read_response().expect("second response");
        assert_eq!(next.status, 200, "{st}: body bytes leaked after a {st}: {:?}", next);
    }
}

#[test]
fn forward_frame_reaches_the_target_pool() {
    let s = chaos_server("num_workers = 1", "", 1);
    let served = |s: &TestServer| pool_status(s, "echo")["workers"][0]["served"].as_u64().unwrap();
    let before = served(&s);
    let r = request(
        &s.addr,
        "POST",
        "/chaos/x?forward=/echo/forwarded",
        &[("Content-Type", "application/json")],
        b"{\"n\": 1}",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["chaos"], "forward");
    let reached = poll(Duration::from_secs(5), || (served(&s) == before + 1).then_some(()));
    assert!(reached.is_some(), "forwarded request never served by echo: {}\n{}", pool_status(&s, "echo"), s.log());
}

#[test]
fn last_partial_output_line_of_a_dying_worker_is_logged() {
    let s = command_server();
    let r = get(&s.addr, "/bin/partial");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(s.wait_for_log("stdout] line-one", Duration::from_secs(5)), "{}", s.log());
    assert!(
        s.wait_for_log("stdout] line-two-without-newline", Duration::from_secs(5)),
        "unterminated last stdout line lost:\n{}",
        s.log()
    );
    assert!(
        s.wait_for_log("stderr] err-tail-without-newline", Duration::from_secs(5)),
        "unterminated last stderr line lost:\n{}",
        s.log()
    );
    assert_eq!(s.wait_ready("bin", 1, Duration::from_secs(20)).len(), 1);
    assert!(poll(Duration::from_secs(5), || zombies_of(s.pid).is_empty().then_some(())).is_some());
}

#[test]
fn worker_killed_mid_stream_truncates_the_response_and_pool_recovers() {
    let s = chaos_server("num_workers = 1", "", 1);
    let pid = s.worker_pids("chaos")[0];
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /chaos/s?stream=200 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("chunk 1\n") {
        let n = c.read(&mut tmp).expect("read stream");
        assert!(n > 0, "closed before the first chunks");
        got.extend_from_slice(&tmp[..n]);
    }
    // SAFETY: kill(2) on a worker of the server this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    loop {
        match c.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&tmp[..n]),
            Err(e) => panic!("connection not closed after the worker died mid-stream: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "a second response head was written into the stream: {text}");
    assert!(!text.ends_with("0\r\n\r\n"), "a truncated stream must not look complete: {text}");
    assert_recovers(&s);
}

/// FLOW: a stream larger than the dispatcher's per-stream cap (8 MiB) reaches a client that
/// reads slowly intact, because the dispatcher pauses the worker (FLOW) instead of
/// buffering, and resumes it as the client drains.
#[test]
fn slow_client_stream_is_paused_with_flow_not_cut() {
    let config = r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"
[[sync]]
path = "/status"
kind = "status"
[[pool]]
name = "flow"
routes = ["/flow/**"]
command = ["python3", "{repo}/tests/fixtures/python/flow_worker.py"]
env = { PYTHONPATH = "{repo}/workers" }
num_workers = 1
"#;
    let s = TestServer::start(config);
    assert_eq!(s.wait_ready("flow", 1, Duration::from_secs(15)).len(), 1, "{}", s.log());
    let mut c = Client::connect(&s.addr);
    c.send(b"GET /flow/big HTTP/1.1\r\nHost: t\r\n\r\n");
    // Read nothing for a while: the worker must be told to pause.
    assert!(s.wait_for_log("flow paused", Duration::from_secs(15)), "worker never paused:\n{}", s.log());
    std::thread::sleep(Duration::from_millis(500));
    let r = c.read_response().expect("stream");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 48 * 256 * 1024, "stream cut short:\n{}", s.log());
    for (n, chunk) in r.body.chunks(256 * 1024).enumerate() {
        assert!(chunk.iter().enumerate().all(|(i, &b)| b as usize == (n + i) % 251), "chunk {n} corrupted");
    }
    assert!(s.log().contains("flow resumed"), "{}", s.log());
    assert!(!s.log().contains("cutting the stream"), "{}", s.log());
}
