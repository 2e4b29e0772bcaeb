//! JSON of an [`Inspection`], in the proto3 JSON shape of the
//! `InspectTokenResponse` (lowerCamelCase, default values included).

use agora_token::Payload;
use serde_json::{Value, json};

use crate::issuer::{Inspection, SignatureStatus, TokenVersion};

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn clamp32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The InspectToken response JSON for `ins`.
pub fn to_json(ins: &Inspection) -> String {
    let services: Vec<Value> = ins
        .services
        .iter()
        .map(|s| {
            let privileges: Vec<Value> = s
                .privileges
                .iter()
                .map(|p| {
                    json!({
                        "id": p.id,
                        "name": p.name.unwrap_or(""),
                        "expireSeconds": p.expire,
                        "expiresAt": clamp32(p.expires_at),
                    })
                })
                .collect();
            let (mut channel, mut uid, mut user_id, mut account) =
                (String::new(), String::new(), String::new(), String::new());
            let (mut room, mut user, mut role) = (String::new(), String::new(), 0i32);
            let mut permissions = Vec::new();
            match &s.payload {
                Payload::Rtc { channel_name, uid: u } => {
                    channel = lossy(channel_name);
                    uid = lossy(u);
                }
                Payload::Rtm { user_id: u } | Payload::Chat { user_id: u } => user_id = lossy(u),
                Payload::Streaming { channel_name, account: a }
                | Payload::Fcdn { channel_name, account: a } => {
                    channel = lossy(channel_name);
                    account = lossy(a);
                }
                Payload::Apaas { room_uuid, user_uuid, role: r } => {
                    room = lossy(room_uuid);
                    user = lossy(user_uuid);
                    role = i32::from(*r);
                }
                Payload::Rtm2 { user_id: u, permissions: p } => {
                    user_id = lossy(u);
                    permissions = p
                        .grants()
                        .iter()
                        .map(|g| {
                            json!({
                                "resourceType": g.resource_type,
                                "permissionType": g.permission_type,
                                "resources": g.resources.iter().map(|r| lossy(r)).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                }
                Payload::Fpa | Payload::Other(_) => {}
            }
            json!({
                "type": s.service_type,
                "name": s.name,
                "privileges": privileges,
                "channelName": channel,
                "uid": uid,
                "userId": user_id,
                "account": account,
                "roomUuid": room,
                "userUuid": user,
                "role": role,
                "permissions": permissions,
            })
        })
        .collect();
    let mut v = json!({
        "version": match ins.version { TokenVersion::V007 => "007", TokenVersion::V006 => "006" },
        "appId": ins.app_id,
        "issuedAt": ins.issued_at,
        "expiresAt": clamp32(ins.expires_at),
        "expireSeconds": ins.expire,
        "salt": ins.salt,
        "services": services,
        "expired": ins.expired,
        "signature": match ins.signature {
            SignatureStatus::Valid => "SIGNATURE_STATUS_VALID",
            SignatureStatus::Invalid => "SIGNATURE_STATUS_INVALID",
            SignatureStatus::NotChecked => "SIGNATURE_STATUS_NOT_CHECKED",
        },
        "serviceCount": ins.service_count,
        "trailingBytes": ins.trailing_bytes,
        "bytesAfterZlibStream": ins.bytes_after_zlib_stream,
        "notes": ins.notes,
    });
    if let Some(t) = ins.stopped_at_unknown_service_type {
        v["stoppedAtUnknownServiceType"] = t.into();
    }
    if let Some((c, u)) = ins.v1_crc {
        v["v1CrcChannelName"] = c.into();
        v["v1CrcUid"] = u.into();
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for unix seconds (proleptic Gregorian, UTC).
pub fn rfc3339(ts: u64) -> String {
    let days = ts / 86_400;
    let secs = ts % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), on non-negative days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(u64::from(u32::MAX)), "2106-02-07T06:28:15Z");
    }
}
