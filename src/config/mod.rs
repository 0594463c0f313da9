//! Configuration: the TOML file, its validation, and the typed runtime [`Config`].
//!
//! Pipeline: `config.toml` → `FileConfig` (serde, unknown keys rejected) → [`Config`]
//! (validated, defaults applied, durations typed). Every error names the file, line,
//! column and key, and a file with several errors gets all of them ([`ConfigErrors`]):
//! serde errors are collected by cutting each bad key and deserializing the rest again
//! (`recover`), validation goes on past each error. Every key and its default is
//! documented in `docs/config.md`.
//!
//! Files: this one holds the runtime types and loading; `defaults` the `DEFAULT_*`
//! constants and the embedded config; `file` the serde structs; `validate` the top-level
//! check and shared helpers; `server`, `statics`, `sync`, `auth`, `pools` one section
//! each; `span` maps key paths to positions; `recover` collects serde errors; `error` is
//! [`ConfigError`] and [`ConfigErrors`].
//!
//! CONTRACT (owned by the config helper): the runtime types below are what the
//! dispatcher, pools and spawner read. Fields may be added; do not rename.

mod auth;
mod defaults;
mod error;
mod file;
mod pools;
mod recover;
mod server;
mod span;
mod statics;
mod sync;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use defaults::*;
pub use error::{ConfigError, ConfigErrors};
use span::SpanIndex;

/// A validated, ready-to-run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (file path, or `<embedded default>`).
    pub source: String,
    pub server: ServerConfig,
    pub statics: Vec<StaticMount>,
    pub syncs: Vec<SyncRoute>,
    pub auth: Option<AuthConfig>,
    pub pools: Vec<PoolConfig>,
}

/// One listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: Vec<BindAddr>,
    pub backlog: u32,
    /// Max requests queued across a pool's queue before 503.
    pub max_pending: usize,
    pub shutdown_timeout: Duration,
    /// Idle time allowed between requests on a keep-alive connection.
    pub keepalive_timeout: Duration,
    /// Time allowed to receive the full request head once its first byte arrived.
    pub header_timeout: Duration,
    /// Max time between two reads while receiving a request body.
    pub body_timeout: Duration,
    /// Max time a connection may make no progress while we write to it.
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub limits: Limits,
    pub access_log: AccessLog,
    /// Global budget for request bodies and responses buffered in the dispatcher.
    pub max_buffered_bytes: u64,
    /// Per-connection cap on buffered, unsent response bytes; above it the dispatcher
    /// stops reading and dispatching for that client.
    pub max_connection_buffer: usize,
    /// Minimum average body rate in bytes/s (0 = off): the body deadline is
    /// `body_timeout + received / body_min_rate` after the body started.
    pub body_min_rate: u64,
    /// After a fast stop (QUIT), how long to wait for killed workers to be reaped.
    pub fast_stop_timeout: Duration,
    /// Event loops of the dispatcher.
    pub threads: Threads,
}

/// `server.threads`: how many event loops the dispatcher runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// One per core without pools, one with pools (see `dispatcher::tuning::loops`).
    Auto,
    Fixed(usize),
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Combined,
    Json,
}

#[derive(Debug, Clone)]
pub struct StaticMount {
    /// URL prefix, always starting and ending with `/`.
    pub prefix: String,
    /// Canonicalized root directory.
    pub root: PathBuf,
    pub headers: Vec<(String, String)>,
    /// Answer 404 here when no file matches, instead of falling through.
    pub authoritative: bool,
    pub index: String,
}

#[derive(Debug, Clone)]
pub struct SyncRoute {
    /// Exact path.
    pub path: String,
    pub kind: SyncKind,
    /// Whether `[auth]` applies to this route.
    pub auth: bool,
}

#[derive(Debug, Clone)]
pub enum SyncKind {
    Health,
    Status,
    Metrics,
    /// Readiness: pools with `readiness = true` have live workers and the server is
    /// not draining.
    Ready,
    /// Liveness: the event loop runs.
    Live,
    StaticResponse {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    Redirect {
        location: String,
        status: u16,
    },
    /// A handler registered from Rust code under this name (see `sync_handlers`).
    Custom(String),
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub header: String,
    pub keys: Vec<String>,
    /// Also require a key on sync handlers that do not set `auth = false`.
    pub sync_routes: bool,
}

/// How a pool's worker processes are started.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerKind {
    /// Built-in or library-registered Rust worker, forked without exec.
    Native(String),
    /// Any executable speaking the pipe protocol.
    Command(Vec<String>),
    /// Python Worker class via the bundled shim: `module:Class`.
    Python { target: String, interpreter: String, module_path: Vec<PathBuf> },
    /// Python WSGI app via the bundled shim: `module:app`.
    Wsgi { target: String, interpreter: String, module_path: Vec<PathBuf>, factory: bool },
    /// Python ASGI app via the bundled shim's asgi adapter: `module:app`.
    Asgi { target: String, interpreter: String, module_path: Vec<PathBuf>, factory: bool },
}

