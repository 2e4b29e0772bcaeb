//! The API's methods, one per RPC: map the proto request to a domain
//! request and run it through [`TokenApi::issue`].

use super::*;
use crate::domain::rules::Violation;
use crate::domain::{
    AgentSessionRequest, ApaasRoomUserRequest, ChatUserRequest, GenericRequest, IssueError, Issued,
    PrivilegeExpires, RtcPrivilegesRequest, RtcRequest, RtcRtmRequest, RtcUser, RtmRequest,
    TokenKind,
};
use crate::pb;
use crate::policy::Authn;
use crate::telemetry::asked::Asked;
use crate::telemetry::metrics::Method;

impl TokenApi {
    /// `BuildRtcToken` (and, through the same path, the GET endpoint).
    pub fn build_rtc_token(
        &self,
        who: &Authn,
        r: pb::BuildRtcTokenRequest,
    ) -> Result<pb::BuildRtcTokenResponse, ApiError> {
        let req = RtcRequest {
            common: common(r.app_id, r.expire_seconds),
            channel_name: r.channel_name,
            user: rtc_user!(who, r.user, build_rtc_token_request),
            role: role(r.role)?,
            privilege_expire: r.privilege_expire_seconds,
        };
        Ok(self.rtc(who, Method::BuildRtcToken, &req)?.into())
    }

    /// An RTC token for `method` (`BuildRtcToken` or `GetToken`).
    pub fn rtc(&self, who: &Authn, method: Method, req: &RtcRequest) -> Result<Issued, ApiError> {
        let access = || Asked::rtc(Method::BuildRtcToken.as_str(), req);
        self.issue(
            who,
            method,
            req.common.app_id.as_deref(),
            access,
            |i, l, s| s.sign(i, i.rtc(req, l)?),
        )
    }

    /// `BuildRtcTokenWithPrivileges`.
    pub fn build_rtc_token_with_privileges(
        &self,
        who: &Authn,
        r: pb::BuildRtcTokenWithPrivilegesRequest,
    ) -> Result<pb::BuildRtcTokenWithPrivilegesResponse, ApiError> {
        let req = RtcPrivilegesRequest {
            common: common(r.app_id, r.expire_seconds),
            channel_name: r.channel_name,
            user: rtc_user!(who, r.user, build_rtc_token_with_privileges_request),
            privileges: PrivilegeExpires {
                join_channel: r.join_channel_expire_seconds,
                publish_audio: r.publish_audio_expire_seconds,
                publish_video: r.publish_video_expire_seconds,
                publish_data: r.publish_data_expire_seconds,
            },
        };
        let m = Method::BuildRtcTokenWithPrivileges;
        let access = || Asked::rtc_privileges(m.as_str(), &req);
        let issued = self.issue(who, m, req.common.app_id.as_deref(), access, |i, l, s| {
            s.sign(i, i.rtc_with_privileges(&req, l)?)
        })?;
        Ok(issued.into())
    }

    /// `BuildRtcRtmToken`.
    pub fn build_rtc_rtm_token(
        &self,
        who: &Authn,
        r: pb::BuildRtcRtmTokenRequest,
    ) -> Result<pb::BuildRtcRtmTokenResponse, ApiError> {
        let req = RtcRtmRequest {
            common: common(r.app_id, r.expire_seconds),
            channel_name: r.channel_name,
            user: rtc_user!(who, r.user, build_rtc_rtm_token_request),
            role: role(r.role)?,
            privilege_expire: r.privilege_expire_seconds,
            privileges: None,
            rtm_user_id: r.rtm_user_id,
            rtm_expire: r.rtm_expire_seconds,
        };
        let m = Method::BuildRtcRtmToken;
        let access = || Asked::rtc_rtm(m.as_str(), &req);
        let issued = self.issue(who, m, req.common.app_id.as_deref(), access, |i, l, s| {
            s.sign(i, i.rtc_rtm(&req, l)?)
        })?;
        Ok(issued.into())
    }

