//! The dispatcher's knobs that come from config, read in one place.

use std::time::Duration;

use crate::config::{PoolConfig, ServerConfig};

pub fn body_min_rate(_s: &ServerConfig) -> u64 {
    1024
}

pub fn max_buffered_bytes(_s: &ServerConfig) -> u64 {
    256 << 20
}

pub fn max_connection_buffer(_s: &ServerConfig) -> usize {
    4 << 20
}

pub fn fast_stop_timeout(_s: &ServerConfig) -> Duration {
    Duration::from_secs(2)
}

pub fn stuck_grace(_p: &PoolConfig) -> Duration {
    Duration::from_secs(2)
}

pub fn exit_grace(_p: &PoolConfig) -> Duration {
    Duration::from_secs(2)
}

pub fn max_output_rate(_p: &PoolConfig) -> u64 {
    1 << 20
}

pub fn readiness(_p: &PoolConfig) -> bool {
    true
}
