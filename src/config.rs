//! Configuration: the TOML file, its validation, and the typed runtime [`Config`].
//!
//! Pipeline: `config.toml` → `FileConfig` (serde, unknown keys rejected) → [`Config`]
//! (validated, defaults applied, durations typed). Every error names the file, line,
//! column and key. Every key and its default is documented in `docs/config.md`.
//!
//! CONTRACT (owned by the config helper): the runtime types below are what the
//! dispatcher, pools and spawner read. Fields may be added; do not rename.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    Wsgi { target: String, interpreter: String, module_path: Vec<PathBuf> },
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
    /// Largest frame body accepted from a worker.
    pub max_frame_bytes: u32,
}

/// A config that could not be loaded; `Display` names file, line, column and key.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------
// Defaults. Each one is documented in docs/config.md; keep the two in step.
// ---------------------------------------------------------------------------------------

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
/// `pool.max_frame_bytes`: 64 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 64 * 1024 * 1024;
/// Lower bound of `pool.max_frame_bytes`: room for a response head.
pub const MIN_MAX_FRAME_BYTES: u32 = 1024;

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
path = "/status"
kind = "status"
"#;

/// Name used as the `source` of the embedded default.
pub const EMBEDDED_SOURCE: &str = "<embedded default>";

/// Env var that points [`Config::embedded_default`] at a static directory.
pub const STATIC_DIR_ENV: &str = "RUSTWORKERS_STATIC_DIR";

impl Config {
    /// Load and validate a config file. Relative paths inside it resolve against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
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
    /// relative paths.
    pub fn parse(text: &str, source: &str, base_dir: &Path) -> Result<Config, ConfigError> {
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

/// First existing directory of: `$RUSTWORKERS_STATIC_DIR`, `./static`, the crate's `static/`.
fn find_static_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os(STATIC_DIR_ENV).map(PathBuf::from),
        Some(PathBuf::from("static")),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("static")),
    ];
    candidates.into_iter().flatten().find(|dir| dir.is_dir())
}

fn parse_config(text: &str, source: &str, base_dir: &Path, drop_statics: bool) -> Result<Config, ConfigError> {
    // Syntax first: the spanned tree also maps error offsets to key paths and back.
    let tree =
        toml::de::DeTable::parse(text).map_err(|err| ConfigError::at(source, text, err.span(), None, err.message()))?;
    let spans = SpanIndex::build(tree.get_ref());
    let mut raw: FileConfig = toml::from_str(text).map_err(|err| {
        let key = err.span().and_then(|span| spans.path_at(&span));
        ConfigError::at(source, text, err.span(), key, err.message())
    })?;
    if drop_statics {
        raw.statics.clear();
    }
    let base_dir = absolute(base_dir);
    validate(raw, source, &base_dir).map_err(|err| {
        let span = spans.span_of(&err.key);
        ConfigError::at(source, text, span, Some(err.key), &err.message)
    })
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|cwd| cwd.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}

