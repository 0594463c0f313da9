//! Validation: `FileConfig` → [`Config`], plus the checks shared by every section.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use std::collections::BTreeMap;

use super::auth::validate_auth;
use super::file::{FileConfig, Seconds};
use super::pools::validate_pool;
use super::server::validate_server;
use super::statics::validate_static;
use super::sync::validate_sync;
use super::*;

/// A semantic error, located later by its key path.
pub(super) struct Invalid {
    pub(super) key: String,
    pub(super) message: String,
}

pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { key: key.into(), message: message.into() }
}

pub(super) type Check<T> = Result<T, Invalid>;

/// Message for a required key that is not there; the key itself names what is missing.
pub(super) const MISSING: &str = "required key is missing";

/// The semantic errors found so far. Validation goes on after each one with a stand-in
/// value, so one run reports them all; a config with any error is refused, so stand-ins
/// never reach a running server.
#[derive(Default)]
pub(super) struct Problems(Vec<Invalid>);

impl Problems {
    pub(super) fn push(&mut self, err: Invalid) {
        self.0.push(err);
    }

    /// The value, or `None` once the error is recorded.
    pub(super) fn ok<T>(&mut self, check: Check<T>) -> Option<T> {
        check.map_err(|err| self.push(err)).ok()
    }

    /// The value, or `fallback` once the error is recorded.
    pub(super) fn or<T>(&mut self, check: Check<T>, fallback: T) -> T {
        self.ok(check).unwrap_or(fallback)
    }

    /// How many so far: compare before and after a part to learn whether it was clean.
    pub(super) fn count(&self) -> usize {
        self.0.len()
    }
}

/// Every semantic error of `raw`, in the order found (sections in file-format order, each
/// element's keys in turn).
pub(super) fn validate(raw: FileConfig, source: &str, base_dir: &Path) -> Result<Config, Vec<Invalid>> {
    let mut errs = Problems::default();
    let server = validate_server(raw.server, base_dir, &mut errs);
    let mut statics: Vec<StaticMount> = Vec::with_capacity(raw.statics.len());
    for (i, file) in raw.statics.into_iter().enumerate() {
        let Some(mount) = validate_static(file, &format!("static[{i}]"), base_dir, &mut errs) else { continue };
        if statics.iter().any(|m| m.prefix == mount.prefix) {
            errs.push(invalid(format!("static[{i}].prefix"), format!("duplicate static prefix {:?}", mount.prefix)));
        }
        statics.push(mount);
    }
    let auth = raw.auth.map(|file| validate_auth(file, base_dir, &mut errs));
    let mut syncs: Vec<SyncRoute> = Vec::with_capacity(raw.sync.len());
    for (i, file) in raw.sync.into_iter().enumerate() {
        let Some(route) = validate_sync(file, &format!("sync[{i}]"), auth.as_ref(), &mut errs) else { continue };
        if syncs.iter().any(|r| r.path == route.path) {
            errs.push(invalid(format!("sync[{i}].path"), format!("duplicate sync path {:?}", route.path)));
        }
        syncs.push(route);
    }
    let mut pools: Vec<PoolConfig> = Vec::with_capacity(raw.pool.len());
    for (i, file) in raw.pool.into_iter().enumerate() {
        let pool = validate_pool(file, &format!("pool[{i}]"), base_dir, &server.limits, &pools, &mut errs);
        pools.push(pool);
    }
    if let Threads::Fixed(n) = server.threads
        && n > 1
        && let Some(p) = pools.iter().position(|p| matches!(p.worker, WorkerKind::Native(_)))
    {
        errs.push(invalid(
            "server.threads",
            format!(
                "expected 1 (or \"auto\") with native pools, got {n}: pool[{p}] forks native workers from the \
                 dispatcher without exec, which a multi-threaded process cannot do safely"
            ),
        ));
    }
    if errs.count() > 0 {
        return Err(errs.0);
    }
    Ok(Config { source: source.to_string(), server, statics, syncs, auth, pools })
}

pub(super) fn route_text(route: &RoutePattern) -> String {
    match route {
        RoutePattern::Prefix(p) => format!("\"{p}/**\""),
        RoutePattern::Exact(p) => format!("{p:?}"),
        RoutePattern::Fallback => "\"/**\" (fallback)".to_string(),
    }
}

/// A duration that must be > 0.
pub(super) fn positive_secs(value: Option<Seconds>, default: f64, key: &str) -> Check<Duration> {
    let secs = value.map_or(default, |s| s.0);
    if !secs.is_finite() || secs <= 0.0 {
        return Err(invalid(key, format!("expected a number of seconds > 0, got {secs}")));
    }
    secs_to_duration(secs, key)
}

/// A duration that may be 0.
pub(super) fn non_negative_secs(value: Option<Seconds>, default: f64, key: &str) -> Check<Duration> {
    let secs = value.map_or(default, |s| s.0);
    if !secs.is_finite() || secs < 0.0 {
        return Err(invalid(key, format!("expected a number of seconds >= 0, got {secs}")));
    }
    secs_to_duration(secs, key)
}

pub(super) fn secs_to_duration(secs: f64, key: &str) -> Check<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| invalid(key, format!("duration of {secs} seconds is too large")))
}

/// An integer that must not exceed `max`; `why` explains the bound.
pub(super) fn at_most(value: Option<u64>, default: u64, max: u64, key: &str, why: &str) -> Check<u64> {
    let v = value.unwrap_or(default);
    if v > max {
        return Err(invalid(key, format!("expected an integer <= {max}, got {v}: {why}")));
    }
    Ok(v)
}

pub(super) fn at_least<T: PartialOrd + fmt::Display + Copy>(
    value: Option<T>,
    default: T,
    min: T,
    key: &str,
) -> Check<T> {
    let v = value.unwrap_or(default);
    if v < min {
        return Err(invalid(key, format!("expected an integer >= {min}, got {v}")));
    }
    Ok(v)
}

/// Header name → lowercase; rejects names that are not HTTP tokens and values with
/// control characters (no response splitting from a config typo). Bad ones are recorded
/// and left out.
pub(super) fn validate_headers(raw: BTreeMap<String, String>, key: &str, errs: &mut Problems) -> Vec<(String, String)> {
    let mut headers = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let is_token =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !is_token {
            errs.push(invalid(format!("{key}.{name:?}"), "expected a header name made of letters, digits and -"));
        } else if value.chars().any(|c| c.is_control() && c != '\t') {
            errs.push(invalid(format!("{key}.{name}"), "header value must not contain control characters"));
        } else {
            headers.push((name.to_ascii_lowercase(), value));
        }
    }
    headers
}

/// A URL path as written in the config: starts with '/', no query, fragment, blanks,
/// `//` or dot segments.
pub(super) fn check_url_path(path: &str, key: &str) -> Check<()> {
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
