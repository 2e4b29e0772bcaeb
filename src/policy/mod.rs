//! Callers and what each may have (DESIGN section 6).
//!
//! * [`Authenticator::authenticate`] turns what a request presents (a
//!   `Bearer` API key, a verified client-certificate name, the peer address)
//!   into an [`Identity`]. API keys are stored only as SHA-256 hashes and
//!   compared in constant time against every configured caller.
//! * [`Authenticator::authorize`] checks one request against the caller's
//!   policy and its rate limit, in one place for every transport, and
//!   returns a [`Permit`]: the only way to obtain the [`Limits`] the issuer
//!   needs.
//!
//! Denials name the rule that refused the request and nothing of other
//! callers' rules.

pub mod bounded;
mod compiled;
mod config;
pub mod jwt;
mod keys;
mod networks;
mod rate;
pub mod store;
pub mod throttle;

pub use compiled::*;
pub use config::*;
pub use keys::*;
pub use networks::*;
pub use rate::*;

use crate::domain::rules;
use crate::domain::{Draft, Limits, Permit};
use bounded::BoundedMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The result of authenticating a request, attached to it by the server
/// for the token endpoints, with the configuration snapshot it was checked
/// against: the same snapshot then authorizes and signs, so a reload in
/// between cannot pair one configuration's caller check with another's
/// credentials.
#[derive(Debug, Clone)]
pub struct Authn {
    /// Who the caller is, or why it was not accepted.
    pub identity: Result<Identity, Denial>,
    /// The snapshot the identity came from (`None`: the current one).
    pub snapshot: Option<Arc<crate::state::Snapshot>>,
    /// The rate limit's decision when it was already made (by the shared
    /// store or its fallback, in the server's guard): `Err` is the wait.
    /// [`Authenticator::admit_checked`] then applies it instead of taking
    /// a token in-process.
    pub rate_decision: Option<Result<(), Duration>>,
}

impl Authn {
    /// An identity checked against the current snapshot.
    pub fn new(identity: Result<Identity, Denial>) -> Self {
        Self {
            identity,
            snapshot: None,
            rate_decision: None,
        }
    }

    /// An identity checked against `snapshot`.
    pub fn pinned(
        identity: Result<Identity, Denial>,
        snapshot: Arc<crate::state::Snapshot>,
    ) -> Self {
        Self {
            identity,
            snapshot: Some(snapshot),
            rate_decision: None,
        }
    }
}

/// What a request presented to be identified, kept by a long-lived
/// request (`WatchToken`) to identify its caller again at each renewal:
/// the SHA-256 of its API key (never the key), or its JWT (verified again),
/// its client certificate's names, its client address.
#[derive(Clone)]
pub struct Credentials {
    /// The hash of the `Bearer` key, if one was sent.
    pub key: Option<ApiKeyHash>,
    /// The JWT, if the caller is a JWT caller (verified again at each
    /// renewal: the stream ends when it expires).
    pub jwt: Option<Arc<str>>,
    /// The verified client-certificate names (mTLS).
    pub tls_names: Arc<Vec<String>>,
    /// The client address.
    pub ip: IpAddr,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("jwt", &self.jwt.as_ref().map(|_| "[redacted]"))
            .field("tls_names", &self.tls_names)
            .field("ip", &self.ip)
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No or invalid credentials (UNAUTHENTICATED / 401).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A JWT failed a check (UNAUTHENTICATED / 401); never holds the token.
    #[error("JWT refused by check `{check}`: {detail}")]
    Jwt {
        /// The check that failed (`exp`, `aud`, `kid`, ...).
        check: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The caller's policy forbids it (PERMISSION_DENIED / 403).
    #[error("permission denied by rule `{rule}`: {detail}")]
    Policy {
        /// The policy key that refused.
        rule: &'static str,
        /// What was refused.
        detail: String,
    },
    /// Rate limit (RESOURCE_EXHAUSTED / 429 with Retry-After).
    #[error("rate limit exceeded; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// When a token is available again.
        retry_after: Duration,
    },
}

