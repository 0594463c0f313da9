//! Process lifecycle of the real binary: TERM/INT stop it cleanly (exit 0, no worker left),
//! in-flight requests finish during a graceful stop, QUIT stops at once.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::{Client, TestServer, get, pid_alive};

const CONFIG: &str = r#"
[server]
bind = ["127.0.0.1:0"]
shutdown_timeout = 10
access_log = "off"

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
num_workers = 2

[[pool]]
name = "chaos"
routes = ["/chaos/**"]
native = "chaos"
num_workers = 1
"#;

fn server() -> TestServer {
    let s = TestServer::start(CONFIG);
    assert_eq!(s.wait_ready("echo", 2, Duration::from_secs(10)).len(), 2, "echo not ready");
    assert_eq!(s.wait_ready("chaos", 1, Duration::from_secs(10)).len(), 1, "chaos not ready");
    s
}

/// Wait until none of `pids` is alive.
fn all_gone(pids: &[i32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pids.iter().all(|&p| !pid_alive(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn stops_cleanly_on(sig: i32) {
    let mut s = server();
    let workers = s.children();
    assert!(workers.len() >= 3, "expected 3 workers as children, got {workers:?}");
    assert_eq!(get(&s.addr, "/echo/x").status, 200);
    let addr = s.addr.clone();
    s.signal(sig);
    let status = s.wait_exit(Duration::from_secs(15)).expect("server did not exit");
    assert_eq!(status.code(), Some(0), "exit status {status:?}; log:\n{}", s.log());
    assert!(all_gone(&workers, Duration::from_secs(5)), "workers left behind: {workers:?}");
    assert!(TcpStream::connect(&addr).is_err(), "listener still open after exit");
}

#[test]
fn sigterm_stops_cleanly() {
    stops_cleanly_on(libc::SIGTERM);
}

#[test]
fn sigint_stops_cleanly() {
    stops_cleanly_on(libc::SIGINT);
}

#[test]
fn graceful_stop_finishes_in_flight_request() {
    let mut s = server();
    let workers = s.children();
    let mut c = Client::connect(&s.addr);
    c.send(b"GET /chaos/slow?sleep=700 HTTP/1.1\r\nHost: t\r\n\r\n");
    // Let the request reach the worker before the signal.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = get(&s.addr, "/status").json();
        let busy = st["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["name"] == "chaos")
            .flat_map(|p| p["workers"].as_array().cloned().unwrap_or_default())
            .any(|w| w["in_hand"].as_u64().unwrap_or(0) > 0);
        if busy || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    s.signal(libc::SIGTERM);
    let r = c.read_response().expect("in-flight request dropped by graceful stop");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["chaos"], "sleep");
    // Draining: the connection is closed after the answer.
    assert!(c.is_closed(Duration::from_secs(5)));
    let status = s.wait_exit(Duration::from_secs(15)).expect("server did not exit");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(all_gone(&workers, Duration::from_secs(5)), "workers left behind: {workers:?}");
}

#[test]
fn idle_keepalive_connection_does_not_hold_up_stop() {
    let mut s = server();
    let mut c = Client::connect(&s.addr);
    let r = c.request(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    let started = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(15)).expect("server did not exit");
    assert_eq!(status.code(), Some(0));
    // shutdown_timeout is 10 s: an idle connection must not make the server wait it out.
    assert!(started.elapsed() < Duration::from_secs(9), "idle connection held the stop for {:?}", started.elapsed());
    assert!(c.is_closed(Duration::from_secs(2)));
}

#[test]
fn sigquit_stops_at_once_even_with_work_in_flight() {
    let mut s = server();
    let workers = s.children();
    let mut c = Client::connect(&s.addr);
    c.send(b"GET /chaos/slow?sleep=8000 HTTP/1.1\r\nHost: t\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    s.signal(libc::SIGQUIT);
    let status = s.wait_exit(Duration::from_secs(15)).expect("server did not exit");
    assert!(status.code().is_some(), "killed by a signal: {status:?}");
    assert!(started.elapsed() < Duration::from_secs(7), "QUIT waited for the request: {:?}", started.elapsed());
    assert!(all_gone(&workers, Duration::from_secs(5)), "workers left behind: {workers:?}");
}

#[test]
fn second_sigint_during_a_graceful_stop_stops_now() {
    // Like gunicorn: a second INT (or TERM) while draining escalates to the fast stop.
    let mut s = server();
    let workers = s.children();
    let mut c = Client::connect(&s.addr);
    c.send(b"GET /chaos/slow?sleep=20000 HTTP/1.1\r\nHost: t\r\n\r\n");
    let busy = || {
        get(&s.addr, "/status").json()["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["name"] == "chaos")
            .flat_map(|p| p["workers"].as_array().cloned().unwrap_or_default())
            .any(|w| w["in_hand"].as_u64().unwrap_or(0) > 0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !busy() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    s.signal(libc::SIGINT);
    assert!(s.wait_for_log("graceful stop", Duration::from_secs(5)), "{}", s.log());
    let second = Instant::now();
    s.signal(libc::SIGINT);
    let status = s.wait_exit(Duration::from_secs(8)).expect("a second SIGINT did not stop the server");
    assert!(second.elapsed() < Duration::from_secs(5), "the 20 s request held the stop: {:?}", second.elapsed());
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(s.log().contains("SIGINT again during a graceful stop"), "{}", s.log());
    assert!(s.log().contains("stop took"), "{}", s.log());
    assert!(all_gone(&workers, Duration::from_secs(5)), "workers left behind: {workers:?}");
}
