//! The protocol conformance kit: starts a worker exactly as a pool would
//! (`spawn::spawn_worker`) and drives it through the cases of `docs/protocol.md`, each with
//! a deadline, printing `ok` / `FAIL <why>` per case and `N passed, M failed` at the end.
//!
//! It is a CLI tool, not the dispatcher: blocking-style I/O with `poll(2)` timeouts on the
//! (non-blocking) pipes the spawner returns. Every frame the worker sends is validated
//! (header, type, meta shape, ids, ordering). Every child is SIGKILLed and reaped at the
//! end, pass or fail.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::ipc::{
    ConfigMeta, Event, Frame, FrameDecoder, FrameOrder, FrameType, HeartbeatMeta, HelloMeta, RequestMeta, ResponseMeta,
    encode_empty, encode_json,
};
use crate::spawn::{Program, SpawnSpec, spawn_worker};

/// Heartbeat interval sent in CONFIG; heartbeats must arrive within 3× this.
const HEARTBEAT_INTERVAL: f64 = 0.2;
/// Largest frame body accepted from the worker under test.
const MAX_BODY: u64 = 64 << 20;
/// Size of the large-body case.
const LARGE_BODY: usize = 4 << 20;

/// What to test and how long to wait.
#[derive(Debug, Clone)]
pub struct Options {
    pub program: Program,
    /// If set, a GET to this path must be answered with STREAM_START / CHUNK* / END.
    pub stream_path: Option<String>,
    /// Deadline of each case.
    pub case_timeout: Duration,
    /// Deadline for HELLO after CONFIG (interpreters start slowly).
    pub startup_timeout: Duration,
}

impl Options {
    pub fn new(program: Program) -> Options {
        Options {
            program,
            stream_path: None,
            case_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(10),
        }
    }
}

/// Outcome of one case: `Ok(detail)` or `Err(why it failed)`.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: &'static str,
    pub outcome: Result<String, String>,
}

/// All case outcomes of one run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub cases: Vec<CaseResult>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.outcome.is_ok()).count()
    }
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }
}

/// Run the kit as `opts` says, printing the report to stdout: 0 when every case passed,
/// 1 otherwise, 2 when the native worker named is not registered.
pub fn run(opts: &Options) -> i32 {
    if let Program::Native { name } = &opts.program
        && !crate::worker::is_registered(name)
    {
        eprintln!("rustworkers conformance: no native worker registered as {name:?}");
        return 2;
    }
    let report = run_cases(opts, &mut io::stdout());
    if report.failed() == 0 { 0 } else { 1 }
}

/// Run the kit on the native worker registered as `name` (built in, or registered by a
/// library user with `worker::register_native` before this call): see
/// docs/native-workers.md.
pub fn run_native(name: &str) -> i32 {
    run(&Options::new(Program::Native { name: name.to_string() }))
}

/// A case on the long-lived worker.
type CaseFn = dyn Fn(&mut Kit) -> Result<String, String>;
/// A case that ends its (fresh) worker.
type FreshCaseFn = fn(&mut Kit, Duration) -> Result<String, String>;

