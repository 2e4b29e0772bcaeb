//! Every RPC over JSON at `POST /agora.token.v1.TokenService/<Method>`:
//! proto field names and lowerCamelCase accepted, lowerCamelCase answered,
//! default-valued fields present.

use agora_token::Payload;
use serde_json::Value;

use crate::common::*;

fn token_of(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .to_owned()
}

/// Checks the common token response fields and returns the decoded token.
fn check_response(v: &Value, lifetime: u64) -> agora_token::UnverifiedToken {
    let t = verified(&token_of(v, "token"), CERT);
    assert_eq!(v["appId"], APP_ID);
    let issued = v["issuedAt"].as_u64().unwrap();
    assert_eq!(issued, u64::from(t.issue_ts()));
    assert_eq!(v["expiresAt"].as_u64().unwrap(), issued + lifetime);
    t
}

#[tokio::test]
async fn every_token_rpc_over_json() {
    let app = spawn_app().await;
    let cases: &[(&str, &str, u64, &[u16])] = &[
        (
            "BuildRtcToken",
            r#"{"channelName":"lobby","uid":42,"expireSeconds":600}"#,
            600,
            &[1],
        ),
        (
            "BuildRtcToken",
            r#"{"channel_name":"lobby","account":"alice","role":"ROLE_SUBSCRIBER"}"#,
            3600,
            &[1],
        ),
        (
            "BuildRtcTokenWithPrivileges",
            r#"{"channelName":"s","uid":1,"joinChannelExpireSeconds":100,"publish_audio_expire_seconds":0}"#,
            3600,
            &[1],
        ),
        (
            "BuildRtcRtmToken",
            r#"{"channelName":"r","uid":7,"rtmUserId":"seven"}"#,
            3600,
            &[1, 2],
        ),
        (
            "BuildRtmToken",
            r#"{"userId":"alice","expireSeconds":60}"#,
            60,
            &[2],
        ),
        (
            "BuildRtmToken",
            r#"{"user_id":"alice","permissions":[{"resourceType":1,"permissionType":0,"resources":["s1"]}]}"#,
            3600,
            &[8],
        ),
        ("BuildChatUserToken", r#"{"userId":"bob"}"#, 3600, &[5]),
        ("BuildChatAppToken", r#"{}"#, 3600, &[5]),
        ("BuildFpaToken", r#""#, 86_400, &[4]),
        (
            "BuildApaasToken",
            r#"{"kind":"APAAS_TOKEN_KIND_ROOM_USER","roomUuid":"r","user_uuid":"u","role":1}"#,
            3600,
            &[2, 5, 7],
        ),
        (
            "BuildToken",
            r#"{"services":[{"type":"SERVICE_TYPE_FCDN","channelName":"c","account":"a","privileges":[{"id":1,"expireSeconds":5}]},
                            {"type":"SERVICE_TYPE_APAAS","roomUuid":"r","userUuid":"u","privileges":[{"id":1,"expire_seconds":5}]}],
                "expireSeconds":30}"#,
            30,
            &[6, 7],
        ),
    ];
    for (rpc, body, lifetime, types) in cases {
        let r = app.post_json(rpc, body).await;
        assert_eq!(r.status, 200, "{rpc} {body}: {}", r.body);
        assert_eq!(r.headers["content-type"], "application/json");
        let t = check_response(&r.json(), *lifetime);
        let got: Vec<u16> = t
            .services()
            .iter()
            .map(agora_token::Service::service_type)
            .collect();
        assert_eq!(&got, types, "{rpc} {body}");
    }
    // Field mapping spot checks.
    let r = app
        .post_json(
            "BuildRtcRtmToken",
            r#"{"channelName":"r","uid":7,"rtmUserId":"seven"}"#,
        )
        .await;
    let t = verified(&token_of(&r.json(), "token"), CERT);
    assert_eq!(
        t.services()[1].payload,
        Payload::Rtm {
            user_id: b"seven".to_vec()
        }
    );
    let r = app
        .post_json(
            "BuildRtcTokenWithPrivileges",
            r#"{"channelName":"s","uid":1,"joinChannelExpireSeconds":100,"publish_audio_expire_seconds":0}"#,
        )
        .await;
    let t = verified(&token_of(&r.json(), "token"), CERT);
    assert_eq!(
        privileges(&t, 0),
        vec![(1, 100), (2, 0), (3, 3600), (4, 3600)]
    );
}

#[tokio::test]
async fn agent_session_over_json() {
    let app = spawn_app().await;
    let r = app
        .post_json(
            "BuildAgentSession",
            r#"{"channelName":"convo","agentUid":"1001","userUid":"2002","enableRtm":true}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    for key in ["agentToken", "userToken", "restToken"] {
        let t = verified(&token_of(&v, key), CERT);
        assert_eq!(t.services().len(), 2, "{key}");
    }
    assert_eq!(
        v["expiresAt"].as_u64().unwrap() - v["issuedAt"].as_u64().unwrap(),
        3600
    );
    assert_eq!(v["appId"], APP_ID);
}

#[tokio::test]
async fn inspect_over_json_shows_defaults() {
    let app = spawn_app().await;
    let r = app
        .post_json("BuildRtcToken", r#"{"channelName":"c","uid":3}"#)
        .await;
    let token = token_of(&r.json(), "token");
    let r = app
        .post_json(
            "InspectToken",
            &serde_json::json!({ "token": token }).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["version"], "007");
    assert_eq!(v["expired"], false);
    assert_eq!(v["signature"], "SIGNATURE_STATUS_VALID");
    assert_eq!(v["services"][0]["type"], "SERVICE_TYPE_RTC");
    assert_eq!(v["services"][0]["uid"], "3");
    assert_eq!(v["services"][0]["roomUuid"], "");
    assert_eq!(v["trailingBytes"], 0);
    assert!(v["notes"].as_array().unwrap().is_empty());
    // The CLI's `inspect --json` prints the same body.
    let ins = app
        .handle
        .shared()
        .current()
        .issuer
        .inspect(&token, None)
        .unwrap();
    let cli: Value = serde_json::from_str(&token_authority::api::inspection_json(&ins)).unwrap();
    let mut served = v.clone();
    served["expired"] = cli["expired"].clone();
    assert_eq!(served, cli);
}

/// A certificate pasted into `appId`, or into a field name, is not echoed
/// in the error (at most an 8-character prefix).
#[tokio::test]
async fn values_that_may_be_secrets_are_not_echoed() {
    let app = spawn_app().await;
    for body in [
        format!(r#"{{"channelName":"c","appId":"{CERT}"}}"#),
        format!(r#"{{"channelName":"c","{CERT}":1}}"#),
        format!(r#"{{"channelName":"c","role":"{CERT}"}}"#),
    ] {
        let r = app.post_json("BuildRtcToken", &body).await;
        assert!(r.status == 404 || r.status == 400, "{}", r.status);
        assert!(!r.body.contains(&CERT[..9]), "{}", r.body);
        assert!(r.body.contains("5CFd2fd1…"), "{}", r.body);
    }
}
