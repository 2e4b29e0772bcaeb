//! `WatchToken`: the stream delivers a token at once and a fresh one before
//! each expiry (same identities, later `issued_at`, jitter within bounds);
//! a reload that revokes or narrows the caller ends it; shutdown ends it
//! with UNAVAILABLE; the per-caller cap refuses the N+1th; transient
//! refusals are retried while the token is valid; bad input names the
//! field. Time is a [`ManualClock`] the test moves: no sleeping for
//! renewals.

use std::sync::Arc;

use agora_token::{Payload, UnverifiedToken};
use token_authority::config::Config;
use token_authority::domain::ManualClock;
use token_authority::pb::watch_token_request::Request as W;
use token_authority::pb::watch_token_response::Response as D;
use token_authority::pb::{self, WatchTokenRequest, WatchTokenResponse};
use token_authority::policy::{ApiKeyHash, CallerConfig, PolicyConfig};
use tonic::{Code, Streaming};

use crate::common::*;

/// A fixed start (2027-01-15), far from the real clock on purpose.
const T0: u32 = 1_800_000_000;
const KEY: &str = "ta_watcher-test-key-0123456789";
const OTHER_KEY: &str = "ta_other-test-key-0123456789";

fn caller(name: &str, key: &str, channels: &[&str]) -> CallerConfig {
    CallerConfig {
        name: name.into(),
        api_key_sha256: Some(ApiKeyHash::of_key(key).to_hex()),
        policy: PolicyConfig {
            kinds: Some(vec!["*".into()]),
            channels: Some(channels.iter().map(|c| (*c).to_owned()).collect()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A server on `clock`, with `change` applied to its config.
async fn spawn_on(clock: &Arc<ManualClock>, change: impl FnOnce(&mut Config)) -> TestApp {
    let clock = Arc::clone(clock);
    spawn_app_with(move |c| {
        c.clock = clock;
        change(c);
    })
    .await
}

fn agent_session(channel: &str) -> WatchTokenRequest {
    WatchTokenRequest {
        request: Some(W::AgentSession(pb::BuildAgentSessionRequest {
            channel_name: channel.into(),
            agent_uid: "1001".into(),
            user_uid: "2002".into(),
            enable_rtm: true,
            ..Default::default()
        })),
        renew_before_seconds: None,
    }
}

fn rtc(channel: &str, expire: Option<u32>, renew_before: Option<u32>) -> WatchTokenRequest {
    WatchTokenRequest {
        request: Some(W::Rtc(pb::BuildRtcTokenRequest {
            channel_name: channel.into(),
            user: Some(pb::build_rtc_token_request::User::Uid(42)),
            expire_seconds: expire,
            ..Default::default()
        })),
        renew_before_seconds: renew_before,
    }
}

async fn open(
    app: &TestApp,
    key: Option<&str>,
    req: WatchTokenRequest,
) -> Result<Streaming<WatchTokenResponse>, tonic::Status> {
    let mut c = app.grpc().await;
    let mut r = tonic::Request::new(req);
    if let Some(k) = key {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    c.watch_token(r).await.map(tonic::Response::into_inner)
}

/// The next delivery (an error if the stream ended with one).
async fn next(s: &mut Streaming<WatchTokenResponse>) -> Result<WatchTokenResponse, tonic::Status> {
    match s.message().await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(tonic::Status::ok("the stream ended")),
        Err(e) => Err(e),
    }
}

/// (channel, uid) of every RTC service and the user id of every RTM one.
fn identities(t: &UnverifiedToken) -> Vec<String> {
    t.services()
        .iter()
        .map(|s| match &s.payload {
            Payload::Rtc { channel_name, uid } => format!(
                "rtc:{}:{}",
                String::from_utf8_lossy(channel_name),
                String::from_utf8_lossy(uid)
            ),
            Payload::Rtm { user_id } => format!("rtm:{}", String::from_utf8_lossy(user_id)),
            other => format!("{other:?}"),
        })
        .collect()
}

/// The bounds of `renew_at` for a token (10% jitter, a third by default,
/// never later than 30 s before expiry).
fn bounds(issued_at: u32, expires_at: u32, renew_before: Option<u32>) -> (u32, u32) {
    let life = expires_at - issued_at;
    let before = renew_before.unwrap_or(life / 3).max(30);
    let latest = expires_at - before;
    (latest - life / 10, latest)
}

#[tokio::test]
async fn delivers_at_once_then_fresh_sessions_before_each_expiry() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_on(&clock, |_| {}).await;
    let mut s = open(&app, None, agent_session("agent-watch"))
        .await
        .unwrap();

    let mut last_issued = 0;
    let mut ids = None;
    for seq in 1..=4u64 {
        let m = next(&mut s).await.unwrap();
        assert_eq!(m.sequence, seq);
        let Some(D::AgentSession(r)) = m.response else {
            panic!("not an agent session: {m:?}")
        };
        assert!(r.issued_at > last_issued, "issued_at must grow");
        assert_eq!(r.expires_at - r.issued_at, 3600);
        if seq == 1 {
            assert_eq!(r.issued_at, T0, "the first token comes at once");
        }
        let (lo, hi) = bounds(r.issued_at, r.expires_at, None);
        assert!(
            (lo..=hi).contains(&m.renew_at),
            "renew_at {} outside {lo}..={hi}",
            m.renew_at
        );
        let tokens = [&r.agent_token, &r.user_token, &r.rest_token];
        let now: Vec<Vec<String>> = tokens
            .iter()
            .map(|t| {
                let v = verified(t, CERT);
                assert_eq!(v.issue_ts(), r.issued_at);
                identities(&v)
            })
            .collect();
        assert_eq!(now[0], ["rtc:agent-watch:1001", "rtm:1001"]);
        assert_eq!(now[1], ["rtc:agent-watch:2002", "rtm:2002"]);
        match &ids {
            None => ids = Some(now),
            Some(first) => assert_eq!(first, &now, "the same identities on every renewal"),
        }
        last_issued = r.issued_at;
        // Nothing comes before renew_at; at renew_at the next one comes.
        if seq < 4 {
            clock.set(m.renew_at);
        }
    }
    assert_eq!(
        app.metric("token_authority_watch_deliveries_total").await,
        4
    );
    assert_eq!(app.metric("token_authority_watches_open").await, 1);
}

#[tokio::test]
async fn jitter_stays_within_bounds_and_spreads_watches() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_on(&clock, |_| {}).await;
    let mut seen = std::collections::HashSet::new();
    let mut streams = Vec::new();
    for rb in [None, Some(5), Some(600)] {
        for _ in 0..8 {
            let mut s = open(&app, None, rtc("jitter", Some(3600), rb))
                .await
                .unwrap();
            let m = next(&mut s).await.unwrap();
            let Some(D::Rtc(r)) = &m.response else {
                panic!("{m:?}")
            };
            let (lo, hi) = bounds(r.issued_at, r.expires_at, rb);
            assert!((lo..=hi).contains(&m.renew_at), "{rb:?}: {}", m.renew_at);
            assert!(m.renew_at <= r.expires_at - 30);
            seen.insert(m.renew_at);
            streams.push(s);
        }
    }
    // 24 draws from 361 jitter values per setting: not all equal.
    assert!(seen.len() > 3, "no jitter: {seen:?}");
}

#[tokio::test]
async fn a_reload_that_revokes_or_narrows_the_caller_ends_its_stream() {
    let clock = Arc::new(ManualClock::new(T0));
    let base = |c: &mut Config| {
        c.callers = vec![
            caller("watcher", KEY, &["agent-*"]),
            caller("other", OTHER_KEY, &["agent-*"]),
        ];
    };
    let app = spawn_on(&clock, base).await;
    // No key: refused at once.
    let e = open(&app, None, agent_session("agent-1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    let mut revoked = open(&app, Some(KEY), agent_session("agent-1"))
        .await
        .unwrap();
    let mut narrowed = open(&app, Some(OTHER_KEY), agent_session("agent-2"))
        .await
        .unwrap();
    let m1 = next(&mut revoked).await.unwrap();
    let m2 = next(&mut narrowed).await.unwrap();

    // Reload: `watcher` revoked, `other` limited to other channels.
    let mut c = Config::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![token_authority::domain::AppCredentials {
            app_id: agora_token::AppId::new(APP_ID).unwrap(),
            certificate: cert(CERT),
            secondary: None,
        }],
    );
    c.clock = Arc::clone(&clock) as Arc<dyn token_authority::domain::Timer>;
    let mut w = caller("watcher", KEY, &["agent-*"]);
    w.revoked = true;
    c.callers = vec![w, caller("other", OTHER_KEY, &["support-*"])];
    app.handle.shared().replace(c.snapshot().unwrap());

    clock.set(m1.renew_at.max(m2.renew_at));
    let e = next(&mut revoked).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = next(&mut narrowed).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("channels"), "{}", e.message());
}

#[tokio::test]
async fn shutdown_ends_streams_with_unavailable_and_says_reconnect() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_on(&clock, |_| {}).await;
    let mut s = open(&app, None, rtc("bye", None, None)).await.unwrap();
    next(&mut s).await.unwrap();
    let stopped = tokio::spawn(app.handle.shutdown());
    let e = next(&mut s).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("reconnect"), "{}", e.message());
    stopped.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_watch_past_the_per_caller_cap_is_refused() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_on(&clock, |c| {
        c.connection.max_watches_per_caller = 3;
        c.callers = vec![
            caller("watcher", KEY, &["*"]),
            caller("other", OTHER_KEY, &["*"]),
        ];
    })
    .await;
    let mut open_ones = Vec::new();
    for _ in 0..3 {
        let mut s = open(&app, Some(KEY), rtc("cap", None, None)).await.unwrap();
        next(&mut s).await.unwrap();
        open_ones.push(s);
    }
    let e = open(&app, Some(KEY), rtc("cap", None, None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message().contains("max_watches_per_caller"),
        "{}",
        e.message()
    );
    // The cap is per caller.
    let mut s = open(&app, Some(OTHER_KEY), rtc("cap", None, None))
        .await
        .unwrap();
    next(&mut s).await.unwrap();
    assert_eq!(app.metric("token_authority_watches_refused_total").await, 1);
    // A closed watch gives its place back (once the server sees it go).
    drop(open_ones.pop());
    let start = std::time::Instant::now();
    loop {
        match open(&app, Some(KEY), rtc("cap", None, None)).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(start.elapsed().as_secs() < 5, "the place never came back");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[tokio::test]
async fn a_rate_limited_renewal_is_retried_or_ends_before_expiry() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_on(&clock, |c| {
        let mut slow = caller("slow", KEY, &["*"]);
        // One token, then one per 10^4 s (real time): the renewal is
        // refused with a wait longer than the token has left.
        slow.policy.rate_per_second = Some(0.0001);
        slow.policy.burst = Some(1);
        let mut quick = caller("quick", OTHER_KEY, &["*"]);
        // One token, then one per second.
        quick.policy.rate_per_second = Some(1.0);
        quick.policy.burst = Some(1);
        c.callers = vec![slow, quick];
    })
    .await;
    let mut s = open(&app, Some(KEY), rtc("rl", None, None)).await.unwrap();
    let m = next(&mut s).await.unwrap();
    clock.set(m.renew_at);
    let e = next(&mut s).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(app.metric("token_authority_watch_retries_total").await, 0);

    // Refused for about a second: retried once the clock says so.
    let mut s = open(&app, Some(OTHER_KEY), rtc("rl", None, None))
        .await
        .unwrap();
    let m = next(&mut s).await.unwrap();
    clock.set(m.renew_at);
    let start = std::time::Instant::now();
    while app.metric("token_authority_watch_retries_total").await == 0 {
        assert!(start.elapsed().as_secs() < 5, "no retry");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The bucket refills in real time (one second), the retry waits on the clock.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    clock.advance(2);
    let m2 = next(&mut s).await.unwrap();
    assert_eq!(m2.sequence, 2);
    let Some(D::Rtc(r)) = m2.response else {
        panic!("{m2:?}")
    };
    assert!(r.issued_at > m.renew_at);
}

#[tokio::test]
async fn bad_watch_requests_name_the_field() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_on(&clock, |_| {}).await;
    let cases: Vec<(WatchTokenRequest, &str)> = vec![
        (
            WatchTokenRequest {
                request: None,
                renew_before_seconds: Some(60),
            },
            "request: must be one of agent_session",
        ),
        (
            rtc("c", None, Some(0)),
            "renew_before_seconds: must be at least 5",
        ),
        (
            rtc("c", None, Some(4)),
            "renew_before_seconds: must be at least 5",
        ),
        (
            rtc("c", Some(600), Some(600)),
            "renew_before_seconds: must be below the token lifetime (600 s)",
        ),
        (
            rtc("c", Some(600), Some(590)),
            "renew_before_seconds: must be at most 530 for a 600 s token",
        ),
        (
            rtc("c", Some(30), None),
            "rtc.expire_seconds: a watched token must live at least 60 s",
        ),
        (
            rtc("c", Some(0), None),
            "rtc.expire_seconds: must be 1..=86400",
        ),
        (rtc(&"x".repeat(65), None, None), "rtc.channel_name:"),
    ];
    for (req, want) in cases {
        let e = match open(&app, None, req.clone()).await {
            Ok(_) => panic!("{req:?}: accepted"),
            Err(e) => e,
        };
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}: {e:?}");
        assert!(e.message().starts_with(want), "{req:?}: {}", e.message());
    }
    // Nothing was delivered, and nothing stays open.
    assert_eq!(
        app.metric("token_authority_watch_deliveries_total").await,
        0
    );
    assert_eq!(app.metric("token_authority_watches_open").await, 0);
    // Every other kind works through the same mechanism.
    let kinds = vec![
        W::RtcPrivileges(pb::BuildRtcTokenWithPrivilegesRequest {
            channel_name: "k".into(),
            ..Default::default()
        }),
        W::RtcRtm(pb::BuildRtcRtmTokenRequest {
            channel_name: "k".into(),
            user: Some(pb::build_rtc_rtm_token_request::User::Uid(5)),
            ..Default::default()
        }),
        W::Rtm(pb::BuildRtmTokenRequest {
            user_id: "u".into(),
            ..Default::default()
        }),
        W::ChatUser(pb::BuildChatUserTokenRequest {
            user_id: "u".into(),
            ..Default::default()
        }),
        W::ChatApp(pb::BuildChatAppTokenRequest::default()),
        W::Fpa(pb::BuildFpaTokenRequest::default()),
        W::Generic(pb::BuildTokenRequest {
            services: vec![pb::Service {
                r#type: pb::ServiceType::Rtm as i32,
                user_id: "g".into(),
                privileges: vec![pb::Privilege {
                    id: 1,
                    expire_seconds: 3600,
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
    ];
    for k in kinds {
        let mut s = open(
            &app,
            None,
            WatchTokenRequest {
                request: Some(k.clone()),
                renew_before_seconds: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{k:?}: {e:?}"));
        let m = next(&mut s).await.unwrap();
        assert_eq!(m.sequence, 1);
        assert!(m.response.is_some());
    }
    // JSON cannot stream: a clear refusal.
    let r = app.post_json("WatchToken", "{}").await;
    assert_eq!(r.json()["code"], "unimplemented", "{}", r.body);
}

#[tokio::test]
async fn a_stream_ends_with_ok_after_max_watch_seconds() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_on(&clock, |c| {
        c.connection.max_watch = std::time::Duration::from_secs(600);
    })
    .await;
    let mut s = open(&app, None, rtc("life", Some(3600), None))
        .await
        .unwrap();
    let m = next(&mut s).await.unwrap();
    // The renewal would come after the stream's end of life: it ends then,
    // with OK (the client reconnects; its token is still valid).
    assert!(m.renew_at > T0 + 600);
    clock.set(T0 + 600);
    assert_eq!(s.message().await.unwrap(), None);
    assert_eq!(
        app.metric("token_authority_watches_ended_total{reason=\"max_watch_seconds\"}")
            .await,
        1
    );
}

/// The CLI's `watch --out FILE`: the file is rewritten on each delivery,
/// and a reader polling it in a tight loop only ever sees a complete,
/// verifying token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_watch_out_file_always_holds_a_complete_token() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_on(&clock, |c| {
        c.callers = vec![caller("sidecar", KEY, &["cli-*"])];
    })
    .await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ta-watch-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("token");
    /// Kills the sidecar however the test ends.
    struct Sidecar(std::process::Child);
    impl Drop for Sidecar {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_token-authority"))
        .args(["watch", "--server", &format!("http://{}", app.addr())])
        .args(["--key-env", "SIDECAR_KEY", "--quiet", "--out"])
        .arg(&out)
        .args([
            "rtc",
            "--channel",
            "cli-1",
            "--uid",
            "9",
            "--expire",
            "3600",
        ])
        .env_clear()
        .env("SIDECAR_KEY", KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let child = Sidecar(child);
    let start = std::time::Instant::now();
    while !out.exists() {
        assert!(start.elapsed().as_secs() < 20, "no --out file");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A reader that never stops reading while the file is rewritten.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (out, stop) = (out.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (mut reads, mut seen) = (0u64, std::collections::HashSet::new());
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&out).unwrap();
                let token = text
                    .strip_suffix('\n')
                    .unwrap_or_else(|| panic!("partial: {text:?}"));
                let t = verified(token, CERT);
                assert_eq!(identities(&t), ["rtc:cli-1:9"]);
                seen.insert(t.issue_ts());
                reads += 1;
            }
            (reads, seen)
        })
    };
    let mut issued = T0;
    for _ in 0..5 {
        // The latest a renewal can be due: every schedule has come by then.
        issued += 3600 - 30;
        clock.set(issued);
        let start = std::time::Instant::now();
        loop {
            let text = std::fs::read_to_string(&out).unwrap();
            if verified(text.trim_end(), CERT).issue_ts() == issued {
                break;
            }
            assert!(start.elapsed().as_secs() < 20, "no renewal written");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, seen) = reader.join().unwrap();
    drop(child);
    assert!(reads > 0);
    assert!(seen.len() >= 2, "{seen:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("token")]);
    let _ = std::fs::remove_dir_all(&dir);
}
