//! Issue 7, "Shown by": one regression test per numbered item, run against the real binary
//! as a hostile client or a hostile worker would. Figures (latencies, RSS) are printed with
//! `eprintln!`: run with `--nocapture` to see them.
//!
//! 1. a worker flooding stdout does not freeze the loop;
//! 2. reloads and resizes under load lose no response;
//! 3. dispatcher memory stays bounded (pipelining non-reader, stalled uploads, auth at the
//!    head, a worker that never reads its pipe);
//! 4. slow bodies and a pipelined partial head are timed out;
//! 5. input that used to kill or panic (4 GiB bodies, 70 MiB bodies to Python, non-UTF-8
//!    argv, bad Host, graceful stop on keep-alive);
//! 6. operator traps (reload revives a degraded pool, honest health/ready/live).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::util::*;

const MIB: u64 = 1 << 20;

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

/// Resident set of `pid` in bytes, from /proc/PID/status (VmRSS).
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// Sample the dispatcher's RSS every 50 ms for `span`; the largest figure.
fn peak_rss(pid: i32, span: Duration) -> u64 {
    let deadline = Instant::now() + span;
    let mut peak = rss(pid);
    while Instant::now() < deadline {
        peak = peak.max(rss(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    peak
}

const HEAD: &str = r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"
"#;

const SYNCS: &str = r#"
[[sync]]
path = "/live"
kind = "live"

[[sync]]
path = "/health"
kind = "health"

[[sync]]
path = "/ready"
kind = "ready"

[[sync]]
path = "/status"
kind = "status"
"#;

/// `[server]` keys + the sync routes + pools.
fn config(server_keys: &str, rest: &str) -> String {
    format!("{HEAD}{server_keys}\n{SYNCS}\n{rest}")
}

fn pool_status(s: &TestServer, pool: &str) -> serde_json::Value {
    let v = get(&s.addr, "/status").json();
    v["pools"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == pool).cloned()).unwrap_or_default()
}

/// A GET on a fresh connection, timed.
fn timed_get(addr: &str, path: &str) -> (u16, Duration) {
    let t = Instant::now();
    let r = get(addr, path);
    (r.status, t.elapsed())
}

// ------------------------------------------------------------------ 1. output flood

#[test]
fn worker_flooding_stdout_does_not_freeze_the_loop() {
    let mut s = TestServer::start(&config(
        "shutdown_timeout = 2",
        r#"
[[pool]]
name = "flood"
routes = ["/flood/**"]
command = ["sh", "-c", "yes"]
num_workers = 1
stuck_timeout = 2
stuck_grace = 0.5
max_restarts = 1000

[[pool]]
name = "echo"
routes = ["/api/**"]
native = "echo"
num_workers = 1
"#,
    ));
    assert_eq!(s.wait_ready("echo", 1, Duration::from_secs(10)).len(), 1, "{}", s.log());
    // `yes` is running: wait until the dispatcher has read some of its flood.
    let flood_pid = poll(Duration::from_secs(5), || {
        let p = pool_status(&s, "flood");
        p["workers"][0]["pid"].as_i64().filter(|&pid| pid > 0).map(|pid| pid as i32)
    })
    .unwrap_or_else(|| panic!("flood worker never started: {}", pool_status(&s, "flood")));
    assert!(s.wait_for_log("[flood/0", Duration::from_secs(5)) || pid_alive(flood_pid), "{}", s.log());

    // 50 sequential sync requests, each on a fresh connection, while `yes` floods.
    let cpu_before = cpu_ticks(s.pid);
    let cpu_t = Instant::now();
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    for i in 0..50 {
        let path = if i % 2 == 0 { "/live" } else { "/status" };
        let (status, took) = timed_get(&s.addr, path);
        assert_eq!(status, 200, "{path} under the flood");
        worst = worst.max(took);
        total += took;
    }
    let echo_t = Instant::now();
    let r = get(&s.addr, "/api/under-flood");
    let echo_took = echo_t.elapsed();
    assert_eq!(r.status, 200, "echo pool under the flood: {}", r.text());
    eprintln!("flood: 50 sync GETs mean {:.1?} max {:.1?}; echo pool answered in {:.1?}", total / 50, worst, echo_took);
    // A frozen loop answers nothing for tens of seconds (the defect); here the flood runs
    // at the default max_output_rate, whose log lines go through this harness's stderr
    // pipe on a 2-core box, so the bound is loose (with stderr to a file, the worst of
    // 100 GETs was 2.7 ms in a debug build).
    assert!(worst < Duration::from_secs(1), "a sync GET took {worst:?} under the flood");
    assert!(echo_took < Duration::from_millis(500), "echo took {echo_took:?} under the flood");

    // CPU over one second of the flood (a rate, so a fixed span).
    while cpu_t.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu = cpu_ticks(s.pid) - cpu_before;
    let wall = cpu_t.elapsed();
    let share = cpu as f64 / clock_ticks() / wall.as_secs_f64() * 100.0;
    eprintln!("flood: dispatcher CPU while `yes` floods: {share:.0}% of one core ({cpu} ticks in {wall:.1?})");
    // At the default max_output_rate the flood is read and dropped a turn per 50 ms and
    // logged a few thousand lines a second: far from the whole core it took unbounded.
    assert!(share < 80.0, "the dispatcher spent {share:.0}% of a core on a stdout flood");

    // The never-ready worker is stuck (no HELLO, no heartbeat): SIGUSR2 (which ends
    // `yes`), or SIGKILL after stuck_grace; replaced. Its dropped output is reported.
    assert!(
        s.wait_for_log("sent no heartbeat", Duration::from_secs(10)),
        "the flooding worker was never found stuck:\n{}",
        tail(&s.log(), 40)
    );
    assert!(
        s.wait_for_log("max_output_rate", Duration::from_secs(5)) && s.log().contains("dropped"),
        "no dropped-output report:\n{}",
        tail(&s.log(), 40)
    );
    let replaced = poll(Duration::from_secs(10), || {
        let p = pool_status(&s, "flood");
        p["workers"][0]["pid"].as_i64().filter(|&pid| pid > 0 && pid as i32 != flood_pid)
    });
    assert!(replaced.is_some(), "the stuck flooder was not restarted: {}", pool_status(&s, "flood"));
    assert!(!pid_alive(flood_pid), "old flooder {flood_pid} still alive");

    // SIGTERM is acted on promptly even with a flood going on.
    let children = s.children();
    let t = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(6));
    let took = t.elapsed();
    eprintln!("flood: SIGTERM → exit in {took:.1?}");
    assert!(status.is_some(), "server did not exit within 6 s of SIGTERM under a flood");
    let left: Vec<i32> = children.into_iter().filter(|&p| pid_alive(p)).collect();
    assert!(left.is_empty(), "children left after exit: {left:?}");
}

/// utime + stime of `pid` in clock ticks (/proc/PID/stat fields 14 and 15).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // Field 3 (state) is fields[0]: utime is field 14, stime 15.
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ------------------------------------------------------------------ 2. reload loses nothing

fn echo_pool(workers: usize, flag: usize) -> String {
    config(
        "",
        &format!(
            r#"
[[pool]]
name = "echo"
routes = ["/api/**"]
native = "echo"
num_workers = {workers}
env = {{ RELOAD_FLAG = "{flag}" }}

[[pool]]
name = "slow"
routes = ["/slow/**"]
native = "chaos"
num_workers = {workers}
env = {{ RELOAD_FLAG = "{flag}" }}
"#
        ),
    )
}

/// Keep-alive load until `stop`: (requests sent, statuses received). A request without a
/// response counts as status 0. Bounded: at most 20,000 requests.
fn keepalive_load(addr: String, stop: Arc<AtomicBool>, sent: Arc<AtomicUsize>) -> std::thread::JoinHandle<Vec<u16>> {
    std::thread::spawn(move || {
        let mut statuses = Vec::new();
        let mut c = Client::connect(&addr);
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) && statuses.len() < 20_000 {
            i += 1;
            let body = format!("req-{i}");
            // Every other request holds a worker for 10 ms, so retiring workers hold
            // requests when their STOP comes.
            let slow = i.is_multiple_of(2);
            if slow {
                c.send(b"GET /slow/load?sleep=10 HTTP/1.1\r\nHost: t\r\n\r\n");
            } else {
                c.send(
                    format!("POST /api/load HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                        .as_bytes(),
                );
            }
            sent.fetch_add(1, Ordering::Relaxed);
            match c.read_response() {
                Some(r) => {
                    let ok = r.status == 200 && (slow || r.json()["body"] == body.as_str());
                    statuses.push(if ok || r.status != 200 { r.status } else { 1 });
                    if r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                        c = Client::connect(&addr);
                    }
                }
                None => {
                    statuses.push(0);
                    c = Client::connect(&addr);
                }
            }
        }
        statuses
    })
}

