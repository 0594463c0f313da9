use super::error::line_col;
use super::pools::parse_route;
use super::*;

/// A fresh directory with a `static/` subdir, for configs that need real paths.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rw-config-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("static")).unwrap();
    dir
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    // Created once: tests run in parallel and must not remove each other's dirs.
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    Config::parse(text, "/etc/rw.toml", DIR.get_or_init(|| temp_dir("parse")))
}

/// Every error of a config that must not load.
fn parse_errs(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(errs) => errs.into_vec(),
    }
}

/// The error of a config with one mistake: exactly one is reported (no follow-ons).
fn parse_err(text: &str) -> ConfigError {
    let mut errs = parse_errs(text);
    assert_eq!(errs.len(), 1, "expected one error for:\n{text}\ngot:\n{}", ConfigErrors::new(errs));
    errs.remove(0)
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
    assert_eq!(s.max_buffered_bytes, 256 * 1024 * 1024);
    assert_eq!(s.max_connection_buffer, 4 * 1024 * 1024);
    assert_eq!(s.body_min_rate, 1024);
    assert_eq!(s.fast_stop_timeout, Duration::from_secs(2));
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
        WorkerKind::Wsgi { target, interpreter, module_path, factory: false } => {
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
    assert_err(&format!("{POOL}prefetch = 65\n"), "pool[0].prefetch", 5, 12, "expected an integer in 0..=64, got 65");
    assert_err(&format!("{POOL}preload = true\n"), "pool[0].preload", 5, 11, "python, wsgi and asgi pools");
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
    assert_eq!(paths, ["/health", "/ready", "/live", "/status"]);
    assert!(matches!(config.syncs[1].kind, SyncKind::Ready) && matches!(config.syncs[2].kind, SyncKind::Live));
    assert_eq!(config.server.bind, vec![BindAddr::Tcp("127.0.0.1:8080".parse().unwrap())]);

    let without = parse_config(EMBEDDED_DEFAULT_TOML, EMBEDDED_SOURCE, Path::new("/nonexistent"), true).unwrap();
    assert!(without.statics.is_empty());
    assert_eq!(without.syncs.len(), 4);
}

#[test]
fn embedded_default_builds() {
    let config = Config::embedded_default();
    assert_eq!(config.source, EMBEDDED_SOURCE);
    assert_eq!(config.syncs.len(), 4);
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

#[test]
fn pool_defaults_for_new_keys() {
    let pool = &parse(POOL).unwrap().pools[0];
    assert_eq!(pool.stuck_grace, Duration::from_secs(2));
    assert_eq!(pool.exit_grace, Duration::from_secs(2));
    assert_eq!(pool.max_output_rate, 1024 * 1024);
    assert!(pool.readiness);
    assert_eq!(pool.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
}

#[test]
fn new_server_keys_parse() {
    let text = "[server]\nmax_buffered_bytes = 2097152\nmax_connection_buffer = 65536\nbody_min_rate = 0\n\
                fast_stop_timeout = 0.5\n";
    let s = parse(text).unwrap().server;
    assert_eq!((s.max_buffered_bytes, s.max_connection_buffer, s.body_min_rate), (2 << 20, 65536, 0));
    assert_eq!(s.fast_stop_timeout, Duration::from_millis(500));
}

#[test]
fn new_server_keys_are_checked() {
    assert_err("[server]\nmax_buffered_bytes = 1000\n", "server.max_buffered_bytes", 2, 22, ">= 1048576");
    assert_err("[server]\nmax_connection_buffer = 10\n", "server.max_connection_buffer", 2, 25, ">= 65536");
    assert_err(
        "[server]\nmax_buffered_bytes = 1048576\nmax_connection_buffer = 2097152\n",
        "server.max_connection_buffer",
        3,
        25,
        "at most server.max_buffered_bytes",
    );
    assert_err("[server]\nbody_min_rate = -1\n", "server.body_min_rate", 2, 17, "a size in bytes");
    assert_err("[server]\nfast_stop_timeout = -1\n", "server.fast_stop_timeout", 2, 21, ">= 0");
    assert_err("[server]\nmax_buffered_bytes = \"1M\"\n", "server.max_buffered_bytes", 2, 22, "a size in bytes");
}

#[test]
fn new_pool_keys_parse_and_are_checked() {
    let text = format!("{POOL}stuck_grace = 0\nexit_grace = 5\nmax_output_rate = 2048\nreadiness = false\n");
    let pool = &parse(&text).unwrap().pools[0];
    assert_eq!((pool.stuck_grace, pool.exit_grace), (Duration::ZERO, Duration::from_secs(5)));
    assert_eq!(pool.max_output_rate, 2048);
    assert!(!pool.readiness);
    assert_err(&format!("{POOL}max_output_rate = 0\n"), "pool[0].max_output_rate", 5, 19, ">= 1024");
    assert_err(&format!("{POOL}exit_grace = 0\n"), "pool[0].exit_grace", 5, 14, "> 0");
    assert_err(&format!("{POOL}stuck_grace = -1\n"), "pool[0].stuck_grace", 5, 15, ">= 0");
    assert_err(&format!("{POOL}readiness = 1\n"), "pool[0].readiness", 5, 13, "invalid type");
}

#[test]
fn reload_sees_new_pool_keys() {
    let a = parse(POOL).unwrap().pools.remove(0);
    for extra in ["stuck_grace = 3", "exit_grace = 3", "max_output_rate = 4096", "readiness = false"] {
        let b = parse(&format!("{POOL}{extra}\n")).unwrap().pools.remove(0);
        assert_ne!(a, b, "{extra} must count as a change");
    }
}

#[test]
fn frame_limit_follows_body_limit() {
    let big = format!("[server.limits]\nmax_body_bytes = 1073741824\n{POOL}");
    assert_eq!(parse(&big).unwrap().pools[0].max_frame_bytes, (1 << 30) + 64 * 1024);
    let max = format!("[server.limits]\nmax_body_bytes = 4294967295\n{POOL}");
    assert_eq!(parse(&max).unwrap().pools[0].max_frame_bytes, u32::MAX as u64, "capped at the wire limit");
    assert_err(
        "[server.limits]\nmax_body_bytes = 4294967296\n",
        "server.limits.max_body_bytes",
        2,
        18,
        "<= 4294967295",
    );
    let low = format!("[server.limits]\nmax_body_bytes = 1073741824\n{POOL}max_frame_bytes = 67108864\n");
    assert_err(&low, "pool[0].max_frame_bytes", 7, 19, "request bodies would not fit");
    assert_err(&format!("{POOL}max_frame_bytes = 4294967296\n"), "pool[0].max_frame_bytes", 5, 19, "1024..=4294967295");
    assert_eq!(parse(&format!("{POOL}max_frame_bytes = 20000000\n")).unwrap().pools[0].max_frame_bytes, 20_000_000);
}

#[test]
fn ready_and_live_sync_kinds() {
    let config =
        parse("[[sync]]\npath = \"/r\"\nkind = \"ready\"\n[[sync]]\npath = \"/l\"\nkind = \"live\"\n").unwrap();
    assert!(matches!(config.syncs[0].kind, SyncKind::Ready));
    assert!(matches!(config.syncs[1].kind, SyncKind::Live));
    assert_err("[[sync]]\npath = \"/r\"\nkind = \"ready\"\nbody = \"x\"\n", "sync[0].body", 4, 8, "not used by");
}

#[test]
fn relative_command_resolves_against_the_config_dir() {
    let dir = temp_dir("command");
    let pool = |cmd: &str| {
        let text = format!("[[pool]]\nname = \"c\"\nroutes = [\"/c/**\"]\ncommand = [{cmd}, \"--flag\"]\n");
        match Config::parse(&text, "rw.toml", &dir).unwrap().pools.remove(0).worker {
            WorkerKind::Command(argv) => argv,
            other => panic!("{other:?}"),
        }
    };
    let joined = |p: &str| dir.join(p).display().to_string();
    assert_eq!(pool("\"./bin/worker\""), vec![joined("bin/worker"), "--flag".into()]);
    assert_eq!(pool("\"bin/worker\""), vec![joined("bin/worker"), "--flag".into()]);
    assert_eq!(pool("\"../w\""), vec![joined("../w"), "--flag".into()]);
    assert_eq!(pool("\"/usr/bin/w\"")[0], "/usr/bin/w", "absolute stays");
    assert_eq!(pool("\"python3\"")[0], "python3", "bare names are looked up in PATH");
}

#[test]
fn type_errors_name_the_toml_type() {
    let cases = [
        ("[server]\nbacklog = \"big\"\n", "expected a non-negative integer"),
        ("[server]\nbacklog = -1\n", "expected a non-negative integer"),
        (&format!("{POOL}num_workers = \"4\"\n"), "expected an integer"),
        (&format!("{POOL}routes2 = 1\n"), "unknown field"),
        ("[server]\nkeepalive_timeout = \"5s\"\n", "a number of seconds"),
        ("[server.limits]\nmax_body_bytes = \"10M\"\n", "a size in bytes"),
        ("[[pool]]\nname = \"a\"\nroutes = \"/x\"\nnative = \"echo\"\n", "expected an array"),
        ("[[static]]\nprefix = \"/\"\npath = \"static\"\nauthoritative = \"yes\"\n", "expected true or false"),
        ("server = 3\n", "expected a table"),
    ];
    for (text, needle) in cases {
        let err = parse_err(text).to_string();
        assert!(err.contains(needle), "{err} lacks {needle:?}");
        for rust in ["u32", "usize", "i64", "sequence", "struct"] {
            assert!(!err.contains(&format!("expected {rust}")), "{err}");
        }
    }
}

/// Errors one per line, for assertion messages.
fn show(errs: &[ConfigError]) -> String {
    errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// Issue 8.6: every error in the file, each at its own line, in file order.
const MANY_MISTAKES: &str = r#"[server]
bind = ["127.0.0.1:0"]
bindd = 3
backlog = "big"

[server.limits]
max_headers = 0

[[sync]]
path = "/h"
kind = "health"
auth = true

[[pool]]
name = "api"
routes = ["api/**"]
native = "echo"
num_workers = 0
workers = 3

[[pool]]
name = "b"
routes = ["/b/**"]
native = "echo"
timeout = "slow"
"#;

#[test]
fn every_error_is_reported_in_file_order() {
    let errs = parse_errs(MANY_MISTAKES);
    let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.line.unwrap(), e.key.as_deref().unwrap())).collect();
    assert_eq!(
        got,
        [
            (3, "server.bindd"),
            (4, "server.backlog"),
            (7, "server.limits.max_headers"),
            (12, "sync[0].auth"),
            (16, "pool[0].routes[0]"),
            (18, "pool[0].num_workers"),
            (19, "pool[0].workers"),
            (25, "pool[1].timeout"),
        ],
        "{}",
        show(&errs)
    );
    let needles = [
        "unknown field `bindd`",
        "expected a non-negative integer",
        ">= 1",
        "[auth]",
        "starting with '/'",
        "1..=1024",
        "unknown field `workers`",
        "a number of seconds",
    ];
    for (err, needle) in errs.iter().zip(needles) {
        assert!(err.message.contains(needle), "{err} lacks {needle:?}");
    }
}

#[test]
fn every_error_displays_on_its_own_line() {
    let shown = parse(MANY_MISTAKES).unwrap_err().to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 8, "{shown}");
    assert!(lines[0].starts_with("/etc/rw.toml:3:1: key `server.bindd`: unknown field `bindd`"), "{shown}");
    assert!(lines[7].starts_with("/etc/rw.toml:25:11: key `pool[1].timeout`: "), "{shown}");
    // One error displays exactly as a single ConfigError always did.
    let one = parse("[server]\nbacklog = 0\n").unwrap_err();
    assert_eq!(one.len(), 1);
    assert_eq!(one.to_string(), one[0].to_string());
}

#[test]
fn follow_on_errors_are_not_reported() {
    // A misspelt worker kind is one error, not also "expected exactly one of ..., got none".
    let err = parse_err("[[pool]]\nname = \"a\"\nroutes = [\"/a/**\"]\nnativ = \"echo\"\n");
    assert_eq!(err.key.as_deref(), Some("pool[0].nativ"), "{err}");
    // A wrong-typed required key is not also missing.
    let err = parse_err("[[pool]]\nname = 3\nroutes = [\"/a/**\"]\nnative = \"echo\"\n");
    assert_eq!((err.key.as_deref(), err.line), (Some("pool[0].name"), Some(2)), "{err}");
    let err = parse_err("[[sync]]\npath = \"/h\"\nkind = \"nope\"\n");
    assert_eq!(err.key.as_deref(), Some("sync[0].kind"), "{err}");
    // A misspelt `keys` is not also "no keys".
    let err = parse_err("[auth]\nkyes = [\"k\"]\n");
    assert_eq!(err.key.as_deref(), Some("auth.kyes"), "{err}");
    // A bad value is not compared with the keys that depend on it.
    let err = parse_err("[server]\nmax_buffered_bytes = 1000\nmax_connection_buffer = 2097152\n");
    assert_eq!(err.key.as_deref(), Some("server.max_buffered_bytes"), "{err}");
    let err = parse_err(&format!("{POOL}stuck_timeout = -1\nheartbeat_interval = 90\n"));
    assert_eq!(err.key.as_deref(), Some("pool[0].stuck_timeout"), "{err}");
    // A bad element of an array: the array is dropped, its other elements not re-checked.
    let err = parse_err("[server]\nbind = [\"127.0.0.1:1\", 3]\n");
    assert_eq!((err.key.as_deref(), err.line, err.column), (Some("server.bind[1]"), Some(2), Some(24)), "{err}");
    // A duplicate of a bad name is the bad name, once.
    let text = "[[pool]]\nname = \"a b\"\nroutes = [\"/a/**\"]\nnative = \"echo\"\n\
                [[pool]]\nname = \"a b\"\nroutes = [\"/b/**\"]\nnative = \"echo\"\n";
    let errs = parse_errs(text);
    let keys: Vec<_> = errs.iter().map(|e| e.key.as_deref().unwrap()).collect();
    assert_eq!(keys, ["pool[0].name", "pool[1].name"]);
    assert!(errs.iter().all(|e| e.message.contains("1-64 characters")), "{}", show(&errs));
}

#[test]
fn errors_in_every_element_are_reported() {
    let text = r#"
[[static]]
prefix = "/a"
path = "nope"
index = "a/b"
[[sync]]
path = "no-slash"
kind = "redirect"
status = 200
[[sync]]
path = "/c"
kind = "custom"
body = "x"
[[pool]]
name = "a"
routes = ["/a/**", "/a/**"]
command = []
log_level = "loud"
env = { "A=B" = "x" }
[[pool]]
name = "a"
routes = ["/a/**"]
python = "mod"
interpreter = ""
"#;
    let errs = parse_errs(text);
    let got: Vec<_> = errs.iter().map(|e| e.key.as_deref().unwrap()).collect();
    assert_eq!(
        got,
        [
            "static[0].path",
            "static[0].index",
            // A missing key is placed at its table's header, before the keys it has.
            "sync[0].location",
            "sync[0].path",
            "sync[0].status",
            "sync[1].name",
            "sync[1].body",
            "pool[0].routes[1]",
            "pool[0].command",
            "pool[0].log_level",
            "pool[0].env.\"A=B\"",
            "pool[1].name",
            "pool[1].routes[0]",
            "pool[1].python",
            "pool[1].interpreter",
        ],
        "{}",
        show(&errs)
    );
}

#[test]
fn missing_required_keys_are_errors_at_their_table() {
    let errs = parse_errs("[[pool]]\nnative = \"echo\"\n[[static]]\nindex = \"i\"\n[[sync]]\n");
    let got: Vec<_> = errs.iter().map(|e| (e.line.unwrap(), e.key.as_deref().unwrap())).collect();
    assert_eq!(
        got,
        [
            (1, "pool[0].name"),
            (1, "pool[0].routes"),
            (3, "static[0].prefix"),
            (3, "static[0].path"),
            (5, "sync[0].path"),
            (5, "sync[0].kind"),
        ],
        "{}",
        show(&errs)
    );
    assert!(errs.iter().all(|e| e.message.contains("required key is missing")));
}

#[test]
fn a_syntax_error_is_reported_alone() {
    let errs = parse_errs("[server]\nbindd = 3\nbacklog = = 1\n");
    assert_eq!(errs.len(), 1, "{}", show(&errs));
    assert_eq!((errs[0].line, errs[0].key.as_deref()), (Some(3), None));
}

#[test]
fn many_unknown_keys_are_all_reported() {
    let text: String = (0..50).map(|i| format!("key{i} = {i}\n")).collect();
    let errs = parse_errs(&format!("[server]\n{text}"));
    assert_eq!(errs.len(), 50);
    assert_eq!(errs[49].line, Some(51));
}

#[test]
fn threads_is_auto_a_count_and_never_more_than_one_with_native_pools() {
    assert_eq!(parse("").unwrap().server.threads, Threads::Auto);
    assert_eq!(parse("[server]\nthreads = \"auto\"\n").unwrap().server.threads, Threads::Auto);
    assert_eq!(parse("[server]\nthreads = 4\n").unwrap().server.threads, Threads::Fixed(4));
    assert_err("[server]\nthreads = 0\n", "server.threads", 2, 11, "from 1 to 64");
    assert_err("[server]\nthreads = 65\n", "server.threads", 2, 11, "from 1 to 64");
    assert_err("[server]\nthreads = \"many\"\n", "server.threads", 2, 11, "\"many\"");
    let native = format!("[server]\nthreads = 2\n{POOL}");
    assert_err(&native, "server.threads", 2, 11, "pool[0] forks native workers");
    let one = format!("[server]\nthreads = 1\n{POOL}");
    assert_eq!(parse(&one).unwrap().server.threads, Threads::Fixed(1));
}
