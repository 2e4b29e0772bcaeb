//! Caller identity and per-caller policy (DESIGN section 6).
//!
//! * [`Authenticator::authenticate`] turns what a request presents (a
//!   `Bearer` API key, a verified client-certificate name, the peer address)
//!   into an [`Identity`]. API keys are stored only as SHA-256 hashes and
//!   compared in constant time against every configured caller.
//! * [`Identity::authorize`] checks one request against the caller's policy
//!   (RPCs, token kinds, apps, channel globs, wildcards, uid ranges,
//!   accounts, roles, maximum expiry) and its rate limit, in one place for
//!   every transport, and returns a [`Permit`]: the only way to obtain the
//!   [`Limits`] the issuer needs.
//!
//! Denials name the rule that refused the request and nothing of other
//! callers' rules.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_token::Role;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::issuer::{
    AgentSessionRequest, ApaasRoomUserRequest, GenericRequest, Limits, RtcPrivilegesRequest,
    RtcRequest, RtcRtmRequest, RtcUser, RtmRequest, TokenKind,
};
use crate::rules;

/// SHA-256 of an API key, as stored in the config (64 lowercase hex characters).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
    /// The hash of a key as presented after `Bearer ` (its UTF-8 bytes).
    pub fn of_key(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// Parses 64 hexadecimal characters.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("must be 64 hexadecimal characters (the SHA-256 of the key)".to_owned());
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2).unwrap_or("00"), 16)
                .map_err(|_| "must be hexadecimal".to_owned())?;
        }
        Ok(Self(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeyHash([redacted])")
    }
}

/// A new random API key (256 bits, URL-safe base64 with a `ta_` prefix)
/// and its hash for the config.
pub fn generate_key() -> Result<(String, ApiKeyHash), getrandom::Error> {
    use base64::Engine as _;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)?;
    let key = format!(
        "ta_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let hash = ApiKeyHash::of_key(&key);
    Ok((key, hash))
}

/// Matches `text` against a glob where only `*` (any run) and `?` (one
/// byte) are special; every other character is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// An inclusive uid range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange(pub u32, pub u32);

impl UidRange {
    /// Parses `N` or `LOW-HIGH`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let num = |x: &str| {
            rules::parse_uid("uid_ranges", x.trim()).map_err(|v| format!("{s:?}: {}", v.rule))
        };
        match s.split_once('-') {
            None => {
                let n = num(s)?;
                Ok(Self(n, n))
            }
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("{s:?}: the low end is above the high end"));
                }
                Ok(Self(a, b))
            }
        }
    }

    fn contains(self, uid: u32) -> bool {
        (self.0..=self.1).contains(&uid)
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: rate.max(0.0),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another thread panicked mid-update of
        // two plain numbers; the values are still usable.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.rate).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            Ok(())
        } else if self.rate > 0.0 {
            Err(Duration::from_secs_f64((1.0 - s.0) / self.rate))
        } else {
            Err(Duration::from_secs(3600))
        }
    }

    fn is_full(&self, now: Instant) -> bool {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 + now.saturating_duration_since(s.1).as_secs_f64() * self.rate >= self.burst
    }
}

/// What a caller may do. Absent fields mean "no restriction of that kind".
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// RPC names (e.g. `BuildRtcToken`; the GET endpoint counts as `BuildRtcToken`).
    pub rpcs: Option<Vec<String>>,
    /// Token kinds (`rtc`, `rtc_privileges`, `rtc_rtm`, `rtm`, `rtm2`, `chat_user`,
    /// `chat_app`, `fpa`, `apaas_room_user`, `apaas_user`, `apaas_app`, `generic`,
    /// `agent_session`).
    pub kinds: Option<Vec<String>>,
    /// App ids this caller may use.
    pub apps: Option<Vec<String>>,
    /// Channel-name globs (`*` and `?` special).
    pub channels: Option<Vec<String>>,
    /// Whether channel `""` or uid 0 (wildcards) may be requested.
    pub allow_wildcard: Option<bool>,
    /// Numeric uid ranges, `"N"` or `"LOW-HIGH"`.
    pub uid_ranges: Option<Vec<String>>,
    /// String-account globs. With `uid_ranges` set and this absent, accounts are refused.
    pub accounts: Option<Vec<String>>,
    /// Longest token lifetime, seconds.
    pub max_expire_seconds: Option<u32>,
    /// RTC roles: `publisher`, `subscriber`.
    pub roles: Option<Vec<String>>,
    /// Token bucket refill rate, requests per second.
    pub rate_per_second: Option<f64>,
    /// Token bucket size (default: the rate, at least 1).
    pub burst: Option<u32>,
}

