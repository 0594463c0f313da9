//! Supervision under the real binary: pools with no live worker (503 + Retry-After),
//! degraded pools (503 without Retry-After, /health 503, recovery_interval), parked slots
//! (permanent_failure_exitcode), a worker SIGKILLed under load (only its own request
//! fails, the pool refills, no zombie), and shutdown leaving no child behind.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::util::{Client, TestServer, get, pid_alive, zombies_of};

fn server(pool_extra: &str, server_extra: &str) -> TestServer {
    TestServer::start(&format!(
        r#"
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
name = "chaos"
routes = ["/chaos/**"]
native = "chaos"
{pool_extra}
"#
    ))
}

fn pool_status(s: &TestServer) -> serde_json::Value {
    let v = get(&s.addr, "/status").json();
    v["pools"][0].clone()
}

fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
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

fn all_gone(pids: &[i32], timeout: Duration) -> bool {
    poll(timeout, || pids.iter().all(|&p| !pid_alive(p)).then_some(())).is_some()
}

// ---------------------------------------------------------------- no live worker, degraded, parked

#[test]
fn pool_without_live_worker_is_503_with_retry_after() {
    let s = server("num_workers = 1\ntimeout = 2\nmax_restarts = 1000\nenv = { CHAOS_SETUP_EXIT = \"1\" }", "");
    // The worker exits during setup over and over and backs off; between attempts the pool
    // has no live worker.
    let r = poll(Duration::from_secs(15), || {
        let r = get(&s.addr, "/chaos/x");
        (r.status == 503).then_some(r)
    })
    .unwrap_or_else(|| panic!("never 503:\n{}", s.log()));
    let retry: u64 =
        r.header("retry-after").expect("Retry-After on 503 without live worker").parse().expect("Retry-After seconds");
    assert!(retry >= 1);
    let p = pool_status(&s);
    assert_eq!(p["degraded"], false, "{p}");
    assert!(p["restarts_total"].as_u64().unwrap() >= 2, "{p}");
    // Health tells the truth: a pool with no ready worker is not "ok".
    let h = get(&s.addr, "/health");
    assert_eq!(h.status, 503, "{}", h.text());
    assert_eq!(h.json()["pools"]["chaos"], "unavailable", "{}", h.text());
    assert!(
        poll(Duration::from_secs(5), || zombies_of(s.pid).is_empty().then_some(())).is_some(),
        "zombies: {:?}",
        zombies_of(s.pid)
    );
}

#[test]
fn too_many_restarts_degrade_pool_503_without_retry_after() {
    let s = server("num_workers = 1\nmax_restarts = 2\nrestart_window = 60\nenv = { CHAOS_SETUP_EXIT = \"1\" }", "");
    let degraded = poll(Duration::from_secs(15), || (pool_status(&s)["degraded"] == true).then_some(()));
    assert!(degraded.is_some(), "pool never degraded:\n{}", s.log());
    let h = get(&s.addr, "/health");
    assert_eq!(h.status, 503);
    assert_eq!(h.json()["pools"]["chaos"], "degraded", "{}", h.text());
    let r = get(&s.addr, "/chaos/x");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), None, "degraded 503 must not carry Retry-After");
    assert!(s.log().contains("degraded"), "{}", s.log());
    // Without recovery_interval it stays degraded and stops restarting.
    let total = pool_status(&s)["restarts_total"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let p = pool_status(&s);
    assert_eq!(p["degraded"], true);
    assert_eq!(p["restarts_total"].as_u64().unwrap(), total, "a degraded pool kept restarting: {p}");
    assert!(zombies_of(s.pid).is_empty());
}

#[test]
fn recovery_interval_clears_degraded() {
    let s = server(
        "num_workers = 1\nmax_restarts = 2\nrestart_window = 60\nrecovery_interval = 1\nenv = { CHAOS_SETUP_EXIT = \"1\" }",
        "",
    );
    let degraded = poll(Duration::from_secs(15), || (pool_status(&s)["degraded"] == true).then_some(()));
    assert!(degraded.is_some(), "pool never degraded:\n{}", s.log());
    let total = pool_status(&s)["restarts_total"].as_u64().unwrap();
    assert!(
        s.wait_for_log("recovered", Duration::from_secs(10)),
        "recovery_interval did not clear degraded:\n{}",
        s.log()
    );
    // Recovered, the pool tries its (still failing) worker again.
    let retried =
        poll(Duration::from_secs(10), || (pool_status(&s)["restarts_total"].as_u64().unwrap() > total).then_some(()));
    assert!(retried.is_some(), "no new attempt after recovery: {}", pool_status(&s));
}

