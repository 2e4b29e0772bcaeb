//! Every RPC over gRPC; every token decoded and verified.

use agora_token::Payload;
use token_authority::pb::{self, build_rtc_token_request as rtc_req};
use tonic::Code;

use crate::common::*;

fn rtc(channel: &str, payload_uid: &str) -> Payload {
    Payload::Rtc {
        channel_name: channel.as_bytes().to_vec(),
        uid: payload_uid.as_bytes().to_vec(),
    }
}

#[tokio::test]
async fn build_rtc_token_uid_and_account() {
    let app = spawn_app().await;
    let mut c = app.grpc().await;
    let r = c
        .build_rtc_token(pb::BuildRtcTokenRequest {
            channel_name: "lobby".into(),
            user: Some(rtc_req::User::Uid(42)),
            expire_seconds: Some(600),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    assert_eq!(r.app_id, APP_ID);
    assert_eq!(t.issue_ts(), r.issued_at);
    assert_eq!(t.expire(), 600);
    assert_eq!(r.expires_at, r.issued_at + 600);
    assert_eq!(t.services().len(), 1);
    assert_eq!(t.services()[0].payload, rtc("lobby", "42"));
    assert_eq!(
        privileges(&t, 0),
        vec![(1, 600), (2, 600), (3, 600), (4, 600)]
    );

    // Account, subscriber, privilege expiry 0 packed as 0, default lifetime.
    let r = c
        .build_rtc_token(pb::BuildRtcTokenRequest {
            channel_name: "".into(),
            user: Some(rtc_req::User::Account("alice".into())),
            role: pb::Role::Subscriber as i32,
            privilege_expire_seconds: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    assert_eq!(t.expire(), 3600);
    assert_eq!(r.expires_at - r.issued_at, 3600);
    assert_eq!(t.services()[0].payload, rtc("", "alice"));
    assert_eq!(privileges(&t, 0), vec![(1, 0)]);

    // No user: uid 0, packed as "" (any user).
    let r = c
        .build_rtc_token(pb::BuildRtcTokenRequest {
            channel_name: "c".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified(&r.token, CERT).services()[0].payload, rtc("c", ""));
}

#[tokio::test]
async fn app_id_selects_the_app() {
    let app = spawn_app().await;
    let mut c = app.grpc().await;
    let r = c
        .build_rtc_token(pb::BuildRtcTokenRequest {
            channel_name: "c".into(),
            app_id: APP_ID2.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.app_id, APP_ID2);
    let t = verified(&r.token, CERT2);
    assert_eq!(t.app_id(), APP_ID2.as_bytes());
    let e = c
        .build_rtc_token(pb::BuildRtcTokenRequest {
            app_id: "ffffffffffffffffffffffffffffffff".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().starts_with("app_id"), "{}", e.message());
}

#[tokio::test]
async fn build_rtc_token_with_privileges() {
    let app = spawn_app().await;
    let r = app
        .grpc()
        .await
        .build_rtc_token_with_privileges(pb::BuildRtcTokenWithPrivilegesRequest {
            channel_name: "stage".into(),
            user: Some(pb::build_rtc_token_with_privileges_request::User::Uid(9)),
            expire_seconds: Some(1000),
            join_channel_expire_seconds: Some(900),
            publish_audio_expire_seconds: Some(0),
            publish_data_expire_seconds: Some(50),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    assert_eq!(t.expire(), 1000);
    assert_eq!(t.services()[0].payload, rtc("stage", "9"));
    assert_eq!(
        privileges(&t, 0),
        vec![(1, 900), (2, 0), (3, 1000), (4, 50)]
    );
}

#[tokio::test]
async fn build_rtc_rtm_token() {
    let app = spawn_app().await;
    let mut c = app.grpc().await;
    let r = c
        .build_rtc_rtm_token(pb::BuildRtcRtmTokenRequest {
            channel_name: "room".into(),
            user: Some(pb::build_rtc_rtm_token_request::User::Uid(7)),
            expire_seconds: Some(500),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    assert_eq!(t.services().len(), 2);
    assert_eq!(t.services()[0].payload, rtc("room", "7"));
    assert_eq!(
        privileges(&t, 0),
        vec![(1, 500), (2, 500), (3, 500), (4, 500)]
    );
    assert_eq!(
        t.services()[1].payload,
        Payload::Rtm {
            user_id: b"7".to_vec()
        }
    );
    assert_eq!(privileges(&t, 1), vec![(1, 500)]);

    let r = c
        .build_rtc_rtm_token(pb::BuildRtcRtmTokenRequest {
            channel_name: "room".into(),
            user: Some(pb::build_rtc_rtm_token_request::User::Account(
                "agent".into(),
            )),
            role: pb::Role::Subscriber as i32,
            rtm_user_id: Some("agent-rtm".into()),
            rtm_expire_seconds: Some(60),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    assert_eq!(privileges(&t, 0), vec![(1, 3600)]);
    assert_eq!(
        t.services()[1].payload,
        Payload::Rtm {
            user_id: b"agent-rtm".to_vec()
        }
    );
    assert_eq!(privileges(&t, 1), vec![(1, 60)]);
}

#[tokio::test]
async fn build_rtm_token_rtm_and_rtm2() {
    let app = spawn_app().await;
    let mut c = app.grpc().await;
    let r = c
        .build_rtm_token(pb::BuildRtmTokenRequest {
            user_id: "alice".into(),
            expire_seconds: Some(120),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    assert_eq!(
        t.services()[0].payload,
        Payload::Rtm {
            user_id: b"alice".to_vec()
        }
    );
    assert_eq!(privileges(&t, 0), vec![(1, 120)]);

    let r = c
        .build_rtm_token(pb::BuildRtmTokenRequest {
            user_id: "alice".into(),
            permissions: vec![pb::Rtm2Permission {
                resource_type: 0,
                permission_type: 1,
                resources: vec!["chan-a".into(), "chan-b".into()],
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    assert_eq!(t.services()[0].service_type(), 8);
    let Payload::Rtm2 {
        user_id,
        permissions,
    } = &t.services()[0].payload
    else {
        panic!("not RTM2: {:?}", t.services()[0].payload);
    };
    assert_eq!(user_id, b"alice");
    let g = &permissions.grants()[0];
    assert_eq!((g.resource_type, g.permission_type), (0, 1));
    assert_eq!(g.resources, vec![b"chan-a".to_vec(), b"chan-b".to_vec()]);
}

#[tokio::test]
async fn chat_and_fpa_tokens() {
    let app = spawn_app().await;
    let mut c = app.grpc().await;
    let r = c
        .build_chat_user_token(pb::BuildChatUserTokenRequest {
            user_id: "bob".into(),
            expire_seconds: Some(300),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    assert_eq!(
        t.services()[0].payload,
        Payload::Chat {
            user_id: b"bob".to_vec()
        }
    );
    assert_eq!(privileges(&t, 0), vec![(1, 300)]);

    let r = c
        .build_chat_app_token(pb::BuildChatAppTokenRequest::default())
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    assert_eq!(
        t.services()[0].payload,
        Payload::Chat {
            user_id: Vec::new()
        }
    );
    assert_eq!(privileges(&t, 0), vec![(2, 3600)]);

    let r = c
        .build_fpa_token(pb::BuildFpaTokenRequest::default())
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    assert_eq!(t.expire(), 86_400);
    assert_eq!(t.services()[0].payload, Payload::Fpa);
    assert_eq!(privileges(&t, 0), vec![(1, 0)]);
}

fn priv_(id: u32, expire_seconds: u32) -> pb::Privilege {
    pb::Privilege { id, expire_seconds }
}

#[tokio::test]
async fn build_token_generic_covers_every_type() {
    use pb::ServiceType as T;
    let app = spawn_app().await;
    let s = |t: T| pb::Service {
        r#type: t as i32,
        ..Default::default()
    };
    let services = vec![
        pb::Service {
            channel_name: "c".into(),
            uid: "5".into(),
            privileges: vec![priv_(1, 100)],
            ..s(T::Rtc)
        },
        pb::Service {
            user_id: "u".into(),
            privileges: vec![priv_(1, 100)],
            ..s(T::Rtm)
        },
        pb::Service {
            channel_name: "c".into(),
            account: "a".into(),
            privileges: vec![priv_(1, 10), priv_(2, 20)],
            ..s(T::Streaming)
        },
        pb::Service {
            privileges: vec![priv_(1, 0)],
            ..s(T::Fpa)
        },
        pb::Service {
            user_id: "u".into(),
            privileges: vec![priv_(1, 100)],
            ..s(T::Chat)
        },
        pb::Service {
            channel_name: "c".into(),
            account: "a".into(),
            privileges: vec![priv_(2, 30)],
            ..s(T::Fcdn)
        },
        pb::Service {
            room_uuid: "room".into(),
            user_uuid: "user".into(),
            role: Some(2),
            privileges: vec![priv_(1, 100)],
            ..s(T::Apaas)
        },
        pb::Service {
            user_id: "u".into(),
            permissions: vec![pb::Rtm2Permission {
                resource_type: 4,
                permission_type: 0,
                resources: vec!["x".into()],
            }],
            privileges: vec![priv_(1, 100)],
            ..s(T::Rtm2)
        },
    ];
    let r = app
        .grpc()
        .await
        .build_token(pb::BuildTokenRequest {
            services,
            expire_seconds: Some(200),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    assert_eq!(t.expire(), 200);
    let types: Vec<u16> = t
        .services()
        .iter()
        .map(agora_token::Service::service_type)
        .collect();
    assert_eq!(types, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(t.services()[0].payload, rtc("c", "5"));
    assert_eq!(privileges(&t, 2), vec![(1, 10), (2, 20)]);
    assert_eq!(
        t.services()[6].payload,
        Payload::Apaas {
            room_uuid: b"room".to_vec(),
            user_uuid: b"user".to_vec(),
            role: 2
        }
    );
}

#[tokio::test]
async fn build_token_refuses_fields_of_another_type() {
    let app = spawn_app().await;
    let e = app
        .grpc()
        .await
        .build_token(pb::BuildTokenRequest {
            services: vec![pb::Service {
                r#type: pb::ServiceType::Rtm as i32,
                user_id: "u".into(),
                channel_name: "c".into(),
                privileges: vec![priv_(1, 1)],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("services[0].channel_name"),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn inspect_token_007_and_006() {
    let app = spawn_app().await;
    let mut c = app.grpc().await;
    let built = c
        .build_rtc_rtm_token(pb::BuildRtcRtmTokenRequest {
            channel_name: "room".into(),
            user: Some(pb::build_rtc_rtm_token_request::User::Uid(7)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ins = c
        .inspect_token(pb::InspectTokenRequest {
            token: built.token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ins.version, "007");
    assert_eq!(ins.app_id, APP_ID);
    assert_eq!(ins.issued_at, built.issued_at);
    assert_eq!(ins.expires_at, built.expires_at);
    assert_eq!(ins.expire_seconds, 3600);
    assert!(!ins.expired);
    assert_eq!(ins.signature, pb::SignatureStatus::Valid as i32);
    assert_eq!(ins.service_count, 2);
    assert_eq!(ins.services[0].r#type, pb::ServiceType::Rtc as i32);
    assert_eq!(ins.services[0].name, "RTC");
    assert_eq!(ins.services[0].channel_name, "room");
    assert_eq!(ins.services[0].uid, "7");
    assert_eq!(ins.services[0].privileges[0].name, "joinChannel");
    assert_eq!(ins.services[0].privileges[0].expire_seconds, 3600);
    assert_eq!(ins.services[0].privileges[0].expires_at, built.expires_at);
    assert_eq!(ins.services[1].user_id, "7");

    // A token of an app configured here, signed with another certificate.
    let forged =
        agora_token::builders::rtc_with_uid("room", 7, agora_token::Role::Publisher, 60, 60)
            .build(
                &agora_token::AppId::new(APP_ID).unwrap(),
                &cert(CERT2),
                1_700_000_000,
                1,
            )
            .unwrap();
    let ins = c
        .inspect_token(pb::InspectTokenRequest {
            token: forged,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ins.signature, pb::SignatureStatus::Invalid as i32);
    assert!(ins.expired);

    // A token of an app not configured here.
    let other = agora_token::builders::chat_app(60)
        .build(
            &agora_token::AppId::new("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap(),
            &cert(CERT),
            1_700_000_000,
            1,
        )
        .unwrap();
    let ins = c
        .inspect_token(pb::InspectTokenRequest {
            token: other,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ins.signature, pb::SignatureStatus::NotChecked as i32);

    // Legacy 006 (official python3 vector): recognised; verified with its
    // channel and uid.
    let v006 = "006970CA35de60c44645bbae8a215061b33IACMv3I+fsRSejxy6luEwzA/1t/zbEHWfJCJ5m8ssFP/fLdIfRBXoFHlIgABAAAAR/QQAAQAAQCvKDdWAgCvKDdWAwCvKDdWBACvKDdW";
    let ins = c
        .inspect_token(pb::InspectTokenRequest {
            token: v006.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ins.version, "006");
    assert_eq!(ins.signature, pb::SignatureStatus::NotChecked as i32);
    assert_eq!(ins.v1_crc_channel_name, Some(276_646_071));
    assert_eq!(ins.services[0].privileges.len(), 4);
    assert_eq!(ins.services[0].privileges[0].expires_at, 1_446_455_471);
    let ins = c
        .inspect_token(pb::InspectTokenRequest {
            token: v006.into(),
            channel_name: "7d72365eb983485397e3e3f9d460bdda".into(),
            user: Some(pb::inspect_token_request::User::Uid(2_882_341_273)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ins.signature, pb::SignatureStatus::Valid as i32);

    let e = c
        .inspect_token(pb::InspectTokenRequest {
            token: "007garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("token"), "{}", e.message());
}

#[tokio::test]
async fn build_agent_session() {
    let app = spawn_app().await;
    let mut c = app.grpc().await;
    let r = c
        .build_agent_session(pb::BuildAgentSessionRequest {
            channel_name: "convo".into(),
            agent_uid: "1001".into(),
            user_uid: "2002".into(),
            expire_seconds: Some(900),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.expires_at - r.issued_at, 900);
    assert_eq!(r.app_id, APP_ID);
    let agent = verified(&r.agent_token, CERT);
    assert_eq!(agent.services().len(), 1);
    assert_eq!(agent.services()[0].payload, rtc("convo", "1001"));
    let user = verified(&r.user_token, CERT);
    assert_eq!(user.services()[0].payload, rtc("convo", "2002"));
    let rest = verified(&r.rest_token, CERT);
    assert_eq!(rest.services().len(), 2);
    assert_eq!(rest.services()[0].payload, rtc("convo", "1001"));
    assert_eq!(
        rest.services()[1].payload,
        Payload::Rtm {
            user_id: b"1001".to_vec()
        }
    );
    assert_eq!(rest.expire(), 900);

    let r = c
        .build_agent_session(pb::BuildAgentSessionRequest {
            channel_name: "convo".into(),
            agent_uid: "agent".into(),
            user_uid: "human".into(),
            string_uid: true,
            enable_rtm: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let agent = verified(&r.agent_token, CERT);
    assert_eq!(agent.services()[0].payload, rtc("convo", "agent"));
    assert_eq!(
        agent.services()[1].payload,
        Payload::Rtm {
            user_id: b"agent".to_vec()
        }
    );
    let user = verified(&r.user_token, CERT);
    assert_eq!(
        user.services()[1].payload,
        Payload::Rtm {
            user_id: b"human".to_vec()
        }
    );
    assert_eq!(r.agent_token, r.rest_token);
}

#[tokio::test]
async fn build_apaas_token_kinds() {
    use pb::ApaasTokenKind as K;
    let app = spawn_app().await;
    let mut c = app.grpc().await;
    let r = c
        .build_apaas_token(pb::BuildApaasTokenRequest {
            kind: K::RoomUser as i32,
            room_uuid: "room-1".into(),
            user_uuid: "user-1".into(),
            role: 2,
            expire_seconds: Some(900),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    let types: Vec<u16> = t
        .services()
        .iter()
        .map(agora_token::Service::service_type)
        .collect();
    // Packed in service-type order, as the official builders do.
    assert_eq!(types, vec![2, 5, 7]);
    assert_eq!(
        t.services()[2].payload,
        Payload::Apaas {
            room_uuid: b"room-1".to_vec(),
            user_uuid: b"user-1".to_vec(),
            role: 2
        }
    );
    assert_eq!(
        t.services()[1].payload,
        Payload::Chat {
            user_id: agora_token::builders::md5_hex("user-1").into_bytes()
        }
    );
    assert_eq!(privileges(&t, 2), vec![(1, 900)]);

    let r = c
        .build_apaas_token(pb::BuildApaasTokenRequest {
            kind: K::User as i32,
            user_uuid: "user-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    assert_eq!(privileges(&t, 0), vec![(2, 3600)]);

    let r = c
        .build_apaas_token(pb::BuildApaasTokenRequest {
            kind: K::App as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let t = verified(&r.token, CERT);
    assert_eq!(privileges(&t, 0), vec![(3, 3600)]);

    for (req, field) in [
        (pb::BuildApaasTokenRequest::default(), "kind"),
        (
            pb::BuildApaasTokenRequest {
                kind: K::App as i32,
                user_uuid: "u".into(),
                ..Default::default()
            },
            "user_uuid",
        ),
        (
            pb::BuildApaasTokenRequest {
                kind: K::RoomUser as i32,
                user_uuid: "u".into(),
                ..Default::default()
            },
            "room_uuid",
        ),
        (
            pb::BuildApaasTokenRequest {
                kind: K::RoomUser as i32,
                room_uuid: "r".into(),
                user_uuid: "u".into(),
                role: 40_000,
                ..Default::default()
            },
            "role",
        ),
    ] {
        let e = c.build_apaas_token(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with(field), "{}", e.message());
    }
}
