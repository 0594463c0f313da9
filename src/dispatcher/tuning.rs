//! The dispatcher's knobs that come from config, read in one place.

use std::time::Duration;

use crate::config::{PoolConfig, ServerConfig};

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