/// A Python pool as the shim sees it: which adapter (`worker`, `wsgi`, `asgi`: the
/// shim's command-line verb), the app, and where it comes from.
#[derive(Debug, Clone, Copy)]
pub struct PythonApp<'a> {
    pub verb: &'static str,
    pub target: &'a str,
    pub interpreter: &'a str,
    pub module_path: &'a [PathBuf],
    /// The target is a factory to call for the app.
    pub factory: bool,
}

impl PythonApp<'_> {
    /// The shim's arguments after `-m rustworkers`.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![self.verb.to_string(), self.target.to_string()];
        if self.factory {
            args.push("--factory".into());
        }
        args
    }
}

impl WorkerKind {
    /// The Python app of a `python`, `wsgi` or `asgi` pool.
    pub fn python_app(&self) -> Option<PythonApp<'_>> {
        let (verb, target, interpreter, module_path, factory) = match self {
            WorkerKind::Python { target, interpreter, module_path } => {
                ("worker", target, interpreter, module_path, false)
            }
            WorkerKind::Wsgi { target, interpreter, module_path, factory } => {
                ("wsgi", target, interpreter, module_path, *factory)
            }
            WorkerKind::Asgi { target, interpreter, module_path, factory } => {
                ("asgi", target, interpreter, module_path, *factory)
            }
            WorkerKind::Native(_) | WorkerKind::Command(_) => return None,
        };
        Some(PythonApp { verb, target, interpreter, module_path, factory })
    }
}

/// How a pool route matches a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutePattern {
    /// `/api/**`: the path is `/api` or starts with `/api/`.
    Prefix(String),
    /// `/exact`.
    Exact(String),
    /// `*` or `/**`: everything.
    Fallback,
}

impl RoutePattern {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            RoutePattern::Fallback => true,
            RoutePattern::Exact(p) => p == path,
            RoutePattern::Prefix(p) => {
                path == p || (path.starts_with(p.as_str()) && path.as_bytes().get(p.len()) == Some(&b'/'))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub routes: Vec<RoutePattern>,
    pub worker: WorkerKind,
    pub num_workers: usize,
    pub timeout: Duration,
    pub stuck_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub recovery_interval: Option<Duration>,
    pub permanent_failure_exitcode: Option<i32>,
    pub log_level: String,
    pub memory_limit_mb: Option<u64>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// Passed to workers in the CONFIG frame.
    pub kwargs: serde_json::Map<String, serde_json::Value>,
    /// Largest frame body accepted from a worker (at most [`MAX_FRAME_BODY`]); at least
    /// `max_body_bytes` + [`FRAME_META_ALLOWANCE`] unless set explicitly.
    pub max_frame_bytes: u64,
    /// Time between SIGUSR2 and SIGKILL for a worker that stopped heartbeating.
    pub stuck_grace: Duration,
    /// A worker that closed its pipes, or was sent STOP and holds nothing, is SIGKILLed
    /// if it has not exited after this long.
    pub exit_grace: Duration,
    /// Worker stdout+stderr bytes per second (burst: one second's worth); the excess is
    /// dropped and counted.
    pub max_output_rate: u64,
    /// Whether this pool counts for the `ready` endpoint.
    pub readiness: bool,
    /// Whether WebSocket upgrades are relayed to workers that take them.
    pub websocket: bool,
    /// Largest WebSocket message from a client (larger: close 1009).
    pub max_message_bytes: u64,
    /// A WebSocket quiet this long is closed (pinged at half of it).
    pub websocket_idle_timeout: Duration,
    /// Requests a worker that serves them one at a time (HELLO `prefetch`) may be given
    /// beyond its credits while the pool has a queue; never more than it offers.
    pub prefetch: u32,
    /// Python pools: import the app once in a fork-server that forks the workers.
    pub preload: bool,
}

impl Config {
    /// Load and validate a config file. Relative paths inside it resolve against the
    /// file's directory. On failure, every error found, in file order.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: source.clone(),
            line: None,
            column: None,
            key: None,
            message: format!("could not read config file: {err}"),
        })?;
        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Config::parse(&text, &source, &base_dir)
    }

    /// Parse and validate config text; `source` names it in errors, `base_dir` resolves
    /// relative paths. On failure, every error found, in file order.
    pub fn parse(text: &str, source: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        parse_config(text, source, base_dir, false)
    }

    /// The embedded default ([`EMBEDDED_DEFAULT_TOML`]): 127.0.0.1:8080, `/health`,
    /// `/status`, and the bundled static folder at `/` (non-authoritative). The folder is
    /// `$RUSTWORKERS_STATIC_DIR`, else `./static`, else the crate's own `static/`; when none
    /// is a directory the config has no static mount.
    pub fn embedded_default() -> Config {
        let static_dir = find_static_dir();
        if let Some(dir) = &static_dir {
            match parse_config(EMBEDDED_DEFAULT_TOML, EMBEDDED_SOURCE, dir, false) {
                Ok(config) => return config,
                Err(err) => log::warn!("embedded default: static dir not usable, serving none: {err}"),
            }
        }
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        // The text is a constant checked by unit tests; failing here is a build bug.
        parse_config(EMBEDDED_DEFAULT_TOML, EMBEDDED_SOURCE, &base, true).expect("EMBEDDED_DEFAULT_TOML must be valid")
    }
}

