//! State shared by every transport: the current [`Snapshot`] of issuer and
//! caller policy (behind an atomic pointer, so a reload swaps both at once:
//! a request sees the old or the new configuration, never a mix), the
//! metrics and readiness.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::domain::Issuer;
use crate::policy::Authenticator;
use crate::policy::store::RateStore;
use crate::policy::throttle::AuthThrottle;
use crate::telemetry::metrics::Metrics;

/// What a reload replaces as one unit.
#[derive(Debug)]
pub struct Snapshot {
    /// Apps and their credentials.
    pub issuer: Issuer,
    /// Callers, their policies and the anonymous policy.
    pub auth: Authenticator,
}

impl Snapshot {
    /// A snapshot with no callers configured (open mode).
    pub fn open(issuer: Issuer) -> Self {
        Self {
            issuer,
            // No callers, no anonymous policy: always compiles.
            auth: Authenticator::open(),
        }
    }

    /// The configured app ids (default first) with their number of
    /// certificates (1, or 2 with a secondary).
    pub fn app_certificates(&self) -> Vec<(String, u8)> {
        self.issuer
            .app_ids()
            .map(|id| {
                let n = self
                    .issuer
                    .app(Some(id))
                    .map_or(1, |a| 1 + u8::from(a.secondary.is_some()));
                (id.to_owned(), n)
            })
            .collect()
    }
}

/// State shared by the gRPC service, the HTTP routes and the server.
#[derive(Debug)]
pub struct Shared {
    current: ArcSwap<Snapshot>,
    /// The service's metrics.
    pub metrics: Metrics,
    /// Failed authentications per client (kept across reloads).
    pub auth_throttle: AuthThrottle,
    /// The shared rate-limit store (`[limits] rate_limit_store`), if any;
    /// without it every limit is this process's own.
    pub rate_store: Option<Arc<RateStore>>,
    ready: AtomicBool,
    /// The open `WatchToken` streams.
    pub watches: Watches,
    /// The clock of the issuer and of watch schedules.
    pub clock: Arc<dyn crate::domain::Timer>,
}

/// Who a watch counts against: a caller (by name, so across reloads), or a
/// client address in open mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WatchKey {
    /// A configured caller.
    Caller(Arc<str>),
    /// A client address (open mode).
    Client(u128),
}

/// The open `WatchToken` streams: counted per caller against a cap, and
/// told to end when the server shuts down.
#[derive(Debug)]
pub struct Watches {
    /// Most open at once per [`WatchKey`].
    pub max_per_caller: usize,
    /// Longest life of one stream.
    pub max_life: Duration,
    per_key: Mutex<HashMap<WatchKey, u32>>,
    open: AtomicUsize,
    stopping: tokio::sync::watch::Sender<bool>,
}

/// An open watch's place under the cap; dropping it gives the place back.
#[derive(Debug)]
pub struct WatchPermit {
    watches: Arc<Shared>,
    key: WatchKey,
}

impl Watches {
    fn new() -> Self {
        Self {
            max_per_caller: crate::config::DEFAULT_MAX_WATCHES_PER_CALLER,
            max_life: Duration::from_secs(crate::config::DEFAULT_MAX_WATCH_SECONDS),
            per_key: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Tells every watch to end (shutdown); new ones are refused.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Completes when [`Watches::stop`] was called.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Whether [`Watches::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

impl Shared {
    /// A place for one more watch of `key`, or `None` at the cap.
    pub fn admit_watch(self: &Arc<Self>, key: WatchKey) -> Option<WatchPermit> {
        // A poisoned lock only means a panic mid-update of counters.
        let mut map = self
            .watches
            .per_key
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key.clone()).or_insert(0);
        if *n as usize >= self.watches.max_per_caller {
            return None;
        }
        *n += 1;
        self.watches.open.fetch_add(1, Ordering::Relaxed);
        Some(WatchPermit {
            watches: Arc::clone(self),
            key,
        })
    }
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let w = &self.watches.watches;
        let mut map = w.per_key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
        w.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Shared state around `snapshot`; not ready until [`Shared::set_ready`].
    pub fn new(snapshot: Snapshot) -> Self {
        Self::with_metrics(snapshot, Metrics::new())
    }

    /// [`Shared::new`] with the given metrics (e.g. [`Metrics::disabled`]).
    pub fn with_metrics(mut snapshot: Snapshot, metrics: Metrics) -> Self {
        snapshot.auth.adopt_keys(None);
        metrics.set_apps(snapshot.app_certificates());
        Self {
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            auth_throttle: AuthThrottle::new(),
            rate_store: None,
            ready: AtomicBool::new(false),
            watches: Watches::new(),
            clock: Arc::new(crate::domain::SystemClock),
        }
    }

    /// Decides the rate limits in `store`, shared with the other replicas.
    #[must_use]
    pub fn with_rate_store(mut self, store: Option<Arc<RateStore>>) -> Self {
        self.rate_store = store;
        self
    }

    /// The current snapshot. Hold the guard for one request only.
    pub fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot, as an `Arc` a request can keep.
    pub fn current_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Atomically replaces issuer and policies (reload). Requests in flight
    /// finish with the snapshot they loaded.
    pub fn replace(&self, mut snapshot: Snapshot) {
        // Keep the JWKS already fetched for unchanged issuers.
        snapshot.auth.adopt_keys(Some(&self.current().auth));
        let apps = snapshot.app_certificates();
        self.current.store(Arc::new(snapshot));
        self.metrics.set_apps(apps);
    }

    /// Whether the service accepts work (credentials loaded, listeners
    /// bound, not shutting down, and the audit file, if any, writable).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && crate::telemetry::audit_file::healthy()
            && self.current().auth.jwks_status().is_ok()
    }

    /// Sets the watch limits and the clock (before the state is shared).
    pub fn configure_watches(
        &mut self,
        max_per_caller: usize,
        max_life: Duration,
        clock: Arc<dyn crate::domain::Timer>,
    ) {
        self.watches.max_per_caller = max_per_caller.max(1);
        self.watches.max_life = max_life;
        self.clock = clock;
    }

    /// Sets readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
