//! Validators and conditional requests: ETag, HTTP dates, `If-*` headers and `Range`.
//!
//! Pure functions over strings and numbers (no IO), following RFC 9110 §8.8, §13 and §14.
//! HTTP dates are formatted and parsed here by hand (days-from-civil arithmetic) so the
//! crate needs no date library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The file facts every validator derives from: one `fstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validators {
    pub size: u64,
    /// Modification time, seconds since the epoch (negative before 1970).
    pub mtime_secs: i64,
    pub mtime_nsec: u32,
}

impl Validators {
    /// A strong entity tag, quoted: `"<size hex>-<mtime nanoseconds hex>"`.
    ///
    /// Strong, as nginx's is: size plus nanosecond mtime changes on every rewrite in
    /// practice, and a strong tag is what lets `If-Range` use it.
    pub fn etag(&self) -> String {
        let nanos = i128::from(self.mtime_secs) * 1_000_000_000 + i128::from(self.mtime_nsec);
        format!("\"{:x}-{:x}\"", self.size, nanos.max(0))
    }

    /// `Last-Modified` value (IMF-fixdate, whole seconds).
    pub fn last_modified(&self) -> String {
        format_unix_secs(self.mtime_secs)
    }
}

// ---------------------------------------------------------------------------------------
// HTTP dates (formatting and parsing live in `http::date`, shared with the Date header)
// ---------------------------------------------------------------------------------------

pub use crate::http::date::{format_unix_secs, parse_http_date};

/// Formats a time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), for `Date` and
/// `Last-Modified`. Times before the epoch are clamped to it.
pub fn format_http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format_unix_secs(i64::try_from(secs).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------------------------------
// Entity-tag comparison
// ---------------------------------------------------------------------------------------

/// Splits an `If-Match` / `If-None-Match` list into tags (`W/` kept). `*` is returned as is.
fn etag_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|t| !t.is_empty())
}

fn opaque(tag: &str) -> (&str, bool) {
    match tag.strip_prefix("W/") {
        Some(rest) => (rest, true),
        None => (tag, false),
    }
}

/// Weak comparison (If-None-Match): opaque tags equal, `W/` ignored on both sides.
pub fn none_match_hits(header: &str, etag: &str) -> bool {
    let (ours, _) = opaque(etag);
    etag_list(header).any(|t| t == "*" || opaque(t).0 == ours)
}

/// Strong comparison (If-Match, If-Range): neither side may be weak.
pub fn strong_match(tag: &str, etag: &str) -> bool {
    let (theirs, their_weak) = opaque(tag.trim());
    let (ours, our_weak) = opaque(etag);
    !their_weak && !our_weak && theirs == ours
}

/// `If-Match`: true when the precondition holds.
pub fn if_match_holds(header: &str, etag: &str) -> bool {
    etag_list(header).any(|t| t == "*" || strong_match(t, etag))
}

// ---------------------------------------------------------------------------------------
// Range
// ---------------------------------------------------------------------------------------

/// What a `Range` header asks of a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// Ignore the header and send the whole representation: unparseable, not `bytes`, or
    /// several ranges (we do not build multipart/byteranges; a full 200 is always allowed).
    Full,
    /// Send `len` bytes from `start` as 206.
    Partial { start: u64, len: u64 },
    /// 416 with `content-range: bytes */size`.
    Unsatisfiable,
}

/// Interprets a `Range` header value against a representation of `size` bytes.
pub fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if first.is_empty() {
        // bytes=-n: the last n bytes.
        let Some(n) = num(last) else { return RangeRequest::Full };
        if n == 0 || size == 0 {
            return RangeRequest::Unsatisfiable;
        }
        let len = n.min(size);
        return RangeRequest::Partial { start: size - len, len };
    }
    let Some(start) = num(first) else { return RangeRequest::Full };
    let end = if last.is_empty() {
        None
    } else {
        match num(last) {
            Some(e) if e >= start => Some(e),
            // "5-2" is syntactically invalid: ignore the header (RFC 9110 §14.1.1).
            _ => return RangeRequest::Full,
        }
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    let end = end.map_or(size - 1, |e| e.min(size - 1));
    RangeRequest::Partial { start, len: end - start + 1 }
}

