//! Defaults of every config key, and the embedded default config. Each one is documented
//! in docs/config.md; keep the two in step.

use super::AccessLog;

/// `server.bind`.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// `server.backlog`: listen(2) backlog.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// `server.max_pending`: queued requests per pool before 503.
pub const DEFAULT_MAX_PENDING: usize = 1000;
/// `server.max_connections`: open client connections before new ones wait in the backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// `server.shutdown_timeout`, seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT: f64 = 10.0;
/// `server.keepalive_timeout`, seconds.
pub const DEFAULT_KEEPALIVE_TIMEOUT: f64 = 5.0;
/// `server.header_timeout`, seconds.
pub const DEFAULT_HEADER_TIMEOUT: f64 = 10.0;
/// `server.body_timeout`, seconds.
pub const DEFAULT_BODY_TIMEOUT: f64 = 30.0;
/// `server.write_timeout`, seconds.
pub const DEFAULT_WRITE_TIMEOUT: f64 = 30.0;
/// `server.max_buffered_bytes`: 256 MiB, global budget for bodies and responses held
/// by the dispatcher.
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 256 * 1024 * 1024;
/// Lower bound of `server.max_buffered_bytes`: 1 MiB.
pub const MIN_MAX_BUFFERED_BYTES: u64 = 1024 * 1024;
/// `server.max_connection_buffer`: 4 MiB of unsent response bytes per connection.
pub const DEFAULT_MAX_CONNECTION_BUFFER: usize = 4 * 1024 * 1024;
/// Lower bound of `server.max_connection_buffer`: 64 KiB, room for a response head.
pub const MIN_MAX_CONNECTION_BUFFER: usize = 64 * 1024;
/// `server.body_min_rate`, bytes per second; 0 disables the rate check.
pub const DEFAULT_BODY_MIN_RATE: u64 = 1024;
/// `server.fast_stop_timeout`, seconds.
pub const DEFAULT_FAST_STOP_TIMEOUT: f64 = 2.0;
/// Upper bound of `server.threads`.
pub const MAX_THREADS: usize = 64;
/// `server.access_log`.
pub const DEFAULT_ACCESS_LOG: AccessLog = AccessLog::Combined;
/// `server.limits.max_request_line`, bytes.
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8192;
/// `server.limits.max_headers`, count.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// `server.limits.max_header_bytes`, bytes of the whole request head.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 65536;
/// `server.limits.max_body_bytes`: 10 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// `static.index`.
pub const DEFAULT_STATIC_INDEX: &str = "index.html";
/// `sync.status` for `static_response`.
pub const DEFAULT_STATIC_RESPONSE_STATUS: u16 = 200;
/// Content type of a `static_response` that sets none.
pub const DEFAULT_STATIC_RESPONSE_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// `sync.status` for `redirect`.
pub const DEFAULT_REDIRECT_STATUS: u16 = 302;
/// `auth.header`.
pub const DEFAULT_AUTH_HEADER: &str = "x-api-key";
/// `pool.num_workers`.
pub const DEFAULT_NUM_WORKERS: usize = 2;
/// Upper bound of `pool.num_workers`.
pub const MAX_NUM_WORKERS: usize = 1024;
/// `pool.interpreter` for python / wsgi pools.
pub const DEFAULT_INTERPRETER: &str = "python3";
/// `pool.timeout`, seconds.
pub const DEFAULT_POOL_TIMEOUT: f64 = 30.0;
/// `pool.stuck_timeout`, seconds.
pub const DEFAULT_STUCK_TIMEOUT: f64 = 60.0;
/// `pool.heartbeat_interval`, seconds.
pub const DEFAULT_HEARTBEAT_INTERVAL: f64 = 1.0;
/// `pool.max_restarts` within `restart_window`.
pub const DEFAULT_MAX_RESTARTS: u32 = 10;
/// `pool.restart_window`, seconds.
pub const DEFAULT_RESTART_WINDOW: f64 = 300.0;
/// `pool.log_level`.
pub const DEFAULT_LOG_LEVEL: &str = "warning";
/// Accepted `pool.log_level` values (Python logging names).
pub const LOG_LEVELS: [&str; 5] = ["debug", "info", "warning", "error", "critical"];
/// `pool.max_frame_bytes` floor: 64 MiB. The default is this or
/// `max_body_bytes` + [`FRAME_META_ALLOWANCE`], whichever is larger.
pub const DEFAULT_MAX_FRAME_BYTES: u64 = 64 * 1024 * 1024;
/// Lower bound of `pool.max_frame_bytes`: room for a response head.
pub const MIN_MAX_FRAME_BYTES: u64 = 1024;
/// Slack added to `max_body_bytes` for the frame limit.
pub const FRAME_META_ALLOWANCE: u64 = 64 * 1024;
/// Largest body a frame can carry: the frame header's `body_len` is a 32-bit field
/// (`ipc::frame`), so 4 GiB - 1. Bounds `max_body_bytes` and `max_frame_bytes`.
pub const MAX_FRAME_BODY: u64 = u32::MAX as u64;
/// `pool.stuck_grace`, seconds between SIGUSR2 and SIGKILL for a silent worker.
pub const DEFAULT_STUCK_GRACE: f64 = 2.0;
/// `pool.exit_grace`, seconds a closed or stopped worker gets to exit before SIGKILL.
pub const DEFAULT_EXIT_GRACE: f64 = 2.0;
/// `pool.max_output_rate`: 1 MiB/s of worker stdout+stderr.
pub const DEFAULT_MAX_OUTPUT_RATE: u64 = 1024 * 1024;
/// Lower bound of `pool.max_output_rate`: 1 KiB/s.
pub const MIN_MAX_OUTPUT_RATE: u64 = 1024;
/// `pool.readiness`.
pub const DEFAULT_READINESS: bool = true;
/// `pool.max_message_bytes`: 16 MiB, as uvicorn's `ws_max_size`.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;
/// `pool.websocket_idle_timeout`, seconds.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: f64 = 60.0;
/// `pool.prefetch`: requests a one-at-a-time worker may queue beyond its credits.
pub const DEFAULT_PREFETCH: i64 = 4;
/// Upper bound of `pool.prefetch`.
pub const MAX_PREFETCH: i64 = 64;
/// `pool.concurrency` of an ASGI pool: requests one worker serves at once.
pub const DEFAULT_ASGI_CONCURRENCY: i64 = 100;

/// The built-in configuration used when no `-c FILE` is given. It goes through the same
/// parser and validation as a file. `path = "."` is resolved against the bundled static
/// directory found by [`Config::embedded_default`]; the `[[static]]` mount is dropped when
/// no such directory exists.
pub const EMBEDDED_DEFAULT_TOML: &str = r#"# rustworkers embedded default configuration
[server]
bind = ["127.0.0.1:8080"]

[[static]]
prefix = "/"
path = "."
authoritative = false

[[sync]]
path = "/health"
kind = "health"

[[sync]]
path = "/ready"
kind = "ready"

[[sync]]
path = "/live"
kind = "live"

[[sync]]
path = "/status"
kind = "status"
"#;

/// Name used as the `source` of the embedded default.
pub const EMBEDDED_SOURCE: &str = "<embedded default>";

/// Env var that points [`Config::embedded_default`] at a static directory.
pub const STATIC_DIR_ENV: &str = "RUSTWORKERS_STATIC_DIR";