#[test]
fn forty_reloads_and_resizes_under_load_lose_no_request() {
    let s = TestServer::start(&echo_pool(2, 0));
    assert_eq!(s.wait_ready("echo", 2, Duration::from_secs(10)).len(), 2, "{}", s.log());
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let loaders: Vec<_> =
        (0..4).map(|_| keepalive_load(s.addr.clone(), Arc::clone(&stop), Arc::clone(&sent))).collect();
    assert!(poll(Duration::from_secs(5), || (sent.load(Ordering::Relaxed) > 50).then_some(())).is_some());

    let t = Instant::now();
    let mut old = s.worker_pids("echo");
    old.extend(s.worker_pids("slow"));
    for n in 1..=40 {
        // The pool changed (its env), so both of its workers retire on every reload.
        s.dir.write("config.toml", echo_pool(2, n).replace("{dir}", &s.dir.path().display().to_string()));
        s.signal(libc::SIGHUP);
        assert!(
            poll(Duration::from_secs(10), || (s.log_count("configuration reloaded") >= n).then_some(())).is_some(),
            "reload {n} not logged:\n{}",
            tail(&s.log(), 30)
        );
        // Wait for the replacements to serve before the next round: both ready workers
        // are new ones.
        let fresh = poll(Duration::from_secs(10), || {
            let mut now = s.worker_pids("echo");
            now.extend(s.worker_pids("slow"));
            (now.len() == 4 && now.iter().all(|p| !old.contains(p))).then_some(now)
        });
        old = fresh.unwrap_or_else(|| panic!("reload {n}: workers not replaced: {}", pool_status(&s, "echo")));
    }
    let reload_time = t.elapsed();
    let during_reloads = sent.load(Ordering::Relaxed);

    // SIGTTIN / SIGTTOU under the same load.
    for round in 1..=10 {
        s.signal(libc::SIGTTIN);
        assert_eq!(s.wait_ready("echo", 3, Duration::from_secs(10)).len(), 3, "TTIN round {round}");
        s.signal(libc::SIGTTOU);
        assert!(
            poll(Duration::from_secs(10), || (s.worker_pids("echo").len() == 2).then_some(())).is_some(),
            "TTOU round {round}: {}",
            pool_status(&s, "echo")
        );
    }
    stop.store(true, Ordering::Relaxed);
    let statuses: Vec<u16> = loaders.into_iter().flat_map(|h| h.join().expect("load thread")).collect();
    let total_sent = sent.load(Ordering::Relaxed);
    let failed: Vec<u16> = statuses.iter().copied().filter(|&st| st != 200).collect();
    eprintln!(
        "reload: 40 reloads in {reload_time:.1?} and 10 TTIN/TTOU rounds; {} requests ({} during the reloads), {} not 200",
        statuses.len(),
        during_reloads,
        failed.len()
    );
    assert_eq!(statuses.len(), total_sent, "a request got no response");
    assert!(statuses.len() > 400, "load made only {} requests", statuses.len());
    assert!(
        failed.is_empty(),
        "{} requests failed (0 = no answer, 1 = wrong body): {:?}\n{}",
        failed.len(),
        &failed[..failed.len().min(20)],
        tail(&s.log(), 40)
    );
    assert!(s.log_count("retiring worker") >= 160, "workers were not retired by the reloads");
    // The case that lost answers before: a worker retired while it held a request.
    let holding = s.log().lines().filter(|l| l.contains("retiring worker") && !l.contains("finishing 0")).count();
    eprintln!("reload: {holding} workers were retired while holding a request");
    assert!(holding > 0, "no worker held a request when retired: the test proved nothing");
    assert!(poll(Duration::from_secs(5), || zombies_of(s.pid).is_empty().then_some(())).is_some());
}

