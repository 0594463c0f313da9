//! Native Rust workers: the [`NativeWorker`] trait and its [`WorkerContext`], the global
//! registry of named workers, the worker process's main loop ([`native_main`]) and the
//! built-in `echo` and `chaos` workers.
//!
//! A native worker is forked without exec: the spawner dup2s the request pipe to fd 3 and
//! the reply pipe to fd 4, then calls [`native_main`] with the pool's worker name and
//! `_exit`s with its return value. See `docs/native-workers.md`.

mod api;
pub mod chaos;
pub mod echo;
mod runtime;

pub use api::{NativeWorker, Reply, WorkerContext, WorkerError, WorkerRequest, is_registered, level, register_native};
pub use runtime::{
    EXIT_PROTOCOL, EXIT_SETUP_FAILED, EXIT_UNKNOWN_WORKER, REPLY_FD, REQUEST_FD, native_main, run_worker,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{
        ConfigMeta, Frame, FrameDecoder, FrameType, HeartbeatMeta, HelloMeta, LogMeta, RequestMeta, ResponseMeta,
        encode_frame, encode_json,
    };
    use std::os::fd::RawFd;
    use std::time::{Duration, Instant};

    fn config(heartbeat: f64) -> ConfigMeta {
        ConfigMeta {
            protocol: 1,
            pool: "t".into(),
            worker_id: 2,
            heartbeat_interval: heartbeat,
            timeout: 30.0,
            log_level: "warning".into(),
            kwargs: serde_json::Map::new(),
            max_frame_bytes: crate::ipc::LEGACY_MAX_FRAME_BYTES,
        }
    }

    fn request(method: &str, path: &str, query: Option<&str>) -> RequestMeta {
        RequestMeta {
            method: method.into(),
            path: path.into(),
            query: query.map(str::to_string),
            headers: vec![("host".into(), "x".into()), ("a".into(), "1".into()), ("a".into(), "2".into())],
            remote_addr: "127.0.0.1".into(),
            remote_port: 4000,
            http_version: "1.1".into(),
            x_request_id: "rid-1".into(),
            forwarded: false,
            context: serde_json::Value::Null,
        }
    }

    #[test]
    fn echo_describes_the_request() {
        let mut ctx = WorkerContext::in_memory(config(1.0));
        let req = WorkerRequest { id: 9, meta: request("POST", "/e/x", Some("q=1")), body: b"hi\xff".to_vec() };
        let Reply::Response { status, headers, body } = echo::Echo.handle(req, &mut ctx) else { panic!("deferred") };
        assert_eq!(status, 200);
        assert_eq!(headers, vec![("content-type".to_string(), "application/json".to_string())]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/e/x");
        assert_eq!(v["query"], "q=1");
        assert_eq!(v["headers"], serde_json::json!([["host", "x"], ["a", "1"], ["a", "2"]]));
        assert_eq!(v["body"], "hi\u{fffd}");
        assert_eq!(v["body_len"], 3);
        assert_eq!(v["worker_id"], 2);
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["x_request_id"], "rid-1");
        assert_eq!(v["remote_addr"], "127.0.0.1");
        assert!(ctx.take_output().is_empty(), "echo sends nothing itself");
    }

    #[test]
    fn context_drops_answers_for_requests_not_in_hand() {
        let mut ctx = WorkerContext::in_memory(config(1.0));
        assert!(!ctx.send_response(5, 200, vec![], b"x"));
        ctx.accept_request(5);
        assert!(ctx.send_response(5, 200, vec![], b"x"));
        assert!(!ctx.send_response(5, 200, vec![], b"x"), "second answer dropped");
        ctx.accept_request(6);
        assert!(!ctx.stream_chunk(6, b"a"), "chunk before start dropped");
        assert!(ctx.stream_start(6, 200, vec![]));
        assert!(!ctx.send_response(6, 200, vec![], b""), "no RESPONSE after STREAM_START");
        assert!(ctx.stream_chunk(6, b"a") && ctx.stream_end(6));
        let mut d = FrameDecoder::new(1 << 20);
        d.push(&ctx.take_output());
        let kinds: Vec<FrameType> = std::iter::from_fn(|| d.next_frame().unwrap()).map(|f| f.kind).collect();
        assert_eq!(kinds, [FrameType::Response, FrameType::StreamStart, FrameType::StreamChunk, FrameType::StreamEnd]);
        assert_eq!(ctx.in_hand().count(), 0);
    }

    #[test]
    fn registry_has_builtins_and_custom_workers() {
        struct Nop;
        impl NativeWorker for Nop {
            fn handle(&mut self, _req: WorkerRequest, _ctx: &mut WorkerContext) -> Reply {
                Reply::Deferred
            }
        }
        assert!(is_registered("echo") && is_registered("chaos"));
        assert!(!is_registered("nop-test"));
        register_native("nop-test", || Box::new(Nop));
        assert!(is_registered("nop-test"));
    }

    /// A worker loop on a thread over two real pipes: the dispatcher's view of it.
    struct Harness {
        to_worker: RawFd,
        from_worker: RawFd,
        decoder: FrameDecoder,
        thread: Option<std::thread::JoinHandle<i32>>,
    }

    impl Harness {
        fn start(worker: Box<dyn NativeWorker + Send>) -> Harness {
            let (mut req, mut rep) = ([0; 2], [0; 2]);
            // SAFETY: two valid 2-int arrays.
            unsafe {
                assert_eq!(libc::pipe2(req.as_mut_ptr(), libc::O_CLOEXEC), 0);
                assert_eq!(libc::pipe2(rep.as_mut_ptr(), libc::O_CLOEXEC), 0);
            }
            let (rfd, wfd) = (req[0], rep[1]);
            let thread = std::thread::spawn(move || {
                let code = run_worker(worker, rfd, wfd);
                // SAFETY: the worker's ends, owned by this thread.
                unsafe {
                    libc::close(rfd);
                    libc::close(wfd);
                }
                code
            });
            Harness {
                to_worker: req[1],
                from_worker: rep[0],
                decoder: FrameDecoder::new(1 << 26),
                thread: Some(thread),
            }
        }

        fn send(&self, bytes: &[u8]) {
            api::write_all_fd(self.to_worker, bytes).unwrap();
        }

        fn send_json<T: serde::Serialize>(&self, kind: FrameType, id: u64, meta: &T, body: &[u8]) {
            let mut b = Vec::new();
            encode_json(&mut b, kind, id, meta, body).unwrap();
            self.send(&b);
        }

        fn recv(&mut self) -> Frame {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Some(f) = self.decoder.next_frame().unwrap() {
                    return f;
                }
                assert!(Instant::now() < deadline, "no frame from worker");
                assert_ne!(api::wait_fd(self.from_worker, libc::POLLIN, 100), 0, "worker silent");
                let mut buf = [0u8; 65536];
                // SAFETY: valid buffer.
                let n = unsafe { libc::read(self.from_worker, buf.as_mut_ptr().cast(), buf.len()) };
                assert!(n > 0, "worker closed its reply pipe");
                self.decoder.push(&buf[..n as usize]);
            }
        }

        /// Next frame that is not a heartbeat.
        fn recv_skip_heartbeats(&mut self) -> Frame {
            loop {
                let f = self.recv();
                if f.kind != FrameType::Heartbeat {
                    return f;
                }
            }
        }

        fn finish(mut self) -> i32 {
            self.thread.take().unwrap().join().unwrap()
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            // SAFETY: our ends; closing fd 'to_worker' makes the loop see EOF and return.
            unsafe {
                libc::close(self.to_worker);
                libc::close(self.from_worker);
            }
        }
    }

    #[test]
    fn runtime_speaks_the_protocol() {
        let mut h = Harness::start(Box::new(echo::Echo));
        h.send_json(FrameType::Config, 0, &config(0.05), b"");
        let hello = h.recv();
        assert_eq!(hello.kind, FrameType::Hello);
        let hello: HelloMeta = hello.meta_json().unwrap();
        assert_eq!((hello.pid, hello.credits), (std::process::id(), 1));

        // A request split across writes, body with every byte value.
        let body: Vec<u8> = (0..=255u8).collect();
        let mut wire = Vec::new();
        encode_json(&mut wire, FrameType::Request, 41, &request("POST", "/p", None), &body).unwrap();
        for part in wire.chunks(7) {
            h.send(part);
        }
        let resp = h.recv_skip_heartbeats();
        assert_eq!((resp.kind, resp.request_id), (FrameType::Response, 41));
        assert_eq!(resp.meta_json::<ResponseMeta>().unwrap().status, 200);
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(v["body_len"], 256);

        // Idle heartbeats with nothing in hand.
        let hb = h.recv();
        assert_eq!(hb.kind, FrameType::Heartbeat);
        assert!(hb.meta_json::<HeartbeatMeta>().unwrap().in_hand.is_empty());

        let mut empty = Vec::new();
        encode_frame(&mut empty, FrameType::Disconnect, 777, b"", b"").unwrap();
        h.send(&empty);
        h.send_json(FrameType::Stop, 0, &serde_json::json!({}), b"");
        assert_eq!(h.finish(), 0);
    }

    #[test]
    fn chaos_heartbeats_answers_from_the_tick_hook() {
        let mut h = Harness::start(Box::new(chaos::Chaos::default()));
        h.send_json(FrameType::Config, 0, &config(0.02), b"");
        assert_eq!(h.recv().kind, FrameType::Hello);
        h.send_json(FrameType::Request, 3, &request("GET", "/c", Some("heartbeats=3")), b"");
        let mut beats_in_hand = 0;
        loop {
            let f = h.recv();
            if f.kind == FrameType::Heartbeat {
                if f.meta_json::<HeartbeatMeta>().unwrap().in_hand == [3] {
                    beats_in_hand += 1;
                }
                continue;
            }
            assert_eq!((f.kind, f.request_id), (FrameType::Response, 3));
            break;
        }
        assert!(beats_in_hand >= 2, "answered after heartbeats, saw {beats_in_hand}");

        // keepalive sends heartbeats with extend while the handler runs.
        h.send_json(FrameType::Request, 4, &request("GET", "/c", Some("keepalive=120")), b"");
        let mut extended = false;
        loop {
            let f = h.recv();
            if f.kind == FrameType::Heartbeat {
                extended |= f.meta_json::<HeartbeatMeta>().unwrap().extend == [4];
                continue;
            }
            assert_eq!((f.kind, f.request_id), (FrameType::Response, 4));
            break;
        }
        assert!(extended);

        h.send_json(FrameType::Request, 5, &request("GET", "/c", Some("stream=3")), b"");
        let kinds: Vec<(FrameType, Vec<u8>)> =
            (0..5).map(|_| h.recv_skip_heartbeats()).map(|f| (f.kind, f.body)).collect();
        assert_eq!(kinds[0].0, FrameType::StreamStart);
        assert_eq!(kinds[1], (FrameType::StreamChunk, b"chunk 0\n".to_vec()));
        assert_eq!(kinds[3], (FrameType::StreamChunk, b"chunk 2\n".to_vec()));
        assert_eq!(kinds[4].0, FrameType::StreamEnd);
        // EOF on the request pipe: clean exit.
        drop_writer(&mut h);
        assert_eq!(h.finish(), 0);
    }

    fn drop_writer(h: &mut Harness) {
        // SAFETY: our write end; replaced by a fresh fd so Drop's close stays harmless.
        unsafe {
            libc::close(h.to_worker);
            h.to_worker = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        }
    }

    #[test]
    fn bad_input_and_setup_failure_are_fatal() {
        let h = Harness::start(Box::new(echo::Echo));
        h.send_json(FrameType::Config, 0, &config(1.0), b"");
        h.send(b"XX\x01\x02garbage-garbage-garbage");
        assert_eq!(h.finish(), EXIT_PROTOCOL);

        struct Failing;
        impl NativeWorker for Failing {
            fn setup(&mut self, _ctx: &mut WorkerContext) -> Result<(), String> {
                Err("no database".into())
            }
            fn handle(&mut self, _req: WorkerRequest, _ctx: &mut WorkerContext) -> Reply {
                Reply::Deferred
            }
        }
        let mut h = Harness::start(Box::new(Failing));
        h.send_json(FrameType::Config, 0, &config(1.0), b"");
        let log = h.recv();
        assert_eq!(log.kind, FrameType::Log);
        let log: LogMeta = log.meta_json().unwrap();
        assert_eq!(log.level, level::CRITICAL);
        assert!(log.msg.contains("no database"));
        assert_eq!(h.finish(), EXIT_SETUP_FAILED);
    }
}
