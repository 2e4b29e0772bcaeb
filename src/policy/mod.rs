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

mod access;
mod compiled;
mod config;
mod keys;
mod networks;
mod rate;

pub use access::*;
pub use compiled::*;
pub use config::*;
pub use keys::*;
pub use networks::*;
pub use rate::*;

use crate::domain::Limits;
use crate::domain::rules;
use std::collections::HashMap;
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
    use crate::domain::{RtcUser, TokenKind};
    use agora_token::Role;

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
