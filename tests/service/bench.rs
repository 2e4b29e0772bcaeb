//! `token-authority bench` against the real in-process server: every
//! scenario answers, nothing fails, and the open loop keeps its rate.

use token_authority::bench::{self, BenchArgs, Scenario};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_every_scenario_without_errors() {
    let app = spawn_app().await;
    let mut args = BenchArgs::new(app.addr().to_string());
    args.connections = 4;
    args.duration = 0.15;
    args.warmup = 0.05;
    let report = bench::run(&args).await.unwrap();
    assert_eq!(report.medians.len(), Scenario::ALL.len());
    for r in &report.medians {
        assert!(r.ok > 0, "{r:?}");
        assert_eq!((r.errors, r.unsent), (0, 0), "{r:?}");
        assert!(r.p[0] > 0 && r.p[0] <= r.p[3], "{r:?}");
    }
    assert_eq!(report.ratios.len(), 3);
    assert!(report.ratios.iter().all(|r| r.median > 0.0), "{report:?}");
    let text = bench::render(&args, &report);
    assert!(text.contains("ratio get/healthz"), "{text}");

    // Open loop at a rate the server easily keeps: about rate x duration
    // requests, all answered.
    let mut open = BenchArgs::new(app.addr().to_string());
    open.scenario = vec![Scenario::Get, Scenario::Grpc];
    open.connections = 4;
    open.rate = Some(400.0);
    open.duration = 0.25;
    open.warmup = 0.05;
    let report = bench::run(&open).await.unwrap();
    for r in &report.medians {
        assert_eq!((r.errors, r.unsent), (0, 0), "{r:?}");
        assert!((90..=110).contains(&r.ok), "{r:?}");
    }
}

#[tokio::test]
async fn bench_counts_errors_of_a_stopped_server() {
    let app = spawn_app().await;
    let addr = app.addr().to_string();
    app.handle.shutdown().await.unwrap();
    let mut args = BenchArgs::new(addr);
    args.scenario = vec![Scenario::Healthz];
    args.duration = 0.1;
    args.warmup = 0.0;
    // Nothing listens: the run fails with a connect error, not a hang.
    assert!(bench::run(&args).await.is_err());
}
