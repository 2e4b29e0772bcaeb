//! Heap allocations per token: a counting global allocator around the
//! system allocator (`stats_alloc`, so no `unsafe` here), then N builds of
//! each common kind with varying inputs. Prints allocations, reallocations
//! and bytes per token. Run: `cargo bench -p agora-token --bench allocs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::hint::black_box;

use agora_token::{AppCertificate, AppId, UnverifiedToken, builders, builders::Role};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const APP: &str = "970CA35de60c44645bbae8a215061b33";
const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";
const N: u32 = 10_000;

fn report(name: &str, f: impl Fn(u32)) {
    // Warm up: thread-local compressors and lazy statics are allocated once.
    for i in 0..100 {
        f(i);
    }
    let region = Region::new(GLOBAL);
    for i in 0..N {
        f(i);
    }
    let s = region.change();
    let n = f64::from(N);
    println!(
        "{name:<28} {:>6.2} allocs/token {:>6.2} reallocs/token {:>8.1} bytes allocated/token",
        s.allocations as f64 / n,
        s.reallocations as f64 / n,
        s.bytes_allocated as f64 / n,
    );
}

fn main() {
    let app = AppId::new(APP).unwrap();
    let cert = AppCertificate::new(CERT).unwrap();
    let channel = |i: u32| format!("channel-{:08}", i % 100_000);
    println!("heap allocations per token ({N} tokens each, inputs varied):");
    report("channel name (format!)", |i| {
        black_box(channel(i));
    });
    report("rtc_with_uid build", |i| {
        let c = channel(i);
        let grant = builders::rtc_with_uid(&c, 100_000 + i, Role::Publisher, 3600, 3600);
        black_box(grant.build(&app, &cert, 1_700_000_000 + i, i + 1).unwrap());
    });
    report("rtc_with_rtm build", |i| {
        let c = channel(i);
        let grant = builders::rtc_with_rtm(&c, "user-1", Role::Publisher, 3600, 3600);
        black_box(grant.build(&app, &cert, 1_700_000_000 + i, i + 1).unwrap());
    });
    report("chat_user build", |i| {
        let grant = builders::chat_user("user-1", 3600);
        black_box(grant.build(&app, &cert, 1_700_000_000 + i, i + 1).unwrap());
    });
    let content = builders::rtc_with_uid("channel-00000001", 7, Role::Publisher, 3600, 3600)
        .content(&app, &cert, 1_700_000_000, 1)
        .unwrap();
    report("deflate only (reused out)", |_| {
        let mut out = Vec::with_capacity(512);
        zlib_level6_small::zlib_compress_small(&content, &mut out);
        black_box(out);
    });
    let token = builders::rtc_with_uid("channel-00000001", 7, Role::Publisher, 3600, 3600)
        .build(&app, &cert, 1_700_000_000, 1)
        .unwrap();
    report("parse + verify", |_| {
        let t = UnverifiedToken::parse(&token).unwrap();
        black_box(t.verify(&cert).is_ok());
    });
}
