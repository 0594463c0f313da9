//! Validation of `[auth]`: API keys.

use std::path::Path;

use super::file::FileAuth;
use super::validate::*;
use super::*;

/// The section as far as it is valid; errors go to `errs`.
pub(super) fn validate_auth(raw: FileAuth, base_dir: &Path, errs: &mut Problems) -> AuthConfig {
    let before = errs.count();
    let header = raw.header.unwrap_or_else(|| DEFAULT_AUTH_HEADER.to_string());
    if header.is_empty() || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        errs.push(invalid("auth.header", format!("expected a header name, got {header:?}")));
    }
    let mut keys = Vec::new();
    for (i, key) in raw.keys.into_iter().enumerate() {
        if key.is_empty() || key.chars().any(|c| c.is_control()) {
            errs.push(invalid(format!("auth.keys[{i}]"), "expected a non-empty key without control characters"));
        } else {
            keys.push(key);
        }
    }
    if let Some(file) = raw.keys_file {
        let path = base_dir.join(&file);
        match std::fs::read_to_string(&path) {
            // One key per line; blank lines and '#' comments are skipped.
            Ok(text) => keys.extend(
                text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).map(String::from),
            ),
            Err(err) => errs.push(invalid("auth.keys_file", format!("could not read {}: {err}", path.display()))),
        }
    }
    // With a bad key or an unreadable file already reported, "no keys" would say it again.
    if keys.is_empty() && errs.count() == before {
        errs.push(invalid("auth", "expected at least one key in `keys` or `keys_file`"));
    }
    AuthConfig { header: header.to_ascii_lowercase(), keys, sync_routes: raw.sync_routes }
}
