//! Static file serving: from (mounts, method, path, headers) to a response to stream.
//!
//! Owns the decision only, never socket IO: [`serve`] matches a mount, confines the path
//! to its root ([`resolve`]), opens the file once, applies conditional and range headers
//! ([`conditional`]) and returns headers plus a [`StaticBody`] that the dispatcher
//! streams (`pread`/`sendfile` from the open fd under write readiness). Files are never
//! read into memory here.
//!
//! Per request: one `open`, one `readlink` of the fd (symlink confinement) and one
//! `fstat`; a directory adds the same for its index file. No directory scans.
//!
//! Documented choices:
//! - Refusals answer with a definitive response whatever `authoritative` says:
//!   400 for malformed paths (bad `%` escape, `%00`, non-UTF-8 bytes), 404 for dot
//!   segments (`..`, `.`, raw or encoded), hidden names (any segment starting with `.`:
//!   `.git`, `.env`, `.well-known` too), encoded slashes `%2f`, backslashes raw or `%5c`,
//!   symlinks out of the root. A missing file is [`StaticOutcome::NotFound`] so a
//!   non-authoritative mount falls through.
//! - The mount prefix is matched against the raw (still encoded) path, longest first.
//! - `/static` for a mount `/static/` is a 301 to `/static/`; a directory without its
//!   trailing slash is a 301 to the slash form (the query string is not kept).
//! - GET and HEAD are served alike (the caller drops the body for HEAD; `Range` applies
//!   to GET only, RFC 9110 §14.2). Other methods on an existing file or directory get 405.
//! - Several ranges in one `Range` header get the full 200 (no multipart/byteranges).
//! - Mount headers are added to every response from the mount, errors included; a mount
//!   header replaces a generated header of the same name (e.g. its own `content-type`).
//! - No `cache-control` is generated: caching policy is the mount's headers' business;
//!   ETag/Last-Modified let clients revalidate.

pub mod conditional;
pub mod mime;
pub mod resolve;

#[cfg(test)]
mod proptests;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::time::SystemTime;

use crate::config::StaticMount;
use conditional::{RangeRequest, Validators};
use resolve::{Opened, ResolveError};

pub use conditional::format_http_date;

/// What the static layer says about a request.
#[derive(Debug)]
pub enum StaticOutcome {
    /// No mount's prefix matches the path.
    NoMount,
    /// A mount matched but no file answers; when `authoritative` the caller must answer
    /// 404 here instead of falling through to sync handlers/pools.
    NotFound {
        authoritative: bool,
    },
    Response(StaticResponse),
}

/// A response for the caller to frame and send.
#[derive(Debug)]
pub struct StaticResponse {
    pub status: u16,
    /// Lower-case names. No `content-length`: the caller frames from [`StaticBody::len`]
    /// (and for 304 should send no body framing at all).
    pub headers: Vec<(String, String)>,
    pub body: StaticBody,
}

/// The body of a [`StaticResponse`].
#[derive(Debug)]
pub enum StaticBody {
    /// 304, 416 and the like.
    Empty,
    /// Small generated bodies (errors, redirects).
    Bytes(Vec<u8>),
    /// `len` bytes of `file` from `offset`, for the caller to stream.
    File { file: File, offset: u64, len: u64 },
}

impl StaticBody {
    /// Body length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            StaticBody::Empty => 0,
            StaticBody::Bytes(b) => b.len() as u64,
            StaticBody::File { len, .. } => *len,
        }
    }

    /// True when there are no body bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl StaticResponse {
    /// The header value for `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Serves `raw_path` (percent-encoded, no query) from the best mount.
///
/// `headers` are the request headers with lower-cased names.
pub fn serve(mounts: &[StaticMount], method: &str, raw_path: &str, headers: &[(String, String)]) -> StaticOutcome {
    serve_at(mounts, method, raw_path, headers, SystemTime::now())
}

fn serve_at(
    mounts: &[StaticMount],
    method: &str,
    raw_path: &str,
    headers: &[(String, String)],
    now: SystemTime,
) -> StaticOutcome {
    // "/static" for the mount "/static/": send the client to the mount root.
    if let Some(m) = mounts.iter().find(|m| m.prefix.len() == raw_path.len() + 1 && m.prefix.starts_with(raw_path)) {
        return StaticOutcome::Response(redirect(m, m.prefix.clone()));
    }
    let Some(mount) = mounts.iter().filter(|m| raw_path.starts_with(m.prefix.as_str())).max_by_key(|m| m.prefix.len())
    else {
        return StaticOutcome::NoMount;
    };
    let rest = &raw_path[mount.prefix.len()..];

    let segments = match resolve::decode_segments(rest) {
        Ok(s) => s,
        Err(e) => return refuse(mount, e),
    };
    let path = resolve::join(&mount.root, &segments.names);
    let opened = match resolve::open_confined(&mount.root, path) {
        Ok(o) => o,
        Err(e) => return refuse(mount, e),
    };

    let is_get_or_head = method == "GET" || method == "HEAD";
    if !is_get_or_head {
        let mut r = error_response(405, "method not allowed");
        r.headers.push(("allow".into(), "GET, HEAD".into()));
        return StaticOutcome::Response(finish(mount, r));
    }

    let opened = if opened.meta.is_dir() {
        if !segments.trailing_slash {
            let mut location = mount.prefix.clone();
            location.push_str(&segments.raw.join("/"));
            location.push('/');
            return StaticOutcome::Response(redirect(mount, location));
        }
        let index = opened.path.join(&mount.index);
        drop(opened);
        match resolve::open_confined(&mount.root, index) {
            Ok(o) if o.meta.is_file() => o,
            Ok(_) => return StaticOutcome::NotFound { authoritative: mount.authoritative },
            Err(e) => return refuse(mount, e),
        }
    } else {
        opened
    };

    StaticOutcome::Response(finish(mount, file_response(opened, method, headers, now)))
}

