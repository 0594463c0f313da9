//! WebSockets from Python apps through the real dispatcher: a Starlette app
//! (tests/fixtures/python/starlette_ws.py) run by the shim's ASGI adapter and a sync
//! Worker with `@websocket` routes (ws_worker.py), with the `websockets` library as the
//! client (tests/fixtures/python/ws_client.py): text, binary, fragmented and 1 MiB
//! messages, ping/pong, a broadcast, a client vanishing mid-message, a worker killed with
//! sockets open (1011), a graceful stop (1001 at shutdown_timeout).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pools::poll;
use crate::util::{TestServer, get, pid_alive, repo};

const READY: Duration = Duration::from_secs(20);

fn starlette_server(extra_server: &str) -> TestServer {
    for module in ["starlette", "websockets"] {
        let probe = Command::new("python3").args(["-c", &format!("import {module}")]).output().expect("run python3");
        assert!(
            probe.status.success(),
            "{module} is not importable (pip install -r requirements-test.txt): {}",
            String::from_utf8_lossy(&probe.stderr)
        );
    }
    let s = TestServer::start(&format!(
        r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"
{extra_server}

[[sync]]
path = "/status"
kind = "status"

[[pool]]
name = "star"
routes = ["/ws/**", "/api/**"]
command = ["python3", "-m", "rustworkers", "asgi", "starlette_ws:app"]
env = {{ PYTHONPATH = "{{repo}}/workers:{{repo}}/tests/fixtures/python" }}
num_workers = 1
"#
    ));
    assert_eq!(s.wait_ready("star", 1, READY).len(), 1, "starlette pool not ready; log:\n{}", s.log());
    s
}

/// `ws_client.py SCENARIO ws://addr`, stdout piped (one JSON line per result).
fn client(addr: &str, scenario: &str) -> (Child, BufReader<ChildStdout>) {
    let script = repo().join("tests/fixtures/python/ws_client.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args([scenario, &format!("ws://{addr}")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ws_client.py");
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

fn line(out: &mut BufReader<ChildStdout>) -> serde_json::Value {
    let mut l = String::new();
    out.read_line(&mut l).expect("read client output");
    serde_json::from_str(&l).unwrap_or_else(|e| panic!("client said {l:?}: {e}"))
}

/// Run a scenario to its end; its single JSON line.
fn run(addr: &str, scenario: &str) -> serde_json::Value {
    let (mut child, mut out) = client(addr, scenario);
    let v = line(&mut out);
    let status = child.wait().unwrap();
    assert!(status.success(), "{scenario}: {v}");
    v
}

#[test]
fn starlette_echo_fragments_big_messages_and_ping() {
    let s = starlette_server("");
    let v = run(&s.addr, "echo");
    assert_eq!(
        v,
        serde_json::json!({
            "subprotocol": "chat", "text": true, "binary": true, "fragmented_text": true,
            "fragmented_binary": true, "binary_1mib": true, "text_1mib": true, "pong": true,
            "after_ping": true, "app_close": [4000, "bye"]
        }),
        "log:\n{}",
        s.log()
    );
}

#[test]
fn starlette_broadcast_and_client_vanishing_mid_message() {
    let s = starlette_server("");
    let v = run(&s.addr, "broadcast");
    assert_eq!(v["joined"], serde_json::json!(["joined 1", "joined 2"]));
    assert_eq!(v["heard"], serde_json::json!(["1: hello room", "1: hello room"]));
    // Both members left with a close frame: the app saw 1000 twice and nobody stays.
    let events = poll(Duration::from_secs(5), || {
        let e = get(&s.addr, "/api/ws-events").json();
        (e["members"] == 0 && e["disconnects"].as_array().map(|d| d.len()) == Some(2)).then_some(e)
    })
    .expect("room emptied");
    assert_eq!(events["disconnects"], serde_json::json!([["/ws/room", 1000], ["/ws/room", 1000]]));

    assert_eq!(run(&s.addr, "vanish"), serde_json::json!({"vanished": true}));
    // The half-sent message never reaches the app; it sees the socket gone (1006) and the
    // worker's credit comes back: it still serves sockets and requests.
    let seen = poll(Duration::from_secs(5), || {
        let e = get(&s.addr, "/api/ws-events").json();
        e["disconnects"].as_array().filter(|d| d.len() == 3).map(|d| d[2].clone())
    })
    .expect("the app saw the vanished client");
    assert_eq!(seen, serde_json::json!(["/ws/echo", 1006]));
    assert_eq!(run(&s.addr, "broadcast")["heard"], serde_json::json!(["3: hello room", "3: hello room"]));
}

#[test]
fn starlette_worker_killed_with_sockets_open_closes_them_1011() {
    let s = starlette_server("");
    let (mut child, mut out) = client(&s.addr, "hold");
    assert_eq!(line(&mut out), serde_json::json!({"open": true}));
    let pid = get(&s.addr, "/api/pid").json()["pid"].as_i64().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(line(&mut out)["code"], 1011);
    child.wait().unwrap();
    assert!(poll(Duration::from_secs(5), || (!pid_alive(pid)).then_some(())).is_some());
    // The replacement serves sockets again.
    assert!(s.wait_ready("star", 1, READY).iter().all(|p| *p != pid));
    assert_eq!(run(&s.addr, "echo")["text"], true);
}

#[test]
fn starlette_graceful_stop_closes_sockets_1001() {
    let mut s = starlette_server("shutdown_timeout = 1");
    let (mut child, mut out) = client(&s.addr, "hold");
    assert_eq!(line(&mut out), serde_json::json!({"open": true}));
    let began = Instant::now();
    s.signal(libc::SIGTERM);
    assert_eq!(line(&mut out)["code"], 1001, "log:\n{}", s.log());
    assert!(began.elapsed() >= Duration::from_millis(900), "closed before shutdown_timeout");
    child.wait().unwrap();
    assert!(s.wait_exit(Duration::from_secs(10)).is_some(), "server did not exit");
}

#[test]
fn sync_worker_websocket_routes() {
    let probe = Command::new("python3").args(["-c", "import websockets"]).output().expect("run python3");
    assert!(probe.status.success(), "websockets is not importable (pip install -r requirements-test.txt)");
    let s = TestServer::start(
        r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"

[[sync]]
path = "/status"
kind = "status"

[[pool]]
name = "chat"
routes = ["/ws/**", "/events", "/hello"]
python = "ws_worker:ChatWorker"
module_path = ["{repo}/tests/fixtures/python"]
num_workers = 1
"#,
    );
    assert_eq!(s.wait_ready("chat", 1, READY).len(), 1, "chat pool not ready; log:\n{}", s.log());
    let v = run(&s.addr, "echo");
    assert_eq!(
        v,
        serde_json::json!({
            "subprotocol": "chat", "text": true, "binary": true, "fragmented_text": true,
            "fragmented_binary": true, "binary_1mib": true, "text_1mib": true, "pong": true,
            "after_ping": true, "app_close": [4000, "bye"]
        }),
        "log:\n{}",
        s.log()
    );
    // An open socket holds a credit, yet plain requests are still served meanwhile.
    let (mut child, mut out) = client(&s.addr, "hold");
    assert_eq!(line(&mut out), serde_json::json!({"open": true}));
    assert_eq!(get(&s.addr, "/hello").json(), serde_json::json!({"hello": "world"}));
    let pid = s.worker_pids("chat")[0];
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(line(&mut out)["code"], 1011);
    child.wait().unwrap();
}
