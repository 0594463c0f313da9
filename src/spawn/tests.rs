//! Fork tests: real children running `/bin/sh`, serialized by [`FORK_MTX`] (as nix's
//! tests do) and always reaped.

use super::*;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::wait::{WaitStatus, waitpid};

static FORK_MTX: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    FORK_MTX.lock().unwrap_or_else(|p| p.into_inner())
}

fn sh_spec(script: &str) -> SpawnSpec {
    SpawnSpec {
        pool: "api".into(),
        worker_id: 0,
        program: Program::Exec { argv: vec!["sh".into(), "-c".into(), script.into()] },
        env: vec![],
        cwd: None,
        memory_limit_mb: None,
        user: None,
        group: None,
    }
}

/// Reads a non-blocking receiver to EOF, polling, with a deadline.
fn read_all(rx: &mut mio::unix::pipe::Receiver) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rx.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "timed out reading child output");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8(out).unwrap()
}

/// Zombie children forked by these tests. A child that dies before exec keeps the name of
/// the forking thread, which the test harness names after the test (`spawn::tests::…`);
/// matching on it keeps other modules' concurrently running children out of the picture
/// (a blanket `waitpid(-1)` could also steal their children).
fn my_zombies() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid …; comm may contain spaces, so split at the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else { continue };
        let mut rest = tail.split_whitespace();
        let (state, ppid) = (rest.next(), rest.next());
        if state == Some("Z") && ppid == Some(me.as_str()) && head.contains("(spawn::tests") {
            found.push(head.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(-1));
        }
    }
    found
}

fn wait_exit(pid: nix::unistd::Pid) -> i32 {
    match waitpid(pid, None).unwrap() {
        WaitStatus::Exited(_, code) => code,
        other => panic!("unexpected wait status {other:?}"),
    }
}

/// Runs a script, returns (stdout, stderr, exit code).
fn run(spec: &SpawnSpec) -> (String, String, i32) {
    let mut w = spawn_worker(spec).unwrap_or_else(|e| panic!("{e}"));
    drop(w.request_tx);
    let out = read_all(&mut w.stdout_rx);
    let err = read_all(&mut w.stderr_rx);
    (out, err, wait_exit(w.pid))
}

#[test]
fn stdout_and_stderr_are_captured() {
    let _g = lock();
    let (out, err, code) = run(&sh_spec("echo out; echo err >&2; exit 3"));
    assert_eq!((out.as_str(), err.as_str(), code), ("out\n", "err\n", 3));
}

#[test]
fn request_and_reply_pipes_round_trip() {
    let _g = lock();
    // Echo fd 3 back on fd 4, upper-cased, then exit when fd 3 reaches EOF.
    let mut w = spawn_worker(&sh_spec("tr a-z A-Z <&3 >&4")).unwrap();
    w.request_tx.write_all(b"hello pipes\n").unwrap();
    drop(w.request_tx);
    assert_eq!(read_all(&mut w.reply_rx), "HELLO PIPES\n");
    assert_eq!(wait_exit(w.pid), 0);
}

#[test]
fn stdin_is_dev_null() {
    let _g = lock();
    let (out, _, code) = run(&sh_spec("wc -c; readlink /proc/self/fd/0 2>/dev/null || echo /dev/null"));
    assert_eq!(code, 0);
    let mut lines = out.lines();
    assert_eq!(lines.next().map(str::trim), Some("0"));
    assert_eq!(lines.next(), Some("/dev/null"));
}

#[test]
fn no_fd_leaks_into_the_worker() {
    let _g = lock();
    // A non-CLOEXEC fd in the dispatcher, high enough not to be overwritten by the dup2s
    // onto 0..=5, as a careless library might leave one.
    // SAFETY: plain open/fcntl/close on fds owned by this test.
    let leaky = unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        assert!(fd >= 0);
        let high = libc::fcntl(fd, libc::F_DUPFD, 100);
        libc::close(fd);
        high
    };
    assert!(leaky >= 100);
    // ls (a separate process, `; true` keeps sh from exec'ing it) lists the shell's fds.
    let (out, err, code) = run(&sh_spec("ls /proc/$$/fd; true"));
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(leaky) };
    assert_eq!(code, 0, "{err}");
    let mut fds: Vec<i32> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
    fds.sort();
    assert_eq!(fds, vec![0, 1, 2, 3, 4], "leaky fd was {leaky}");
}

