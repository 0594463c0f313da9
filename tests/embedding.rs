//! The library API, in process: a program registers a native worker, a custom sync
//! handler and an auth check, then runs the dispatcher. This is its own test binary (one
//! test) because the dispatcher installs signal handlers and reaps with waitpid(-1), which
//! must not meet other tests' children.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rustworkers::auth::AuthDecision;
use rustworkers::sync_handlers::SyncResponse;
use rustworkers::worker::{NativeWorker, Reply, WorkerContext, WorkerRequest, register_native};
use rustworkers::{Config, Extensions};

struct Greeter;

impl NativeWorker for Greeter {
    fn handle(&mut self, req: WorkerRequest, _ctx: &mut WorkerContext) -> Reply {
        Reply::json(200, &serde_json::json!({"path": req.meta.path, "context": req.meta.context}))
    }
}

fn exchange(sock: &std::path::Path, raw: &str) -> String {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn embedded_server_with_native_worker_custom_sync_handler_and_auth_check() {
    let dir = std::env::temp_dir().join(format!("rw-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("rw.sock");
    let text = format!(
        r#"
[server]
bind = ["unix:{}"]
shutdown_timeout = 2
access_log = "off"
[[sync]]
path = "/version"
kind = "custom"
name = "version"
[[pool]]
name = "greet"
routes = ["/greet/**"]
native = "greeter"
num_workers = 1
"#,
        sock.display()
    );
    register_native("greeter", || Box::new(Greeter));
    let config = Config::parse(&text, "embedding test", &dir).expect("config");
    // Handlers are plain closures (not Send): the dispatcher is built on its own thread.
    let server = std::thread::spawn(move || {
        let ext = Extensions::new()
            .sync_handler("version", |_req, status| {
                SyncResponse::json(200, &serde_json::json!({"custom": true, "pools": status.pools.len()}))
            })
            .auth_check(|req| match req.header("x-tenant") {
                Some(t) => AuthDecision::Allow { context: serde_json::json!({"tenant": t}) },
                None => AuthDecision::Deny { status: 401, body: serde_json::json!({"error": "no tenant"}) },
            });
        rustworkers::run(config, ext)
    });

    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let version = exchange(&sock, "GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(version.starts_with("HTTP/1.1 200"), "{version}");
    assert!(version.contains(r#""custom":true"#) && version.contains(r#""pools":1"#), "{version}");

    let denied = exchange(&sock, "GET /greet/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(denied.starts_with("HTTP/1.1 401") && denied.contains("no tenant"), "{denied}");

    // The worker may still be starting: retry until it answers.
    let mut ok = String::new();
    while Instant::now() < deadline {
        ok = exchange(&sock, "GET /greet/a HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\nConnection: close\r\n\r\n");
        if ok.starts_with("HTTP/1.1 200") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains(r#""context":{"tenant":"acme"}"#) && ok.contains(r#""path":"/greet/a""#), "{ok}");

    // SIGTERM to this process: the dispatcher's handler drains and returns.
    // SAFETY: kill(2) on our own pid; signal-hook handles SIGTERM in this process.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    let result = server.join().expect("dispatcher thread");
    assert!(result.is_ok(), "{result:?}");
    assert!(!sock.exists(), "the unix socket file is removed at exit");
    let _ = std::fs::remove_dir_all(&dir);
}
