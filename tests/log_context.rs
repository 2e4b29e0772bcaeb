//! Log lines of gRPC requests carry the request context (request id and
//! peer) like HTTP ones.
//!
//! Its own test binary: it installs a thread-local `tracing` subscriber,
//! and `tracing` caches callsite interest process-wide, so other tests
//! emitting the same events on other threads at the same time made the
//! capture flaky when it ran among the service tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "service/common.rs"]
mod common;

use common::spawn_app;
use token_authority::pb::{self, build_rtc_token_request as rtc_req};

/// A `MakeWriter` collecting log lines in memory.
#[derive(Clone, Default)]
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

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

/// gRPC requests get the same log context as HTTP ones: the audit event of
/// a `BuildRtcToken` call carries the call's `x-request-id` and peer. (The
/// test runtime is single-threaded, so the server's tasks log through this
/// thread's subscriber, formatted by the service's own JSON format.)
#[tokio::test]
async fn grpc_log_lines_carry_the_request_context() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let lines = Lines::default();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .event_format(token_authority::telemetry::logfmt::LineFormat::json())
            .with_writer(lines.clone()),
    );
    let _default = tracing::subscriber::set_default(subscriber);
    let app = spawn_app().await;
    let mut c = app.grpc().await;
    let mut req = tonic::Request::new(pb::BuildRtcTokenRequest {
        channel_name: "grpc-logs".into(),
        user: Some(rtc_req::User::Uid(77)),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-request-id", "grpc-req-1".parse().unwrap());
    let r = c.build_rtc_token(req).await.unwrap();
    assert_eq!(r.metadata().get("x-request-id").unwrap(), "grpc-req-1");
    let out = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let issued: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["message"] == "token issued")
        .unwrap_or_else(|| panic!("no audit event in:\n{out}"));
    assert_eq!(issued["target"], "audit");
    assert_eq!(issued["rpc"], "BuildRtcToken");
    assert_eq!(issued["channel"], "grpc-logs");
    assert_eq!(issued["uid"], "77");
    assert_eq!(issued["request_id"], "grpc-req-1");
    assert!(issued["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(
        !out.contains(&r.into_inner().token[..40]),
        "token in the logs"
    );
}
