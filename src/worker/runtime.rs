//! The native worker process's main loop over the inherited pipes (fd 3 in, fd 4 out).
//!
//! Single thread, blocking I/O, `poll(2)` with the time to the next heartbeat as the
//! timeout: no mio, so nothing in the child ever touches the dispatcher's inherited epoll.
//! Heartbeats come only from this loop, so a handler that never returns stops them.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::api::{NativeWorker, Reply, WorkerContext, WorkerError, WorkerRequest, WsAnswer, WsOpen, level, wait_fd};
use crate::ipc::{
    ConfigMeta, FlowMeta, Frame, FrameDecoder, FrameType, HelloMeta, RequestMeta, WsCloseMeta, WsMessageMeta,
    WsOpenMeta,
};

/// The request pipe's fd in a worker process.
pub const REQUEST_FD: RawFd = 3;
/// The reply pipe's fd in a worker process.
pub const REPLY_FD: RawFd = 4;

/// Largest frame body this runtime accepts from the dispatcher (the dispatcher enforces
/// the pool's `max_frame_bytes`; this only bounds what a corrupt header could allocate).
pub const MAX_BODY: u64 = 1 << 30;

/// Exit status when `setup()` fails.
pub const EXIT_SETUP_FAILED: i32 = 1;
/// Exit status on bad input from the dispatcher (bad frame, wrong first frame).
pub const EXIT_PROTOCOL: i32 = 2;
/// Exit status when the worker name is not registered.
pub const EXIT_UNKNOWN_WORKER: i32 = 3;

/// Used when CONFIG carries a heartbeat interval that is not a positive number.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// Entry point of a forked native worker: look `name` up, run it over fds 3/4, and
/// return the exit status (0 on STOP or end of the request pipe).
pub fn native_main(name: &str) -> i32 {
    install_stuck_notice();
    let Some(factory) = super::api::lookup(name) else {
        eprintln_raw(&format!("rustworkers: no native worker registered as {name:?}"));
        return EXIT_UNKNOWN_WORKER;
    };
    let worker = factory();
    run_worker(worker, REQUEST_FD, REPLY_FD)
}

/// The dispatcher sends SIGUSR2 to a worker that stopped heartbeating, before SIGKILL.
/// A native worker cannot dump a Rust stack safely from a signal handler, so it only says
/// it was seen stuck (one write(2), async-signal-safe) and keeps running until the kill.
fn install_stuck_notice() {
    extern "C" fn on_sigusr2(_: libc::c_int) {
        const MSG: &[u8] = b"native worker: SIGUSR2 received (no heartbeat: stuck in a handler?)\n";
        // SAFETY: write(2) is async-signal-safe; MSG is a static buffer.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
        }
    }
    // SAFETY: installs a handler that only calls write(2); done once at worker start,
    // before any other thread exists in this process.
    unsafe {
        libc::signal(libc::SIGUSR2, on_sigusr2 as *const () as libc::sighandler_t);
    }
}