const SLOW_START_WORKER: &str = r#"
import time
from rustworkers import Worker, api


class SlowStart(Worker):
    def setup(self):
        time.sleep(0.5)  # HELLO comes well after the dispatcher may send STOP

    @api("/py/x", "GET")
    def x(self, request):
        return {"ok": True}
"#;

/// A worker told to STOP before its HELLO (a reload or a graceful stop while it starts)
/// sends that HELLO afterwards: its first, not a "second HELLO" protocol violation.
#[test]
fn stop_before_hello_is_not_a_protocol_violation() {
    let pool = |flag: u32| {
        config(
            "shutdown_timeout = 5",
            &format!(
                r#"
[[pool]]
name = "py"
routes = ["/py/**"]
python = "slow_start:SlowStart"
module_path = ["{{dir}}"]
num_workers = 1
env = {{ FLAG = "{flag}" }}
"#
            ),
        )
    };
    let dir = TempDir::new();
    dir.write("slow_start.py", SLOW_START_WORKER);
    let mut s = TestServer::start_in(dir, &pool(0));
    // Reload at once: the first worker is still in setup() and is retired.
    s.dir.write("config.toml", pool(1).replace("{dir}", &s.dir.path().display().to_string()));
    s.signal(libc::SIGHUP);
    assert!(s.wait_for_log("configuration reloaded", Duration::from_secs(5)));
    assert!(
        s.wait_for_log("retired worker py/0", Duration::from_secs(10)),
        "the retired worker did not exit:\n{}",
        tail(&s.log(), 20)
    );
    assert_eq!(s.wait_ready("py", 1, Duration::from_secs(10)).len(), 1);
    assert_eq!(get(&s.addr, "/py/x").status, 200);
    // Grow by one, then stop while the new worker is in setup().
    s.signal(libc::SIGTTIN);
    assert!(
        poll(Duration::from_secs(5), || (pool_status(&s, "py")["workers_alive"] == 2).then_some(())).is_some(),
        "{}",
        pool_status(&s, "py")
    );
    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(Duration::from_secs(10)).is_some());
    let log = s.log();
    eprintln!(
        "stop before HELLO: {}",
        log.lines().filter(|l| l.contains("retired worker") || l.contains("broke")).collect::<Vec<_>>().join(" | ")
    );
    assert!(!log.contains("broke the protocol"), "{log}");
    assert!(log.contains("retired worker py/0") && log.contains("exited with status 0"), "{log}");
}

// ------------------------------------------------------------------ 3. memory bounded

const MEM_SERVER: &str = "max_buffered_bytes = 33554432\nmax_connection_buffer = 1048576";
const BUDGET: u64 = 32 * MIB;

/// The dispatcher's memory ceiling in these tests: the RSS it had at rest, plus the
/// global budget (`max_buffered_bytes`: bodies, queued frames, unsent responses), plus
/// one largest frame being decoded from each worker's reply pipe and one being encoded
/// (2 × `max_body_bytes`), plus 16 MiB for the allocator (freed buffers it keeps).
fn mem_bound(rest: u64, max_body: u64) -> u64 {
    rest + BUDGET + 2 * max_body + 16 * MIB
}

