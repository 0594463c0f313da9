//! Native Rust workers: the [`NativeWorker`] trait and its [`WorkerContext`], the global
//! registry of named workers, the worker process's main loop ([`native_main`]) and the
//! built-in `echo` and `chaos` workers.
//!
//! A native worker is forked without exec: the spawner dup2s the request pipe to fd 3 and
//! the reply pipe to fd 4, then calls [`native_main`] with the pool's worker name and
//! `_exit`s with its return value. See `docs/native-workers.md`.

mod api;
pub mod chaos;
pub mod echo;
mod runtime;

pub use api::{
    is_registered, level, register_native, NativeWorker, Reply, WorkerContext, WorkerError,
    WorkerRequest,
};
pub use runtime::{
    native_main, run_worker, EXIT_PROTOCOL, EXIT_SETUP_FAILED, EXIT_UNKNOWN_WORKER, REPLY_FD,
    REQUEST_FD,
};
