//! Command-line arguments, parsed with `lexopt` on `OsString`s (as ripgrep does): one
//! parser for the server and every verb.
//!
//! `main.rs` calls [`parse_args`] with `std::env::args_os().skip(1)` and acts on the
//! [`Command`]; an `Err` is a message for stderr (exit status 2), [`USAGE`] is the help
//! text. Paths (`-c FILE`) may be any bytes; every other argument must be UTF-8 and gets a
//! clear error otherwise, never a panic.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the server with this config file, or the embedded default when `None`.
    Run { config: Option<PathBuf> },
    /// Validate a config file (including what only shows at startup) and exit.
    Check { config: PathBuf },
    /// Print, per pool, the interpreter and shim (or program) it will start.
    Info { config: Option<PathBuf> },
    /// Run the pipe-protocol conformance suite against a worker.
    Conformance(ConformanceArgs),
    /// Print the version and exit.
    Version,
    /// Print [`USAGE`] and exit.
    Help,
}

/// `rustworkers conformance …`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConformanceArgs {
    pub target: ConformanceTarget,
    /// A GET to this path must be answered by a stream.
    pub stream_path: Option<String>,
    /// Deadline of each case.
    pub timeout: Option<Duration>,
}

impl ConformanceArgs {
    /// The kit's options for these arguments.
    pub fn options(&self) -> crate::conformance::Options {
        let program = match &self.target {
            ConformanceTarget::Native(name) => crate::spawn::Program::Native { name: name.clone() },
            ConformanceTarget::Program(argv) => crate::spawn::Program::Exec { argv: argv.clone() },
        };
        let mut opts = crate::conformance::Options::new(program);
        opts.stream_path = self.stream_path.clone();
        if let Some(timeout) = self.timeout {
            opts.case_timeout = timeout;
        }
        opts
    }
}

/// The worker under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConformanceTarget {
    /// A native worker built into this binary (`echo`, `chaos`).
    Native(String),
    /// A program and its arguments, started as a pool would start it.
    Program(Vec<String>),
}

/// Full help text for `-h` / `--help`.
pub const USAGE: &str = "\
rustworkers: a pre-fork worker server

USAGE:
    rustworkers [-c FILE]               run the server (embedded default config without -c)
    rustworkers check [-c] FILE         validate FILE, including what would fail at startup
                                        (missing programs, interpreters, users, native
                                        workers); exit 0 if it can start (warnings are
                                        printed), 1 if not
    rustworkers info [-c FILE]          print, per pool, the program, interpreter and
                                        Python shim it will use
    rustworkers conformance [OPTIONS] -- PROG [ARGS...]
                                        test a worker program against the pipe protocol
    rustworkers conformance [OPTIONS] --native NAME
                                        test a native worker built into this binary
                                        (echo, chaos)
    rustworkers -V | --version          print the version
    rustworkers -h | --help | help      print this help

OPTIONS:
    -c, --config FILE    TOML config file (see docs/config.md); relative paths in it
                         resolve against the file's directory. Also --config=FILE.

CONFORMANCE OPTIONS:
    --native NAME        test the native worker NAME instead of a program
    --stream-path PATH   also require a GET to PATH to be answered as a stream
    --timeout SECS       deadline of each case in seconds (default 5)

    A Python worker from a checkout, with the bundled shim found as pools find it:
        rustworkers conformance -- python3 -m rustworkers worker examples.items_worker:ItemsWorker

SIGNALS:
    TERM, INT    graceful stop: stop accepting, finish in-flight requests
                 (up to server.shutdown_timeout), then stop the workers
    QUIT         fast stop: close connections and kill the workers now
    HUP          reload: re-read the config file; pools whose settings changed get
                 new workers while the old ones finish their requests and exit
                 (listeners stay: a changed server.bind needs a restart)
    TTIN, TTOU   add / remove one worker in every pool (until the next reload)
    USR1         reopen log files

ENVIRONMENT:
    RUST_LOG                  log filter for the dispatcher (env_logger syntax), e.g. info,
                              rustworkers=debug
    RUSTWORKERS_STATIC_DIR    static folder served by the embedded default config
    RUSTWORKERS_SHIM_DIR      directory holding the `rustworkers` Python package: put
                              first on PYTHONPATH of python/wsgi pools. Unset: a shim the
                              pool's interpreter imports (pip install .) is used, else the
                              one bundled with this binary's checkout
";

/// The verb chosen before options and positional arguments are sorted out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Run,
    Check,
    Info,
}