#[test]
fn nonexistent_program_is_exec_enoent() {
    let _g = lock();
    // Not on PATH: detected before the fork.
    let mut spec = sh_spec("");
    spec.program = Program::Exec { argv: vec!["rustworkers-no-such-program".into()] };
    match spawn_worker(&spec) {
        Err(SpawnError::Exec { errno: Errno::ENOENT, .. }) => {}
        other => panic!("{other:?}"),
    }

    // A path: execve fails in the child and reports through the error pipe.
    spec.program = Program::Exec { argv: vec!["/nonexistent/worker".into(), "x".into()] };
    let err = spawn_worker(&spec).unwrap_err();
    assert!(matches!(err, SpawnError::Exec { errno: Errno::ENOENT, .. }), "{err:?}");
    assert!(err.is_permanent());
    assert_eq!(
        err.to_string(),
        "could not spawn worker api/0 (`/nonexistent/worker x`): exec /nonexistent/worker: No such file or directory"
    );
    // The failed child was reaped: no zombie is left.
    assert_eq!(my_zombies(), Vec::<i32>::new());

    // Not executable.
    spec.program = Program::Exec { argv: vec!["/etc/passwd".into()] };
    let err = spawn_worker(&spec).unwrap_err();
    assert!(matches!(err, SpawnError::Exec { errno: Errno::EACCES, .. }), "{err:?}");
}

#[test]
fn cwd_and_env_are_applied() {
    let _g = lock();
    let dir = std::env::temp_dir();
    let mut spec = sh_spec(
        "pwd; echo $FOO $RUSTWORKERS_PROTOCOL $RUSTWORKERS_REQUEST_FD $RUSTWORKERS_REPLY_FD $RUSTWORKERS_POOL $RUSTWORKERS_WORKER_ID; echo ${HOME:+inherited}",
    );
    spec.cwd = Some(dir.clone());
    spec.worker_id = 7;
    spec.env = vec![("FOO".into(), "bar baz".into()), ("RUSTWORKERS_POOL".into(), "ignored".into())];
    let (out, _, code) = run(&spec);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(std::fs::canonicalize(lines[0]).unwrap(), std::fs::canonicalize(&dir).unwrap());
    assert_eq!(lines[1], "bar baz 1 3 4 api 7");
    if std::env::var_os("HOME").is_some() {
        assert_eq!(lines[2], "inherited");
    }
}

