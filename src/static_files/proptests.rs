//! Property test of the path resolver: whatever the client's path, what is opened lives
//! under the mount root, and nothing panics. The tree has symlinks that stay inside and
//! ones that lead out (relative, absolute, through a directory, a loop).
//! `PROPTEST_CASES` raises the case count (see `crate::http::proptests::proptest_config`).

use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use super::{StaticBody, StaticMount, StaticOutcome, resolve, serve};
use crate::http::proptests::proptest_config;

/// base/www (the root) and base/out (must stay unreachable); removed on drop.
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
    let base = std::env::temp_dir().join(format!("rw-static-prop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    for d in ["www/d/e", "www/sub", "out/d"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    for (p, body) in [
        ("www/a.txt", "inside a"),
        ("www/d/b.txt", "inside b"),
        ("www/d/e/index.html", "inside index"),
        ("out/secret.txt", "OUTSIDE-SECRET"),
        ("out/d/index.html", "OUTSIDE-SECRET index"),
    ] {
        std::fs::write(base.join(p), body).unwrap();
    }
    let www = base.join("www");
    let base_abs = base.canonicalize().unwrap();
    let links: [(&str, PathBuf); 10] = [
        ("in_file", "a.txt".into()),
        ("in_dir", "d".into()),
        ("d/up", "..".into()),
        ("d/e/up2", "../..".into()),
        ("out_file", "../out/secret.txt".into()),
        ("out_dir", "../out".into()),
        ("d/deep_out", "../../out/d".into()),
        ("abs_in", base_abs.join("www/a.txt")),
        ("abs_out", base_abs.join("out")),
        ("loop", "loop".into()),
    ];
    for (name, target) in links {
        symlink(target, www.join(name)).unwrap();
    }
    Tree { root: www.canonicalize().unwrap(), base: base_abs }
}

/// Path segments that matter here, raw and percent-encoded, plus random ones.
fn raw_path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        prop::sample::select(vec![
            "a.txt",
            "d",
            "e",
            "b.txt",
            "index.html",
            "sub",
            "in_file",
            "in_dir",
            "up",
            "up2",
            "out_file",
            "out_dir",
            "deep_out",
            "abs_in",
            "abs_out",
            "loop",
            "secret.txt",
            "out",
            "www",
            "..",
            ".",
            "%2e%2e",
            "%2E.",
            ".%2e",
            "%2e",
            "%2f",
            "%2F..",
            "..%2f",
            "%5c",
            "..%5c..",
            "%00",
            "%",
            "%zz",
            "%c0%ae",
            "",
            "~",
            ".hidden",
            "%ff",
        ])
        .prop_map(str::to_owned),
        "[a-z.%0-9]{0,6}",
        "\\PC{0,4}",
    ];
    (prop::collection::vec(seg, 0..7), any::<bool>()).prop_map(|(segs, slash)| {
        let mut p = format!("/s/{}", segs.join("/"));
        if slash {
            p.push('/');
        }
        p
    })
}

/// Where an open file really is.
fn real_path(file: &std::fs::File) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap()
}

fn check(root: &Path, mounts: &[StaticMount], raw: &str) -> Result<(), TestCaseError> {
    let rest = &raw["/s/".len()..];
    if let Ok(segments) = resolve::decode_segments(rest) {
        let path = resolve::join(root, &segments.names);
        prop_assert!(path.starts_with(root), "joined {path:?} outside {root:?}");
        if let Ok(opened) = resolve::open_confined(root, path) {
            let real = real_path(&opened.file);
            prop_assert!(real.starts_with(root), "{raw:?} opened {real:?}");
        }
    }
    for method in ["GET", "HEAD"] {
        match serve(mounts, method, raw, &[]) {
            StaticOutcome::Response(resp) => match resp.body {
                StaticBody::File { file, .. } => {
                    let real = real_path(&file);
                    prop_assert!(real.starts_with(root), "{raw:?} served {real:?}");
                }
                StaticBody::Bytes(b) => prop_assert!(!String::from_utf8_lossy(&b).contains("OUTSIDE")),
                StaticBody::Empty => {}
            },
            StaticOutcome::NotFound { .. } | StaticOutcome::NoMount => {}
        }
    }
    Ok(())
}

#[test]
fn no_path_resolves_outside_the_root() {
    let t = tree();
    let mounts = vec![StaticMount {
        prefix: "/s/".to_owned(),
        root: t.root.clone(),
        headers: Vec::new(),
        authoritative: true,
        index: "index.html".to_owned(),
    }];
    // Known escapes first, as plain cases, so they run whatever the random draw.
    for raw in ["/s/out_file", "/s/out_dir/secret.txt", "/s/d/deep_out/", "/s/abs_out/secret.txt", "/s/d/up/out_file"] {
        check(&t.root, &mounts, raw).unwrap();
        assert!(!matches!(serve(&mounts, "GET", raw, &[]), StaticOutcome::Response(r) if r.status == 200), "{raw}");
    }
    let mut runner = TestRunner::new(proptest_config(300));
    runner.run(&raw_path(), |raw| check(&t.root, &mounts, &raw)).unwrap();
}
