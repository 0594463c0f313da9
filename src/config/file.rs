//! The file as written: serde structs mirroring the TOML, unknown keys rejected. Values
//! are range-checked later, in validation. Required keys are `Option` here too, so serde
//! fails only on unknown keys and wrong types (see `recover`); validation reports a
//! missing one along with everything else.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) server: FileServer,
    #[serde(default, rename = "static")]
    pub(super) statics: Vec<FileStatic>,
    #[serde(default)]
    pub(super) sync: Vec<FileSync>,
    pub(super) auth: Option<FileAuth>,
    #[serde(default)]
    pub(super) pool: Vec<FilePool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileServer {
    pub(super) bind: Option<OneOrMany>,
    pub(super) backlog: Option<u32>,
    pub(super) max_pending: Option<usize>,
    pub(super) max_connections: Option<usize>,
    pub(super) shutdown_timeout: Option<Seconds>,
    pub(super) keepalive_timeout: Option<Seconds>,
    pub(super) header_timeout: Option<Seconds>,
    pub(super) body_timeout: Option<Seconds>,
    pub(super) write_timeout: Option<Seconds>,
    pub(super) access_log: Option<FileAccessLog>,
    pub(super) max_buffered_bytes: Option<Bytes>,
    pub(super) max_connection_buffer: Option<Bytes>,
    pub(super) body_min_rate: Option<Bytes>,
    pub(super) fast_stop_timeout: Option<Seconds>,
    pub(super) threads: Option<FileThreads>,
    #[serde(default)]
    pub(super) limits: FileLimits,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FileAccessLog {
    Off,
    Combined,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    pub(super) max_request_line: Option<usize>,
    pub(super) max_headers: Option<usize>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) max_body_bytes: Option<Bytes>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileStatic {
    pub(super) prefix: Option<String>,
    pub(super) path: Option<String>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) authoritative: bool,
    pub(super) index: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FileSyncKind {
    Health,
    Status,
    Metrics,
    Ready,
    Live,
    StaticResponse,
    Redirect,
    Custom,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSync {
    pub(super) path: Option<String>,
    pub(super) kind: Option<FileSyncKind>,
    pub(super) auth: Option<bool>,
    pub(super) status: Option<u16>,
    pub(super) body: Option<String>,
    pub(super) headers: Option<BTreeMap<String, String>>,
    pub(super) content_type: Option<String>,
    pub(super) location: Option<String>,
    pub(super) name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuth {
    pub(super) header: Option<String>,
    #[serde(default)]
    pub(super) keys: Vec<String>,
    pub(super) keys_file: Option<String>,
    #[serde(default)]
    pub(super) sync_routes: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePool {
    pub(super) name: Option<String>,
    pub(super) routes: Option<Vec<String>>,
    pub(super) num_workers: Option<i64>,
    pub(super) native: Option<String>,
    pub(super) command: Option<Vec<String>>,
    pub(super) python: Option<String>,
    pub(super) wsgi: Option<String>,
    pub(super) asgi: Option<String>,
    pub(super) factory: Option<bool>,
    pub(super) concurrency: Option<i64>,
    pub(super) prefetch: Option<i64>,
    pub(super) preload: Option<bool>,
    #[serde(rename = "loop")]
    pub(super) event_loop: Option<String>,
    pub(super) lifespan: Option<String>,
    pub(super) websocket: Option<bool>,
    pub(super) max_message_bytes: Option<Bytes>,
    pub(super) websocket_idle_timeout: Option<Seconds>,
    pub(super) interpreter: Option<String>,
    pub(super) module_path: Option<OneOrMany>,
    pub(super) timeout: Option<Seconds>,
    pub(super) stuck_timeout: Option<Seconds>,
    pub(super) heartbeat_interval: Option<Seconds>,
    pub(super) max_restarts: Option<u32>,
    pub(super) restart_window: Option<Seconds>,
    pub(super) recovery_interval: Option<Seconds>,
    pub(super) permanent_failure_exitcode: Option<i32>,
    pub(super) log_level: Option<String>,
    pub(super) memory_limit_mb: Option<u64>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    pub(super) cwd: Option<String>,
    pub(super) user: Option<String>,
    pub(super) group: Option<String>,
    pub(super) max_frame_bytes: Option<Bytes>,
    pub(super) stuck_grace: Option<Seconds>,
    pub(super) exit_grace: Option<Seconds>,
    pub(super) max_output_rate: Option<Bytes>,
    pub(super) readiness: Option<bool>,
    pub(super) kwargs: Option<toml::Table>,
}

/// A duration written as integer or float seconds; range-checked in validation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seconds(pub(super) f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds (integer or float)")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Seconds, E> {
                Ok(Seconds(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A size in bytes (or bytes per second): a non-negative integer. Its own type so a
/// wrong value reads "expected a size in bytes", not "expected u64".
#[derive(Debug, Clone, Copy)]
pub(super) struct Bytes(pub(super) u64);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes (an integer >= 0)")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Bytes, E> {
                u64::try_from(v).map(Bytes).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `server.threads`: an integer, or a word (only `"auto"` is valid; checked later so the
/// error names the key).
#[derive(Debug, Clone)]
pub(super) enum FileThreads {
    Count(i64),
    Word(String),
}

impl<'de> Deserialize<'de> for FileThreads {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FileThreads;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or \"auto\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FileThreads, E> {
                Ok(FileThreads::Count(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FileThreads, E> {
                Ok(FileThreads::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileThreads, E> {
                Ok(FileThreads::Word(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A string or an array of strings.
#[derive(Debug, Clone)]
pub(super) struct OneOrMany(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
