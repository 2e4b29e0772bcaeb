//! Reloading the configuration without a restart: certificate rotation,
//! callers added or revoked, apps added.
//!
//! A reload runs [`Config::load`] again with the start-up flags and a fresh
//! environment (the process environment cannot change, but `.env` and the
//! `*_FILE` files can), builds a new [`Snapshot`] and swaps it in with
//! [`Shared::replace`]: one atomic pointer store, so a request uses the old
//! credentials or the new ones, never a mix. A reload that fails keeps the
//! running snapshot, logs why (configuration errors never contain a
//! certificate) and counts the failure in the metrics. A reload is held to
//! every start-up rule, the fail-closed ones included: a config file
//! without `[[callers]]` and without `mode = "open"` is refused, and the
//! running callers stay in force.
//!
//! What is reloaded: `[[apps]]` (or the environment's app) with their
//! primary and secondary certificates, `[[callers]]`, `[anonymous]` and
//! `[[jwt_issuers]]` (a `jwks_file` is watched; a `jwks_url` source whose
//! settings did not change keeps its fetched keys, see
//! [`crate::policy::Authenticator::adopt_keys`]).
//! Everything else (listen addresses, TLS, limits, CORS, logging, shutdown
//! timing) is fixed at start-up: a change is logged as ignored until a
//! restart. Rate-limit buckets start full after a reload.
//!
//! A reload that changes access (callers added, removed or changed, open
//! mode turned on or off, `[anonymous]` added, removed or changed; see
//! [`AccessChange`]) is logged at WARN with a summary of the change; other
//! reloads at INFO.
//!
//! Triggers (wired in `token-authority serve`): SIGHUP, and a change of the
//! CONTENT of a watched file, checked every [`POLL_INTERVAL`]. Watched are
//! the config file, every app's certificate files, the JWT issuers'
//! `jwks_file`s and the environment's `*_FILE` credential files, whether
//! they exist or not (a secondary certificate appears and disappears during
//! a rotation). Polling contents
//! by path follows symlinks on every read, so it sees the kubelet's atomic
//! `..data` symlink swap of a mounted Secret or ConfigMap, which inotify
//! watches on the old target would miss. Only SHA-256 digests of the files
//! are kept, never their contents.
//!
//! Only complete files reload. A change seen by a poll is not applied at
//! once: the poller remembers the digests it read and when, and applies
//! them only when a later read, at least [`STABLE_WINDOW`] later, gives the
//! same digests (the service polls again [`STABLE_WINDOW`] after seeing a
//! change). The digests are read a third time after loading, and a load
//! during which they changed is discarded (not applied, not reported) and
//! waits for stability again. So a file being written in place is applied
//! only once its content stayed the same across two reads at least
//! [`STABLE_WINDOW`] apart and while it was loaded: a writer that pauses
//! less than [`STABLE_WINDOW`] between writes never gets a prefix applied.
//! This is a heuristic about writers, not a lock: a writer that stalls
//! longer than the window mid-file can still have its prefix loaded (and
//! refused if it is invalid). Write atomically (a temporary file renamed
//! over the old one, as `mv`, Kubernetes ConfigMap / Secret volumes and
//! most deployment tools do) and this never matters. SIGHUP reloads at
//! once: the operator asked.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::access::{Access, AccessChange};
use crate::config::env::Env;
use crate::config::{Config, ConfigError};
use crate::state::{Shared, Snapshot};

/// How often watched files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// How long a changed file must read the same before a poll applies it.
pub const STABLE_WINDOW: Duration = Duration::from_millis(500);

/// The dotenv file [`crate::config::env::ProcessEnv::load`] reads.
const DOTENV: &str = ".env";

/// What asked for a reload (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// A watched file changed.
    FileChange,
}

impl Trigger {
    /// The log value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "SIGHUP",
            Self::FileChange => "file change",
        }
    }
}

/// A successful reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// App ids (default first) and their number of certificates.
    pub apps: Vec<(String, u8)>,
    /// Number of configured callers.
    pub callers: usize,
    /// Settings that changed but need a restart (they were ignored).
    pub ignored: Vec<&'static str>,
    /// What changed about who may get tokens (empty: nothing).
    pub access: AccessChange,
}

/// A content digest of a file; `None` when it cannot be read (missing).
type Digest32 = Option<[u8; 32]>;

