//! Static files served by the real dispatcher: traversal refused, index.html, MIME types,
//! conditional requests, ranges, HEAD, per-mount headers, authoritative mounts, and large
//! files streamed without stalling other clients.

use std::io::Read;
use std::time::Duration;

use crate::util::{Client, TempDir, TestServer, get, pid_alive, request};

const CONFIG: &str = r#"
[server]
bind = ["127.0.0.1:0"]
access_log = "off"

[[static]]
prefix = "/static"
path = "{dir}/www"
headers = { "cache-control" = "public, max-age=60", "x-mount" = "www" }
authoritative = true

[[static]]
prefix = "/soft"
path = "{dir}/soft"

[[sync]]
path = "/health"
kind = "health"

[[sync]]
path = "/status"
kind = "status"

[[pool]]
name = "echo"
routes = ["/soft/**"]
native = "echo"
num_workers = 1
"#;

const BIG: usize = 8 * 1024 * 1024;

fn big_content() -> Vec<u8> {
    (0..BIG).map(|i| (i.wrapping_mul(31) ^ (i >> 13)) as u8).collect()
}

fn server() -> TestServer {
    let dir = TempDir::new();
    dir.write("www/a.txt", "hello static\n");
    dir.write("www/page.html", "<p>page</p>");
    dir.write("www/style.css", "body{}");
    dir.write("www/app.js", "1;");
    dir.write("www/data.json", "{}");
    dir.write("www/pic.png", [0x89, b'P', b'N', b'G']);
    dir.write("www/blob.unknownext", "??");
    dir.write("www/digits.txt", "0123456789");
    dir.write("www/sub/index.html", "<h1>sub index</h1>");
    dir.write("www/empty/.keep", "");
    dir.write("www/big.bin", big_content());
    dir.write("soft/here.txt", "soft file");
    dir.write("secret.txt", "TOP SECRET");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), dir.path().join("www/link-out.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), dir.path().join("www/sub/deep-out")).unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("www/dirlink")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("www/a.txt"), dir.path().join("www/link-in.txt")).unwrap();
    let s = TestServer::start_in(dir, CONFIG);
    assert_eq!(s.wait_ready("echo", 1, Duration::from_secs(10)).len(), 1, "echo pool not ready");
    s
}

