//! The Python shim's own unit tests (stdlib unittest), run by `cargo test` so that one
//! command runs every test.

use std::process::Command;

#[test]
fn python_shim_unit_tests_pass() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "workers/tests", "-t", "workers"])
        .current_dir(repo)
        .output()
        .expect("python3 must be installed to run the shim's tests");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "python unit tests failed:\n{stderr}");
    // unittest prints "Ran N tests"; make sure it really ran some.
    let ran = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ").and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse::<u32>().ok())
        })
        .unwrap_or(0);
    assert!(ran > 20, "expected the shim's unit tests to run, saw {ran}");
}
