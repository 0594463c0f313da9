//! The one check of a request's authority: the `Host` field value (RFC 9110 §7.2) and the
//! authority of an absolute-form target (RFC 9112 §3.2.2), both `uri-host [ ":" port ]`
//! in RFC 3986 §3.2 terms.
//!
//! A Host the grammar does not allow (whitespace, `/`, userinfo `@`, a bad port) is 400
//! (RFC 9112 §3.2): routing, logs and applications all read it, and a value one
//! component parses differently from another is a cache-poisoning and virtual-host
//! confusion vector.

use super::errors::HttpError;

const BAD_HOST: HttpError = HttpError::bad_request("malformed host");

/// Checks `uri-host [ ":" port ]`:
/// - `uri-host` is an IP-literal (`[` IPv6 or IPvFuture `]`), or a reg-name: unreserved,
///   sub-delims and `%XX` escapes (IPv4 dotted quads are reg-names syntactically). It may
///   be empty: RFC 9112 §3.2 has clients send an empty Host when the target has no
///   authority.
/// - `port` is digits only, at most 65535 (TCP), and may be empty (`a:`): RFC 3986 §3.2.3
///   allows it and means the scheme's default.
pub(crate) fn check_authority(value: &[u8]) -> Result<(), HttpError> {
    let port = if value.first() == Some(&b'[') {
        let end = value.iter().position(|&b| b == b']').ok_or(BAD_HOST)?;
        check_ip_literal(&value[1..end])?;
        match &value[end + 1..] {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return Err(BAD_HOST),
        }
    } else {
        let (host, port) = match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        };
        check_reg_name(host)?;
        port
    };
    match port {
        Some(port) => check_port(port),
        None => Ok(()),
    }
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`.
fn check_reg_name(host: &[u8]) -> Result<(), HttpError> {
    let mut i = 0;
    while let Some(&b) = host.get(i) {
        if b == b'%' {
            let hex = |j: usize| host.get(j).and_then(|&d| super::hex_digit(d));
            hex(i + 1).and(hex(i + 2)).ok_or(BAD_HOST)?;
            i += 3;
        } else if is_unreserved(b) || is_sub_delim(b) {
            i += 1;
        } else {
            return Err(BAD_HOST);
        }
    }
    Ok(())
}

/// Inside the brackets: an IPv6 address (no zone id), or
/// `IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )`.
fn check_ip_literal(inner: &[u8]) -> Result<(), HttpError> {
    if let [b'v' | b'V', rest @ ..] = inner {
        let dot = rest.iter().position(|&b| b == b'.').ok_or(BAD_HOST)?;
        let (version, tail) = (&rest[..dot], &rest[dot + 1..]);
        let version_ok = !version.is_empty() && version.iter().all(u8::is_ascii_hexdigit);
        let tail_ok = !tail.is_empty() && tail.iter().all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':');
        return if version_ok && tail_ok { Ok(()) } else { Err(BAD_HOST) };
    }
    std::str::from_utf8(inner).ok().and_then(|s| s.parse::<std::net::Ipv6Addr>().ok()).map(|_| ()).ok_or(BAD_HOST)
}

/// `port = *DIGIT`, within the TCP range.
fn check_port(port: &[u8]) -> Result<(), HttpError> {
    if !port.iter().all(u8::is_ascii_digit) {
        return Err(BAD_HOST);
    }
    // Leading zeros are digits too ("0080"); only the value is bounded.
    let value = port.iter().try_fold(0u32, |n, &d| {
        let n = n * 10 + u32::from(d - b'0');
        (n <= u32::from(u16::MAX)).then_some(n)
    });
    value.map(|_| ()).ok_or(BAD_HOST)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: &str) -> bool {
        check_authority(v.as_bytes()).is_ok()
    }

    #[test]
    fn names_and_ipv4() {
        for v in [
            "example.com",
            "a",
            "EXAMPLE.com.",
            "xn--bcher-kva.example",
            "127.0.0.1",
            "a_b-c~d",
            "%41b",
            "a!$&'()*+,;=",
        ] {
            assert!(ok(v), "{v}");
        }
    }

    #[test]
    fn empty_host_is_allowed() {
        // RFC 9112 §3.2: a target without authority is sent with an empty Host.
        assert!(ok(""));
        assert!(ok(":80"));
    }

    #[test]
    fn ports() {
        for v in ["a:80", "a:0", "a:65535", "a:0080", "a:", "127.0.0.1:8080"] {
            assert!(ok(v), "{v}");
        }
        for v in ["a:65536", "a:99999", "a:x", "a:8x", "a:-1", "a: 80", "a:80:80", "a:+80", "a:99999999999999999999"] {
            assert!(!ok(v), "{v}");
        }
    }

    #[test]
    fn ip_literals() {
        for v in ["[::1]", "[::1]:8080", "[2001:db8::7]:", "[::ffff:192.0.2.1]", "[v1.fe80::a+en1]", "[V7.x:y]:1"] {
            assert!(ok(v), "{v}");
        }
        for v in [
            "[::1",
            "::1",
            "[::1]x",
            "[::1]:x",
            "[::1]:70000",
            "[fe80::1%25eth0]",
            "[127.0.0.1]",
            "[]",
            "[v1.]",
            "[v.x]",
            "[::1]]",
        ] {
            assert!(!ok(v), "{v}");
        }
    }

    #[test]
    fn whitespace_slash_userinfo_and_other_delimiters() {
        for v in [
            "a b",
            "a\tb",
            " a",
            "a ",
            "a/b",
            "a/",
            "/",
            "user@a",
            "@a",
            "a?b",
            "a#b",
            "a\\b",
            "a%",
            "a%4",
            "a%zz",
            "a\"b",
            "a<b>",
            "caf\u{e9}",
        ] {
            assert!(!ok(v), "{v:?}");
        }
        assert!(check_authority(b"a\xffb").is_err());
        assert!(check_authority(b"a\0b").is_err());
    }

    #[test]
    fn error_is_400() {
        assert_eq!(check_authority(b"a b"), Err(HttpError::bad_request("malformed host")));
    }
}
