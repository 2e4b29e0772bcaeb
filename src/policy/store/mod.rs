//! The shared rate-limit store (`[limits] rate_limit_store`): every rate
//! limit decision (per caller, per anonymous client, the failed-
//! authentication throttle) made once for the whole fleet in Redis, so
//! that N replicas enforce the limits the operator wrote, not N times them.
//!
//! * One decision is one Lua script run ([`SCRIPT`]): atomic, at most one
//!   round trip per request, Redis's `TIME` as the clock (replica clocks do
//!   not matter). The buckets are GCRA (one timestamp per key), the same
//!   rate and burst as the in-process [`super::TokenBucket`]; the throttle
//!   is the same fixed window as [`super::throttle`]. Keys are
//!   `<prefix>:c:<caller>`, `<prefix>:a:<client>` and `<prefix>:f:<client>`,
//!   and expire when idle (a bucket when it is full again, a throttle
//!   window when it ends), so the store never grows without bound.
//! * `EVALSHA`, and on `NOSCRIPT` (a restarted or flushed Redis) `SCRIPT
//!   LOAD` and `EVALSHA` again ([`redis::Script`]).
//! * The connection is set up at start-up and kept by the client's
//!   [`redis::aio::ConnectionManager`] (it reconnects in the background): a request
//!   never waits for a connection, and never longer than
//!   `rate_limit_store_timeout_ms` for an answer.
//! * Topologies (the URL's scheme): one server (`redis://`, `rediss://`);
//!   Sentinel (`redis+sentinel://S1:P,S2:P/MASTER/DB`: the master the
//!   sentinels name, checked with `ROLE`; when it fails, and at every
//!   probe after, the sentinels are asked again, so a failover is
//!   followed within the probe interval); Cluster (`redis+cluster://`,
//!   `rediss+cluster://`: the crate's cluster client, which follows the
//!   slots itself). In a cluster a script can touch one slot only, and the
//!   throttle (per address) and a bucket (per identity) have different
//!   keys that no hash tag can put together: a decision that needs both
//!   sends two scripts at once (still one round trip of latency; a
//!   throttled request with valid credentials then also spent a token).
//! * Keys the store refused are refused locally until their retry time
//!   (the over-limit cache): a client hammering a limited key costs no
//!   round trip.
//! * When the store fails (an error, a timeout, no connection), the
//!   replica marks it down (one WARN), decides locally without asking it
//!   (`rate_limit_store_failure = "local"`: the in-process limiters with
//!   the same limits; `"deny"`: UNAVAILABLE / 503), and probes it every
//!   second; the first answer marks it up again (one WARN) and requests
//!   use the shared limits again.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

mod config;
mod leases;

pub use config::StoreConfig;
use config::{Conn, Topology};
pub use leases::{LEASE_SCRIPT, WatchLease, WatchOwner};

use super::bounded::BoundedMap;
use super::throttle;

/// Default `rate_limit_store_timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 25;
/// Largest `rate_limit_store_timeout_ms`.
pub const MAX_TIMEOUT_MS: u64 = 10_000;
/// Default `rate_limit_store_key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "token-authority";
/// How often a replica whose store is down tries it again.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a connection attempt (start-up, probes) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Keys held in the local over-limit cache at most.
const MAX_CACHED: usize = 65_536;
/// How long a watch's lease lives in the store unless refreshed: the
/// watches of a replica that died stop counting after this.
pub const WATCH_LEASE: Duration = Duration::from_secs(15);
/// How often a replica refreshes the leases of its open watches.
pub const WATCH_LEASE_REFRESH: Duration = Duration::from_secs(5);
/// Leases refreshed per script run at most.
const LEASES_PER_CALL: usize = 512;

/// What a replica does while the store cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreFailure {
    /// The in-process limiters, same limits (the fleet then allows at most
    /// replicas × limit).
    #[default]
    Local,
    /// Refuse token requests with UNAVAILABLE / 503 (fail closed).
    Deny,
}

impl StoreFailure {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Deny => "deny",
        }
    }
}