#[test]
fn bad_cwd_is_a_child_setup_error() {
    let _g = lock();
    let mut spec = sh_spec("true");
    spec.cwd = Some("/nonexistent/dir".into());
    let err = spawn_worker(&spec).unwrap_err();
    assert!(matches!(err, SpawnError::ChildSetup { step: ChildStep::Chdir, errno: Errno::ENOENT, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "could not spawn worker api/0 (`sh -c true`): chdir in the child: No such file or directory"
    );
    assert_eq!(my_zombies(), Vec::<i32>::new());
}

#[test]
fn memory_limit_sets_rlimit_as() {
    let _g = lock();
    let mut spec = sh_spec("ulimit -v");
    spec.memory_limit_mb = Some(256);
    let (out, _, code) = run(&spec);
    assert_eq!((out.trim(), code), ("262144", 0));
}

#[test]
fn worker_gets_its_own_session_and_default_signals() {
    let _g = lock();
    // SIGTERM ignored in the dispatcher must not stay ignored in the worker.
    // SAFETY: plain signal() calls, restored right after the spawn.
    let old = unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
    let w =
        spawn_worker(&sh_spec("grep -E '^(SigIgn|SigBlk)' /proc/self/status; ps -o sid= -p $$ 2>/dev/null || true"));
    // SAFETY: restoring the previous disposition.
    unsafe { libc::signal(libc::SIGUSR2, old) };
    let mut w = w.unwrap();
    drop(w.request_tx);
    let out = read_all(&mut w.stdout_rx);
    let pid = w.pid;
    assert_eq!(wait_exit(pid), 0);
    // The grep child shows the inherited mask and ignored set: both empty, except glibc's
    // reserved signals 32/33 (SIGCANCEL/SIGSETXID), which libc's sigaction refuses to touch
    // and which glibc manages itself in the exec'd program.
    let field = |name: &str| {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{out}"));
        u64::from_str_radix(line[name.len()..].trim(), 16).unwrap() & !(0b11 << 31)
    };
    assert_eq!(field("SigBlk:"), 0, "{out}");
    assert_eq!(field("SigIgn:"), 0, "{out}");
    if let Some(sid) = out.lines().nth(2) {
        assert_eq!(sid.trim(), pid.to_string(), "worker leads its own session");
    }
}

#[test]
fn user_and_group_switch_when_root() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let _g = lock();
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else { return };
    let mut spec = sh_spec("id -u; id -g");
    spec.user = Some("nobody".into());
    let (out, err, code) = run(&spec);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{}\n{}\n", nobody.uid, nobody.gid));

    spec.user = Some("rustworkers-no-such-user".into());
    let err = spawn_worker(&spec).unwrap_err();
    assert!(matches!(err, SpawnError::UnknownAccount { kind: "user", errno: None, .. }), "{err:?}");
}

#[test]
fn invalid_specs_are_rejected_before_forking() {
    let mut spec = sh_spec("x");
    spec.program = Program::Exec { argv: vec![] };
    assert!(matches!(spawn_worker(&spec), Err(SpawnError::Invalid { .. })));
    spec.program = Program::Exec { argv: vec!["sh".into(), "a\0b".into()] };
    assert!(matches!(spawn_worker(&spec), Err(SpawnError::Invalid { .. })));
    let mut spec = sh_spec("x");
    spec.env = vec![("A=B".into(), "1".into())];
    assert!(matches!(spawn_worker(&spec), Err(SpawnError::Invalid { .. })));
}

#[test]
fn program_lookup_follows_execvp() {
    let bin = std::ffi::OsStr::new("/nonexistent:/bin:/usr/bin");
    let sh = resolve_program("sh", Some(bin)).unwrap();
    assert!(sh.ends_with("sh") && sh.is_absolute());
    assert_eq!(resolve_program("./rel", Some(bin)), Ok(PathBuf::from("./rel")));
    assert_eq!(resolve_program("no-such-thing-here", Some(bin)), Err(Errno::ENOENT));
    assert_eq!(resolve_program("passwd", Some(std::ffi::OsStr::new("/etc"))), Err(Errno::EACCES));
}

#[test]
fn program_display_is_short() {
    assert_eq!(Program::Native { name: "echo".into() }.to_string(), "native:echo");
    let long = Program::Exec { argv: vec!["python3".into(), "x".repeat(200)] }.to_string();
    assert_eq!(long.chars().count(), 81);
    assert!(long.starts_with("python3 xxx") && long.ends_with('…'));
}

fn native_spec(name: &str) -> SpawnSpec {
    SpawnSpec { program: Program::Native { name: name.into() }, ..sh_spec("") }
}

#[test]
fn native_unknown_worker_exits_with_its_code() {
    let _g = lock();
    let (_, err, code) = run(&native_spec("rustworkers-no-such-native"));
    assert_eq!(code, crate::worker::EXIT_UNKNOWN_WORKER, "{err}");
    assert!(err.contains("rustworkers-no-such-native"), "{err}");
}

#[test]
fn native_echo_says_hello_over_fd_4() {
    use crate::ipc::{ConfigMeta, FrameDecoder, FrameType, HelloMeta, encode_json};
    let _g = lock();
    let mut w = spawn_worker(&native_spec("echo")).unwrap();
    let config = ConfigMeta {
        protocol: 1,
        pool: "api".into(),
        worker_id: 0,
        heartbeat_interval: 30.0,
        timeout: 30.0,
        log_level: "warning".into(),
        kwargs: Default::default(),
        max_frame_bytes: crate::ipc::LEGACY_MAX_FRAME_BYTES,
    };
    let mut out = Vec::new();
    encode_json(&mut out, FrameType::Config, 0, &config, b"").unwrap();
    w.request_tx.write_all(&out).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut buf = [0u8; 4096];
    let hello = loop {
        if let Some(f) = decoder.next_frame().unwrap() {
            break f;
        }
        match w.reply_rx.read(&mut buf) {
            Ok(0) => panic!("reply pipe closed before HELLO"),
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no HELLO");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(hello.kind, FrameType::Hello);
    assert_eq!(hello.meta_json::<HelloMeta>().unwrap().pid, w.pid.as_raw() as u32);
    // EOF on fd 3 = dispatcher gone: the worker exits 0.
    drop(w.request_tx);
    assert_eq!(wait_exit(w.pid), 0);
}
