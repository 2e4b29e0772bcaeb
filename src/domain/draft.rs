//! What the issuer is about to sign, before it signs it.
//!
//! Every issuer method builds [`Draft`]s: the app, the kind and the exact
//! services (payloads and privileges) that will be packed. Policy is a
//! statement about those drafts, not about request fields: the caller's
//! policy reads each draft's [`Draft::grants`] (every service, every
//! identity as it will be packed, every channel or resource, every
//! privilege with its expiry) and, when it allows them all, makes a
//! [`Permit`]. [`Issuer::sign`] takes the draft and the permit, and checks
//! the permit's caps again before signing (defence in depth).

use agora_token::service::{privilege, service_type};
use agora_token::{Grant, Payload, Service};

use super::{AgentSession, AppCredentials, IssueError, Issued, Issuer, TokenKind};

/// A token about to be signed.
#[derive(Debug, Clone)]
pub struct Draft<'a> {
    pub(super) app: &'a AppCredentials,
    pub(super) grant: Grant,
    pub(super) kind: TokenKind,
}

impl<'a> Draft<'a> {
    pub(super) fn new(app: &'a AppCredentials, grant: Grant, kind: TokenKind) -> Self {
        Self { app, grant, kind }
    }

    /// The app the token is for.
    pub fn app_id(&self) -> &'a str {
        self.app.app_id.as_str()
    }

    /// The kind of token.
    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    /// The token lifetime, seconds.
    pub fn expire(&self) -> u32 {
        self.grant.expire
    }

    /// The services exactly as they will be packed.
    pub fn services(&self) -> &[Service] {
        &self.grant.services
    }

    /// Every grant of the token, service by service.
    pub fn grants(&self) -> impl Iterator<Item = Granted<'_>> {
        self.grant.services.iter().map(Granted::of)
    }

    /// The RTC identities of the token, as packed (`""` is the wildcard):
    /// the RTC uids and the Streaming / FCDN accounts, which policy checks
    /// with the same rule.
    pub fn rtc_identities(&self) -> impl Iterator<Item = &[u8]> {
        self.grant.services.iter().filter_map(|s| match &s.payload {
            Payload::Rtc { uid, .. } => Some(uid.as_slice()),
            Payload::Streaming { account, .. } | Payload::Fcdn { account, .. } => {
                Some(account.as_slice())
            }
            _ => None,
        })
    }
}

/// How an RTC uid string (as packed) reads: the official builders pack a
/// numeric uid as its decimal form without leading zeros and 0 as `""`, so
/// exactly those strings are uids; anything else is a string account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcIdentity<'a> {
    /// `""`: any user.
    Wildcard,
    /// A numeric uid, 1..=4294967295.
    Uid(u32),
    /// A string account (including `"0"` and `"0042"`).
    Account(&'a str),
    /// Bytes that are not UTF-8 (never issued by the service's rules).
    Invalid,
}

impl<'a> RtcIdentity<'a> {
    /// Classifies a packed uid string.
    pub fn of(packed: &'a [u8]) -> Self {
        let Ok(s) = std::str::from_utf8(packed) else {
            return Self::Invalid;
        };
        if s.is_empty() {
            return Self::Wildcard;
        }
        let canonical = s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
        match s.parse::<u32>() {
            Ok(n) if canonical => Self::Uid(n),
            _ => Self::Account(s),
        }
    }
}

/// One service of a draft, as policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Granted<'a> {
    /// The service.
    pub service: &'a Service,
}

impl<'a> Granted<'a> {
    fn of(service: &'a Service) -> Self {
        Self { service }
    }

    /// The service type number.
    pub fn service_type(&self) -> u16 {
        self.service.service_type()
    }

    /// Every privilege id with its expiry value (seconds after issue; 0:
    /// the token's expiry applies).
    pub fn privileges(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.service.privileges.iter()
    }

    /// Whether the service grants publishing: RTC publish audio / video /
    /// data, Streaming publish mix / raw, FCDN publish.
    pub fn publishes(&self) -> bool {
        let has = |id: u16| self.service.privileges.get(id).is_some();
        match self.service_type() {
            service_type::RTC => {
                has(privilege::RTC_PUBLISH_AUDIO_STREAM)
                    || has(privilege::RTC_PUBLISH_VIDEO_STREAM)
                    || has(privilege::RTC_PUBLISH_DATA_STREAM)
            }
            service_type::STREAMING => {
                has(privilege::STREAMING_PUBLISH_MIX_STREAM)
                    || has(privilege::STREAMING_PUBLISH_RAW_STREAM)
            }
            service_type::FCDN => has(privilege::FCDN_PUBLISH),
            _ => false,
        }
    }
}

