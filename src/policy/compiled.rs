//! A compiled caller policy and the checks it applies to the tokens a
//! request would produce.
//!
//! A policy is a statement about the **decoded token**: [`Policy::check`]
//! walks every service of every [`Draft`] (the exact services that will be
//! packed) and checks each identity, channel or resource, privilege and
//! expiry against the policy's rules. The table "service / field -> rule"
//! is in SECURITY.md; every row is implemented in [`Policy::check_service`].

use agora_token::Role;
use agora_token::service::{permission_type, privilege, resource_type, service_type};
use agora_token::{Payload, Service};

use super::{Denial, PolicyConfig, TokenBucket};
use crate::domain::rules;
use crate::domain::{Draft, Granted, Limits, RtcIdentity, TokenKind};

/// Matches `text` against a glob where only `*` (any run) and `?` (one
/// byte) are special; every other character is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    Glob::new(pattern).matches(text)
}

/// One element of a compiled [`Glob`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobTok {
    /// A literal byte (also a `*` or `?` that came from a claim value).
    Lit(u8),
    /// `*`: any run of bytes.
    Star,
    /// `?`: one byte.
    One,
}

/// A compiled glob: `*` and `?` of the configuration are special, every
/// other byte is literal, and text substituted from a JWT claim
/// ([`Glob::literal`]) is literal throughout, so a claim cannot widen a
/// pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(Vec<GlobTok>);

impl Glob {
    /// A pattern as written in the configuration.
    pub fn new(pattern: &str) -> Self {
        let mut g = Self(Vec::with_capacity(pattern.len()));
        g.push_pattern(pattern);
        g
    }

    /// A pattern matching exactly `text` (`*` and `?` literal).
    pub fn literal(text: &str) -> Self {
        let mut g = Self(Vec::with_capacity(text.len()));
        g.push_literal(text);
        g
    }

    /// Appends configuration text (`*` and `?` special).
    pub fn push_pattern(&mut self, pattern: &str) {
        self.0.extend(pattern.bytes().map(|b| match b {
            b'*' => GlobTok::Star,
            b'?' => GlobTok::One,
            b => GlobTok::Lit(b),
        }));
    }

    /// Appends literal text (a claim value).
    pub fn push_literal(&mut self, text: &str) {
        self.0.extend(text.bytes().map(GlobTok::Lit));
    }

    /// Whether this is `*` alone (any name).
    fn is_any(&self) -> bool {
        self.0 == [GlobTok::Star]
    }

    /// Whether this glob is the same pattern as `resource` read as a
    /// pattern (an RTM2 resource with `*` or `?`).
    fn same_pattern(&self, resource: &[u8]) -> bool {
        std::str::from_utf8(resource).is_ok_and(|r| *self == Self::new(r))
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let (p, t) = (self.0.as_slice(), text.as_bytes());
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            match p.get(pi) {
                Some(GlobTok::Star) => {
                    star = Some((pi, ti));
                    pi += 1;
                }
                Some(GlobTok::One) => {
                    pi += 1;
                    ti += 1;
                }
                Some(GlobTok::Lit(c)) if *c == t[ti] => {
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
        p[pi..].iter().all(|&c| c == GlobTok::Star)
    }
}

fn globs(v: &Option<Vec<String>>) -> Option<Vec<Glob>> {
    v.as_ref().map(|v| v.iter().map(|s| Glob::new(s)).collect())
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

/// Whether `user_id` is the Chat user id an APaaS room-user token derives
/// from one of its user uuids (the MD5, as the official builder packs it):
/// covered by the check of that user uuid.
fn derived_chat_id(draft: &Draft<'_>, user_id: &[u8]) -> bool {
    draft.services().iter().any(|s| match &s.payload {
        Payload::Apaas { user_uuid, .. } if !user_uuid.is_empty() => std::str::from_utf8(user_uuid)
            .is_ok_and(|u| agora_token::builders::md5_hex(u).as_bytes() == user_id),
        _ => false,
    })
}

/// Every token kind a policy can name.
pub const KINDS: [&str; 13] = [
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

/// The kinds that grant app-wide powers (or, for `generic`, anything):
/// `kinds = ["*"]` does not include them; each must be listed by name.
pub const EXPLICIT_KINDS: [&str; 6] = [
    "chat_app",
    "fpa",
    "apaas_room_user",
    "apaas_user",
    "apaas_app",
    "generic",
];

/// Every RPC name a policy's `rpcs` can name (the GET endpoint counts as
/// `BuildRtcToken`).
pub const RPCS: [&str; 11] = [
    "BuildRtcToken",
    "BuildRtcTokenWithPrivileges",
    "BuildRtcRtmToken",
    "BuildRtmToken",
    "BuildChatUserToken",
    "BuildChatAppToken",
    "BuildFpaToken",
    "BuildApaasToken",
    "BuildToken",
    "InspectToken",
    "BuildAgentSession",
];

pub(crate) fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|_| format!("role {s:?}: use publisher or subscriber"))
}

/// A compiled policy.
#[derive(Debug)]
pub struct Policy {
    rpcs: Option<Vec<String>>,
    /// `None`: every kind (open mode only).
    kinds: Option<Vec<String>>,
    apps: Option<Vec<String>>,
    channels: Option<Vec<Glob>>,
    allow_wildcard: bool,
    uid_ranges: Option<Vec<UidRange>>,
    accounts: Option<Vec<Glob>>,
    user_ids: Option<Vec<Glob>>,
    max_expire: u32,
    roles: Option<Vec<Role>>,
    pub(super) bucket: Option<TokenBucket>,
}

type Check = Result<(), Denial>;

fn deny(rule: &'static str, detail: String) -> Check {
    Err(Denial::Policy { rule, detail })
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
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
            user_ids: None,
            max_expire: rules::MAX_EXPIRE,
            roles: None,
            bucket: None,
        }
    }

