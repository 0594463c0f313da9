//! Dates: HTTP dates (the `Date` header, static files' `Last-Modified` and conditional
//! requests) through the `httpdate` crate, which parses all three RFC 9110 forms; the
//! access log's Common Log Format by hand (no crate formats it).

use std::time::{Duration, UNIX_EPOCH};

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Formats seconds since the epoch as an IMF-fixdate (`httpdate`); times before 1970
/// clamp to it.
pub fn format_unix_secs(secs: i64) -> String {
    let secs = u64::try_from(secs).unwrap_or(0);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year, month 1-12, day
/// 1-31). Only the access log's Common Log Format needs it: `httpdate` covers HTTP dates.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses an HTTP date into seconds since the epoch: the three forms recipients must
/// accept (RFC 9110 §5.6.7: IMF-fixdate, obsolete RFC 850 and asctime), via `httpdate`.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()
}

/// Common Log Format timestamp (`10/Oct/2000:13:55:36 +0000`), UTC.
pub fn format_clf(unix_secs: i64) -> String {
    let secs = unix_secs.max(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The current time in Common Log Format.
pub fn clf_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format_clf(i64::try_from(secs).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clf_format() {
        assert_eq!(format_clf(971_185_336), "10/Oct/2000:13:42:16 +0000");
        assert_eq!(format_clf(0), "01/Jan/1970:00:00:00 +0000");
    }

    #[test]
    fn huge_or_signed_years_are_refused_not_overflowed() {
        // Found by http::proptests::http_dates_never_panic: an i64 year overflowed
        // days_from_civil (a panic in debug builds, a wrapped date in release).
        for s in [
            "Sun, 1 Nov -292277022658 0:0:00 GMT",
            "Sun, 06 Nov 99999999999999999 08:49:37 GMT",
            "Sunday, 06-Nov-9223372036854775807 08:49:37 GMT",
            "Sun Nov  6 08:49:37 -9223372036854775808",
            "Sun, 06 Nov 19940 08:49:37 GMT",
            "Sun, 06 Nov +1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(s), None, "{s}");
        }
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(784_111_777));
        assert_eq!(parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT"), Some(253_402_300_799));
    }
}
