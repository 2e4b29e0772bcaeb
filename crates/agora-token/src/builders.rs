//! The official builders (spec section 9), with the official semantics.
//!
//! Each function returns a [`Grant`]: the token lifetime and the services,
//! independent of app, time and salt. [`Grant::build`] signs it. The names
//! follow the python3 builders (`build_token_with_uid` is
//! [`rtc_with_uid`], and so on); the Education builders are byte-for-byte
//! the APaaS ones.

use md5::{Digest, Md5};

use crate::credentials::{AppCertificate, AppId};
use crate::error::BuildError;
use crate::service::{Rtm2Permissions, Service, privilege, uid_string};
use crate::token::{AccessToken, encode_content, encode_token};

/// The fixed lifetime of an FPA token (the official builder's).
pub const FPA_TOKEN_EXPIRE: u32 = 24 * 3600;

/// A token's lifetime and services, ready to be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Token lifetime in seconds after the issue time.
    pub expire: u32,
    /// The services, in the order the official builder adds them.
    pub services: Vec<Service>,
}

impl Grant {
    /// Signs and encodes the grant for `app_id` at `issue_ts` with `salt`.
    pub fn build(
        &self,
        app_id: &AppId,
        certificate: &AppCertificate,
        issue_ts: u32,
        salt: u32,
    ) -> Result<String, BuildError> {
        let content = self.content(app_id, certificate, issue_ts, salt)?;
        Ok(encode_token(&content))
    }

    /// The signed content before compression.
    pub fn content(
        &self,
        app_id: &AppId,
        certificate: &AppCertificate,
        issue_ts: u32,
        salt: u32,
    ) -> Result<Vec<u8>, BuildError> {
        encode_content(
            app_id.as_str().as_bytes(),
            issue_ts,
            self.expire,
            salt,
            &self.services,
            certificate,
        )
    }

    /// The equivalent token object.
    pub fn into_access_token(self, app_id: AppId, issue_ts: u32, salt: u32) -> AccessToken {
        AccessToken {
            app_id,
            issue_ts,
            expire: self.expire,
            salt,
            services: self.services,
        }
    }
}

/// RTC role. The official builders compare the role with 1 (publisher);
/// any other value gets only the join privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Join and publish audio, video and data.
    #[default]
    Publisher,
    /// Join only.
    Subscriber,
}

impl Role {
    /// The role's name: `"publisher"` or `"subscriber"` (what
    /// [`Role::from_str`](std::str::FromStr::from_str) reads back).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publisher => "publisher",
            Self::Subscriber => "subscriber",
        }
    }

    /// The official numeric role: 1 is publisher, anything else subscriber.
    pub fn from_official(role: u16) -> Self {
        if role == 1 {
            Self::Publisher
        } else {
            Self::Subscriber
        }
    }
}

impl std::str::FromStr for Role {
    type Err = ParseRoleError;

    /// Reads `"publisher"` or `"subscriber"` (exactly, as [`Role::as_str`]
    /// writes them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "publisher" => Ok(Self::Publisher),
            "subscriber" => Ok(Self::Subscriber),
            _ => Err(ParseRoleError),
        }
    }
}

/// A string that is not `"publisher"` or `"subscriber"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a role is \"publisher\" or \"subscriber\"")]
pub struct ParseRoleError;

/// Separate expiries (seconds after the issue time) for the four RTC privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtcPrivilegeExpires {
    /// joinChannel.
    pub join_channel: u32,
    /// publishAudioStream.
    pub publish_audio: u32,
    /// publishVideoStream.
    pub publish_video: u32,
    /// publishDataStream.
    pub publish_data: u32,
}

impl RtcPrivilegeExpires {
    /// All four privileges at the same expiry.
    pub fn all(expire: u32) -> Self {
        Self {
            join_channel: expire,
            publish_audio: expire,
            publish_video: expire,
            publish_data: expire,
        }
    }
}

fn rtc_service(channel_name: &str, uid: &str, role: Role, p: RtcPrivilegeExpires) -> Service {
    let s =
        Service::rtc(channel_name, uid).with_privilege(privilege::RTC_JOIN_CHANNEL, p.join_channel);
    match role {
        Role::Publisher => s
            .with_privilege(privilege::RTC_PUBLISH_AUDIO_STREAM, p.publish_audio)
            .with_privilege(privilege::RTC_PUBLISH_VIDEO_STREAM, p.publish_video)
            .with_privilege(privilege::RTC_PUBLISH_DATA_STREAM, p.publish_data),
        Role::Subscriber => s,
    }
}

/// `RtcTokenBuilder.build_token_with_uid`: RTC for a numeric uid (0 = any uid).
pub fn rtc_with_uid(
    channel_name: &str,
    uid: u32,
    role: Role,
    token_expire: u32,
    privilege_expire: u32,
) -> Grant {
    rtc_with_user_account(
        channel_name,
        &uid_string(uid),
        role,
        token_expire,
        privilege_expire,
    )
}

/// `RtcTokenBuilder.build_token_with_user_account`: RTC for a string account
/// (`""` = any user; `"0"` is the account "0", not a wildcard).
pub fn rtc_with_user_account(
    channel_name: &str,
    account: &str,
    role: Role,
    token_expire: u32,
    privilege_expire: u32,
) -> Grant {
    Grant {
        expire: token_expire,
        services: vec![rtc_service(
            channel_name,
            account,
            role,
            RtcPrivilegeExpires::all(privilege_expire),
        )],
    }
}

/// `RtcTokenBuilder.build_token_with_uid_and_privilege`: all four RTC
/// privileges with their own expiries (no role; zeros are packed too).
pub fn rtc_with_uid_and_privilege(
    channel_name: &str,
    uid: u32,
    token_expire: u32,
    privileges: RtcPrivilegeExpires,
) -> Grant {
    rtc_with_user_account_and_privilege(channel_name, &uid_string(uid), token_expire, privileges)
}

