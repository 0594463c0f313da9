//! Validation of `[[pool]]`: routes, worker kind and supervision settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{FilePool, Seconds};
use super::validate::*;
use super::*;

/// `*` or `/**` → fallback; `/x/**` → prefix `/x`; anything else → exact path.
pub(super) fn parse_route(text: &str, key: &str) -> Check<RoutePattern> {
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

/// The pool as far as it is valid (stand-ins for bad values); errors go to `errs`.
/// `earlier` are the pools before it, for duplicate names and routes.
pub(super) fn validate_pool(
    raw: FilePool,
    key: &str,
    base_dir: &Path,
    limits: &Limits,
    earlier: &[PoolConfig],
    errs: &mut Problems,
) -> PoolConfig {
    let k = |field: &str| format!("{key}.{field}");
    match raw.name.as_deref() {
        None => errs.push(invalid(k("name"), MISSING)),
        Some(name)
            if name.is_empty()
                || name.len() > 64
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            errs.push(invalid(k("name"), format!("expected 1-64 characters from [A-Za-z0-9_-], got {name:?}")));
        }
        Some(name) if earlier.iter().any(|p| p.name == name) => {
            errs.push(invalid(k("name"), format!("duplicate pool name {name:?}")));
        }
        Some(_) => {}
    }
    let mut routes = Vec::new();
    match &raw.routes {
        None => errs.push(invalid(k("routes"), MISSING)),
        Some(texts) if texts.is_empty() => errs.push(invalid(k("routes"), "expected at least one route pattern")),
        Some(texts) => {
            for (i, text) in texts.iter().enumerate() {
                let route_key = format!("{key}.routes[{i}]");
                let Some(route) = errs.ok(parse_route(text, &route_key)) else { continue };
                if routes.contains(&route) {
                    errs.push(invalid(route_key, format!("duplicate route {text:?}")));
                } else if let Some(other) = earlier.iter().find(|p| p.routes.contains(&route)) {
                    errs.push(invalid(
                        route_key,
                        format!("route {} is already claimed by pool {:?}", route_text(&route), other.name),
                    ));
                } else {
                    routes.push(route);
                }
            }
        }
    }

    let worker = validate_worker(&raw, key, base_dir, errs);

    let num_workers = raw.num_workers.unwrap_or(DEFAULT_NUM_WORKERS as i64);
    let num_workers = if num_workers < 1 || num_workers > MAX_NUM_WORKERS as i64 {
        errs.push(invalid(
            k("num_workers"),
            format!("expected an integer in 1..={MAX_NUM_WORKERS}, got {num_workers}"),
        ));
        DEFAULT_NUM_WORKERS
    } else {
        num_workers as usize
    };
    let positive = |errs: &mut Problems, value: Option<Seconds>, default: f64, field: &str| {
        errs.or(positive_secs(value, default, &k(field)), Duration::from_secs_f64(default))
    };
    let non_negative = |errs: &mut Problems, value: Option<Seconds>, default: f64, field: &str| {
        errs.or(non_negative_secs(value, default, &k(field)), Duration::from_secs_f64(default))
    };
    let stuck_timeout = errs.ok(positive_secs(raw.stuck_timeout, DEFAULT_STUCK_TIMEOUT, &k("stuck_timeout")));
    let heartbeat_interval =
        errs.ok(positive_secs(raw.heartbeat_interval, DEFAULT_HEARTBEAT_INTERVAL, &k("heartbeat_interval")));
    // Compared only when both are valid: a bad one would make this a follow-on error.
    if let (Some(stuck), Some(heartbeat)) = (stuck_timeout, heartbeat_interval)
        && heartbeat >= stuck
    {
        errs.push(invalid(
            k("heartbeat_interval"),
            format!(
                "expected less than stuck_timeout ({}s), got {}s: healthy workers would be killed",
                stuck.as_secs_f64(),
                heartbeat.as_secs_f64()
            ),
        ));
    }
    let recovery = non_negative(errs, raw.recovery_interval, 0.0, "recovery_interval");
    let permanent_failure_exitcode = match raw.permanent_failure_exitcode {
        Some(code) if !(1..=255).contains(&code) => {
            errs.push(invalid(
                k("permanent_failure_exitcode"),
                format!("expected an exit code in 1..=255, got {code}"),
            ));
            None
        }
        other => other,
    };
    let log_level = raw.log_level.clone().unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string()).to_ascii_lowercase();
    if !LOG_LEVELS.contains(&log_level.as_str()) {
        errs.push(invalid(k("log_level"), format!("expected one of {}, got {log_level:?}", LOG_LEVELS.join(", "))));
    }
    if raw.memory_limit_mb == Some(0) {
        errs.push(invalid(k("memory_limit_mb"), "expected an integer >= 1 (omit the key for no limit), got 0"));
    }
    for (name, value) in &raw.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            errs.push(invalid(format!("{key}.env.{name:?}"), "expected an environment variable name without '='"));
        } else if value.contains('\0') {
            errs.push(invalid(format!("{key}.env.{name}"), "value must not contain NUL"));
        }
    }
    let cwd = raw.cwd.as_ref().and_then(|dir| {
        let path = base_dir.join(dir);
        if path.is_dir() {
            Some(path)
        } else {
            errs.push(invalid(k("cwd"), format!("expected an existing directory, {} is not one", path.display())));
            None
        }
    });
    for (field, value) in [("user", &raw.user), ("group", &raw.group)] {
        if value.as_deref() == Some("") {
            errs.push(invalid(k(field), "expected a name or numeric id"));
        }
    }
    let max_frame_bytes = errs.or(
        frame_limit(raw.max_frame_bytes.map(|b| b.0), limits.max_body_bytes, &k("max_frame_bytes")),
        DEFAULT_MAX_FRAME_BYTES,
    );
    let max_output_rate = errs.or(
        at_least(raw.max_output_rate.map(|b| b.0), DEFAULT_MAX_OUTPUT_RATE, MIN_MAX_OUTPUT_RATE, &k("max_output_rate")),
        DEFAULT_MAX_OUTPUT_RATE,
    );
    let mut kwargs = match raw.kwargs {
        Some(table) => errs.or(toml_table_to_json(table, &k("kwargs")), serde_json::Map::new()),
        None => serde_json::Map::new(),
    };
    if raw.asgi.is_some() {
        // The ASGI adapter reads its options from CONFIG kwargs (docs/python.md).
        let concurrency = raw.concurrency.unwrap_or(DEFAULT_ASGI_CONCURRENCY);
        if !(1..=100_000).contains(&concurrency) {
            errs.push(invalid(k("concurrency"), format!("expected an integer in 1..=100000, got {concurrency}")));
        }
        kwargs.insert("concurrency".into(), concurrency.clamp(1, 100_000).into());
        for (field, value, allowed) in [
            ("loop", &raw.event_loop, &["auto", "asyncio", "uvloop"][..]),
            ("lifespan", &raw.lifespan, &["auto", "on", "off"][..]),
        ] {
            let value = value.clone().unwrap_or_else(|| "auto".into());
            if !allowed.contains(&value.as_str()) {
                errs.push(invalid(k(field), format!("expected one of {}, got {value:?}", allowed.join(", "))));
            }
            kwargs.insert(field.into(), value.into());
        }
    }
    let preload = raw.preload.unwrap_or(false);
    if preload && raw.python.is_none() && raw.wsgi.is_none() && raw.asgi.is_none() {
        errs.push(invalid(
            k("preload"),
            "preload is for python, wsgi and asgi pools (a fork-server imports the app once)",
        ));
    }
    let prefetch = raw.prefetch.unwrap_or(DEFAULT_PREFETCH);
    if !(0..=MAX_PREFETCH).contains(&prefetch) {
        errs.push(invalid(k("prefetch"), format!("expected an integer in 0..={MAX_PREFETCH}, got {prefetch}")));
    }
    let max_message_bytes = errs.or(
        at_least(raw.max_message_bytes.map(|b| b.0), DEFAULT_MAX_MESSAGE_BYTES, 125, &k("max_message_bytes")),
        DEFAULT_MAX_MESSAGE_BYTES,
    );
    if max_message_bytes > max_frame_bytes.min(MAX_FRAME_BODY) {
        errs.push(invalid(
            k("max_message_bytes"),
            format!("expected at most max_frame_bytes ({max_frame_bytes}): a message travels in one frame"),
        ));
    }
    PoolConfig {
        name: raw.name.unwrap_or_default(),
        routes,
        worker,
        num_workers,
        timeout: positive(errs, raw.timeout, DEFAULT_POOL_TIMEOUT, "timeout"),
        stuck_timeout: stuck_timeout.unwrap_or(Duration::from_secs_f64(DEFAULT_STUCK_TIMEOUT)),
        heartbeat_interval: heartbeat_interval.unwrap_or(Duration::from_secs_f64(DEFAULT_HEARTBEAT_INTERVAL)),
        max_restarts: raw.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS),
        restart_window: positive(errs, raw.restart_window, DEFAULT_RESTART_WINDOW, "restart_window"),
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
        stuck_grace: non_negative(errs, raw.stuck_grace, DEFAULT_STUCK_GRACE, "stuck_grace"),
        exit_grace: positive(errs, raw.exit_grace, DEFAULT_EXIT_GRACE, "exit_grace"),
        max_output_rate,
        readiness: raw.readiness.unwrap_or(DEFAULT_READINESS),
        websocket: raw.websocket.unwrap_or(true),
        max_message_bytes,
        websocket_idle_timeout: positive(
            errs,
            raw.websocket_idle_timeout,
            DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
            "websocket_idle_timeout",
        ),
        prefetch: prefetch.clamp(0, MAX_PREFETCH) as u32,
        preload,
    }
}

