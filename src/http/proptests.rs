//! Property tests of the request reader and the chunked decoder: any bytes, split at any
//! points, never panic and give the same outcome as one push; valid requests and chunked
//! bodies round-trip. Case counts are bounded for the default `cargo test`; set
//! `PROPTEST_CASES` for a longer run (see [`proptest_config`]).

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config as ProptestConfig;

use super::chunked::ChunkedDecoder;
use super::{ReadEvent, Request, RequestReader, Version};
use crate::config::Limits;

/// Cases per property: `default_cases`, or `PROPTEST_CASES` from the environment for a
/// longer run (e.g. `PROPTEST_CASES=20000 cargo test --lib proptests`). Failures are not
/// persisted to files: each one found becomes a plain regression test instead.
pub(crate) fn proptest_config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Cut `input` at the given points (any order, duplicates allowed) into pieces.
pub(crate) fn split_at_points<'a>(input: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    points.push(0);
    points.push(input.len());
    points.sort_unstable();
    points.windows(2).map(|w| &input[w[0]..w[1]]).collect()
}

const LIMITS: Limits = Limits { max_request_line: 200, max_headers: 12, max_header_bytes: 600, max_body_bytes: 300 };

/// What a reader produced from a whole stream: the requests in order, then the error
/// status that ended it, if any. `SendContinue` is left out: whether it is due depends
/// on whether body bytes came in the same read, which is the point of it.
#[derive(Debug, PartialEq)]
struct Outcome {
    requests: Vec<Request>,
    error: Option<u16>,
}

fn read_all(pieces: &[&[u8]]) -> Outcome {
    let mut reader = RequestReader::new(LIMITS);
    let mut requests = Vec::new();
    for piece in pieces {
        reader.push(piece);
        loop {
            match reader.poll() {
                Ok(ReadEvent::NeedMore) => break,
                Ok(ReadEvent::SendContinue) => {}
                Ok(ReadEvent::Request(r)) => requests.push(r),
                Err(e) => return Outcome { requests, error: Some(e.status) },
            }
        }
    }
    Outcome { requests, error: None }
}

/// Pieces of HTTP/1.1 and of garbage, so random streams often reach deep states.
fn http_soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"GET / HTTP/1.1\r\n".to_vec()),
        Just(b"POST /p?q=1 HTTP/1.1\r\n".to_vec()),
        Just(b"GET http://h:80/x HTTP/1.0\r\n".to_vec()),
        Just(b"OPTIONS * HTTP/1.1\r\n".to_vec()),
        Just(b"Host: a\r\n".to_vec()),
        Just(b"Host: [::1]:8\r\n".to_vec()),
        Just(b"Content-Length: 5\r\n".to_vec()),
        Just(b"Content-Length: 0\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Expect: 100-continue\r\n".to_vec()),
        Just(b"Connection: close\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"5\r\nhello\r\n".to_vec()),
        Just(b"0\r\n\r\n".to_vec()),
        Just(b"1;x=y\r\nz\r\n".to_vec()),
        Just(b"hello".to_vec()),
        "[ -~]{0,12}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..12),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// A request the reader must accept, with the exact bytes that carry it.
#[derive(Debug, Clone)]
struct Sample {
    method: &'static str,
    path: String,
    query: Option<String>,
    http10: bool,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Chunk sizes to cut the body into; `None` sends Content-Length.
    chunks: Option<Vec<Index>>,
}

impl Sample {
    fn wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let target = match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        };
        let version = if self.http10 { "1.0" } else { "1.1" };
        out.extend_from_slice(format!("{} {target} HTTP/{version}\r\nHost: a\r\n", self.method).as_bytes());
        if self.http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        match (&self.chunks, self.http10) {
            (Some(cuts), false) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                encode_chunked(&self.body, cuts, &mut out);
            }
            _ => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
                out.extend_from_slice(&self.body);
            }
        }
        out
    }

    fn check(&self, r: &Request) -> Result<(), TestCaseError> {
        prop_assert_eq!(r.method.as_str(), self.method);
        prop_assert_eq!(&r.path, &self.path);
        prop_assert_eq!(&r.query, &self.query);
        prop_assert_eq!(r.version, if self.http10 { Version::Http10 } else { Version::Http11 });
        prop_assert_eq!(&r.body, &self.body);
        prop_assert!(r.keep_alive);
        for (n, v) in &self.headers {
            prop_assert!(r.headers.iter().any(|(hn, hv)| hn == &n.to_ascii_lowercase() && hv == v), "{n}: {v}");
        }
        Ok(())
    }
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]),
        "(/[a-zA-Z0-9._~%-]{0,8}){1,3}",
        prop::option::of("[a-z0-9=&%]{0,10}"),
        any::<bool>(),
        prop::collection::vec(("X-[A-Za-z]{1,6}", "[!-~]([ -~]{0,10}[!-~])?"), 0..4),
        prop::collection::vec(any::<u8>(), 0..120),
        prop::option::of(prop::collection::vec(any::<Index>(), 0..5)),
    )
        .prop_map(|(method, path, query, http10, headers, body, chunks)| Sample {
            method,
            path,
            query,
            http10,
            headers,
            body,
            chunks,
        })
}

/// `body` as chunks cut at `cuts`, then the last chunk; empty pieces are skipped (an
/// empty chunk would end the body).
fn encode_chunked(body: &[u8], cuts: &[Index], out: &mut Vec<u8>) {
    for piece in split_at_points(body, cuts) {
        if !piece.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"0\r\n\r\n");
}

