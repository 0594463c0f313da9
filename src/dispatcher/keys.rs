//! Typed keys: a connection, a worker process, a pool and a request are each found by
//! their own key type, so one can never be looked up in another's table.

use std::fmt;

/// A client connection: index into the dispatcher's connection slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey(pub usize);

/// A worker process: index into the dispatcher's worker slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerKey(pub usize);

/// A pool: index into the dispatcher's pool table (never reused: a pool a reload removed
/// stays in the table, retired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub usize);

/// A pool request: unique for the life of the process; also the request id on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReqId(pub u64);

impl fmt::Display for ReqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
