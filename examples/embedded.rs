//! Embedding rustworkers as a library: a native worker, a custom sync handler and an auth
//! check, registered before the same runner the binary uses.
//!
//!     cargo run --example embedded            # then: curl -H 'x-tenant: acme' localhost:8081/hello/x

use rustworkers::auth::AuthDecision;
use rustworkers::sync_handlers::SyncResponse;
use rustworkers::worker::{NativeWorker, Reply, WorkerContext, WorkerRequest, register_native};
use rustworkers::{Config, Extensions};

/// Answers `hello <path>` with the tenant the auth check attached as context.
struct Hello;

impl NativeWorker for Hello {
    fn handle(&mut self, req: WorkerRequest, _ctx: &mut WorkerContext) -> Reply {
        Reply::json(200, &serde_json::json!({"hello": req.meta.path, "tenant": req.meta.context}))
    }
}

const CONFIG: &str = r#"
[server]
bind = ["127.0.0.1:8081"]

[[sync]]
path = "/version"
kind = "custom"
name = "version"

[[pool]]
name = "hello"
routes = ["/hello/**"]
native = "hello"
num_workers = 2
"#;

fn main() {
    rustworkers::logging::init();
    register_native("hello", || Box::new(Hello));
    let ext = Extensions::new()
        .sync_handler("version", |_req, status| {
            SyncResponse::json(200, &serde_json::json!({"version": status.version, "pools": status.pools.len()}))
        })
        // Pool requests need an `x-tenant` header; its value travels to the worker.
        .auth_check(|req| match req.header("x-tenant") {
            Some(tenant) => AuthDecision::Allow { context: serde_json::json!(tenant) },
            None => AuthDecision::Deny { status: 401, body: serde_json::json!({"error": "x-tenant required"}) },
        });
    let config = Config::parse(CONFIG, "<embedded example>", std::path::Path::new(".")).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    if let Err(e) = rustworkers::run(config, ext) {
        eprintln!("rustworkers: {e}");
        std::process::exit(1);
    }
}
