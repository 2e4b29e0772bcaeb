use super::*;
use crate::domain::{AppCredentials, Common, Issuer, RtcRequest, RtcUser, RtmRequest};
use agora_token::Role;

#[test]
fn cidr_and_forwarded_for() {
    let c = Cidr::parse("10.0.0.0/8").unwrap();
    assert!(c.contains("10.1.2.3".parse().unwrap()));
    assert!(!c.contains("11.0.0.1".parse().unwrap()));
    assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
    assert!(Cidr::parse("10.0.0.0/33").is_err());
    let a = Authenticator::new(
        &[],
        Some(&AnonymousConfig {
            trusted_proxies: vec!["127.0.0.1".into()],
            ..Default::default()
        }),
    )
    .unwrap();
    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    let other: IpAddr = "192.0.2.9".parse().unwrap();
    assert_eq!(
        a.client_ip(proxy, Some("198.51.100.1, 203.0.113.5")),
        "203.0.113.5".parse::<IpAddr>().unwrap()
    );
    assert_eq!(a.client_ip(other, Some("203.0.113.5")), other);
    assert_eq!(a.client_ip(proxy, Some("garbage")), proxy);
}

fn caller(policy: PolicyConfig) -> (Authenticator, String) {
    let (key, hash) = generate_key().unwrap();
    let a = Authenticator::new(
        &[CallerConfig {
            name: "svc".into(),
            api_key_sha256: Some(hash.to_hex()),
            policy,
            ..Default::default()
        }],
        None,
    )
    .unwrap();
    (a, key)
}

const APP: &str = "970CA35de60c44645bbae8a215061b33";

fn issuer() -> Issuer {
    Issuer::new(vec![AppCredentials {
        app_id: agora_token::AppId::new(APP).unwrap(),
        certificate: agora_token::AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b").unwrap(),
        secondary: None,
    }])
}

fn rtc_req(channel: &str, user: RtcUser, role: Role, expire: u32) -> RtcRequest {
    RtcRequest {
        common: Common {
            app_id: None,
            expire: Some(expire),
        },
        channel_name: channel.into(),
        user,
        role,
        privilege_expire: None,
    }
}

#[test]
fn policy_rules_each_deny_by_name() {
    let (a, key) = caller(PolicyConfig {
        rpcs: Some(vec!["BuildRtcToken".into()]),
        kinds: Some(vec!["rtc".into(), "rtm".into()]),
        apps: Some(vec![APP.into()]),
        channels: Some(vec!["agent-*".into()]),
        allow_wildcard: Some(false),
        uid_ranges: Some(vec!["1000-1999".into()]),
        max_expire_seconds: Some(600),
        roles: Some(vec!["subscriber".into()]),
        ..Default::default()
    });
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let who = a.authenticate(Some(&key), &[], ip, false).unwrap();
    let iss = issuer();
    let lim = Limits::default();
    let rule_of = |r: Result<Permit, Denial>| match r {
        Err(Denial::Policy { rule, .. }) => rule,
        other => panic!("{other:?}"),
    };
    let check = |req: RtcRequest| {
        let d = iss.rtc(&req, &lim).unwrap();
        a.authorize(&who, &[&d])
    };
    let ok = |c: &str, u: RtcUser, r: Role, e: u32| rtc_req(c, u, r, e);
    let p = check(ok("agent-1", RtcUser::Uid(1500), Role::Subscriber, 600)).unwrap();
    assert_eq!(p.max_expire(), 600);
    assert!(a.admit(&who, "BuildRtcToken").is_ok());
    assert_eq!(
        rule_of(a.admit(&who, "BuildRtmToken").map(|()| Permit::local())),
        "rpcs"
    );
    let sub = Role::Subscriber;
    let cases = [
        (ok("other", RtcUser::Uid(1500), sub, 600), "channels"),
        (ok("", RtcUser::Uid(1500), sub, 600), "allow_wildcard"),
        (ok("agent-1", RtcUser::Uid(0), sub, 600), "allow_wildcard"),
        (ok("agent-1", RtcUser::Uid(5), sub, 600), "uid_ranges"),
        (
            ok("agent-1", RtcUser::Account("x".into()), sub, 600),
            "uid_ranges",
        ),
        // "0042" is packed as the account "0042", not uid 42.
        (
            ok("agent-1", RtcUser::Account("01500".into()), sub, 600),
            "uid_ranges",
        ),
        (
            ok("agent-1", RtcUser::Uid(1500), Role::Publisher, 600),
            "roles",
        ),
        (
            ok("agent-1", RtcUser::Uid(1500), sub, 601),
            "max_expire_seconds",
        ),
    ];
    for (req, rule) in cases {
        assert_eq!(rule_of(check(req.clone())), rule, "{req:?}");
    }
    // An RTM user id must be the token's own RTC identity here.
    let rtm = |user: &str| {
        let d = iss
            .rtm(
                &RtmRequest {
                    common: Common {
                        app_id: None,
                        expire: Some(600),
                    },
                    user_id: user.into(),
                    rtm2: false,
                    permissions: Vec::new(),
                },
                &lim,
            )
            .unwrap();
        a.authorize(&who, &[&d])
    };
    assert_eq!(rule_of(rtm("ceo")), "user_ids");
    // Another app.
    let other = Issuer::new(vec![AppCredentials {
        app_id: agora_token::AppId::new("00000000000000000000000000000000").unwrap(),
        certificate: agora_token::AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b").unwrap(),
        secondary: None,
    }]);
    let d = other
        .rtc(&ok("agent-1", RtcUser::Uid(1500), sub, 600), &lim)
        .unwrap();
    assert_eq!(rule_of(a.authorize(&who, &[&d])), "apps");
    assert!(matches!(
        a.authenticate(Some("wrong"), &[], ip, false),
        Err(Denial::Unauthenticated(_))
    ));
    assert!(matches!(
        a.authenticate(None, &[], ip, true),
        Err(Denial::Unauthenticated(_))
    ));
}

