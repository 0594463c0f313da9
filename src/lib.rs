//! rustworkers: a pre-fork worker server.
//!
//! One dispatcher process runs a single-threaded mio event loop that owns every socket,
//! parses HTTP/1.1, answers static files and built-in sync handlers itself, and forwards
//! every other request over pipes to forked worker processes grouped in pools.
//! See `docs/` for the pipe protocol and the config reference.

pub mod cli;
pub mod config;
pub mod http;
pub mod static_files;
pub mod ipc;
pub mod spawn;
pub mod worker;