/// `If-Range`: whether the range may be honoured. An entity tag must match strongly; a
/// date must equal `Last-Modified` exactly (RFC 9110 §13.1.5).
pub fn if_range_holds(value: &str, v: &Validators, etag: &str) -> bool {
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        strong_match(value, etag)
    } else {
        parse_http_date(value) == Some(v.mtime_secs)
    }
}

/// Whether an `If-Modified-Since` date says the client's copy is current. A date in the
/// future is invalid and ignored (RFC 9110 §13.1.3).
pub fn not_modified_since(value: &str, mtime_secs: i64, now: SystemTime) -> bool {
    let Some(since) = parse_http_date(value) else { return false };
    let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    if since > i64::try_from(now).unwrap_or(i64::MAX) {
        return false;
    }
    mtime_secs <= since
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_imf_fixdate() {
        assert_eq!(format_unix_secs(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(format_unix_secs(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(format_unix_secs(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(format_unix_secs(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(format_http_date(UNIX_EPOCH + Duration::from_secs(784_111_777)), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn parses_three_date_forms() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(784_111_777));
        for bad in [
            "",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:00:00 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn date_round_trip_over_many_days() {
        for days in (-1000..30_000).step_by(97) {
            let secs = days * 86_400 + 12_345;
            if secs < 0 {
                continue;
            }
            assert_eq!(parse_http_date(&format_unix_secs(secs)), Some(secs));
        }
    }

    #[test]
    fn etag_comparisons() {
        let ours = "\"a-1\"";
        assert!(none_match_hits("\"a-1\"", ours));
        assert!(none_match_hits("W/\"a-1\"", ours));
        assert!(none_match_hits("\"x\", W/\"a-1\"", ours));
        assert!(none_match_hits("*", ours));
        assert!(!none_match_hits("\"a-2\"", ours));
        assert!(strong_match("\"a-1\"", ours));
        assert!(!strong_match("W/\"a-1\"", ours));
        assert!(if_match_holds("\"z\", \"a-1\"", ours));
        assert!(!if_match_holds("W/\"a-1\"", ours));
    }

    #[test]
    fn ranges() {
        use RangeRequest::*;
        let cases: &[(&str, u64, RangeRequest)] = &[
            ("bytes=0-4", 10, Partial { start: 0, len: 5 }),
            ("bytes=5-", 10, Partial { start: 5, len: 5 }),
            ("bytes=-3", 10, Partial { start: 7, len: 3 }),
            ("bytes=-30", 10, Partial { start: 0, len: 10 }),
            ("bytes=8-100", 10, Partial { start: 8, len: 2 }),
            ("bytes=9-9", 10, Partial { start: 9, len: 1 }),
            ("bytes=10-", 10, Unsatisfiable),
            ("bytes=10-20", 10, Unsatisfiable),
            ("bytes=-0", 10, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-1", 0, Unsatisfiable),
            ("bytes=0-1,3-4", 10, Full),
            ("bytes=5-2", 10, Full),
            ("bytes=a-b", 10, Full),
            ("bytes=-", 10, Full),
            ("items=0-1", 10, Full),
            ("bytes=+1-2", 10, Full),
        ];
        for (value, size, want) in cases {
            assert_eq!(parse_range(value, *size), *want, "{value} of {size}");
        }
    }

    #[test]
    fn if_range_by_etag_or_exact_date() {
        let v = Validators { size: 10, mtime_secs: 784_111_777, mtime_nsec: 5 };
        let etag = v.etag();
        assert!(if_range_holds(&etag, &v, &etag));
        assert!(!if_range_holds("\"other\"", &v, &etag));
        assert!(!if_range_holds(&format!("W/{etag}"), &v, &etag));
        assert!(if_range_holds("Sun, 06 Nov 1994 08:49:37 GMT", &v, &etag));
        assert!(!if_range_holds("Sun, 06 Nov 1994 08:49:38 GMT", &v, &etag));
        assert!(!if_range_holds("garbage", &v, &etag));
    }

    #[test]
    fn if_modified_since() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let at = |s: i64| format_unix_secs(s);
        assert!(not_modified_since(&at(900_000_000), 900_000_000, now));
        assert!(not_modified_since(&at(900_000_001), 900_000_000, now));
        assert!(!not_modified_since(&at(899_999_999), 900_000_000, now));
        // Future dates are ignored.
        assert!(!not_modified_since(&at(1_100_000_000), 900_000_000, now));
        assert!(!not_modified_since("nonsense", 900_000_000, now));
    }
}