impl ConfigError {
    fn at(source: &str, text: &str, span: Option<Range<usize>>, key: Option<String>, message: &str) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let (line, column) = line_col(text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError { file: source.to_string(), line, column, key, message: message.trim_end().to_string() }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

// ---------------------------------------------------------------------------------------
// Key paths ⇄ spans
// ---------------------------------------------------------------------------------------

/// Every key and array element of the document with its dotted path (`pool[1].routes[0]`),
/// key span and value span.
struct SpanIndex {
    entries: Vec<SpanEntry>,
}

struct SpanEntry {
    path: String,
    key: Range<usize>,
    value: Range<usize>,
}

impl SpanIndex {
    fn build(root: &toml::de::DeTable<'_>) -> SpanIndex {
        let mut index = SpanIndex { entries: Vec::new() };
        index.add_table("", root);
        index
    }

    fn add_table(&mut self, prefix: &str, table: &toml::de::DeTable<'_>) {
        for (key, value) in table.iter() {
            let name = key.get_ref();
            let segment = if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                name.to_string()
            } else {
                format!("{name:?}")
            };
            let path = if prefix.is_empty() { segment } else { format!("{prefix}.{segment}") };
            self.entries.push(SpanEntry { path: path.clone(), key: key.span(), value: value.span() });
            self.add_value(&path, value);
        }
    }

    fn add_value(&mut self, path: &str, value: &toml::Spanned<toml::de::DeValue<'_>>) {
        match value.get_ref() {
            toml::de::DeValue::Table(table) => self.add_table(path, table),
            toml::de::DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    self.entries.push(SpanEntry { path: item_path.clone(), key: item.span(), value: item.span() });
                    self.add_value(&item_path, item);
                }
            }
            _ => {}
        }
    }

    /// The innermost key or value whose span contains `span.start`.
    fn path_at(&self, span: &Range<usize>) -> Option<String> {
        let at = span.start;
        let contains = |r: &Range<usize>| r.start <= at && (at < r.end || (r.is_empty() && at == r.start));
        self.entries
            .iter()
            .filter_map(|e| {
                let hit = [&e.key, &e.value].into_iter().filter(|r| contains(r)).map(|r| r.len()).min()?;
                Some((hit, e))
            })
            // Smallest span wins; on a tie the deeper path is the more precise.
            .min_by(|(a, ea), (b, eb)| a.cmp(b).then(eb.path.len().cmp(&ea.path.len())))
            .map(|(_, e)| e.path.clone())
    }

    /// The value span of `path`, or of its nearest existing ancestor (for a missing key).
    fn span_of(&self, path: &str) -> Option<Range<usize>> {
        let mut path = path;
        loop {
            if let Some(entry) = self.entries.iter().find(|e| e.path == path) {
                return Some(entry.value.clone());
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

// ---------------------------------------------------------------------------------------
// The file as written (serde)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default, rename = "static")]
    statics: Vec<FileStatic>,
    #[serde(default)]
    sync: Vec<FileSync>,
    auth: Option<FileAuth>,
    #[serde(default)]
    pool: Vec<FilePool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    bind: Option<OneOrMany>,
    backlog: Option<u32>,
    max_pending: Option<usize>,
    max_connections: Option<usize>,
    shutdown_timeout: Option<Seconds>,
    keepalive_timeout: Option<Seconds>,
    header_timeout: Option<Seconds>,
    body_timeout: Option<Seconds>,
    write_timeout: Option<Seconds>,
    access_log: Option<FileAccessLog>,
    #[serde(default)]
    limits: FileLimits,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FileAccessLog {
    Off,
    Combined,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_request_line: Option<usize>,
    max_headers: Option<usize>,
    max_header_bytes: Option<usize>,
    max_body_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStatic {
    prefix: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    authoritative: bool,
    index: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FileSyncKind {
    Health,
    Status,
    Metrics,
    StaticResponse,
    Redirect,
    Custom,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSync {
    path: String,
    kind: FileSyncKind,
    auth: Option<bool>,
    status: Option<u16>,
    body: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    content_type: Option<String>,
    location: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    header: Option<String>,
    #[serde(default)]
    keys: Vec<String>,
    keys_file: Option<String>,
    #[serde(default)]
    sync_routes: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePool {
    name: String,
    routes: Vec<String>,
    num_workers: Option<i64>,
    native: Option<String>,
    command: Option<Vec<String>>,
    python: Option<String>,
    wsgi: Option<String>,
    interpreter: Option<String>,
    module_path: Option<OneOrMany>,
    timeout: Option<Seconds>,
    stuck_timeout: Option<Seconds>,
    heartbeat_interval: Option<Seconds>,
    max_restarts: Option<u32>,
    restart_window: Option<Seconds>,
    recovery_interval: Option<Seconds>,
    permanent_failure_exitcode: Option<i32>,
    log_level: Option<String>,
    memory_limit_mb: Option<u64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    user: Option<String>,
    group: Option<String>,
    max_frame_bytes: Option<u32>,
    kwargs: Option<toml::Table>,
}

/// A duration written as integer or float seconds; range-checked in validation.
#[derive(Debug, Clone, Copy)]
struct Seconds(f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds (integer or float)")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Seconds, E> {
                Ok(Seconds(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A string or an array of strings.
#[derive(Debug, Clone)]
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

// ---------------------------------------------------------------------------------------
// Validation: FileConfig → Config
// ---------------------------------------------------------------------------------------

/// A semantic error, located later by its key path.
struct Invalid {
    key: String,
    message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { key: key.into(), message: message.into() }
}

type Check<T> = Result<T, Invalid>;

fn validate(raw: FileConfig, source: &str, base_dir: &Path) -> Check<Config> {
    let server = validate_server(raw.server, base_dir)?;
    let mut statics = Vec::with_capacity(raw.statics.len());
    for (i, file) in raw.statics.into_iter().enumerate() {
        let mount = validate_static(file, &format!("static[{i}]"), base_dir)?;
        if statics.iter().any(|m: &StaticMount| m.prefix == mount.prefix) {
            return Err(invalid(format!("static[{i}].prefix"), format!("duplicate static prefix {:?}", mount.prefix)));
        }
        statics.push(mount);
    }
    let auth = match raw.auth {
        Some(file) => Some(validate_auth(file, base_dir)?),
        None => None,
    };
    let mut syncs = Vec::with_capacity(raw.sync.len());
    for (i, file) in raw.sync.into_iter().enumerate() {
        let route = validate_sync(file, &format!("sync[{i}]"), auth.as_ref())?;
        if syncs.iter().any(|r: &SyncRoute| r.path == route.path) {
            return Err(invalid(format!("sync[{i}].path"), format!("duplicate sync path {:?}", route.path)));
        }
        syncs.push(route);
    }
    let mut pools: Vec<PoolConfig> = Vec::with_capacity(raw.pool.len());
    for (i, file) in raw.pool.into_iter().enumerate() {
        let key = format!("pool[{i}]");
        let pool = validate_pool(file, &key, base_dir)?;
        if pools.iter().any(|p| p.name == pool.name) {
            return Err(invalid(format!("{key}.name"), format!("duplicate pool name {:?}", pool.name)));
        }
        for (r, route) in pool.routes.iter().enumerate() {
            if let Some(other) = pools.iter().find(|p| p.routes.contains(route)) {
                return Err(invalid(
                    format!("{key}.routes[{r}]"),
                    format!("route {} is already claimed by pool {:?}", route_text(route), other.name),
                ));
            }
        }
        pools.push(pool);
    }
    Ok(Config { source: source.to_string(), server, statics, syncs, auth, pools })
}

fn route_text(route: &RoutePattern) -> String {
    match route {
        RoutePattern::Prefix(p) => format!("\"{p}/**\""),
        RoutePattern::Exact(p) => format!("{p:?}"),
        RoutePattern::Fallback => "\"/**\" (fallback)".to_string(),
    }
}

/// A duration that must be > 0.
fn positive_secs(value: Option<Seconds>, default: f64, key: &str) -> Check<Duration> {
    let secs = value.map_or(default, |s| s.0);
    if !secs.is_finite() || secs <= 0.0 {
        return Err(invalid(key, format!("expected a number of seconds > 0, got {secs}")));
    }
    secs_to_duration(secs, key)
}

/// A duration that may be 0.
fn non_negative_secs(value: Option<Seconds>, default: f64, key: &str) -> Check<Duration> {
    let secs = value.map_or(default, |s| s.0);
    if !secs.is_finite() || secs < 0.0 {
        return Err(invalid(key, format!("expected a number of seconds >= 0, got {secs}")));
    }
    secs_to_duration(secs, key)
}

fn secs_to_duration(secs: f64, key: &str) -> Check<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| invalid(key, format!("duration of {secs} seconds is too large")))
}

fn at_least<T: PartialOrd + fmt::Display + Copy>(value: Option<T>, default: T, min: T, key: &str) -> Check<T> {
    let v = value.unwrap_or(default);
    if v < min {
        return Err(invalid(key, format!("expected an integer >= {min}, got {v}")));
    }
    Ok(v)
}

fn validate_server(raw: FileServer, base_dir: &Path) -> Check<ServerConfig> {
    let binds = raw.bind.map_or_else(|| vec![DEFAULT_BIND.to_string()], |b| b.0);
    if binds.is_empty() {
        return Err(invalid("server.bind", "expected at least one address"));
    }
    let mut bind = Vec::with_capacity(binds.len());
    for (i, text) in binds.iter().enumerate() {
        let key = format!("server.bind[{i}]");
        let addr = parse_bind(text, base_dir).map_err(|msg| invalid(&key, msg))?;
        if bind.contains(&addr) {
            return Err(invalid(key, format!("duplicate bind address {text:?}")));
        }
        bind.push(addr);
    }
    let limits = raw.limits;
    let limits = Limits {
        max_request_line: at_least(
            limits.max_request_line,
            DEFAULT_MAX_REQUEST_LINE,
            16,
            "server.limits.max_request_line",
        )?,
        max_headers: at_least(limits.max_headers, DEFAULT_MAX_HEADERS, 1, "server.limits.max_headers")?,
        max_header_bytes: at_least(
            limits.max_header_bytes,
            DEFAULT_MAX_HEADER_BYTES,
            64,
            "server.limits.max_header_bytes",
        )?,
        max_body_bytes: limits.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
    };
    Ok(ServerConfig {
        bind,
        backlog: at_least(raw.backlog, DEFAULT_BACKLOG, 1, "server.backlog")?,
        max_pending: at_least(raw.max_pending, DEFAULT_MAX_PENDING, 1, "server.max_pending")?,
        max_connections: at_least(raw.max_connections, DEFAULT_MAX_CONNECTIONS, 1, "server.max_connections")?,
        shutdown_timeout: non_negative_secs(raw.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT, "server.shutdown_timeout")?,
        keepalive_timeout: positive_secs(raw.keepalive_timeout, DEFAULT_KEEPALIVE_TIMEOUT, "server.keepalive_timeout")?,
        header_timeout: positive_secs(raw.header_timeout, DEFAULT_HEADER_TIMEOUT, "server.header_timeout")?,
        body_timeout: positive_secs(raw.body_timeout, DEFAULT_BODY_TIMEOUT, "server.body_timeout")?,
        write_timeout: positive_secs(raw.write_timeout, DEFAULT_WRITE_TIMEOUT, "server.write_timeout")?,
        limits,
        access_log: match raw.access_log {
            None => DEFAULT_ACCESS_LOG,
            Some(FileAccessLog::Off) => AccessLog::Off,
            Some(FileAccessLog::Combined) => AccessLog::Combined,
            Some(FileAccessLog::Json) => AccessLog::Json,
        },
    })
}

/// `IP:PORT`, `[IPv6]:PORT` or `unix:PATH` (relative paths resolve against the config dir).
fn parse_bind(text: &str, base_dir: &Path) -> Result<BindAddr, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("expected a socket path after `unix:`".to_string());
        }
        return Ok(BindAddr::Unix(base_dir.join(path)));
    }
    text.parse::<std::net::SocketAddr>()
        .map(BindAddr::Tcp)
        .map_err(|_| format!("expected `IP:PORT`, `[IPv6]:PORT` or `unix:PATH`, got {text:?}"))
}

/// Header name → lowercase; rejects names that are not HTTP tokens and values with
/// control characters (no response splitting from a config typo).
fn validate_headers(raw: BTreeMap<String, String>, key: &str) -> Check<Vec<(String, String)>> {
    let mut headers = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let is_token =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !is_token {
            return Err(invalid(format!("{key}.{name:?}"), "expected a header name made of letters, digits and -"));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(invalid(format!("{key}.{name}"), "header value must not contain control characters"));
        }
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// A URL path as written in the config: starts with '/', no query, fragment, blanks,
/// `//` or dot segments.
fn check_url_path(path: &str, key: &str) -> Check<()> {
    if !path.starts_with('/') {
        return Err(invalid(key, format!("expected a path starting with '/', got {path:?}")));
    }
    if path.chars().any(|c| c == '?' || c == '#' || c.is_whitespace() || c.is_control()) {
        return Err(invalid(key, format!("path must not contain '?', '#' or whitespace, got {path:?}")));
    }
    if path.contains("//") || path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(invalid(key, format!("path must not contain '//', '.' or '..' segments, got {path:?}")));
    }
    Ok(())
}

fn validate_static(raw: FileStatic, key: &str, base_dir: &Path) -> Check<StaticMount> {
    let mut prefix = raw.prefix.trim().to_string();
    if !prefix.starts_with('/') {
        prefix.insert(0, '/');
    }
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    check_url_path(&prefix, &format!("{key}.prefix"))?;
    let path_key = format!("{key}.path");
    let dir = base_dir.join(&raw.path);
    let root = dir
        .canonicalize()
        .map_err(|err| invalid(&path_key, format!("static directory {} does not exist: {err}", dir.display())))?;
    if !root.is_dir() {
        return Err(invalid(path_key, format!("expected a directory, {} is not one", root.display())));
    }
    let index = raw.index.unwrap_or_else(|| DEFAULT_STATIC_INDEX.to_string());
    if index.is_empty() || index.contains('/') || index == "." || index == ".." {
        return Err(invalid(format!("{key}.index"), format!("expected a plain file name, got {index:?}")));
    }
    Ok(StaticMount {
        prefix,
        root,
        headers: validate_headers(raw.headers, &format!("{key}.headers"))?,
        authoritative: raw.authoritative,
        index,
    })
}

fn validate_sync(raw: FileSync, key: &str, auth: Option<&AuthConfig>) -> Check<SyncRoute> {
    check_url_path(&raw.path, &format!("{key}.path"))?;
    let kind_name = match raw.kind {
        FileSyncKind::Health => "health",
        FileSyncKind::Status => "status",
        FileSyncKind::Metrics => "metrics",
        FileSyncKind::StaticResponse => "static_response",
        FileSyncKind::Redirect => "redirect",
        FileSyncKind::Custom => "custom",
    };
    // Keys that belong to another kind are a typo or a misunderstanding: say so.
    let allowed: &[&str] = match raw.kind {
        FileSyncKind::StaticResponse => &["status", "body", "headers", "content_type"],
        FileSyncKind::Redirect => &["location", "status"],
        FileSyncKind::Custom => &["name"],
        _ => &[],
    };
    let present = [
        ("status", raw.status.is_some()),
        ("body", raw.body.is_some()),
        ("headers", raw.headers.is_some()),
        ("content_type", raw.content_type.is_some()),
        ("location", raw.location.is_some()),
        ("name", raw.name.is_some()),
    ];
    if let Some((field, _)) = present.iter().find(|(field, set)| *set && !allowed.contains(field)) {
        return Err(invalid(format!("{key}.{field}"), format!("`{field}` is not used by kind = \"{kind_name}\"")));
    }
    let kind = match raw.kind {
        FileSyncKind::Health => SyncKind::Health,
        FileSyncKind::Status => SyncKind::Status,
        FileSyncKind::Metrics => SyncKind::Metrics,
        FileSyncKind::StaticResponse => {
            let status = raw.status.unwrap_or(DEFAULT_STATIC_RESPONSE_STATUS);
            if !(200..=599).contains(&status) {
                return Err(invalid(format!("{key}.status"), format!("expected a status in 200..=599, got {status}")));
            }
            let mut headers = validate_headers(raw.headers.unwrap_or_default(), &format!("{key}.headers"))?;
            let has_type = headers.iter().any(|(name, _)| name == "content-type");
            match raw.content_type {
                Some(_) if has_type => {
                    return Err(invalid(
                        format!("{key}.content_type"),
                        "content type given twice: in `content_type` and in `headers`",
                    ));
                }
                Some(ct) => {
                    if ct.chars().any(char::is_control) {
                        return Err(invalid(format!("{key}.content_type"), "must not contain control characters"));
                    }
                    headers.push(("content-type".to_string(), ct));
                }
                None if !has_type => {
                    headers.push(("content-type".to_string(), DEFAULT_STATIC_RESPONSE_CONTENT_TYPE.to_string()));
                }
                None => {}
            }
            SyncKind::StaticResponse { status, body: raw.body.unwrap_or_default(), headers }
        }
        FileSyncKind::Redirect => {
            let location = raw
                .location
                .ok_or_else(|| invalid(format!("{key}.location"), "kind = \"redirect\" requires `location`"))?;
            if location.is_empty() || location.chars().any(|c| c.is_control() || c == ' ') {
                return Err(invalid(format!("{key}.location"), format!("expected a URL or path, got {location:?}")));
            }
            let status = raw.status.unwrap_or(DEFAULT_REDIRECT_STATUS);
            if ![301, 302, 303, 307, 308].contains(&status) {
                return Err(invalid(
                    format!("{key}.status"),
                    format!("expected 301, 302, 303, 307 or 308, got {status}"),
                ));
            }
            SyncKind::Redirect { location, status }
        }
        FileSyncKind::Custom => {
            let name = raw.name.ok_or_else(|| invalid(format!("{key}.name"), "kind = \"custom\" requires `name`"))?;
            if name.is_empty() {
                return Err(invalid(format!("{key}.name"), "expected a non-empty handler name"));
            }
            SyncKind::Custom(name)
        }
    };
    let auth = match (raw.auth, auth) {
        (Some(true), None) => {
            return Err(invalid(format!("{key}.auth"), "auth = true needs an [auth] section with keys"));
        }
        (Some(explicit), Some(_)) => explicit,
        (None, Some(auth)) => auth.sync_routes,
        (_, None) => false,
    };
    Ok(SyncRoute { path: raw.path, kind, auth })
}

fn validate_auth(raw: FileAuth, base_dir: &Path) -> Check<AuthConfig> {
    let header = raw.header.unwrap_or_else(|| DEFAULT_AUTH_HEADER.to_string());
    if header.is_empty() || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(invalid("auth.header", format!("expected a header name, got {header:?}")));
    }
    let mut keys = Vec::new();
    for (i, key) in raw.keys.into_iter().enumerate() {
        if key.is_empty() || key.chars().any(|c| c.is_control()) {
            return Err(invalid(format!("auth.keys[{i}]"), "expected a non-empty key without control characters"));
        }
        keys.push(key);
    }
    if let Some(file) = raw.keys_file {
        let path = base_dir.join(&file);
        let text = std::fs::read_to_string(&path)
            .map_err(|err| invalid("auth.keys_file", format!("could not read {}: {err}", path.display())))?;
        // One key per line; blank lines and '#' comments are skipped.
        for line in text.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                keys.push(line.to_string());
            }
        }
    }
    if keys.is_empty() {
        return Err(invalid("auth", "expected at least one key in `keys` or `keys_file`"));
    }
    Ok(AuthConfig { header: header.to_ascii_lowercase(), keys, sync_routes: raw.sync_routes })
}

/// `*` or `/**` → fallback; `/x/**` → prefix `/x`; anything else → exact path.
fn parse_route(text: &str, key: &str) -> Check<RoutePattern> {
    if text == "*" || text == "/**" {
        return Ok(RoutePattern::Fallback);
    }
    let (path, is_prefix) = match text.strip_suffix("/**") {
        Some(path) => (path, true),
        None => (text, false),
    };
    if path.contains('*') {
        return Err(invalid(key, format!("`**` is only allowed as a final `/**` segment, got {text:?}")));
    }
    check_url_path(path, key)?;
    if is_prefix { Ok(RoutePattern::Prefix(path.to_string())) } else { Ok(RoutePattern::Exact(path.to_string())) }
}

fn validate_pool(raw: FilePool, key: &str, base_dir: &Path) -> Check<PoolConfig> {
    let k = |field: &str| format!("{key}.{field}");
    let name = raw.name;
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid(k("name"), format!("expected 1-64 characters from [A-Za-z0-9_-], got {name:?}")));
    }
    if raw.routes.is_empty() {
        return Err(invalid(k("routes"), "expected at least one route pattern"));
    }
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, text) in raw.routes.iter().enumerate() {
        let route = parse_route(text, &format!("{key}.routes[{i}]"))?;
        if routes.contains(&route) {
            return Err(invalid(format!("{key}.routes[{i}]"), format!("duplicate route {text:?}")));
        }
        routes.push(route);
    }

    let kinds: Vec<&str> = [
        ("native", raw.native.is_some()),
        ("command", raw.command.is_some()),
        ("python", raw.python.is_some()),
        ("wsgi", raw.wsgi.is_some()),
    ]
    .into_iter()
    .filter_map(|(kind, set)| set.then_some(kind))
    .collect();
    if kinds.len() != 1 {
        let got = if kinds.is_empty() { "none".to_string() } else { kinds.join(" and ") };
        let at = if kinds.len() > 1 { k(kinds[1]) } else { key.to_string() };
        return Err(invalid(at, format!("expected exactly one of `native`, `command`, `python`, `wsgi`, got {got}")));
    }
    let is_python = raw.python.is_some() || raw.wsgi.is_some();
    if !is_python {
        for (field, set) in [("interpreter", raw.interpreter.is_some()), ("module_path", raw.module_path.is_some())] {
            if set {
                return Err(invalid(k(field), format!("`{field}` only applies to `python` and `wsgi` pools")));
            }
        }
    }
    let python_target = |target: String, field: &str| -> Check<String> {
        match target.split_once(':') {
            Some((module, attr)) if !module.is_empty() && !attr.is_empty() => Ok(target),
            _ => Err(invalid(k(field), format!("expected `module:attribute`, got {target:?}"))),
        }
    };
    let interpreter = raw.interpreter.unwrap_or_else(|| DEFAULT_INTERPRETER.to_string());
    if interpreter.is_empty() {
        return Err(invalid(k("interpreter"), "expected a program name or path"));
    }
    let module_path: Vec<PathBuf> = match raw.module_path {
        Some(paths) => paths.0.iter().map(|p| base_dir.join(p)).collect(),
        None => vec![base_dir.to_path_buf()],
    };
    let worker = if let Some(native) = raw.native {
        if native.is_empty() {
            return Err(invalid(k("native"), "expected a native worker name"));
        }
        WorkerKind::Native(native)
    } else if let Some(command) = raw.command {
        if command.first().is_none_or(|prog| prog.is_empty()) {
            return Err(invalid(k("command"), "expected a non-empty array: [program, args...]"));
        }
        WorkerKind::Command(command)
    } else if let Some(target) = raw.python {
        WorkerKind::Python { target: python_target(target, "python")?, interpreter, module_path }
    } else if let Some(target) = raw.wsgi {
        WorkerKind::Wsgi { target: python_target(target, "wsgi")?, interpreter, module_path }
    } else {
        unreachable!("exactly one worker kind was checked above")
    };

    let num_workers = raw.num_workers.unwrap_or(DEFAULT_NUM_WORKERS as i64);
    if num_workers < 1 || num_workers > MAX_NUM_WORKERS as i64 {
        return Err(invalid(
            k("num_workers"),
            format!("expected an integer in 1..={MAX_NUM_WORKERS}, got {num_workers}"),
        ));
    }
    let stuck_timeout = positive_secs(raw.stuck_timeout, DEFAULT_STUCK_TIMEOUT, &k("stuck_timeout"))?;
    let heartbeat_interval =
        positive_secs(raw.heartbeat_interval, DEFAULT_HEARTBEAT_INTERVAL, &k("heartbeat_interval"))?;
    if heartbeat_interval >= stuck_timeout {
        return Err(invalid(
            k("heartbeat_interval"),
            format!(
                "expected less than stuck_timeout ({}s), got {}s: healthy workers would be killed",
                stuck_timeout.as_secs_f64(),
                heartbeat_interval.as_secs_f64()
            ),
        ));
    }
    let recovery = non_negative_secs(raw.recovery_interval, 0.0, &k("recovery_interval"))?;
    let permanent_failure_exitcode = match raw.permanent_failure_exitcode {
        Some(code) if !(1..=255).contains(&code) => {
            return Err(invalid(
                k("permanent_failure_exitcode"),
                format!("expected an exit code in 1..=255, got {code}"),
            ));
        }
        other => other,
    };
    let log_level = raw.log_level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string()).to_ascii_lowercase();
    if !LOG_LEVELS.contains(&log_level.as_str()) {
        return Err(invalid(k("log_level"), format!("expected one of {}, got {log_level:?}", LOG_LEVELS.join(", "))));
    }
    if raw.memory_limit_mb == Some(0) {
        return Err(invalid(k("memory_limit_mb"), "expected an integer >= 1 (omit the key for no limit), got 0"));
    }
    for name in raw.env.keys() {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(invalid(format!("{key}.env.{name:?}"), "expected an environment variable name without '='"));
        }
    }
    if let Some((name, _)) = raw.env.iter().find(|(_, value)| value.contains('\0')) {
        return Err(invalid(format!("{key}.env.{name}"), "value must not contain NUL"));
    }
    let cwd = match raw.cwd {
        Some(dir) => {
            let path = base_dir.join(&dir);
            if !path.is_dir() {
                return Err(invalid(
                    k("cwd"),
                    format!("expected an existing directory, {} is not one", path.display()),
                ));
            }
            Some(path)
        }
        None => None,
    };
    for (field, value) in [("user", &raw.user), ("group", &raw.group)] {
        if value.as_deref() == Some("") {
            return Err(invalid(k(field), "expected a name or numeric id"));
        }
    }
    let max_frame_bytes =
        at_least(raw.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES, MIN_MAX_FRAME_BYTES, &k("max_frame_bytes"))?;
    let kwargs = match raw.kwargs {
        Some(table) => toml_table_to_json(table, &k("kwargs"))?,
        None => serde_json::Map::new(),
    };
    Ok(PoolConfig {
        name,
        routes,
        worker,
        num_workers: num_workers as usize,
        timeout: positive_secs(raw.timeout, DEFAULT_POOL_TIMEOUT, &k("timeout"))?,
        stuck_timeout,
        heartbeat_interval,
        max_restarts: raw.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS),
        restart_window: positive_secs(raw.restart_window, DEFAULT_RESTART_WINDOW, &k("restart_window"))?,
        recovery_interval: (!recovery.is_zero()).then_some(recovery),
        permanent_failure_exitcode,
        log_level,
        memory_limit_mb: raw.memory_limit_mb,
        env: raw.env,
        cwd,
        user: raw.user,
        group: raw.group,
        kwargs,
        max_frame_bytes,
    })
}

