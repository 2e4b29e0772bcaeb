//! A compiled caller policy and the checks it applies to a request.

use super::*;
use crate::domain::rules;
use crate::domain::{Limits, RtcUser};
use agora_token::Role;

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

pub(crate) fn parse_role(s: &str) -> Result<Role, String> {
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
}