/// One `[[callers]]` entry of the config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// Name (for logs, metrics and audit).
    pub name: String,
    /// SHA-256 of the caller's API key, hex.
    pub api_key_sha256: Option<String>,
    /// Client-certificate names (DNS SAN or subject CN) that identify this caller over mTLS.
    #[serde(default)]
    pub tls_client_names: Vec<String>,
    /// A revoked caller is refused like an unknown one.
    #[serde(default)]
    pub revoked: bool,
    /// The caller's policy.
    #[serde(flatten)]
    pub policy: PolicyConfig,
}

/// The optional `[anonymous]` policy: unauthenticated browsers may use the
/// GET endpoint within these limits, rate-limited per client IP.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnonymousConfig {
    /// Channel-name globs.
    pub channels: Option<Vec<String>>,
    /// Whether channel `""` or uid 0 may be requested (default false).
    #[serde(default)]
    pub allow_wildcard: bool,
    /// Roles (default: subscriber only).
    pub roles: Option<Vec<String>>,
    /// Longest token lifetime (default 3600).
    pub max_expire_seconds: Option<u32>,
    /// Per-IP requests per second (default 1).
    pub rate_per_second: Option<f64>,
    /// Per-IP bucket size (default 5).
    pub burst: Option<u32>,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is trusted.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// A compiled policy.
#[derive(Debug)]
pub struct Policy {
    rpcs: Option<Vec<String>>,
    kinds: Option<Vec<String>>,
    apps: Option<Vec<String>>,
    channels: Option<Vec<String>>,
    allow_wildcard: bool,
    uid_ranges: Option<Vec<UidRange>>,
    accounts: Option<Vec<String>>,
    max_expire: u32,
    roles: Option<Vec<Role>>,
    bucket: Option<TokenBucket>,
}

const KINDS: [&str; 13] = [
    "rtc",
    "rtc_privileges",
    "rtc_rtm",
    "rtm",
    "rtm2",
    "chat_user",
    "chat_app",
    "fpa",
    "apaas_room_user",
    "apaas_user",
    "apaas_app",
    "generic",
    "agent_session",
];

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "publisher" => Ok(Role::Publisher),
        "subscriber" => Ok(Role::Subscriber),
        other => Err(format!("role {other:?}: use publisher or subscriber")),
    }
}

impl Policy {
    /// No restrictions (open mode).
    pub fn unrestricted() -> Self {
        Self {
            rpcs: None,
            kinds: None,
            apps: None,
            channels: None,
            allow_wildcard: true,
            uid_ranges: None,
            accounts: None,
            max_expire: rules::MAX_EXPIRE,
            roles: None,
            bucket: None,
        }
    }