/// A configured caller.
#[derive(Debug)]
pub struct Caller {
    /// Name (shared, so a request can label its metrics without copying it).
    pub name: Arc<str>,
    key: Option<ApiKeyHash>,
    tls_names: Vec<String>,
    revoked: bool,
    /// Policy.
    pub policy: Policy,
    /// Requests of this caller in progress (the server's per-caller
    /// concurrency limit counts here).
    pub in_flight: std::sync::atomic::AtomicU32,
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No callers are configured: the service runs open.
    Open,
    /// A configured caller.
    Caller(Arc<Caller>),
    /// An unauthenticated client under the `[anonymous]` policy.
    Anonymous(IpAddr),
    /// A client that presented a JWT of a configured issuer.
    Jwt(Arc<jwt::JwtCaller>),
}

/// All the caller configuration, compiled.
#[derive(Debug)]
pub struct Authenticator {
    callers: Vec<Arc<Caller>>,
    jwt_issuers: Vec<Arc<jwt::JwtIssuer>>,
    anonymous: Option<Anonymous>,
    open: Policy,
}

impl Authenticator {
    /// Compiles the callers and the anonymous policy; errors name the caller and key.
    pub fn new(
        callers: &[CallerConfig],
        anonymous: Option<&AnonymousConfig>,
    ) -> Result<Self, String> {
        let mut out = Vec::with_capacity(callers.len());
        let mut names = std::collections::HashSet::new();
        for (i, c) in callers.iter().enumerate() {
            let at = format!("callers[{i}] ({:?})", c.name);
            if c.name.trim().is_empty() {
                return Err(format!("callers[{i}].name: must not be empty"));
            }
            if !names.insert(c.name.clone()) {
                return Err(format!("{at}: duplicate name"));
            }
            let key = c
                .api_key_sha256
                .as_deref()
                .map(ApiKeyHash::from_hex)
                .transpose()
                .map_err(|e| format!("{at}.api_key_sha256: {e}"))?;
            if key.is_none() && c.tls_client_names.is_empty() {
                return Err(format!("{at}: needs api_key_sha256 or tls_client_names"));
            }
            let policy = Policy::compile(&c.policy).map_err(|e| format!("{at}.{e}"))?;
            out.push(Arc::new(Caller {
                name: Arc::from(c.name.as_str()),
                key,
                tls_names: c.tls_client_names.clone(),
                revoked: c.revoked,
                policy,
                in_flight: std::sync::atomic::AtomicU32::new(0),
            }));
        }
        let anonymous = anonymous
            .map(|a| -> Result<Anonymous, String> {
                let roles = a
                    .roles
                    .clone()
                    .unwrap_or_else(|| vec!["subscriber".to_owned()]);
                let policy = Policy::compile(&PolicyConfig {
                    rpcs: Some(vec!["BuildRtcToken".to_owned()]),
                    kinds: Some(vec!["rtc".to_owned()]),
                    apps: None,
                    channels: a.channels.clone(),
                    allow_wildcard: Some(a.allow_wildcard),
                    uid_ranges: None,
                    accounts: None,
                    user_ids: None,
                    max_expire_seconds: Some(a.max_expire_seconds.unwrap_or(rules::DEFAULT_EXPIRE)),
                    roles: Some(roles),
                    rate_per_second: None,
                    burst: None,
                })
                .map_err(|e| format!("anonymous.{e}"))?;
                let rate = a.rate_per_second.unwrap_or(1.0);
                if !(rate.is_finite() && rate > 0.0) {
                    return Err("anonymous.rate_per_second: must be a positive number".to_owned());
                }
                let trusted_proxies = a
                    .trusted_proxies
                    .iter()
                    .map(|s| Cidr::parse(s))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("anonymous.trusted_proxies: {e}"))?;
                Ok(Anonymous {
                    policy,
                    rate,
                    burst: a.burst.unwrap_or(5).max(1),
                    trusted_proxies,
                    ipv6_prefix: 64,
                    buckets: Mutex::new(BoundedMap::new(MAX_TRACKED_IPS)),
                })
            })
            .transpose()?;
        Ok(Self {
            callers: out,
            jwt_issuers: Vec::new(),
            anonymous,
            open: Policy::unrestricted(),
        })
    }

    /// Adds the `[[jwt_issuers]]` (relative paths resolve against `base`);
    /// errors name the issuer and key.
    pub fn with_jwt_issuers(
        mut self,
        issuers: &[jwt::JwtIssuerConfig],
        base: &std::path::Path,
    ) -> Result<Self, String> {
        let mut names = std::collections::HashSet::new();
        for (i, c) in issuers.iter().enumerate() {
            let at = format!("jwt_issuers[{i}] ({:?})", c.name);
            if !names.insert(c.name.clone()) || self.callers.iter().any(|k| *k.name == *c.name) {
                return Err(format!(
                    "{at}: duplicate name (callers and issuers share names)"
                ));
            }
            let issuer = jwt::JwtIssuer::new(c, base).map_err(|e| format!("{at}.{e}"))?;
            self.jwt_issuers.push(Arc::new(issuer));
        }
        Ok(self)
    }

    /// Keeps the remote JWKS sources of `previous` whose settings did not
    /// change (a reload must not drop fetched keys), then starts the
    /// refresh of every remote source. Call before the snapshot is shared.
    pub fn adopt_keys(&mut self, previous: Option<&Self>) {
        for issuer in &mut self.jwt_issuers {
            let Some(new) = Arc::get_mut(issuer) else {
                continue;
            };
            let jwt::KeySource::Remote(r) = &mut new.keys else {
                continue;
            };
            let old = previous
                .into_iter()
                .flat_map(|p| p.jwt_issuers.iter())
                .find_map(|o| o.remote().filter(|o| o.identity == r.identity));
            if let Some(o) = old {
                *r = Arc::clone(o);
            }
            r.start();
        }
    }

    /// The configured JWT issuers.
    pub fn jwt_issuers(&self) -> &[Arc<jwt::JwtIssuer>] {
        &self.jwt_issuers
    }

    /// Readiness of the remote JWKS sources: `Err` while one has no usable
    /// keys; `Ok` with the warnings of those that cannot be refreshed.
    pub fn jwks_status(&self) -> Result<Vec<String>, String> {
        let mut stale = Vec::new();
        for i in &self.jwt_issuers {
            if let Some(r) = i.remote() {
                match r.status() {
                    jwt::KeyStatus::Fresh => {}
                    jwt::KeyStatus::Stale(w) => stale.push(format!("issuer {}: {w}", i.name)),
                    jwt::KeyStatus::Missing(e) => return Err(format!("issuer {}: {e}", i.name)),
                }
            }
        }
        Ok(stale)
    }

    /// Keys anonymous clients by their first `bits` bits when they use IPv6
    /// (default 64).
    #[must_use]
    pub fn with_client_ipv6_prefix(mut self, bits: u8) -> Self {
        if let Some(a) = &mut self.anonymous {
            a.ipv6_prefix = bits.min(128);
        }
        self
    }

    /// No callers and no anonymous policy: every request is allowed.
    pub fn open() -> Self {
        Self {
            callers: Vec::new(),
            jwt_issuers: Vec::new(),
            anonymous: None,
            open: Policy::unrestricted(),
        }
    }

    /// Whether no callers and no JWT issuers are configured (every request
    /// is allowed).
    pub fn is_open(&self) -> bool {
        self.callers.is_empty() && self.jwt_issuers.is_empty()
    }

    /// Identifies a request. `bearer` is the value after `Bearer `;
    /// `tls_names` are the verified client certificate's names; `get_endpoint`
    /// says whether the anonymous policy may apply.
    pub fn authenticate(
        &self,
        bearer: Option<&str>,
        tls_names: &[String],
        client_ip: IpAddr,
        get_endpoint: bool,
    ) -> Result<Identity, Denial> {
        match self.try_authenticate(bearer, tls_names, client_ip, get_endpoint) {
            Ok(i) => Ok(i),
            Err(jwt::JwtFail::Denied(d) | jwt::JwtFail::UnknownKid(_, d)) => Err(d),
        }
    }

    /// [`Self::authenticate`], saying when a JWT names a `kid` that a
    /// remote JWKS does not hold (the caller may refetch it and try once
    /// more).
    pub fn try_authenticate(
        &self,
        bearer: Option<&str>,
        tls_names: &[String],
        client_ip: IpAddr,
        get_endpoint: bool,
    ) -> Result<Identity, jwt::JwtFail> {
        if self.is_open() {
            return Ok(Identity::Open);
        }
        if let Some(token) =
            bearer.filter(|b| !self.jwt_issuers.is_empty() && jwt::looks_like_jwt(b))
        {
            // API keys this service generates have no dots; a key with
            // exactly two dots is still an API key when one matches.
            if let Some(c) = self.find_key(&ApiKeyHash::of_key(token)) {
                return Ok(Identity::Caller(c));
            }
            return jwt::authenticate(&self.jwt_issuers, token).map(|c| Identity::Jwt(Arc::new(c)));
        }
        let key = bearer.map(ApiKeyHash::of_key);
        self.authenticate_hashed(key.as_ref(), tls_names, client_ip, get_endpoint)
            .map_err(jwt::JwtFail::Denied)
    }

    /// The unrevoked caller holding the key hashed as `presented`, compared
    /// against every caller without stopping at a match.
    fn find_key(&self, presented: &ApiKeyHash) -> Option<Arc<Caller>> {
        let mut found: Option<&Arc<Caller>> = None;
        for c in &self.callers {
            if let Some(k) = &c.key {
                if k.ct_eq(presented) && found.is_none() {
                    found = Some(c);
                }
            }
        }
        found.filter(|c| !c.revoked).map(Arc::clone)
    }

    /// [`Self::authenticate`] of an API key already hashed, a client
    /// certificate or the anonymous policy (also a `WatchToken` renewal's).
    fn authenticate_hashed(
        &self,
        key: Option<&ApiKeyHash>,
        tls_names: &[String],
        client_ip: IpAddr,
        get_endpoint: bool,
    ) -> Result<Identity, Denial> {
        if let Some(key) = key {
            return self
                .find_key(key)
                .map(Identity::Caller)
                .ok_or(Denial::Unauthenticated("invalid or revoked API key"));
        }
        if !tls_names.is_empty() {
            let found = self
                .callers
                .iter()
                .find(|c| c.tls_names.iter().any(|n| tls_names.contains(n)));
            return match found {
                Some(c) if !c.revoked => Ok(Identity::Caller(Arc::clone(c))),
                _ => Err(Denial::Unauthenticated(
                    "the client certificate does not identify a configured caller",
                )),
            };
        }
        if get_endpoint && self.anonymous.is_some() {
            return Ok(Identity::Anonymous(client_ip));
        }
        Err(Denial::Unauthenticated(
            "credentials required: send `authorization: Bearer <key or JWT>` or a client certificate",
        ))
    }

    /// Identifies again, against this (possibly newer) configuration, the
    /// caller that presented `creds` and was `was` when its stream opened
    /// (a `WatchToken` renewal). A caller that is gone, revoked, whose key
    /// or certificate no longer identifies it, or that now identifies
    /// another caller, is refused (UNAUTHENTICATED); so is open mode once
    /// callers are configured.
    pub fn reauthenticate(&self, was: &Identity, creds: &Credentials) -> Result<Identity, Denial> {
        match was {
            Identity::Open if self.is_open() => Ok(Identity::Open),
            Identity::Open => Err(Denial::Unauthenticated(
                "the service now requires credentials: reconnect with them",
            )),
            Identity::Anonymous(_) => Err(Denial::Unauthenticated("credentials required")),
            Identity::Jwt(old) => {
                // Verified again (expiry, issuer, keys, claims): a stream
                // lives no longer than the JWT it was opened with.
                let Some(token) = creds.jwt.as_deref() else {
                    return Err(Denial::Unauthenticated("credentials required"));
                };
                match jwt::authenticate(&self.jwt_issuers, token) {
                    Ok(c) if c.name == old.name => Ok(Identity::Jwt(Arc::new(c))),
                    Ok(_) => Err(Denial::Unauthenticated(
                        "the credentials of this stream no longer identify its caller",
                    )),
                    Err(jwt::JwtFail::Denied(d) | jwt::JwtFail::UnknownKid(_, d)) => Err(d),
                }
            }
            Identity::Caller(old) => {
                if self.is_open() {
                    return Err(Denial::Unauthenticated(
                        "the caller of this stream is no longer configured",
                    ));
                }
                let now = self.authenticate_hashed(
                    creds.key.as_ref(),
                    &creds.tls_names,
                    creds.ip,
                    false,
                )?;
                match &now {
                    Identity::Caller(c) if c.name == old.name => Ok(now),
                    _ => Err(Denial::Unauthenticated(
                        "the credentials of this stream no longer identify its caller",
                    )),
                }
            }
        }
    }

    /// The client IP for the anonymous rate limit: the peer, or, when the
    /// peer is a trusted proxy, the right-most `X-Forwarded-For` address that
    /// is not a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, x_forwarded_for: Option<&str>) -> IpAddr {
        self.client_ip_with(peer, || x_forwarded_for)
    }

    /// [`Self::client_ip`], reading `X-Forwarded-For` only when the peer is
    /// a trusted proxy (most requests do not need the header lookup).
    pub fn client_ip_with<'h>(
        &self,
        peer: IpAddr,
        x_forwarded_for: impl FnOnce() -> Option<&'h str>,
    ) -> IpAddr {
        let Some(anon) = &self.anonymous else {
            return peer;
        };
        let trusted = |ip: IpAddr| anon.trusted_proxies.iter().any(|c| c.contains(ip));
        if !trusted(peer) {
            return peer;
        }
        let mut ip = peer;
        if let Some(xff) = x_forwarded_for() {
            for part in xff.rsplit(',') {
                match part.trim().parse::<IpAddr>() {
                    Ok(addr) => {
                        ip = addr;
                        if !trusted(addr) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        ip
    }

    /// The first check of every call, before any input is read: the
    /// caller may call `rpc`, and has a request left in its rate limit (so
    /// refused and inspection requests count too).
    pub fn admit(&self, who: &Identity, rpc: &str) -> Result<(), Denial> {
        self.admit_checked(who, rpc, None)
    }

    /// [`Self::admit`]; with a `decision` already made (by the shared
    /// store, see [`Authn::rate_decision`]) that one instead of the
    /// in-process bucket.
    pub fn admit_checked(
        &self,
        who: &Identity,
        rpc: &str,
        decision: Option<Result<(), Duration>>,
    ) -> Result<(), Denial> {
        let policy = self.policy_of(who)?;
        policy.check_rpc(rpc)?;
        let limited = match (decision, who) {
            (Some(d), _) => d,
            (None, Identity::Anonymous(ip)) => self
                .anonymous
                .as_ref()
                .map_or(Ok(()), |a| a.bucket(*ip).try_acquire()),
            // A JWT caller's subject has a bucket of its own.
            (None, Identity::Jwt(j)) if j.bucket.is_some() => {
                j.bucket.as_ref().map_or(Ok(()), |b| b.try_acquire())
            }
            (None, _) => policy
                .bucket
                .as_ref()
                .map_or(Ok(()), TokenBucket::try_acquire),
        };
        limited.map_err(|retry_after| Denial::RateLimited { retry_after })
    }

    /// A token from `who`'s in-process bucket, if it has one.
    pub fn take_local(&self, who: &Identity) -> Result<(), Duration> {
        match who {
            Identity::Anonymous(ip) => self
                .anonymous
                .as_ref()
                .map_or(Ok(()), |a| a.bucket(*ip).try_acquire()),
            Identity::Jwt(j) if j.bucket.is_some() => {
                j.bucket.as_ref().map_or(Ok(()), |b| b.try_acquire())
            }
            _ => self
                .policy_of(who)
                .ok()
                .and_then(|p| p.bucket.as_ref())
                .map_or(Ok(()), TokenBucket::try_acquire),
        }
    }

    /// The bucket `who` takes a token from for `rpc` in the shared store:
    /// none when it has no rate limit, or when `rpc` is not allowed (the
    /// request is refused later without costing a token, as in-process).
    pub fn store_bucket<'a>(&'a self, who: &'a Identity, rpc: &str) -> Option<store::Bucket<'a>> {
        let policy = self.policy_of(who).ok()?;
        policy.check_rpc(rpc).ok()?;
        match who {
            Identity::Anonymous(ip) => self.anonymous.as_ref().map(|a| store::Bucket {
                key: store::BucketKey::Client(networks::client_key(*ip, a.ipv6_prefix)),
                rate: a.rate,
                burst: a.burst,
            }),
            Identity::Caller(c) => c.policy.bucket.as_ref().map(|b| store::Bucket {
                key: store::BucketKey::Caller(&c.name),
                rate: b.rate,
                burst: b.burst(),
            }),
            // A JWT caller: its subject's bucket, else its policy's.
            Identity::Jwt(j) => {
                j.bucket
                    .as_deref()
                    .or(j.policy.bucket.as_ref())
                    .map(|b| store::Bucket {
                        key: store::BucketKey::Subject(&j.name),
                        rate: b.rate,
                        burst: b.burst(),
                    })
            }
            Identity::Open => None,
        }
    }

    /// Checks every draft against the identity's policy; the permit it
    /// returns is what the issuer signs with.
    pub fn authorize(&self, who: &Identity, drafts: &[&Draft<'_>]) -> Result<Permit, Denial> {
        let policy = self.policy_of(who)?;
        for d in drafts {
            policy.check(d)?;
        }
        Ok(Permit::new(policy.max_expire()))
    }

    /// The limits that shape the issuer's defaults for `who`.
    pub fn limits(&self, who: &Identity) -> Limits {
        self.policy_of(who)
            .map_or_else(|_| Limits::default(), Policy::limits)
    }

    fn policy_of<'a>(&'a self, who: &'a Identity) -> Result<&'a Policy, Denial> {
        match who {
            Identity::Open => Ok(&self.open),
            Identity::Caller(c) => Ok(&c.policy),
            Identity::Jwt(j) => Ok(&j.policy),
            Identity::Anonymous(_) => self
                .anonymous
                .as_ref()
                .map(|a| &a.policy)
                .ok_or(Denial::Unauthenticated("credentials required")),
        }
    }
}

impl Identity {
    /// The caller's name as a shared string, for metric labels (`None` in
    /// open mode, where the label is `open`).
    pub fn label(&self) -> Option<Arc<str>> {
        match self {
            Self::Open => None,
            Self::Caller(c) => Some(Arc::clone(&c.name)),
            // The issuer, not the subject: metric labels stay bounded.
            Self::Jwt(j) => Some(Arc::clone(&j.issuer.name)),
            Self::Anonymous(_) => {
                static ANON: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
                Some(Arc::clone(ANON.get_or_init(|| Arc::from("anonymous"))))
            }
        }
    }

    /// The caller's name for logs, metrics and audit.
    pub fn name(&self) -> &str {
        match self {
            Self::Open => "open",
            Self::Caller(c) => &c.name,
            Self::Jwt(j) => &j.name,
            Self::Anonymous(_) => "anonymous",
        }
    }

    /// The identity a JWT caller's tokens are bound to.
    pub fn bound(&self) -> Option<&jwt::Bound> {
        match self {
            Self::Jwt(j) => j.bound.as_ref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
