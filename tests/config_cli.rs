//! The command line of the real binary: `check`, `--version`, `--help`, and config errors
//! that name the file, line and key, both from `check` and at startup.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{TempDir, TestServer, binary, get, repo};

/// Run the binary with `args`, killing it if it runs longer than 15 s.
fn run<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("{args:?} did not exit; stderr: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn all_output(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Bad configs: (file text, line, text that must appear in the message).
const BAD: &[(&str, usize, &str)] = &[
    // unknown key
    ("[server]\nbind = [\"127.0.0.1:0\"]\nbindd = \"x\"\n", 3, "server.bindd"),
    // wrong type
    ("[server]\nbind = [\"127.0.0.1:0\"]\nbacklog = \"many\"\n", 3, "server.backlog"),
    // bad bind
    ("[server]\nbind = [\"not-an-address\"]\n", 2, "server.bind"),
    // out of range value in a pool
    (
        "[server]\nbind = [\"127.0.0.1:0\"]\n\n[[pool]]\nname = \"p\"\nroutes = [\"/p/**\"]\nnative = \"echo\"\nnum_workers = 0\n",
        8,
        "pool[0].num_workers",
    ),
    // unknown top-level section
    ("[serverr]\nbind = \"127.0.0.1:0\"\n", 1, "serverr"),
    // TOML syntax error
    ("[server]\nbind = [\"127.0.0.1:0\"\n\nx = \n", 0, ""),
];

#[test]
fn check_rejects_bad_configs_naming_file_line_and_key() {
    let dir = TempDir::new();
    for (i, (text, line, key)) in BAD.iter().enumerate() {
        let path = dir.write(&format!("bad{i}.toml"), text);
        let p = path.display().to_string();
        let o = run(&["check", "-c", &p]);
        let msg = all_output(&o);
        assert_eq!(o.status.code(), Some(1), "config {i}: {msg}");
        assert!(msg.contains(&p), "config {i}: message does not name the file: {msg}");
        if *line > 0 {
            assert!(msg.contains(&format!("{p}:{line}:")), "config {i}: message does not name line {line}: {msg}");
        }
        if !key.is_empty() {
            assert!(msg.contains(key), "config {i}: message does not name `{key}`: {msg}");
        }
    }
}

#[test]
fn starting_with_a_bad_config_fails_with_the_same_message() {
    let dir = TempDir::new();
    for (i, (text, _, _)) in BAD.iter().enumerate() {
        let path = dir.write(&format!("bad{i}.toml"), text);
        let p = path.display().to_string();
        let checked = run(&["check", "-c", &p]);
        let started = run(&["-c", &p]);
        assert!(!started.status.success(), "config {i} started");
        assert_ne!(started.status.code(), None, "config {i}: killed by a signal");
        let first_line =
            |o: &Output| String::from_utf8_lossy(&o.stderr).lines().find(|l| l.contains(&p)).map(str::to_string);
        let c = first_line(&checked).expect("check names the file");
        let s =
            first_line(&started).unwrap_or_else(|| panic!("start does not name the file: {}", all_output(&started)));
        assert_eq!(c, s, "config {i}");
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let dir = TempDir::new();
    let p = dir.path().join("nope.toml").display().to_string();
    let o = run(&["check", "-c", &p]);
    assert_eq!(o.status.code(), Some(1));
    assert!(all_output(&o).contains(&p), "{}", all_output(&o));
    let o = run(&["-c", &p]);
    assert!(!o.status.success());
}

#[test]
fn valid_configs_pass_check() {
    let dir = TempDir::new();
    let p =
        dir.write("ok.toml", "[server]\nbind = [\"127.0.0.1:0\"]\n\n[[sync]]\npath = \"/health\"\nkind = \"health\"\n");
    let o = run(&["check", "-c", &p.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    let empty = dir.write("empty.toml", "");
    let o = run(&["check", "-c", &empty.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    let example = repo().join("examples/config.toml");
    let o = run(&["check", "-c", &example.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    // --config=FILE and --config FILE spellings.
    let o = run(&["check", &format!("--config={}", example.display())]);
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    let o = run(&["check", "--config", &example.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
}

#[test]
fn version_and_help_exit_zero() {
    for flag in ["--version", "-V"] {
        let o = run(&[flag]);
        assert_eq!(o.status.code(), Some(0));
        let out = all_output(&o);
        assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    }
    for flag in ["--help", "-h"] {
        let o = run(&[flag]);
        assert_eq!(o.status.code(), Some(0));
        let out = all_output(&o);
        assert!(out.contains("USAGE") && out.contains("check"), "{out}");
    }
}

#[test]
fn unknown_arguments_are_usage_errors() {
    for args in [&["--bogus"][..], &["check"][..], &["-c"][..], &["frobnicate"][..]] {
        let o = run(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert_ne!(o.status.code(), None, "{args:?}: killed by a signal");
        assert!(!o.stderr.is_empty(), "{args:?}: no message");
    }
}

#[test]
fn non_utf8_arguments_never_panic() {
    let bad = || OsString::from_vec(vec![b'x', 0xff, b'.', b't', b'o', b'm', b'l']);
    // As a path it is just a file name that does not exist: exit 1 with the usual message.
    let o = run(&[OsString::from("check"), bad()]);
    assert_eq!(o.status.code(), Some(1), "{}", all_output(&o));
    assert!(all_output(&o).contains("could not read config file"), "{}", all_output(&o));
    // Where text is needed: a usage error (2), never a panic (101).
    for args in [
        vec![OsString::from("conformance"), OsString::from("--"), bad()],
        vec![OsString::from("conformance"), OsString::from("--native"), bad()],
        vec![bad()],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", all_output(&o));
        assert!(!all_output(&o).contains("panicked"), "{}", all_output(&o));
    }
}

#[test]
fn help_lists_every_verb_and_option() {
    let out = all_output(&run(&["--help"]));
    for word in ["check", "conformance", "--native", "--stream-path", "--timeout", "--config", "--version"] {
        assert!(out.contains(word), "--help lacks {word}:\n{out}");
    }
}

/// Issue 8.3: configs that parse but cannot start, each reported by `check` at its key and
/// line: (pool lines, line of the bad key, key).
const CANNOT_START: &[(&str, usize, &str)] = &[
    ("native = \"hello\"\n", 4, "pool[0].native"),
    ("command = [\"./no-such-worker\"]\n", 4, "pool[0].command[0]"),
    ("command = [\"no-such-program-rw\"]\n", 4, "pool[0].command[0]"),
    ("command = [\"./not-executable\"]\n", 4, "pool[0].command[0]"),
    ("python = \"m:C\"\ninterpreter = \"pyhton3\"\n", 5, "pool[0].interpreter"),
    ("native = \"echo\"\nuser = \"no-such-user-rw\"\n", 5, "pool[0].user"),
    ("native = \"echo\"\ngroup = \"no-such-group-rw\"\n", 5, "pool[0].group"),
];

#[test]
fn check_reports_what_cannot_start_at_its_line() {
    let dir = TempDir::new();
    dir.write("not-executable", "#!/bin/sh\n");
    for (i, (pool, line, key)) in CANNOT_START.iter().enumerate() {
        let text = format!("[[pool]]\nname = \"p\"\nroutes = [\"/p/**\"]\n{pool}");
        let p = dir.write(&format!("c{i}.toml"), text).display().to_string();
        let o = run(&["check", "-c", &p]);
        let msg = all_output(&o);
        assert_eq!(o.status.code(), Some(1), "case {i}: {msg}");
        assert!(msg.contains(&format!("{p}:{line}:")) && msg.contains(key), "case {i}: {msg}");
    }
}

#[test]
fn check_warns_about_a_missing_module_path_and_passes() {
    let dir = TempDir::new();
    let text = "[[pool]]\nname = \"p\"\nroutes = [\"/p/**\"]\nwsgi = \"app:app\"\nmodule_path = \"later\"\n";
    let p = dir.write("w.toml", text).display().to_string();
    let o = run(&["check", "-c", &p]);
    let msg = all_output(&o);
    assert_eq!(o.status.code(), Some(0), "{msg}");
    assert!(
        msg.contains("warning:") && msg.contains(&format!("{p}:5:")) && msg.contains("pool[0].module_path"),
        "{msg}"
    );
}

#[test]
fn info_prints_interpreter_and_shim_per_pool() {
    let o = run(&["info", "-c", &repo().join("examples/config.toml").display().to_string()]);
    let out = all_output(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for needle in ["pool items:", "pool flask:", "pool echo:", "interpreter: python3 (/", "shim: /"] {
        assert!(out.contains(needle), "info lacks {needle:?}:\n{out}");
    }
    let o = run(&["info"]);
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    assert!(all_output(&o).contains("no pools"));
}

/// Issue 8.6: a file with mistakes in several sections: (line, key) of each, in file order.
const MANY_MISTAKES: &str = "[server]
bind = [\"127.0.0.1:0\"]
bindd = 3
backlog = \"many\"

[[sync]]
path = \"/h\"
kind = \"health\"
auth = true

[[pool]]
name = \"p\"
routes = [\"p/**\"]
native = \"echo\"
num_workers = 0
";
const MANY_MISTAKES_AT: &[(usize, &str)] = &[
    (3, "server.bindd"),
    (4, "server.backlog"),
    (9, "sync[0].auth"),
    (13, "pool[0].routes[0]"),
    (15, "pool[0].num_workers"),
];

/// The `file:line:` error lines of `stderr`, as (line, key).
fn error_lines(stderr: &[u8], path: &str) -> Vec<(usize, String)> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(&format!("{path}:"))?.1;
            let line = rest.split(':').next()?.parse().ok()?;
            let key = rest.split('`').nth(1)?.to_string();
            Some((line, key))
        })
        .collect()
}

#[test]
fn check_and_start_report_every_error() {
    let dir = TempDir::new();
    let p = dir.write("many.toml", MANY_MISTAKES).display().to_string();
    let expected: Vec<(usize, String)> = MANY_MISTAKES_AT.iter().map(|(l, k)| (*l, k.to_string())).collect();
    let checked = run(&["check", "-c", &p]);
    assert_eq!(checked.status.code(), Some(1), "{}", all_output(&checked));
    assert_eq!(error_lines(&checked.stderr, &p), expected, "{}", all_output(&checked));
    // Each on its own line, in the one format.
    for line in String::from_utf8_lossy(&checked.stderr).lines() {
        assert!(line.starts_with(&format!("rustworkers: {p}:")) && line.contains(": key `"), "{line}");
    }
    let started = run(&["-c", &p]);
    assert!(!started.status.success() && started.status.code().is_some(), "{}", all_output(&started));
    assert_eq!(error_lines(&started.stderr, &p), expected, "{}", all_output(&started));
}

#[test]
fn sighup_with_several_errors_logs_them_all_and_keeps_the_running_config() {
    let good = "[server]\nbind = [\"127.0.0.1:0\"]\naccess_log = \"off\"\n[[sync]]\npath = \"/h\"\nkind = \"health\"\n";
    let server = TestServer::start(good);
    assert_eq!(get(&server.addr, "/h").status, 200);
    server.dir.write("config.toml", MANY_MISTAKES);
    server.signal(libc::SIGHUP);
    assert!(server.wait_for_log("config not reloaded", Duration::from_secs(10)), "{}", server.log());
    // The last error in the file ends the message.
    assert!(server.wait_for_log("pool[0].num_workers", Duration::from_secs(5)), "{}", server.log());
    let log = server.log();
    for (line, key) in MANY_MISTAKES_AT {
        assert!(log.contains(&format!("config.toml:{line}:")) && log.contains(key), "{key} not logged:\n{log}");
    }
    assert_eq!(get(&server.addr, "/h").status, 200, "the running config stays");
}