    /// Compiles and validates a policy; errors name the key.
    pub fn compile(c: &PolicyConfig) -> Result<Self, String> {
        if let Some(kinds) = &c.kinds {
            for k in kinds {
                if !KINDS.contains(&k.as_str()) {
                    return Err(format!(
                        "kinds: unknown kind {k:?} (known: {})",
                        KINDS.join(", ")
                    ));
                }
            }
        }
        let uid_ranges = c
            .uid_ranges
            .as_ref()
            .map(|v| {
                v.iter()
                    .map(|s| UidRange::parse(s))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|e| format!("uid_ranges: {e}"))?;
        let roles = c
            .roles
            .as_ref()
            .map(|v| {
                v.iter()
                    .map(|s| parse_role(s))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|e| format!("roles: {e}"))?;
        let max_expire = match c.max_expire_seconds {
            Some(m) if !(1..=rules::MAX_EXPIRE).contains(&m) => {
                return Err(format!(
                    "max_expire_seconds: must be 1..={}",
                    rules::MAX_EXPIRE
                ));
            }
            Some(m) => m,
            None => rules::MAX_EXPIRE,
        };
        let bucket = match (c.rate_per_second, c.burst) {
            (Some(r), _) if !(r.is_finite() && r > 0.0) => {
                return Err("rate_per_second: must be a positive number".to_owned());
            }
            (Some(r), b) => Some(TokenBucket::new(r, b.unwrap_or(r.ceil() as u32).max(1))),
            (None, Some(_)) => return Err("burst: needs rate_per_second".to_owned()),
            (None, None) => None,
        };
        Ok(Self {
            rpcs: c.rpcs.clone(),
            kinds: c.kinds.clone(),
            apps: c.apps.clone(),
            channels: c.channels.clone(),
            allow_wildcard: c.allow_wildcard.unwrap_or(true),
            uid_ranges,
            accounts: c.accounts.clone(),
            max_expire,
            roles,
            bucket,
        })
    }

    /// The limits the issuer applies for this caller.
    pub fn limits(&self) -> Limits {
        Limits {
            max_expire: self.max_expire,
        }
    }

    /// Checks a request; `Err` names the rule.
    pub fn check(&self, req: &AccessRequest<'_>) -> Result<(), Denial> {
        let deny = |rule: &'static str, detail: String| Err(Denial::Policy { rule, detail });
        if let Some(rpcs) = &self.rpcs {
            if !rpcs.iter().any(|r| r == req.rpc) {
                return deny("rpcs", format!("this caller may not call {}", req.rpc));
            }
        }
        if let Some(kinds) = &self.kinds {
            if !kinds.iter().any(|k| k == req.kind.as_str()) {
                return deny(
                    "kinds",
                    format!("this caller may not issue {} tokens", req.kind.as_str()),
                );
            }
        }
        if let Some(apps) = &self.apps {
            if !apps.iter().any(|a| a == req.app_id) {
                return deny("apps", "this caller may not use this app".to_owned());
            }
        }
        for ch in &req.channels {
            if ch.is_empty() {
                if !self.allow_wildcard {
                    return deny(
                        "allow_wildcard",
                        "this caller may not request the wildcard channel \"\"".to_owned(),
                    );
                }
                continue;
            }
            if let Some(globs) = &self.channels {
                if !globs.iter().any(|g| glob_match(g, ch)) {
                    return deny(
                        "channels",
                        format!("channel {ch:?} is not allowed for this caller"),
                    );
                }
            }
        }
        for u in &req.users {
            match u {
                RtcUser::Uid(0) if !self.allow_wildcard => {
                    return deny(
                        "allow_wildcard",
                        "this caller may not request uid 0 (any user)".to_owned(),
                    );
                }
                RtcUser::Uid(0) => {}
                RtcUser::Uid(uid) => {
                    if let Some(ranges) = &self.uid_ranges {
                        if !ranges.iter().any(|r| r.contains(*uid)) {
                            return deny(
                                "uid_ranges",
                                format!("uid {uid} is not allowed for this caller"),
                            );
                        }
                    }
                }
                RtcUser::Account(a) => match (&self.accounts, &self.uid_ranges) {
                    (Some(globs), _) if !globs.iter().any(|g| glob_match(g, a)) => {
                        return deny(
                            "accounts",
                            format!("account {a:?} is not allowed for this caller"),
                        );
                    }
                    (None, Some(_)) => {
                        return deny(
                            "uid_ranges",
                            "this caller may only use numeric uids in its ranges".to_owned(),
                        );
                    }
                    _ => {}
                },
            }
        }
        if let Some(roles) = &self.roles {
            for r in &req.roles {
                if !roles.contains(r) {
                    let name = match r {
                        Role::Publisher => "publisher",
                        Role::Subscriber => "subscriber",
                    };
                    return deny("roles", format!("this caller may not request role {name}"));
                }
            }
        }
        // Out-of-range values are bad input, reported by the issuer's rules.
        if let Some(e) = req.expire.filter(|e| (1..=rules::MAX_EXPIRE).contains(e)) {
            if e > self.max_expire {
                return deny(
                    "max_expire_seconds",
                    format!(
                        "{e} seconds is more than this caller's maximum of {}",
                        self.max_expire
                    ),
                );
            }
        }
        if let Some(b) = &self.bucket {
            b.try_acquire()
                .map_err(|retry_after| Denial::RateLimited { retry_after })?;
        }
        Ok(())
    }
}

/// What a request asks for, as far as policy is concerned.
#[derive(Debug, Clone, Default)]
pub struct AccessRequest<'a> {
    /// The RPC name (`BuildRtcToken` for the GET endpoint).
    pub rpc: &'a str,
    /// The token kind.
    pub kind: TokenKind,
    /// The app id the request resolves to.
    pub app_id: &'a str,
    /// Every channel name the token would grant.
    pub channels: Vec<&'a str>,
    /// Every RTC user the token would grant.
    pub users: Vec<RtcUser>,
    /// Every RTC role the token would grant.
    pub roles: Vec<Role>,
    /// The requested token lifetime (`None`: the default, capped by the caller's maximum).
    pub expire: Option<u32>,
}

impl<'a> AccessRequest<'a> {
    /// A request that grants no channel or user (RTM, Chat, FPA, APaaS).
    pub fn plain(rpc: &'a str, kind: TokenKind, expire: Option<u32>) -> Self {
        Self {
            rpc,
            kind,
            expire,
            ..Self::default()
        }
    }

