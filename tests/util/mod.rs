//! Test harness: start the real `rustworkers` binary on a loopback port, talk raw HTTP to
//! it, and make sure no process outlives a test (Drop sends SIGTERM, then SIGKILL, and
//! kills any worker left behind).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("rw-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, rel: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, data).expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_rustworkers")
}

/// Path of the repository (for examples/, static/, workers/).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The running server.
pub struct TestServer {
    child: Option<Child>,
    pub pid: i32,
    /// `127.0.0.1:PORT` of the first listener.
    pub addr: String,
    log: Arc<Mutex<String>>,
    pub dir: TempDir,
}

impl TestServer {
    /// Start with this config text. `{dir}` in the text is replaced by the test's temp dir,
    /// `{repo}` by the repository path. The first bind should be `127.0.0.1:0`.
    pub fn start(config: &str) -> TestServer {
        Self::start_in(TempDir::new(), config)
    }

    /// Same, with files already written into `dir`.
    pub fn start_in(dir: TempDir, config: &str) -> TestServer {
        Self::try_start_in(dir, config).expect("server did not start")
    }

    pub fn try_start_in(dir: TempDir, config: &str) -> Result<TestServer, String> {
        Self::try_start_with(dir, config, None)
    }

    /// Start with the open-files limit (RLIMIT_NOFILE) of the server set to `nofile`.
    pub fn start_with_nofile(config: &str, nofile: u64) -> TestServer {
        Self::try_start_with(TempDir::new(), config, Some(nofile)).expect("server did not start")
    }

    fn try_start_with(dir: TempDir, config: &str, nofile: Option<u64>) -> Result<TestServer, String> {
        let text =
            config.replace("{dir}", &dir.path().display().to_string()).replace("{repo}", &repo().display().to_string());
        let cfg = dir.write("config.toml", text);
        let mut command = Command::new(binary());
        if let Some(limit) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    let rl = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .arg("-c")
            .arg(&cfg)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let pid = child.id() as i32;
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = Arc::clone(&log);
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    match reader.read_until(b'\n', &mut raw) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => {
                            log.lock().unwrap().push_str(&format!("[harness: output read failed: {e}]\n"));
                            break;
                        }
                    }
                    // Lossy: one odd byte must not end the capture of everything after it.
                    let line = String::from_utf8_lossy(&raw).trim_end_matches(['\n', '\r']).to_string();
                    if std::env::var_os("RW_TEST_VERBOSE").is_some() {
                        eprintln!("[server {pid}] {line}");
                    }
                    if let Some((_, rest)) = line.split_once("] listening on ") {
                        let _ = tx.send(rest.trim().to_string());
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let mut server = TestServer { child: Some(child), pid, addr: String::new(), log, dir };
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(addr) => {
                server.addr = addr;
                Ok(server)
            }
            Err(_) => {
                let status = server.wait_exit(Duration::from_secs(2));
                Err(format!("no listening line (exit {status:?}); log:\n{}", server.log()))
            }
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Count occurrences of `needle` in the log.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.pid, sig);
        }
    }

    /// Wait for the server to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pids of the server's direct children (its workers), from /proc.
    pub fn children(&self) -> Vec<i32> {
        children_of(self.pid)
    }

    /// Worker pids that are ready per /status of pool `pool`.
    pub fn worker_pids(&self, pool: &str) -> Vec<i32> {
        let resp = get(&self.addr, "/status");
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        let mut pids = Vec::new();
        for p in v["pools"].as_array().cloned().unwrap_or_default() {
            if p["name"] == pool {
                for w in p["workers"].as_array().cloned().unwrap_or_default() {
                    if w["ready"] == true {
                        pids.push(w["pid"].as_i64().unwrap_or(0) as i32);
                    }
                }
            }
        }
        pids
    }

    /// Wait until pool `pool` has `n` ready workers; returns their pids.
    pub fn wait_ready(&self, pool: &str, n: usize, timeout: Duration) -> Vec<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.worker_pids(pool);
            if pids.len() >= n || Instant::now() >= deadline {
                return pids;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // (pid, start time): pids are reused (pid_max can be 32768), so a leftover is
        // killed only if it is still the very process that was the server's child.
        let workers: Vec<(i32, Option<u64>)> = self.children().into_iter().map(|p| (p, start_time(p))).collect();
        if let Some(mut child) = self.child.take()
            && let Ok(None) = child.try_wait()
        {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Workers the server left behind would be a bug; never let them outlive the test.
        for (pid, started) in workers {
            if started.is_some() && start_time(pid) == started && pid_alive(pid) {
                // SAFETY: kill(2) on a process this test started (through the server).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// A process's start time (clock ticks since boot, /proc/PID/stat field 22): with the
/// pid, it names one process even after the pid is reused.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    stat.rsplit(')').next()?.split_whitespace().nth(19)?.parse().ok()
}

/// Direct children of `pid` per /proc/PID/task/*/children.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// Whether a process exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Zombie children of `pid`.
pub fn zombies_of(pid: i32) -> Vec<i32> {
    children_of(pid)
        .into_iter()
        .filter(|c| {
            std::fs::read_to_string(format!("/proc/{c}/stat"))
                .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .collect()
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A raw HTTP/1.1 client over one TCP connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("send");
    }

    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    /// The next `n` bytes after what responses consumed (a WebSocket's frames), within
    /// `timeout`; fewer if the connection ends first.
    pub fn read_exact_bytes(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        while self.buf.len() < n && self.fill() {}
        let take = n.min(self.buf.len());
        self.buf.drain(..take).collect()
    }

    /// Read one response; `head_request` for responses to HEAD (no body).
    pub fn read_response_to(&mut self, head_request: bool) -> Option<Response> {
        let head_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?;
        let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
            .collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if head_request || status == 304 || status == 204 || (100..200).contains(&status) {
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let line_end = loop {
                    if let Some(p) = find(&self.buf, b"\r\n") {
                        break p;
                    }
                    if !self.fill() {
                        return None;
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    if !self.fill() {
                        return None;
                    }
                }
                body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().ok()?;
            while self.buf.len() < len {
                if !self.fill() {
                    return None;
                }
            }
            body = self.buf.drain(..len).collect();
        } else {
            while self.fill() {}
            body = std::mem::take(&mut self.buf);
        }
        Some(Response { status, headers, body })
    }

    pub fn read_response(&mut self) -> Option<Response> {
        self.read_response_to(false)
    }

    /// Whether the server closed the connection (reads EOF within the timeout).
    pub fn is_closed(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut tmp = [0u8; 1024];
        let closed = matches!(self.stream.read(&mut tmp), Ok(0)) || self.stream.peer_addr().is_err();
        self.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        closed
    }

    /// Send a request and read its response.
    pub fn request(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_response().expect("no response")
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One GET on a fresh connection.
pub fn get(addr: &str, path: &str) -> Response {
    request(addr, "GET", path, &[], b"")
}

/// One request on a fresh connection (`Connection: close`).
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    c.send(&bytes);
    c.read_response_to(method == "HEAD").expect("no response")
}

/// Send raw bytes on a fresh connection and return everything until the server closes.
pub fn raw_exchange(addr: &str, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Status code of the first response in raw bytes.
pub fn status_of(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Send `sig` to `pid` (a process the test started, directly or through the server).
pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) with plain integers; a stale pid at worst signals nothing.
    unsafe { libc::kill(pid, sig) };
}
