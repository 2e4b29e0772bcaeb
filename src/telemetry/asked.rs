//! What a request asked for, as the audit trail records it when the request
//! is refused before the issuer drafted a token (issued tokens are recorded
//! from their drafts: what the token grants, not what was asked).

use crate::domain::rules;
use crate::domain::{
    AgentSessionRequest, ApaasRoomUserRequest, GenericRequest, RtcPrivilegesRequest, RtcRequest,
    RtcRtmRequest, RtcUser, RtmRequest, TokenKind,
};
use agora_token::Role;

/// What a request asked for (the audit record of a refusal).
#[derive(Debug, Clone, Default)]
pub struct Asked<'a> {
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

impl<'a> Asked<'a> {
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