/// A [`ConfigError`] at `key` of config `text` (from `source`), for checks made on a
/// loaded config (`preflight`); without a position if the key is not in the text.
pub fn locate(source: &str, text: &str, key: &str, message: &str) -> ConfigError {
    let span = toml::de::DeTable::parse(text).ok().and_then(|tree| SpanIndex::build(tree.get_ref()).span_of(key));
    ConfigError::at(source, text, span, Some(key.to_string()), message)
}

/// First existing directory of: `$RUSTWORKERS_STATIC_DIR`, `./static`, the crate's `static/`.
fn find_static_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os(STATIC_DIR_ENV).map(PathBuf::from),
        Some(PathBuf::from("static")),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("static")),
    ];
    candidates.into_iter().flatten().find(|dir| dir.is_dir())
}

fn parse_config(text: &str, source: &str, base_dir: &Path, drop_statics: bool) -> Result<Config, ConfigErrors> {
    // Syntax first: the parser cannot go on past a syntax error, so that one is alone. The
    // spanned tree also maps error offsets to key paths and back.
    let tree =
        toml::de::DeTable::parse(text).map_err(|err| ConfigError::at(source, text, err.span(), None, err.message()))?;
    let spans = SpanIndex::build(tree.get_ref());
    let recovered = recover::deserialize(&tree, &spans);
    // (offset in the text, error): sorted by offset at the end, for file order.
    let mut found: Vec<(Option<usize>, ConfigError)> = recovered
        .errors
        .into_iter()
        .map(|err| {
            let message = plain_expectation(&err.message);
            (err.span.as_ref().map(|s| s.start), ConfigError::at(source, text, err.span, err.key, &message))
        })
        .collect();
    if let Some(mut raw) = recovered.file {
        if drop_statics {
            raw.statics.clear();
        }
        match validate::validate(raw, source, &absolute(base_dir)) {
            Ok(config) if found.is_empty() => return Ok(config),
            Ok(_) => {}
            Err(invalids) => {
                let mut reported: Vec<String> = Vec::new();
                for err in invalids {
                    // A key cut for a serde error reads as missing or default to validation,
                    // and a check may fail twice on one key: report each key once.
                    if recovered.removed.iter().any(|cut| recover::related(cut, &err.key))
                        || reported.contains(&err.key)
                    {
                        continue;
                    }
                    let span = spans.span_of(&err.key);
                    reported.push(err.key.clone());
                    found.push((
                        span.as_ref().map(|s| s.start),
                        ConfigError::at(source, text, span, Some(err.key), &err.message),
                    ));
                }
            }
        }
    }
    // Stable: errors at one position keep the order they were found in; unplaced ones last.
    found.sort_by_key(|(at, _)| at.unwrap_or(usize::MAX));
    Err(ConfigErrors::new(found.into_iter().map(|(_, err)| err).collect()))
}

/// serde names the Rust type it wanted (`expected u32`, `expected a sequence`); say what
/// to write in TOML instead. Durations and sizes have their own wording already.
fn plain_expectation(message: &str) -> String {
    const WORDS: [(&str, &str); 10] = [
        ("expected u8", "expected a non-negative integer"),
        ("expected u16", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected i32", "expected an integer"),
        ("expected i64", "expected an integer"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("expected a boolean", "expected true or false"),
    ];
    let mut out = message.to_string();
    // `expected struct FileServer`: the name is ours, not the user's.
    if let Some(at) = out.find("expected struct ") {
        let name_start = at + "expected struct ".len();
        let name_len = out[name_start..].find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(out.len() - name_start);
        out.replace_range(at..name_start + name_len, "expected a table");
    }
    for (rust, toml) in WORDS {
        // Whole words only: `expected u32` must not match inside `expected u320`.
        let mut from = 0;
        while let Some(at) = out[from..].find(rust).map(|i| i + from) {
            let end = at + rust.len();
            let boundary = !out[end..].starts_with(|c: char| c.is_ascii_alphanumeric());
            if boundary {
                out.replace_range(at..end, toml);
                from = at + toml.len();
            } else {
                from = end;
            }
        }
    }
    out
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|cwd| cwd.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}
