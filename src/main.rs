//! The `rustworkers` binary: parse arguments, load the config, run the dispatcher.

use std::path::Path;
use std::process::ExitCode;

use rustworkers::cli::{self, Command};
use rustworkers::preflight::{self, Severity};
use rustworkers::{Config, Extensions};

fn main() -> ExitCode {
    let command = match cli::parse_args(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("rustworkers: {msg}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("rustworkers {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { config } => check(&config),
        Command::Info { config } => match load(config.as_deref()) {
            Ok(c) => {
                print!("{}", preflight::describe(&c));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Conformance(args) => {
            rustworkers::logging::init();
            exit_code(rustworkers::conformance::run(&args.options()))
        }
        Command::Run { config } => {
            rustworkers::logging::init();
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match rustworkers::run(config, Extensions::new()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rustworkers: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The file at `path`, or the embedded default; errors are printed, every one on a line.
fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    match path {
        None => Ok(Config::embedded_default()),
        Some(path) => Config::load(path).map_err(|errors| {
            for e in &errors {
                eprintln!("rustworkers: {e}");
            }
            ExitCode::FAILURE
        }),
    }
}

/// `check`: the config, then what it needs from this machine. Warnings keep exit 0.
fn check(path: &Path) -> ExitCode {
    let config = match load(Some(path)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let findings = preflight::check(&config);
    for f in &findings {
        let located = rustworkers::config::locate(&config.source, &text, &f.key, &f.message);
        match f.severity {
            Severity::Warning => eprintln!("rustworkers: warning: {located}"),
            Severity::Error => eprintln!("rustworkers: {located}"),
        }
    }
    if findings.iter().any(|f| f.severity == Severity::Error) {
        return ExitCode::FAILURE;
    }
    let warnings = findings.len();
    let note = if warnings > 0 { format!(", {warnings} warning(s)") } else { String::new() };
    println!("{}: ok ({} listener(s), {} pool(s){note})", path.display(), config.server.bind.len(), config.pools.len());
    ExitCode::SUCCESS
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}