/// What an issuer call returns before signing: one draft, or the three of
/// an agent session. [`Unsigned::drafts`] is what policy checks;
/// [`Unsigned::sign`] signs them all with one permit.
pub trait Unsigned<'a> {
    /// The signed result.
    type Signed;
    /// Every draft to authorize.
    fn drafts(&self) -> Drafts<'_, 'a>;
    /// Signs every draft.
    fn sign(&self, issuer: &Issuer, permit: &Permit) -> Result<Self::Signed, IssueError>;
}

impl<'a> Unsigned<'a> for Draft<'a> {
    type Signed = Issued;

    fn drafts(&self) -> Drafts<'_, 'a> {
        Drafts {
            refs: [self, self, self],
            len: 1,
        }
    }

    fn sign(&self, issuer: &Issuer, permit: &Permit) -> Result<Issued, IssueError> {
        issuer.sign(self, permit)
    }
}

/// The drafts of one call, without a heap allocation (at most three: an
/// agent session's); derefs to a slice.
#[derive(Debug, Clone, Copy)]
pub struct Drafts<'d, 'a> {
    refs: [&'d Draft<'a>; 3],
    len: usize,
}

impl<'d, 'a> std::ops::Deref for Drafts<'d, 'a> {
    type Target = [&'d Draft<'a>];

    fn deref(&self) -> &Self::Target {
        // Invariant: len is 1, 2 or 3, set by the two constructors above.
        self.refs.get(..self.len).unwrap_or(&self.refs[..1])
    }
}

/// The drafts of a ConvoAI agent session.
#[derive(Debug, Clone)]
pub struct AgentSessionDraft<'a> {
    /// The agent's token.
    pub agent: Draft<'a>,
    /// The end user's token.
    pub user: Draft<'a>,
    /// The REST token, when it differs from the agent's (without RTM).
    pub rest: Option<Draft<'a>>,
}

impl<'a> Unsigned<'a> for AgentSessionDraft<'a> {
    type Signed = AgentSession;

    fn drafts(&self) -> Drafts<'_, 'a> {
        Drafts {
            refs: [
                &self.agent,
                &self.user,
                self.rest.as_ref().unwrap_or(&self.agent),
            ],
            len: if self.rest.is_some() { 3 } else { 2 },
        }
    }

    fn sign(&self, issuer: &Issuer, permit: &Permit) -> Result<AgentSession, IssueError> {
        let agent = issuer.sign(&self.agent, permit)?;
        let user = issuer.sign(&self.user, permit)?;
        let rest = match &self.rest {
            Some(d) => issuer.sign(d, permit)?,
            None => agent.clone(),
        };
        Ok(AgentSession { agent, user, rest })
    }
}

/// Proof that a caller's policy allowed a set of drafts, with the caps the
/// issuer enforces again when it signs. Only the authorization step (and,
/// for the local CLI, [`Permit::local`]) makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    max_expire: u32,
}

impl Permit {
    /// A permit with the caller's longest lifetime (policy only).
    pub(crate) fn new(max_expire: u32) -> Self {
        Self { max_expire }
    }

    /// The permit of the local `token` command: the operator holds the
    /// certificate, so only the format's own limits apply.
    pub(crate) fn local() -> Self {
        Self {
            max_expire: u32::MAX,
        }
    }

    /// The longest token or privilege lifetime it allows.
    pub fn max_expire(&self) -> u32 {
        self.max_expire
    }

    /// Whether `draft` stays within the permit's caps: the token's
    /// lifetime and every privilege's.
    pub(super) fn covers(&self, draft: &Draft<'_>) -> Result<(), IssueError> {
        let over = |what: String| IssueError::NotPermitted {
            rule: "max_expire_seconds",
            detail: format!(
                "{what} is more than this caller's maximum of {}",
                self.max_expire
            ),
        };
        if draft.grant.expire > self.max_expire {
            return Err(over(format!("{} seconds", draft.grant.expire)));
        }
        for s in &draft.grant.services {
            if let Some((id, v)) = s.privileges.iter().find(|(_, v)| *v > self.max_expire) {
                return Err(over(format!(
                    "privilege {id} of service {} lasting {v} seconds",
                    s.service_type()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtc_identities_read_as_packed() {
        assert_eq!(RtcIdentity::of(b""), RtcIdentity::Wildcard);
        assert_eq!(RtcIdentity::of(b"42"), RtcIdentity::Uid(42));
        assert_eq!(RtcIdentity::of(b"4294967295"), RtcIdentity::Uid(u32::MAX));
        assert_eq!(
            RtcIdentity::of(b"4294967296"),
            RtcIdentity::Account("4294967296")
        );
        assert_eq!(RtcIdentity::of(b"0042"), RtcIdentity::Account("0042"));
        assert_eq!(RtcIdentity::of(b"0"), RtcIdentity::Account("0"));
        assert_eq!(RtcIdentity::of(b"+42"), RtcIdentity::Account("+42"));
        assert_eq!(RtcIdentity::of(b"ceo"), RtcIdentity::Account("ceo"));
        assert_eq!(RtcIdentity::of(&[0xff]), RtcIdentity::Invalid);
    }
}
