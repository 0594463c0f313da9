//! The built-in `chaos` worker: misbehaves on request, so the dispatcher's supervision
//! (timeouts, stuck detection, crash handling, protocol violations) can be tested.
//!
//! One action per request, chosen by the first recognised key of the query string, e.g.
//! `GET /chaos/x?sleep=200`. Without an action it answers 200 like a well-behaved worker.
//! Startup misbehaviour comes from the environment: `CHAOS_SETUP_EXIT=N` exits with `N`
//! during setup (before HELLO), `CHAOS_SETUP_FAIL=1` makes `setup()` return an error.

use std::time::{Duration, Instant};

use super::api::{NativeWorker, Reply, WorkerContext, WorkerRequest, level, write_all_fd};
use crate::ipc::{FrameType, HEADER_LEN, MAGIC, ResponseMeta, VERSION};

/// One chaos action, parsed from the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No action key: answer 200.
    Ok,
    /// Sleep this many ms, then 200.
    Sleep(u64),
    /// Busy-loop forever (no heartbeats).
    Spin,
    /// Exit the process with this status at once, no reply.
    Exit(i32),
    /// `abort()`.
    Abort,
    /// Die of SIGSEGV.
    Segv,
    /// Write 64 non-protocol bytes to the reply pipe.
    Garbage,
    /// Write a frame header declaring a body of 0xFFFF_FFF0 bytes.
    Oversized,
    /// Print a line to stdout, then 200.
    Stdout(String),
    /// Print a line to stderr, then 200.
    Stderr(String),
    /// Answer only after this many more heartbeats were sent by the loop.
    Heartbeats(u64),
    /// Work this many ms in slices, calling `keep_alive` between them, then 200.
    KeepAlive(u64),
    /// Answer with this status (not validated: invalid ones test the dispatcher).
    Status(u16),
    /// Stream this many chunks `chunk i\n`, 10 ms apart.
    Stream(u32),
    /// Send a LOG frame (level 30) with this text, then 200.
    Log(String),
    /// Send a STREAM_CHUNK without STREAM_START.
    BadOrder,
    /// Send a RESPONSE for request id `id + 1000`.
    Foreign,
    /// FORWARD the body to this route, then 200.
    Forward(String),
}

/// Why a chaos query could not be parsed (answered 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub key: String,
    pub value: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad value {:?} for chaos action {:?}", self.value, self.key)
    }
}

/// Parse the raw query string (without `?`) into the first recognised action.
pub fn parse_action(query: Option<&str>) -> Result<Action, ParseError> {
    let Some(query) = query else { return Ok(Action::Ok) };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k);
        let value = percent_decode(v);
        let bad = || ParseError { key: key.clone(), value: value.clone() };
        let num = |v: &str| v.parse::<u64>().map_err(|_| bad());
        let action = match key.as_str() {
            "sleep" => Action::Sleep(num(&value)?),
            "spin" => Action::Spin,
            "exit" => Action::Exit(value.parse::<i32>().map_err(|_| bad())?),
            "abort" => Action::Abort,
            "segv" => Action::Segv,
            "garbage" => Action::Garbage,
            "oversized" => Action::Oversized,
            "stdout" => Action::Stdout(value),
            "stderr" => Action::Stderr(value),
            "heartbeats" => Action::Heartbeats(num(&value)?),
            "keepalive" => Action::KeepAlive(num(&value)?),
            "status" => Action::Status(value.parse::<u16>().map_err(|_| bad())?),
            "stream" => Action::Stream(value.parse::<u32>().map_err(|_| bad())?),
            "log" => Action::Log(value),
            "bad_order" => Action::BadOrder,
            "foreign" => Action::Foreign,
            "forward" => Action::Forward(value),
            _ => continue,
        };
        return Ok(action);
    }
    Ok(Action::Ok)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, bad escapes kept as is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The chaos worker. Deferred `heartbeats=M` requests wait in `waiting`.
#[derive(Debug, Default)]
pub struct Chaos {
    /// (request id, heartbeat count at which to answer)
    waiting: Vec<(u64, u64)>,
}

pub(crate) fn factory() -> Box<dyn NativeWorker> {
    Box::new(Chaos::default())
}

fn ok_body(action: &str, ctx: &WorkerContext) -> Reply {
    Reply::json(200, &serde_json::json!({"chaos": action, "worker_id": ctx.worker_id(), "pid": std::process::id()}))
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and skips the parent's atexit handlers, which a
    // forked child must not run.
    unsafe { libc::_exit(code) }
}

fn print_line(fd: i32, text: &str) {
    let mut line = text.as_bytes().to_vec();
    line.push(b'\n');
    let _ = write_all_fd(fd, &line);
}