#[test]
fn memory_pipelining_client_that_never_reads() {
    let s = TestServer::start(&config(
        MEM_SERVER,
        r#"
[[pool]]
name = "echo"
routes = ["/api/**"]
native = "echo"
num_workers = 2
"#,
    ));
    assert_eq!(s.wait_ready("echo", 2, Duration::from_secs(10)).len(), 2);
    let rest = rss(s.pid);
    // 32 pipelined POSTs of 4 MiB each: every answer (echo's JSON holds the body) is a
    // 4 MiB response; the client reads none of them.
    const BODY: usize = 4 << 20;
    let stream = TcpStream::connect(&s.addr).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let body = vec![b'a'; BODY];
            let mut written = 0usize;
            for _ in 0..32 {
                let head = format!("POST /api/big HTTP/1.1\r\nHost: t\r\nContent-Length: {BODY}\r\n\r\n");
                if stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body)).is_err() {
                    break;
                }
                written += 1;
            }
            written
        })
    };
    let peak = peak_rss(s.pid, Duration::from_secs(4));
    let bound = mem_bound(rest, 10 * MIB);
    eprintln!(
        "memory (a) pipelining non-reader: RSS at rest {:.1} MiB, peak {:.1} MiB over 4 s (bound {:.1} MiB)",
        mib(rest),
        mib(peak),
        mib(bound)
    );
    // Still serving others.
    assert_eq!(get(&s.addr, "/api/other").status, 200);
    let _ = stream.shutdown(Shutdown::Both);
    let written = writer.join().unwrap();
    eprintln!("memory (a): the client got {written} of 32 requests (128 MiB) into the socket before it blocked");
    assert!(peak < bound, "RSS {:.1} MiB over the bound {:.1} MiB", mib(peak), mib(bound));
}

#[test]
fn memory_stalled_uploads_are_refused_past_the_budget() {
    let s = TestServer::start(&config(
        MEM_SERVER,
        r#"
[[pool]]
name = "echo"
routes = ["/api/**"]
native = "echo"
num_workers = 1
"#,
    ));
    assert_eq!(s.wait_ready("echo", 1, Duration::from_secs(10)).len(), 1);
    let rest = rss(s.pid);
    const DECLARED: usize = 10 << 20;
    const SENT: usize = 9 << 20;
    // The hostile order: 50 heads first, then 9 of the 10 MiB of each body, then stall.
    let mut conns: Vec<TcpStream> = (0..50)
        .map(|_| {
            let c = TcpStream::connect(&s.addr).unwrap();
            c.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
            c
        })
        .collect();
    for c in &mut conns {
        let head = format!("POST /api/up HTTP/1.1\r\nHost: t\r\nContent-Length: {DECLARED}\r\n\r\n");
        c.write_all(head.as_bytes()).unwrap();
    }
    let chunk = vec![b'b'; 256 * 1024];
    let t = Instant::now();
    let mut uploaded = vec![0usize; conns.len()];
    let mut refused = vec![false; conns.len()];
    // Round-robin uploads, bounded in time: a refused connection stops being fed.
    while t.elapsed() < Duration::from_secs(8) {
        let mut progress = false;
        for (i, c) in conns.iter_mut().enumerate() {
            if refused[i] || uploaded[i] >= SENT {
                continue;
            }
            let mut peek = [0u8; 512];
            if let Ok(n) = c.read(&mut peek)
                && n > 0
            {
                refused[i] = true;
                assert_eq!(status_of(&peek[..n]), 503, "conn {i}: {}", String::from_utf8_lossy(&peek[..n]));
                continue;
            }
            if let Ok(n) = c.write(&chunk[..chunk.len().min(SENT - uploaded[i])]) {
                uploaded[i] += n;
                progress = progress || n > 0;
            }
        }
        if !progress {
            break;
        }
    }
    // Whatever did not get through: look for its answer.
    for (i, c) in conns.iter_mut().enumerate() {
        if refused[i] {
            continue;
        }
        let mut peek = [0u8; 512];
        if let Ok(n) = c.read(&mut peek)
            && n > 0
        {
            assert_eq!(status_of(&peek[..n]), 503, "conn {i}");
            refused[i] = true;
        }
    }
    let peak = peak_rss(s.pid, Duration::from_secs(1));
    let n_refused = refused.iter().filter(|&&r| r).count();
    let accepted_bytes: usize = uploaded.iter().zip(&refused).filter(|(_, r)| !**r).map(|(u, _)| *u).sum();
    let bound = mem_bound(rest, 10 * MIB);
    eprintln!(
        "memory (b) 50 stalled 9/10 MiB uploads: {n_refused} refused 503, {:.1} MiB taken from the others; RSS at rest {:.1} MiB, peak {:.1} MiB (bound {:.1} MiB)",
        mib(accepted_bytes as u64),
        mib(rest),
        mib(peak),
        mib(bound)
    );
    // Refused at the head: each 503 came while its client was still uploading.
    let late: Vec<usize> = (0..conns.len()).filter(|&i| refused[i] && uploaded[i] >= SENT).collect();
    assert!(late.is_empty(), "503 only after the whole upload on {late:?}");
    // 32 MiB budget, 10 MiB declared each: at most 3 bodies fit.
    assert!(n_refused >= 47, "only {n_refused} of 50 uploads refused past a 32 MiB budget");
    assert!(peak < bound, "RSS {:.1} MiB over the bound {:.1} MiB", mib(peak), mib(bound));
    // Still serving.
    assert_eq!(get(&s.addr, "/live").status, 200);
}