/// A 200/206/304/412/416 for an opened regular file.
fn file_response(opened: Opened, method: &str, req: &[(String, String)], now: SystemTime) -> StaticResponse {
    let Opened { file, meta, path } = opened;
    let v = Validators {
        size: meta.len(),
        mtime_secs: meta.mtime(),
        mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
    };
    let etag = v.etag();
    let mut headers = vec![
        ("etag".to_owned(), etag.clone()),
        ("last-modified".to_owned(), v.last_modified()),
        ("accept-ranges".to_owned(), "bytes".to_owned()),
    ];
    let header = |name: &str| req.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());

    // RFC 9110 §13.2.2 order: If-Match, If-Unmodified-Since, If-None-Match,
    // If-Modified-Since, If-Range.
    let precondition_failed = match header("if-match") {
        Some(im) => !conditional::if_match_holds(im, &etag),
        None => header("if-unmodified-since")
            .and_then(conditional::parse_http_date)
            .is_some_and(|since| v.mtime_secs > since),
    };
    if precondition_failed {
        let mut r = error_response(412, "precondition failed");
        r.headers.extend(headers);
        return r;
    }
    let not_modified = match header("if-none-match") {
        Some(inm) => conditional::none_match_hits(inm, &etag),
        None => header("if-modified-since").is_some_and(|ims| conditional::not_modified_since(ims, v.mtime_secs, now)),
    };
    if not_modified {
        return StaticResponse { status: 304, headers, body: StaticBody::Empty };
    }

    headers.push(("content-type".to_owned(), mime::content_type(&path).to_owned()));
    let range = match header("range") {
        Some(r)
            if method == "GET" && header("if-range").is_none_or(|ir| conditional::if_range_holds(ir, &v, &etag)) =>
        {
            conditional::parse_range(r, v.size)
        }
        _ => RangeRequest::Full,
    };
    match range {
        RangeRequest::Full => {
            StaticResponse { status: 200, headers, body: StaticBody::File { file, offset: 0, len: v.size } }
        }
        RangeRequest::Partial { start, len } => {
            headers.push(("content-range".to_owned(), format!("bytes {}-{}/{}", start, start + len - 1, v.size)));
            StaticResponse { status: 206, headers, body: StaticBody::File { file, offset: start, len } }
        }
        RangeRequest::Unsatisfiable => {
            headers.retain(|(n, _)| n != "content-type");
            headers.push(("content-range".to_owned(), format!("bytes */{}", v.size)));
            StaticResponse { status: 416, headers, body: StaticBody::Empty }
        }
    }
}

fn refuse(mount: &StaticMount, e: ResolveError) -> StaticOutcome {
    if let ResolveError::NotFound { .. } = e {
        return StaticOutcome::NotFound { authoritative: mount.authoritative };
    }
    let status = e.status();
    match status {
        500 => log::warn!("static mount {}: {e}", mount.prefix),
        _ => log::debug!("static mount {}: {e}", mount.prefix),
    }
    let reason = match status {
        400 => "bad request",
        403 => "forbidden",
        404 => "not found",
        _ => "internal server error",
    };
    StaticOutcome::Response(finish(mount, error_response(status, reason)))
}

fn redirect(mount: &StaticMount, location: String) -> StaticResponse {
    let mut r = error_response(301, "moved permanently");
    r.headers.push(("location".to_owned(), location));
    finish(mount, r)
}

fn error_response(status: u16, reason: &str) -> StaticResponse {
    StaticResponse {
        status,
        headers: vec![("content-type".to_owned(), "text/plain; charset=utf-8".to_owned())],
        body: StaticBody::Bytes(format!("{status} {reason}\n").into_bytes()),
    }
}

/// Adds `nosniff` and the mount's headers; a mount header replaces a generated one of
/// the same name.
fn finish(mount: &StaticMount, mut r: StaticResponse) -> StaticResponse {
    r.headers.push(("x-content-type-options".to_owned(), "nosniff".to_owned()));
    if mount.headers.is_empty() {
        return r;
    }
    let extra: Vec<(String, String)> = mount.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone())).collect();
    r.headers.retain(|(n, _)| !extra.iter().any(|(e, _)| e == n));
    r.headers.extend(extra);
    r
}

#[cfg(test)]
mod tests;