fn digest(path: &Path) -> Digest32 {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(&bytes).into())
}

/// A change seen by a poll, not yet applied.
#[derive(Debug)]
struct Pending {
    /// The watched files' digests when it was seen.
    digests: Vec<Digest32>,
    /// When they were read.
    since: Instant,
}

/// Reloads the configuration into [`Shared`] on demand ([`Reloader::reload`])
/// or when a watched file changed and then stayed the same for
/// [`STABLE_WINDOW`] ([`Reloader::poll`]).
#[derive(Debug)]
pub struct Reloader<F> {
    /// The configuration the server was started with: the flags to load
    /// again, and the settings that only a restart changes.
    running: Config,
    shared: Arc<Shared>,
    load_env: F,
    /// Watched files with the digest seen at the last reload attempt.
    watched: Vec<(PathBuf, Digest32)>,
    /// A change seen by a poll that has not been stable long enough yet.
    pending: Option<Pending>,
    /// The callers and anonymous policy in use (for the change summary).
    applied: Access,
}

impl<F, E> Reloader<F>
where
    F: Fn() -> E,
    E: Env,
{
    /// A reloader for a server started with `running`, whose state is
    /// `shared`. `load_env` gives the environment for each reload
    /// (`ProcessEnv::load` in the service).
    pub fn new(running: Config, shared: Arc<Shared>, load_env: F) -> Self {
        let watched = watch_list(&running)
            .into_iter()
            .map(|p| {
                let d = digest(&p);
                (p, d)
            })
            .collect();
        let applied = running.access();
        Self {
            running,
            shared,
            load_env,
            watched,
            pending: None,
            applied,
        }
    }

    /// The files whose change triggers a reload.
    pub fn watched_files(&self) -> impl Iterator<Item = &Path> {
        self.watched.iter().map(|(p, _)| p.as_path())
    }

    /// Whether a poll saw a change that is not applied yet: poll again
    /// [`STABLE_WINDOW`] later rather than after [`POLL_INTERVAL`].
    pub fn settling(&self) -> bool {
        self.pending.is_some()
    }

    /// [`Reloader::poll_at`] now.
    pub fn poll(&mut self) -> Option<Result<Reloaded, ConfigError>> {
        self.poll_at(Instant::now())
    }

    /// Checks the watched files at `now` (the caller's clock, so tests can
    /// step it). A change since the last reload attempt is remembered with
    /// `now`; it is reloaded only when a poll at least [`STABLE_WINDOW`]
    /// later reads the same contents, and only if they did not change
    /// while loading. `None`: nothing was applied or reported.
    pub fn poll_at(&mut self, now: Instant) -> Option<Result<Reloaded, ConfigError>> {
        let current = self.digests();
        let changed: Vec<&Path> = self
            .watched
            .iter()
            .zip(&current)
            .filter(|((_, before), after)| before != *after)
            .map(|((p, _), _)| p.as_path())
            .collect();
        if changed.is_empty() {
            // Back to the state last tried (a change undone): nothing to do.
            self.pending = None;
            return None;
        }
        match &self.pending {
            Some(p) if p.digests == current => {
                if now.saturating_duration_since(p.since) < STABLE_WINDOW {
                    return None;
                }
            }
            other => {
                if other.is_none() {
                    tracing::info!(
                        files = %join_paths(&changed),
                        "watched file changed; applying it once it stays unchanged for {} ms",
                        STABLE_WINDOW.as_millis()
                    );
                } else {
                    tracing::debug!(files = %join_paths(&changed), "watched file still changing");
                }
                self.pending = Some(Pending {
                    digests: current,
                    since: now,
                });
                return None;
            }
        }
        self.pending = None;
        let loaded = self.load();
        if self.digests() != current {
            // Whatever was loaded may be a mix of states: not applied, not
            // reported; the next poll sees the change and waits again.
            tracing::debug!("watched file changed while loading; waiting for it to settle");
            return None;
        }
        Some(self.finish(Trigger::FileChange, current, loaded))
    }

    /// Reloads now (SIGHUP: no stability wait).
    pub fn reload(&mut self, trigger: Trigger) -> Result<Reloaded, ConfigError> {
        self.pending = None;
        let now = self.digests();
        let loaded = self.load();
        self.finish(trigger, now, loaded)
    }

    /// The watched files' digests, in `watched` order.
    fn digests(&self) -> Vec<Digest32> {
        self.watched.iter().map(|(p, _)| digest(p)).collect()
    }

    fn load(&self) -> Result<(Config, Snapshot), ConfigError> {
        Config::load(&self.running.args, &(self.load_env)())
            .and_then(|c| c.snapshot().map(|s| (c, s)))
    }

    /// Applies (or reports) `loaded`; `digests` are the watched files'
    /// digests taken before loading (so a change while loading triggers
    /// another reload).
    fn finish(
        &mut self,
        trigger: Trigger,
        digests: Vec<Digest32>,
        loaded: Result<(Config, Snapshot), ConfigError>,
    ) -> Result<Reloaded, ConfigError> {
        // Whatever the outcome, this state of the files has been tried: a
        // broken file is reported once, not every poll, and the next change
        // (or SIGHUP) tries again.
        for ((_, d), new) in self.watched.iter_mut().zip(digests) {
            *d = new;
        }
        let (config, snapshot) = match loaded {
            Ok(x) => x,
            Err(e) => {
                self.shared.metrics.reload(false);
                tracing::error!(
                    trigger = trigger.as_str(),
                    error = %e,
                    "reload failed; still using the previous configuration and credentials"
                );
                return Err(e);
            }
        };
        let ignored = restart_only_changes(&self.running, &config);
        for setting in &ignored {
            tracing::warn!(
                setting,
                "changed in the configuration, but takes effect only after a restart; ignored"
            );
        }
        let access = config.access();
        let result = Reloaded {
            apps: snapshot.app_certificates(),
            callers: config.callers.len(),
            ignored,
            access: AccessChange::between(&self.applied, &access),
        };
        self.shared.replace(snapshot);
        self.shared.metrics.reload(true);
        self.applied = access;
        // The new configuration may name other files (an app added).
        let mut watched = Vec::new();
        for path in watch_list(&config) {
            let d = match self.watched.iter().find(|(p, _)| *p == path) {
                Some((_, d)) => *d,
                None => digest(&path),
            };
            watched.push((path, d));
        }
        self.watched = watched;
        let apps: Vec<String> = result
            .apps
            .iter()
            .map(|(id, n)| format!("{id} ({n} certificate{})", if *n == 1 { "" } else { "s" }))
            .collect();
        // Lists as one plain text value, not a JSON array in a string.
        let apps = apps.join(", ");
        if result.access.is_empty() {
            tracing::info!(
                trigger = trigger.as_str(),
                apps = %apps,
                callers = result.callers,
                source = %config.apps_source,
                "configuration reloaded (certificates not shown)"
            );
        } else {
            tracing::warn!(
                trigger = trigger.as_str(),
                apps = %apps,
                callers = result.callers,
                source = %config.apps_source,
                changes = %result.access,
                "configuration reloaded; ACCESS CHANGED (certificates not shown)"
            );
        }
        Ok(result)
    }
}