#[test]
fn memory_auth_is_decided_at_the_head() {
    let s = TestServer::start(&config(
        "",
        r#"
[server.limits]
max_body_bytes = 104857600

[auth]
keys = ["sekrit"]

[[pool]]
name = "echo"
routes = ["/api/**"]
native = "echo"
num_workers = 1
"#,
    ));
    assert_eq!(s.wait_ready("echo", 1, Duration::from_secs(10)).len(), 1);
    let rest = rss(s.pid);
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut c = Client::connect(&s.addr);
        // Only the head of a 100 MiB upload: the answer must not wait for the body.
        c.send(b"POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: 104857600\r\n\r\n");
        c.stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let r = c.read_response().expect("401 before the body");
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(c.is_closed(Duration::from_secs(3)), "connection left open after a 401 with a body pending");
        conns.push(c);
    }
    // A client that sends the body anyway cannot make the dispatcher buffer it.
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = c.write_all(b"POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: 104857600\r\n\r\n");
    let chunk = vec![b'c'; 1 << 20];
    let mut pushed = 0;
    while pushed < 100 && c.write_all(&chunk).is_ok() {
        pushed += 1;
    }
    let after = rss(s.pid);
    eprintln!(
        "memory (c) auth at the head: 20 × 401 without a body; a client pushed {pushed} MiB after its 401; RSS {:.1} → {:.1} MiB",
        mib(rest),
        mib(after)
    );
    assert!(pushed < 100, "the dispatcher read a 100 MiB body after answering 401");
    assert!(after < rest + 16 * MIB, "RSS grew {:.1} MiB", mib(after.saturating_sub(rest)));
    // With the key, the same route works.
    let ok = request(&s.addr, "POST", "/api/x", &[("x-api-key", "sekrit")], b"fine");
    assert_eq!(ok.status, 200);
}

const NON_READER: &str = r#"
import os, sys, time
sys.path.insert(0, sys.argv[1])
from rustworkers.protocol import encode_frame, HELLO, HEARTBEAT
# Advertise many credits, never read fd 3 (the request pipe), heartbeat forever.
os.write(4, encode_frame(HELLO, 0, {"pid": os.getpid(), "credits": 1000}))
while True:
    os.write(4, encode_frame(HEARTBEAT, 0, {"in_hand": [], "extend": []}))
    time.sleep(0.2)
"#;

#[test]
fn memory_worker_that_never_reads_its_pipe_is_killed_as_stuck() {
    let dir = TempDir::new();
    dir.write("non_reader.py", NON_READER);
    let s = TestServer::start_in(
        dir,
        &config(
            MEM_SERVER,
            r#"
[[pool]]
name = "deaf"
routes = ["/deaf/**"]
command = ["python3", "{dir}/non_reader.py", "{repo}/workers"]
num_workers = 1
stuck_timeout = 2
stuck_grace = 0.5
max_restarts = 1000
timeout = 3
"#,
        ),
    );
    let pids = s.wait_ready("deaf", 1, Duration::from_secs(10));
    assert_eq!(pids.len(), 1, "{}", s.log());
    let rest = rss(s.pid);
    // 100 requests of 512 KiB (50 MiB) on their own connections, all at once.
    const N: usize = 100;
    let body = vec![b'd'; 512 * 1024];
    let t = Instant::now();
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let addr = s.addr.clone();
            let body = body.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr);
                c.stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                // The pool timeout is 3 s: every request has its answer (500, 503 or 504)
                // well within this.
                c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let head = format!("POST /deaf/{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len());
                // A write error means refused before the upload finished: the answer is
                // already there to read.
                let _ = c.stream.write_all(head.as_bytes()).and_then(|_| c.stream.write_all(&body));
                c.read_response().map(|r| r.status)
            })
        })
        .collect();
    let peak = peak_rss(s.pid, Duration::from_secs(2));
    assert!(
        s.wait_for_log("has not read its request pipe", Duration::from_secs(10)),
        "the non-reading worker was never found stuck:\n{}",
        tail(&s.log(), 30)
    );
    assert!(
        poll(Duration::from_secs(5), || (!pid_alive(pids[0])).then_some(())).is_some(),
        "non-reading worker {} still alive",
        pids[0]
    );
    let killed_after = t.elapsed();
    let statuses: Vec<Option<u16>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let peak = peak.max(rss(s.pid));
    let mut counts = std::collections::BTreeMap::new();
    for st in &statuses {
        *counts.entry(*st).or_insert(0) += 1;
    }
    let bound = mem_bound(rest, 10 * MIB);
    eprintln!(
        "memory (d) non-reading worker: killed after {killed_after:.1?}; statuses {counts:?}; RSS at rest {:.1} MiB, peak {:.1} MiB (bound {:.1} MiB)",
        mib(rest),
        mib(peak),
        mib(bound)
    );
    assert!(peak < bound, "RSS {:.1} MiB over the bound {:.1} MiB", mib(peak), mib(bound));
    assert!(statuses.iter().all(|s| matches!(s, Some(500 | 503 | 504))), "{counts:?}");
    assert_eq!(get(&s.addr, "/live").status, 200);
}

// ------------------------------------------------------------------ 4. slow bodies

fn slow_config(server_keys: &str) -> String {
    config(
        &format!("body_timeout = 1\nbody_min_rate = 1024\nheader_timeout = 1\n{server_keys}"),
        r#"
[[pool]]
name = "echo"
routes = ["/api/**"]
native = "echo"
num_workers = 1
"#,
    )
}

/// Send a declared 10000-byte body one byte every 300 ms until the server answers or
/// closes (or 40 bytes, 12 s); returns (status, time from the head to the answer).
fn slow_body(addr: &str) -> (u16, Duration, bool) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"POST /api/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 10000\r\n\r\n").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    for _ in 0..40 {
        let mut buf = [0u8; 1024];
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                continue;
            }
            Err(_) if !got.is_empty() => break,
            Err(_) => {}
        }
        if c.write_all(b"x").is_err() {
            break;
        }
    }
    let took = t.elapsed();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut rest = Vec::new();
    let closed = c.read_to_end(&mut rest).is_ok();
    got.extend_from_slice(&rest);
    (status_of(&got), took, closed)
}