/// Exactly one of `native`, `command`, `python`, `wsgi`, and the keys that go with it. A
/// bad one is recorded and stood in for by an unnamed native worker.
fn validate_worker(raw: &FilePool, key: &str, base_dir: &Path, errs: &mut Problems) -> WorkerKind {
    let k = |field: &str| format!("{key}.{field}");
    let stand_in = || WorkerKind::Native(String::new());
    let kinds: Vec<&str> = [
        ("native", raw.native.is_some()),
        ("command", raw.command.is_some()),
        ("python", raw.python.is_some()),
        ("wsgi", raw.wsgi.is_some()),
        ("asgi", raw.asgi.is_some()),
    ]
    .into_iter()
    .filter_map(|(kind, set)| set.then_some(kind))
    .collect();
    let is_python = raw.python.is_some() || raw.wsgi.is_some() || raw.asgi.is_some();
    if !is_python {
        for (field, set) in [("interpreter", raw.interpreter.is_some()), ("module_path", raw.module_path.is_some())] {
            if set {
                errs.push(invalid(k(field), format!("`{field}` only applies to `python`, `wsgi` and `asgi` pools")));
            }
        }
    }
    if raw.factory.is_some() && raw.wsgi.is_none() && raw.asgi.is_none() {
        errs.push(invalid(k("factory"), "`factory` only applies to `wsgi` and `asgi` pools"));
    }
    if raw.asgi.is_none() {
        for (field, set) in [
            ("concurrency", raw.concurrency.is_some()),
            ("loop", raw.event_loop.is_some()),
            ("lifespan", raw.lifespan.is_some()),
        ] {
            if set {
                errs.push(invalid(k(field), format!("`{field}` only applies to `asgi` pools")));
            }
        }
    }
    if kinds.len() != 1 {
        let got = if kinds.is_empty() { "none".to_string() } else { kinds.join(" and ") };
        let at = if kinds.len() > 1 { k(kinds[1]) } else { key.to_string() };
        errs.push(invalid(
            at,
            format!("expected exactly one of `native`, `command`, `python`, `wsgi`, `asgi`, got {got}"),
        ));
        return stand_in();
    }
    let interpreter = raw.interpreter.clone().unwrap_or_else(|| DEFAULT_INTERPRETER.to_string());
    if interpreter.is_empty() {
        errs.push(invalid(k("interpreter"), "expected a program name or path"));
    }
    let module_path: Vec<PathBuf> = match &raw.module_path {
        Some(paths) => paths.0.iter().map(|p| base_dir.join(p)).collect(),
        None => vec![base_dir.to_path_buf()],
    };
    let mut python_target = |target: &String, field: &str| match target.split_once(':') {
        Some((module, attr)) if !module.is_empty() && !attr.is_empty() => target.clone(),
        _ => {
            errs.push(invalid(k(field), format!("expected `module:attribute`, got {target:?}")));
            target.clone()
        }
    };
    if let Some(target) = &raw.python {
        WorkerKind::Python { target: python_target(target, "python"), interpreter, module_path }
    } else if let Some(target) = &raw.wsgi {
        let factory = raw.factory.unwrap_or(false);
        WorkerKind::Wsgi { target: python_target(target, "wsgi"), interpreter, module_path, factory }
    } else if let Some(target) = &raw.asgi {
        let factory = raw.factory.unwrap_or(false);
        WorkerKind::Asgi { target: python_target(target, "asgi"), interpreter, module_path, factory }
    } else if let Some(native) = &raw.native {
        if native.is_empty() {
            errs.push(invalid(k("native"), "expected a native worker name"));
        }
        WorkerKind::Native(native.clone())
    } else if let Some(command) = &raw.command {
        if command.first().is_none_or(|prog| prog.is_empty()) {
            errs.push(invalid(k("command"), "expected a non-empty array: [program, args...]"));
            return stand_in();
        }
        WorkerKind::Command(resolve_command(command.clone(), base_dir))
    } else {
        unreachable!("exactly one worker kind was checked above")
    }
}

