//! The dispatcher's knobs that come from config, read in one place.

use std::time::Duration;

use crate::config::{Config, PoolConfig, ServerConfig, Threads};

/// Event loops `[server] threads` gives. `auto` is one per core (nginx's
/// `worker_processes auto`) for a server without pools, and one with pools: front loops
/// hand each pool connection to the main loop, which costs a connection-per-request
/// client (HTTP/1.0 from a proxy) 8-18 % of its throughput on 2 cores (docs/benchmarks.md,
/// run 9), while pool traffic itself gains nothing from them. Native pools fork the
/// dispatcher without exec and so need it single-threaded: config validation refuses a
/// fixed count > 1 with them.
pub fn loops(c: &Config) -> usize {
    match c.server.threads {
        Threads::Fixed(n) => n,
        Threads::Auto if !c.pools.is_empty() => 1,
        Threads::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()).min(crate::config::MAX_THREADS),
    }
}

pub fn body_min_rate(s: &ServerConfig) -> u64 {
    s.body_min_rate
}

pub fn max_buffered_bytes(s: &ServerConfig) -> u64 {
    s.max_buffered_bytes
}

pub fn max_connection_buffer(s: &ServerConfig) -> usize {
    s.max_connection_buffer
}

pub fn fast_stop_timeout(s: &ServerConfig) -> Duration {
    s.fast_stop_timeout
}

pub fn stuck_grace(p: &PoolConfig) -> Duration {
    p.stuck_grace
}

pub fn exit_grace(p: &PoolConfig) -> Duration {
    p.exit_grace
}

pub fn max_output_rate(p: &PoolConfig) -> u64 {
    p.max_output_rate
}

pub fn readiness(p: &PoolConfig) -> bool {
    p.readiness
}

pub fn websocket_idle_timeout(p: &PoolConfig) -> Duration {
    p.websocket_idle_timeout
}

pub fn max_message_bytes(p: &PoolConfig) -> usize {
    usize::try_from(p.max_message_bytes).unwrap_or(usize::MAX)
}