/// Parse the arguments after `argv[0]`. The error is a one-line message that already
/// points at `--help`.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    parse(args).map_err(|e| format!("{e}; see `rustworkers --help`"))
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut config: Option<PathBuf> = None;
    let mut verb: Option<Verb> = None;
    let mut positional: Vec<OsString> = Vec::new();

    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Short('c') | Long("config") => {
                let value = parser.value().map_err(|e| e.to_string())?;
                set_config(&mut config, value)?;
            }
            Value(value) if verb.is_none() && positional.is_empty() => match value.to_str() {
                Some("help") => return Ok(Command::Help),
                Some("check") => verb = Some(Verb::Check),
                Some("info") => verb = Some(Verb::Info),
                Some("conformance") => {
                    if config.is_some() {
                        return Err("`conformance` takes no config file".into());
                    }
                    return parse_conformance(&mut parser);
                }
                _ => positional.push(value),
            },
            Value(value) => positional.push(value),
            _ => return Err(arg.unexpected().to_string()),
        }
    }

    match verb.unwrap_or(Verb::Run) {
        Verb::Check => {
            // `check FILE` is accepted as well as `check -c FILE`.
            let config = match (config, positional.as_slice()) {
                (Some(config), []) => config,
                (None, [file]) => non_empty_path(file.clone())?,
                (None, []) => return Err("`check` needs a config file: rustworkers check -c FILE".into()),
                (_, [extra, ..]) => return Err(format!("unexpected argument {extra:?}")),
            };
            Ok(Command::Check { config })
        }
        Verb::Info => match positional.first() {
            Some(extra) => Err(format!("unexpected argument {extra:?}")),
            None => Ok(Command::Info { config }),
        },
        Verb::Run => match positional.first() {
            Some(word) => Err(format!("unknown command {word:?} (commands: check, info, conformance, help)")),
            None => Ok(Command::Run { config }),
        },
    }
}

/// After `conformance`: its options, then `--native NAME` or the program and its
/// arguments (everything from the first non-option, or after `--`, is taken verbatim).
fn parse_conformance(parser: &mut lexopt::Parser) -> Result<Command, String> {
    let mut stream_path = None;
    let mut timeout = None;
    let mut target = None;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Long("native") => {
                let name = utf8(parser.value().map_err(|e| e.to_string())?, "--native")?;
                if name.is_empty() {
                    return Err("`--native` needs a worker name".into());
                }
                target = Some(ConformanceTarget::Native(name));
            }
            Long("stream-path") => {
                stream_path = Some(utf8(parser.value().map_err(|e| e.to_string())?, "--stream-path")?);
            }
            Long("timeout") => {
                let text = utf8(parser.value().map_err(|e| e.to_string())?, "--timeout")?;
                let secs = text
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| format!("`--timeout` expects a number of seconds > 0, got {text:?}"))?;
                timeout = Some(secs);
            }
            Value(program) => {
                if target.is_some() {
                    return Err(format!("unexpected argument {program:?} after --native"));
                }
                let mut argv = vec![utf8(program, "the worker program")?];
                for raw in parser.raw_args().map_err(|e| e.to_string())? {
                    argv.push(utf8(raw, "a worker argument")?);
                }
                target = Some(ConformanceTarget::Program(argv));
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    let target =
        target.ok_or("`conformance` needs a worker: rustworkers conformance -- PROG [ARGS] (or --native NAME)")?;
    Ok(Command::Conformance(ConformanceArgs { target, stream_path, timeout }))
}

/// Worker argv and option values travel as UTF-8 (the spawner and the protocol's JSON).
fn utf8(value: OsString, what: &str) -> Result<String, String> {
    value.into_string().map_err(|raw| format!("{what} {raw:?} is not valid UTF-8"))
}

fn non_empty_path(value: OsString) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err("the config FILE must not be empty".into());
    }
    Ok(PathBuf::from(value))
}