/// The decision script. KEYS: the throttle key (when ARGV[1] or ARGV[2]
/// is 1), then the bucket key (when ARGV[5] is 1). ARGV: [1] check the
/// throttle, [2] record a failed authentication, [3] failures allowed per
/// window, [4] the window (ms), [5] take a token, [6] the emission
/// interval (µs, 1 / rate), [7] the burst. Returns `{code, wait µs,
/// failures}`: 0 allowed, 1 rate limited, 2 throttled, 3 failure recorded.
pub const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local k = 1
if ARGV[1] == '1' or ARGV[2] == '1' then
  local tk = KEYS[1]
  k = 2
  local n = tonumber(redis.call('GET', tk) or '0')
  if ARGV[1] == '1' and n >= tonumber(ARGV[3]) then
    local ttl = redis.call('PTTL', tk)
    if ttl < 0 then ttl = tonumber(ARGV[4]) end
    return {2, ttl * 1000, n}
  end
  if ARGV[2] == '1' then
    n = redis.call('INCR', tk)
    if n == 1 then redis.call('PEXPIRE', tk, ARGV[4]) end
    local ttl = redis.call('PTTL', tk)
    if ttl < 0 then ttl = tonumber(ARGV[4]) end
    return {3, ttl * 1000, n}
  end
