//! Connection-level limits: caps on open connections (per listener and
//! per client), each connection's activity (requests in progress, idle
//! since, requests stuck past the request timeout) for its watchdog, and
//! the rate-limited log of accept errors.
//!
//! A connection costs memory and a file descriptor before any request is
//! authenticated, so these limits hold for everyone: a connection past a
//! cap is closed right after `accept` (before TLS or HTTP), and the
//! watchdog closes connections that send nothing (first request), stay
//! idle, or hold a request or response well past the request timeout.

use crate::policy::client_key;
use crate::state::Shared;
use crate::telemetry::metrics::{ConnectionMetrics, Listener, Rejected};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The open connections of one listener, in total and per client.
#[derive(Debug)]
pub(crate) struct ConnLimiter {
    listener: Listener,
    max_total: usize,
    max_per_client: usize,
    ipv6_prefix: u8,
    open: AtomicUsize,
    per_client: Mutex<HashMap<u128, u32>>,
    shared: Arc<Shared>,
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    key: u128,
}

impl ConnLimiter {
    pub(crate) fn new(
        listener: Listener,
        max_total: usize,
        max_per_client: usize,
        ipv6_prefix: u8,
        shared: Arc<Shared>,
    ) -> Arc<Self> {
        Arc::new(Self {
            listener,
            max_total: max_total.max(1),
            max_per_client: max_per_client.max(1),
            ipv6_prefix,
            open: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            shared,
        })
    }

    fn metrics(&self) -> &ConnectionMetrics {
        &self.shared.metrics.connections
    }

    /// Admits a connection from `ip`, or says which cap refuses it (and
    /// counts the refusal).
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, Rejected> {
        let key = client_key(ip, self.ipv6_prefix);
        let refused = {
            // A poisoned lock only means a panic mid-update of counters.
            let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
            if self.open.load(Ordering::Relaxed) >= self.max_total {
                Some(Rejected::MaxConnections)
            } else {
                let n = map.entry(key).or_insert(0);
                if *n as usize >= self.max_per_client {
                    Some(Rejected::MaxConnectionsPerClient)
                } else {
                    *n += 1;
                    self.open.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        };
        match refused {
            Some(r) => {
                self.metrics().rejected(self.listener, r);
                Err(r)
            }
            None => {
                self.metrics().opened(self.listener);
                Ok(ConnPermit {
                    limiter: Arc::clone(self),
                    key,
                })
            }
        }
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let l = &self.limiter;
        {
            let mut map = l.per_client.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.key);
                }
            }
            l.open.fetch_sub(1, Ordering::Relaxed);
        }
        l.metrics().closed(l.listener);
    }
}

/// The soft limit on open file descriptors of this process (Linux:
/// `/proc/self/limits`), if known.
pub(crate) fn fd_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// File descriptors kept for everything but the listeners' connections
/// (listeners, logs, the audit file, config reloads, the runtime).
pub(crate) const RESERVED_FDS: usize = 64;

/// What a connection's watchdog looks at: requests in progress, when the
/// connection last became idle, and requests too old (by epoch).
#[derive(Debug)]
pub(crate) struct Activity {
    born: Instant,
    started: AtomicU64,
    in_flight: AtomicU32,
    /// Milliseconds after `born` at which the last request ended.
    idle_since_ms: AtomicU64,
    /// The watchdog's epoch; requests count in `live[epoch % 4]`.
    epoch: AtomicU32,
    live: [AtomicU32; 4],
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            started: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: AtomicU32::new(0),
            live: Default::default(),
        })
    }

    fn since_born_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.born).as_millis()).unwrap_or(u64::MAX)
    }
}

/// One request (and its response, until its body is dropped) in progress
/// on a connection. `long_lived` requests (gRPC health `Watch`) do not
/// count as stalled.
#[derive(Debug)]
pub(crate) struct InFlight {
    activity: Arc<Activity>,
    slot: Option<usize>,
}

impl InFlight {
    pub(crate) fn new(activity: &Arc<Activity>, long_lived: bool) -> Self {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = (!long_lived).then(|| {
            let s = (activity.epoch.load(Ordering::Relaxed) % 4) as usize;
            activity.live[s].fetch_add(1, Ordering::Relaxed);
            s
        });
        Self {
            activity: Arc::clone(activity),
            slot,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.activity;
        if let Some(s) = self.slot {
            a.live[s].fetch_sub(1, Ordering::Relaxed);
        }
        if a.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.idle_since_ms
                .store(a.since_born_ms(Instant::now()), Ordering::Relaxed);
        }
    }
}

/// What the watchdog decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Keep the connection.
    Keep,
    /// No request arrived within the first-request timeout.
    FirstRequest,
    /// No request in progress for the idle timeout.
    Idle,
    /// A request (or its response) is still in progress well after the
    /// request timeout.
    Stalled,
}

/// The watchdog of one connection: call [`Watchdog::check`] every
/// [`Watchdog::tick`].
#[derive(Debug)]
pub(crate) struct Watchdog {
    activity: Arc<Activity>,
    first_request: Duration,
    idle: Duration,
    epoch_len: Duration,
    epoch_start: Instant,
    tick: Duration,
}

impl Watchdog {
    /// `stall` is how long a request may stay in progress (its response
    /// included); it is detected between `stall` and 4/3 of it.
    pub(crate) fn new(
        activity: Arc<Activity>,
        first_request: Duration,
        idle: Duration,
        stall: Duration,
    ) -> Self {
        let epoch_len = (stall / 3).max(Duration::from_millis(10));
        let tick = first_request
            .min(idle)
            .min(epoch_len)
            .checked_div(4)
            .unwrap_or_default()
            .clamp(Duration::from_millis(10), Duration::from_secs(5));
        Self {
            epoch_start: activity.born,
            activity,
            first_request,
            idle,
            epoch_len,
            tick,
        }
    }

