//! Validation of `[[sync]]` routes: built-in handlers answered by the dispatcher.

use super::file::{FileSync, FileSyncKind};
use super::validate::*;
use super::*;

/// The route, or `None` when its path or kind is missing or bad; errors go to `errs`.
pub(super) fn validate_sync(
    raw: FileSync,
    key: &str,
    auth: Option<&AuthConfig>,
    errs: &mut Problems,
) -> Option<SyncRoute> {
    let k = |field: &str| format!("{key}.{field}");
    let path = match &raw.path {
        Some(path) => errs.ok(check_url_path(path, &k("path"))).map(|()| path.clone()),
        None => {
            errs.push(invalid(k("path"), MISSING));
            None
        }
    };
    let kind = match raw.kind {
        Some(kind) => validate_kind(kind, &raw, key, errs),
        None => {
            errs.push(invalid(k("kind"), MISSING));
            None
        }
    };
    let auth = match (raw.auth, auth) {
        (Some(true), None) => {
            errs.push(invalid(k("auth"), "auth = true needs an [auth] section with keys"));
            false
        }
        (Some(explicit), Some(_)) => explicit,
        (None, Some(auth)) => auth.sync_routes,
        (_, None) => false,
    };
    Some(SyncRoute { path: path?, kind: kind?, auth })
}

fn validate_kind(kind: FileSyncKind, raw: &FileSync, key: &str, errs: &mut Problems) -> Option<SyncKind> {
    let k = |field: &str| format!("{key}.{field}");
    let kind_name = match kind {
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
    let allowed: &[&str] = match kind {
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
    for (field, _) in present.iter().filter(|(field, set)| *set && !allowed.contains(field)) {
        errs.push(invalid(k(field), format!("`{field}` is not used by kind = \"{kind_name}\"")));
    }
    Some(match kind {
        FileSyncKind::Health => SyncKind::Health,
        FileSyncKind::Status => SyncKind::Status,
        FileSyncKind::Metrics => SyncKind::Metrics,
        FileSyncKind::Ready => SyncKind::Ready,
        FileSyncKind::Live => SyncKind::Live,
        FileSyncKind::StaticResponse => {
            let status = raw.status.unwrap_or(DEFAULT_STATIC_RESPONSE_STATUS);
            if !(200..=599).contains(&status) {
                errs.push(invalid(k("status"), format!("expected a status in 200..=599, got {status}")));
            }
            let mut headers = validate_headers(raw.headers.clone().unwrap_or_default(), &k("headers"), errs);
            let has_type = headers.iter().any(|(name, _)| name == "content-type");
            match &raw.content_type {
                Some(_) if has_type => {
                    errs.push(invalid(
                        k("content_type"),
                        "content type given twice: in `content_type` and in `headers`",
                    ));
                }
                Some(ct) if ct.chars().any(char::is_control) => {
                    errs.push(invalid(k("content_type"), "must not contain control characters"));
                }
                Some(ct) => headers.push(("content-type".to_string(), ct.clone())),
                None if !has_type => {
                    headers.push(("content-type".to_string(), DEFAULT_STATIC_RESPONSE_CONTENT_TYPE.to_string()));
                }
                None => {}
            }
            SyncKind::StaticResponse { status, body: raw.body.clone().unwrap_or_default(), headers }
        }
        FileSyncKind::Redirect => {
            let status = raw.status.unwrap_or(DEFAULT_REDIRECT_STATUS);
            let location = match &raw.location {
                None => {
                    errs.push(invalid(k("location"), "kind = \"redirect\" requires `location`"));
                    None
                }
                Some(location) if location.is_empty() || location.chars().any(|c| c.is_control() || c == ' ') => {
                    errs.push(invalid(k("location"), format!("expected a URL or path, got {location:?}")));
                    None
                }
                Some(location) => Some(location.clone()),
            };
            if ![301, 302, 303, 307, 308].contains(&status) {
                errs.push(invalid(k("status"), format!("expected 301, 302, 303, 307 or 308, got {status}")));
            }
            SyncKind::Redirect { location: location?, status }
        }
        FileSyncKind::Custom => match &raw.name {
            None => {
                errs.push(invalid(k("name"), "kind = \"custom\" requires `name`"));
                return None;
            }
            Some(name) if name.is_empty() => {
                errs.push(invalid(k("name"), "expected a non-empty handler name"));
                return None;
            }
            Some(name) => SyncKind::Custom(name.clone()),
        },
    })
}
