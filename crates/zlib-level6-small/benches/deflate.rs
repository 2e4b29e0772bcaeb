//! Criterion benches of the encoder on token-sized input: this crate's
//! encoder against C zlib (flate2 over libz-sys, level 6) with one stream
//! reset per input, and with a fresh stream per input (what a caller
//! without a per-thread stream pays), warm and with cold caches.
//!
//! The inputs are 256 contents laid out as an RTC publisher token's
//! (`rtc_with_uid`, 136 bytes: random signature, app id, times, salt, four
//! privileges, channel name, uid), varied so nothing is cached.
//! Run: `cargo bench -p zlib-level6-small --bench deflate`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion, criterion_group, criterion_main};
use flate2::{Compress, Compression, FlushCompress};
use zlib_level6_small::zlib_compress_small;

/// xorshift64*: a tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The content of an RTC publisher token (136 bytes): a random signature,
/// the app id, issue time, salt, expire, one RTC service with four
/// privileges, a channel name and a numeric uid.
fn rtc_content(rng: &mut Rng, i: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(192);
    v.extend_from_slice(&32u16.to_le_bytes());
    v.extend((0..32).map(|_| rng.next() as u8));
    v.extend_from_slice(&32u16.to_le_bytes());
    v.extend_from_slice(b"970CA35de60c44645bbae8a215061b33");
    v.extend_from_slice(&(1_700_000_000 + i).to_le_bytes());
    v.extend_from_slice(&(i % 99_999_999 + 1).to_le_bytes());
    v.extend_from_slice(&3600u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes()); // one service
    v.extend_from_slice(&1u16.to_le_bytes()); // RTC
    v.extend_from_slice(&4u16.to_le_bytes()); // four privileges
    for p in 1..=4u16 {
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&3600u32.to_le_bytes());
    }
    let channel = format!("channel-{:08}", i % 100_000);
    v.extend_from_slice(&(channel.len() as u16).to_le_bytes());
    v.extend_from_slice(channel.as_bytes());
    let uid = (100_000 + i).to_string();
    v.extend_from_slice(&(uid.len() as u16).to_le_bytes());
    v.extend_from_slice(uid.as_bytes());
    v
}

fn inputs() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(9);
    (0..256).map(|i| rtc_content(&mut rng, i)).collect()
}

fn deflate(c: &mut Criterion) {
    let contents = inputs();
    let mut g = c.benchmark_group("deflate");
    let mut k = 0usize;
    g.bench_function("exact_small", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            k = (k + 1) % contents.len();
            out.clear();
            assert!(zlib_compress_small(&contents[k], &mut out));
            black_box(out.len())
        });
    });
    g.bench_function("c_zlib_reset", |b| {
        let mut z = Compress::new(Compression::new(6), true);
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            k = (k + 1) % contents.len();
            out.clear();
            z.reset();
            z.compress_vec(&contents[k], &mut out, FlushCompress::Finish)
                .unwrap();
            black_box(out.len())
        });
    });
    g.bench_function("c_zlib_fresh_encoder", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            k = (k + 1) % contents.len();
            out.clear();
            let mut z = Compress::new(Compression::new(6), true);
            z.compress_vec(&contents[k], &mut out, FlushCompress::Finish)
                .unwrap();
            black_box(out.len())
        });
    });
    // The same encodes with cold caches, as inside a server, where the
    // requests in between evict the encoders' tables: before each timed
    // encode, a buffer of 8 MiB (more than a typical L2) is written.
    let mut evict = vec![0u8; 8 << 20];
    let mut cold = |b: &mut Bencher<'_>, c_zlib: bool| {
        let mut z = Compress::new(Compression::new(6), true);
        let mut out = Vec::with_capacity(512);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for line in evict.chunks_mut(64) {
                    line[0] = line[0].wrapping_add(1);
                }
                black_box(&mut evict);
                k = (k + 1) % contents.len();
                out.clear();
                let start = Instant::now();
                if c_zlib {
                    z.reset();
                    z.compress_vec(&contents[k], &mut out, FlushCompress::Finish)
                        .unwrap();
                } else {
                    zlib_compress_small(&contents[k], &mut out);
                }
                black_box(out.len());
                total += start.elapsed();
            }
            total
        });
    };
    g.bench_function("exact_small_cold", |b| cold(b, false));
    g.bench_function("c_zlib_reset_cold", |b| cold(b, true));
    g.finish();
}

criterion_group!(benches, deflate);
criterion_main!(benches);