#[test]
fn app_wide_and_derived_grants() {
    let iss = issuer();
    let lim = Limits::default();
    let rule_of = |r: Result<Permit, Denial>| match r {
        Err(Denial::Policy { rule, .. }) => rule,
        other => panic!("{other:?}"),
    };
    // FPA (a 24 h token): refused by the policy, not by the issuer.
    let (a, key) = caller(PolicyConfig {
        kinds: Some(vec!["*".into(), "fpa".into()]),
        max_expire_seconds: Some(600),
        ..Default::default()
    });
    let who = a
        .authenticate(Some(&key), &[], "127.0.0.1".parse().unwrap(), false)
        .unwrap();
    let d = iss.fpa(&Common::default(), &lim).unwrap();
    assert_eq!(rule_of(a.authorize(&who, &[&d])), "max_expire_seconds");
    let (a, key) = caller(PolicyConfig {
        kinds: Some(vec!["*".into()]),
        ..Default::default()
    });
    let who = a
        .authenticate(Some(&key), &[], "127.0.0.1".parse().unwrap(), false)
        .unwrap();
    assert_eq!(rule_of(a.authorize(&who, &[&d])), "kinds");
    // An APaaS room user's derived Chat id is covered by its user uuid;
    // an RTM2 `users` pattern needs user_ids "*" or the same pattern.
    let (a, key) = caller(PolicyConfig {
        kinds: Some(vec!["apaas_room_user".into(), "rtm2".into()]),
        user_ids: Some(vec!["u-*".into()]),
        ..Default::default()
    });
    let who = a
        .authenticate(Some(&key), &[], "127.0.0.1".parse().unwrap(), false)
        .unwrap();
    let room = |user: &str| {
        iss.apaas_room_user(
            &crate::domain::ApaasRoomUserRequest {
                common: Common::default(),
                room_uuid: "room".into(),
                user_uuid: user.into(),
                role: 1,
            },
            &lim,
        )
        .unwrap()
    };
    assert!(a.authorize(&who, &[&room("u-1")]).is_ok());
    assert_eq!(rule_of(a.authorize(&who, &[&room("admin")])), "user_ids");
    let rtm2 = |resource: &str| {
        iss.rtm(
            &RtmRequest {
                common: Common::default(),
                user_id: "u-1".into(),
                rtm2: true,
                permissions: vec![(4, 0, vec![resource.into()])],
            },
            &lim,
        )
        .unwrap()
    };
    assert!(a.authorize(&who, &[&rtm2("u-2")]).is_ok());
    assert!(a.authorize(&who, &[&rtm2("u-*")]).is_ok());
    assert_eq!(rule_of(a.authorize(&who, &[&rtm2("u?")])), "user_ids");
    assert_eq!(rule_of(a.authorize(&who, &[&rtm2("*")])), "user_ids");
}

#[test]
fn revoked_callers_are_refused() {
    let (key, hash) = generate_key().unwrap();
    let a = Authenticator::new(
        &[CallerConfig {
            name: "old".into(),
            api_key_sha256: Some(hash.to_hex()),
            revoked: true,
            policy: PolicyConfig {
                kinds: Some(vec!["*".into()]),
                ..Default::default()
            },
            ..Default::default()
        }],
        None,
    )
    .unwrap();
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    assert!(a.authenticate(Some(&key), &[], ip, false).is_err());
}

#[test]
fn config_errors_name_the_key() {
    let bad = |mut p: PolicyConfig| {
        p.kinds = p.kinds.or(Some(vec!["*".into()]));
        Authenticator::new(
            &[CallerConfig {
                name: "c".into(),
                api_key_sha256: Some("0".repeat(64)),
                policy: p,
                ..Default::default()
            }],
            None,
        )
        .unwrap_err()
    };
    assert!(
        bad(PolicyConfig {
            kinds: Some(vec!["nope".into()]),
            ..Default::default()
        })
        .contains("kinds")
    );
    assert!(
        bad(PolicyConfig {
            uid_ranges: Some(vec!["9-1".into()]),
            ..Default::default()
        })
        .contains("uid_ranges")
    );
    assert!(
        bad(PolicyConfig {
            roles: Some(vec!["admin".into()]),
            ..Default::default()
        })
        .contains("roles")
    );
    assert!(
        bad(PolicyConfig {
            max_expire_seconds: Some(0),
            ..Default::default()
        })
        .contains("max_expire_seconds")
    );
    assert!(
        bad(PolicyConfig {
            rate_per_second: Some(-1.0),
            ..Default::default()
        })
        .contains("rate_per_second")
    );
}