#[test]
fn permanent_failure_exitcode_parks_slot_then_degrades() {
    let s = server("num_workers = 2\npermanent_failure_exitcode = 7", "");
    assert_eq!(s.wait_ready("chaos", 2, Duration::from_secs(10)).len(), 2);
    assert_eq!(get(&s.addr, "/chaos/x?exit=7").status, 500);
    let parked = poll(Duration::from_secs(5), || (pool_status(&s)["workers_parked"] == 1).then_some(()));
    assert!(parked.is_some(), "{}", pool_status(&s));
    std::thread::sleep(Duration::from_millis(800));
    let p = pool_status(&s);
    assert_eq!(p["workers_alive"], 1, "parked slot was restarted: {p}");
    assert_eq!(p["restarts_total"], 0, "{p}");
    assert_eq!(p["degraded"], false);
    assert_eq!(get(&s.addr, "/chaos/ok").status, 200);
    // The last worker parks too: the pool is degraded.
    assert_eq!(get(&s.addr, "/chaos/x?exit=7").status, 500);
    let degraded = poll(Duration::from_secs(5), || (pool_status(&s)["degraded"] == true).then_some(()));
    assert!(degraded.is_some(), "{}", pool_status(&s));
    assert_eq!(pool_status(&s)["workers_parked"], 2);
    let r = get(&s.addr, "/chaos/x");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(get(&s.addr, "/health").status, 503);
    assert!(poll(Duration::from_secs(5), || zombies_of(s.pid).is_empty().then_some(())).is_some());
}

// ---------------------------------------------------------------- SIGKILL under load

#[test]
fn sigkill_of_one_worker_under_load_fails_only_its_request() {
    let s = server("num_workers = 4", "");
    let pids = s.wait_ready("chaos", 4, Duration::from_secs(10));
    assert_eq!(pids.len(), 4);
    let victim = pids[1];
    const THREADS: usize = 8;
    const PER_THREAD: usize = 50;
    let done = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let addr = s.addr.clone();
        let done = Arc::clone(&done);
        handles.push(std::thread::spawn(move || {
            let mut statuses = Vec::new();
            let mut c = Client::connect(&addr);
            for i in 0..PER_THREAD {
                let raw = format!("GET /chaos/load/{t}/{i}?sleep=20 HTTP/1.1\r\nHost: t\r\n\r\n");
                c.send(raw.as_bytes());
                let r = c.read_response().unwrap_or_else(|| panic!("thread {t} request {i}: no response"));
                if r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                    c = Client::connect(&addr);
                }
                statuses.push(r.status);
                done.fetch_add(1, Ordering::SeqCst);
            }
            statuses
        }));
    }
    let total = THREADS * PER_THREAD;
    assert!(
        poll(Duration::from_secs(30), || (done.load(Ordering::SeqCst) >= total / 4).then_some(())).is_some(),
        "load did not start"
    );
    // SAFETY: kill(2) on a worker of the server this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let statuses: Vec<u16> = handles.into_iter().flat_map(|h| h.join().expect("client thread")).collect();
    assert_eq!(statuses.len(), total);
    let ok = statuses.iter().filter(|&&st| st == 200).count();
    let failed = statuses.iter().filter(|&&st| st == 500).count();
    assert_eq!(
        ok + failed,
        total,
        "statuses other than 200/500: {:?}",
        statuses.iter().filter(|&&st| st != 200 && st != 500).collect::<Vec<_>>()
    );
    eprintln!("sigkill under load: {ok} ok, {failed} failed");
    assert!(failed <= 1, "{failed} requests failed; the victim held at most 1 (1 credit)\n{}", s.log());
    let after = poll(Duration::from_secs(10), || {
        let p = s.worker_pids("chaos");
        (p.len() == 4).then_some(p)
    })
    .unwrap_or_else(|| panic!("pool not back to 4 ready workers: {}", pool_status(&s)));
    assert!(!after.contains(&victim));
    assert!(!pid_alive(victim));
    assert!(
        poll(Duration::from_secs(5), || zombies_of(s.pid).is_empty().then_some(())).is_some(),
        "zombies: {:?}",
        zombies_of(s.pid)
    );
    assert!(s.log().contains(&format!("pid {victim}")), "victim's death not logged:\n{}", s.log());
}

// ---------------------------------------------------------------- shutdown

