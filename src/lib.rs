//! rustworkers: a pre-fork worker server.
//!
//! One dispatcher process runs mio event loops (one by default with pools, see
//! `[server] threads`) that own every socket, parse HTTP/1.1, answer static files and
//! built-in sync handlers themselves, and forward every other request over pipes to forked
//! worker processes grouped in pools.
//! See `docs/` for the pipe protocol and the config reference.

pub mod auth;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod dispatcher;
pub mod extensions;
pub mod http;
pub(crate) mod idmap;
pub mod ipc;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod preflight;
pub mod python;
pub mod spawn;
pub mod static_files;
pub mod sync_handlers;
pub mod websocket;
pub mod worker;

pub use config::Config;
pub use dispatcher::RunError;
pub use extensions::Extensions;

/// Run the server on `config` until it is stopped by a signal: what the binary does.
/// Embedders register native workers (`worker::register_native`) before calling this,
/// and pass their sync handlers and auth check in `ext`.
pub fn run(config: Config, ext: Extensions) -> Result<(), RunError> {
    let mut dispatcher = dispatcher::Dispatcher::new(config, ext)?;
    dispatcher.run()
}
