//! What Rust code can plug into the dispatcher: custom sync handlers (referenced from the
//! config as `kind = "custom"`, `name = "..."`) and an auth check. Native workers are
//! registered separately with `worker::register_native`.

use std::collections::HashMap;

use crate::auth::{AuthCheck, AuthDecision};
use crate::http::Request;
use crate::sync_handlers::{ServerStatus, SyncResponse};

/// A sync handler: runs in the dispatcher loop, so it must be quick and never block.
pub type SyncHandler = Box<dyn Fn(&Request, &ServerStatus) -> SyncResponse>;

/// Handlers and checks registered by a program embedding rustworkers.
#[derive(Default)]
pub struct Extensions {
    pub(crate) sync: HashMap<String, SyncHandler>,
    pub(crate) auth: Option<AuthCheck>,
}

impl Extensions {
    pub fn new() -> Extensions {
        Extensions::default()
    }

    /// Register a sync handler under `name`, used by `[[sync]] kind = "custom", name = ...`.
    pub fn sync_handler(
        mut self,
        name: &str,
        handler: impl Fn(&Request, &ServerStatus) -> SyncResponse + 'static,
    ) -> Self {
        self.sync.insert(name.to_string(), Box::new(handler));
        self
    }

    /// Register an auth check, run for every request that `[auth]` covers (after the
    /// API-key check when keys are configured).
    pub fn auth_check(mut self, check: impl Fn(&Request) -> AuthDecision + 'static) -> Self {
        self.auth = Some(Box::new(check));
        self
    }

    /// Names of the registered sync handlers (for config validation).
    pub fn sync_names(&self) -> impl Iterator<Item = &str> {
        self.sync.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("sync", &self.sync.keys().collect::<Vec<_>>())
            .field("auth", &self.auth.is_some())
            .finish()
    }
}