    /// `BuildRtmToken`.
    pub fn build_rtm_token(
        &self,
        who: &Authn,
        r: pb::BuildRtmTokenRequest,
    ) -> Result<pb::BuildRtmTokenResponse, ApiError> {
        let req = RtmRequest {
            common: common(r.app_id, r.expire_seconds),
            user_id: bound_user_id(who, r.user_id),
            rtm2: r.rtm2,
            permissions: rtm2_permissions(&r.permissions),
        };
        let m = Method::BuildRtmToken;
        let access = || Asked::rtm(m.as_str(), &req);
        let issued = self.issue(who, m, req.common.app_id.as_deref(), access, |i, l, s| {
            s.sign(i, i.rtm(&req, l)?)
        })?;
        Ok(issued.into())
    }

    /// `BuildChatUserToken`.
    pub fn build_chat_user_token(
        &self,
        who: &Authn,
        r: pb::BuildChatUserTokenRequest,
    ) -> Result<pb::BuildChatUserTokenResponse, ApiError> {
        let req = ChatUserRequest {
            common: common(r.app_id, r.expire_seconds),
            user_id: bound_user_id(who, r.user_id),
        };
        let m = Method::BuildChatUserToken;
        let access = || Asked::plain(m.as_str(), TokenKind::ChatUser, req.common.expire);
        let issued = self.issue(who, m, req.common.app_id.as_deref(), access, |i, l, s| {
            s.sign(i, i.chat_user(&req, l)?)
        })?;
        Ok(issued.into())
    }

    /// `BuildChatAppToken`.
    pub fn build_chat_app_token(
        &self,
        who: &Authn,
        r: pb::BuildChatAppTokenRequest,
    ) -> Result<pb::BuildChatAppTokenResponse, ApiError> {
        let c = common(r.app_id, r.expire_seconds);
        let m = Method::BuildChatAppToken;
        let access = || Asked::plain(m.as_str(), TokenKind::ChatApp, c.expire);
        let issued = self.issue(who, m, c.app_id.as_deref(), access, |i, l, s| {
            s.sign(i, i.chat_app(&c, l)?)
        })?;
        Ok(issued.into())
    }

    /// `BuildFpaToken`.
    pub fn build_fpa_token(
        &self,
        who: &Authn,
        r: pb::BuildFpaTokenRequest,
    ) -> Result<pb::BuildFpaTokenResponse, ApiError> {
        let c = common(r.app_id, None);
        let m = Method::BuildFpaToken;
        let access = || {
            Asked::plain(
                m.as_str(),
                TokenKind::Fpa,
                Some(agora_token::builders::FPA_TOKEN_EXPIRE),
            )
        };
        let issued = self.issue(who, m, c.app_id.as_deref(), access, |i, l, s| {
            s.sign(i, i.fpa(&c, l)?)
        })?;
        Ok(issued.into())
    }

    /// `BuildApaasToken`.
    pub fn build_apaas_token(
        &self,
        who: &Authn,
        r: pb::BuildApaasTokenRequest,
    ) -> Result<pb::BuildApaasTokenResponse, ApiError> {
        use pb::ApaasTokenKind as K;
        let kind = K::try_from(r.kind).unwrap_or(K::Unspecified);
        let unused = |field: &str, is_set: bool| -> Result<(), IssueError> {
            if is_set {
                return Err(Violation::new(
                    field,
                    format!("is not used by {}", kind.as_str_name()),
                )
                .into());
            }
            Ok(())
        };
        let c = common(r.app_id, r.expire_seconds);
        let m = Method::BuildApaasToken;
        let app = c.app_id.clone();
        let issued = match kind {
            K::RoomUser => {
                let role = i16::try_from(r.role).map_err(|_| {
                    IssueError::from(Violation::new("role", "must be -32768..=32767"))
                })?;
                let req = ApaasRoomUserRequest {
                    common: c,
                    room_uuid: r.room_uuid,
                    user_uuid: r.user_uuid,
                    role,
                };
                let access = || Asked::apaas_room_user(m.as_str(), &req);
                self.issue(who, m, app.as_deref(), access, |i, l, s| {
                    s.sign(i, i.apaas_room_user(&req, l)?)
                })?
            }
            K::User => {
                unused("room_uuid", !r.room_uuid.is_empty())?;
                unused("role", r.role != 0)?;
                let access = || Asked::plain(m.as_str(), TokenKind::ApaasUser, c.expire);
                self.issue(who, m, app.as_deref(), access, |i, l, s| {
                    s.sign(i, i.apaas_user(&c, &r.user_uuid, l)?)
                })?
            }
            K::App => {
                unused("room_uuid", !r.room_uuid.is_empty())?;
                unused("user_uuid", !r.user_uuid.is_empty())?;
                unused("role", r.role != 0)?;
                let access = || Asked::plain(m.as_str(), TokenKind::ApaasApp, c.expire);
                self.issue(who, m, app.as_deref(), access, |i, l, s| {
                    s.sign(i, i.apaas_app(&c, l)?)
                })?
            }
            K::Unspecified => {
                return Err(IssueError::from(Violation::new(
                    "kind",
                    "must be APAAS_TOKEN_KIND_ROOM_USER, APAAS_TOKEN_KIND_USER or APAAS_TOKEN_KIND_APP",
                ))
                .into());
            }
        };
        Ok(issued.into())
    }

