//! `WatchToken` and the audit trail: exactly one `token issued` record per
//! delivered token (each renewal is a full issuance), and none for a watch
//! refused before its first delivery.
//!
//! Its own test binary for the reason `log_context.rs` gives: it installs
//! a thread-local `tracing` subscriber (the single-threaded test runtime
//! runs the server's tasks on this thread), and `tracing` caches callsite
//! interest process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "service/common.rs"]
mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::spawn_app_with;
use token_authority::domain::{ManualClock, fingerprint};
use token_authority::pb::watch_token_request::Request as W;
use token_authority::pb::watch_token_response::Response as D;
use token_authority::pb::{self, WatchTokenRequest};

/// A `MakeWriter` collecting log lines in memory.
#[derive(Clone, Default)]
struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

#[tokio::test]
async fn one_audit_record_per_delivered_token() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let lines = Lines::default();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .event_format(token_authority::telemetry::logfmt::LineFormat::json())
            .with_writer(lines.clone()),
    );
    let _default = tracing::subscriber::set_default(subscriber);
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let c2 = Arc::clone(&clock);
    let app = spawn_app_with(move |c| c.clock = c2).await;
    let mut client = app.grpc().await;
    let req = |rb| WatchTokenRequest {
        request: Some(W::AgentSession(pb::BuildAgentSessionRequest {
            channel_name: "audited".into(),
            agent_uid: "7".into(),
            user_uid: "8".into(),
            ..Default::default()
        })),
        renew_before_seconds: rb,
    };
    // Refused before the first delivery: no token, no `issued` record.
    let e = client.watch_token(req(Some(1))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    let mut s = client.watch_token(req(None)).await.unwrap().into_inner();
    let mut delivered = Vec::new();
    for seq in 1..=3 {
        let m = s.message().await.unwrap().unwrap();
        assert_eq!(m.sequence, seq);
        let Some(D::AgentSession(r)) = m.response else {
            panic!("{m:?}")
        };
        delivered.push(vec![r.agent_token, r.user_token, r.rest_token]);
        if seq < 3 {
            clock.set(m.renew_at);
        }
    }
    drop(s);
    let out = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let issued: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "audit" && v["message"] == "token issued")
        .collect();
    assert_eq!(issued.len(), 3, "one record per delivery:\n{out}");
    let mut fps: HashMap<String, usize> = HashMap::new();
    for v in &issued {
        assert_eq!(v["rpc"], "BuildAgentSession");
        assert!(
            v["channel"]
                .as_str()
                .unwrap()
                .split(',')
                .all(|c| c == "audited")
        );
        for fp in v["token_fp"].as_str().unwrap().split(',') {
            *fps.entry(fp.to_owned()).or_default() += 1;
        }
    }
    for tokens in &delivered {
        for t in tokens {
            assert_eq!(
                fps.get(&fingerprint(t)),
                Some(&1),
                "token without exactly one record"
            );
        }
    }
    // Every fingerprint recorded was delivered.
    let all: std::collections::HashSet<String> =
        delivered.iter().flatten().map(|t| fingerprint(t)).collect();
    assert!(fps.keys().all(|k| all.contains(k)));
    assert!(!out.contains(&delivered[0][0][..40]), "token in the logs");
}
