//! State shared by every transport: the issuer (behind an atomic pointer so
//! a credentials reload can swap it while requests run: a request sees the
//! old or the new issuer, never a mix), the metrics and readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::issuer::{Issuer, Limits};
use crate::metrics::Metrics;

/// State shared by the gRPC service, the HTTP routes and the server.
#[derive(Debug)]
pub struct Shared {
    issuer: ArcSwap<Issuer>,
    /// The service's metrics.
    pub metrics: Metrics,
    ready: AtomicBool,
}

impl Shared {
    /// Shared state around `issuer`; not ready until [`Shared::set_ready`].
    pub fn new(issuer: Issuer) -> Self {
        Self::with_metrics(issuer, Metrics::new())
    }

    /// [`Shared::new`] with the given metrics (e.g. [`Metrics::disabled`]).
    pub fn with_metrics(issuer: Issuer, metrics: Metrics) -> Self {
        Self {
            issuer: ArcSwap::from_pointee(issuer),
            metrics,
            ready: AtomicBool::new(false),
        }
    }

    /// The current issuer. Hold the guard for one request only.
    pub fn issuer(&self) -> arc_swap::Guard<Arc<Issuer>> {
        self.issuer.load()
    }

    /// Atomically replaces the issuer (credentials reload). Requests in
    /// flight finish with the issuer they loaded.
    pub fn replace_issuer(&self, issuer: Issuer) {
        self.issuer.store(Arc::new(issuer));
    }

    /// The limits that apply to a request. Every caller gets the service's
    /// defaults until caller policies exist (issue 4 hooks in here).
    pub fn limits(&self) -> Limits {
        Limits::default()
    }

    /// Whether the service accepts work (credentials loaded, listeners
    /// bound, not shutting down).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Sets readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