proptest! {
    #![proptest_config(proptest_config(400))]

    #[test]
    fn reader_split_anywhere_same_outcome(input in http_soup(), cuts in prop::collection::vec(any::<Index>(), 0..10)) {
        let whole = read_all(&[&input]);
        let split = read_all(&split_at_points(&input, &cuts));
        prop_assert_eq!(&whole, &split);
        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(&whole, &read_all(&bytewise));
    }

    #[test]
    fn reader_any_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..400), cuts in prop::collection::vec(any::<Index>(), 0..6)) {
        let whole = read_all(&[&input]);
        prop_assert_eq!(whole, read_all(&split_at_points(&input, &cuts)));
    }

    #[test]
    fn valid_requests_round_trip(samples in prop::collection::vec(sample(), 1..4), cuts in prop::collection::vec(any::<Index>(), 0..10)) {
        let wire: Vec<u8> = samples.iter().flat_map(Sample::wire).collect();
        let out = read_all(&split_at_points(&wire, &cuts));
        prop_assert_eq!(out.error, None);
        prop_assert_eq!(out.requests.len(), samples.len());
        for (s, r) in samples.iter().zip(&out.requests) {
            s.check(r)?;
        }
    }

    #[test]
    fn chunked_any_bytes_split_anywhere_same_outcome(input in chunked_soup(), cuts in prop::collection::vec(any::<Index>(), 0..10)) {
        prop_assert_eq!(decode_pieces(&[&input]), decode_pieces(&split_at_points(&input, &cuts)));
    }

    #[test]
    fn chunked_round_trip(
        body in prop::collection::vec(any::<u8>(), 0..=200),
        chunk_cuts in prop::collection::vec(any::<Index>(), 0..8),
        cuts in prop::collection::vec(any::<Index>(), 0..10),
        tail in prop::collection::vec(any::<u8>(), 0..10),
    ) {
        let mut wire = Vec::new();
        encode_chunked(&body, &chunk_cuts, &mut wire);
        let framed = wire.len();
        wire.extend_from_slice(&tail);
        let out = decode_pieces(&split_at_points(&wire, &cuts));
        prop_assert_eq!(out, ChunkedOutcome { body, consumed: framed, done: true, error: None });
    }
}

/// Chunk framing pieces and garbage.
fn chunked_soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        "[0-9a-fA-F]{1,3}".prop_map(String::into_bytes),
        Just(b"\r\n".to_vec()),
        Just(b";ext=1".to_vec()),
        Just(b" ".to_vec()),
        Just(b"0\r\n".to_vec()),
        Just(b"X-T: v\r\n".to_vec()),
        "[ -~]{0,8}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..20).prop_map(|v| v.concat())
}

#[derive(Debug, PartialEq)]
struct ChunkedOutcome {
    body: Vec<u8>,
    consumed: usize,
    done: bool,
    error: Option<u16>,
}

fn decode_pieces(pieces: &[&[u8]]) -> ChunkedOutcome {
    let mut dec = ChunkedDecoder::new(200, 64);
    let mut out = ChunkedOutcome { body: Vec::new(), consumed: 0, done: false, error: None };
    // Like the reader: unconsumed bytes stay buffered and are offered again with the next.
    let mut pending: Vec<u8> = Vec::new();
    for piece in pieces {
        pending.extend_from_slice(piece);
        match dec.decode(&pending, &mut out.body) {
            Ok(p) => {
                out.consumed += p.consumed;
                pending.drain(..p.consumed);
                if p.done {
                    out.done = true;
                    break;
                }
            }
            Err(e) => {
                // How much was consumed before the error differs with the split; only
                // the body so far and the status are the outcome.
                out.error = Some(e.status);
                out.consumed = 0;
                break;
            }
        }
    }
    out
}

/// Date-shaped text: the tokens of the three HTTP date forms with numbers of any size.
fn date_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        prop::sample::select(vec!["Sun,", "Sunday,", "Mon", "Nov", "Feb", "GMT", "08:49:37", "23:59:60", "-"])
            .prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (0u32..100, 0u32..100, 0u32..100).prop_map(|(a, b, c)| format!("{a}:{b}:{c}")),
        (any::<u32>(), any::<i64>()).prop_map(|(d, y)| format!("{d}-Nov-{y}")),
        "[ -~]{0,6}",
    ];
    let soup = prop::collection::vec(token, 0..7).prop_map(|v| v.join(" "));
    // The three forms, each field any number: dates are client input (If-Modified-Since).
    let num = prop_oneof![0i64..40, any::<i64>()];
    let forms = (num.clone(), num, 0i64..25, 0i64..61, 0u8..3).prop_map(|(d, y, h, m, form)| match form {
        0 => format!("Sun, {d} Nov {y} {h}:{m}:00 GMT"),
        1 => format!("Sunday, {d}-Nov-{y} {h}:{m}:00 GMT"),
        _ => format!("Sun Nov {d} {h}:{m}:00 {y}"),
    });
    prop_oneof![soup, forms]
}

proptest! {
    #![proptest_config(proptest_config(1000))]

    #[test]
    fn http_dates_never_panic(s in date_soup()) {
        let _ = super::date::parse_http_date(&s);
    }

    #[test]
    fn http_dates_round_trip(secs in 0i64..253_402_300_800) {
        let text = super::date::format_unix_secs(secs);
        prop_assert_eq!(super::date::parse_http_date(&text), Some(secs), "{}", text);
    }
}
