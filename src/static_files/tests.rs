//! End-to-end tests of [`serve`] against a real directory tree in the temp dir.

use super::*;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh tree, removed on drop:
/// ```text
/// base/www/{index.html, hello.txt, app.js, data.bin, docs/index.html, sub/, .git/config, .env,
///           inner_link -> hello.txt, dir_link -> docs, escape -> ../outside/secret.txt,
///           escape_dir -> ../outside, sibling -> ../www2/secret.txt}
/// base/outside/secret.txt   base/www2/secret.txt   base/private/index.html
/// ```
struct Tree {
    base: PathBuf,
    root: PathBuf,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn tree() -> Tree {
    static N: AtomicUsize = AtomicUsize::new(0);
    let base =
        std::env::temp_dir().join(format!("rw-static-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&base);
    let www = base.join("www");
    for d in ["www/docs", "www/sub", "www/.git", "outside", "www2", "private"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    let files: &[(&str, &[u8])] = &[
        ("www/index.html", b"<h1>root</h1>"),
        ("www/hello.txt", b"hello world"),
        ("www/app.js", b"let a = 1;"),
        ("www/data.bin", b"\x00\x01"),
        ("www/docs/index.html", b"<h1>docs</h1>"),
        ("www/.git/config", b"[core]"),
        ("www/.env", b"SECRET=1"),
        ("outside/secret.txt", b"outside secret"),
        ("www2/secret.txt", b"sibling secret"),
        ("private/index.html", b"<h1>private</h1>"),
    ];
    for (p, body) in files {
        std::fs::write(base.join(p), body).unwrap();
    }
    symlink("hello.txt", www.join("inner_link")).unwrap();
    symlink("docs", www.join("dir_link")).unwrap();
    symlink("../outside/secret.txt", www.join("escape")).unwrap();
    symlink("../outside", www.join("escape_dir")).unwrap();
    symlink("../www2/secret.txt", www.join("sibling")).unwrap();
    // Absolute symlinks: one lands inside the root (a deploy's `current -> /srv/www/…`),
    // one outside.
    symlink(www.canonicalize().unwrap().join("hello.txt"), www.join("abs_inside")).unwrap();
    symlink(base.canonicalize().unwrap().join("outside/secret.txt"), www.join("abs_escape")).unwrap();
    // temp_dir itself may sit behind a symlink (macOS /tmp): roots are canonical by contract.
    let root = www.canonicalize().unwrap();
    let base = base.canonicalize().unwrap();
    Tree { base, root }
}

fn mount(prefix: &str, root: &Path, authoritative: bool) -> StaticMount {
    StaticMount {
        prefix: prefix.to_owned(),
        root: root.to_path_buf(),
        headers: vec![("Cache-Control".to_owned(), "max-age=60".to_owned())],
        authoritative,
        index: "index.html".to_owned(),
    }
}

fn mounts(t: &Tree) -> Vec<StaticMount> {
    vec![mount("/static/", &t.root, false), mount("/static/private/", &t.base.join("private"), true)]
}

fn hdrs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

fn get(t: &Tree, path: &str, req: &[(&str, &str)]) -> StaticOutcome {
    serve(&mounts(t), "GET", path, &hdrs(req))
}

fn response(o: StaticOutcome) -> StaticResponse {
    match o {
        StaticOutcome::Response(r) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn status(o: StaticOutcome) -> u16 {
    response(o).status
}

/// Reads what the caller would stream.
fn body(r: StaticResponse) -> Vec<u8> {
    match r.body {
        StaticBody::Empty => Vec::new(),
        StaticBody::Bytes(b) => b,
        StaticBody::File { mut file, offset, len } => {
            file.seek(SeekFrom::Start(offset)).unwrap();
            let mut out = Vec::new();
            file.take(len).read_to_end(&mut out).unwrap();
            out
        }
    }
}

#[test]
fn serves_a_file_with_validators_and_mount_headers() {
    let t = tree();
    let r = response(get(&t, "/static/hello.txt", &[]));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    assert!(r.header("content-length").is_none());
    let etag = r.header("etag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"));
    let lm = r.header("last-modified").unwrap();
    assert!(lm.ends_with(" GMT") && conditional::parse_http_date(lm).is_some(), "{lm}");
    assert!(matches!(r.body, StaticBody::File { offset: 0, len: 11, .. }));
    assert_eq!(r.body.len(), 11);
    assert_eq!(body(r), b"hello world");

    let js = response(get(&t, "/static/app.js", &[]));
    assert_eq!(js.header("content-type"), Some("text/javascript; charset=utf-8"));
    let bin = response(get(&t, "/static/data.bin", &[]));
    assert_eq!(bin.header("content-type"), Some("application/octet-stream"));
}

#[test]
fn head_is_answered_like_get() {
    let t = tree();
    let r = response(serve(&mounts(&t), "HEAD", "/static/hello.txt", &[]));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 11, "the caller frames HEAD from the body length");
}

#[test]
fn traversal_and_malformed_paths_are_refused() {
    let t = tree();
    let table: &[(&str, u16)] = &[
        ("/static/../outside/secret.txt", 404),
        ("/static/docs/../../outside/secret.txt", 404),
        ("/static/%2e%2e/outside/secret.txt", 404),
        ("/static/%2E%2E/outside/secret.txt", 404),
        ("/static/.%2e/outside/secret.txt", 404),
        ("/static/%2e./outside/secret.txt", 404),
        ("/static/./hello.txt", 404),
        ("/static/..%2foutside%2fsecret.txt", 404),
        ("/static/..%2Foutside%2Fsecret.txt", 404),
        ("/static/docs%2findex.html", 404),
        ("/static/..%5coutside%5csecret.txt", 404),
        ("/static/..\\outside\\secret.txt", 404),
        ("/static/hello.txt%00.html", 400),
        ("/static/%zz", 400),
        ("/static/hello%2", 400),
        ("/static/%ff.txt", 400),
        ("/static/.git/config", 404),
        ("/static/.env", 404),
        ("/static/%2eenv", 404),
    ];
    for (path, want) in table {
        let r = response(get(&t, path, &[]));
        assert_eq!(r.status, *want, "{path}");
        // Refusals come from the mount: its headers are on them too.
        assert_eq!(r.header("cache-control"), Some("max-age=60"), "{path}");
        assert!(!body(r).windows(6).any(|w| w == b"secret"), "{path}");
    }
}

#[test]
fn symlinks_out_of_the_root_are_refused_inside_are_served() {
    let t = tree();
    assert_eq!(status(get(&t, "/static/escape", &[])), 404);
    assert_eq!(status(get(&t, "/static/escape_dir/secret.txt", &[])), 404);
    // www2 shares the "www" name prefix but is not under www.
    assert_eq!(status(get(&t, "/static/sibling", &[])), 404);

    let r = response(get(&t, "/static/inner_link", &[]));
    assert_eq!(r.status, 200);
    assert_eq!(body(r), b"hello world");
    let r = response(get(&t, "/static/dir_link/", &[]));
    assert_eq!(r.status, 200);
    assert_eq!(body(r), b"<h1>docs</h1>");

    assert_eq!(status(get(&t, "/static/abs_escape", &[])), 404);
    let r = response(get(&t, "/static/abs_inside", &[]));
    assert_eq!(r.status, 200);
    assert_eq!(body(r), b"hello world");
}

#[test]
fn directories_index_and_redirects() {
    let t = tree();
    let r = response(get(&t, "/static/docs", &[]));
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/static/docs/"));

    let r = response(get(&t, "/static/docs/", &[]));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(body(r), b"<h1>docs</h1>");

    let r = response(get(&t, "/static/", &[]));
    assert_eq!(body(r), b"<h1>root</h1>");

    // Mount prefix without its slash.
    let r = response(get(&t, "/static", &[]));
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/static/"));

    // Empty segments collapse; the redirect never starts with "//" (no open redirect).
    let r = response(serve(&[mount("/", &t.root, false)], "GET", "//docs", &[]));
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/docs/"));

    assert!(matches!(get(&t, "/static/sub/", &[]), StaticOutcome::NotFound { authoritative: false }));
}

#[test]
fn mount_matching_and_not_found() {
    let t = tree();
    assert!(matches!(get(&t, "/other/hello.txt", &[]), StaticOutcome::NoMount));
    assert!(matches!(get(&t, "/staticx/hello.txt", &[]), StaticOutcome::NoMount));
    assert!(matches!(get(&t, "/static/missing.txt", &[]), StaticOutcome::NotFound { authoritative: false }));
    assert!(matches!(get(&t, "/static/hello.txt/x", &[]), StaticOutcome::NotFound { authoritative: false }));
    // Longest prefix wins: /static/private/ is its own (authoritative) mount.
    let r = response(get(&t, "/static/private/", &[]));
    assert_eq!(body(r), b"<h1>private</h1>");
    assert!(matches!(get(&t, "/static/private/nope", &[]), StaticOutcome::NotFound { authoritative: true }));
}

#[test]
fn other_methods_get_405_on_existing_files_only() {
    let t = tree();
    let r = response(serve(&mounts(&t), "POST", "/static/hello.txt", &[]));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(status(serve(&mounts(&t), "DELETE", "/static/docs/", &[])), 405);
    assert!(matches!(serve(&mounts(&t), "POST", "/static/missing", &[]), StaticOutcome::NotFound { .. }));
}

#[test]
fn conditional_get() {
    let t = tree();
    let first = response(get(&t, "/static/hello.txt", &[]));
    let etag = first.header("etag").unwrap().to_owned();
    let lm = first.header("last-modified").unwrap().to_owned();

    for inm in [etag.clone(), format!("W/{etag}"), format!("\"nope\", {etag}"), "*".to_owned()] {
        let r = response(get(&t, "/static/hello.txt", &[("if-none-match", &inm)]));
        assert_eq!(r.status, 304, "{inm}");
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("cache-control"), Some("max-age=60"));
        assert!(matches!(r.body, StaticBody::Empty));
    }
    assert_eq!(status(get(&t, "/static/hello.txt", &[("if-none-match", "\"nope\"")])), 200);

    assert_eq!(status(get(&t, "/static/hello.txt", &[("if-modified-since", &lm)])), 304);
    assert_eq!(status(get(&t, "/static/hello.txt", &[("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")])), 200);
    // If-None-Match present: If-Modified-Since is not consulted.
    assert_eq!(status(get(&t, "/static/hello.txt", &[("if-none-match", "\"nope\""), ("if-modified-since", &lm)])), 200);

    assert_eq!(status(get(&t, "/static/hello.txt", &[("if-match", "\"nope\"")])), 412);
    assert_eq!(status(get(&t, "/static/hello.txt", &[("if-match", &etag)])), 200);
}

#[test]
fn ranges() {
    let t = tree();
    let r = response(get(&t, "/static/hello.txt", &[("range", "bytes=0-4")]));
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 0-4/11"));
    assert_eq!(body(r), b"hello");

    let r = response(get(&t, "/static/hello.txt", &[("range", "bytes=6-")]));
    assert_eq!(r.header("content-range"), Some("bytes 6-10/11"));
    assert!(matches!(r.body, StaticBody::File { offset: 6, len: 5, .. }));
    assert_eq!(body(r), b"world");

    let r = response(get(&t, "/static/hello.txt", &[("range", "bytes=-3")]));
    assert_eq!(body(r), b"rld");

    let r = response(get(&t, "/static/hello.txt", &[("range", "bytes=11-")]));
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */11"));
    assert!(r.body.is_empty());

    // Several ranges: the whole file.
    let r = response(get(&t, "/static/hello.txt", &[("range", "bytes=0-1,4-5")]));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 11);

    // HEAD ignores Range (RFC 9110 §14.2).
    assert_eq!(status(serve(&mounts(&t), "HEAD", "/static/hello.txt", &hdrs(&[("range", "bytes=0-1")]))), 200);
}

#[test]
fn if_range() {
    let t = tree();
    let first = response(get(&t, "/static/hello.txt", &[]));
    let etag = first.header("etag").unwrap().to_owned();
    let lm = first.header("last-modified").unwrap().to_owned();
    let range = ("range", "bytes=0-4");
    assert_eq!(status(get(&t, "/static/hello.txt", &[range, ("if-range", &etag)])), 206);
    assert_eq!(status(get(&t, "/static/hello.txt", &[range, ("if-range", &lm)])), 206);
    assert_eq!(status(get(&t, "/static/hello.txt", &[range, ("if-range", "\"stale\"")])), 200);
    assert_eq!(status(get(&t, "/static/hello.txt", &[range, ("if-range", &format!("W/{etag}"))])), 200);
    assert_eq!(status(get(&t, "/static/hello.txt", &[range, ("if-range", "Thu, 01 Jan 1970 00:00:00 GMT")])), 200);
}

#[test]
fn mount_header_replaces_generated_one() {
    let t = tree();
    let mut m = mount("/static/", &t.root, false);
    m.headers = vec![
        ("content-type".into(), "text/x-custom".into()),
        ("link".into(), "<a>".into()),
        ("link".into(), "<b>".into()),
    ];
    let r = response(serve(&[m], "GET", "/static/hello.txt", &[]));
    let ct: Vec<_> = r.headers.iter().filter(|(n, _)| n == "content-type").collect();
    assert_eq!(ct.len(), 1);
    assert_eq!(ct[0].1, "text/x-custom");
    assert_eq!(r.headers.iter().filter(|(n, _)| n == "link").count(), 2);
}

#[test]
fn fifo_in_root_is_not_served_and_does_not_block() {
    let t = tree();
    let fifo = std::ffi::CString::new(t.root.join("pipe").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert!(matches!(get(&t, "/static/pipe", &[]), StaticOutcome::NotFound { .. }));
}
