//! Property tests: build -> parse -> verify round trips over random
//! services, privileges and strings; parsing arbitrary input never panics
//! and never verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agora_token::{
    AccessToken, AppCertificate, AppId, Payload, Privileges, Rtm2Permissions, Service,
    UnverifiedToken,
};
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn privileges() -> impl Strategy<Value = Privileges> {
    prop::collection::vec((any::<u16>(), any::<u32>()), 0..6).prop_map(|v| v.into_iter().collect())
}

fn permissions() -> impl Strategy<Value = Rtm2Permissions> {
    prop::collection::vec(
        (0u16..6, 0u16..3, prop::collection::vec(bytes(20), 0..4)),
        0..5,
    )
    .prop_map(|grants| {
        let mut p = Rtm2Permissions::new();
        for (rt, pt, list) in grants {
            p.add(rt, pt, list);
        }
        p
    })
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (bytes(80), bytes(300)).prop_map(|(channel_name, uid)| Payload::Rtc { channel_name, uid }),
        bytes(80).prop_map(|user_id| Payload::Rtm { user_id }),
        (bytes(80), bytes(80)).prop_map(|(channel_name, account)| Payload::Streaming {
            channel_name,
            account
        }),
        Just(Payload::Fpa),
        bytes(80).prop_map(|user_id| Payload::Chat { user_id }),
        (bytes(80), bytes(80)).prop_map(|(channel_name, account)| Payload::Fcdn {
            channel_name,
            account
        }),
        (bytes(64), bytes(64), any::<i16>()).prop_map(|(room_uuid, user_uuid, role)| {
            Payload::Apaas {
                room_uuid,
                user_uuid,
                role,
            }
        }),
        (bytes(64), permissions()).prop_map(|(user_id, permissions)| Payload::Rtm2 {
            user_id,
            permissions
        }),
    ]
}

fn service() -> impl Strategy<Value = Service> {
    (payload(), privileges()).prop_map(|(payload, privileges)| Service::new(payload, privileges))
}

fn hex32() -> impl Strategy<Value = String> {
    "[0-9a-fA-F]{32}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn build_parse_verify_round_trip(
        app in hex32(),
        cert in hex32(),
        other in hex32(),
        issue_ts in any::<u32>(),
        expire in any::<u32>(),
        salt in any::<u32>(),
        services in prop::collection::vec(service(), 1..6),
    ) {
        let cert = AppCertificate::new(&cert).unwrap();
        let mut t = AccessToken::new(AppId::new(&app).unwrap(), issue_ts, expire, salt);
        for s in &services {
            t.add_service(s.clone());
        }
        let token = t.build(&cert).unwrap();
        prop_assert!(token.starts_with("007eJ"));
        let p = UnverifiedToken::parse(&token).unwrap();
        prop_assert!(p.verify(&cert).is_ok());
        let other = AppCertificate::new(&other).unwrap();
        prop_assert_eq!(p.verify(&other).is_ok(), other == cert);
        prop_assert_eq!(p.app_id_lossy(), app.as_str());
        prop_assert_eq!((p.issue_ts(), p.expire(), p.salt()), (issue_ts, expire, salt));
        prop_assert_eq!(p.trailing_bytes(), 0);
        prop_assert_eq!(p.bytes_after_zlib_stream(), 0);
        // Services come back sorted by type, stably.
        let mut sorted = services.clone();
        sorted.sort_by_key(Service::service_type);
        prop_assert_eq!(p.services(), &sorted[..]);
        // Re-encoding the parsed services gives the same content.
        let again = AccessToken { services: p.services().to_vec(), ..t.clone() };
        prop_assert_eq!(again.build(&cert).unwrap(), token);
    }

    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,400}") {
        let _ = UnverifiedToken::parse(&s);
        let _ = agora_token::v1::V1Token::parse(&s);
        let _ = UnverifiedToken::parse(&format!("007{s}"));
    }

    #[test]
    fn arbitrary_content_never_panics_or_verifies(content in bytes(600)) {
        if let Ok(t) = UnverifiedToken::from_content(&content) {
            let cert = AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b").unwrap();
            prop_assert!(t.verify(&cert).is_err());
        }
    }

    #[test]
    fn mutated_tokens_never_verify(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let cert = AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b").unwrap();
        let t = AccessToken::new(AppId::new("970CA35de60c44645bbae8a215061b33").unwrap(), 1, 2, 3)
            .with_service(Service::rtc("ch", "7").with_privilege(1, 2));
        let mut content = t.content(&cert).unwrap();
        let i = pos.index(content.len());
        content[i] ^= 1 << bit;
        if let Ok(p) = UnverifiedToken::from_content(&content) {
            prop_assert!(p.verify(&cert).is_err());
        }
    }
}

#[test]
fn strings_at_the_format_limit() {
    let cert = AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b").unwrap();
    let app = AppId::new("970CA35de60c44645bbae8a215061b33").unwrap();
    let max = "x".repeat(65_535);
    let t = AccessToken::new(app.clone(), 1, 2, 3).with_service(Service::rtc(max.as_str(), ""));
    let token = t.build(&cert).unwrap();
    let p = UnverifiedToken::parse(&token).unwrap();
    assert!(p.verify(&cert).is_ok());
    let over = "x".repeat(65_536);
    let t = AccessToken::new(app, 1, 2, 3).with_service(Service::rtc(over.as_str(), ""));
    assert!(t.build(&cert).is_err());
}
