//! The policy part of the configuration file: `[[callers]]` and
//! `[anonymous]`, as written by the operator (compiled by [`super::Policy`]).

use serde::Deserialize;

/// What a caller may do. `kinds` is required (deny by default); other
/// absent fields mean "no restriction of that kind" (see `user_ids`).
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
    /// RTM, RTM2 and Chat user id globs (also APaaS user uuids and RTM2
    /// `users` resources). Absent: when `uid_ranges` or `accounts` is set,
    /// a user id must equal the token's own RTC identity as packed;
    /// otherwise any user id.
    pub user_ids: Option<Vec<String>>,
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
