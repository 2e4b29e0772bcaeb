//! Proto messages <-> domain requests and results: field mapping only
//! (enums, oneofs, generic services); every rule lives in the domain.

use crate::domain::rules::Violation;
use crate::domain::{Common, IssueError, Issued};
use crate::pb;
use agora_token::{Payload, Privileges, Rtm2Permissions, Service};

macro_rules! token_response {
    ($($t:ident),* $(,)?) => {$(
        impl From<Issued> for pb::$t {
            fn from(i: Issued) -> Self {
                Self { token: i.token, issued_at: i.issued_at, expires_at: i.expires_at, app_id: i.app_id }
            }
        }
    )*};
}

token_response!(
    BuildRtcTokenResponse,
    BuildRtcTokenWithPrivilegesResponse,
    BuildRtcRtmTokenResponse,
    BuildRtmTokenResponse,
    BuildChatUserTokenResponse,
    BuildChatAppTokenResponse,
    BuildFpaTokenResponse,
    BuildApaasTokenResponse,
    BuildTokenResponse,
);

/// The `user` oneof of a request as an issuer [`RtcUser`] (absent: the
/// identity a JWT caller is bound to, else uid 0).
macro_rules! rtc_user {
    ($who:expr, $user:expr, $module:ident) => {
        match $user {
            None => bound_rtc_user($who),
            Some(pb::$module::User::Uid(u)) => RtcUser::Uid(u),
            Some(pb::$module::User::Account(a)) => RtcUser::Account(a),
        }
    };
}

/// The RTC identity a request without one gets: the JWT caller's bound
/// identity, else uid 0 (any user).
pub(crate) fn bound_rtc_user(who: &crate::policy::Authn) -> crate::domain::RtcUser {
    use crate::domain::RtcUser;
    use crate::policy::jwt::Bound;
    match who.identity.as_ref().ok().and_then(|i| i.bound()) {
        Some(Bound::Uid(u)) => RtcUser::Uid(*u),
        Some(Bound::Account(a)) => RtcUser::Account(a.clone()),
        None => RtcUser::Uid(0),
    }
}

/// An RTM / Chat user id; an empty one is the JWT caller's bound identity.
pub(crate) fn bound_user_id(who: &crate::policy::Authn, user_id: String) -> String {
    if !user_id.is_empty() {
        return user_id;
    }
    who.identity
        .as_ref()
        .ok()
        .and_then(|i| i.bound())
        .map_or(user_id, crate::policy::jwt::Bound::as_user_id)
}

pub(crate) fn role(v: i32) -> Result<agora_token::Role, IssueError> {
    match pb::Role::try_from(v) {
        Ok(pb::Role::Unspecified | pb::Role::Publisher) => Ok(agora_token::Role::Publisher),
        Ok(pb::Role::Subscriber) => Ok(agora_token::Role::Subscriber),
        Err(_) => Err(Violation::new("role", "must be ROLE_PUBLISHER or ROLE_SUBSCRIBER").into()),
    }
}

pub(crate) fn common(app_id: String, expire: Option<u32>) -> Common {
    Common {
        app_id: Some(app_id),
        expire,
    }
}