/// Run every case against `opts.program`, printing one line per case to `out`.
pub fn run_cases(opts: &Options, out: &mut dyn Write) -> Report {
    let mut report = Report::default();
    let mut record = |name: &'static str, outcome: Result<String, String>, out: &mut dyn Write| {
        let line = match &outcome {
            Ok(d) if d.is_empty() => format!("{name:<40} ok"),
            Ok(d) => format!("{name:<40} ok ({d})"),
            Err(why) => format!("{name:<40} FAIL {why}"),
        };
        let _ = writeln!(out, "{line}");
        report.cases.push(CaseResult { name, outcome });
    };
    let _ = writeln!(out, "conformance: {}", opts.program);
    let t = opts.case_timeout;

    // One long-lived worker for the request cases, then STOP on it.
    let mut main = Kit::start(opts);
    record(
        "config then hello",
        main.as_mut().map_err(|e| e.clone()).and_then(|k| k.handshake(opts.startup_timeout)),
        out,
    );
    let mut cases: Vec<(&'static str, Box<CaseFn>)> = vec![
        ("GET request answered", Box::new(move |k: &mut Kit| k.case_get(t))),
        ("POST with all 256 byte values", Box::new(move |k: &mut Kit| k.case_post_bytes(t))),
        ("idle heartbeat within 3x interval", Box::new(|k: &mut Kit| k.case_heartbeat())),
        ("two requests back to back", Box::new(move |k: &mut Kit| k.case_back_to_back(t))),
        ("DISCONNECT of unknown id tolerated", Box::new(move |k: &mut Kit| k.case_disconnect_unknown(t))),
        ("4 MiB request body", Box::new(move |k: &mut Kit| k.case_large(t))),
        ("request split across writes", Box::new(move |k: &mut Kit| k.case_split(t))),
    ];
    if let Some(path) = opts.stream_path.clone() {
        cases.push(("streamed response", Box::new(move |k: &mut Kit| k.case_stream(&path, t))));
    }
    cases.push(("WebSocket open, message, close", Box::new(move |k: &mut Kit| k.case_websocket(t))));
    cases.push(("STOP exits 0", Box::new(move |k: &mut Kit| k.case_stop(t))));
    for (name, case) in cases {
        let outcome = match main.as_mut() {
            Err(e) => Err(format!("skipped: worker did not start ({e})")),
            Ok(k) => match k.broken.clone() {
                Some(why) => Err(format!("skipped: worker unusable after an earlier case ({why})")),
                None => case(k),
            },
        };
        record(name, outcome, out);
    }
    drop(main);

    // Fresh workers for the cases that end them.
    let fresh: [(&'static str, FreshCaseFn); 2] =
        [("EOF on request pipe exits 0", Kit::case_eof), ("malformed frame is fatal", Kit::case_malformed)];
    for (name, case) in fresh {
        let outcome = Kit::start(opts).and_then(|mut k| {
            k.handshake(opts.startup_timeout).map_err(|e| format!("no handshake: {e}"))?;
            case(&mut k, t)
        });
        record(name, outcome, out);
    }
    let _ = writeln!(out, "{} passed, {} failed", report.passed(), report.failed());
    report
}

/// One worker under test: its pipes, the frame decoder, and what it was given.
struct Kit {
    pid: Pid,
    request_tx: Option<mio::unix::pipe::Sender>,
    reply_rx: mio::unix::pipe::Receiver,
    outputs: Vec<(mio::unix::pipe::Receiver, &'static str, Vec<u8>)>,
    decoder: FrameDecoder,
    reply_eof: bool,
    exited: Option<WaitStatus>,
    /// Protocol state and frame-order rules (requests given, streams, HELLO, credits).
    order: FrameOrder,
    next_id: u64,
    /// HELLO said `websocket`: the WebSocket case runs.
    websocket: bool,
    /// Why this worker can no longer be tested (invalid frame, pipe closed, timeout).
    broken: Option<String>,
}

/// What `await_answers` collected for one request.
#[derive(Debug)]
struct Answer {
    id: u64,
    status: u16,
    body: Vec<u8>,
    streamed_chunks: Option<usize>,
}

impl Kit {
    fn start(opts: &Options) -> Result<Kit, String> {
        // Python programs find the shim as a pool's workers do.
        let (program, env) = match &opts.program {
            Program::Exec { argv } => {
                let cmd = crate::python::kit_command(argv);
                let env = cmd.pythonpath.map(|p| ("PYTHONPATH".to_string(), p)).into_iter().collect();
                (Program::Exec { argv: cmd.argv }, env)
            }
            native => (native.clone(), Vec::new()),
        };
        let spec = SpawnSpec {
            pool: "conformance".into(),
            worker_id: 0,
            program,
            env,
            cwd: None,
            memory_limit_mb: None,
            user: None,
            group: None,
        };
        let w = spawn_worker(&spec).map_err(|e| format!("spawn failed: {e}"))?;
        Ok(Kit {
            pid: w.pid,
            request_tx: Some(w.request_tx),
            reply_rx: w.reply_rx,
            outputs: vec![(w.stdout_rx, "stdout", Vec::new()), (w.stderr_rx, "stderr", Vec::new())],
            decoder: FrameDecoder::new(crate::ipc::frame_limit_for_body(MAX_BODY)),
            reply_eof: false,
            exited: None,
            order: FrameOrder::new(),
            next_id: 1,
            websocket: false,
            broken: None,
        })
    }

    fn config_meta() -> ConfigMeta {
        ConfigMeta {
            protocol: 2,
            pool: "conformance".into(),
            worker_id: 0,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            timeout: 30.0,
            log_level: "info".into(),
            kwargs: serde_json::Map::new(),
            max_frame_bytes: crate::ipc::frame_limit_for_body(MAX_BODY),
        }
    }

    fn request_meta(method: &str, path: &str, query: Option<&str>, id: u64) -> RequestMeta {
        RequestMeta {
            method: method.into(),
            path: path.into(),
            query: query.map(str::to_string),
            headers: vec![
                ("host".into(), "conformance".into()),
                ("content-type".into(), "application/octet-stream".into()),
            ],
            remote_addr: "127.0.0.1".into(),
            remote_port: 40000,
            http_version: "1.1".into(),
            x_request_id: format!("conformance-{id}"),
            forwarded: false,
            context: serde_json::Value::Null,
        }
    }

    /// Frame a REQUEST and mark its id given.
    fn request_frame(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(u64, Vec<u8>), String> {
        let id = self.next_id;
        self.next_id += 1;
        // A `?` in the path (e.g. `--stream-path '/s?stream=3'`) becomes the query.
        let (path, query) = path.split_once('?').unwrap_or((path, "conformance=1"));
        let mut wire = Vec::new();
        encode_json(&mut wire, FrameType::Request, id, &Kit::request_meta(method, path, Some(query), id), body)
            .map_err(|e| format!("cannot encode REQUEST: {e}"))?;
        self.order.give(id);
        Ok((id, wire))
    }

    fn fail<T>(&mut self, why: String) -> Result<T, String> {
        self.broken.get_or_insert_with(|| why.clone());
        Err(why)
    }

    /// Move bytes: write `pending` to the request pipe while reading the reply and output
    /// pipes, until `pending` is empty (if writing) or something was read, or `deadline`.
    fn pump(&mut self, mut pending: Option<&mut &[u8]>, deadline: Instant) -> Result<(), String> {
        let tx_fd = self.request_tx.as_ref().map(|t| t.as_raw_fd());
        let mut fds = Vec::with_capacity(4);
        let writing = pending.as_ref().is_some_and(|p| !p.is_empty());
        if writing {
            let fd = tx_fd.ok_or("request pipe already closed")?;
            fds.push(libc::pollfd { fd, events: libc::POLLOUT, revents: 0 });
        }
        if !self.reply_eof {
            fds.push(libc::pollfd { fd: self.reply_rx.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        for (rx, _, _) in &self.outputs {
            fds.push(libc::pollfd { fd: rx.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        let ms = left.as_millis().clamp(1, 1000) as libc::c_int;
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(format!("poll: {e}")) };
        }
        for pfd in fds.iter().filter(|p| p.revents != 0) {
            if Some(pfd.fd) == tx_fd && writing {
                if let Some(p) = pending.as_deref_mut() {
                    match raw_write(pfd.fd, p) {
                        Ok(n) => *p = &p[n..],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(format!("could not write request pipe: {e}")),
                    }
                }
            } else if pfd.fd == self.reply_rx.as_raw_fd() {
                let mut buf = vec![0u8; 256 * 1024];
                match raw_read(pfd.fd, &mut buf) {
                    Ok(0) => self.reply_eof = true,
                    Ok(n) => self.decoder.push(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(format!("could not read reply pipe: {e}")),
                }
            } else if let Some((_, label, line)) = self.outputs.iter_mut().find(|(rx, _, _)| rx.as_raw_fd() == pfd.fd) {
                let mut buf = [0u8; 8192];
                match raw_read(pfd.fd, &mut buf) {
                    Ok(0) => {
                        flush_output(label, line);
                        let fd = pfd.fd;
                        self.outputs.retain(|(rx, _, _)| rx.as_raw_fd() != fd);
                    }
                    Ok(n) => {
                        line.extend_from_slice(&buf[..n]);
                        echo_lines(label, line);
                    }
                    Err(_) => {}
                }
            }
        }
        Ok(())
    }

    fn write_all(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), String> {
        let mut rest = bytes;
        while !rest.is_empty() {
            if Instant::now() >= deadline {
                return Err(format!("timed out writing to the worker ({} of {} bytes left)", rest.len(), bytes.len()));
            }
            self.pump(Some(&mut rest), deadline)?;
        }
        Ok(())
    }

    /// Next valid frame from the worker; `Ok(None)` when its reply pipe closed.
    fn next_frame(&mut self, deadline: Instant, waiting_for: &str) -> Result<Option<Frame>, String> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(f)) => {
                    self.validate(&f)?;
                    return Ok(Some(f));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("invalid frame from worker: {e}")),
            }
            if self.reply_eof {
                if self.decoder.buffered() > 0 {
                    return Err(format!("reply pipe closed inside a frame ({} bytes left)", self.decoder.buffered()));
                }
                return Ok(None);
            }
            if Instant::now() >= deadline {
                return Err(format!("timed out waiting for {waiting_for}"));
            }
            self.pump(None, deadline)
                .map_err(|e| if e == "timed out" { format!("timed out waiting for {waiting_for}") } else { e })?;
        }
    }

    /// Check one frame against the protocol's rules for worker → dispatcher frames: the
    /// same [`FrameOrder`] the dispatcher uses, so the kit fails exactly what would get
    /// the worker killed in a pool.
    fn validate(&mut self, f: &Frame) -> Result<Event, String> {
        self.order.check(f).map_err(|v| v.to_string())
    }

    /// Collect answers (RESPONSE, or a whole stream) for `ids`, skipping other frames.
    fn await_answers(&mut self, ids: &[u64], deadline: Instant) -> Result<Vec<Answer>, String> {
        let mut answers: Vec<Answer> = Vec::new();
        let mut open: Vec<Answer> = Vec::new();
        while answers.len() < ids.len() {
            let what = format!("answer to request(s) {ids:?}");
            let f = match self.next_frame(deadline, &what) {
                Ok(Some(f)) => f,
                Ok(None) => return self.fail(format!("worker closed its reply pipe while waiting for {what}")),
                Err(e) => return self.fail(e),
            };
            if !ids.contains(&f.request_id) {
                continue;
            }
            match f.kind {
                FrameType::Response => {
                    let m: ResponseMeta = f.meta_json().map_err(|e| e.to_string())?;
                    answers.push(Answer { id: f.request_id, status: m.status, body: f.body, streamed_chunks: None });
                }
                FrameType::StreamStart => {
                    let m: ResponseMeta = f.meta_json().map_err(|e| e.to_string())?;
                    open.push(Answer {
                        id: f.request_id,
                        status: m.status,
                        body: Vec::new(),
                        streamed_chunks: Some(0),
                    });
                }
                FrameType::StreamChunk | FrameType::StreamEnd => {
                    let Some(pos) = open.iter().position(|a| a.id == f.request_id) else { continue };
                    if f.kind == FrameType::StreamChunk {
                        open[pos].body.extend_from_slice(&f.body);
                        open[pos].streamed_chunks = open[pos].streamed_chunks.map(|n| n + 1);
                    } else {
                        answers.push(open.remove(pos));
                    }
                }
                _ => {}
            }
        }
        Ok(answers)
    }

    fn handshake(&mut self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut wire = Vec::new();
        encode_json(&mut wire, FrameType::Config, 0, &Kit::config_meta(), b"")
            .map_err(|e| format!("cannot encode CONFIG: {e}"))?;
        if let Err(e) = self.write_all(&wire, deadline) {
            return self.fail(e);
        }
        // LOG may come first (a worker explains its setup); any other frame before HELLO
        // is a violation that `next_frame` reports.
        let hello = loop {
            match self.next_frame(deadline, "HELLO") {
                Ok(Some(f)) if f.kind == FrameType::Hello => match f.meta_json::<HelloMeta>() {
                    Ok(m) => {
                        self.websocket = m.websocket;
                        break m;
                    }
                    Err(e) => return self.fail(e.to_string()),
                },
                Ok(Some(_)) => continue,
                Ok(None) => {
                    let status = self.wait_exit(Instant::now() + Duration::from_millis(500));
                    return self
                        .fail(format!("worker closed its reply pipe before HELLO ({})", describe_status(status)));
                }
                Err(e) => return self.fail(e),
            }
        };
        let mut note = if hello.pid as i32 == self.pid.as_raw() {
            String::new()
        } else {
            format!(", HELLO pid {} != child pid {}", hello.pid, self.pid)
        };
        // HELLO with 0 credits is a paused start: the request cases need a CREDIT first.
        if hello.credits == 0 {
            while self.order.credits() == 0 {
                match self.next_frame(deadline, "CREDIT after HELLO with 0 credits") {
                    Ok(Some(_)) => {}
                    Ok(None) => return self.fail("worker closed its reply pipe before any credit".into()),
                    Err(e) => return self.fail(e),
                }
            }
            note.push_str(&format!(", then CREDIT {}", self.order.credits()));
        }
        Ok(format!("credits {}{note}", hello.credits))
    }

    /// Send one request, expect one answer with a valid status.
    fn one_request(&mut self, method: &str, path: &str, body: &[u8], t: Duration) -> Result<Answer, String> {
        let deadline = Instant::now() + t;
        let (id, wire) = self.request_frame(method, path, body)?;
        if let Err(e) = self.write_all(&wire, deadline) {
            return self.fail(e);
        }
        let mut answers = self.await_answers(&[id], deadline)?;
        answers.pop().ok_or_else(|| "no answer".to_string())
    }

    /// A worker that says HELLO `websocket`: `WS_OPEN` is accepted or refused (both
    /// valid); an accepted socket takes a message and acknowledges `WS_CLOSE` with
    /// `WS_CLOSE_OUT`, which frees its credit. Every frame goes through `FrameOrder`.
    fn case_websocket(&mut self, t: Duration) -> Result<String, String> {
        if !self.websocket {
            return Ok("skipped: HELLO did not say websocket".into());
        }
        let deadline = Instant::now() + t;
        let id = self.next_id;
        self.next_id += 1;
        let meta = crate::ipc::WsOpenMeta {
            request: Kit::request_meta("GET", "/conformance/ws", None, id),
            subprotocols: vec!["conformance".into()],
        };
        let mut wire = Vec::new();
        encode_json(&mut wire, FrameType::WsOpen, id, &meta, b"").map_err(|e| e.to_string())?;
        self.order.give_socket(id);
        if let Err(e) = self.write_all(&wire, deadline) {
            return self.fail(e);
        }
        let accepted = loop {
            let f = match self.next_frame(deadline, "WS_ACCEPT, WS_CLOSE_OUT or RESPONSE") {
                Ok(Some(f)) => f,
                Ok(None) => return self.fail("worker closed its reply pipe during WS_OPEN".into()),
                Err(e) => return self.fail(e),
            };
            match (f.kind, f.request_id == id) {
                (FrameType::WsAccept, true) => break true,
                (FrameType::WsCloseOut | FrameType::Response, true) => break false,
                _ => {}
            }
        };
        if !accepted {
            return Ok("refused".into());
        }
        let mut wire = Vec::new();
        let close = crate::ipc::WsCloseMeta { code: 1000, reason: String::new() };
        encode_json(&mut wire, FrameType::WsMessage, id, &crate::ipc::WsMessageMeta { text: true }, b"conformance")
            .map_err(|e| e.to_string())?;
        encode_json(&mut wire, FrameType::WsClose, id, &close, b"").map_err(|e| e.to_string())?;
        if let Err(e) = self.write_all(&wire, deadline) {
            return self.fail(e);
        }
        // Frames the worker sends after WS_CLOSE are late, not violations.
        self.order.abandon(id);
        let mut messages = 0;
        loop {
            let f = match self.next_frame(deadline, "WS_CLOSE_OUT acknowledging WS_CLOSE") {
                Ok(Some(f)) => f,
                Ok(None) => return self.fail("worker closed its reply pipe before acknowledging WS_CLOSE".into()),
                Err(e) => return self.fail(e),
            };
            match (f.kind, f.request_id == id) {
                (FrameType::WsMessageOut, true) => messages += 1,
                (FrameType::WsCloseOut, true) => break,
                _ => {}
            }
        }
        Ok(format!("accepted, {messages} message(s) back, close acknowledged"))
    }

    fn case_get(&mut self, t: Duration) -> Result<String, String> {
        let a = self.one_request("GET", "/conformance/get", b"", t)?;
        Ok(format!("status {}", a.status))
    }

    fn case_post_bytes(&mut self, t: Duration) -> Result<String, String> {
        let body: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
        let a = self.one_request("POST", "/conformance/post", &body, t)?;
        Ok(format!("status {}, {} byte body", a.status, a.body.len()))
    }

    fn case_heartbeat(&mut self) -> Result<String, String> {
        // Skip (but validate) frames already sent while busy, so only a heartbeat sent
        // while idle counts.
        let _ = self.pump(None, Instant::now() + Duration::from_millis(1));
        loop {
            match self.decoder.next_frame() {
                Ok(Some(f)) => {
                    if let Err(e) = self.validate(&f) {
                        return self.fail(e);
                    }
                }
                Ok(None) => break,
                Err(e) => return self.fail(format!("invalid frame from worker: {e}")),
            }
        }
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(3.0 * HEARTBEAT_INTERVAL);
        loop {
            match self.next_frame(deadline, "HEARTBEAT") {
                Ok(Some(f)) if f.kind == FrameType::Heartbeat => {
                    let m: HeartbeatMeta = f.meta_json().map_err(|e| e.to_string())?;
                    if !m.in_hand.is_empty() {
                        return Err(format!("idle heartbeat has in_hand {:?}", m.in_hand));
                    }
                    return Ok(format!("after {} ms", start.elapsed().as_millis()));
                }
                Ok(Some(_)) => continue,
                Ok(None) => return self.fail("worker closed its reply pipe".into()),
                // A missed heartbeat does not make the worker unusable for other cases.
                Err(e) => return Err(e),
            }
        }
    }

    fn case_back_to_back(&mut self, t: Duration) -> Result<String, String> {
        let deadline = Instant::now() + t;
        let (a, mut wire) = self.request_frame("GET", "/conformance/one", b"")?;
        let (b, wire2) = self.request_frame("POST", "/conformance/two", b"second")?;
        wire.extend_from_slice(&wire2);
        if let Err(e) = self.write_all(&wire, deadline) {
            return self.fail(e);
        }
        let answers = self.await_answers(&[a, b], deadline)?;
        Ok(format!("answered in order {:?}", answers.iter().map(|x| x.id).collect::<Vec<_>>()))
    }

    fn case_disconnect_unknown(&mut self, t: Duration) -> Result<String, String> {
        let mut wire = Vec::new();
        encode_empty(&mut wire, FrameType::Disconnect, 999_999_999);
        if let Err(e) = self.write_all(&wire, Instant::now() + t) {
            return self.fail(e);
        }
        let a = self.one_request("GET", "/conformance/after-disconnect", b"", t)?;
        Ok(format!("then status {}", a.status))
    }

    fn case_large(&mut self, t: Duration) -> Result<String, String> {
        let body: Vec<u8> = (0..LARGE_BODY).map(|i| b'a' + (i % 26) as u8).collect();
        let a = self.one_request("POST", "/conformance/large", &body, t)?;
        Ok(format!("status {}", a.status))
    }

    fn case_split(&mut self, t: Duration) -> Result<String, String> {
        let deadline = Instant::now() + t;
        let body: Vec<u8> = (0..=255u8).rev().collect();
        let (id, wire) = self.request_frame("POST", "/conformance/split", &body)?;
        // Cut inside the header, inside the meta and twice inside the body.
        let cuts = [0, 7, 30, wire.len() - 200, wire.len() - 50, wire.len()];
        for w in cuts.windows(2) {
            if let Err(e) = self.write_all(&wire[w[0]..w[1]], deadline) {
                return self.fail(e);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let a = self.await_answers(&[id], deadline)?;
        Ok(format!("status {}", a[0].status))
    }

    fn case_stream(&mut self, path: &str, t: Duration) -> Result<String, String> {
        let a = self.one_request("GET", path, b"", t)?;
        match a.streamed_chunks {
            Some(n) => Ok(format!("status {}, {n} chunks, {} bytes", a.status, a.body.len())),
            None => Err(format!("answered with a plain RESPONSE (status {}), not a stream", a.status)),
        }
    }

    fn case_stop(&mut self, t: Duration) -> Result<String, String> {
        let mut wire = Vec::new();
        encode_empty(&mut wire, FrameType::Stop, 0);
        let deadline = Instant::now() + t;
        if let Err(e) = self.write_all(&wire, deadline) {
            return self.fail(e);
        }
        self.expect_exit(deadline, true)
    }

    fn case_eof(&mut self, t: Duration) -> Result<String, String> {
        self.request_tx = None; // closes the request pipe
        self.expect_exit(Instant::now() + t, true)
    }

    fn case_malformed(&mut self, t: Duration) -> Result<String, String> {
        let deadline = Instant::now() + t;
        let mut bad = Vec::new();
        encode_json(&mut bad, FrameType::Request, 1, &Kit::request_meta("GET", "/bad", None, 1), b"")
            .map_err(|e| format!("cannot encode REQUEST: {e}"))?;
        bad[0] = b'X';
        bad[1] = b'Y';
        if let Err(e) = self.write_all(&bad, deadline) {
            return Err(format!("could not send the malformed frame: {e}"));
        }
        // Any frame it still sends must be valid and must not answer the garbage.
        loop {
            match self.next_frame(deadline, "the worker to exit or close its reply pipe") {
                Ok(Some(f)) if f.kind == FrameType::Response || f.kind == FrameType::StreamStart => {
                    return Err(format!("answered the malformed frame with {}", f.kind.name()));
                }
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    // Exited without closing? (a grandchild may hold the pipe open)
                    return match self.try_wait() {
                        Some(s) if !matches!(s, WaitStatus::Exited(_, 0)) => Ok(describe_status(Some(s))),
                        _ => Err(e),
                    };
                }
            }
        }
        let status = self.wait_exit(Instant::now() + t);
        match status {
            Some(WaitStatus::Exited(_, 0)) => Ok("closed its reply pipe, exit status 0 (non-zero preferred)".into()),
            other => Ok(format!("closed its reply pipe, {}", describe_status(other))),
        }
    }

    /// The worker must close its reply pipe and exit 0 by `deadline`.
    fn expect_exit(&mut self, deadline: Instant, want_zero: bool) -> Result<String, String> {
        loop {
            match self.next_frame(deadline, "the worker to exit") {
                Ok(Some(f)) if matches!(f.kind, FrameType::Response | FrameType::StreamStart) => {
                    return Err(format!("unexpected {} while stopping", f.kind.name()));
                }
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    if self.try_wait().is_some() {
                        break;
                    }
                    return Err(e);
                }
            }
        }
        let status = self.wait_exit(deadline);
        match status {
            Some(WaitStatus::Exited(_, 0)) => Ok(String::new()),
            Some(s) if !want_zero => Ok(describe_status(Some(s))),
            other => Err(format!("expected exit status 0, got {}", describe_status(other))),
        }
    }

    fn try_wait(&mut self) -> Option<WaitStatus> {
        if self.exited.is_none() {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => {}
                Ok(s) => self.exited = Some(s),
            }
        }
        self.exited
    }

    /// Reap the child, waiting until `deadline` (draining its pipes meanwhile).
    fn wait_exit(&mut self, deadline: Instant) -> Option<WaitStatus> {
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            if self.reply_eof && self.outputs.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            } else {
                let _ = self.pump(None, (Instant::now() + Duration::from_millis(20)).min(deadline));
                while let Ok(Some(_)) = self.decoder.next_frame() {}
            }
        }
    }
}

impl Drop for Kit {
    /// Always kill and reap, even when a case failed midway.
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
        for (_, label, line) in &mut self.outputs {
            flush_output(label, line);
        }
    }
}