/// `RtcTokenBuilder.build_token_with_user_account_and_privilege`.
pub fn rtc_with_user_account_and_privilege(
    channel_name: &str,
    account: &str,
    token_expire: u32,
    privileges: RtcPrivilegeExpires,
) -> Grant {
    Grant {
        expire: token_expire,
        services: vec![rtc_service(
            channel_name,
            account,
            Role::Publisher,
            privileges,
        )],
    }
}

/// `RtcTokenBuilder.build_token_with_rtm`: RTC for `account` plus RTM login
/// for the same account; the RTM login privilege lasts the token lifetime.
pub fn rtc_with_rtm(
    channel_name: &str,
    account: &str,
    role: Role,
    token_expire: u32,
    privilege_expire: u32,
) -> Grant {
    let mut g = rtc_with_user_account(channel_name, account, role, token_expire, privilege_expire);
    g.services
        .push(Service::rtm(account).with_privilege(privilege::RTM_LOGIN, token_expire));
    g
}

/// `RtcTokenBuilder.build_token_with_rtm2`: RTC with per-privilege expiries
/// (publish ones only for a publisher) plus RTM (type 2, not RTM2) login for
/// a separate user id with its own expiry.
pub fn rtc_with_rtm2(
    channel_name: &str,
    rtc_account: &str,
    role: Role,
    rtc_token_expire: u32,
    privileges: RtcPrivilegeExpires,
    rtm_user_id: &str,
    rtm_token_expire: u32,
) -> Grant {
    Grant {
        expire: rtc_token_expire,
        services: vec![
            rtc_service(channel_name, rtc_account, role, privileges),
            Service::rtm(rtm_user_id).with_privilege(privilege::RTM_LOGIN, rtm_token_expire),
        ],
    }
}

/// `RtmTokenBuilder.build_token`: RTM login.
pub fn rtm(user_id: &str, expire: u32) -> Grant {
    Grant {
        expire,
        services: vec![Service::rtm(user_id).with_privilege(privilege::RTM_LOGIN, expire)],
    }
}

/// `RtmTokenBuilder.build_token_with_permissions`: RTM2 (type 8) login with
/// resource permissions.
pub fn rtm_with_permissions(user_id: &str, permissions: Rtm2Permissions, expire: u32) -> Grant {
    Grant {
        expire,
        services: vec![
            Service::rtm2(user_id, permissions).with_privilege(privilege::RTM2_LOGIN, expire),
        ],
    }
}

/// `ChatTokenBuilder.build_user_token`.
pub fn chat_user(user_id: &str, expire: u32) -> Grant {
    Grant {
        expire,
        services: vec![Service::chat(user_id).with_privilege(privilege::CHAT_USER, expire)],
    }
}

/// `ChatTokenBuilder.build_app_token` (Chat user id `""`).
pub fn chat_app(expire: u32) -> Grant {
    Grant {
        expire,
        services: vec![Service::chat("").with_privilege(privilege::CHAT_APP, expire)],
    }
}

/// `FpaTokenBuilder.build_token`: a 24-hour token with login privilege 0.
pub fn fpa() -> Grant {
    Grant {
        expire: FPA_TOKEN_EXPIRE,
        services: vec![Service::fpa().with_privilege(privilege::FPA_LOGIN, 0)],
    }
}

/// Lower-case hex MD5 of the UTF-8 bytes: the Chat user id of an APaaS room user.
pub fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// `ApaasTokenBuilder.build_room_user_token` (= Education): APaaS roomUser,
/// RTM login for the user and Chat user for the MD5 of the user uuid.
pub fn apaas_room_user(room_uuid: &str, user_uuid: &str, role: i16, expire: u32) -> Grant {
    Grant {
        expire,
        services: vec![
            Service::apaas(room_uuid, user_uuid, role)
                .with_privilege(privilege::APAAS_ROOM_USER, expire),
            Service::rtm(user_uuid).with_privilege(privilege::RTM_LOGIN, expire),
            Service::chat(md5_hex(user_uuid)).with_privilege(privilege::CHAT_USER, expire),
        ],
    }
}

/// `ApaasTokenBuilder.build_user_token`: room `""`, role −1.
pub fn apaas_user(user_uuid: &str, expire: u32) -> Grant {
    Grant {
        expire,
        services: vec![
            Service::apaas("", user_uuid, -1).with_privilege(privilege::APAAS_USER, expire),
        ],
    }
}

/// `ApaasTokenBuilder.build_app_token`: room and user `""`, role −1.
pub fn apaas_app(expire: u32) -> Grant {
    Grant {
        expire,
        services: vec![Service::apaas("", "", -1).with_privilege(privilege::APAAS_APP, expire)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_back_their_names() {
        for role in [Role::Publisher, Role::Subscriber] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!(Role::Publisher.as_str(), "publisher");
        assert_eq!(Role::Subscriber.as_str(), "subscriber");
        for bad in ["", "Publisher", "admin", " subscriber"] {
            assert_eq!(bad.parse::<Role>(), Err(ParseRoleError));
        }
    }

    #[test]
    fn roles_follow_the_official_rule() {
        assert_eq!(Role::from_official(1), Role::Publisher);
        for r in [0, 2, 101] {
            assert_eq!(Role::from_official(r), Role::Subscriber);
        }
        let g = rtc_with_uid("c", 0, Role::Subscriber, 10, 5);
        assert_eq!(
            g.services[0].privileges.iter().collect::<Vec<_>>(),
            [(1, 5)]
        );
    }

    #[test]
    fn md5_of_user_uuid() {
        assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