    /// `BuildToken`.
    pub fn build_token(
        &self,
        who: &Authn,
        r: pb::BuildTokenRequest,
    ) -> Result<pb::BuildTokenResponse, ApiError> {
        let services = r
            .services
            .into_iter()
            .enumerate()
            .map(|(i, s)| service_from_pb(i, s))
            .collect::<Result<Vec<_>, _>>()?;
        let req = GenericRequest {
            common: common(r.app_id, r.expire_seconds),
            services,
        };
        let m = Method::BuildToken;
        let access = || Asked::generic(m.as_str(), &req);
        let issued = self.issue(who, m, req.common.app_id.as_deref(), access, |i, l, s| {
            s.sign(i, i.generic(&req, l)?)
        })?;
        Ok(issued.into())
    }

    /// `InspectToken`: needs an authenticated caller (or open mode) but
    /// issues nothing, so no token policy applies.
    pub fn inspect_token(
        &self,
        who: &Authn,
        r: pb::InspectTokenRequest,
    ) -> Result<pb::InspectTokenResponse, ApiError> {
        let caller = who
            .identity
            .as_ref()
            .map_err(|d| ApiError::from(d.clone()))?;
        let snap = who
            .snapshot
            .clone()
            .unwrap_or_else(|| self.shared.current_full());
        // Inspection issues nothing, but counts against the rate limit.
        snap.auth
            .admit_checked(caller, Method::InspectToken.as_str(), who.rate_decision)?;
        let uid = match r.user {
            None => None,
            Some(pb::inspect_token_request::User::Uid(u)) => {
                Some(agora_token::service::uid_string(u))
            }
            Some(pb::inspect_token_request::User::Account(a)) => Some(a),
        };
        let identity = match (&uid, r.channel_name.is_empty()) {
            (None, true) => None,
            (uid, _) => Some((r.channel_name.as_str(), uid.as_deref().unwrap_or(""))),
        };

        let ins = snap
            .issuer
            .inspect(&r.token, identity)
            .map_err(|e| IssueError::Invalid(Violation::new("token", e.0.to_string())))?;
        Ok(inspection_to_pb(&ins))
    }

    /// `BuildAgentSession`.
    pub fn build_agent_session(
        &self,
        who: &Authn,
        r: pb::BuildAgentSessionRequest,
    ) -> Result<pb::BuildAgentSessionResponse, ApiError> {
        let req = AgentSessionRequest {
            common: common(r.app_id, r.expire_seconds),
            channel_name: r.channel_name,
            agent_uid: r.agent_uid,
            user_uid: r.user_uid,
            string_uid: r.string_uid,
            enable_rtm: r.enable_rtm,
        };
        let m = Method::BuildAgentSession;
        let access = || Asked::agent_session(m.as_str(), &req);
        let s = self.issue(who, m, req.common.app_id.as_deref(), access, |i, l, s| {
            s.sign(i, i.agent_session(&req, l)?)
        })?;
        Ok(pb::BuildAgentSessionResponse {
            agent_token: s.agent.token,
            user_token: s.user.token,
            rest_token: s.rest.token,
            issued_at: s.rest.issued_at,
            expires_at: s.rest.expires_at,
            app_id: s.rest.app_id,
        })
    }
}