/// One raw GET (path sent byte-for-byte) on a fresh connection.
fn raw_get(addr: &str, path: &str) -> crate::util::Response {
    let mut c = Client::connect(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    c.read_response().expect("response")
}

#[test]
fn traversal_shapes_are_refused() {
    let s = server();
    let shapes = [
        "/static/../config.toml",
        "/static/../secret.txt",
        "/static/sub/../../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2e/secret.txt",
        "/static/.%2E/secret.txt",
        "/static/%2e%2e%2fsecret.txt",
        "/static/..%2fsecret.txt",
        "/static/..%2Fconfig.toml",
        "/static/..%5csecret.txt",
        "/static/..%5Cconfig.toml",
        "/static/a.txt%00.png",
        "/static/%00",
        "/static/%252e%252e/secret.txt",
        "/static/link-out.txt",
        "/static/sub/deep-out",
        "/static/dirlink/secret.txt",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
    ];
    for p in shapes {
        let r = raw_get(&s.addr, p);
        assert!(matches!(r.status, 400 | 403 | 404), "{p}: status {} body {:?}", r.status, r.text());
        assert!(!r.text().contains("TOP SECRET"), "{p} leaked the secret");
        assert!(!r.text().contains("[server]"), "{p} leaked the config");
        assert!(!r.text().contains("root:"), "{p} leaked /etc/passwd");
    }
    // A symlink that stays inside the root is fine.
    let r = raw_get(&s.addr, "/static/link-in.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello static\n");
    // Encoded but harmless paths still resolve.
    let r = raw_get(&s.addr, "/static/%61.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello static\n");
    let r = raw_get(&s.addr, "/static/sub/../a.txt");
    assert!(matches!(r.status, 200 | 400 | 404), "{}", r.status);
    assert!(pid_alive(s.pid));
}

#[test]
fn directory_serves_index_html() {
    let s = server();
    let r = get(&s.addr, "/static/sub/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<h1>sub index</h1>");
    assert!(r.header("content-type").unwrap_or("").starts_with("text/html"));
    // Without the trailing slash: a redirect to the slash form, or the index itself.
    let r = get(&s.addr, "/static/sub");
    match r.status {
        301 | 302 | 307 | 308 => assert_eq!(r.header("location"), Some("/static/sub/")),
        200 => assert_eq!(r.body, b"<h1>sub index</h1>"),
        other => panic!("/static/sub: {other}"),
    }
    // A directory without an index is not listed.
    let r = get(&s.addr, "/static/empty/");
    assert!(matches!(r.status, 403 | 404), "{}", r.status);
    assert!(!r.text().contains(".keep"));
}

#[test]
fn mime_types() {
    let s = server();
    for (path, want) in [
        ("/static/a.txt", "text/plain"),
        ("/static/page.html", "text/html"),
        ("/static/style.css", "text/css"),
        ("/static/app.js", "javascript"),
        ("/static/data.json", "application/json"),
        ("/static/pic.png", "image/png"),
        ("/static/blob.unknownext", "application/octet-stream"),
    ] {
        let r = get(&s.addr, path);
        assert_eq!(r.status, 200, "{path}");
        let ct = r.header("content-type").unwrap_or("");
        assert!(ct.contains(want), "{path}: content-type {ct:?}, want {want}");
    }
}

#[test]
fn etag_and_last_modified_give_304() {
    let s = server();
    let r = get(&s.addr, "/static/a.txt");
    let etag = r.header("etag").expect("etag").to_string();
    let lm = r.header("last-modified").expect("last-modified").to_string();

    let r = request(&s.addr, "GET", "/static/a.txt", &[("If-None-Match", &etag)], b"");
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = request(&s.addr, "GET", "/static/a.txt", &[("If-None-Match", &format!("\"nope\", {etag}"))], b"");
    assert_eq!(r.status, 304);
    let r = request(&s.addr, "GET", "/static/a.txt", &[("If-None-Match", "*")], b"");
    assert_eq!(r.status, 304);
    let r = request(&s.addr, "GET", "/static/a.txt", &[("If-None-Match", "\"other\"")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello static\n");

    let r = request(&s.addr, "GET", "/static/a.txt", &[("If-Modified-Since", &lm)], b"");
    assert_eq!(r.status, 304);
    let r = request(&s.addr, "GET", "/static/a.txt", &[("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")], b"");
    assert_eq!(r.status, 200);
    // If-None-Match wins over If-Modified-Since.
    let r =
        request(&s.addr, "GET", "/static/a.txt", &[("If-None-Match", "\"other\""), ("If-Modified-Since", &lm)], b"");
    assert_eq!(r.status, 200);
    // A 304 on a keep-alive connection carries no body: the next answer parses.
    let mut c = Client::connect(&s.addr);
    let r = c.request(format!("GET /static/a.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes());
    assert_eq!(r.status, 304);
    let r = c.request(b"GET /static/digits.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.body, b"0123456789");
}

#[test]
fn ranges_give_206_and_416() {
    let s = server();
    let r = request(&s.addr, "GET", "/static/digits.txt", &[("Range", "bytes=2-5")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"2345");
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    assert_eq!(r.header("content-length"), Some("4"));
    let r = request(&s.addr, "GET", "/static/digits.txt", &[("Range", "bytes=7-")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"789");
    let r = request(&s.addr, "GET", "/static/digits.txt", &[("Range", "bytes=-3")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"789");
    assert_eq!(r.header("content-range"), Some("bytes 7-9/10"));
    let r = request(&s.addr, "GET", "/static/digits.txt", &[("Range", "bytes=8-100")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"89");

    let r = request(&s.addr, "GET", "/static/digits.txt", &[("Range", "bytes=10-20")], b"");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
    let r = request(&s.addr, "GET", "/static/digits.txt", &[("Range", "bytes=5-2")], b"");
    assert!(r.status == 416 || r.status == 200, "{}", r.status);
    // A range in the big file, far from the start.
    let big = big_content();
    let r = request(&s.addr, "GET", "/static/big.bin", &[("Range", "bytes=5000000-5000099")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &big[5_000_000..5_000_100]);
    // A range big enough for sendfile, from an odd offset, and one ending at the file's end.
    let r = request(&s.addr, "GET", "/static/big.bin", &[("Range", "bytes=3000001-3300000")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &big[3_000_001..3_300_001]);
    let r = request(&s.addr, "GET", "/static/big.bin", &[("Range", "bytes=-200000")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &big[big.len() - 200_000..]);
}

#[test]
fn head_and_per_mount_headers() {
    let s = server();
    let g = get(&s.addr, "/static/digits.txt");
    assert_eq!(g.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(g.header("x-mount"), Some("www"));
    let h = request(&s.addr, "HEAD", "/static/digits.txt", &[], b"");
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(h.header("content-length"), Some("10"));
    assert_eq!(h.header("etag"), g.header("etag"));
    assert_eq!(h.header("x-mount"), Some("www"));
    // HEAD of the big file must not send its 8 MiB.
    let mut c = Client::connect(&s.addr);
    c.send(b"HEAD /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let h = c.read_response_to(true).expect("HEAD");
    assert_eq!(h.header("content-length"), Some(BIG.to_string().as_str()));
    let r = c.request(b"GET /static/digits.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.body, b"0123456789");
    // The other mount has no such headers.
    let r = get(&s.addr, "/soft/here.txt");
    assert_eq!(r.body, b"soft file");
    assert_eq!(r.header("x-mount"), None);
}

#[test]
fn authoritative_mount_404_vs_fall_through() {
    let s = server();
    let r = get(&s.addr, "/static/missing.txt");
    assert_eq!(r.status, 404);
    // Non-authoritative: a missing file falls through to the pool owning the route.
    let r = get(&s.addr, "/soft/missing.txt");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/soft/missing.txt");
    // A present file is served by the mount, not the pool.
    let r = get(&s.addr, "/soft/here.txt");
    assert_eq!(r.body, b"soft file");
}

#[test]
fn big_file_streamed_intact_while_others_are_served() {
    let s = server();
    let big = big_content();
    let mut c = Client::connect(&s.addr);
    c.send(b"GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    // Read only a little before asking for /health on another connection.
    let mut first = vec![0u8; 1024];
    let n = c.stream.read(&mut first).expect("read");
    assert!(n > 0);
    let h = get(&s.addr, "/health");
    assert_eq!(h.status, 200);
    // Now read the rest and compare byte for byte.
    let mut rest = first[..n].to_vec();
    let head_end;
    loop {
        if let Some(p) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            head_end = p + 4;
            break;
        }
        let mut tmp = [0u8; 4096];
        let m = c.stream.read(&mut tmp).expect("read head");
        assert!(m > 0, "closed in head");
        rest.extend_from_slice(&tmp[..m]);
    }
    let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {BIG}")), "{head}");
    let mut body = rest[head_end..].to_vec();
    let mut tmp = vec![0u8; 1 << 16];
    while body.len() < BIG {
        let m = c.stream.read(&mut tmp).expect("read body");
        assert!(m > 0, "closed after {} bytes", body.len());
        body.extend_from_slice(&tmp[..m]);
    }
    assert_eq!(body.len(), BIG);
    assert!(body == big, "big file corrupted");
    // The connection is still usable.
    let r = c.request(b"GET /static/digits.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.body, b"0123456789");
}

#[test]
fn client_that_never_reads_does_not_stall_others() {
    let s = server();
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(&s.addr);
        // Several pipelined big requests, never read.
        c.send(b"GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        stalled.push(c);
    }
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let h = get(&s.addr, "/health");
        assert_eq!(h.status, 200);
        let r = get(&s.addr, "/static/digits.txt");
        assert_eq!(r.body, b"0123456789");
        let r = get(&s.addr, "/soft/x");
        assert_eq!(r.status, 200);
    }
    drop(stalled);
    assert_eq!(get(&s.addr, "/health").status, 200);
    assert!(pid_alive(s.pid));
}
