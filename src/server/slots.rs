//! Concurrency slots: the global, per-caller and per-client in-flight
//! limits (lock-free gates of atomic counters), taken after
//! authentication, and the response-body wrapper ([`Held`]) that keeps a
//! request's slot until its response is sent.

use axum::response::Response;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Who a concurrency slot is counted against: a caller (its own counter),
/// or a client address (an IPv4 address, an IPv6 prefix) for anonymous and
/// open-mode requests and the routes that need no credentials.
#[derive(Debug, Clone)]
pub(crate) enum SlotKey {
    Caller(Arc<crate::policy::Caller>),
    Client(u128),
}

/// Requests in progress per client address: a fixed table of atomic
/// counters indexed by a keyed hash of the address (no lock, no
/// allocation per request). Two addresses may share a counter, and then a
/// limit; the hash key is random per process, so a client cannot aim at
/// another's counter, and the unauthenticated pool bounds them all.
#[derive(Debug)]
pub(crate) struct ClientCounters {
    seed: u64,
    counters: Box<[AtomicU32]>,
}

/// Counters of [`ClientCounters`] (a power of two).
const CLIENT_COUNTERS: usize = 4096;

impl ClientCounters {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        // Without the OS's randomness the table still works (fixed key).
        let _ = getrandom::fill(&mut seed);
        Self {
            seed: u64::from_le_bytes(seed) | 1,
            counters: (0..CLIENT_COUNTERS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn counter(&self, key: u128) -> &AtomicU32 {
        let x = (key as u64) ^ ((key >> 64) as u64).rotate_left(29) ^ self.seed;
        let x = (x ^ (x >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The index is masked into the table.
        &self.counters[(x >> 40) as usize & (CLIENT_COUNTERS - 1)]
    }
}

/// A count of places with a limit, taken and given back without a lock
/// (a semaphore that never waits: a request that finds no place is
/// refused, so no waiter list is needed).
#[derive(Debug)]
pub(crate) struct Gate {
    taken: std::sync::atomic::AtomicUsize,
    limit: usize,
}

/// A place of a [`Gate`], given back when dropped.
#[derive(Debug)]
pub(crate) struct GatePass(Arc<Gate>);

impl Gate {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            taken: std::sync::atomic::AtomicUsize::new(0),
            limit,
        })
    }

    /// A place, or `None` when all are taken.
    pub(crate) fn try_take(self: &Arc<Self>) -> Option<GatePass> {
        if self.taken.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.taken.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(GatePass(Arc::clone(self)))
    }
}

impl Drop for GatePass {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes one of `limit` places on `counter`, or none.
fn take(counter: &AtomicU32, limit: usize) -> bool {
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    if counter.fetch_add(1, Ordering::AcqRel) >= limit {
        counter.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

/// The concurrency limits of the main listener.
#[derive(Debug)]
pub(crate) struct Slots {
    /// Every request in progress (`max_concurrent_requests`).
    pub(crate) global: Arc<Gate>,
    /// Requests of unauthenticated clients together (`max_in_flight_anonymous`).
    pub(crate) anonymous: Arc<Gate>,
    /// Requests per caller or client (`max_in_flight_per_caller`).
    pub(crate) per_key: usize,
    clients: Arc<ClientCounters>,
    /// The IPv6 prefix that identifies a client.
    pub(crate) ipv6_prefix: u8,
}

/// The per-key place a slot holds.
#[derive(Debug)]
enum Place {
    Caller(Arc<crate::policy::Caller>),
    Client(Arc<ClientCounters>, u128),
}

#[derive(Debug)]
struct Slot {
    _global: Option<GatePass>,
    _pool: Option<GatePass>,
    place: Option<Place>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self.place.take() {
            Some(Place::Caller(c)) => {
                c.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            Some(Place::Client(t, key)) => {
                t.counter(key).fetch_sub(1, Ordering::AcqRel);
            }
            None => {}
        }
    }
}

/// A request's place under the concurrency limits. The guard attaches it
/// to the response body ([`hold`]), so it is kept until the body is sent
/// or dropped: a client that does not read its responses holds its own
/// slots, not memory of the server's beyond them.
#[derive(Debug)]
pub(crate) struct SlotPermit(#[allow(dead_code)] Slot);

/// A response body and what it keeps until it is sent or dropped (its
/// request's concurrency slot here; its place on its connection in
/// `accept`).
pub(crate) struct Held<T> {
    inner: axum::body::Body,
    _keep: T,
}

impl<T> Held<T> {
    pub(crate) fn new(inner: axum::body::Body, keep: T) -> Self {
        Self { inner, _keep: keep }
    }
}

impl<T: Unpin> hyper::body::Body for Held<T> {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// `resp`, whose body keeps `permit` until it is sent or dropped.
pub(crate) fn hold(resp: Response, permit: SlotPermit) -> Response {
    resp.map(|inner| axum::body::Body::new(Held::new(inner, permit)))
}

impl Slots {
    pub(crate) fn new(global: usize, limits: &crate::config::ConnectionLimits) -> Self {
        Self {
            global: Gate::new(global),
            anonymous: Gate::new(limits.in_flight_anonymous(global)),
            per_key: limits.in_flight_per_caller(global),
            clients: Arc::new(ClientCounters::new()),
            ipv6_prefix: limits.client_ipv6_prefix,
        }
    }

    /// A slot for `key` (also from the unauthenticated pool when
    /// `anonymous`), or why not.
    pub(crate) fn acquire(
        &self,
        key: SlotKey,
        anonymous: bool,
    ) -> Result<SlotPermit, &'static str> {
        let place = match key {
            SlotKey::Caller(c) => {
                if !take(&c.in_flight, self.per_key) {
                    return Err("too many requests in progress for this caller; retry shortly");
                }
                Place::Caller(c)
            }
            SlotKey::Client(k) => {
                if !take(self.clients.counter(k), self.per_key) {
                    return Err("too many requests in progress from this address; retry shortly");
                }
                Place::Client(Arc::clone(&self.clients), k)
            }
        };
        let mut slot = Slot {
            _global: None,
            _pool: None,
            place: Some(place),
        };
        if anonymous {
            slot._pool = Some(
                self.anonymous
                    .try_take()
                    .ok_or("too many unauthenticated requests in progress; retry shortly")?,
            );
        }
        slot._global = Some(
            self.global
                .try_take()
                .ok_or("the server is at its concurrency limit; retry shortly")?,
        );
        Ok(SlotPermit(slot))
    }
}

impl SlotPermit {
    /// A slot of `gate` alone (the admin listener: no caller, no client
    /// counters).
    pub(crate) fn of_gate(pass: GatePass) -> Self {
        Self(Slot {
            _global: Some(pass),
            _pool: None,
            place: None,
        })
    }
}