/// `command[0]` with a `/` but not absolute (`./bin/worker`, `bin/worker`) is relative to
/// the config file's directory, like every other path in the file; a bare name is left for
/// the `PATH` lookup at spawn time.
fn resolve_command(mut command: Vec<String>, base_dir: &Path) -> Vec<String> {
    if let Some(program) = command.first_mut()
        && program.contains('/')
        && !Path::new(program.as_str()).is_absolute()
    {
        let joined = base_dir.join(program.trim_start_matches("./"));
        *program = joined.display().to_string();
    }
    command
}

/// The frame limit follows the body limit so a raised `max_body_bytes` still reaches the
/// workers: default max(64 MiB, max_body_bytes + 64 KiB), capped at the wire's 32-bit body
/// length. An explicit value below what request bodies need is refused.
fn frame_limit(explicit: Option<u64>, max_body_bytes: u64, key: &str) -> Check<u64> {
    let needed = (max_body_bytes + FRAME_META_ALLOWANCE).min(MAX_FRAME_BODY);
    let Some(v) = explicit else {
        return Ok(DEFAULT_MAX_FRAME_BYTES.max(needed));
    };
    if !(MIN_MAX_FRAME_BYTES..=MAX_FRAME_BODY).contains(&v) {
        return Err(invalid(
            key,
            format!("expected a size in bytes in {MIN_MAX_FRAME_BYTES}..={MAX_FRAME_BODY}, got {v}"),
        ));
    }
    if v < needed {
        return Err(invalid(
            key,
            format!(
                "expected at least server.limits.max_body_bytes + {FRAME_META_ALLOWANCE} ({needed}), got {v}: \
                 request bodies would not fit in a frame"
            ),
        ));
    }
    Ok(v)
}

/// TOML → JSON for `kwargs`: datetimes become their TOML text; non-finite floats are refused
/// (JSON cannot carry them).
pub(super) fn toml_table_to_json(table: toml::Table, key: &str) -> Check<serde_json::Map<String, serde_json::Value>> {
    let mut map = serde_json::Map::new();
    for (name, value) in table {
        let value = toml_to_json(value, &format!("{key}.{name}"))?;
        map.insert(name, value);
    }
    Ok(map)
}

pub(super) fn toml_to_json(value: toml::Value, key: &str) -> Check<serde_json::Value> {
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
