//! What a valid config needs from the machine it starts on: the programs, interpreters,
//! Python shim, directories, users and native workers its pools name. `rustworkers check`
//! reports these after the config itself validated; `rustworkers info` shows what each
//! pool will start.
//!
//! Errors are things without which a pool cannot start. Warnings are things that may
//! legitimately appear later (a `module_path` directory created by a deploy step); `check`
//! prints them and still exits 0.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{AccessFlags, Group, User, access};

use crate::config::{Config, PoolConfig, WorkerKind};
use crate::python::{self, Probe, ShimSource};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The pool may still start: the thing can appear before it is needed.
    Warning,
    /// The pool cannot start as configured.
    Error,
}

/// One problem, at a dotted config key (`pool[0].command[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub key: String,
    pub message: String,
}

/// Check every pool of `config` against this machine. Runs Python interpreters (to see
/// whether they import the shim), so it is for the CLI, never for the event loop.
pub fn check(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (i, pool) in config.pools.iter().enumerate() {
        check_pool(pool, &format!("pool[{i}]"), &mut findings);
    }
    findings
}

fn check_pool(pool: &PoolConfig, key: &str, out: &mut Vec<Finding>) {
    let mut error = |field: String, message: String| {
        out.push(Finding { severity: Severity::Error, key: format!("{key}.{field}"), message })
    };
    match &pool.worker {
        WorkerKind::Native(name) => {
            if !crate::worker::is_registered(name) {
                error(
                    "native".into(),
                    format!(
                        "no native worker {name:?} in this binary (built in: echo, chaos; a library \
                         user's own workers are known only to the binary that registers them)"
                    ),
                );
            }
        }
        WorkerKind::Command(argv) => {
            if let Err(why) = find_program(&argv[0], pool) {
                error("command[0]".into(), why);
            }
        }
        WorkerKind::Python { interpreter, module_path, .. }
        | WorkerKind::Wsgi { interpreter, module_path, .. }
        | WorkerKind::Asgi { interpreter, module_path, .. } => {
            match find_program(interpreter, pool) {
                Err(why) => error("interpreter".into(), why),
                Ok(path) => {
                    if let Some(why) = shim_problem(&path, pool, module_path) {
                        error("interpreter".into(), why);
                    }
                }
            }
            for (m, dir) in module_path.iter().enumerate() {
                if !dir.is_dir() {
                    // An explicit module_path array is indexed; the default has no key of its own.
                    let field = if module_path.len() > 1 { format!("module_path[{m}]") } else { "module_path".into() };
                    out.push(Finding {
                        severity: Severity::Warning,
                        key: format!("{key}.{field}"),
                        message: format!("directory {} does not exist (yet)", dir.display()),
                    });
                }
            }
        }
    }
    if let Some(user) = &pool.user
        && user.parse::<u32>().is_err()
        && !matches!(User::from_name(user), Ok(Some(_)))
    {
        out.push(Finding {
            severity: Severity::Error,
            key: format!("{key}.user"),
            message: format!("no user {user:?} on this system"),
        });
    }
    if let Some(group) = &pool.group
        && group.parse::<u32>().is_err()
        && !matches!(Group::from_name(group), Ok(Some(_)))
    {
        out.push(Finding {
            severity: Severity::Error,
            key: format!("{key}.group"),
            message: format!("no group {group:?} on this system"),
        });
    }
}

/// The program a pool would exec: a path must be an executable file; a bare name is looked
/// up in the pool's `PATH` (its `env.PATH`, else the server's) as the spawner does.
fn find_program(program: &str, pool: &PoolConfig) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = Path::new(program);
        return match std::fs::metadata(path) {
            Err(err) => Err(format!("{program} does not exist: {err}")),
            Ok(meta) if !meta.is_file() => Err(format!("{program} is not a file")),
            Ok(_) if access(path, AccessFlags::X_OK).is_err() => Err(format!("{program} is not executable")),
            Ok(_) => Ok(path.to_path_buf()),
        };
    }
    let from_env = pool.env.get("PATH").map(OsStr::new);
    let inherited = std::env::var_os("PATH");
    match crate::spawn::resolve_program(program, from_env.or(inherited.as_deref())) {
        Ok(path) => Ok(path),
        Err(Errno::EACCES) => Err(format!("{program:?} is on PATH but not executable")),
        Err(_) => Err(format!("{program:?} was not found on PATH")),
    }
}

/// `None` when the interpreter will find a shim; otherwise why not.
fn shim_problem(interpreter: &Path, pool: &PoolConfig, module_path: &[PathBuf]) -> Option<String> {
    if !matches!(python::shim_source(), ShimSource::InstalledOnly) {
        return None; // an override or the bundled fallback always provides one
    }
    let pythonpath = python::shim_command("python3", &[], module_path).pythonpath;
    match python::probe(&interpreter.display().to_string(), pythonpath.as_deref(), pool.cwd.as_deref()) {
        Probe::Imports(_) => None,
        Probe::NotImportable => Some(format!(
            "{} cannot import the rustworkers shim and this binary has none bundled: `pip install` it \
             into that interpreter's environment or set {}",
            interpreter.display(),
            python::SHIM_DIR_ENV
        )),
        Probe::Failed(why) => Some(why),
    }
}