/// Run `worker` reading frames from `request_fd` and writing to `reply_fd`.
pub fn run_worker(mut worker: Box<dyn NativeWorker>, request_fd: RawFd, reply_fd: RawFd) -> i32 {
    let mut reader = Reader { fd: request_fd, decoder: FrameDecoder::new(MAX_BODY), buf: vec![0u8; 64 * 1024] };

    // CONFIG is always the first frame; anything else is a broken dispatcher.
    let config = match reader.next_blocking() {
        Ok(Some(f)) if f.kind == FrameType::Config => match f.meta_json::<ConfigMeta>() {
            Ok(c) => c,
            Err(e) => return fatal(&format!("bad CONFIG meta: {e}")),
        },
        Ok(Some(f)) => return fatal(&format!("first frame is {} not CONFIG", f.kind.name())),
        Ok(None) => return 0,
        Err(e) => return fatal(&e.to_string()),
    };
    // Honour the dispatcher's frame limit (never below our own allocation bound).
    reader.decoder.set_max_frame(config.max_frame_bytes.max(MAX_BODY));
    let mut ctx = WorkerContext::for_fd(config, reply_fd);

    if let Err(msg) = worker.setup(&mut ctx) {
        let msg = format!("worker setup failed: {msg}");
        eprintln_raw(&msg);
        ctx.log(level::CRITICAL, &msg);
        return EXIT_SETUP_FAILED;
    }
    // WebSockets only from a dispatcher that speaks protocol 2.
    let websocket = worker.websocket() && ctx.config().protocol >= 2;
    let hello = HelloMeta { pid: std::process::id(), credits: ctx.credits(), websocket, prefetch: PREFETCH };
    ctx.send_frame(FrameType::Hello, 0, &hello, b"");
    ctx.hello_sent = true;
    ctx.last_heartbeat = Instant::now();

    let mut stopping = false;
    // Requests in hand but not started (HELLO `prefetch`: up to PREFETCH beyond the
    // credits): they start in the order given, one per turn, while fewer than `credits`
    // started ones are unanswered.
    let mut queued: VecDeque<Frame> = VecDeque::new();
    loop {
        if let Some(err) = ctx.broken.take() {
            // The dispatcher closed our reply pipe: it is gone or killing us.
            eprintln_raw(&err.to_string());
            return 0;
        }
        if stopping && ctx.in_hand().next().is_none() {
            worker.teardown(&mut ctx);
            return 0;
        }

        let interval = heartbeat_interval(ctx.config());
        let since = ctx.last_heartbeat.elapsed();
        if since >= interval {
            ctx.send_heartbeat(Vec::new());
            worker.on_tick(&mut ctx);
            continue;
        }
        // A queued request that may start: look for new frames (a DISCONNECT for it) without
        // waiting, then start it.
        let startable = may_start(&ctx, &queued);
        let timeout_ms =
            if startable { 0 } else { (interval - since).as_millis().clamp(1, i32::MAX as u128) as libc::c_int };

        // Frames may already be buffered (read together with CONFIG): handle them first.
        let mut frames = match reader.buffered_frames() {
            Ok(frames) => frames,
            Err(e) => return fatal(&e.to_string()),
        };
        if frames.is_empty() {
            if wait_fd(reader.fd, libc::POLLIN, timeout_ms) == 0 {
                if !startable {
                    continue;
                }
            } else {
                match reader.read_once() {
                    Ok(0) => {
                        worker.teardown(&mut ctx);
                        return 0;
                    }
                    Ok(_) => {}
                    Err(e) => return fatal(&e.to_string()),
                }
                frames = match reader.buffered_frames() {
                    Ok(frames) => frames,
                    Err(e) => return fatal(&e.to_string()),
                };
            }
        }
        for frame in frames {
            match frame.kind {
                FrameType::Request => {
                    // Started after this batch: a DISCONNECT for it in the same batch
                    // (it expired while we were busy) drops it unstarted.
                    ctx.accept_request(frame.request_id);
                    queued.push_back(frame);
                }
                FrameType::WsOpen => {
                    let meta = match frame.meta_json::<WsOpenMeta>() {
                        Ok(m) => m,
                        Err(e) => return fatal(&format!("bad WS_OPEN meta: {e}")),
                    };
                    let id = frame.request_id;
                    ctx.accept_request(id);
                    let open = WsOpen { id, meta: meta.request, subprotocols: meta.subprotocols };
                    match worker.on_ws_open(open, &mut ctx) {
                        WsAnswer::Accept { subprotocol } => {
                            ctx.ws_accept(id, subprotocol);
                        }
                        WsAnswer::Refuse => {
                            ctx.ws_close(id, 1000, "refused");
                        }
                    }
                }
                FrameType::WsMessage => match frame.meta_json::<WsMessageMeta>() {
                    Ok(m) if ctx.is_socket(frame.request_id) => {
                        worker.on_ws_message(frame.request_id, m.text, frame.body, &mut ctx)
                    }
                    Ok(_) => {} // closed here already
                    Err(e) => return fatal(&format!("bad WS_MESSAGE meta: {e}")),
                },
                FrameType::WsClose => match frame.meta_json::<WsCloseMeta>() {
                    Ok(m) => {
                        let id = frame.request_id;
                        if ctx.is_in_hand(id) {
                            // Acknowledge: the socket's credit is free again.
                            ctx.ws_close(id, m.code, "");
                            worker.on_ws_close(id, m.code, &mut ctx);
                        }
                    }
                    Err(e) => return fatal(&format!("bad WS_CLOSE meta: {e}")),
                },
                FrameType::Stop => stopping = true,
                FrameType::Disconnect => {
                    ctx.forget(frame.request_id);
                    let before = queued.len();
                    queued.retain(|f| f.request_id != frame.request_id);
                    if queued.len() == before {
                        worker.on_disconnect(frame.request_id, &mut ctx);
                    }
                }
                FrameType::Config => match frame.meta_json::<ConfigMeta>() {
                    Ok(c) => {
                        ctx.set_config(c);
                        worker.on_config(&mut ctx);
                    }
                    Err(e) => return fatal(&format!("bad CONFIG meta: {e}")),
                },
                FrameType::Flow => match frame.meta_json::<FlowMeta>() {
                    Ok(f) => ctx.set_paused(frame.request_id, f.paused),
                    Err(e) => return fatal(&format!("bad FLOW meta: {e}")),
                },
                other => return fatal(&format!("unexpected {} frame from dispatcher", other.name())),
            }
        }
        // One queued request per turn, so frames about the next ones are read first.
        if may_start(&ctx, &queued)
            && let Some(frame) = queued.pop_front()
            && let Err(code) = serve_request(worker.as_mut(), &mut ctx, frame)
        {
            return code;
        }
        worker.on_tick(&mut ctx);
    }
}

