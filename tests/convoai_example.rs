//! The ConvoAI worked example (docs/CONVOAI.md) runs: the Python
//! orchestrator (examples/convoai/orchestrator.py, grpcio) opens
//! `WatchToken{agent_session}` on a real server and drives a local stand-in
//! of the ConvoAI REST API that records every call and checks every token:
//! the first session goes to `/join`, each later one to
//! `/agents/{agent_id}/update`, each a fresh, verifying token for the same
//! agent, with the REST token in `Authorization: agora token=`.
//!
//! The server runs on a `ManualClock` the test moves after each call, so
//! hours of renewals take a second. Needs `python3` with `grpcio` and
//! `grpcio-tools` (`.ci/run` installs them); without them the test fails
//! under CI (`CI` set) and is skipped, loudly, elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "service/common.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_token::Payload;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use common::{APP_ID, CERT, spawn_app_with, verified};
use token_authority::domain::ManualClock;
use token_authority::policy::{ApiKeyHash, CallerConfig, PolicyConfig};

const KEY: &str = "ta_orchestrator-example-key-0123456789";
const T0: u32 = 1_800_000_000;
const AGENT_ID: &str = "A42ABCDEF";

/// One call the stand-in received: path, the REST token, the agent token.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    rest_token: String,
    token: String,
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// Checks a call as ConvoAI would (the REST token is an RTC + RTM token
/// of the agent; the agent's token is for the agent in the channel) and
/// records it.
fn record(
    calls: &Calls,
    path: String,
    headers: &HeaderMap,
    body: &serde_json::Value,
) -> Result<(), String> {
    let rest = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("agora token="))
        .ok_or("Authorization: agora token=... missing")?;
    let token = body["properties"]["token"]
        .as_str()
        .ok_or("properties.token missing")?;
    for t in [rest, token] {
        let v = agora_token::UnverifiedToken::parse(t).map_err(|e| e.to_string())?;
        v.verify(&common::cert(CERT)).map_err(|_| "signature")?;
        let rtc = v.services().iter().find_map(|s| match &s.payload {
            Payload::Rtc { channel_name, uid } => Some((channel_name.clone(), uid.clone())),
            _ => None,
        });
        if rtc != Some((b"convo-1".to_vec(), b"1001".to_vec())) {
            return Err(format!("not the agent's token: {rtc:?}"));
        }
    }
    calls.lock().unwrap().push(Call {
        path,
        rest_token: rest.to_owned(),
        token: token.to_owned(),
    });
    Ok(())
}

async fn join(
    State(calls): State<Calls>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON".to_owned());
    };
    if body["properties"]["channel"] != "convo-1" || body["properties"]["agent_rtc_uid"] != "1001" {
        return (StatusCode::BAD_REQUEST, format!("bad join: {body}"));
    }
    match record(&calls, format!("/projects/{app}/join"), &headers, &body) {
        Ok(()) => (
            StatusCode::OK,
            serde_json::json!({"agent_id": AGENT_ID, "create_ts": 0, "status": "RUNNING"})
                .to_string(),
        ),
        Err(e) => (StatusCode::UNAUTHORIZED, e),
    }
}

async fn update(
    State(calls): State<Calls>,
    Path((app, agent)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON".to_owned());
    };
    match record(
        &calls,
        format!("/projects/{app}/agents/{agent}/update"),
        &headers,
        &body,
    ) {
        Ok(()) => (StatusCode::OK, "{}".to_owned()),
        Err(e) => (StatusCode::UNAUTHORIZED, e),
    }
}

fn python_ready() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_orchestrator_joins_then_updates_with_fresh_tokens() {
    if !python_ready() {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with grpcio and grpcio-tools is needed (.ci/run installs them)"
        );
        eprintln!(
            "SKIPPED: python3 with grpcio and grpcio-tools not found (pip install grpcio grpcio-tools)"
        );
        return;
    }
    let clock = Arc::new(ManualClock::new(T0));
    let c2 = Arc::clone(&clock);
    let app = spawn_app_with(move |c| {
        c.clock = c2;
        c.callers = vec![CallerConfig {
            name: "orchestrator".into(),
            api_key_sha256: Some(ApiKeyHash::of_key(KEY).to_hex()),
            policy: PolicyConfig {
                kinds: Some(vec!["*".into()]),
                channels: Some(vec!["convo-*".into()]),
                ..Default::default()
            },
            ..Default::default()
        }];
    })
    .await;

    let calls: Calls = Arc::default();
    let standin = axum::Router::new()
        .route(
            "/api/conversational-ai-agent/v2/projects/{app}/join",
            axum::routing::post(join),
        )
        .route(
            "/api/conversational-ai-agent/v2/projects/{app}/agents/{agent}/update",
            axum::routing::post(update),
        )
        .with_state(Arc::clone(&calls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "http://{}/api/conversational-ai-agent/v2/projects/{APP_ID}",
        listener.local_addr().unwrap()
    );
    let standin = tokio::spawn(async move { axum::serve(listener, standin).await });

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/convoai/orchestrator.py"
    );
    /// Kills the orchestrator however the test ends.
    struct Orchestrator(std::process::Child);
    impl Drop for Orchestrator {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = std::process::Command::new("python3")
        .arg(script)
        .args(["--server", &app.addr().to_string(), "--convoai-url", &base])
        .args([
            "--channel",
            "convo-1",
            "--agent-uid",
            "1001",
            "--user-uid",
            "2002",
        ])
        .args(["--enable-rtm", "--updates", "3"])
        .env("TOKEN_AUTHORITY_API_KEY", KEY)
        .spawn()
        .unwrap();
    let mut child = Orchestrator(child);

    // After each call, move the clock to the latest time the next renewal
    // can be due (30 s before the token's expiry).
    let start = Instant::now();
    let mut seen = 0;
    let status = loop {
        let latest = calls.lock().unwrap().last().cloned();
        let n = calls.lock().unwrap().len();
        if n > seen {
            seen = n;
            let issued = verified(&latest.unwrap().token, CERT).issue_ts();
            clock.set(issued + 3600 - 30);
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the orchestrator did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "orchestrator exited with {status}");
    standin.abort();

    let calls = calls.lock().unwrap().clone();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    let update = format!("/projects/{APP_ID}/agents/{AGENT_ID}/update");
    assert_eq!(
        paths,
        [
            format!("/projects/{APP_ID}/join"),
            update.clone(),
            update.clone(),
            update
        ]
    );
    // Every call carries a fresh token, issued later than the one before.
    let issued: Vec<u32> = calls
        .iter()
        .map(|c| verified(&c.token, CERT).issue_ts())
        .collect();
    assert_eq!(issued[0], T0);
    assert!(issued.windows(2).all(|w| w[1] > w[0]), "{issued:?}");
    for c in &calls {
        assert_eq!(
            verified(&c.rest_token, CERT).issue_ts(),
            verified(&c.token, CERT).issue_ts()
        );
    }
}