fn describe_status(s: Option<WaitStatus>) -> String {
    match s {
        Some(WaitStatus::Exited(_, code)) => format!("exit status {code}"),
        Some(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig:?}"),
        Some(other) => format!("{other:?}"),
        None => "still running".into(),
    }
}

/// Echo the worker's complete stdout/stderr lines to our stderr, prefixed.
fn echo_lines(label: &str, buf: &mut Vec<u8>) {
    while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=pos).collect();
        eprintln!("  worker {label}: {}", String::from_utf8_lossy(&line[..line.len() - 1]));
    }
}

fn flush_output(label: &str, buf: &mut Vec<u8>) {
    echo_lines(label, buf);
    if !buf.is_empty() {
        eprintln!("  worker {label}: {}", String::from_utf8_lossy(buf));
        buf.clear();
    }
}

fn raw_write(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: valid slice; fd owned by the Kit.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

fn raw_read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: valid writable buffer; fd owned by the Kit.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Forking tests run one at a time (nix's FORK_MTX pattern).
    static FORK_MTX: Mutex<()> = Mutex::new(());

    #[test]
    fn native_echo_passes_every_case() {
        let _guard = FORK_MTX.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let report = run_cases(&Options::new(Program::Native { name: "echo".into() }), &mut out);
        let text = String::from_utf8_lossy(&out);
        println!("{text}");
        assert_eq!(report.failed(), 0, "{text}");
        assert_eq!(report.passed(), 12, "{text}");
        assert!(text.ends_with("12 passed, 0 failed\n"), "{text}");
        assert!(text.contains("close acknowledged"), "the WebSocket case ran: {text}");
    }

    #[test]
    fn native_chaos_streams_and_bad_workers_fail() {
        let _guard = FORK_MTX.lock().unwrap_or_else(|p| p.into_inner());
        let mut opts = Options::new(Program::Native { name: "chaos".into() });
        opts.stream_path = Some("/s?stream=3".into());
        let mut out = Vec::new();
        let report = run_cases(&opts, &mut out);
        let text = String::from_utf8_lossy(&out);
        println!("{text}");
        assert_eq!((report.passed(), report.failed()), (13, 0), "{text}");
        assert!(text.contains("streamed response"), "{text}");

        // A plain RESPONSE where a stream is expected fails only that case.
        opts.stream_path = Some("/s".into());
        let report = run_cases(&opts, &mut Vec::new());
        let failed: Vec<_> = report.cases.iter().filter(|c| c.outcome.is_err()).map(|c| c.name).collect();
        assert_eq!(failed, ["streamed response"]);

        let mut opts = Options::new(Program::Native { name: "no-such-worker".into() });
        opts.startup_timeout = Duration::from_secs(2);
        let mut out = Vec::new();
        let report = run_cases(&opts, &mut out);
        println!("{}", String::from_utf8_lossy(&out));
        assert_eq!(report.passed(), 0);
    }
}
