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
//!   [`ConnectionManager`] (it reconnects in the background): a request
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

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

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

/// How the store is deployed (the URL's scheme).
#[derive(Clone, PartialEq)]
enum Topology {
    /// `redis://` / `rediss://`: one server.
    Single,
    /// `redis+sentinel://`: the master of `master`, found by asking the
    /// sentinels (`redis://HOST:PORT` each); `data` is a `redis://` URL
    /// with the credentials and database for the master.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        data: String,
    },
    /// `redis+cluster://` / `rediss+cluster://`: the seed nodes
    /// (`redis[s]://[CREDENTIALS@]HOST:PORT` each).
    Cluster { nodes: Vec<String> },
}

/// Most hosts in a Sentinel or Cluster URL.
const MAX_HOSTS: usize = 16;

/// The URL forms, for errors.
const URL_FORMS: &str = "must be redis://[:PASSWORD@]HOST:PORT/DB, rediss://... (TLS), \
     redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB] or \
     redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT...] (rediss+cluster:// for TLS)";

/// Parses a store URL: its topology, the connection info of its (first)
/// data node (with the URL's credentials) and the address to show in
/// logs (no credentials). Errors never contain the URL.
fn parse_url(url: &str) -> Result<(Topology, redis::ConnectionInfo, String), String> {
    use redis::IntoConnectionInfo;
    let invalid = |what: &str| {
        format!("{what}; {URL_FORMS} (the value is not shown, it may hold a password)")
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(URL_FORMS.to_owned());
    };
    match scheme {
        "redis" | "rediss" => {
            let info = url
                .into_connection_info()
                .map_err(|_| invalid("is not a valid Redis URL"))?;
            let shown = format!("{scheme}://{}/{}", info.addr(), info.redis_settings().db());
            return Ok((Topology::Single, info, shown));
        }
        "redis+sentinel" | "redis+cluster" | "rediss+cluster" => {}
        _ => return Err(URL_FORMS.to_owned()),
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let hosts: Vec<&str> = hosts.split(',').collect();
    if hosts.iter().any(|h| h.is_empty()) || hosts.len() > MAX_HOSTS {
        return Err(invalid(&format!(
            "needs 1 to {MAX_HOSTS} HOST:PORT separated by commas"
        )));
    }
    let creds = userinfo.map_or(String::new(), |u| format!("{u}@"));
    let node_scheme = if scheme == "rediss+cluster" {
        "rediss"
    } else {
        "redis"
    };
    let mut addrs = Vec::with_capacity(hosts.len());
    let mut node_urls = Vec::with_capacity(hosts.len());
    for h in &hosts {
        let node = if scheme == "redis+sentinel" {
            format!("redis://{h}")
        } else {
            format!("{node_scheme}://{creds}{h}")
        };
        let info = node
            .as_str()
            .into_connection_info()
            .map_err(|_| invalid("holds a HOST:PORT that is not valid"))?;
        if !h.contains(':') {
            return Err(invalid("needs a port with every host"));
        }
        addrs.push(info.addr().to_string());
        node_urls.push(node);
    }
    let hosts_shown = addrs.join(",");
    if scheme == "redis+sentinel" {
        let (master, db) = match path.split_once('/') {
            Some((m, d)) => (m, d),
            None => (path, "0"),
        };
        let db: u32 = if db.is_empty() {
            0
        } else {
            db.parse()
                .map_err(|_| invalid("has a database that is not a number"))?
        };
        if master.is_empty()
            || master.len() > 128
            || !master.bytes().all(|b| b.is_ascii_graphic() && b != b'%')
        {
            return Err(invalid(
                "needs the master's name (what the sentinels monitor) after the hosts",
            ));
        }
        let data = format!("redis://{creds}{}/{db}", hosts[0]);
        let info = data
            .as_str()
            .into_connection_info()
            .map_err(|_| invalid("holds credentials that are not valid"))?;
        let shown = format!("{scheme}://{hosts_shown}/{master}/{db}");
        let topology = Topology::Sentinel {
            sentinels: node_urls,
            master: master.to_owned(),
            data,
        };
        return Ok((topology, info, shown));
    }
    if !matches!(path, "" | "0") {
        return Err(invalid("a Redis Cluster has database 0 only"));
    }
    let info = node_urls[0]
        .as_str()
        .into_connection_info()
        .map_err(|_| invalid("is not a valid Redis URL"))?;
    let shown = format!("{scheme}://{hosts_shown}");
    Ok((Topology::Cluster { nodes: node_urls }, info, shown))
}

/// A connection to the store: one server (standalone, or the master found
/// through Sentinel), kept by a [`ConnectionManager`]; or a Redis Cluster,
/// whose client follows the slots itself.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The validated store settings. The URL and the password are secrets:
/// `Debug` shows the address without them.
#[derive(Clone, PartialEq)]
pub struct StoreConfig {
    url: String,
    topology: Topology,
    password: Option<String>,
    shown: String,
    /// Longest wait for the store's answer on a request.
    pub timeout: Duration,
    /// What to do while the store is down.
    pub failure: StoreFailure,
    /// The namespace of every key.
    pub key_prefix: String,
    /// Whether refused keys are refused locally until their retry time.
    pub local_cache: bool,
    /// PEM certificates to trust for `rediss://` instead of the system's
    /// roots (`rate_limit_store_ca_file`).
    ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("address", &self.shown)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("failure", &self.failure)
            .field("key_prefix", &self.key_prefix)
            .field("local_cache", &self.local_cache)
            .field("ca_file", &self.ca_pem.is_some())
            .finish()
    }
}

