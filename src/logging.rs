//! Logging: env_logger for the dispatcher (with syslog priority prefixes under systemd)
//! and the access log.

use std::io::Write;

use crate::config::AccessLog;
use crate::dispatcher::AccessInfo;

/// Set up env_logger: `RUST_LOG` wins, default `info`. Under systemd (`JOURNAL_STREAM`
/// set) lines carry `<N>` priority prefixes instead of timestamps.
pub fn init() {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format(|buf, record| {
            let prio = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                _ => 7,
            };
            writeln!(buf, "<{prio}>{}: {}", record.target(), record.args())
        });
    }
    let _ = builder.try_init();
}

/// One access-log line, in the configured format, at info level on target `access`.
pub fn access(format: AccessLog, a: &AccessInfo, status: u16, bytes: u64) {
    if format == AccessLog::Off || !log::log_enabled!(target: "access", log::Level::Info) {
        return;
    }
    let elapsed_ms = a.started.map(|t| t.elapsed().as_secs_f64() * 1000.0).unwrap_or(0.0);
    match format {
        AccessLog::Off => {}
        AccessLog::Combined => log::info!(
            target: "access",
            "{} - - [{}] \"{} {} HTTP/{}\" {} {} \"{}\" \"{}\" {:.3}ms",
            a.remote,
            crate::http::date::clf_now(),
            a.method,
            a.target,
            a.version,
            status,
            bytes,
            a.referer,
            a.user_agent,
            elapsed_ms
        ),
        AccessLog::Json => {
            let line = serde_json::json!({
                "remote": a.remote, "method": a.method, "target": a.target, "version": a.version,
                "status": status, "bytes": bytes, "referer": a.referer, "user_agent": a.user_agent,
                "ms": elapsed_ms,
            });
            log::info!(target: "access", "{line}");
        }
    }
}
