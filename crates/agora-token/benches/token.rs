//! Criterion benches of the token core: the common builders, parse, verify,
//! and the primitives a build is made of (three HMAC-SHA256, base64, the
//! whole pack and sign). The deflate benches (this project's encoder against
//! C zlib, warm and cold) are in `zlib-level6-small`:
//! `cargo bench -p zlib-level6-small --bench deflate`.
//!
//! Inputs vary per iteration (channel, uid, salt) so nothing is cached.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use agora_token::{
    AppCertificate, AppId, Rtm2Permissions, UnverifiedToken, builders, builders::Role, signing_key,
};
use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const APP: &str = "970CA35de60c44645bbae8a215061b33";
const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

fn channel(i: u32) -> String {
    format!("channel-{:08}", i % 100_000)
}

fn builds(c: &mut Criterion) {
    let app = AppId::new(APP).unwrap();
    let cert = AppCertificate::new(CERT).unwrap();
    let mut g = c.benchmark_group("build");
    let mut i = 0u32;
    g.bench_function("rtc_with_uid", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let grant =
                builders::rtc_with_uid(&channel(i), 100_000 + i, Role::Publisher, 3600, 3600);
            black_box(
                grant
                    .build(&app, &cert, 1_700_000_000 + i, i % 99_999_999 + 1)
                    .unwrap(),
            )
        });
    });
    g.bench_function("rtc_with_rtm", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let grant = builders::rtc_with_rtm(
                &channel(i),
                &format!("user-{i}"),
                Role::Publisher,
                3600,
                3600,
            );
            black_box(
                grant
                    .build(&app, &cert, 1_700_000_000 + i, i % 99_999_999 + 1)
                    .unwrap(),
            )
        });
    });
    g.bench_function("rtm", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let grant = builders::rtm(&format!("user-{i}"), 3600);
            black_box(
                grant
                    .build(&app, &cert, 1_700_000_000 + i, i % 99_999_999 + 1)
                    .unwrap(),
            )
        });
    });
    g.bench_function("rtm2_permissions", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let mut p = Rtm2Permissions::new();
            p.add(0, 0, ["chat-a", "chat-b"]);
            p.add(1, 1, [channel(i)]);
            let grant = builders::rtm_with_permissions(&format!("user-{i}"), p, 3600);
            black_box(
                grant
                    .build(&app, &cert, 1_700_000_000 + i, i % 99_999_999 + 1)
                    .unwrap(),
            )
        });
    });
    g.bench_function("chat_user", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let grant = builders::chat_user(&format!("user-{i}"), 3600);
            black_box(
                grant
                    .build(&app, &cert, 1_700_000_000 + i, i % 99_999_999 + 1)
                    .unwrap(),
            )
        });
    });
    g.bench_function("apaas_room_user", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let grant =
                builders::apaas_room_user(&format!("room-{i}"), &format!("user-{i}"), 1, 3600);
            black_box(
                grant
                    .build(&app, &cert, 1_700_000_000 + i, i % 99_999_999 + 1)
                    .unwrap(),
            )
        });
    });
    g.finish();

    // Parse and verify a varying set of tokens.
    let tokens: Vec<String> = (0..256)
        .map(|i| {
            builders::rtc_with_uid(&channel(i), 100_000 + i, Role::Publisher, 3600, 3600)
                .build(&app, &cert, 1_700_000_000 + i, i + 1)
                .unwrap()
        })
        .collect();
    let parsed: Vec<UnverifiedToken> = tokens
        .iter()
        .map(|t| UnverifiedToken::parse(t).unwrap())
        .collect();
    let mut g = c.benchmark_group("read");
    let mut k = 0usize;
    g.bench_function("parse", |b| {
        b.iter(|| {
            k = (k + 1) % tokens.len();
            black_box(UnverifiedToken::parse(&tokens[k]).unwrap())
        });
    });
    g.bench_function("verify", |b| {
        b.iter(|| {
            k = (k + 1) % parsed.len();
            black_box(parsed[k].verify(&cert).is_ok())
        });
    });
    g.finish();
}

fn primitives(c: &mut Criterion) {
    let app = AppId::new(APP).unwrap();
    let cert = AppCertificate::new(CERT).unwrap();
    // A typical RTC publisher token's content (~156 bytes).
    let contents: Vec<Vec<u8>> = (0..256)
        .map(|i| {
            builders::rtc_with_uid(&channel(i), 100_000 + i, Role::Publisher, 3600, 3600)
                .content(&app, &cert, 1_700_000_000 + i, i + 1)
                .unwrap()
        })
        .collect();
    let mut g = c.benchmark_group("primitives");
    let mut k = 0usize;
    g.bench_function("three_hmac_sha256", |b| {
        b.iter(|| {
            k = (k + 1) % contents.len();
            let key = signing_key(&cert, 1_700_000_000 + k as u32, k as u32 + 1);
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
            mac.update(&contents[k][34..]);
            black_box(mac.finalize().into_bytes())
        });
    });
    let compressed: Vec<Vec<u8>> = contents
        .iter()
        .map(|c| {
            let mut out = Vec::new();
            zlib_level6_small::zlib_compress_small(c, &mut out);
            out
        })
        .collect();
    g.bench_function("base64", |b| {
        let mut s = String::with_capacity(512);
        b.iter(|| {
            k = (k + 1) % compressed.len();
            s.clear();
            base64::engine::general_purpose::STANDARD.encode_string(&compressed[k], &mut s);
            black_box(s.len())
        });
    });
    g.bench_function("pack_and_sign", |b| {
        let mut i = 0u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            let grant =
                builders::rtc_with_uid(&channel(i), 100_000 + i, Role::Publisher, 3600, 3600);
            black_box(
                grant
                    .content(&app, &cert, 1_700_000_000 + i, i % 99_999_999 + 1)
                    .unwrap(),
            )
        });
    });
    g.finish();
}

criterion_group!(benches, builds, primitives);
criterion_main!(benches);
