//! Command-line arguments: a hand-written parser for the few forms the binary accepts.
//!
//! `main.rs` calls [`parse_args`] with `std::env::args().skip(1)` and acts on the
//! [`Command`]; an `Err` is a message for stderr (exit status 2), [`USAGE`] is the help text.

use std::path::PathBuf;

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the server with this config file, or the embedded default when `None`.
    Run { config: Option<PathBuf> },
    /// Validate a config file and exit.
    Check { config: PathBuf },
    /// Run the pipe-protocol conformance suite against a worker program: `argv` is the
    /// program and its arguments, everything after `--`.
    Conformance { argv: Vec<String> },
    /// Print the version and exit.
    Version,
    /// Print [`USAGE`] and exit.
    Help,
}

/// Full help text for `-h` / `--help`.
pub const USAGE: &str = "\
rustworkers: a pre-fork worker server

USAGE:
    rustworkers [-c FILE]                    run the server (embedded default config without -c)
    rustworkers check -c FILE                validate FILE and exit (status 0 if valid, 1 if not)
    rustworkers conformance -- PROG [ARGS]   test a worker program against the pipe protocol
    rustworkers -V | --version               print the version
    rustworkers -h | --help                  print this help

OPTIONS:
    -c, --config FILE    TOML config file (see docs/config.md); relative paths in it
                         resolve against the file's directory. Also --config=FILE.

SIGNALS:
    TERM, INT    graceful stop: stop accepting, finish in-flight requests
                 (up to server.shutdown_timeout), then stop the workers
    QUIT         fast stop: close connections and kill the workers now
    HUP          reload: re-read the config file; pools whose settings changed get
                 new workers while the old ones finish their requests and exit
                 (listeners stay: a changed server.bind needs a restart)
    TTIN, TTOU   add / remove one worker in every pool (until the next reload)

ENVIRONMENT:
    RUST_LOG                  log filter for the dispatcher (env_logger syntax), e.g. info,
                              rustworkers=debug
    RUSTWORKERS_STATIC_DIR    static folder served by the embedded default config
";

/// Parse the arguments after `argv[0]`. The error is a one-line message that already
/// points at `--help`.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut config: Option<PathBuf> = None;
    let mut subcommand: Option<&'static str> = None;
    let mut positional: Vec<String> = Vec::new();

    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "help" if subcommand.is_none() && positional.is_empty() => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-c" | "--config" => {
                let value = args.next().ok_or_else(|| with_hint(format!("`{arg}` needs a FILE argument")))?;
                set_config(&mut config, value)?;
            }
            _ => {
                if let Some(value) = arg.strip_prefix("--config=") {
                    set_config(&mut config, value.to_string())?;
                } else if arg.starts_with('-') && arg != "-" {
                    return Err(with_hint(format!("unknown option `{arg}`")));
                } else if subcommand.is_none() && positional.is_empty() && arg == "conformance" {
                    subcommand = Some("conformance");
                    // Everything after the subcommand belongs to the worker program.
                    let rest: Vec<String> = args.by_ref().collect();
                    let rest = match rest.first().map(String::as_str) {
                        Some("--") => rest[1..].to_vec(),
                        _ => rest,
                    };
                    positional.extend(rest);
                } else if subcommand.is_none() && positional.is_empty() && arg == "check" {
                    subcommand = Some("check");
                } else {
                    positional.push(arg);
                }
            }
        }
    }

    match subcommand {
        Some("conformance") => {
            if config.is_some() {
                return Err(with_hint("`conformance` takes no config file".to_string()));
            }
            if positional.is_empty() {
                return Err(with_hint(
                    "`conformance` needs a worker program: rustworkers conformance -- PROG [ARGS]".to_string(),
                ));
            }
            Ok(Command::Conformance { argv: positional })
        }
        Some("check") => {
            // `check FILE` is accepted as well as `check -c FILE`.
            let config = match (config, positional.as_slice()) {
                (Some(config), []) => config,
                (None, [file]) => PathBuf::from(file),
                (None, []) => {
                    return Err(with_hint("`check` needs a config file: rustworkers check -c FILE".to_string()));
                }
                _ => return Err(with_hint(format!("unexpected argument `{}`", positional[0]))),
            };
            Ok(Command::Check { config })
        }
        _ => match positional.first() {
            Some(word) => Err(with_hint(format!("unknown command `{word}` (commands: check, conformance)"))),
            None => Ok(Command::Run { config }),
        },
    }
}

fn set_config(config: &mut Option<PathBuf>, value: String) -> Result<(), String> {
    if value.is_empty() {
        return Err(with_hint("the config FILE must not be empty".to_string()));
    }
    if config.is_some() {
        return Err(with_hint("the config file is given more than once".to_string()));
    }
    *config = Some(PathBuf::from(value));
    Ok(())
}

fn with_hint(message: String) -> String {
    format!("{message}; see `rustworkers --help`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    fn run(config: &str) -> Command {
        Command::Run { config: Some(PathBuf::from(config)) }
    }

    #[test]
    fn run_forms() {
        assert_eq!(parse(&[]), Ok(Command::Run { config: None }));
        assert_eq!(parse(&["-c", "a.toml"]), Ok(run("a.toml")));
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
        assert!(parse(&["check", "-c", "a", "b"]).unwrap_err().contains("unexpected argument `b`"));
    }

    #[test]
    fn conformance_takes_everything_after_dashdash() {
        let argv = |v: &[&str]| Ok(Command::Conformance { argv: v.iter().map(|s| s.to_string()).collect() });
        assert_eq!(
            parse(&["conformance", "--", "python3", "-m", "w", "-c", "x"]),
            argv(&["python3", "-m", "w", "-c", "x"])
        );
        assert_eq!(parse(&["conformance", "./worker"]), argv(&["./worker"]));
        assert!(parse(&["conformance", "--"]).unwrap_err().contains("needs a worker program"));
        assert!(parse(&["-c", "a", "conformance", "--", "x"]).unwrap_err().contains("takes no config"));
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
        assert!(USAGE.contains("QUIT") && USAGE.contains("RUST_LOG") && USAGE.contains("--config"));
    }

    #[test]
    fn errors_are_helpful() {
        let err = parse(&["--port", "80"]).unwrap_err();
        assert!(err.contains("unknown option `--port`") && err.contains("--help"), "{err}");
        assert!(parse(&["-c"]).unwrap_err().contains("needs a FILE"));
        assert!(parse(&["serve"]).unwrap_err().contains("unknown command `serve`"));
        assert!(parse(&["-c", "a", "-c", "b"]).unwrap_err().contains("more than once"));
        assert!(parse(&["--config="]).unwrap_err().contains("must not be empty"));
        assert!(parse(&["a.toml"]).unwrap_err().contains("unknown command"));
    }
}