    /// Compiles and validates a policy; errors name the key. `kinds` is
    /// required: a policy without it is a configuration error.
    pub fn compile(c: &PolicyConfig) -> Result<Self, String> {
        let Some(kinds) = &c.kinds else {
            return Err(format!(
                "kinds: required: list what this caller may issue (known: {}), or [\"*\"] for every \
                 kind except the app-wide ones ({}), which must be listed by name",
                KINDS.join(", "),
                EXPLICIT_KINDS.join(", ")
            ));
        };
        for k in kinds {
            if k != "*" && !KINDS.contains(&k.as_str()) {
                return Err(format!(
                    "kinds: unknown kind {k:?} (known: {}, or \"*\")",
                    KINDS.join(", ")
                ));
            }
        }
        if let Some(rpcs) = &c.rpcs {
            for r in rpcs {
                if !RPCS.contains(&r.as_str()) {
                    return Err(format!(
                        "rpcs: unknown RPC {r:?} (known: {})",
                        RPCS.join(", ")
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
            kinds: Some(kinds.clone()),
            apps: c.apps.clone(),
            channels: globs(&c.channels),
            allow_wildcard: c.allow_wildcard.unwrap_or(true),
            uid_ranges,
            accounts: globs(&c.accounts),
            user_ids: globs(&c.user_ids),
            max_expire,
            roles,
            bucket,
        })
    }

    /// This policy with what a verified JWT says: its channels (when the
    /// issuer maps any), its roles (within this policy's), and the identity
    /// its tokens are bound to (then the only uid / account and RTM / Chat
    /// user id allowed, and no wildcard). No rate limit: the issuer keeps
    /// one per subject.
    pub fn derive(
        &self,
        channels: Option<Vec<Glob>>,
        roles: Option<Vec<Role>>,
        bound: Option<&super::jwt::Bound>,
    ) -> Self {
        use super::jwt::Bound;
        let roles = match (roles, &self.roles) {
            (Some(r), Some(allowed)) => {
                Some(r.into_iter().filter(|x| allowed.contains(x)).collect())
            }
            (Some(r), None) => Some(r),
            (None, r) => r.clone(),
        };
        let (allow_wildcard, uid_ranges, accounts, user_ids) = match bound {
            None => (
                self.allow_wildcard,
                self.uid_ranges.clone(),
                self.accounts.clone(),
                self.user_ids.clone(),
            ),
            Some(b) => (
                false,
                Some(match b {
                    Bound::Uid(u) => vec![UidRange(*u, *u)],
                    Bound::Account(_) => Vec::new(),
                }),
                match b {
                    Bound::Uid(_) => None,
                    Bound::Account(a) => Some(vec![Glob::literal(a)]),
                },
                Some(vec![Glob::literal(&b.as_user_id())]),
            ),
        };
        Self {
            rpcs: self.rpcs.clone(),
            kinds: self.kinds.clone(),
            apps: self.apps.clone(),
            channels: channels.or_else(|| self.channels.clone()),
            allow_wildcard,
            uid_ranges,
            accounts,
            user_ids,
            max_expire: self.max_expire,
            roles,
            bucket: None,
        }
    }

    /// The limits that shape the issuer's defaults for this caller.
    pub fn limits(&self) -> Limits {
        Limits {
            max_expire: self.max_expire,
        }
    }

    /// The longest lifetime this caller may have.
    pub fn max_expire(&self) -> u32 {
        self.max_expire
    }

    /// Whether the caller may call `rpc` at all.
    pub fn check_rpc(&self, rpc: &str) -> Check {
        match &self.rpcs {
            Some(rpcs) if !rpcs.iter().any(|r| r == rpc) => {
                deny("rpcs", format!("this caller may not call {rpc}"))
            }
            _ => Ok(()),
        }
    }

    /// Whether the caller may issue tokens of `kind` (a name of [`KINDS`]).
    fn kind_allowed(&self, kind: &str) -> bool {
        match &self.kinds {
            None => true,
            Some(kinds) => kinds
                .iter()
                .any(|k| k == kind || (k == "*" && !EXPLICIT_KINDS.contains(&kind))),
        }
    }

    fn check_kind(&self, kind: &str) -> Check {
        if self.kind_allowed(kind) {
            return Ok(());
        }
        let hint = if EXPLICIT_KINDS.contains(&kind) {
            " (an app-wide kind: \"*\" does not include it, list it by name)"
        } else {
            ""
        };
        deny(
            "kinds",
            format!("this caller may not issue {kind} tokens{hint}"),
        )
    }

    /// Checks everything a draft would grant: its kind, app, and every
    /// service's identities, channels or resources, privileges and expiry.
    pub fn check(&self, draft: &Draft<'_>) -> Check {
        self.check_kind(draft.kind().as_str())?;
        if let Some(apps) = &self.apps {
            if !apps.iter().any(|a| a == draft.app_id()) {
                return deny("apps", "this caller may not use this app".to_owned());
            }
        }
        self.check_expire(|| "the token".to_owned(), draft.expire())?;
        for g in draft.grants() {
            if draft.kind() == TokenKind::Generic {
                // A generic token may compose anything: each service needs
                // the kind that issues it.
                self.check_service_kind(&g)?;
            }
            self.check_service(&g, draft)?;
        }
        Ok(())
    }

    /// `what` is only formatted for a refusal.
    fn check_expire(&self, what: impl FnOnce() -> String, seconds: u32) -> Check {
        if seconds > self.max_expire {
            return deny(
                "max_expire_seconds",
                format!(
                    "{} would last {seconds} seconds, more than this caller's maximum of {}",
                    what(),
                    self.max_expire
                ),
            );
        }
        Ok(())
    }

    /// The kind a service of a generic token corresponds to.
    fn check_service_kind(&self, g: &Granted<'_>) -> Check {
        let has = |id: u16| g.service.privileges.get(id).is_some();
        let kinds: &[&str] = match g.service_type() {
            service_type::RTC => &["rtc"],
            service_type::RTM => &["rtm"],
            service_type::RTM2 => &["rtm2"],
            service_type::FPA => &["fpa"],
            service_type::CHAT if has(privilege::CHAT_APP) => &["chat_app"],
            service_type::CHAT => &["chat_user"],
            service_type::APAAS if has(privilege::APAAS_APP) => &["apaas_app"],
            service_type::APAAS if has(privilege::APAAS_USER) => &["apaas_user"],
            service_type::APAAS => &["apaas_room_user"],
            // Streaming and FCDN have no kind of their own: `generic` covers them.
            _ => &[],
        };
        for k in kinds {
            self.check_kind(k)?;
        }
        Ok(())
    }

    /// The rules of one service (SECURITY.md's table, row by row).
    fn check_service(&self, g: &Granted<'_>, draft: &Draft<'_>) -> Check {
        let s: &Service = g.service;
        let name = agora_token::service::service_name(g.service_type());
        for (id, v) in g.privileges() {
            self.check_expire(|| format!("privilege {id} of the {name} service"), v)?;
        }
        if matches!(
            g.service_type(),
            service_type::RTC | service_type::STREAMING | service_type::FCDN
        ) {
            // The role of a media service: publisher when it grants any
            // publish privilege, otherwise subscriber.
            let role = if g.publishes() {
                Role::Publisher
            } else {
                Role::Subscriber
            };
            self.check_role(role, name)?;
        }
        match &s.payload {
            Payload::Rtc { channel_name, uid } => {
                self.check_channel(channel_name)?;
                self.check_rtc_identity(uid)
            }
            Payload::Streaming {
                channel_name,
                account,
            }
            | Payload::Fcdn {
                channel_name,
                account,
            } => {
                self.check_channel(channel_name)?;
                self.check_rtc_identity(account)
            }
            Payload::Rtm { user_id } | Payload::Chat { user_id } => {
                if g.service_type() == service_type::CHAT
                    && (user_id.is_empty() || derived_chat_id(draft, user_id))
                {
                    // The Chat app token (no user; its kind was checked),
                    // or an APaaS user's derived Chat id.
                    return Ok(());
                }
                self.check_user_id(user_id, draft)
            }
            Payload::Rtm2 {
                user_id,
                permissions,
            } => {
                self.check_user_id(user_id, draft)?;
                for p in permissions.grants() {
                    if p.permission_type == permission_type::WRITE {
                        self.check_role(Role::Publisher, "RTM2 write")?;
                    }
                    for r in &p.resources {
                        match p.resource_type {
                            resource_type::USERS => self.check_resource_user(r, draft)?,
                            _ => self.check_resource_channel(r)?,
                        }
                    }
                }
                Ok(())
            }
            Payload::Apaas {
                room_uuid,
                user_uuid,
                ..
            } => {
                if !room_uuid.is_empty() {
                    self.check_channel(room_uuid)?;
                }
                if !user_uuid.is_empty() {
                    self.check_user_id(user_uuid, draft)?;
                }
                Ok(())
            }
            Payload::Fpa => Ok(()),
            Payload::Other(t) => deny(
                "kinds",
                format!("service type {t} is unknown; no policy can grant it"),
            ),
        }
    }

    fn check_role(&self, role: Role, what: &str) -> Check {
        match &self.roles {
            Some(roles) if !roles.contains(&role) => deny(
                "roles",
                format!(
                    "this caller may not request role {} ({what})",
                    role.as_str()
                ),
            ),
            _ => Ok(()),
        }
    }

    /// A channel name (RTC, Streaming, FCDN) or room: `""` is the wildcard.
    fn check_channel(&self, ch: &[u8]) -> Check {
        if ch.is_empty() {
            if !self.allow_wildcard {
                return deny(
                    "allow_wildcard",
                    "this caller may not request the wildcard channel \"\"".to_owned(),
                );
            }
            return Ok(());
        }
        self.check_glob_channel(ch)
    }

    fn check_glob_channel(&self, ch: &[u8]) -> Check {
        if let Some(globs) = &self.channels {
            let ok = std::str::from_utf8(ch).is_ok_and(|c| globs.iter().any(|g| g.matches(c)));
            if !ok {
                return deny(
                    "channels",
                    format!("channel {:?} is not allowed for this caller", lossy(ch)),
                );
            }
        }
        Ok(())
    }

    /// An RTM2 channel resource: a name containing `*` or `?` asks for
    /// many channels, which only an unrestricted `channels` (or a glob
    /// identical to it) grants.
    fn check_resource_channel(&self, r: &[u8]) -> Check {
        if r.iter().any(|b| matches!(b, b'*' | b'?')) {
            if let Some(globs) = &self.channels {
                let same = globs.iter().any(|g| g.is_any() || g.same_pattern(r));
                if !same {
                    return deny(
                        "channels",
                        format!(
                            "resource pattern {:?} is wider than this caller's channels",
                            lossy(r)
                        ),
                    );
                }
            }
            return Ok(());
        }
        self.check_glob_channel(r)
    }

    /// An RTM2 `users` resource: a user id; one containing `*` or `?`
    /// asks for many users, which only `user_ids` holding `"*"` or that
    /// exact pattern grants.
    fn check_resource_user(&self, r: &[u8], draft: &Draft<'_>) -> Check {
        if r.iter().any(|b| matches!(b, b'*' | b'?')) {
            if let Some(globs) = &self.user_ids {
                if !globs.iter().any(|g| g.is_any() || g.same_pattern(r)) {
                    return deny(
                        "user_ids",
                        format!(
                            "resource pattern {:?} is wider than this caller's user_ids",
                            lossy(r)
                        ),
                    );
                }
                return Ok(());
            }
        }
        self.check_user_id(r, draft)
    }

    /// An RTC uid / account as packed (RTC, Streaming and FCDN).
    fn check_rtc_identity(&self, packed: &[u8]) -> Check {
        match RtcIdentity::of(packed) {
            RtcIdentity::Wildcard if !self.allow_wildcard => deny(
                "allow_wildcard",
                "this caller may not request uid 0 (any user)".to_owned(),
            ),
            RtcIdentity::Wildcard => Ok(()),
            RtcIdentity::Uid(uid) => match &self.uid_ranges {
                Some(ranges) if !ranges.iter().any(|r| r.contains(uid)) => deny(
                    "uid_ranges",
                    format!("uid {uid} is not allowed for this caller"),
                ),
                _ => Ok(()),
            },
            RtcIdentity::Account(a) => match (&self.accounts, &self.uid_ranges) {
                (Some(globs), _) if !globs.iter().any(|g| g.matches(a)) => deny(
                    "accounts",
                    format!("account {a:?} is not allowed for this caller"),
                ),
                (None, Some(_)) => deny(
                    "uid_ranges",
                    format!(
                        "account {a:?}: this caller may only use numeric uids in its ranges \
                         (a uid is packed without leading zeros)"
                    ),
                ),
                _ => Ok(()),
            },
            RtcIdentity::Invalid => deny(
                "accounts",
                "an account that is not UTF-8 is not allowed".to_owned(),
            ),
        }
    }

    /// Whether the caller restricts RTC identities.
    fn restricts_identities(&self) -> bool {
        self.uid_ranges.is_some() || self.accounts.is_some()
    }

    /// An RTM / RTM2 / Chat user id, RTM2 `users` resource or APaaS user
    /// uuid: `user_ids` globs; without them, when the caller restricts RTC
    /// identities, the token's own RTC identity as packed.
    fn check_user_id(&self, id: &[u8], draft: &Draft<'_>) -> Check {
        match &self.user_ids {
            Some(globs) => {
                let ok = std::str::from_utf8(id).is_ok_and(|u| globs.iter().any(|g| g.matches(u)));
                if ok {
                    Ok(())
                } else {
                    deny(
                        "user_ids",
                        format!("user id {:?} is not allowed for this caller", lossy(id)),
                    )
                }
            }
            None if self.restricts_identities() => {
                if !id.is_empty() && draft.rtc_identities().any(|r| r == id) {
                    Ok(())
                } else {
                    deny(
                        "user_ids",
                        format!(
                            "user id {:?} must equal this token's RTC identity (this caller has \
                             uid_ranges or accounts and no user_ids)",
                            lossy(id)
                        ),
                    )
                }
            }
            None => Ok(()),
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
    fn claim_text_in_a_glob_is_literal() {
        let mut g = Glob::new("team-");
        g.push_literal("a*?");
        g.push_pattern("-*");
        assert!(g.matches("team-a*?-x"));
        assert!(!g.matches("team-abc-x"));
        assert!(!g.matches("team-a*b-x"));
        assert!(Glob::literal("*").matches("*"));
        assert!(!Glob::literal("*").matches("x"));
        assert!(!Glob::literal("*").is_any());
        assert!(Glob::new("*").is_any());
        assert!(Glob::new("u-*").same_pattern(b"u-*"));
        assert!(!Glob::literal("u-*").same_pattern(b"u-*"));
    }
}