    /// How often to call [`Watchdog::check`].
    pub(crate) fn tick(&self) -> Duration {
        self.tick
    }

    /// Restarts the first-request clock (after the TLS handshake).
    pub(crate) fn restart(&mut self) {
        let now = Instant::now();
        let a = &self.activity;
        a.idle_since_ms
            .store(a.since_born_ms(now), Ordering::Relaxed);
    }

    pub(crate) fn check(&mut self) -> Verdict {
        let now = Instant::now();
        let a = &self.activity;
        // Epochs: a request counts in the bucket of the epoch it started
        // in; before a bucket is reused (three epochs later) it must be
        // empty, else a request has been in progress for over `stall`.
        while now.saturating_duration_since(self.epoch_start) >= self.epoch_len {
            let next = a.epoch.load(Ordering::Relaxed).wrapping_add(1);
            if a.live[(next % 4) as usize].load(Ordering::Relaxed) > 0 {
                return Verdict::Stalled;
            }
            a.epoch.store(next, Ordering::Relaxed);
            self.epoch_start += self.epoch_len;
        }
        if a.in_flight.load(Ordering::Acquire) > 0 {
            return Verdict::Keep;
        }
        let idle_for = Duration::from_millis(
            a.since_born_ms(now)
                .saturating_sub(a.idle_since_ms.load(Ordering::Relaxed)),
        );
        if a.started.load(Ordering::Relaxed) == 0 {
            if idle_for >= self.first_request {
                return Verdict::FirstRequest;
            }
        } else if idle_for >= self.idle {
            return Verdict::Idle;
        }
        Verdict::Keep
    }
}

/// Accept errors (EMFILE, ENFILE, ...): a growing delay before the next
/// accept, and one log line per [`AcceptErrors::LOG_EVERY`] with a count.
#[derive(Debug)]
pub(crate) struct AcceptErrors {
    delay: Duration,
    unlogged: u64,
    last_log: Option<Instant>,
}

impl AcceptErrors {
    const FIRST_DELAY: Duration = Duration::from_millis(5);
    const MAX_DELAY: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    pub(crate) fn new() -> Self {
        Self {
            delay: Duration::ZERO,
            unlogged: 0,
            last_log: None,
        }
    }

    /// An accept succeeded: the next error starts over with a short delay.
    pub(crate) fn ok(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// An accept failed: logs (at most one line per 10 s) and returns how
    /// long to wait before the next accept.
    pub(crate) fn failed(&mut self, e: &std::io::Error, listener: &str) -> Duration {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.saturating_duration_since(t) >= Self::LOG_EVERY)
        {
            tracing::warn!(
                listener,
                error = %e,
                errors = self.unlogged,
                "accept failed (open file descriptors exhausted?); backing off"
            );
            self.unlogged = 0;
            self.last_log = Some(now);
        }
        self.delay = (self.delay * 2).clamp(Self::FIRST_DELAY, Self::MAX_DELAY);
        self.delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn watchdog_first_request_idle_and_stalled() {
        let ms = Duration::from_millis;
        let a = Activity::new();
        let mut w = Watchdog::new(Arc::clone(&a), ms(1000), ms(2000), ms(3000));
        assert_eq!(w.check(), Verdict::Keep);
        tokio::time::advance(ms(999)).await;
        assert_eq!(w.check(), Verdict::Keep);
        tokio::time::advance(ms(1)).await;
        assert_eq!(w.check(), Verdict::FirstRequest);
        // A request in progress keeps it; then idle counts from its end.
        let r = InFlight::new(&a, false);
        assert_eq!(w.check(), Verdict::Keep);
        tokio::time::advance(ms(500)).await;
        drop(r);
        tokio::time::advance(ms(1999)).await;
        assert_eq!(w.check(), Verdict::Keep);
        tokio::time::advance(ms(1)).await;
        assert_eq!(w.check(), Verdict::Idle);
        // A request that never ends: stalled after 3 s (at most 4 s).
        let a = Activity::new();
        let mut w = Watchdog::new(Arc::clone(&a), ms(1000), ms(2000), ms(3000));
        let _r = InFlight::new(&a, false);
        let start = Instant::now();
        loop {
            tokio::time::advance(w.tick()).await;
            if w.check() == Verdict::Stalled {
                break;
            }
            assert!(start.elapsed() <= ms(4000));
        }
        assert!(start.elapsed() >= ms(3000), "{:?}", start.elapsed());
        // Short requests, one after the other, never stall; long-lived ones
        // (health Watch) neither.
        let a = Activity::new();
        let mut w = Watchdog::new(Arc::clone(&a), ms(1000), ms(2000), ms(3000));
        let _watch = InFlight::new(&a, true);
        for _ in 0..100 {
            let r = InFlight::new(&a, false);
            tokio::time::advance(ms(100)).await;
            drop(r);
            assert_eq!(w.check(), Verdict::Keep);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_and_log_rarely() {
        let mut e = AcceptErrors::new();
        let err = std::io::Error::from_raw_os_error(24);
        let d: Vec<Duration> = (0..12).map(|_| e.failed(&err, "main")).collect();
        assert_eq!(d[0], Duration::from_millis(5));
        assert!(d.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(d[11], Duration::from_secs(1));
        // Logged once; the rest are counted for the next line.
        assert_eq!(e.unlogged, 11);
        tokio::time::advance(Duration::from_secs(10)).await;
        e.failed(&err, "main");
        assert_eq!(e.unlogged, 0);
        e.ok();
        assert_eq!(e.failed(&err, "main"), Duration::from_millis(5));
    }
}
