//! Validation of `[[sync]]` routes: built-in handlers answered by the dispatcher.

use super::file::{FileSync, FileSyncKind};
use super::validate::*;
use super::*;

pub(super) fn validate_sync(raw: FileSync, key: &str, auth: Option<&AuthConfig>) -> Check<SyncRoute> {
    check_url_path(&raw.path, &format!("{key}.path"))?;
    let kind_name = match raw.kind {
        FileSyncKind::Health => "health",
        FileSyncKind::Status => "status",
        FileSyncKind::Metrics => "metrics",
        FileSyncKind::Ready => "ready",
        FileSyncKind::Live => "live",
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
        FileSyncKind::Ready => SyncKind::Ready,
        FileSyncKind::Live => SyncKind::Live,
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
