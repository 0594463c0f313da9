//! How Python workers get the `rustworkers` shim: the command line and `PYTHONPATH` a pool
//! (or the conformance kit) starts them with.
//!
//! Preference, per interpreter: `$RUSTWORKERS_SHIM_DIR` when set (an explicit choice wins);
//! otherwise a shim the interpreter itself imports (`pip install .` into its venv); otherwise
//! the shim bundled with this binary's checkout. The middle case cannot be seen from here
//! without running the interpreter, so the interpreter decides at import time: the worker
//! is started through [`BOOTSTRAP`], which imports `rustworkers` normally and appends the
//! bundled directory to `sys.path` (after site-packages) only when that fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Env var naming a directory that holds the `rustworkers` package; it goes first on
/// `PYTHONPATH` of every Python worker.
pub const SHIM_DIR_ENV: &str = "RUSTWORKERS_SHIM_DIR";

/// `python -c BOOTSTRAP FALLBACK_DIR ARGS…` behaves as `python -m rustworkers ARGS…`, except
/// that FALLBACK_DIR is appended to `sys.path` when no `rustworkers` is importable.
pub const BOOTSTRAP: &str = "\
import sys
fallback = sys.argv.pop(1)
try:
    import rustworkers
except ModuleNotFoundError as e:
    if e.name != 'rustworkers' or not fallback:
        raise
    sys.path.append(fallback)
import runpy
runpy.run_module('rustworkers', run_name='__main__', alter_sys=True)
";

/// Where the shim comes from when the interpreter has none of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimSource {
    /// `$RUSTWORKERS_SHIM_DIR`: first on `PYTHONPATH`, used even over an installed shim.
    Override(PathBuf),
    /// The bundled shim: used only when the interpreter cannot import an installed one.
    Bundled(PathBuf),
    /// No bundled shim found: the interpreter must have one installed.
    InstalledOnly,
}

/// Decide the shim source: `$RUSTWORKERS_SHIM_DIR` (if it holds the package); else a
/// `workers/` folder beside the executable or up to four levels above it (a checkout's
/// `target/release/rustworkers`); else the source tree this binary was built from.
pub fn shim_source() -> ShimSource {
    let has_shim = |dir: &Path| dir.join("rustworkers").join("__init__.py").is_file();
    if let Some(dir) = std::env::var_os(SHIM_DIR_ENV).map(PathBuf::from)
        && has_shim(&dir)
    {
        return ShimSource::Override(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(5) {
            let candidate = dir.join("workers");
            if has_shim(&candidate) {
                return ShimSource::Bundled(candidate);
            }
        }
    }
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workers");
    if has_shim(&built) { ShimSource::Bundled(built) } else { ShimSource::InstalledOnly }
}

/// The directory holding a shim this binary can offer (override or bundled), if any.
pub fn shim_dir() -> Option<PathBuf> {
    match shim_source() {
        ShimSource::Override(dir) | ShimSource::Bundled(dir) => Some(dir),
        ShimSource::InstalledOnly => None,
    }
}

/// How to start `python -m rustworkers ARGS…` as a pool does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimCommand {
    pub argv: Vec<String>,
    /// The `PYTHONPATH` to set, when there is anything to put on it.
    pub pythonpath: Option<String>,
}

/// `interpreter -m rustworkers ARGS…` with `module_path` and the inherited `PYTHONPATH`
/// on the path, the shim chosen as the module docs say.
pub fn shim_command(interpreter: &str, args: &[String], module_path: &[PathBuf]) -> ShimCommand {
    let source = shim_source();
    let mut paths: Vec<String> = Vec::new();
    if let ShimSource::Override(dir) = &source {
        paths.push(dir.display().to_string());
    }
    paths.extend(module_path.iter().map(|p| p.display().to_string()));
    if let Ok(existing) = std::env::var("PYTHONPATH")
        && !existing.is_empty()
    {
        paths.push(existing);
    }
    let mut argv = vec![interpreter.to_string()];
    match &source {
        ShimSource::Bundled(dir) => {
            argv.extend(["-c".to_string(), BOOTSTRAP.to_string(), dir.display().to_string()]);
        }
        ShimSource::Override(_) | ShimSource::InstalledOnly => {
            argv.extend(["-m".to_string(), "rustworkers".to_string()]);
        }
    }
    argv.extend(args.iter().cloned());
    ShimCommand { argv, pythonpath: (!paths.is_empty()).then(|| paths.join(":")) }
}

/// The conformance kit's version of a pool's start: `PROG -m rustworkers ARGS…` gets the
/// same shim choice as a pool with that interpreter; any other program gets the shim
/// directory on `PYTHONPATH` (first for an override, last otherwise) in case it imports it.
pub fn kit_command(argv: &[String]) -> ShimCommand {
    if let [interpreter, dash_m, module, args @ ..] = argv
        && dash_m == "-m"
        && module == "rustworkers"
    {
        return shim_command(interpreter, args, &[]);
    }
    let existing = std::env::var("PYTHONPATH").ok().filter(|p| !p.is_empty());
    let pythonpath = match (shim_source(), existing) {
        (ShimSource::Override(dir), Some(p)) => Some(format!("{}:{p}", dir.display())),
        (ShimSource::Bundled(dir), Some(p)) => Some(format!("{p}:{}", dir.display())),
        (ShimSource::Override(dir) | ShimSource::Bundled(dir), None) => Some(dir.display().to_string()),
        (ShimSource::InstalledOnly, existing) => existing,
    };
    ShimCommand { argv: argv.to_vec(), pythonpath }
}