impl StoreConfig {
    /// Validates `url` (`redis://` or `rediss://`, TLS) and the other
    /// settings. `password` is the one from the environment (`*_FILE`),
    /// if any. Errors never contain the URL (it may hold a password).
    pub fn new(
        url: &str,
        password: Option<String>,
        timeout_ms: Option<u64>,
        failure: Option<StoreFailure>,
        key_prefix: Option<String>,
        local_cache: Option<bool>,
    ) -> Result<Self, (&'static str, String)> {
        const URL: &str = "limits.rate_limit_store";
        let url = url.trim();
        let (topology, info, shown) = parse_url(url).map_err(|why| (URL, why))?;
        if info.redis_settings().password().is_some() && password.is_some() {
            return Err((
                URL,
                "the URL holds a password and TOKEN_AUTHORITY_RATE_LIMIT_STORE_PASSWORD(_FILE) \
                 is set too: give it in one place"
                    .to_owned(),
            ));
        }
        if password.as_deref().is_some_and(str::is_empty) {
            return Err((
                "TOKEN_AUTHORITY_RATE_LIMIT_STORE_PASSWORD",
                "is empty".to_owned(),
            ));
        }
        let timeout_ms = timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err((
                "limits.rate_limit_store_timeout_ms",
                format!("must be 1 to {MAX_TIMEOUT_MS}"),
            ));
        }
        let key_prefix = key_prefix.unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        if key_prefix.is_empty()
            || key_prefix.len() > 64
            || !key_prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
        {
            return Err((
                "limits.rate_limit_store_key_prefix",
                "must be 1 to 64 printable ASCII characters without spaces or braces".to_owned(),
            ));
        }
        Ok(Self {
            url: url.to_owned(),
            topology,
            password,
            shown,
            timeout: Duration::from_millis(timeout_ms),
            failure: failure.unwrap_or_default(),
            key_prefix,
            local_cache: local_cache.unwrap_or(true),
            ca_pem: None,
        })
    }

    /// Trusts the PEM certificates `pem` (a private CA) for `rediss://`
    /// instead of the system's roots. `what` names the setting in errors.
    pub fn with_ca_pem(
        mut self,
        what: &'static str,
        pem: Vec<u8>,
    ) -> Result<Self, (&'static str, String)> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        if !self.tls() {
            return Err((
                what,
                "needs a rediss:// or rediss+cluster:// (TLS) rate_limit_store".to_owned(),
            ));
        }
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| (what, format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err((what, "no certificate found".to_owned()));
        }
        self.ca_pem = Some(pem);
        Ok(self)
    }

    /// The store's address without credentials (for logs).
    pub fn address(&self) -> &str {
        &self.shown
    }

    /// Whether the store is reached over TLS.
    fn tls(&self) -> bool {
        self.url.starts_with("rediss://") || self.url.starts_with("rediss+cluster://")
    }

    /// The connection info of a data node's URL, with the password from
    /// the environment.
    fn node_info(&self, url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(url)?;
        if let Some(p) = &self.password {
            let settings = info.redis_settings().clone().set_password(p);
            info = info.set_redis_settings(settings);
        }
        Ok(info)
    }

    fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.ca_pem.as_ref().map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
    }

    /// Connects to the store: the server, the master the sentinels name
    /// now (checked with `ROLE`), or the cluster (its slots fetched).
    async fn connect(&self) -> redis::RedisResult<Conn> {
        let manager = |client| {
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(CONNECT_TIMEOUT))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            ConnectionManager::new_with_config(client, cfg)
        };
        match &self.topology {
            Topology::Single => {
                let info = self.node_info(&self.url)?;
                let client = match self.certificates() {
                    Some(certs) => redis::Client::build_with_tls(info, certs)?,
                    None => redis::Client::open(info)?,
                };
                Ok(Conn::Single(manager(client).await?))
            }
            Topology::Sentinel {
                sentinels,
                master,
                data,
            } => {
                let data = self.node_info(data)?;
                let node = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(data.redis_settings().clone());
                let mut sentinel = redis::sentinel::Sentinel::build(sentinels.clone())?;
                let client = sentinel.async_master_for(master, Some(&node)).await?;
                Ok(Conn::Single(manager(client).await?))
            }
            Topology::Cluster { nodes } => {
                let infos = nodes
                    .iter()
                    .map(|n| self.node_info(n))
                    .collect::<redis::RedisResult<Vec<_>>>()?;
                let mut builder = redis::cluster::ClusterClient::builder(infos)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(CONNECT_TIMEOUT)
                    .retries(2);
                if let Some(certs) = self.certificates() {
                    builder = builder.certs(certs);
                }
                let conn = builder.build()?.get_async_connection().await?;
                Ok(Conn::Cluster(conn))
            }
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

/// The watch-lease script. KEYS[1]: the lease set of one caller (a sorted
/// set: member = watch id, score = lease expiry in ms of Redis's `TIME`).
/// ARGV: [1] the cap, [2] the lease (ms), [3] 1 = open one watch (ARGV[4]
/// its id) if fewer than the cap are open, 0 = refresh the leases
/// ARGV[4..] (added again if they expired). Expired leases are dropped
/// first; the set expires with its last lease. Returns 1, or 0 when the
/// cap is reached.
pub const LEASE_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[3] == '1' then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
  redis.call('ZADD', KEYS[1], now + lease, ARGV[4])
else
  for i = 4, #ARGV do redis.call('ZADD', KEYS[1], now + lease, ARGV[i]) end
end
redis.call('PEXPIRE', KEYS[1], lease)
return 1
";

/// Whose watches a lease set counts.
#[derive(Debug, Clone, Copy)]
pub enum WatchOwner<'a> {
    /// A configured caller (its name).
    Caller(&'a str),
    /// A client address (anonymous, JWT or open mode; see
    /// [`super::client_key`]).
    Client(u128),
}

/// An open watch's lease in the store: refreshed by the replica while it
/// lives, removed when it is dropped (the stream ended).
pub struct WatchLease {
    store: Arc<RateStore>,
    key: Arc<str>,
    id: Arc<str>,
}

impl fmt::Debug for WatchLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchLease")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Drop for WatchLease {
    fn drop(&mut self) {
        self.store.release(&self.key, &self.id);
    }
}

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

    /// Opens a watch under the fleet-wide cap `cap` of `owner`: its lease,
    /// `Some(Ok(_))`; `Some(Err(()))` when `cap` watches of `owner` are
    /// open across the fleet; `None` when the store cannot say now (then
    /// `rate_limit_store_failure` applies: with `local`, open it with
    /// [`Self::unconfirmed_lease`]).
    pub async fn lease_watch(
        self: &Arc<Self>,
        owner: WatchOwner<'_>,
        cap: usize,
    ) -> Option<Result<WatchLease, ()>> {
        if !self.is_up() {
            return None;
        }
        let conn = self.conn()?;
        let lease = self.new_lease(owner);
        let mut inv = self.lease_script.prepare_invoke();
        inv.key(&*lease.key)
            .arg(cap)
            .arg(WATCH_LEASE.as_millis() as u64)
            .arg(1)
            .arg(&*lease.id);
        let mut conn = conn;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer =
            tokio::time::timeout(self.config.timeout, inv.invoke_async::<i64>(&mut conn)).await;
        match answer {
            Ok(Ok(1)) => {
                self.register(&lease);
                Some(Ok(lease))
            }
            Ok(Ok(_)) => {
                // Not registered: its drop removes nothing that exists.
                Some(Err(()))
            }
            Ok(Err(e)) => {
                self.failed(if e.is_timeout() { "timeout" } else { "error" });
                None
            }
            Err(_) => {
                self.failed("timeout");
                None
            }
        }
    }

    /// A lease for a watch opened while the store is down (`local`): not
    /// counted yet; the next refresh after the store is back counts it.
    pub fn unconfirmed_lease(self: &Arc<Self>, owner: WatchOwner<'_>) -> WatchLease {
        let lease = self.new_lease(owner);
        self.register(&lease);
        lease
    }

    fn new_lease(self: &Arc<Self>, owner: WatchOwner<'_>) -> WatchLease {
        let key = match owner {
            WatchOwner::Caller(name) => self.key_of("w:c", name),
            WatchOwner::Client(c) => self.client_key_string("w:a", c),
        };
        let mut id = [0u8; 16];
        // Without the OS's randomness: a counter-free fallback that is still
        // unique within this process (the address of a fresh allocation
        // would not be); the time in ns.
        if getrandom::fill(&mut id).is_err() {
            let ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            id = ns.to_le_bytes();
        }
        WatchLease {
            store: Arc::clone(self),
            key: key.into(),
            id: format!("{:032x}", u128::from_le_bytes(id)).into(),
        }
    }

    fn register(&self, lease: &WatchLease) {
        let mut map = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(Arc::clone(&lease.key))
            .or_default()
            .insert(Arc::clone(&lease.id));
    }

    /// A watch ended: its lease is forgotten here and removed from the
    /// store (in the background; if that fails, it expires).
    fn release(self: &Arc<Self>, key: &Arc<str>, id: &Arc<str>) {
        {
            let mut map = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            let Some(ids) = map.get_mut(key) else { return };
            if !ids.remove(id) {
                return;
            }
            if ids.is_empty() {
                map.remove(key);
            }
        }
        let (Ok(rt), true, Some(mut conn)) = (
            tokio::runtime::Handle::try_current(),
            self.is_up(),
            self.conn(),
        ) else {
            return;
        };
        let (key, id, timeout) = (Arc::clone(key), Arc::clone(id), self.config.timeout);
        rt.spawn(async move {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(&*key).arg(&*id);
            let zrem = cmd.query_async::<i64>(&mut conn);
            let _ = tokio::time::timeout(timeout.max(Duration::from_secs(1)), zrem).await;
        });
    }

    /// The open watches' leases in the store, as far as this replica
    /// knows (for tests and metrics): lease sets, watches.
    pub fn leases_held(&self) -> (usize, usize) {
        let map = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        (map.len(), map.values().map(HashSet::len).sum())
    }

    /// Every [`WATCH_LEASE_REFRESH`]: refreshes the leases of this
    /// replica's open watches (one script run per lease set and 512
    /// watches). Ends when the store is dropped.
    async fn lease_refresher(weak: Weak<Self>) {
        let mut tick = tokio::time::interval(WATCH_LEASE_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(store) = weak.upgrade() else { return };
            if !store.is_up() {
                continue;
            }
            let Some(conn) = store.conn() else { continue };
            let batches: Vec<(Arc<str>, Vec<Arc<str>>)> = {
                let map = store.leases.lock().unwrap_or_else(|e| e.into_inner());
                map.iter()
                    .flat_map(|(k, ids)| {
                        let ids: Vec<Arc<str>> = ids.iter().cloned().collect();
                        ids.chunks(LEASES_PER_CALL)
                            .map(|c| (Arc::clone(k), c.to_vec()))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            for (key, ids) in batches {
                let mut inv = store.lease_script.prepare_invoke();
                inv.key(&*key)
                    .arg(0)
                    .arg(WATCH_LEASE.as_millis() as u64)
                    .arg(0);
                for id in &ids {
                    inv.arg(&**id);
                }
                let mut conn = conn.clone();
                let run = inv.invoke_async::<i64>(&mut conn);
                match tokio::time::timeout(CONNECT_TIMEOUT, run).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        store.failed(if e.is_timeout() { "timeout" } else { "error" });
                        break;
                    }
                    Err(_) => {
                        store.failed("timeout");
                        break;
                    }
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> Result<StoreConfig, (&'static str, String)> {
        StoreConfig::new(url, None, None, None, None, None)
    }

    #[test]
    fn urls_are_checked_and_never_shown() {
        let c = cfg("redis://:hunter2secret@127.0.0.1:6380/2").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2secret"), "{shown}");
        assert!(shown.contains("127.0.0.1:6380"), "{shown}");
        assert_eq!(c.timeout, Duration::from_millis(25));
        assert_eq!(c.failure, StoreFailure::Local);
        assert_eq!(c.key_prefix, DEFAULT_KEY_PREFIX);
        assert!(c.address().starts_with("redis://127.0.0.1:6380/2"));
        for bad in ["http://x", "", "redis://:pw@[::1", "pw@host"] {
            let (what, why) = cfg(bad).unwrap_err();
            assert_eq!(what, "limits.rate_limit_store");
            assert!(!why.contains("pw"), "{why}");
        }
        let with_env = StoreConfig::new(
            "redis://127.0.0.1:6379",
            Some("envsecret".into()),
            Some(50),
            Some(StoreFailure::Deny),
            Some("fleet-a".into()),
            Some(false),
        )
        .unwrap();
        assert!(!format!("{with_env:?}").contains("envsecret"));
        assert!(
            StoreConfig::new("redis://:a@h:1", Some("b".into()), None, None, None, None).is_err()
        );
        let bad = |t: Option<u64>, p: Option<&str>| {
            StoreConfig::new("redis://h:1", None, t, None, p.map(Into::into), None)
                .unwrap_err()
                .0
        };
        assert_eq!(bad(Some(0), None), "limits.rate_limit_store_timeout_ms");
        assert_eq!(
            bad(Some(10_001), None),
            "limits.rate_limit_store_timeout_ms"
        );
        assert_eq!(bad(None, Some("a b")), "limits.rate_limit_store_key_prefix");
        assert_eq!(bad(None, Some("{x}")), "limits.rate_limit_store_key_prefix");
        assert!(cfg("rediss://cache.example:6380/0").is_ok());
    }

    #[test]
    fn sentinel_and_cluster_urls() {
        let s =
            cfg("redis+sentinel://:pw-s3cret@10.0.0.1:26379,10.0.0.2:26379/mymaster/3").unwrap();
        assert_eq!(
            s.address(),
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/3"
        );
        assert!(!format!("{s:?}").contains("pw-s3cret"));
        match &s.topology {
            Topology::Sentinel {
                sentinels, master, ..
            } => {
                assert_eq!(master, "mymaster");
                // The password is for the master, not the sentinels.
                assert!(sentinels.iter().all(|u| !u.contains("pw-s3cret")));
            }
            _ => panic!("not sentinel"),
        }
        assert_eq!(
            cfg("redis+sentinel://h:26379/m").unwrap().address(),
            "redis+sentinel://h:26379/m/0"
        );
        let c = cfg("redis+cluster://:pw-s3cret@a:7000,b:7001").unwrap();
        assert_eq!(c.address(), "redis+cluster://a:7000,b:7001");
        assert!(!c.tls());
        assert!(cfg("rediss+cluster://a:7000").unwrap().tls());
        // A password in the URL and from the environment: refused.
        assert!(
            StoreConfig::new(
                "redis+cluster://:a@h:1",
                Some("b".into()),
                None,
                None,
                None,
                None
            )
            .is_err()
        );
        for bad in [
            "redis+sentinel://:pw-s3cret@h:26379",
            "redis+sentinel://:pw-s3cret@h:26379/",
            "redis+sentinel://:pw-s3cret@h:26379/m/x",
            "redis+sentinel://:pw-s3cret@h/m",
            "redis+cluster://:pw-s3cret@a:1,,b:2",
            "redis+cluster://:pw-s3cret@a:1/2",
            "redis+cluster://:pw-s3cret@",
            "redis+unix://:pw-s3cret@a:1",
        ] {
            let (what, why) = cfg(bad).unwrap_err();
            assert_eq!(what, "limits.rate_limit_store", "{bad}");
            assert!(!why.contains("pw-s3cret"), "{why}");
        }
    }
}