    /// `BuildRtcToken` and the GET endpoint.
    pub fn rtc(rpc: &'a str, r: &'a RtcRequest) -> Self {
        Self {
            rpc,
            kind: TokenKind::Rtc,
            app_id: "",
            channels: vec![&r.channel_name],
            users: vec![r.user.clone()],
            roles: vec![r.role],
            expire: r.common.expire,
        }
    }

    /// `BuildRtcTokenWithPrivileges`: grants publishing, so counts as publisher.
    pub fn rtc_privileges(rpc: &'a str, r: &'a RtcPrivilegesRequest) -> Self {
        Self {
            rpc,
            kind: TokenKind::RtcPrivileges,
            app_id: "",
            channels: vec![&r.channel_name],
            users: vec![r.user.clone()],
            roles: vec![Role::Publisher],
            expire: r.common.expire,
        }
    }

    /// `BuildRtcRtmToken`.
    pub fn rtc_rtm(rpc: &'a str, r: &'a RtcRtmRequest) -> Self {
        Self {
            rpc,
            kind: TokenKind::RtcRtm,
            app_id: "",
            channels: vec![&r.channel_name],
            users: vec![r.user.clone()],
            roles: vec![r.role],
            expire: r.common.expire,
        }
    }

    /// `BuildRtmToken`.
    pub fn rtm(rpc: &'a str, r: &'a RtmRequest) -> Self {
        let kind = if r.rtm2 || !r.permissions.is_empty() {
            TokenKind::Rtm2
        } else {
            TokenKind::Rtm
        };
        Self::plain(rpc, kind, r.common.expire)
    }

    /// APaaS room user.
    pub fn apaas_room_user(rpc: &'a str, r: &'a ApaasRoomUserRequest) -> Self {
        Self::plain(rpc, TokenKind::ApaasRoomUser, r.common.expire)
    }

    /// `BuildToken`: every channel and uid of its RTC, Streaming and FCDN
    /// services; publisher when any RTC service has a publish privilege.
    pub fn generic(rpc: &'a str, r: &'a GenericRequest) -> Self {
        use agora_token::Payload;
        let mut a = Self::plain(rpc, TokenKind::Generic, r.common.expire);
        let user = |b: &[u8]| -> RtcUser {
            match std::str::from_utf8(b) {
                Ok("") => RtcUser::Uid(0),
                Ok(s) if s.bytes().all(|c| c.is_ascii_digit()) => s
                    .parse()
                    .map_or_else(|_| RtcUser::Account(s.to_owned()), RtcUser::Uid),
                Ok(s) => RtcUser::Account(s.to_owned()),
                Err(_) => RtcUser::Account(String::from_utf8_lossy(b).into_owned()),
            }
        };
        for s in &r.services {
            match &s.payload {
                Payload::Rtc { channel_name, uid } => {
                    a.channels
                        .push(std::str::from_utf8(channel_name).unwrap_or("\u{fffd}"));
                    a.users.push(user(uid));
                    let publishes = (2..=4).any(|id| s.privileges.get(id).is_some());
                    a.roles.push(if publishes {
                        Role::Publisher
                    } else {
                        Role::Subscriber
                    });
                }
                Payload::Streaming {
                    channel_name,
                    account,
                }
                | Payload::Fcdn {
                    channel_name,
                    account,
                } => {
                    a.channels
                        .push(std::str::from_utf8(channel_name).unwrap_or("\u{fffd}"));
                    a.users.push(user(account));
                }
                _ => {}
            }
        }
        a
    }

