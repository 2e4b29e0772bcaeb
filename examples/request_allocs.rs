//! Heap allocations per request through the whole service (HTTP/1.1 on a
//! keep-alive loopback connection): the server runs in-process on a
//! one-thread runtime, a blocking client with preformatted requests and a
//! stack buffer (it allocates nothing per request) sends N requests per
//! route, and a counting global allocator (`stats_alloc`, no `unsafe`)
//! reports allocations per request. Logging is off (as with a `warn`
//! filter); BENCHMARKS.md lists the results.
//!
//! `cargo run --release --example request_allocs`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::io::{Read, Write};
use std::net::TcpStream;

use agora_token::{AppCertificate, AppId};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use token_authority::config::Config;
use token_authority::domain::AppCredentials;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const N: usize = 5_000;

/// Sends `req` and reads one response whose body ends the read (the
/// responses here are small and arrive in one segment or a few).
fn round_trip(s: &mut TcpStream, req: &[u8], buf: &mut [u8; 4096]) {
    s.write_all(req).unwrap();
    let mut n = 0;
    loop {
        n += s.read(&mut buf[n..]).unwrap();
        let text = &buf[..n];
        if let Some(head_end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = &text[..head_end];
            // hyper writes header names in lower case; no allocation here.
            let key = b"content-length: ";
            let at = head
                .windows(key.len())
                .position(|w| w == key)
                .expect("content-length header");
            let len = head[at + key.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .fold(0usize, |acc, b| acc * 10 + usize::from(b - b'0'));
            if n >= head_end + 4 + len {
                assert!(head.starts_with(b"HTTP/1.1 200"), "not 200");
                return;
            }
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Config::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![AppCredentials {
            app_id: AppId::new("970CA35de60c44645bbae8a215061b33").unwrap(),
            certificate: AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b").unwrap(),
            secondary: None,
        }],
    );
    let handle = rt
        .block_on(token_authority::server::spawn(&config))
        .unwrap();
    let addr = handle.local_addr();
    // The server runs on this runtime in a background thread.
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));

    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: b\r\n\r\n").into_bytes();
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let routes = [
        ("GET /healthz", get("/healthz")),
        (
            "GET /api/agora/token",
            get("/api/agora/token?channelName=bench-1&uid=42"),
        ),
        (
            "POST JSON Health/Check",
            post("/grpc.health.v1.Health/Check", r#"{"service":""}"#),
        ),
        (
            "POST JSON BuildRtcToken",
            post(
                "/agora.token.v1.TokenService/BuildRtcToken",
                r#"{"channelName":"bench-1","uid":42}"#,
            ),
        ),
    ];
    println!("heap allocations per request, server side ({N} requests each, HTTP/1.1 keep-alive):");
    let mut buf = [0u8; 4096];
    for (name, req) in &routes {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        for _ in 0..200 {
            round_trip(&mut s, req, &mut buf);
        }
        let region = Region::new(GLOBAL);
        for _ in 0..N {
            round_trip(&mut s, req, &mut buf);
        }
        let st = region.change();
        println!(
            "{name:<26} {:>6.1} allocs/request {:>8.0} bytes allocated/request",
            st.allocations as f64 / N as f64,
            st.bytes_allocated as f64 / N as f64
        );
    }
}