/// TOML → JSON for `kwargs`: datetimes become their TOML text; non-finite floats are refused
/// (JSON cannot carry them).
fn toml_table_to_json(table: toml::Table, key: &str) -> Check<serde_json::Map<String, serde_json::Value>> {
    let mut map = serde_json::Map::new();
    for (name, value) in table {
        let value = toml_to_json(value, &format!("{key}.{name}"))?;
        map.insert(name, value);
    }
    Ok(map)
}

fn toml_to_json(value: toml::Value, key: &str) -> Check<serde_json::Value> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => match serde_json::Number::from_f64(f) {
            Some(n) => J::Number(n),
            None => return Err(invalid(key, format!("{f} cannot be passed to workers (JSON has no NaN/inf)"))),
        },
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| toml_to_json(v, &format!("{key}[{i}]")))
                .collect::<Check<_>>()?,
        ),
        toml::Value::Table(table) => J::Object(toml_table_to_json(table, key)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory with a `static/` subdir, for configs that need real paths.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rw-config-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("static")).unwrap();
        dir
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        // Created once: tests run in parallel and must not remove each other's dirs.
        static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        Config::parse(text, "/etc/rw.toml", DIR.get_or_init(|| temp_dir("parse")))
    }

    fn parse_err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(err) => err,
        }
    }

    /// Asserts the error's key and line:column, and that the message contains `needle`.
    fn assert_err(text: &str, key: &str, line: usize, column: usize, needle: &str) {
        let err = parse_err(text);
        let shown = err.to_string();
        assert_eq!(err.key.as_deref(), Some(key), "{shown}");
        assert_eq!((err.line, err.column), (Some(line), Some(column)), "{shown}");
        assert!(err.message.contains(needle), "{shown} does not contain {needle:?}");
        assert!(shown.starts_with(&format!("/etc/rw.toml:{line}:{column}: key `{key}`: ")), "{shown}");
    }

    const POOL: &str = "[[pool]]\nname = \"api\"\nroutes = [\"/api/**\"]\nnative = \"echo\"\n";

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").unwrap();
        let s = &config.server;
        assert_eq!(s.bind, vec![BindAddr::Tcp("127.0.0.1:8080".parse().unwrap())]);
        assert_eq!(s.backlog, DEFAULT_BACKLOG);
        assert_eq!(s.max_pending, 1000);
        assert_eq!(s.max_connections, 10_000);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(s.keepalive_timeout, Duration::from_secs(5));
        assert_eq!(s.header_timeout, Duration::from_secs(10));
        assert_eq!(s.body_timeout, Duration::from_secs(30));
        assert_eq!(s.write_timeout, Duration::from_secs(30));
        assert_eq!(s.access_log, AccessLog::Combined);
        assert_eq!(s.limits.max_request_line, 8192);
        assert_eq!(s.limits.max_headers, 100);
        assert_eq!(s.limits.max_header_bytes, 65536);
        assert_eq!(s.limits.max_body_bytes, 10 * 1024 * 1024);
        assert!(config.statics.is_empty() && config.syncs.is_empty() && config.pools.is_empty());
        assert!(config.auth.is_none());
        assert_eq!(config.source, "/etc/rw.toml");
    }

    #[test]
    fn full_config_parses() {
        let dir = temp_dir("full");
        std::fs::create_dir_all(dir.join("app")).unwrap();
        std::fs::write(dir.join("keys.txt"), "# comment\n\nk3\n  k4  \n").unwrap();
        let text = r#"
[server]
bind = ["127.0.0.1:9000", "[::1]:9001", "unix:run/app.sock"]
backlog = 64
shutdown_timeout = 2.5
access_log = "json"
[server.limits]
max_body_bytes = 0

[[static]]
prefix = "assets"
path = "static"
headers = { "Cache-Control" = "public, max-age=60" }
authoritative = true

[[sync]]
path = "/health"
kind = "health"
auth = false
[[sync]]
path = "/hello"
kind = "static_response"
body = "hi"
content_type = "text/html"
[[sync]]
path = "/old"
kind = "redirect"
location = "/new"
status = 301
[[sync]]
path = "/mine"
kind = "custom"
name = "my_handler"

[auth]
header = "X-Token"
keys = ["k1", "k2"]
keys_file = "keys.txt"
sync_routes = true

[[pool]]
name = "api"
routes = ["/api/**", "/exact"]
native = "echo"
num_workers = 4
recovery_interval = 30
permanent_failure_exitcode = 3
memory_limit_mb = 512
env = { KEY = "value" }
cwd = "app"
kwargs = { db = "x", size = 3, when = 1979-05-27T07:32:00Z, nested = { list = [1.5, true] } }

[[pool]]
name = "py"
routes = ["*"]
wsgi = "app:application"
module_path = "src"
"#;
        let config = Config::parse(text, "rw.toml", &dir).unwrap();
        let s = &config.server;
        assert_eq!(s.bind[1], BindAddr::Tcp("[::1]:9001".parse().unwrap()));
        assert_eq!(s.bind[2], BindAddr::Unix(dir.join("run/app.sock")));
        assert_eq!(s.backlog, 64);
        assert_eq!(s.shutdown_timeout, Duration::from_millis(2500));
        assert_eq!(s.access_log, AccessLog::Json);
        assert_eq!(s.limits.max_body_bytes, 0);

        let mount = &config.statics[0];
        assert_eq!(mount.prefix, "/assets/");
        assert_eq!(mount.root, dir.join("static").canonicalize().unwrap());
        assert_eq!(mount.headers, vec![("cache-control".to_string(), "public, max-age=60".to_string())]);
        assert!(mount.authoritative);
        assert_eq!(mount.index, "index.html");

        assert!(!config.syncs[0].auth, "explicit auth = false wins");
        assert!(config.syncs[1].auth, "sync_routes = true is the default for routes");
        match &config.syncs[1].kind {
            SyncKind::StaticResponse { status, body, headers } => {
                assert_eq!((*status, body.as_str()), (200, "hi"));
                assert_eq!(headers, &vec![("content-type".to_string(), "text/html".to_string())]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&config.syncs[2].kind, SyncKind::Redirect { location, status: 301 } if location == "/new"));
        assert!(matches!(&config.syncs[3].kind, SyncKind::Custom(name) if name == "my_handler"));

        let auth = config.auth.as_ref().unwrap();
        assert_eq!(auth.header, "x-token");
        assert_eq!(auth.keys, vec!["k1", "k2", "k3", "k4"]);

        let api = &config.pools[0];
        assert_eq!(api.routes, vec![RoutePattern::Prefix("/api".into()), RoutePattern::Exact("/exact".into())]);
        assert!(matches!(&api.worker, WorkerKind::Native(n) if n == "echo"));
        assert_eq!(api.num_workers, 4);
        assert_eq!(api.recovery_interval, Some(Duration::from_secs(30)));
        assert_eq!(api.permanent_failure_exitcode, Some(3));
        assert_eq!(api.memory_limit_mb, Some(512));
        assert_eq!(api.env.get("KEY").map(String::as_str), Some("value"));
        assert_eq!(api.cwd.as_deref(), Some(dir.join("app").as_path()));
        assert_eq!(api.log_level, "warning");
        assert_eq!(api.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
        let kwargs = serde_json::Value::Object(api.kwargs.clone());
        assert_eq!(
            kwargs,
            serde_json::json!({"db": "x", "size": 3, "when": "1979-05-27T07:32:00Z", "nested": {"list": [1.5, true]}})
        );

        let py = &config.pools[1];
        assert_eq!(py.routes, vec![RoutePattern::Fallback]);
        assert_eq!(py.num_workers, DEFAULT_NUM_WORKERS);
        assert_eq!(py.recovery_interval, None);
        match &py.worker {
            WorkerKind::Wsgi { target, interpreter, module_path } => {
                assert_eq!(target, "app:application");
                assert_eq!(interpreter, "python3");
                assert_eq!(module_path, &vec![dir.join("src")]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn route_patterns() {
        let ok = |t: &str| parse_route(t, "k").ok();
        assert_eq!(ok("*"), Some(RoutePattern::Fallback));
        assert_eq!(ok("/**"), Some(RoutePattern::Fallback));
        assert_eq!(ok("/x/**"), Some(RoutePattern::Prefix("/x".into())));
        assert_eq!(ok("/a/b/**"), Some(RoutePattern::Prefix("/a/b".into())));
        assert_eq!(ok("/exact"), Some(RoutePattern::Exact("/exact".into())));
        for bad in ["api/**", "/api/**/x", "/a*", "/a/*", "/a/**/**", "", "/a//b", "/a/../b", "/a?b", "/a b"] {
            assert!(ok(bad).is_none(), "{bad:?} should be rejected");
        }
        assert!(RoutePattern::Prefix("/x".into()).matches("/x/y"));
        assert!(!RoutePattern::Prefix("/x".into()).matches("/xy"));
    }

    #[test]
    fn unknown_key_names_key_and_expected_keys() {
        let err = parse_err("[server]\nbind = [\"127.0.0.1:1\"]\nbindd = 3\n");
        assert_eq!(err.key.as_deref(), Some("server.bindd"), "{err}");
        assert_eq!((err.line, err.column), (Some(3), Some(1)));
        assert!(err.message.contains("unknown field `bindd`"), "{err}");
        assert!(err.message.contains("`backlog`"), "expected keys listed: {err}");
    }

    #[test]
    fn unknown_key_in_pool_and_top_level() {
        let err = parse_err(&format!("{POOL}workers = 3\n"));
        assert_eq!(err.key.as_deref(), Some("pool[0].workers"), "{err}");
        assert_eq!(err.line, Some(5));
        let err = parse_err("[serverr]\n");
        assert!(err.message.contains("unknown field `serverr`"), "{err}");
        assert_eq!(err.line, Some(1));
    }

    #[test]
    fn wrong_type() {
        let err = parse_err("[server]\nbacklog = \"big\"\n");
        assert_eq!(err.key.as_deref(), Some("server.backlog"), "{err}");
        assert_eq!((err.line, err.column), (Some(2), Some(11)));
        assert!(err.message.contains("invalid type"), "{err}");
        let err = parse_err("[server]\nkeepalive_timeout = \"5s\"\n");
        assert!(err.message.contains("number of seconds"), "{err}");
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_err("[server\n");
        assert_eq!(err.line, Some(1), "{err}");
        assert!(err.key.is_none());
    }

    #[test]
    fn bad_bind_address() {
        assert_err("[server]\nbind = [\"127.0.0.1:1\", \"localhost\"]\n", "server.bind[1]", 2, 24, "IP:PORT");
        assert_err("[server]\nbind = []\n", "server.bind", 2, 8, "at least one");
        assert_err("[server]\nbind = [\"unix:\"]\n", "server.bind[0]", 2, 9, "socket path");
    }

    #[test]
    fn duplicate_pool_names() {
        let text = format!("{POOL}{}", POOL.replace("/api/**", "/other/**"));
        assert_err(&text, "pool[1].name", 6, 8, "duplicate pool name");
    }

    #[test]
    fn duplicate_route_across_pools() {
        let text = format!("{POOL}{}", POOL.replace("\"api\"", "\"b\""));
        assert_err(&text, "pool[1].routes[0]", 7, 11, "already claimed by pool \"api\"");
    }

    #[test]
    fn worker_kind_must_be_exactly_one() {
        assert_err(&format!("{POOL}command = [\"x\"]\n"), "pool[0].command", 5, 11, "got native and command");
        let err = parse_err("[[pool]]\nname = \"api\"\nroutes = [\"/api/**\"]\n");
        assert_eq!(err.key.as_deref(), Some("pool[0]"), "{err}");
        assert!(err.message.contains("got none"), "{err}");
        assert!(err.line.is_some(), "{err}");
    }

    #[test]
    fn python_only_keys() {
        assert_err(&format!("{POOL}interpreter = \"python3\"\n"), "pool[0].interpreter", 5, 15, "only applies");
        let text = POOL.replace("native = \"echo\"", "python = \"mod.Class\"");
        assert_err(&text, "pool[0].python", 4, 10, "module:attribute");
    }

    #[test]
    fn missing_static_dir() {
        assert_err("[[static]]\nprefix = \"/s\"\npath = \"nope\"\n", "static[0].path", 3, 8, "does not exist");
    }

    #[test]
    fn sync_kind_missing_required_key() {
        assert_err("[[sync]]\npath = \"/old\"\nkind = \"redirect\"\n", "sync[0].location", 1, 1, "requires `location`");
        assert_err("[[sync]]\npath = \"/c\"\nkind = \"custom\"\n", "sync[0].name", 1, 1, "requires `name`");
        assert_err(
            "[[sync]]\npath = \"/old\"\nkind = \"redirect\"\nlocation = \"/n\"\nstatus = 200\n",
            "sync[0].status",
            5,
            10,
            "301, 302",
        );
        assert_err("[[sync]]\npath = \"/h\"\nkind = \"health\"\nbody = \"x\"\n", "sync[0].body", 4, 8, "not used by");
        let err = parse_err("[[sync]]\npath = \"/h\"\nkind = \"nope\"\n");
        assert_eq!(err.key.as_deref(), Some("sync[0].kind"), "{err}");
        assert!(err.message.contains("static_response"), "{err}");
    }

    #[test]
    fn sync_auth_needs_auth_section() {
        assert_err("[[sync]]\npath = \"/h\"\nkind = \"health\"\nauth = true\n", "sync[0].auth", 4, 8, "[auth]");
    }

    #[test]
    fn auth_needs_a_key() {
        assert_err("[auth]\nheader = \"x-api-key\"\n", "auth", 1, 1, "at least one key");
        let err = parse_err("[auth]\nkeys_file = \"missing.txt\"\n");
        assert_eq!(err.key.as_deref(), Some("auth.keys_file"));
    }

    #[test]
    fn malformed_route_patterns() {
        assert_err(&POOL.replace("/api/**", "api/**"), "pool[0].routes[0]", 3, 11, "starting with '/'");
        assert_err(&POOL.replace("/api/**", "/api/**/x"), "pool[0].routes[0]", 3, 11, "final `/**`");
        assert_err(&POOL.replace("[\"/api/**\"]", "[]"), "pool[0].routes", 3, 10, "at least one");
    }

    #[test]
    fn bad_numbers_and_timeouts() {
        assert_err(
            &format!("{POOL}num_workers = 0\n"),
            "pool[0].num_workers",
            5,
            15,
            "expected an integer in 1..=1024, got 0",
        );
        assert_err(&format!("{POOL}num_workers = 5000\n"), "pool[0].num_workers", 5, 15, "got 5000");
        assert_err(&format!("{POOL}timeout = 0\n"), "pool[0].timeout", 5, 11, "> 0");
        assert_err(&format!("{POOL}stuck_timeout = -1.5\n"), "pool[0].stuck_timeout", 5, 17, "> 0");
        assert_err(&format!("{POOL}heartbeat_interval = 90\n"), "pool[0].heartbeat_interval", 5, 22, "stuck_timeout");
        assert_err(&format!("{POOL}recovery_interval = -1\n"), "pool[0].recovery_interval", 5, 21, ">= 0");
        assert_err(&format!("{POOL}log_level = \"loud\"\n"), "pool[0].log_level", 5, 13, "warning");
        assert_err("[server]\nkeepalive_timeout = 0\n", "server.keepalive_timeout", 2, 21, "> 0");
        assert_err("[server.limits]\nmax_headers = 0\n", "server.limits.max_headers", 2, 15, ">= 1");
        let err = parse_err("[server.limits]\nmax_body_bytes = -1\n");
        assert_eq!(err.key.as_deref(), Some("server.limits.max_body_bytes"), "{err}");
        // Zero shutdown_timeout is meaningful: stop at once.
        assert_eq!(parse("[server]\nshutdown_timeout = 0\n").unwrap().server.shutdown_timeout, Duration::ZERO);
    }

    #[test]
    fn header_values_are_checked() {
        let err = parse_err("[[static]]\nprefix = \"/\"\npath = \"static\"\nheaders = { \"bad name\" = \"x\" }\n");
        assert!(err.message.contains("header name"), "{err}");
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é=1\nx", 3), (1, 3));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn embedded_default_toml_is_valid() {
        let dir = temp_dir("embedded");
        let config = Config::parse(EMBEDDED_DEFAULT_TOML, EMBEDDED_SOURCE, &dir.join("static")).unwrap();
        assert_eq!(config.statics.len(), 1);
        assert_eq!(config.statics[0].prefix, "/");
        assert!(!config.statics[0].authoritative);
        let paths: Vec<&str> = config.syncs.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["/health", "/status"]);
        assert_eq!(config.server.bind, vec![BindAddr::Tcp("127.0.0.1:8080".parse().unwrap())]);

        let without = parse_config(EMBEDDED_DEFAULT_TOML, EMBEDDED_SOURCE, Path::new("/nonexistent"), true).unwrap();
        assert!(without.statics.is_empty());
        assert_eq!(without.syncs.len(), 2);
    }

    #[test]
    fn embedded_default_builds() {
        let config = Config::embedded_default();
        assert_eq!(config.source, EMBEDDED_SOURCE);
        assert_eq!(config.syncs.len(), 2);
        assert!(config.statics.len() <= 1);
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config.toml");
        let config = Config::load(&path).unwrap_or_else(|err| panic!("{err}"));
        let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["items", "flask", "echo"]);
        assert_eq!(config.pools[0].routes, vec![RoutePattern::Prefix("/api".into())]);
        assert!(matches!(config.pools[0].worker, WorkerKind::Python { .. }));
        assert!(matches!(config.pools[1].worker, WorkerKind::Wsgi { .. }));
        assert_eq!(config.syncs.len(), 3);
        assert!(config.syncs[2].auth && !config.syncs[0].auth);
        assert!(config.auth.is_some());
    }

    #[test]
    fn load_reads_file_and_resolves_relative_to_it() {
        let dir = temp_dir("load");
        let file = dir.join("rw.toml");
        std::fs::write(&file, "[[static]]\nprefix = \"/\"\npath = \"static\"\n").unwrap();
        let config = Config::load(&file).unwrap();
        assert_eq!(config.statics[0].root, dir.join("static").canonicalize().unwrap());
        let err = Config::load(&dir.join("missing.toml")).unwrap_err();
        assert!(err.to_string().contains("could not read config file"), "{err}");
    }
}