#[test]
fn slow_bodies_are_answered_408_within_the_body_deadline() {
    let s = TestServer::start(&slow_config("max_connections = 20"));
    assert_eq!(s.wait_ready("echo", 1, Duration::from_secs(10)).len(), 1);
    // A quick upload is fine.
    let r = request(&s.addr, "POST", "/api/fast", &[], &vec![b'f'; 10000]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 10000);

    let (status, took, closed) = slow_body(&s.addr);
    eprintln!("slow body: 1 byte / 300 ms → {status} after {took:.1?}, closed: {closed}");
    assert_eq!(status, 408);
    assert!(took < Duration::from_secs(3), "408 came after {took:?}");
    assert!(closed, "connection left open after 408");

    // 20 slow uploaders fill max_connections = 20; a new client waits at most about the
    // body deadline.
    let base = sockets_of(s.pid);
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let addr = s.addr.clone();
            std::thread::spawn(move || slow_body(&addr))
        })
        .collect();
    assert!(
        poll(Duration::from_secs(5), || (sockets_of(s.pid) >= base + 20).then_some(())).is_some(),
        "the 20 slow clients did not all get in"
    );
    let t = Instant::now();
    let mut c = Client::connect(&s.addr);
    c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.send(b"GET /live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.read_response().expect("locked out");
    let waited = t.elapsed();
    assert_eq!(r.status, 200);
    let results: Vec<(u16, Duration, bool)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let worst = results.iter().map(|r| r.1).max().unwrap();
    eprintln!(
        "slow bodies: 20 slow clients at max_connections = 20; a new client waited {waited:.1?}; slowest 408 after {worst:.1?}"
    );
    assert!(results.iter().all(|r| r.0 == 408 && r.2), "{results:?}");
    assert!(waited < Duration::from_secs(3), "a new client was locked out for {waited:?}");
}

/// Sockets the process holds (listeners, signal pipe, client connections), from
/// /proc/PID/fd: at `max_connections` no `/status` request can get in to count them.
fn sockets_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn pipelined_partial_head_is_timed_out() {
    let s = TestServer::start(&slow_config(""));
    let mut c = Client::connect(&s.addr);
    let t = Instant::now();
    c.send(b"GET /live HTTP/1.1\r\nHost: t\r\n\r\nG");
    let r = c.read_response().expect("first answer");
    assert_eq!(r.status, 200);
    let second = c.read_response();
    let took = t.elapsed();
    eprintln!("partial pipelined head: answered, then {:?} after {took:.1?}", second.as_ref().map(|r| r.status));
    assert_eq!(second.map(|r| r.status), Some(408), "the partial second head was not answered 408");
    assert!(c.is_closed(Duration::from_secs(2)), "not closed after the 408");
    assert!(took < Duration::from_secs(3), "closed after {took:?}; header_timeout is 1 s");
}

// ------------------------------------------------------------------ 5. input that kills or panics

#[test]
fn over_4_gib_declared_body_is_413_and_the_dispatcher_lives() {
    let s = TestServer::start(&config(
        "",
        r#"
[server.limits]
max_body_bytes = 4294967295

[[pool]]
name = "echo"
routes = ["/api/**"]
native = "echo"
num_workers = 1
"#,
    ));
    for (len, te) in [("5000000000", false), ("18446744073709551615", false), ("100000000000", true)] {
        let mut c = Client::connect(&s.addr);
        let raw = if te {
            // A chunk size over 4 GiB.
            format!(
                "POST /api/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\nabc",
                len.parse::<u64>().unwrap()
            )
        } else {
            format!("POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\nabc")
        };
        c.send(raw.as_bytes());
        let r = c.read_response().expect("an answer");
        assert!(
            r.status == 413 || (len.len() > 12 && r.status == 400),
            "{len} (chunked {te}): {} {}",
            r.status,
            r.text()
        );
    }
    assert!(pid_alive(s.pid));
    assert_eq!(get(&s.addr, "/live").status, 200);
    assert_eq!(request(&s.addr, "POST", "/api/x", &[], b"small").status, 200);
}

const BIG_BODY_WORKER: &str = r#"
import hashlib, os
from rustworkers import Worker, api