/// An official RTM2 number given as `uint32`; values beyond `u16` become
/// `u16::MAX`, which the issuer rejects with its own rule.
pub(crate) fn rtm2_number(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

pub(crate) fn rtm2_permissions(perms: &[pb::Rtm2Permission]) -> Vec<(u16, u16, Vec<String>)> {
    perms
        .iter()
        .map(|p| {
            (
                rtm2_number(p.resource_type),
                rtm2_number(p.permission_type),
                p.resources.clone(),
            )
        })
        .collect()
}

/// A generic service from its proto form: picks the payload of its type and
/// refuses payload fields that type does not have (they would be dropped).
pub(crate) fn service_from_pb(i: usize, s: pb::Service) -> Result<Service, IssueError> {
    use pb::ServiceType as T;
    let field = |n: &str| format!("services[{i}].{n}");
    let ty = T::try_from(s.r#type).unwrap_or(T::Unspecified);
    let set: [(&str, bool); 7] = [
        ("channel_name", !s.channel_name.is_empty()),
        ("uid", !s.uid.is_empty()),
        ("account", !s.account.is_empty()),
        ("user_id", !s.user_id.is_empty()),
        ("room_uuid", !s.room_uuid.is_empty()),
        ("user_uuid", !s.user_uuid.is_empty()),
        ("permissions", !s.permissions.is_empty()),
    ];
    let allowed: &[&str] = match ty {
        T::Rtc => &["channel_name", "uid"],
        T::Rtm | T::Chat => &["user_id"],
        T::Streaming | T::Fcdn => &["channel_name", "account"],
        T::Fpa => &[],
        T::Apaas => &["room_uuid", "user_uuid"],
        T::Rtm2 => &["user_id", "permissions"],
        T::Unspecified => {
            return Err(Violation::new(
                field("type"),
                "must be a service type: SERVICE_TYPE_RTC, _RTM, _STREAMING, _FPA, _CHAT, _FCDN, _APAAS or _RTM2",
            )
            .into());
        }
    };
    if let Some((name, _)) = set
        .iter()
        .find(|(name, is_set)| *is_set && !allowed.contains(name))
    {
        return Err(Violation::new(
            field(name),
            format!("is not a field of a {} service", ty.as_str_name()),
        )
        .into());
    }
    if s.role.is_some() && ty != T::Apaas {
        return Err(Violation::new(
            field("role"),
            format!("is not a field of a {} service", ty.as_str_name()),
        )
        .into());
    }
    let payload = match ty {
        T::Rtc => Payload::Rtc {
            channel_name: s.channel_name.into_bytes(),
            uid: s.uid.into_bytes(),
        },
        T::Rtm => Payload::Rtm {
            user_id: s.user_id.into_bytes(),
        },
        T::Streaming => Payload::Streaming {
            channel_name: s.channel_name.into_bytes(),
            account: s.account.into_bytes(),
        },
        T::Fpa => Payload::Fpa,
        T::Chat => Payload::Chat {
            user_id: s.user_id.into_bytes(),
        },
        T::Fcdn => Payload::Fcdn {
            channel_name: s.channel_name.into_bytes(),
            account: s.account.into_bytes(),
        },
        T::Apaas => Payload::Apaas {
            room_uuid: s.room_uuid.into_bytes(),
            user_uuid: s.user_uuid.into_bytes(),
            role: i16::try_from(s.role.unwrap_or(-1))
                .map_err(|_| Violation::new(field("role"), "must be -32768..=32767"))?,
        },
        T::Rtm2 => {
            let mut p = Rtm2Permissions::new();
            for g in &s.permissions {
                p.add(
                    rtm2_number(g.resource_type),
                    rtm2_number(g.permission_type),
                    g.resources.iter().map(String::as_str),
                );
            }
            Payload::Rtm2 {
                user_id: s.user_id.into_bytes(),
                permissions: p,
            }
        }
        T::Unspecified => Payload::Other(0),
    };
    let mut privileges = Privileges::new();
    for (j, p) in s.privileges.iter().enumerate() {
        let id = u16::try_from(p.id).map_err(|_| {
            Violation::new(
                field(&format!("privileges[{j}].id")),
                format!("privilege {} does not exist", p.id),
            )
        })?;
        privileges.set(id, p.expire_seconds);
    }
    Ok(Service::new(payload, privileges))
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn saturate(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The proto form of an inspection (also the JSON of `InspectToken`).
pub fn inspection_to_pb(ins: &crate::domain::Inspection) -> pb::InspectTokenResponse {
    let services = ins
        .services
        .iter()
        .map(|s| {
            let mut out = pb::InspectedService {
                r#type: i32::from(s.service_type),
                name: s.name.to_owned(),
                privileges: s
                    .privileges
                    .iter()
                    .map(|p| pb::InspectedPrivilege {
                        id: u32::from(p.id),
                        name: p.name.unwrap_or_default().to_owned(),
                        expire_seconds: p.expire,
                        expires_at: saturate(p.expires_at),
                    })
                    .collect(),
                ..Default::default()
            };
            match &s.payload {
                Payload::Rtc { channel_name, uid } => {
                    out.channel_name = lossy(channel_name);
                    out.uid = lossy(uid);
                }
                Payload::Rtm { user_id } | Payload::Chat { user_id } => {
                    out.user_id = lossy(user_id)
                }
                Payload::Streaming {
                    channel_name,
                    account,
                }
                | Payload::Fcdn {
                    channel_name,
                    account,
                } => {
                    out.channel_name = lossy(channel_name);
                    out.account = lossy(account);
                }
                Payload::Apaas {
                    room_uuid,
                    user_uuid,
                    role,
                } => {
                    out.room_uuid = lossy(room_uuid);
                    out.user_uuid = lossy(user_uuid);
                    out.role = i32::from(*role);
                }
                Payload::Rtm2 {
                    user_id,
                    permissions,
                } => {
                    out.user_id = lossy(user_id);
                    out.permissions = permissions
                        .grants()
                        .iter()
                        .map(|g| pb::Rtm2Permission {
                            resource_type: u32::from(g.resource_type),
                            permission_type: u32::from(g.permission_type),
                            resources: g.resources.iter().map(|r| lossy(r)).collect(),
                        })
                        .collect();
                }
                Payload::Fpa | Payload::Other(_) => {}
            }
            out
        })
        .collect();
    pb::InspectTokenResponse {
        version: match ins.version {
            crate::domain::TokenVersion::V007 => agora_token::VERSION.to_owned(),
            crate::domain::TokenVersion::V006 => agora_token::v1::VERSION.to_owned(),
        },
        app_id: ins.app_id.clone(),
        issued_at: ins.issued_at,
        expires_at: saturate(ins.expires_at),
        salt: ins.salt,
        services,
        expired: ins.expired,
        signature: match ins.signature {
            crate::domain::SignatureStatus::Valid => pb::SignatureStatus::Valid,
            crate::domain::SignatureStatus::Invalid => pb::SignatureStatus::Invalid,
            crate::domain::SignatureStatus::NotChecked => pb::SignatureStatus::NotChecked,
        } as i32,
        expire_seconds: ins.expire,
        service_count: u32::from(ins.service_count),
        stopped_at_unknown_service_type: ins.stopped_at_unknown_service_type.map(u32::from),
        trailing_bytes: saturate(ins.trailing_bytes as u64),
        bytes_after_zlib_stream: saturate(ins.bytes_after_zlib_stream as u64),
        v1_crc_channel_name: ins.v1_crc.map(|c| c.0),
        v1_crc_uid: ins.v1_crc.map(|c| c.1),
        notes: ins.notes.clone(),
    }
}

/// The JSON body `InspectToken` answers for this inspection (the CLI's
/// `inspect --json` prints the same).
pub fn inspection_json(ins: &crate::domain::Inspection) -> String {
    let msg = inspection_to_pb(ins);
    // Serializing generated messages into a String cannot fail: every field
    // is a string, number, bool, enum or list of those (invariant of the
    // proto); fall back to an empty object rather than panic.
    serde_json::to_string(&msg).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_service_payloads() {
        let e = service_from_pb(
            0,
            pb::Service {
                r#type: 99,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("services[0].type"), "{e}");
        let e = service_from_pb(
            1,
            pb::Service {
                r#type: pb::ServiceType::Rtc as i32,
                privileges: vec![pb::Privilege {
                    id: 70_000,
                    expire_seconds: 1,
                }],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("services[1].privileges[0].id"),
            "{e}"
        );
        let s = service_from_pb(
            0,
            pb::Service {
                r#type: pb::ServiceType::Apaas as i32,
                user_uuid: "u".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(matches!(s.payload, Payload::Apaas { role: -1, .. }));
    }

    #[test]
    fn inspection_json_matches_the_rpc() {
        use crate::domain::{AppCredentials, Fixed, Issuer, Limits, RtcRequest};
        use agora_token::{AppCertificate, AppId};
        let issuer = Issuer::new(vec![AppCredentials {
            app_id: AppId::new("970CA35de60c44645bbae8a215061b33").unwrap(),
            certificate: AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b").unwrap(),
            secondary: None,
        }])
        .with_clock(Fixed(1_700_000_000))
        .with_salt(Fixed(1));
        let req = RtcRequest {
            channel_name: "lobby".into(),
            ..Default::default()
        };
        let d = issuer.rtc(&req, &Limits::default()).unwrap();
        let t = issuer.sign(&d, &crate::domain::Permit::local()).unwrap();
        let ins = issuer.inspect(&t.token, None).unwrap();
        let json = inspection_json(&ins);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["version"], "007");
        assert_eq!(v["appId"], "970CA35de60c44645bbae8a215061b33");
        assert_eq!(v["issuedAt"], 1_700_000_000);
        assert_eq!(v["expiresAt"], 1_700_003_600);
        assert_eq!(v["expired"], false);
        assert_eq!(v["signature"], "SIGNATURE_STATUS_VALID");
        assert_eq!(v["services"][0]["type"], "SERVICE_TYPE_RTC");
        assert_eq!(v["services"][0]["channelName"], "lobby");
        assert_eq!(
            v["services"][0]["privileges"][0]["expiresAt"],
            1_700_003_600
        );
        let back: pb::InspectTokenResponse =
            crate::transport::http::json::decode(json.as_bytes()).unwrap();
        assert_eq!(back, crate::api::inspection_to_pb(&ins));
    }
}
