//! Changing a running server: SIGHUP re-reads the config file, SIGTTIN/SIGTTOU add or
//! remove one worker in every pool. Neither drops a request: workers that go are retired
//! (STOP: they answer what they hold, then exit) while their successors start at once.

use std::path::PathBuf;
use std::time::Instant;

use log::{error, info, warn};

use super::{Dispatcher, WorkerKey};
use crate::config::{Config, MAX_NUM_WORKERS, WorkerKind};
use crate::pool::Pool;

impl Dispatcher {
    /// SIGHUP: load the config file again and apply it. A config that does not load keeps
    /// the running one. Listeners stay as they are (`server.bind` changes need a restart);
    /// everything else takes effect for new requests. Pools are matched by name: a pool
    /// whose settings changed gets new workers (old ones retire), a new pool starts, a
    /// removed pool's workers retire and its queued requests get 503.
    pub(super) fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            warn!("SIGHUP: running the embedded default config; there is no file to reload");
            return;
        };
        let mut new = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                error!("SIGHUP: config not reloaded, the running one stays: {e}");
                return;
            }
        };
        for pool in &new.pools {
            if let WorkerKind::Native(name) = &pool.worker
                && !crate::worker::is_registered(name)
            {
                error!("SIGHUP: config not reloaded: pool `{}`: no native worker named `{name}`", pool.name);
                return;
            }
        }
        if self.shared.loops() > 1
            && let Some(pool) = new.pools.iter().find(|p| matches!(p.worker, WorkerKind::Native(_)))
        {
            error!(
                "SIGHUP: config not reloaded: pool `{}` is native, which needs one event loop; this server runs {} \
                 (server.threads): restart it to change that",
                pool.name,
                self.shared.loops()
            );
            return;
        }
        if new.server.threads != self.config.server.threads {
            warn!("SIGHUP: `server.threads` changed; the event loops change only on restart");
            new.server.threads = self.config.server.threads;
        }
        if new.server.bind != self.config.server.bind {
            warn!("SIGHUP: `server.bind` changed; listeners change only on restart, keeping the current ones");
            new.server.bind = self.config.server.bind.clone();
        }
        let now = Instant::now();
        let mut seen = vec![false; self.pools.len()];
        for cfg in &new.pools {
            match self.pools.iter().position(|p| !p.retired && p.name() == cfg.name) {
                Some(i) => {
                    seen[i] = true;
                    if self.pools[i].config != *cfg {
                        info!("SIGHUP: pool {} changed: starting new workers, retiring the old ones", cfg.name);
                        let old: Vec<WorkerKey> = self.pools[i].workers().collect();
                        let removed = self.pools[i].reconfigure(cfg.clone());
                        // A new fork-server imports the (possibly new) app, at once: the
                        // pool's new workers wait for it.
                        self.replace_forkserver(super::PoolId(i), now);
                        for key in old.into_iter().chain(removed) {
                            self.retire_worker(key);
                        }
                    } else if self.pools[i].is_degraded() || self.pools[i].parked_count() > 0 {
                        // Unchanged, but the operator may have fixed what made it fail (a
                        // missing package installed): a reload is the signal to try again.
                        info!("SIGHUP: pool {} unchanged but degraded or parked: trying again", cfg.name);
                        self.pools[i].revive();
                        self.pools[i].last_failure = None;
                    }
                }
                None => {
                    info!("SIGHUP: new pool {}", cfg.name);
                    self.pools.push(Pool::new(cfg.clone()));
                }
            }
        }
        for (i, seen) in seen.into_iter().enumerate() {
            if !seen && !self.pools[i].retired {
                info!("SIGHUP: pool {} removed: retiring its workers", self.pools[i].name());
                self.pools[i].retired = true;
                self.stop_forkserver(super::PoolId(i), now);
                let keys: Vec<WorkerKey> = self.pools[i].workers().collect();
                for key in keys {
                    self.retire_worker(key);
                }
                for id in self.pools[i].drain_queue() {
                    self.fail_request(id, 503, "pool removed by reload");
                }
            }
        }
        self.budget.set_limit(super::tuning::max_buffered_bytes(&new.server));
        self.config = new;
        self.fronts_reload();
        info!("SIGHUP: configuration reloaded from {}", path.display());
        self.dirty.manage = true;
    }

    /// SIGTTIN (+1) / SIGTTOU (-1): one worker more or less in every pool, within
    /// 1..=MAX_NUM_WORKERS. Lasts until the next reload, which restores `num_workers`.
    pub(super) fn resize_pools(&mut self, delta: isize) {
        for p in 0..self.pools.len() {
            if self.pools[p].retired {
                continue;
            }
            let n = self.pools[p].slots.len().saturating_add_signed(delta).clamp(1, MAX_NUM_WORKERS);
            if n == self.pools[p].slots.len() {
                continue;
            }
            info!("pool {}: {} → {} worker(s)", self.pools[p].name(), self.pools[p].slots.len(), n);
            for key in self.pools[p].resize(n) {
                self.retire_worker(key);
            }
        }
        self.dirty.manage = true;
    }
}

/// The file a config was loaded from, if it was (the embedded default has none).
pub(super) fn config_file(config: &Config) -> Option<PathBuf> {
    let path = PathBuf::from(&config.source);
    path.is_file().then_some(path)
}
