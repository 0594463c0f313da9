//! The static path resolver on any request path: no panic, and whatever is opened lives
//! under the root. The tree (with symlinks in and out) is made once per process.
#![no_main]

use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rustworkers::static_files::resolve;

fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("rw-fuzz-static-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("www/d")).unwrap();
        std::fs::create_dir_all(base.join("out")).unwrap();
        std::fs::write(base.join("www/a.txt"), "in").unwrap();
        std::fs::write(base.join("out/secret.txt"), "out").unwrap();
        let www = base.join("www");
        for (name, target) in [
            ("in", "a.txt"),
            ("d/up", ".."),
            ("out_dir", "../out"),
            ("out_file", "../out/secret.txt"),
            ("loop", "loop"),
        ] {
            symlink(target, www.join(name)).unwrap();
        }
        symlink(base.canonicalize().unwrap().join("out"), www.join("abs_out")).unwrap();
        www.canonicalize().unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(rest) = std::str::from_utf8(data) else { return };
    let root = root();
    let Ok(segments) = resolve::decode_segments(rest) else { return };
    let path = resolve::join(root, &segments.names);
    assert!(path.starts_with(root));
    if let Ok(opened) = resolve::open_confined(root, path) {
        let real = std::fs::read_link(format!("/proc/self/fd/{}", opened.file.as_raw_fd())).unwrap();
        assert!(real.starts_with(root), "{rest:?} opened {real:?}");
    }
});