    /// `BuildAgentSession`: the channel, both users, publisher.
    pub fn agent_session(rpc: &'a str, r: &'a AgentSessionRequest) -> Self {
        let user = |s: &str| -> Option<RtcUser> {
            if r.string_uid {
                Some(RtcUser::Account(s.to_owned()))
            } else {
                rules::parse_uid("uid", s).ok().map(RtcUser::Uid)
            }
        };
        Self {
            rpc,
            kind: TokenKind::AgentSession,
            app_id: "",
            channels: vec![&r.channel_name],
            users: [user(&r.agent_uid), user(&r.user_uid)]
                .into_iter()
                .flatten()
                .collect(),
            roles: vec![Role::Publisher],
            expire: r.common.expire,
        }
    }
}

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
}

impl Authn {
    /// An identity checked against the current snapshot.
    pub fn new(identity: Result<Identity, Denial>) -> Self {
        Self {
            identity,
            snapshot: None,
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
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No or invalid credentials (UNAUTHENTICATED / 401).
    #[error("{0}")]
    Unauthenticated(&'static str),
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
}

/// Per-IP buckets of the anonymous policy, bounded in number.
#[derive(Debug)]
struct Anonymous {
    policy: Policy,
    rate: f64,
    burst: u32,
    trusted_proxies: Vec<Cidr>,
    buckets: Mutex<HashMap<IpAddr, Arc<TokenBucket>>>,
}

/// Most client IPs the anonymous rate limiter tracks at once.
const MAX_TRACKED_IPS: usize = 100_000;

impl Anonymous {
    fn bucket(&self, ip: IpAddr) -> Arc<TokenBucket> {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED_IPS && !map.contains_key(&ip) {
            // Forget clients whose buckets have refilled: they are back to
            // the initial state anyway.
            let now = Instant::now();
            map.retain(|_, b| !b.is_full(now));
            if map.len() >= MAX_TRACKED_IPS {
                map.clear();
            }
        }
        Arc::clone(
            map.entry(ip)
                .or_insert_with(|| Arc::new(TokenBucket::new(self.rate, self.burst))),
        )
    }
}

/// An address block, `ADDR` or `ADDR/BITS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/BITS`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (
                a,
                Some(
                    b.parse::<u8>()
                        .map_err(|_| format!("{s:?}: bad prefix length"))?,
                ),
            ),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(format!("{s:?}: prefix longer than the address"));
        }
        Ok(Self { addr, bits })
    }

    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
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
}

/// The result of a successful authorization; the limits it carries are
/// what the issuer applies.
#[derive(Debug, Clone, Copy)]
pub struct Permit {
    limits: Limits,
}