fn set_config(config: &mut Option<PathBuf>, value: OsString) -> Result<(), String> {
    let path = non_empty_path(value)?;
    if config.is_some() {
        return Err("the config file is given more than once".into());
    }
    *config = Some(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(OsString::from))
    }

    fn run(config: &str) -> Command {
        Command::Run { config: Some(PathBuf::from(config)) }
    }

    fn program(v: &[&str]) -> Result<Command, String> {
        Ok(Command::Conformance(ConformanceArgs {
            target: ConformanceTarget::Program(v.iter().map(|s| s.to_string()).collect()),
            stream_path: None,
            timeout: None,
        }))
    }

    #[test]
    fn run_forms() {
        assert_eq!(parse(&[]), Ok(Command::Run { config: None }));
        assert_eq!(parse(&["-c", "a.toml"]), Ok(run("a.toml")));
        assert_eq!(parse(&["-ca.toml"]), Ok(run("a.toml")));
        assert_eq!(parse(&["--config", "a.toml"]), Ok(run("a.toml")));
        assert_eq!(parse(&["--config=a.toml"]), Ok(run("a.toml")));
    }

    #[test]
    fn check_forms() {
        let check = Ok(Command::Check { config: PathBuf::from("a.toml") });
        assert_eq!(parse(&["check", "-c", "a.toml"]), check);
        assert_eq!(parse(&["check", "--config=a.toml"]), check);
        assert_eq!(parse(&["-c", "a.toml", "check"]), check);
        assert_eq!(parse(&["check", "a.toml"]), check);
        assert!(parse(&["check"]).unwrap_err().contains("needs a config file"));
        assert!(parse(&["check", "-c", "a", "b"]).unwrap_err().contains("unexpected argument \"b\""));
    }

    #[test]
    fn info_forms() {
        assert_eq!(parse(&["info"]), Ok(Command::Info { config: None }));
        assert_eq!(parse(&["info", "-c", "a.toml"]), Ok(Command::Info { config: Some("a.toml".into()) }));
        assert!(parse(&["info", "x"]).unwrap_err().contains("unexpected argument"));
    }

    #[test]
    fn conformance_takes_everything_after_the_program() {
        assert_eq!(
            parse(&["conformance", "--", "python3", "-m", "w", "-c", "x"]),
            program(&["python3", "-m", "w", "-c", "x"])
        );
        assert_eq!(parse(&["conformance", "./worker", "--timeout", "1"]), program(&["./worker", "--timeout", "1"]));
        assert!(parse(&["conformance", "--"]).unwrap_err().contains("needs a worker"));
        assert!(parse(&["-c", "a", "conformance", "--", "x"]).unwrap_err().contains("takes no config"));
    }

    #[test]
    fn conformance_options() {
        let got = parse(&["conformance", "--timeout", "2.5", "--stream-path=/s", "--native", "echo"]);
        assert_eq!(
            got,
            Ok(Command::Conformance(ConformanceArgs {
                target: ConformanceTarget::Native("echo".into()),
                stream_path: Some("/s".into()),
                timeout: Some(Duration::from_millis(2500)),
            }))
        );
        assert!(parse(&["conformance", "--timeout", "0", "--", "x"]).unwrap_err().contains("number of seconds"));
        assert!(parse(&["conformance", "--native", "echo", "x"]).unwrap_err().contains("after --native"));
        assert!(parse(&["conformance", "--bogus"]).unwrap_err().contains("--bogus"));
    }

    #[test]
    fn version_and_help() {
        for a in ["-V", "--version"] {
            assert_eq!(parse(&[a]), Ok(Command::Version));
        }
        for a in ["-h", "--help", "help"] {
            assert_eq!(parse(&[a]), Ok(Command::Help));
        }
        assert_eq!(parse(&["check", "--help"]), Ok(Command::Help));
        assert_eq!(parse(&["conformance", "--help"]), Ok(Command::Help));
        for word in ["QUIT", "RUST_LOG", "--config", "check", "info", "conformance", "--native", "--stream-path"] {
            assert!(USAGE.contains(word), "help lacks {word}");
        }
        assert!(USAGE.contains("--timeout") && USAGE.contains("RUSTWORKERS_SHIM_DIR"));
    }

    #[test]
    fn errors_are_helpful() {
        let err = parse(&["--port", "80"]).unwrap_err();
        assert!(err.contains("--port") && err.contains("--help"), "{err}");
        assert!(parse(&["-c"]).unwrap_err().contains("-c"));
        assert!(parse(&["serve"]).unwrap_err().contains("unknown command \"serve\""));
        assert!(parse(&["-c", "a", "-c", "b"]).unwrap_err().contains("more than once"));
        assert!(parse(&["--config="]).unwrap_err().contains("must not be empty"));
        assert!(parse(&["a.toml"]).unwrap_err().contains("unknown command"));
    }

    #[test]
    fn non_utf8_never_panics() {
        let bad = || OsString::from_vec(vec![b'c', 0xff, b'.', b't']);
        // A path may be any bytes.
        let got = parse_args([OsString::from("-c"), bad()]);
        assert_eq!(got, Ok(Command::Run { config: Some(PathBuf::from(bad())) }));
        let got = parse_args([OsString::from("check"), bad()]);
        assert_eq!(got, Ok(Command::Check { config: PathBuf::from(bad()) }));
        // Elsewhere: a clear error.
        let err = parse_args([OsString::from("conformance"), OsString::from("--"), bad()]).unwrap_err();
        assert!(err.contains("not valid UTF-8"), "{err}");
        let err = parse_args([OsString::from("conformance"), OsString::from("--native"), bad()]).unwrap_err();
        assert!(err.contains("not valid UTF-8"), "{err}");
        assert!(parse_args([bad()]).unwrap_err().contains("unknown command"));
        let mut opt = b"--".to_vec();
        opt.push(0xff);
        assert!(parse_args([OsString::from_vec(opt)]).is_err());
    }
}