/// The files a configuration depends on, plus `.env` (a reload reads it).
fn watch_list(config: &Config) -> Vec<PathBuf> {
    let mut files = config.watch_files.clone();
    files.push(PathBuf::from(DOTENV));
    let mut seen = std::collections::HashSet::new();
    files.retain(|p| seen.insert(p.clone()));
    files
}

/// The settings fixed at start-up that differ between `running` and `new`.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("listen", running.listen != new.listen);
    check("admin_listen", running.admin_listen != new.admin_listen);
    check("tls", running.tls != new.tls);
    check("log_format", running.log_format != new.log_format);
    check(
        "shutdown_delay_seconds",
        running.shutdown_delay != new.shutdown_delay,
    );
    check(
        "shutdown_grace_seconds",
        running.shutdown_grace != new.shutdown_grace,
    );
    check(
        "max_request_bytes",
        running.max_request_bytes != new.max_request_bytes,
    );
    check(
        "limits",
        running.connection != new.connection
            || running.max_concurrent_requests != new.max_concurrent_requests
            || running.request_timeout != new.request_timeout,
    );
    check("cors", running.cors_origins != new.cors_origins);
    check(
        "rate_limit_store",
        running.rate_limit_store != new.rate_limit_store,
    );
    changed
}

/// Paths as one plain log value (`a, b`), not a Debug list.
fn join_paths(paths: &[&Path]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests;