/// What running the interpreter said about `import rustworkers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It imports one, from this package directory.
    Imports(PathBuf),
    /// It runs but has no `rustworkers` of its own.
    NotImportable,
    /// It could not be run (not found, not executable, timed out, …).
    Failed(String),
}

/// Ask `interpreter` where `import rustworkers` comes from, with `pythonpath` set as a
/// pool would set it but without the bundled fallback. For `check` and `info`, never in
/// the dispatcher's loop: it runs a process and waits for it (at most 10 s).
pub fn probe(interpreter: &str, pythonpath: Option<&str>, cwd: Option<&Path>) -> Probe {
    let mut cmd = Command::new(interpreter);
    cmd.args(["-c", "import os, rustworkers; print(os.path.dirname(os.path.abspath(rustworkers.__file__)))"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match pythonpath {
        Some(p) => cmd.env("PYTHONPATH", p),
        None => cmd.env_remove("PYTHONPATH"),
    };
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => return Probe::Failed(format!("could not run {interpreter:?}: {err}")),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Probe::Failed(format!("{interpreter:?} did not answer within 10 s"));
            }
            Err(err) => return Probe::Failed(format!("could not wait for {interpreter:?}: {err}")),
        }
    }
    let out = match child.wait_with_output() {
        Ok(out) => out,
        Err(err) => return Probe::Failed(format!("could not read from {interpreter:?}: {err}")),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Probe::Imports(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    } else if stderr.contains("No module named 'rustworkers'") {
        Probe::NotImportable
    } else {
        let last = stderr.lines().last().unwrap_or("").trim().to_string();
        Probe::Failed(format!("{interpreter:?} failed to import rustworkers: {last}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn pool_command_prefers_the_interpreters_own_shim() {
        // Built from a checkout: the bundled shim exists, so the bootstrap form is used.
        let cmd = shim_command("python3", &s(&["worker", "m:C"]), &[PathBuf::from("/app")]);
        match shim_source() {
            ShimSource::Bundled(dir) => {
                assert_eq!(cmd.argv[..3], s(&["python3", "-c", BOOTSTRAP]));
                assert_eq!(cmd.argv[3], dir.display().to_string());
                assert_eq!(cmd.argv[4..], s(&["worker", "m:C"]));
                assert!(cmd.pythonpath.as_deref().is_some_and(|p| p.starts_with("/app")), "{cmd:?}");
            }
            ShimSource::Override(dir) => {
                assert_eq!(cmd.argv, s(&["python3", "-m", "rustworkers", "worker", "m:C"]));
                assert!(cmd.pythonpath.unwrap().starts_with(&dir.display().to_string()));
            }
            ShimSource::InstalledOnly => panic!("tests run from a checkout"),
        }
    }

    #[test]
    fn kit_rewrites_dash_m_rustworkers_only() {
        let cmd = kit_command(&s(&["python3", "-m", "rustworkers", "worker", "m:C"]));
        assert_eq!(cmd.argv.last().map(String::as_str), Some("m:C"));
        assert_eq!(cmd, shim_command("python3", &s(&["worker", "m:C"]), &[]));
        let cmd = kit_command(&s(&["./w", "-m", "x"]));
        assert_eq!(cmd.argv, s(&["./w", "-m", "x"]));
        assert!(cmd.pythonpath.is_some());
    }

    #[test]
    fn bootstrap_falls_back_to_the_bundled_shim() {
        let Some(dir) = shim_dir() else { return };
        // No PYTHONPATH: unless a shim is installed, only the fallback can provide it.
        let out = Command::new("python3")
            .args(["-c", BOOTSTRAP, &dir.display().to_string(), "bogus"])
            .env_remove("PYTHONPATH")
            .output()
            .expect("python3");
        // The shim's __main__ ran and printed its usage (exit 2), so the import worked.
        assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: python -m rustworkers"));
    }

    #[test]
    fn bootstrap_prefers_a_shim_the_interpreter_imports() {
        // A stand-in for a `pip install .`-ed shim, importable through PYTHONPATH.
        let dir = std::env::temp_dir().join(format!("rw-installed-shim-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rustworkers")).unwrap();
        std::fs::write(dir.join("rustworkers/__init__.py"), "").unwrap();
        std::fs::write(dir.join("rustworkers/__main__.py"), "import sys; print('installed', sys.argv[1:])").unwrap();
        let out = Command::new("python3")
            .args(["-c", BOOTSTRAP, "/nonexistent-bundled", "worker", "m:C"])
            .env("PYTHONPATH", &dir)
            .output()
            .expect("python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.trim(), "installed ['worker', 'm:C']", "{}", String::from_utf8_lossy(&out.stderr));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn probe_reports_missing_interpreter_and_importability() {
        assert!(matches!(probe("/nonexistent/python9", None, None), Probe::Failed(_)));
        let Some(dir) = shim_dir() else { return };
        let with = probe("python3", Some(&dir.display().to_string()), None);
        assert_eq!(with, Probe::Imports(dir.join("rustworkers").canonicalize().unwrap()));
    }
}