fn send_in_flight(addr: &str, path: &str) -> std::thread::JoinHandle<Option<u16>> {
    let addr = addr.to_string();
    let path = path.to_string();
    std::thread::spawn(move || {
        let mut c = Client::connect(&addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        c.read_response().map(|r| r.status)
    })
}

fn wait_in_hand(s: &TestServer) {
    let held = poll(Duration::from_secs(5), || {
        pool_status(s)["workers"].as_array().unwrap().iter().any(|w| w["in_hand"] == 1).then_some(())
    });
    assert!(held.is_some(), "request never reached a worker");
}

#[test]
fn sigterm_finishes_in_flight_request_and_leaves_no_child() {
    let mut s = server("num_workers = 2", "shutdown_timeout = 10");
    let workers = s.wait_ready("chaos", 2, Duration::from_secs(10));
    assert_eq!(workers.len(), 2);
    let pending = send_in_flight(&s.addr, "/chaos/x?sleep=500");
    wait_in_hand(&s);
    s.signal(libc::SIGTERM);
    assert_eq!(pending.join().unwrap(), Some(200), "{}", s.log());
    let status = s.wait_exit(Duration::from_secs(10)).expect("server did not exit");
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", s.log());
    assert!(all_gone(&workers, Duration::from_secs(5)), "workers outlived the server");
}

#[test]
fn sigterm_with_request_past_shutdown_timeout_answers_503_and_exits() {
    let mut s = server("num_workers = 1\ntimeout = 60", "shutdown_timeout = 1");
    let workers = s.wait_ready("chaos", 1, Duration::from_secs(10));
    let pending = send_in_flight(&s.addr, "/chaos/x?sleep=30000");
    wait_in_hand(&s);
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(10)).expect("server did not exit");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", s.log());
    let answer = pending.join().unwrap();
    assert!(answer == Some(503) || answer.is_none(), "in-flight request got {answer:?}");
    assert!(all_gone(&workers, Duration::from_secs(5)), "worker outlived the server");
}

#[test]
fn sigquit_stops_fast_and_leaves_no_child() {
    let mut s = server("num_workers = 2\ntimeout = 60", "shutdown_timeout = 30");
    let workers = s.wait_ready("chaos", 2, Duration::from_secs(10));
    assert_eq!(workers.len(), 2);
    // An in-flight request must not hold a fast stop.
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.write_all(b"GET /chaos/x?sleep=30000 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    wait_in_hand(&s);
    let t0 = Instant::now();
    s.signal(libc::SIGQUIT);
    s.wait_exit(Duration::from_secs(10)).expect("server did not exit on SIGQUIT");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(all_gone(&workers, Duration::from_secs(5)), "workers outlived the server");
}

#[test]
fn head_of_a_streamed_response_does_not_stay_in_flight() {
    // A HEAD answered by a streaming worker is complete at STREAM_START; the request must
    // not linger in flight (it held every graceful stop until shutdown_timeout).
    let mut s = server("num_workers = 1", "shutdown_timeout = 30");
    let workers = s.wait_ready("chaos", 1, Duration::from_secs(10));
    let mut c = Client::connect(&s.addr);
    c.send(b"HEAD /chaos/s?stream=5 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response_to(true).expect("HEAD response");
    assert_eq!(r.status, 200);
    let r = c.request(b"GET /chaos/ok HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200, "keep-alive connection unusable after HEAD of a stream");
    drop(c);
    let idle = poll(Duration::from_secs(5), || (pool_status(&s)["workers"][0]["in_hand"] == 0).then_some(()));
    assert!(idle.is_some(), "{}", pool_status(&s));
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(40)).expect("server did not exit");
    assert_eq!(status.code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(15), "graceful stop waited {:?} for a finished HEAD", t0.elapsed());
    assert!(!s.log().contains("shutdown timeout"), "{}", s.log());
    assert!(all_gone(&workers, Duration::from_secs(5)));
}

#[test]
fn idle_worker_killed_by_a_signal_is_a_warning_and_is_replaced() {
    let s = server("num_workers = 1", "");
    let pids = s.wait_ready("chaos", 1, Duration::from_secs(10));
    assert_eq!(pids.len(), 1);
    // SAFETY: kill(2) on this test server's own idle worker.
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    let replaced = poll(Duration::from_secs(10), || {
        let now = s.worker_pids("chaos");
        (now.len() == 1 && now != pids).then_some(now)
    });
    assert!(replaced.is_some(), "no replacement:\n{}", s.log());
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("(pid {}) was killed by signal 9 (SIGKILL)", pids[0])))
        .unwrap_or_else(|| panic!("no death line:\n{log}"));
    assert!(line.contains("WARN"), "an unexpected death is a warning: {line}");
}