/// `rustworkers info`: per pool, what it will start and, for Python pools, which
/// interpreter and shim.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config: {}", config.source);
    match python::shim_source() {
        ShimSource::Override(dir) => {
            let _ = writeln!(out, "shim: {} (from {}, used first)", dir.display(), python::SHIM_DIR_ENV);
        }
        ShimSource::Bundled(dir) => {
            let _ = writeln!(out, "bundled shim: {} (used when an interpreter has none installed)", dir.display());
        }
        ShimSource::InstalledOnly => {
            let _ = writeln!(out, "bundled shim: none (interpreters must have rustworkers installed)");
        }
    }
    if config.pools.is_empty() {
        let _ = writeln!(out, "no pools");
    }
    for pool in &config.pools {
        let _ = writeln!(out, "pool {}:", pool.name);
        match &pool.worker {
            WorkerKind::Native(name) => {
                let known = if crate::worker::is_registered(name) { "" } else { " (unknown to this binary)" };
                let _ = writeln!(out, "  native worker {name:?}{known}");
            }
            WorkerKind::Command(argv) => {
                let resolved = find_program(&argv[0], pool).unwrap_or_else(|why| PathBuf::from(format!("?? {why}")));
                let _ = writeln!(out, "  command: {} ({})", argv.join(" "), resolved.display());
            }
            WorkerKind::Python { target, interpreter, module_path }
            | WorkerKind::Wsgi { target, interpreter, module_path, .. }
            | WorkerKind::Asgi { target, interpreter, module_path, .. } => {
                let kind = match pool.worker {
                    WorkerKind::Python { .. } => "python",
                    WorkerKind::Wsgi { .. } => "wsgi",
                    _ => "asgi",
                };
                let _ = writeln!(out, "  {kind}: {target}");
                let _ = writeln!(out, "  module_path: {}", join_paths(module_path));
                let path = match find_program(interpreter, pool) {
                    Ok(path) => path,
                    Err(why) => {
                        let _ = writeln!(out, "  interpreter: {interpreter} (?? {why})");
                        continue;
                    }
                };
                let _ = writeln!(out, "  interpreter: {interpreter} ({})", path.display());
                let _ = writeln!(out, "  shim: {}", shim_for(&path, pool, module_path));
            }
        }
    }
    out
}

fn shim_for(interpreter: &Path, pool: &PoolConfig, module_path: &[PathBuf]) -> String {
    let source = python::shim_source();
    if let ShimSource::Override(dir) = &source {
        return format!("{} ({})", dir.display(), python::SHIM_DIR_ENV);
    }
    let pythonpath = python::shim_command("python3", &[], module_path).pythonpath;
    match (python::probe(&interpreter.display().to_string(), pythonpath.as_deref(), pool.cwd.as_deref()), source) {
        (Probe::Imports(dir), _) => format!("{} (importable by the interpreter)", dir.display()),
        (Probe::NotImportable, ShimSource::Bundled(dir)) => format!("{} (bundled fallback)", dir.display()),
        (Probe::NotImportable, _) => "?? none: the interpreter cannot import rustworkers".to_string(),
        (Probe::Failed(why), _) => format!("?? {why}"),
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pool: &str) -> Config {
        let dir = std::env::temp_dir().join(format!("rw-preflight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!("[[pool]]\nname = \"p\"\nroutes = [\"/p/**\"]\n{pool}");
        Config::parse(&text, "rw.toml", &dir).unwrap_or_else(|e| panic!("{e}"))
    }

    fn keys(pool: &str) -> Vec<(Severity, String)> {
        check(&config(pool)).into_iter().map(|f| (f.severity, f.key)).collect()
    }

    #[test]
    fn good_pools_have_no_findings() {
        assert_eq!(keys("native = \"echo\"\n"), vec![]);
        assert_eq!(keys("command = [\"sh\", \"-c\", \"x\"]\n"), vec![]);
        assert_eq!(keys("python = \"m:C\"\n"), vec![]);
        assert_eq!(keys("native = \"echo\"\nuser = \"root\"\ngroup = \"0\"\n"), vec![]);
    }

    #[test]
    fn what_cannot_start_is_an_error() {
        let e = |k: &str| vec![(Severity::Error, format!("pool[0].{k}"))];
        assert_eq!(keys("native = \"hello\"\n"), e("native"));
        assert_eq!(keys("command = [\"no-such-program-rw\"]\n"), e("command[0]"));
        assert_eq!(keys("command = [\"./missing\"]\n"), e("command[0]"));
        assert_eq!(keys("python = \"m:C\"\ninterpreter = \"pyhton3\"\n"), e("interpreter"));
        assert_eq!(keys("native = \"echo\"\nuser = \"no-such-user-rw\"\n"), e("user"));
        assert_eq!(keys("native = \"echo\"\ngroup = \"no-such-group-rw\"\n"), e("group"));
    }

    #[test]
    fn what_may_appear_later_is_a_warning() {
        assert_eq!(
            keys("wsgi = \"m:app\"\nmodule_path = \"later\"\n"),
            vec![(Severity::Warning, "pool[0].module_path".to_string())]
        );
        assert_eq!(
            keys("wsgi = \"m:app\"\nmodule_path = [\".\", \"later\"]\n"),
            vec![(Severity::Warning, "pool[0].module_path[1]".to_string())]
        );
    }

    #[test]
    fn describe_names_interpreter_and_shim() {
        let text = describe(&config("python = \"m:C\"\n"));
        assert!(text.contains("pool p:") && text.contains("interpreter: python3 (/"), "{text}");
        assert!(text.contains("shim: /"), "{text}");
        let text = describe(&config("native = \"echo\"\n"));
        assert!(text.contains("native worker \"echo\""), "{text}");
    }
}
