//! Validation of `[server]` and `[server.limits]`.

use std::path::Path;
use std::time::Duration;

use super::file::{FileAccessLog, FileServer, FileThreads, Seconds};
use super::validate::*;
use super::*;

pub(super) fn validate_server(raw: FileServer, base_dir: &Path, errs: &mut Problems) -> ServerConfig {
    let binds = raw.bind.map_or_else(|| vec![DEFAULT_BIND.to_string()], |b| b.0);
    if binds.is_empty() {
        errs.push(invalid("server.bind", "expected at least one address"));
    }
    let mut bind = Vec::with_capacity(binds.len());
    for (i, text) in binds.iter().enumerate() {
        let key = format!("server.bind[{i}]");
        match parse_bind(text, base_dir) {
            Err(msg) => errs.push(invalid(key, msg)),
            Ok(addr) if bind.contains(&addr) => errs.push(invalid(key, format!("duplicate bind address {text:?}"))),
            Ok(addr) => bind.push(addr),
        }
    }
    let limits = raw.limits;
    let limits = Limits {
        max_request_line: errs.or(
            at_least(limits.max_request_line, DEFAULT_MAX_REQUEST_LINE, 16, "server.limits.max_request_line"),
            DEFAULT_MAX_REQUEST_LINE,
        ),
        max_headers: errs
            .or(at_least(limits.max_headers, DEFAULT_MAX_HEADERS, 1, "server.limits.max_headers"), DEFAULT_MAX_HEADERS),
        max_header_bytes: errs.or(
            at_least(limits.max_header_bytes, DEFAULT_MAX_HEADER_BYTES, 64, "server.limits.max_header_bytes"),
            DEFAULT_MAX_HEADER_BYTES,
        ),
        max_body_bytes: errs.or(
            at_most(
                limits.max_body_bytes.map(|b| b.0),
                DEFAULT_MAX_BODY_BYTES,
                MAX_FRAME_BODY,
                "server.limits.max_body_bytes",
                "bodies reach workers in frames whose body length is 32 bits",
            ),
            DEFAULT_MAX_BODY_BYTES,
        ),
    };
    let max_buffered_bytes = errs.ok(at_least(
        raw.max_buffered_bytes.map(|b| b.0),
        DEFAULT_MAX_BUFFERED_BYTES,
        MIN_MAX_BUFFERED_BYTES,
        "server.max_buffered_bytes",
    ));
    let max_connection_buffer = errs.ok(at_least(
        raw.max_connection_buffer.map(|b| usize::try_from(b.0).unwrap_or(usize::MAX)),
        DEFAULT_MAX_CONNECTION_BUFFER,
        MIN_MAX_CONNECTION_BUFFER,
        "server.max_connection_buffer",
    ));
    // Compared only when both are valid: a bad one would make this a follow-on error.
    if let (Some(total), Some(per)) = (max_buffered_bytes, max_connection_buffer)
        && per as u64 > total
    {
        errs.push(invalid(
            "server.max_connection_buffer",
            format!(
                "expected at most server.max_buffered_bytes ({total}), got {per}: \
                 one connection could never fill its own buffer"
            ),
        ));
    }
    let positive = |errs: &mut Problems, value: Option<Seconds>, default: f64, key: &str| {
        errs.or(positive_secs(value, default, key), Duration::from_secs_f64(default))
    };
    let non_negative = |errs: &mut Problems, value: Option<Seconds>, default: f64, key: &str| {
        errs.or(non_negative_secs(value, default, key), Duration::from_secs_f64(default))
    };
    ServerConfig {
        bind,
        backlog: errs.or(at_least(raw.backlog, DEFAULT_BACKLOG, 1, "server.backlog"), DEFAULT_BACKLOG),
        max_pending: errs
            .or(at_least(raw.max_pending, DEFAULT_MAX_PENDING, 1, "server.max_pending"), DEFAULT_MAX_PENDING),
        max_connections: errs.or(
            at_least(raw.max_connections, DEFAULT_MAX_CONNECTIONS, 1, "server.max_connections"),
            DEFAULT_MAX_CONNECTIONS,
        ),
        shutdown_timeout: non_negative(errs, raw.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT, "server.shutdown_timeout"),
        keepalive_timeout: positive(errs, raw.keepalive_timeout, DEFAULT_KEEPALIVE_TIMEOUT, "server.keepalive_timeout"),
        header_timeout: positive(errs, raw.header_timeout, DEFAULT_HEADER_TIMEOUT, "server.header_timeout"),
        body_timeout: positive(errs, raw.body_timeout, DEFAULT_BODY_TIMEOUT, "server.body_timeout"),
        write_timeout: positive(errs, raw.write_timeout, DEFAULT_WRITE_TIMEOUT, "server.write_timeout"),
        limits,
        access_log: match raw.access_log {
            None => DEFAULT_ACCESS_LOG,
            Some(FileAccessLog::Off) => AccessLog::Off,
            Some(FileAccessLog::Combined) => AccessLog::Combined,
            Some(FileAccessLog::Json) => AccessLog::Json,
        },
        max_buffered_bytes: max_buffered_bytes.unwrap_or(DEFAULT_MAX_BUFFERED_BYTES),
        max_connection_buffer: max_connection_buffer.unwrap_or(DEFAULT_MAX_CONNECTION_BUFFER),
        body_min_rate: raw.body_min_rate.map_or(DEFAULT_BODY_MIN_RATE, |b| b.0),
        fast_stop_timeout: non_negative(
            errs,
            raw.fast_stop_timeout,
            DEFAULT_FAST_STOP_TIMEOUT,
            "server.fast_stop_timeout",
        ),
        threads: errs.or(threads(raw.threads), Threads::Auto),
    }
}

fn threads(raw: Option<FileThreads>) -> Check<Threads> {
    const KEY: &str = "server.threads";
    match raw {
        None => Ok(Threads::Auto),
        Some(FileThreads::Word(w)) if w == "auto" => Ok(Threads::Auto),
        Some(FileThreads::Word(w)) => {
            Err(invalid(KEY, format!("expected an integer from 1 to {MAX_THREADS} or \"auto\", got {w:?}")))
        }
        Some(FileThreads::Count(n)) => match usize::try_from(n) {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(Threads::Fixed(n)),
            _ => Err(invalid(KEY, format!("expected an integer from 1 to {MAX_THREADS} or \"auto\", got {n}"))),
        },
    }
}

/// `IP:PORT`, `[IPv6]:PORT` or `unix:PATH` (relative paths resolve against the config dir).
pub(super) fn parse_bind(text: &str, base_dir: &Path) -> Result<BindAddr, String> {
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