impl NativeWorker for Chaos {
    fn setup(&mut self, _ctx: &mut WorkerContext) -> Result<(), String> {
        if let Some(code) = std::env::var("CHAOS_SETUP_EXIT").ok().and_then(|v| v.parse::<i32>().ok()) {
            exit_now(code);
        }
        if std::env::var("CHAOS_SETUP_FAIL").is_ok_and(|v| v == "1") {
            return Err("CHAOS_SETUP_FAIL=1".to_string());
        }
        Ok(())
    }

    fn handle(&mut self, req: WorkerRequest, ctx: &mut WorkerContext) -> Reply {
        let id = req.id;
        let action = match parse_action(req.meta.query.as_deref()) {
            Ok(a) => a,
            Err(e) => return Reply::json(400, &serde_json::json!({"error": e.to_string()})),
        };
        match action {
            Action::Ok => ok_body("ok", ctx),
            Action::Sleep(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                ok_body("sleep", ctx)
            }
            Action::Spin => loop {
                std::hint::spin_loop();
            },
            Action::Exit(code) => exit_now(code),
            // SAFETY: abort() has no preconditions.
            Action::Abort => unsafe { libc::abort() },
            Action::Segv => {
                // SAFETY: restoring the default disposition then raising: the process dies of
                // SIGSEGV even if a handler (e.g. Rust's stack-overflow guard) was installed.
                unsafe {
                    libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                    libc::raise(libc::SIGSEGV);
                }
                exit_now(139)
            }
            Action::Garbage => {
                // Deterministic bytes that never start with the magic.
                let garbage: Vec<u8> =
                    (0..64u32).map(|i| (i.wrapping_mul(97).wrapping_add(13) % 251) as u8 | 0x80).collect();
                let _ = ctx.write_raw(&garbage);
                Reply::Deferred
            }
            Action::Oversized => {
                let mut h = Vec::with_capacity(HEADER_LEN);
                h.extend_from_slice(&MAGIC);
                h.push(VERSION);
                h.push(FrameType::Response as u8);
                h.extend_from_slice(&id.to_be_bytes());
                h.extend_from_slice(&0u32.to_be_bytes());
                h.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
                let _ = ctx.write_raw(&h);
                Reply::Deferred
            }
            Action::Stdout(text) => {
                print_line(1, &text);
                ok_body("stdout", ctx)
            }
            Action::Stderr(text) => {
                print_line(2, &text);
                ok_body("stderr", ctx)
            }
            Action::Heartbeats(m) => {
                self.waiting.push((id, ctx.heartbeats_sent() + m));
                Reply::Deferred
            }
            Action::KeepAlive(ms) => {
                let end = Instant::now() + Duration::from_millis(ms);
                let slice = Duration::from_millis(50);
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    std::thread::sleep(slice.min(end - now));
                    ctx.keep_alive(id);
                }
                ok_body("keepalive", ctx)
            }
            Action::Status(status) => Reply::json(status, &serde_json::json!({"chaos": "status", "status": status})),
            Action::Stream(n) => {
                ctx.stream_start(id, 200, vec![("content-type".to_string(), "text/plain".to_string())]);
                for i in 0..n {
                    if i > 0 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    ctx.stream_chunk(id, format!("chunk {i}\n").as_bytes());
                }
                ctx.stream_end(id);
                Reply::Deferred
            }
            Action::Log(text) => {
                ctx.log(level::WARNING, &text);
                ok_body("log", ctx)
            }
            Action::BadOrder => {
                let mut buf = Vec::new();
                if crate::ipc::encode_frame(&mut buf, FrameType::StreamChunk, id, b"", b"out of order\n").is_ok() {
                    let _ = ctx.write_raw(&buf);
                }
                Reply::Deferred
            }
            Action::Foreign => {
                ctx.send_frame(
                    FrameType::Response,
                    id + 1000,
                    &ResponseMeta { status: 200, headers: Vec::new() },
                    b"foreign",
                );
                Reply::Deferred
            }
            Action::Forward(route) => {
                ctx.forward(&route, &req.body);
                ok_body("forward", ctx)
            }
        }
    }

    fn on_disconnect(&mut self, id: u64, _ctx: &mut WorkerContext) {
        self.waiting.retain(|(w, _)| *w != id);
    }

    fn on_tick(&mut self, ctx: &mut WorkerContext) {
        let sent = ctx.heartbeats_sent();
        let (due, keep): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(|(_, at)| sent >= *at);
        self.waiting = keep;
        for (id, _) in due {
            let body =
                serde_json::json!({"chaos": "heartbeats", "heartbeats_sent": sent, "worker_id": ctx.worker_id()});
            ctx.send_response(
                id,
                200,
                vec![("content-type".to_string(), "application/json".to_string())],
                body.to_string().as_bytes(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_action() {
        let cases: &[(&str, Action)] = &[
            ("sleep=200", Action::Sleep(200)),
            ("spin=1", Action::Spin),
            ("exit=7", Action::Exit(7)),
            ("abort=1", Action::Abort),
            ("segv=1", Action::Segv),
            ("garbage=1", Action::Garbage),
            ("oversized=1", Action::Oversized),
            ("stdout=hello+world%21", Action::Stdout("hello world!".into())),
            ("stderr=oops", Action::Stderr("oops".into())),
            ("heartbeats=3", Action::Heartbeats(3)),
            ("keepalive=500", Action::KeepAlive(500)),
            ("status=503", Action::Status(503)),
            ("stream=4", Action::Stream(4)),
            ("log=a%20b", Action::Log("a b".into())),
            ("bad_order=1", Action::BadOrder),
            ("foreign=1", Action::Foreign),
            ("forward=/jobs/x", Action::Forward("/jobs/x".into())),
            ("forward=%2Fjobs", Action::Forward("/jobs".into())),
        ];
        for (q, want) in cases {
            assert_eq!(parse_action(Some(q)).as_ref(), Ok(want), "{q}");
        }
    }

    #[test]
    fn first_recognised_key_wins_and_unknown_keys_are_skipped() {
        assert_eq!(parse_action(Some("x=1&&status=201&sleep=5")), Ok(Action::Status(201)));
        assert_eq!(parse_action(Some("a=1&b")), Ok(Action::Ok));
        assert_eq!(parse_action(Some("")), Ok(Action::Ok));
        assert_eq!(parse_action(None), Ok(Action::Ok));
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(parse_action(Some("sleep=abc")).is_err());
        assert!(parse_action(Some("status=70000")).is_err());
        assert!(parse_action(Some("exit=")).is_err());
        assert_eq!(
            parse_action(Some("heartbeats=-1")),
            Err(ParseError { key: "heartbeats".into(), value: "-1".into() })
        );
    }

    fn ctx() -> WorkerContext {
        WorkerContext::in_memory(crate::ipc::ConfigMeta {
            protocol: 1,
            pool: "c".into(),
            worker_id: 0,
            heartbeat_interval: 1.0,
            timeout: 30.0,
            log_level: "info".into(),
            kwargs: serde_json::Map::new(),
            max_frame_bytes: crate::ipc::LEGACY_MAX_FRAME_BYTES,
        })
    }

    fn req(id: u64, query: &str) -> WorkerRequest {
        let meta: crate::ipc::RequestMeta = serde_json::from_value(serde_json::json!({
            "method": "POST", "path": "/chaos", "query": query, "headers": [],
            "remote_addr": "127.0.0.1", "remote_port": 1, "http_version": "1.1", "x_request_id": "r"
        }))
        .unwrap();
        WorkerRequest { id, meta, body: b"data".to_vec() }
    }

    /// Frames a handled request wrote, decoded.
    fn run(query: &str) -> (Reply, Result<Vec<crate::ipc::Frame>, crate::ipc::FrameError>) {
        let mut c = ctx();
        c.accept_request(7);
        let reply = Chaos::default().handle(req(7, query), &mut c);
        let mut d = crate::ipc::FrameDecoder::new(1 << 20);
        d.push(&c.take_output());
        let mut frames = Vec::new();
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return (reply, Ok(frames)),
                Err(e) => return (reply, Err(e)),
            }
        }
    }

    #[test]
    fn in_process_actions_send_what_they_promise() {
        let (reply, frames) = run("status=503");
        assert!(matches!(reply, Reply::Response { status: 503, .. }));
        assert!(frames.unwrap().is_empty());

        let (reply, frames) = run("log=hi");
        assert!(matches!(reply, Reply::Response { status: 200, .. }));
        let f = frames.unwrap();
        assert_eq!(f[0].kind, FrameType::Log);
        assert_eq!(f[0].meta_json::<crate::ipc::LogMeta>().unwrap().level, 30);

        let (_, frames) = run("forward=/jobs");
        let f = frames.unwrap();
        assert_eq!((f[0].kind, f[0].body.as_slice()), (FrameType::Forward, &b"data"[..]));

        let (reply, frames) = run("foreign=1");
        assert_eq!(reply, Reply::Deferred);
        assert_eq!(frames.unwrap()[0].request_id, 1007);

        let (_, frames) = run("bad_order=1");
        assert_eq!(frames.unwrap()[0].kind, FrameType::StreamChunk);

        let (_, frames) = run("garbage=1");
        assert!(matches!(frames, Err(crate::ipc::FrameError::BadMagic(_))));

        let (_, frames) = run("oversized=1");
        assert!(matches!(frames, Err(crate::ipc::FrameError::FrameTooLarge { .. })));

        let (reply, frames) = run("sleep=abc");
        assert!(matches!(reply, Reply::Response { status: 400, .. }));
        assert!(frames.unwrap().is_empty());
    }

    #[test]
    fn percent_decoding_edge_cases() {
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz1"), "%zz1");
        assert_eq!(percent_decode("a%41"), "aA");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
