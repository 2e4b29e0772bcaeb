//! `watchers`: holds many `WatchToken` streams open against a server, for
//! scripts/watch-load.sh (memory per idle watch, CPU per renewal, unary
//! throughput with watches open). Each stream watches an RTC token for its
//! own uid; streams are spread over `--connections` HTTP/2 connections.
//! Prints one status line per `--report` seconds (open streams, tokens
//! delivered, streams ended) and runs for `--seconds` (or until killed).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use token_authority_loadgen::pb;

#[derive(Debug, Parser)]
#[command(
    name = "watchers",
    about = "Hold many WatchToken streams open (a dev tool)"
)]
struct Args {
    /// Server address (host:port, plaintext).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Streams to open.
    #[arg(long, default_value_t = 10_000)]
    watches: u64,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 40)]
    connections: u64,
    /// Token lifetime asked for (seconds).
    #[arg(long, default_value_t = 86_400)]
    expire: u32,
    /// `renew_before_seconds` (default: the server's).
    #[arg(long)]
    renew_before: Option<u32>,
    /// Run this long, then exit (0: until killed).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Seconds between status lines.
    #[arg(long, default_value_t = 5)]
    report: u64,
}

#[derive(Default)]
struct Counts {
    open: AtomicU64,
    delivered: AtomicU64,
    ended: AtomicU64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("watchers: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("watchers: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let counts = Arc::new(Counts::default());
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", args.addr))
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("connect {}: {e}", args.addr))?;
        channels.push(ch);
    }
    for i in 0..args.watches {
        let ch = channels[(i % args.connections.max(1)) as usize].clone();
        let counts = Arc::clone(&counts);
        let req = pb::WatchTokenRequest {
            request: Some(pb::watch_token_request::Request::Rtc(
                pb::BuildRtcTokenRequest {
                    channel_name: format!("watch-{}", i % 1000),
                    user: Some(pb::build_rtc_token_request::User::Uid(
                        u32::try_from(i + 1).unwrap_or(1),
                    )),
                    expire_seconds: Some(args.expire),
                    ..Default::default()
                },
            )),
            renew_before_seconds: args.renew_before,
        };
        let mut client = pb::token_service_client::TokenServiceClient::new(ch);
        let mut stream = client
            .watch_token(req)
            .await
            .map_err(|s| format!("watch {i}: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        counts.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            while let Ok(Some(_)) = stream.message().await {
                counts.delivered.fetch_add(1, Ordering::Relaxed);
            }
            counts.open.fetch_sub(1, Ordering::Relaxed);
            counts.ended.fetch_add(1, Ordering::Relaxed);
        });
    }
    let start = tokio::time::Instant::now();
    loop {
        println!(
            "open={} delivered={} ended={}",
            counts.open.load(Ordering::Relaxed),
            counts.delivered.load(Ordering::Relaxed),
            counts.ended.load(Ordering::Relaxed)
        );
        if args.seconds > 0 && start.elapsed() >= Duration::from_secs(args.seconds) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(args.report.max(1))).await;
    }
}