end
if ARGV[5] == '1' then
  local bk = KEYS[k]
  local interval = tonumber(ARGV[6])
  local burst = tonumber(ARGV[7])
  local tat = tonumber(redis.call('GET', bk) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  if now < allow_at then
    return {1, math.ceil(allow_at - now), 0}
  end
  redis.call('SET', bk, string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
end
return {0, 0, 0}
";

/// Whose bucket a request takes its token from.
#[derive(Debug, Clone, Copy)]
pub enum BucketKey<'a> {
    /// A configured caller (its name).
    Caller(&'a str),
    /// A JWT caller's subject (`ISSUER:SUBJECT`).
    Subject(&'a str),
    /// An anonymous client (its address or IPv6 prefix, see
    /// [`super::client_key`]).
    Client(u128),
}

/// A token bucket to take from: whose, and its limits.
#[derive(Debug, Clone, Copy)]
pub struct Bucket<'a> {
    /// Whose.
    pub key: BucketKey<'a>,
    /// Tokens per second.
    pub rate: f64,
    /// Most tokens stored.
    pub burst: u32,
}

/// What one request asks of the limits.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The client address (the throttle's key).
    pub ip: IpAddr,
    /// Whether the request presented credentials (then the throttle applies).
    pub check_throttle: bool,
    /// Whether its authentication failed (then it is counted).
    pub failed: bool,
    /// The bucket to take a token from, if the identity has one.
    pub bucket: Option<Bucket<'a>>,
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Allowed,
    /// The bucket is empty: retry after the wait.
    RateLimited(Duration),
    /// Too many failed authentications from this client.
    Throttled(Duration),
    /// The failed authentication was counted (the request is refused as
    /// unauthenticated).
    Failed,
}

/// The store of one replica: its connection, health, metrics and
/// over-limit cache.
pub struct RateStore {
    config: StoreConfig,
    conn: RwLock<Option<Conn>>,
    script: redis::Script,
    up: AtomicBool,
    errors: AtomicU64,
    calls: AtomicU64,
    cached_refusals: AtomicU64,
    hasher: (RandomState, RandomState),
    refused: Mutex<BoundedMap<u128, Instant>>,
    lease_script: redis::Script,
    /// This replica's open watches: lease set key → watch ids.
    leases: Mutex<HashMap<Arc<str>, HashSet<Arc<str>>>>,
}

impl fmt::Debug for RateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateStore")
            .field("config", &self.config)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl RateStore {
    /// Connects (waiting at most a second; a store that is not there yet is
    /// marked down and probed in the background) and starts the probe.
    pub async fn start(config: StoreConfig) -> Arc<Self> {
        let store = Arc::new(Self {
            config,
            conn: RwLock::new(None),
            script: redis::Script::new(SCRIPT),
            up: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            cached_refusals: AtomicU64::new(0),
            hasher: (RandomState::new(), RandomState::new()),
            refused: Mutex::new(BoundedMap::new(MAX_CACHED)),
            lease_script: redis::Script::new(LEASE_SCRIPT),
            leases: Mutex::new(HashMap::new()),
        });
        if store.probe().await {
            store.up.store(true, Ordering::Release);
            tracing::info!(
                store = store.config.address(),
                "rate limits are shared in the rate limit store"
            );
        } else {
            store.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                store = store.config.address(),
                fallback = store.config.failure.as_str(),
                "the rate limit store cannot be reached at start-up; {} until it can",
                store.fallback_words()
            );
        }
        tokio::spawn(Self::prober(Arc::downgrade(&store)));
        tokio::spawn(Self::lease_refresher(Arc::downgrade(&store)));
        store
    }

    fn fallback_words(&self) -> &'static str {
        match self.config.failure {
            StoreFailure::Local => "using this replica's own limits (same values)",
            StoreFailure::Deny => "refusing token requests (rate_limit_store_failure = \"deny\")",
        }
    }

    /// The settings.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Whether the store answered the last request or probe.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// While the store is down: probes it every [`PROBE_INTERVAL`] and
    /// marks it up at the first answer. Ends when the store is dropped.
    async fn prober(weak: Weak<Self>) {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(store) = weak.upgrade() else { return };
            if store.is_up() {
                continue;
            }
            if store.probe().await {
                if !store.up.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        store = store.config.address(),
                        "the rate limit store answers again: rate limits are shared again"
                    );
                }
            } else {
                store.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The current connection, if any.
    fn conn(&self) -> Option<Conn> {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connects if not yet connected (with Sentinel: always, to the master
    /// the sentinels name now, so a failover is followed), then loads the
    /// script (so the next request needs no `NOSCRIPT` round trip);
    /// whether both worked in time.
    async fn probe(&self) -> bool {
        let existing = self.conn();
        let reconnect =
            existing.is_none() || matches!(self.config.topology, Topology::Sentinel { .. });
        let mut conn = match existing {
            Some(c) if !reconnect => c,
            _ => match tokio::time::timeout(CONNECT_TIMEOUT * 2, self.config.connect()).await {
                Ok(Ok(c)) => c,
                _ => return false,
            },
        };
        let load = self.script.load_async(&mut conn);
        let loaded = matches!(tokio::time::timeout(CONNECT_TIMEOUT, load).await, Ok(Ok(_)));
        if loaded && reconnect {
            *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        }
        loaded
    }

    fn key_of(&self, kind: &str, key: &str) -> String {
        format!("{}:{kind}:{key}", self.config.key_prefix)
    }

    fn client_key_string(&self, kind: &str, client: u128) -> String {
        self.key_of(kind, &format!("{client:032x}"))
    }

    fn hash(&self, key: &str) -> u128 {
        let a = self.hasher.0.hash_one(key);
        let b = self.hasher.1.hash_one(key);
        (u128::from(a) << 64) | u128::from(b)
    }

    /// The rest of the wait of a key refused earlier, if any.
    fn cached(&self, key: &str, now: Instant) -> Option<Duration> {
        if !self.config.local_cache {
            return None;
        }
        let h = self.hash(key);
        let map = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let until = *map.get(&h)?;
        (until > now).then(|| until - now)
    }

    fn cache(&self, key: &str, wait: Duration) {
        if !self.config.local_cache || wait.is_zero() {
            return;
        }
        let h = self.hash(key);
        let until = Instant::now() + wait;
        let mut map = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        *map.get_or_insert_with(h, || until) = until;
    }

    /// The shared decision for `ask`, or `None` when the store cannot make
    /// it now (down, an error, no answer within the timeout): the caller
    /// then applies `rate_limit_store_failure`.
    pub async fn decide(&self, ask: &Ask<'_>) -> Option<Verdict> {
        let now = Instant::now();
        let throttle_key = (ask.check_throttle || ask.failed)
            .then(|| self.client_key_string("f", throttle::client_key(ask.ip)));
        if ask.check_throttle {
            if let Some(wait) = throttle_key.as_deref().and_then(|k| self.cached(k, now)) {
                self.cached_refusals.fetch_add(1, Ordering::Relaxed);
                return Some(Verdict::Throttled(wait));
            }
        }
        let bucket = if ask.failed { None } else { ask.bucket };
        let bucket_key = bucket.map(|b| match b.key {
            BucketKey::Caller(name) => self.key_of("c", name),
            BucketKey::Subject(name) => self.key_of("j", name),
            BucketKey::Client(c) => self.client_key_string("a", c),
        });
        if let Some(wait) = bucket_key.as_deref().and_then(|k| self.cached(k, now)) {
            self.cached_refusals.fetch_add(1, Ordering::Relaxed);
            return Some(Verdict::RateLimited(wait));
        }
        if throttle_key.is_none() && bucket_key.is_none() {
            return Some(Verdict::Allowed);
        }
        if !self.is_up() {
            return None;
        }
        let conn = self.conn()?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer = match (&conn, &throttle_key, bucket.zip(bucket_key.as_deref())) {
            // A cluster keeps the throttle (per address) and the bucket
            // (per identity) in different slots, and a script may only
            // touch one: two scripts, sent at once (one round trip).
            (Conn::Cluster(_), Some(tk), Some(b)) => {
                let throttle = self.invocation(Some(tk), ask.check_throttle, false, None);
                let take = self.invocation(None, false, false, Some(b));
                let (mut c1, mut c2) = (conn.clone(), conn);
                let both = async {
                    let (t, b) = tokio::join!(
                        throttle.invoke_async::<(i64, i64, i64)>(&mut c1),
                        take.invoke_async::<(i64, i64, i64)>(&mut c2)
                    );
                    match (t?, b?) {
                        (t, _) if t.0 == 2 => Ok(t),
                        (_, b) => Ok(b),
                    }
                };
                tokio::time::timeout(self.config.timeout, both).await
            }
            _ => {
                let inv = self.invocation(
                    throttle_key.as_deref(),
                    ask.check_throttle,
                    ask.failed,
                    bucket.zip(bucket_key.as_deref()),
                );
                let mut conn = conn;
                tokio::time::timeout(
                    self.config.timeout,
                    inv.invoke_async::<(i64, i64, i64)>(&mut conn),
                )
                .await
            }
        };
        let (code, wait_us, failures) = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                self.failed(if e.is_timeout() { "timeout" } else { "error" });
                return None;
            }
            Err(_) => {
                self.failed("timeout");
                return None;
            }
        };
        let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
        Some(match code {
            1 => {
                if let Some(k) = &bucket_key {
                    self.cache(k, wait);
                }
                Verdict::RateLimited(wait)
            }
            2 => {
                if let Some(k) = &throttle_key {
                    self.cache(k, wait);
                }
                Verdict::Throttled(wait)
            }
            3 => {
                if failures >= i64::from(throttle::MAX_FAILURES) {
                    if let Some(k) = &throttle_key {
                        self.cache(k, wait);
                    }
                }
                Verdict::Failed
            }
            _ => Verdict::Allowed,
        })
    }

    /// One run of [`SCRIPT`]: the throttle key (checked and/or counted),
    /// then the bucket to take a token from.
    fn invocation<'s>(
        &'s self,
        throttle_key: Option<&str>,
        check: bool,
        failed: bool,
        bucket: Option<(Bucket<'_>, &str)>,
    ) -> redis::ScriptInvocation<'s> {
        let mut inv = self.script.prepare_invoke();
        if let Some(k) = throttle_key {
            inv.key(k);
        }
        if let Some((_, k)) = bucket {
            inv.key(k);
        }
        let (interval_us, burst) = bucket.map_or((0.0, 0), |(b, _)| (1e6 / b.rate, b.burst.max(1)));
        inv.arg(u8::from(check))
            .arg(u8::from(failed))
            .arg(throttle::MAX_FAILURES)
            .arg(throttle::WINDOW.as_millis() as u64)
            .arg(u8::from(bucket.is_some()))
            .arg(interval_us)
            .arg(burst);
        inv
    }

    /// A failed call: counted; the first one marks the store down.
    fn failed(&self, why: &'static str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                store = self.config.address(),
                reason = why,
                timeout_ms = self.config.timeout.as_millis() as u64,
                fallback = self.config.failure.as_str(),
                "the rate limit store failed; {} until it answers again (probed every second)",
                self.fallback_words()
            );
        }
    }

    /// Appends the store's series to a Prometheus exposition.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "# HELP token_authority_rate_limit_store_up Whether the shared rate limit store answers (0: this replica decides with rate_limit_store_failure).\n\
             # TYPE token_authority_rate_limit_store_up gauge\n\
             token_authority_rate_limit_store_up {}\n\
             # HELP token_authority_rate_limit_store_errors_total Store calls and probes that failed or timed out.\n\
             # TYPE token_authority_rate_limit_store_errors_total counter\n\
             token_authority_rate_limit_store_errors_total {}\n\
             # HELP token_authority_rate_limit_store_calls_total Decisions asked of the store (one round trip each).\n\
             # TYPE token_authority_rate_limit_store_calls_total counter\n\
             token_authority_rate_limit_store_calls_total {}\n\
             # HELP token_authority_rate_limit_store_cached_refusals_total Requests refused from the local over-limit cache, without a round trip.\n\
             # TYPE token_authority_rate_limit_store_cached_refusals_total counter\n\
             token_authority_rate_limit_store_cached_refusals_total {}\n\
             # HELP token_authority_rate_limit_store_watch_leases Open watches of this replica with a lease in the store (counted against max_watches_per_caller fleet-wide).\n\
             # TYPE token_authority_rate_limit_store_watch_leases gauge\n\
             token_authority_rate_limit_store_watch_leases {}\n",
            u8::from(self.is_up()),
            self.errors.load(Ordering::Relaxed),
            self.calls.load(Ordering::Relaxed),
            self.cached_refusals.load(Ordering::Relaxed),
            self.leases_held().1,
        );
    }
}
