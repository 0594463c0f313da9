//! Validation of `[auth]`: API keys.

use std::path::Path;

use super::file::FileAuth;
use super::validate::*;
use super::*;

pub(super) fn validate_auth(raw: FileAuth, base_dir: &Path) -> Check<AuthConfig> {
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