/// Whether the next queued request may start: fewer than `credits` started ones (in hand
/// and not queued) are unanswered.
fn may_start(ctx: &WorkerContext, queued: &VecDeque<Frame>) -> bool {
    !queued.is_empty() && ctx.in_hand().count() - queued.len() < ctx.credits() as usize
}

/// HELLO `prefetch` of native workers: requests queued here beyond the credits.
const PREFETCH: u32 = 16;

/// Start one REQUEST: the worker's handler, and its answer if it gave one now.
/// `Err(exit status)` for a REQUEST the dispatcher should never have sent.
fn serve_request(worker: &mut dyn NativeWorker, ctx: &mut WorkerContext, frame: Frame) -> Result<(), i32> {
    let meta = match frame.meta_json::<RequestMeta>() {
        Ok(m) => m,
        Err(e) => return Err(fatal(&format!("bad REQUEST meta: {e}"))),
    };
    let id = frame.request_id;
    ctx.accept_request(id);
    let req = WorkerRequest { id, meta, body: frame.body };
    if let Reply::Response { status, headers, body } = worker.handle(req, ctx) {
        ctx.send_response(id, status, headers, &body);
    }
    Ok(())
}

fn heartbeat_interval(config: &ConfigMeta) -> Duration {
    let s = config.heartbeat_interval;
    if s.is_finite() && s > 0.0 { Duration::from_secs_f64(s.min(86_400.0)) } else { DEFAULT_HEARTBEAT }
}

/// Bad input from the dispatcher is fatal: say why on stderr and exit non-zero.
fn fatal(why: &str) -> i32 {
    eprintln_raw(&format!("rustworkers worker: fatal: {why}"));
    EXIT_PROTOCOL
}

/// One line to stderr with a raw write: no std stdout/stderr lock, which another
/// thread of the parent may have held at fork time.
pub(crate) fn eprintln_raw(msg: &str) {
    let mut line = msg.as_bytes().to_vec();
    line.push(b'\n');
    let _ = super::api::write_all_fd(2, &line);
}

struct Reader {
    fd: RawFd,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl Reader {
    /// Block until one whole frame arrived. `Ok(None)` on end of file.
    fn next_blocking(&mut self) -> Result<Option<Frame>, WorkerError> {
        loop {
            if let Some(f) = self.decoder.next_frame().map_err(|e| WorkerError::Protocol { what: e.to_string() })? {
                return Ok(Some(f));
            }
            if self.read_once()? == 0 {
                return Ok(None);
            }
        }
    }

    /// Every complete frame already in the decoder.
    fn buffered_frames(&mut self) -> Result<Vec<Frame>, WorkerError> {
        let mut frames = Vec::new();
        while let Some(f) = self.decoder.next_frame().map_err(|e| WorkerError::Protocol { what: e.to_string() })? {
            frames.push(f);
        }
        Ok(frames)
    }

    fn read_once(&mut self) -> Result<usize, WorkerError> {
        loop {
            // SAFETY: buf is a valid writable buffer of its length.
            let n = unsafe { libc::read(self.fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if n >= 0 {
                let n = n as usize;
                self.decoder.push(&self.buf[..n]);
                return Ok(n);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    wait_fd(self.fd, libc::POLLIN, -1);
                    continue;
                }
                _ => return Err(WorkerError::RequestPipe { fd: self.fd, error: err }),
            }
        }
    }
}
