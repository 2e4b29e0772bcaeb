//! The load generator against the real service, in-process (the
//! `token-authority` library is a dev-dependency: `server::spawn` on
//! `127.0.0.1:0`): every scenario answers, nothing fails, and the open loop
//! sends exactly the requests it scheduled.

// A test crate: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agora_token::{AppCertificate, AppId};
use token_authority::config::Config;
use token_authority::domain::AppCredentials;
use token_authority::server::{self, ServerHandle};
use token_authority_loadgen::{self as loadgen, BenchArgs, Scenario};

/// A server with the public SAMPLE app (not a real project).
async fn spawn_server() -> ServerHandle {
    let app = AppCredentials {
        app_id: AppId::new("970CA35de60c44645bbae8a215061b33").unwrap(),
        certificate: AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b").unwrap(),
        secondary: None,
    };
    let config = Config::new("127.0.0.1:0".parse().unwrap(), vec![app]);
    server::spawn(&config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_runs_every_scenario_without_errors() {
    let server = spawn_server().await;
    let addr = server.local_addr().to_string();
    let mut args = BenchArgs::new(addr.clone());
    args.connections = 4;
    args.duration = 0.15;
    args.warmup = 0.05;
    let report = loadgen::run(&args).await.unwrap();
    assert_eq!(report.medians.len(), Scenario::ALL.len());
    for r in &report.medians {
        assert!(r.ok > 0, "{r:?}");
        assert_eq!((r.errors, r.unsent), (0, 0), "{r:?}");
        assert!(r.p[0] > 0 && r.p[0] <= r.p[3], "{r:?}");
    }
    assert_eq!(report.ratios.len(), 3);
    assert!(report.ratios.iter().all(|r| r.median > 0.0), "{report:?}");
    let text = loadgen::render(&args, &report);
    assert!(text.contains("ratio get/healthz"), "{text}");

    // Open loop at a rate the server easily keeps (400 req/s for 0.25 s):
    // every request scheduled in the measured window is sent and answered.
    // The count is the schedule's, not a wall-clock estimate: nothing
    // failed and nothing was left unsent, so `ok` is exactly the number of
    // send times in the window (100 here), however slow the machine.
    let mut open = BenchArgs::new(addr);
    open.scenario = vec![Scenario::Get, Scenario::Grpc];
    open.connections = 4;
    open.rate = Some(400.0);
    open.duration = 0.25;
    open.warmup = 0.05;
    let scheduled = loadgen::scheduled_requests(&open);
    assert_eq!(scheduled, Some(100));
    let report = loadgen::run(&open).await.unwrap();
    assert_eq!(report.medians.len(), 2);
    for r in &report.medians {
        assert_eq!((r.errors, r.unsent), (0, 0), "{r:?}");
        assert_eq!(Some(r.ok), scheduled, "{r:?}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn loadgen_fails_against_a_stopped_server() {
    let server = spawn_server().await;
    let addr = server.local_addr().to_string();
    server.shutdown().await.unwrap();
    let mut args = BenchArgs::new(addr);
    args.scenario = vec![Scenario::Healthz];
    args.duration = 0.1;
    args.warmup = 0.0;
    // Nothing listens: the run fails with a connect error, not a hang.
    assert!(loadgen::run(&args).await.is_err());
}
