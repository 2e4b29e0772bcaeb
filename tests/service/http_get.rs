//! The compatible `GET /api/agora/token` (DESIGN 4.1).

use agora_token::Payload;

use crate::common::*;

#[tokio::test]
async fn issues_a_plain_text_token() {
    let app = spawn_app().await;
    let r = app
        .get(
            "/api/agora/token?channelName=lobby&uid=42&role=subscriber&expireSeconds=120&unknown=1",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(r.headers["cache-control"], "no-store");
    let t = verified(&r.body, CERT);
    assert_eq!(t.expire(), 120);
    assert_eq!(
        t.services()[0].payload,
        Payload::Rtc {
            channel_name: b"lobby".to_vec(),
            uid: b"42".to_vec()
        }
    );
    assert_eq!(privileges(&t, 0), vec![(1, 120)]);
}

#[tokio::test]
async fn defaults_wildcards_and_form_decoding() {
    let app = spawn_app().await;
    // Defaults: uid 0 (any), publisher, 3600 for token and privileges.
    let r = app.get("/api/agora/token?channelName=").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = verified(&r.body, CERT);
    assert_eq!(t.expire(), 3600);
    assert_eq!(
        t.services()[0].payload,
        Payload::Rtc {
            channel_name: Vec::new(),
            uid: Vec::new()
        }
    );
    assert_eq!(
        privileges(&t, 0),
        vec![(1, 3600), (2, 3600), (3, 3600), (4, 3600)]
    );
    // '+' is a space, %2B a plus.
    let r = app
        .get("/api/agora/token?channelName=a+b%2Bc&uid=4294967295")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = verified(&r.body, CERT);
    assert_eq!(
        t.services()[0].payload,
        Payload::Rtc {
            channel_name: b"a b+c".to_vec(),
            uid: b"4294967295".to_vec()
        }
    );
}
