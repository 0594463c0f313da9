//! Running out of descriptors: EMFILE on accept must not spin the loop or crash it, and
//! the server must serve again once descriptors are free.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::*;

const CONFIG: &str = r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"
[[sync]]
path = "/health"
kind = "health"
"#;

/// CPU time (user + system, clock ticks) the process used so far.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // After the command: state is field 3 (index 0 here); utime 14 and stime 15 → 11, 12.
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

#[test]
fn emfile_on_accept_neither_spins_nor_crashes() {
    let server = TestServer::start_with_nofile(CONFIG, 32);
    assert_eq!(get(&server.addr, "/health").status, 200);

    // Hold far more connections than the server has descriptors.
    let mut held = Vec::new();
    for _ in 0..80 {
        match TcpStream::connect(&server.addr) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    assert!(held.len() >= 40, "could only open {} connections", held.len());
    assert!(server.wait_for_log("accept failed", Duration::from_secs(5)), "no EMFILE seen:\n{}", server.log());

    // While out of descriptors the loop must idle, not spin: well under a second of CPU in 2 s.
    let before = cpu_ticks(server.pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(server.pid) - before;
    assert!(used < 100, "dispatcher burned {used} ticks while out of descriptors");
    assert!(pid_alive(server.pid));

    // Free the descriptors: the server accepts and answers again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = std::panic::catch_unwind(|| get(&server.addr, "/health").status == 200).unwrap_or(false);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "server did not recover after descriptors were freed");
        std::thread::sleep(Duration::from_millis(100));
    }
}
