//! State shared by every transport: the current [`Snapshot`] of issuer and
//! caller policy (behind an atomic pointer, so a reload swaps both at once:
//! a request sees the old or the new configuration, never a mix), the
//! metrics and readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
}

impl Shared {
    /// Shared state around `snapshot`; not ready until [`Shared::set_ready`].
    pub fn new(snapshot: Snapshot) -> Self {
        Self::with_metrics(snapshot, Metrics::new())
    }

    /// [`Shared::new`] with the given metrics (e.g. [`Metrics::disabled`]).
    pub fn with_metrics(snapshot: Snapshot, metrics: Metrics) -> Self {
        metrics.set_apps(snapshot.app_certificates());
        Self {
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            auth_throttle: AuthThrottle::new(),
            rate_store: None,
            ready: AtomicBool::new(false),
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
    pub fn replace(&self, snapshot: Snapshot) {
        let apps = snapshot.app_certificates();
        self.current.store(Arc::new(snapshot));
        self.metrics.set_apps(apps);
    }

    /// Whether the service accepts work (credentials loaded, listeners
    /// bound, not shutting down, and the audit file, if any, writable).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && crate::telemetry::audit_file::healthy()
    }

    /// Sets readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
