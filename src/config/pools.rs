//! Validation of `[[pool]]`: routes, worker kind and supervision settings.

use std::path::{Path, PathBuf};

use super::file::FilePool;
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

pub(super) fn validate_pool(raw: FilePool, key: &str, base_dir: &Path, limits: &Limits) -> Check<PoolConfig> {
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
        WorkerKind::Command(resolve_command(command, base_dir))
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
    let max_frame_bytes = frame_limit(raw.max_frame_bytes.map(|b| b.0), limits.max_body_bytes, &k("max_frame_bytes"))?;
    let max_output_rate = at_least(
        raw.max_output_rate.map(|b| b.0),
        DEFAULT_MAX_OUTPUT_RATE,
        MIN_MAX_OUTPUT_RATE,
        &k("max_output_rate"),
    )?;
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
        stuck_grace: non_negative_secs(raw.stuck_grace, DEFAULT_STUCK_GRACE, &k("stuck_grace"))?,
        exit_grace: positive_secs(raw.exit_grace, DEFAULT_EXIT_GRACE, &k("exit_grace"))?,
        max_output_rate,
        readiness: raw.readiness.unwrap_or(DEFAULT_READINESS),
    })
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
