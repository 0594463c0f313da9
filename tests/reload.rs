//! Changing a running server: SIGHUP reloads the config file without dropping requests,
//! a broken config leaves the running one in place, SIGTTIN/SIGTTOU resize pools.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::util::*;

fn config(workers: usize, extra: &str) -> String {
    format!(
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
{extra}
[[pool]]
name = "echo"
routes = ["/api/**"]
native = "echo"
num_workers = {workers}
"#
    )
}

/// Keep sending requests to `path` on one keep-alive connection until told to stop;
/// returns every status seen (bounded: at most 5000 requests).
fn load(addr: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u16>> {
    std::thread::spawn(move || {
        let mut statuses = Vec::new();
        let mut c = Client::connect(&addr);
        while !stop.load(Ordering::Relaxed) && statuses.len() < 5000 {
            c.send(b"GET /api/load HTTP/1.1\r\nHost: t\r\n\r\n");
            match c.read_response() {
                Some(r) => statuses.push(r.status),
                None => {
                    statuses.push(0);
                    c = Client::connect(&addr);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        statuses
    })
}

#[test]
fn sighup_applies_the_new_config_without_dropping_requests() {
    let server = TestServer::start(&config(1, ""));
    let old = server.wait_ready("echo", 1, Duration::from_secs(10));
    assert_eq!(old.len(), 1);
    assert_eq!(get(&server.addr, "/new").status, 404);

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(server.addr.clone(), Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(200));

    // New sync route, two workers instead of one: the pool changed, so all its workers
    // are replaced.
    let extra = "[[sync]]\npath = \"/new\"\nkind = \"static_response\"\nbody = \"reloaded\"\n";
    server.dir.write("config.toml", config(2, extra));
    server.signal(libc::SIGHUP);
    assert!(server.wait_for_log("configuration reloaded", Duration::from_secs(10)), "{}", server.log());

    let new = server.wait_ready("echo", 2, Duration::from_secs(10));
    assert_eq!(new.len(), 2, "{}", server.log());
    assert!(new.iter().all(|pid| !old.contains(pid)), "old worker still serving: {old:?} vs {new:?}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let statuses = loader.join().unwrap();
    assert!(statuses.len() > 20, "load thread made only {} requests", statuses.len());
    assert!(statuses.iter().all(|&s| s == 200), "a request failed during the reload: {statuses:?}");

    let r = get(&server.addr, "/new");
    assert_eq!((r.status, r.text().as_str()), (200, "reloaded"));
    // The retired worker exits and is reaped.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pid_alive(old[0]) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_alive(old[0]), "retired worker {} still running", old[0]);
    assert!(zombies_of(server.pid).is_empty());
}

#[test]
fn sighup_with_a_broken_config_keeps_the_running_one() {
    let server = TestServer::start(&config(1, ""));
    let pids = server.wait_ready("echo", 1, Duration::from_secs(10));
    server.dir.write("config.toml", "[server]\nbind = [\"127.0.0.1:0\"]\nnum_wrokers = 3\n");
    server.signal(libc::SIGHUP);
    assert!(server.wait_for_log("config not reloaded", Duration::from_secs(10)), "{}", server.log());
    assert!(server.log().contains("num_wrokers"), "the error names the bad key:\n{}", server.log());
    assert_eq!(get(&server.addr, "/health").status, 200);
    assert_eq!(get(&server.addr, "/api/x").status, 200);
    assert_eq!(server.worker_pids("echo"), pids, "workers were restarted by a failed reload");
}

#[test]
fn sigttin_and_sigttou_resize_pools() {
    let server = TestServer::start(&config(1, ""));
    let first = server.wait_ready("echo", 1, Duration::from_secs(10));
    server.signal(libc::SIGTTIN);
    let two = server.wait_ready("echo", 2, Duration::from_secs(10));
    assert_eq!(two.len(), 2);
    assert!(two.contains(&first[0]), "growing must not replace the running worker");

    server.signal(libc::SIGTTOU);
    assert!(server.wait_for_log("retired worker", Duration::from_secs(10)), "{}", server.log());
    assert_eq!(server.worker_pids("echo"), vec![first[0]], "shrinking removes the last slot's worker");
    assert_eq!(get(&server.addr, "/api/x").status, 200);
    // Never below one worker.
    server.signal(libc::SIGTTOU);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.worker_pids("echo").len(), 1);
    assert!(zombies_of(server.pid).is_empty());
}