impl Permit {
    /// The limits for the issuer.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// All the caller configuration, compiled.
#[derive(Debug)]
pub struct Authenticator {
    callers: Vec<Arc<Caller>>,
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
                    buckets: Mutex::new(HashMap::new()),
                })
            })
            .transpose()?;
        Ok(Self {
            callers: out,
            anonymous,
            open: Policy::unrestricted(),
        })
    }

    /// No callers and no anonymous policy: every request is allowed.
    pub fn open() -> Self {
        Self {
            callers: Vec::new(),
            anonymous: None,
            open: Policy::unrestricted(),
        }
    }

    /// Whether no callers are configured (every request is allowed).
    pub fn is_open(&self) -> bool {
        self.callers.is_empty()
    }

    /// The names of the configured callers.
    pub fn caller_names(&self) -> impl Iterator<Item = &str> {
        self.callers.iter().map(|c| &*c.name)
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
        if self.is_open() {
            return Ok(Identity::Open);
        }
        if let Some(key) = bearer {
            let presented = ApiKeyHash::of_key(key);
            // Compare against every caller, without stopping at a match.
            let mut found: Option<&Arc<Caller>> = None;
            for c in &self.callers {
                if let Some(k) = &c.key {
                    if k.ct_eq(&presented) && found.is_none() {
                        found = Some(c);
                    }
                }
            }
            return match found {
                Some(c) if !c.revoked => Ok(Identity::Caller(Arc::clone(c))),
                _ => Err(Denial::Unauthenticated("invalid or revoked API key")),
            };
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
            "credentials required: send `authorization: Bearer <key>` or a client certificate",
        ))
    }

    /// The client IP for the anonymous rate limit: the peer, or, when the
    /// peer is a trusted proxy, the right-most `X-Forwarded-For` address that
    /// is not a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, x_forwarded_for: Option<&str>) -> IpAddr {
        let Some(anon) = &self.anonymous else {
            return peer;
        };
        let trusted = |ip: IpAddr| anon.trusted_proxies.iter().any(|c| c.contains(ip));
        if !trusted(peer) {
            return peer;
        }
        let mut ip = peer;
        if let Some(xff) = x_forwarded_for {
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

    /// Checks a request against the identity's policy and rate limit.
    pub fn authorize(&self, who: &Identity, req: &AccessRequest<'_>) -> Result<Permit, Denial> {
        match who {
            Identity::Open => {
                self.open.check(req)?;
                Ok(Permit {
                    limits: self.open.limits(),
                })
            }
            Identity::Caller(c) => {
                c.policy.check(req)?;
                Ok(Permit {
                    limits: c.policy.limits(),
                })
            }
            Identity::Anonymous(ip) => {
                let Some(anon) = &self.anonymous else {
                    return Err(Denial::Unauthenticated("credentials required"));
                };
                anon.policy.check(req)?;
                anon.bucket(*ip)
                    .try_acquire()
                    .map_err(|retry_after| Denial::RateLimited { retry_after })?;
                Ok(Permit {
                    limits: anon.policy.limits(),
                })
            }
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
            Self::Anonymous(_) => "anonymous",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_treat_only_star_and_question_mark_as_special() {
        assert!(glob_match("agent-*", "agent-42"));
        assert!(glob_match("agent-*", "agent-"));
        assert!(!glob_match("agent-*", "agent"));
        assert!(glob_match("support-?", "support-7"));
        assert!(!glob_match("support-?", "support-77"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(glob_match("[x]{y}^!", "[x]{y}^!"));
        assert!(!glob_match("[ab]", "a"));
        assert!(!glob_match("", "a"));
    }

    #[test]
    fn api_keys_hash_and_compare() {
        let (key, hash) = generate_key().unwrap();
        assert!(key.starts_with("ta_") && key.len() > 40);
        assert_eq!(ApiKeyHash::from_hex(&hash.to_hex()).unwrap(), hash);
        assert!(ApiKeyHash::of_key(&key).ct_eq(&hash));
        assert!(!ApiKeyHash::of_key("other").ct_eq(&hash));
        assert!(ApiKeyHash::from_hex("abc").is_err());
        assert!(!format!("{hash:?}").contains(&hash.to_hex()));
    }

    #[test]
    fn token_bucket_refills() {
        let b = TokenBucket::new(10.0, 2);
        let t0 = Instant::now();
        assert!(b.try_acquire_at(t0).is_ok());
        assert!(b.try_acquire_at(t0).is_ok());
        let wait = b.try_acquire_at(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        assert!(b.try_acquire_at(t0 + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn cidr_and_forwarded_for() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        let a = Authenticator::new(
            &[],
            Some(&AnonymousConfig {
                trusted_proxies: vec!["127.0.0.1".into()],
                ..Default::default()
            }),
        )
        .unwrap();
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(
            a.client_ip(proxy, Some("198.51.100.1, 203.0.113.5")),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(a.client_ip(other, Some("203.0.113.5")), other);
        assert_eq!(a.client_ip(proxy, Some("garbage")), proxy);
    }

    fn caller(policy: PolicyConfig) -> (Authenticator, String) {
        let (key, hash) = generate_key().unwrap();
        let a = Authenticator::new(
            &[CallerConfig {
                name: "svc".into(),
                api_key_sha256: Some(hash.to_hex()),
                policy,
                ..Default::default()
            }],
            None,
        )
        .unwrap();
        (a, key)
    }

    #[test]
    fn policy_rules_each_deny_by_name() {
        let (a, key) = caller(PolicyConfig {
            rpcs: Some(vec!["BuildRtcToken".into()]),
            apps: Some(vec!["app1".into()]),
            channels: Some(vec!["agent-*".into()]),
            allow_wildcard: Some(false),
            uid_ranges: Some(vec!["1000-1999".into()]),
            max_expire_seconds: Some(600),
            roles: Some(vec!["subscriber".into()]),
            ..Default::default()
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let who = a.authenticate(Some(&key), &[], ip, false).unwrap();
        let ok = AccessRequest {
            rpc: "BuildRtcToken",
            kind: TokenKind::Rtc,
            app_id: "app1",
            channels: vec!["agent-1"],
            users: vec![RtcUser::Uid(1500)],
            roles: vec![Role::Subscriber],
            expire: Some(600),
        };
        assert_eq!(a.authorize(&who, &ok).unwrap().limits().max_expire, 600);
        let rule = |r: AccessRequest<'_>| match a.authorize(&who, &r) {
            Err(Denial::Policy { rule, .. }) => rule,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            rule(AccessRequest {
                rpc: "BuildRtmToken",
                ..ok.clone()
            }),
            "rpcs"
        );
        assert_eq!(
            rule(AccessRequest {
                app_id: "app2",
                ..ok.clone()
            }),
            "apps"
        );
        assert_eq!(
            rule(AccessRequest {
                channels: vec!["other"],
                ..ok.clone()
            }),
            "channels"
        );
        assert_eq!(
            rule(AccessRequest {
                channels: vec![""],
                ..ok.clone()
            }),
            "allow_wildcard"
        );
        assert_eq!(
            rule(AccessRequest {
                users: vec![RtcUser::Uid(0)],
                ..ok.clone()
            }),
            "allow_wildcard"
        );
        assert_eq!(
            rule(AccessRequest {
                users: vec![RtcUser::Uid(5)],
                ..ok.clone()
            }),
            "uid_ranges"
        );
        assert_eq!(
            rule(AccessRequest {
                users: vec![RtcUser::Account("x".into())],
                ..ok.clone()
            }),
            "uid_ranges"
        );
        assert_eq!(
            rule(AccessRequest {
                roles: vec![Role::Publisher],
                ..ok.clone()
            }),
            "roles"
        );
        assert_eq!(
            rule(AccessRequest {
                expire: Some(601),
                ..ok.clone()
            }),
            "max_expire_seconds"
        );
        assert!(matches!(
            a.authenticate(Some("wrong"), &[], ip, false),
            Err(Denial::Unauthenticated(_))
        ));
        assert!(matches!(
            a.authenticate(None, &[], ip, true),
            Err(Denial::Unauthenticated(_))
        ));
    }

    #[test]
    fn revoked_callers_are_refused() {
        let (key, hash) = generate_key().unwrap();
        let a = Authenticator::new(
            &[CallerConfig {
                name: "old".into(),
                api_key_sha256: Some(hash.to_hex()),
                revoked: true,
                ..Default::default()
            }],
            None,
        )
        .unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(a.authenticate(Some(&key), &[], ip, false).is_err());
    }

    #[test]
    fn config_errors_name_the_key() {
        let bad = |p: PolicyConfig| {
            Authenticator::new(
                &[CallerConfig {
                    name: "c".into(),
                    api_key_sha256: Some("0".repeat(64)),
                    policy: p,
                    ..Default::default()
                }],
                None,
            )
            .unwrap_err()
        };
        assert!(
            bad(PolicyConfig {
                kinds: Some(vec!["nope".into()]),
                ..Default::default()
            })
            .contains("kinds")
        );
        assert!(
            bad(PolicyConfig {
                uid_ranges: Some(vec!["9-1".into()]),
                ..Default::default()
            })
            .contains("uid_ranges")
        );
        assert!(
            bad(PolicyConfig {
                roles: Some(vec!["admin".into()]),
                ..Default::default()
            })
            .contains("roles")
        );
        assert!(
            bad(PolicyConfig {
                max_expire_seconds: Some(0),
                ..Default::default()
            })
            .contains("max_expire_seconds")
        );
        assert!(
            bad(PolicyConfig {
                rate_per_second: Some(-1.0),
                ..Default::default()
            })
            .contains("rate_per_second")
        );
    }
}
