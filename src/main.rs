//! The `rustworkers` binary: parse arguments, load the config, run the dispatcher.

use std::process::ExitCode;

use rustworkers::cli::{self, Command};
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
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!("{}: ok ({} listener(s), {} pool(s))", config.display(), c.server.bind.len(), c.pools.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rustworkers: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Conformance(args) => {
            rustworkers::logging::init();
            exit_code(rustworkers::conformance::run(&args.options()))
        }
        Command::Run { config } => {
            rustworkers::logging::init();
            let config = match config {
                Some(path) => match Config::load(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("rustworkers: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                None => Config::embedded_default(),
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

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}
