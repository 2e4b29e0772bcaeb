//! The bad-input matrix over both transports: each case gets the right
//! status and a message naming the field, and the server stays up.

use token_authority::pb::{self, build_rtc_token_request as rtc_req};
use tonic::Code;

use crate::common::*;

async fn still_up(app: &TestApp) {
    assert_eq!(app.get("/healthz").await.status, 200);
    let r = app.get("/api/agora/token?channelName=ok").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn get_endpoint_matrix() {
    let app = spawn_app().await;
    let long = "x".repeat(65);
    let cases = [
        (String::new(), "channelName"),
        ("uid=1".to_owned(), "channelName"),
        (format!("channelName={long}"), "channelName"),
        ("channelName=a%2Fb".to_owned(), "channelName"),
        ("channelName=caf%C3%A9".to_owned(), "channelName"),
        ("channelName=a%00b".to_owned(), "channelName"),
        ("channelName=c&uid=-1".to_owned(), "uid"),
        ("channelName=c&uid=4294967296".to_owned(), "uid"),
        ("channelName=c&uid=abc".to_owned(), "uid"),
        ("channelName=c&uid=".to_owned(), "uid"),
        ("channelName=c&uid=+1".to_owned(), "uid"),
        ("channelName=c&role=admin".to_owned(), "role"),
        ("channelName=c&role=".to_owned(), "role"),
        ("channelName=c&expireSeconds=0".to_owned(), "expireSeconds"),
        (
            "channelName=c&expireSeconds=86401".to_owned(),
            "expireSeconds",
        ),
        ("channelName=c&expireSeconds=1h".to_owned(), "expireSeconds"),
        ("channelName=c&expireSeconds=-5".to_owned(), "expireSeconds"),
        (
            "channelName=c&expireSeconds=99999999999999999999".to_owned(),
            "expireSeconds",
        ),
    ];
    for (query, param) in &cases {
        let r = app.get(&format!("/api/agora/token?{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert!(
            r.body.starts_with(&format!("{param}: ")),
            "{query}: {}",
            r.body
        );
        assert_eq!(r.body.trim_end().lines().count(), 1, "{query}: one line");
        assert_eq!(r.headers["cache-control"], "no-store");
    }
    still_up(&app).await;
}

#[tokio::test]
async fn grpc_matrix() {
    let app = spawn_app().await;
    let mut c = app.grpc().await;
    let base = || pb::BuildRtcTokenRequest {
        channel_name: "c".into(),
        ..Default::default()
    };
    let cases: Vec<(pb::BuildRtcTokenRequest, Code, &str)> = vec![
        (
            pb::BuildRtcTokenRequest {
                channel_name: "x".repeat(65),
                ..base()
            },
            Code::InvalidArgument,
            "channel_name",
        ),
        (
            pb::BuildRtcTokenRequest {
                channel_name: "a/b".into(),
                ..base()
            },
            Code::InvalidArgument,
            "channel_name",
        ),
        (
            pb::BuildRtcTokenRequest {
                user: Some(rtc_req::User::Account(String::new())),
                ..base()
            },
            Code::InvalidArgument,
            "account",
        ),
        (
            pb::BuildRtcTokenRequest {
                user: Some(rtc_req::User::Account("a\"b".into())),
                ..base()
            },
            Code::InvalidArgument,
            "account",
        ),
        (
            pb::BuildRtcTokenRequest { role: 9, ..base() },
            Code::InvalidArgument,
            "role",
        ),
        (
            pb::BuildRtcTokenRequest {
                expire_seconds: Some(0),
                ..base()
            },
            Code::InvalidArgument,
            "expire_seconds",
        ),
        (
            pb::BuildRtcTokenRequest {
                expire_seconds: Some(86_401),
                ..base()
            },
            Code::InvalidArgument,
            "expire_seconds",
        ),
        (
            pb::BuildRtcTokenRequest {
                privilege_expire_seconds: Some(86_401),
                ..base()
            },
            Code::InvalidArgument,
            "privilege_expire_seconds",
        ),
        (
            pb::BuildRtcTokenRequest {
                app_id: "0000000000000000000000000000000f".into(),
                ..base()
            },
            Code::NotFound,
            "app_id",
        ),
    ];
    for (req, code, field) in cases {
        let e = c.build_rtc_token(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {}", e.message());
        assert!(e.message().starts_with(field), "{req:?}: {}", e.message());
    }
    // Uids as strings (ConvoAI style).
    for (agent, user, field) in [
        ("-1", "1", "agent_uid"),
        ("4294967296", "1", "agent_uid"),
        ("1", "abc", "user_uid"),
        ("", "1", "agent_uid"),
    ] {
        let e = c
            .build_agent_session(pb::BuildAgentSessionRequest {
                channel_name: "c".into(),
                agent_uid: agent.into(),
                user_uid: user.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().starts_with(field),
            "{agent} {user}: {}",
            e.message()
        );
    }
    for (req, field) in [
        (pb::BuildRtmTokenRequest::default(), "user_id"),
        (
            pb::BuildRtmTokenRequest {
                user_id: "u".repeat(65),
                ..Default::default()
            },
            "user_id",
        ),
        (
            pb::BuildRtmTokenRequest {
                user_id: "u".into(),
                permissions: vec![pb::Rtm2Permission {
                    resource_type: 70_000,
                    ..Default::default()
                }],
                ..Default::default()
            },
            "permissions[0].resource_type",
        ),
    ] {
        let e = c.build_rtm_token(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with(field), "{}", e.message());
    }
    let e = c
        .build_token(pb::BuildTokenRequest::default())
        .await
        .unwrap_err();
    assert!(e.message().starts_with("services"), "{}", e.message());
    // Oversized message: refused by the decoder, not a crash.
    let e = c
        .build_chat_user_token(pb::BuildChatUserTokenRequest {
            user_id: "u".repeat(100 * 1024),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{}", e.message());
    still_up(&app).await;
    // The same channel still works afterwards.
    assert!(c.build_rtc_token(base()).await.is_ok());
}

#[tokio::test]
async fn json_matrix() {
    let app = spawn_app().await;
    let long = "x".repeat(65);
    let cases: Vec<(String, u16, &str, &str)> = vec![
        (
            r#"{"channelName":"c","uid":-1}"#.into(),
            400,
            "invalid_argument",
            "uid",
        ),
        (
            r#"{"channelName":"c","uid":4294967296}"#.into(),
            400,
            "invalid_argument",
            "uid",
        ),
        (
            r#"{"channelName":"c","uid":"abc"}"#.into(),
            400,
            "invalid_argument",
            "uid",
        ),
        (
            r#"{"channelName":"c","role":"admin"}"#.into(),
            400,
            "invalid_argument",
            "role",
        ),
        (
            r#"{"channelName":"c","expireSeconds":0}"#.into(),
            400,
            "invalid_argument",
            "expire_seconds",
        ),
        (
            r#"{"channelName":"c","expireSeconds":86401}"#.into(),
            400,
            "invalid_argument",
            "expire_seconds",
        ),
        (
            r#"{"channelName":"c","expireSeconds":"1h"}"#.into(),
            400,
            "invalid_argument",
            "expireSeconds",
        ),
        (
            format!(r#"{{"channelName":"{long}"}}"#),
            400,
            "invalid_argument",
            "channel_name",
        ),
        (
            r#"{"channelName":"a/b"}"#.into(),
            400,
            "invalid_argument",
            "channel_name",
        ),
        (
            r#"{"channel_name":"c","uid":1,"account":"a"}"#.into(),
            400,
            "invalid_argument",
            "account",
        ),
        (
            r#"{"channelName":"c","appId":"0000000000000000000000000000000f"}"#.into(),
            404,
            "not_found",
            "app_id",
        ),
        (
            r#"{"channelName":"c""#.into(),
            400,
            "invalid_argument",
            "body",
        ),
        (r#"not json"#.into(), 400, "invalid_argument", "body"),
        (r#"[]"#.into(), 400, "invalid_argument", "body"),
        (
            r#"{"channelName":"c","bogus":1}"#.into(),
            400,
            "invalid_argument",
            "bogus",
        ),
    ];
    for (body, status, code, field) in &cases {
        let r = app.post_json("BuildRtcToken", body).await;
        assert_eq!(r.status, *status, "{body}: {}", r.body);
        let v = r.json();
        assert_eq!(v["code"], *code, "{body}: {}", r.body);
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains(field), "{body}: {msg}");
    }
    // Oversized body: resource_exhausted with the Connect table's status
    // (429), naming the limit.
    let big = format!(r#"{{"channelName":"{}"}}"#, "x".repeat(70 * 1024));
    let r = app.post_json("BuildRtcToken", &big).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["code"], "resource_exhausted");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("max_request_bytes")
    );
    // Wrong content type: 415.
    let r = app
        .request_to(
            app.addr(),
            "POST",
            "/agora.token.v1.TokenService/BuildRtcToken",
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.body);
    assert_eq!(
        r.headers.get("accept-post").unwrap(),
        "application/json, application/proto"
    );
    still_up(&app).await;
}