class BigBody(Worker):
    @api("/big/len", "POST")
    def length(self, request):
        data = request.data
        if isinstance(data, str):
            data = data.encode()
        return {"len": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pid": os.getpid()}
"#;

#[test]
fn seventy_mib_body_reaches_a_python_worker_alive() {
    let dir = TempDir::new();
    dir.write("bigbody.py", BIG_BODY_WORKER);
    let s = TestServer::start_in(
        dir,
        &config(
            "",
            r#"
[server.limits]
max_body_bytes = 104857600

[[pool]]
name = "py"
routes = ["/big/**"]
python = "bigbody:BigBody"
module_path = ["{dir}"]
num_workers = 1
"#,
        ),
    );
    let pids = s.wait_ready("py", 1, Duration::from_secs(15));
    assert_eq!(pids.len(), 1, "{}", s.log());
    let body: Vec<u8> = (0..70 * MIB as usize).map(|i| b'a' + (i % 26) as u8).collect();
    let expected = {
        let out = std::process::Command::new("python3")
            .args(["-c", "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(&body)?;
                child.wait_with_output()
            })
            .expect("python3 sha256");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for round in 0..2 {
        let t = Instant::now();
        let r = request(&s.addr, "POST", "/big/len", &[("Content-Type", "application/octet-stream")], &body);
        assert_eq!(r.status, 200, "round {round}: {}\n{}", r.text(), tail(&s.log(), 20));
        let v = r.json();
        eprintln!("70 MiB POST to Python: {} in {:.1?}", r.status, t.elapsed());
        assert_eq!(v["len"], 70 * MIB);
        assert_eq!(v["sha256"], expected.as_str());
        assert_eq!(v["pid"], pids[0], "the worker was replaced");
    }
    assert!(pid_alive(pids[0]));
    assert_eq!(pool_status(&s, "py")["restarts_total"], 0);
    // One byte over the limit is 413 at the head.
    let mut c = Client::connect(&s.addr);
    c.send(b"POST /big/len HTTP/1.1\r\nHost: t\r\nContent-Length: 104857601\r\n\r\n");
    assert_eq!(c.read_response().expect("413").status, 413);
}

#[test]
fn non_utf8_argument_is_an_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"\xff\xfe.toml");
    for args in [
        vec![std::ffi::OsStr::new("-c"), bad],
        vec![bad],
        vec![std::ffi::OsStr::new("check"), std::ffi::OsStr::new("-c"), bad],
    ] {
        let out = std::process::Command::new(binary())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: exit 0");
        assert_ne!(out.status.code(), Some(101), "{args:?}: exit 101 (panic): {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.code().is_some(), "{args:?}: killed by a signal");
    }
}

#[test]
fn bad_host_headers_are_400() {
    let s = TestServer::start(&config("", ""));
    for host in ["a b", "a/b", "example.com:99999", "example.com:x", "exa mple:80", "a@b", ""] {
        let raw = format!("GET /live HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let out = raw_exchange(&s.addr, raw.as_bytes());
        let status = status_of(&out);
        if host.is_empty() {
            // An empty Host is allowed by RFC 9112 §3.2 (an authority-less target).
            assert!(status == 200 || status == 400, "Host {host:?}: {status}");
        } else {
            assert_eq!(status, 400, "Host {host:?}: {}", String::from_utf8_lossy(&out));
        }
    }
    // Two Host fields, and none at all in HTTP/1.1.
    assert_eq!(status_of(&raw_exchange(&s.addr, b"GET /live HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")), 400);
    assert_eq!(status_of(&raw_exchange(&s.addr, b"GET /live HTTP/1.1\r\n\r\n")), 400);
    assert_eq!(get(&s.addr, "/live").status, 200);
}

#[test]
fn graceful_stop_timeout_closes_keepalive_after_its_503() {
    let mut s = TestServer::start(&config(
        "shutdown_timeout = 1",
        r#"
[[pool]]
name = "chaos"
routes = ["/chaos/**"]
native = "chaos"
num_workers = 1
"#,
    ));
    assert_eq!(s.wait_ready("chaos", 1, Duration::from_secs(10)).len(), 1);
    let mut c = Client::connect(&s.addr);
    let r = c.request(b"GET /chaos/warm HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    c.send(b"GET /chaos/slow?sleep=5000 HTTP/1.1\r\nHost: t\r\n\r\n");
    // The request is in the worker before the stop begins.
    assert!(
        poll(Duration::from_secs(5), || (pool_status(&s, "chaos")["workers"][0]["in_hand"] == 1).then_some(()))
            .is_some(),
        "{}",
        pool_status(&s, "chaos")
    );
    let t = Instant::now();
    s.signal(libc::SIGTERM);
    let r = c.read_response().expect("an answer to the in-flight request");
    let took = t.elapsed();
    eprintln!(
        "graceful stop: in-flight request answered {} after {took:.1?}, connection: {:?}",
        r.status,
        r.header("connection")
    );
    assert_eq!(r.status, 503);
    assert!(r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")), "{:?}", r.headers);
    // Nothing more is served on it.
    let _ = c.stream.write_all(b"GET /live HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(c.read_response().is_none(), "a request after the stop's 503 was answered");
    assert!(s.wait_exit(Duration::from_secs(6)).is_some(), "server did not exit");
}

// ------------------------------------------------------------------ 6. operator traps

const LATE_MODULE: &str = r#"
from rustworkers import Worker, api


class Late(Worker):
    @api("/late/hello", "GET")
    def hello(self, request):
        return {"hello": "late"}
"#;

#[test]
fn reload_with_unchanged_config_revives_a_degraded_pool() {
    let s = TestServer::start(&config(
        "",
        r#"
[[pool]]
name = "late"
routes = ["/late/**"]
python = "late_module:Late"
module_path = ["{dir}"]
num_workers = 1
max_restarts = 1
restart_window = 60
"#,
    ));
    let degraded = poll(Duration::from_secs(20), || (pool_status(&s, "late")["degraded"] == true).then_some(()));
    assert!(degraded.is_some(), "missing module never degraded the pool:\n{}", tail(&s.log(), 30));
    let r = get(&s.addr, "/late/hello");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), None);
    let h = get(&s.addr, "/health");
    assert_eq!((h.status, h.json()["pools"]["late"].as_str()), (503, Some("degraded")), "{}", h.text());
    // The operator installs the missing module and reloads the unchanged file.
    s.dir.write("late_module.py", LATE_MODULE);
    s.signal(libc::SIGHUP);
    assert!(s.wait_for_log("configuration reloaded", Duration::from_secs(10)));
    let served = poll(Duration::from_secs(20), || {
        let r = get(&s.addr, "/late/hello");
        (r.status == 200).then_some(r)
    });
    let r = served.unwrap_or_else(|| panic!("pool not back after SIGHUP:\n{}", tail(&s.log(), 30)));
    assert_eq!(r.json()["hello"], "late");
    let h = get(&s.addr, "/health");
    assert_eq!(h.status, 200, "{}", h.text());
}

#[test]
fn health_ready_live_tell_the_truth() {
    let mut s = TestServer::start(&config(
        "shutdown_timeout = 5",
        r#"
[[pool]]
name = "echo"
routes = ["/api/**"]
native = "echo"
num_workers = 1

[[pool]]
name = "broken"
routes = ["/broken/**"]
native = "chaos"
num_workers = 1
max_restarts = 1
restart_window = 60
env = { CHAOS_SETUP_EXIT = "1" }

[[pool]]
name = "slow"
routes = ["/slow/**"]
native = "chaos"
num_workers = 1
readiness = false
"#,
    ));
    assert_eq!(s.wait_ready("echo", 1, Duration::from_secs(10)).len(), 1);
    assert_eq!(s.wait_ready("slow", 1, Duration::from_secs(10)).len(), 1);
    // While `broken` has no live worker (starting, backing off or degraded) it is not "ok".
    let h = get(&s.addr, "/health");
    assert_ne!(h.json()["pools"]["broken"], "ok", "{}", h.text());
    let degraded = poll(Duration::from_secs(15), || (pool_status(&s, "broken")["degraded"] == true).then_some(()));
    assert!(degraded.is_some(), "{}", pool_status(&s, "broken"));
    let h = get(&s.addr, "/health");
    let v = h.json();
    eprintln!("health with one degraded pool: {} {}", h.status, h.text());
    assert_eq!(h.status, 200, "one degraded pool must not fail the whole server: {}", h.text());
    assert_eq!(v["status"], "partial");
    assert_eq!(v["pools"]["broken"], "degraded");
    assert_eq!(v["pools"]["echo"], "ok");
    for _ in 0..20 {
        assert_eq!(get(&s.addr, "/api/x").status, 200);
    }
    // `broken` counts for readiness and has no worker: not ready. Live is fine.
    let r = get(&s.addr, "/ready");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("broken"), "{}", r.text());
    assert_eq!(get(&s.addr, "/live").status, 200);

    // Draining: the listeners close at once (gunicorn's behaviour), so a probe that
    // connects now is refused: the load balancer sees "not ready" without asking /ready.
    // /ready's and /live's draining answers are only for connections already open, and
    // those take no new request (see the next test).
    let mut c = Client::connect(&s.addr);
    c.send(b"GET /slow/x?sleep=1000 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        poll(Duration::from_secs(5), || (pool_status(&s, "slow")["workers"][0]["in_hand"] == 1).then_some(()))
            .is_some()
    );
    s.signal(libc::SIGTERM);
    let refused = poll(Duration::from_secs(5), || TcpStream::connect(&s.addr).is_err().then_some(()));
    assert!(refused.is_some(), "new connections still accepted while draining");
    assert!(pid_alive(s.pid), "the server exited with a request in flight");
    let r = c.read_response().expect("in-flight answer");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")));
    assert!(s.wait_exit(Duration::from_secs(8)).is_some());
}

/// A stop that begins while a keep-alive client has requests pipelined behind a slow one:
/// every request already accepted is answered (the pool ones ran in a worker), only the
/// last answer says `connection: close`, and nothing after it is read.
#[test]
fn draining_answers_every_request_already_accepted() {
    let mut s = TestServer::start(&config(
        "shutdown_timeout = 5",
        r#"
[[pool]]
name = "slow"
routes = ["/slow/**"]
native = "chaos"
num_workers = 1

[[pool]]
name = "echo"
routes = ["/api/**"]
native = "echo"
num_workers = 1
"#,
    ));
    assert_eq!(s.wait_ready("slow", 1, Duration::from_secs(10)).len(), 1);
    assert_eq!(s.wait_ready("echo", 1, Duration::from_secs(10)).len(), 1);
    let mut c = Client::connect(&s.addr);
    c.send(
        b"GET /slow/x?sleep=800 HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /api/after HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          GET /live HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /slow/y?sleep=50 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert!(
        poll(Duration::from_secs(5), || (pool_status(&s, "slow")["workers"][0]["in_hand"] == 1).then_some(()))
            .is_some()
    );
    s.signal(libc::SIGTERM);
    let mut answers = Vec::new();
    while let Some(r) = c.read_response() {
        answers.push(r);
        if answers.len() == 4 {
            break;
        }
    }
    let summary: Vec<(u16, Option<&str>)> = answers.iter().map(|r| (r.status, r.header("connection"))).collect();
    eprintln!("drain with a pipeline: {summary:?}");
    assert_eq!(answers.len(), 4, "answers lost at the stop: {summary:?}\n{}", tail(&s.log(), 20));
    assert!(answers.iter().all(|r| r.status == 200), "{summary:?}");
    assert_eq!(answers[1].json()["body"], "hello");
    let closes = |r: &Response| r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    assert!(answers[..3].iter().all(|r| !closes(r)), "closed before the last accepted request: {summary:?}");
    assert!(closes(&answers[3]), "the last answer must say connection: close: {summary:?}");
    let _ = c.stream.write_all(b"GET /live HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(c.read_response().is_none(), "a request sent after the stop was answered");
    assert!(s.wait_exit(Duration::from_secs(8)).is_some());
}
