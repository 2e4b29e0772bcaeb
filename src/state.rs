//! State shared by every transport: the current [`Snapshot`] of issuer and
//! caller policy (behind an atomic pointer, so a reload swaps both at once:
//! a request sees the old or the new configuration, never a mix), the
//! metrics and readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::issuer::Issuer;
use crate::metrics::Metrics;

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
}

/// State shared by the gRPC service, the HTTP routes and the server.
#[derive(Debug)]
pub struct Shared {
    current: ArcSwap<Snapshot>,
    /// The service's metrics.
    pub metrics: Metrics,
    ready: AtomicBool,
}

impl Shared {
    /// Shared state around `snapshot`; not ready until [`Shared::set_ready`].
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
            metrics: Metrics::new(),
            ready: AtomicBool::new(false),
        }
    }

    /// The current snapshot. Hold the guard for one request only.
    pub fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Atomically replaces issuer and policies (reload). Requests in flight
    /// finish with the snapshot they loaded.
    pub fn replace(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
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
