//! Differential tests: `zlib_compress_small` must produce the
//! very bytes of C zlib at level 6 (flate2 over libz-sys) for every input it
//! accepts.
//!
//! The timing comparison is an ignored test; run it with
//! `cargo test --release -p zlib-level6-small --test differential -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flate2::{Compress, Compression, FlushCompress, Status};
use zlib_level6_small::{MAX_SMALL_INPUT, zlib_compress_small};

/// C zlib, level 6, zlib wrapper, one stream reused through `reset`.
struct CZlib(Compress);

impl CZlib {
    fn new() -> Self {
        CZlib(Compress::new(Compression::new(6), true))
    }

    fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.0.reset();
        out.clear();
        out.reserve(input.len() + 64);
        let status = self
            .0
            .compress_vec(input, out, FlushCompress::Finish)
            .unwrap();
        assert_eq!(status, Status::StreamEnd, "output buffer too small");
    }
}

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

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A token-shaped content: signature, app id, issue time, expire, salt and
/// services with privileges and hex / text strings, cut or padded to `len`.
fn token_like(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 64);
    v.extend_from_slice(&32u16.to_le_bytes());
    for _ in 0..32 {
        v.push(rng.byte());
    }
    v.extend_from_slice(&32u16.to_le_bytes());
    let app: Vec<u8> = (0..32).map(|_| HEX[rng.below(16)]).collect();
    v.extend_from_slice(&app);
    let now = 1_700_000_000u32 + rng.below(100_000_000) as u32;
    v.extend_from_slice(&now.to_le_bytes());
    v.extend_from_slice(&(3600u32 * (1 + rng.below(24) as u32)).to_le_bytes());
    v.extend_from_slice(&(rng.next() as u32).to_le_bytes());
    let services = 1 + rng.below(4);
    v.extend_from_slice(&(services as u16).to_le_bytes());
    let expire = (rng.below(86_400) as u32).to_le_bytes();
    while v.len() < len {
        v.extend_from_slice(&(1 + rng.below(8) as u16).to_le_bytes());
        let privileges = 1 + rng.below(4);
        v.extend_from_slice(&(privileges as u16).to_le_bytes());
        for p in 0..privileges {
            v.extend_from_slice(&(p as u16 + 1).to_le_bytes());
            v.extend_from_slice(&expire);
        }
        let slen = rng.below(64);
        v.extend_from_slice(&(slen as u16).to_le_bytes());
        match rng.below(3) {
            0 => v.extend((0..slen).map(|_| HEX[rng.below(16)])),
            1 => v.extend((0..slen).map(|_| b'a' + rng.below(26) as u8)),
            _ => v.extend_from_slice(&app[..slen.min(32)]),
        }
        let uid = rng.below(10_000_000_000).to_string();
        v.extend_from_slice(&(uid.len() as u16).to_le_bytes());
        v.extend_from_slice(uid.as_bytes());
    }
    v.truncate(len);
    v
}

/// An input of `len` bytes of one of several kinds of entropy.
fn generate(rng: &mut Rng, kind: usize, len: usize) -> Vec<u8> {
    match kind {
        // Uniform random bytes: mostly stored blocks.
        0 => (0..len).map(|_| rng.byte()).collect(),
        // Small alphabets, skewed or not: many short matches, deep trees.
        1 => {
            let k = 1 + rng.below(24);
            let skew = rng.below(3);
            (0..len)
                .map(|_| {
                    let mut s = rng.below(k);
                    for _ in 0..skew {
                        s = s.min(rng.below(k));
                    }
                    b'A' + s as u8
                })
                .collect()
        }
        // Runs of repeated bytes.
        2 => {
            let mut v = Vec::with_capacity(len);
            while v.len() < len {
                let b = rng.byte() & 0x7;
                let cap = if rng.below(4) == 0 { 300 } else { 12 };
                let run = 1 + rng.below(cap);
                v.extend(std::iter::repeat_n(b, run));
            }
            v.truncate(len);
            v
        }
        // Copies of earlier pieces at any distance, with noise: long
        // matches, lazy-match decisions, 258-byte matches.
        3 => {
            let mut v = Vec::with_capacity(len);
            while v.len() < len {
                if v.len() > 8 && rng.below(3) != 0 {
                    let start = rng.below(v.len());
                    let cap = if rng.below(5) == 0 { 400 } else { 20 };
                    let n = 3 + rng.below(cap);
                    for i in 0..n {
                        v.push(v[start + i % (v.len() - start)]);
                    }
                    if rng.below(2) == 0 {
                        v.push(rng.byte());
                    }
                } else {
                    let n = 1 + rng.below(6);
                    v.extend((0..n).map(|_| rng.byte()));
                }
            }
            v.truncate(len);
            v
        }
        4 => token_like(rng, len),
        // Hex text.
        5 => (0..len).map(|_| HEX[rng.below(16)]).collect(),
        // A mixture of the above, piece by piece.
        _ => {
            let mut v = Vec::with_capacity(len);
            while v.len() < len {
                let piece = 1 + rng.below(len / 2 + 1);
                let sub = rng.below(6);
                v.extend(generate(rng, sub, piece));
            }
            v.truncate(len);
            v
        }
    }
}

const KINDS: usize = 7;

fn check(zlib: &mut CZlib, input: &[u8], expected: &mut Vec<u8>, ours: &mut Vec<u8>) {
    zlib.compress(input, expected);
    ours.clear();
    ours.push(0xEE); // must be appended to, not overwritten
    assert!(
        zlib_compress_small(input, ours),
        "refused {} bytes",
        input.len()
    );
    assert_eq!(ours[0], 0xEE);
    if ours[1..] != expected[..] {
        panic!(
            "mismatch for {} bytes: input {:02x?}\n zlib {:02x?}\n ours {:02x?}",
            input.len(),
            input,
            expected,
            &ours[1..]
        );
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn identical_on_test_vectors() {
    // The token contents of agora-token's test vectors.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agora-token/tests/data/vectors.json"
    ))
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut contents = Vec::new();
    for v in json["vectors"].as_array().unwrap() {
        contents.push(v["expected"]["content_hex"].as_str().unwrap().to_owned());
    }
    for v in json["repo_test_vectors"].as_array().unwrap() {
        contents.push(v["content_hex"].as_str().unwrap().to_owned());
    }
    assert!(contents.len() >= 70, "only {} vectors", contents.len());
    let (mut zlib, mut expected, mut ours) = (CZlib::new(), Vec::new(), Vec::new());
    for hex in &contents {
        check(&mut zlib, &hex_decode(hex), &mut expected, &mut ours);
    }
}

#[test]
fn identical_on_every_length_and_kind() {
    // Every length 0..=MAX_SMALL_INPUT, each with two kinds in rotation.
    let (mut zlib, mut expected, mut ours) = (CZlib::new(), Vec::new(), Vec::new());
    let mut rng = Rng::new(1);
    let mut count = 0;
    for len in 0..=MAX_SMALL_INPUT {
        for k in 0..2 {
            let input = generate(&mut rng, (2 * len + k) % KINDS, len);
            check(&mut zlib, &input, &mut expected, &mut ours);
            count += 1;
        }
    }
    assert_eq!(count, 2 * (MAX_SMALL_INPUT + 1));
}

#[test]
fn identical_on_short_inputs_of_every_kind() {
    // Token sizes get the most attention: 3000 inputs of 0..=600 bytes.
    let (mut zlib, mut expected, mut ours) = (CZlib::new(), Vec::new(), Vec::new());
    let mut rng = Rng::new(2);
    for i in 0..3000 {
        let len = rng.below(601);
        let input = generate(&mut rng, i % KINDS, len);
        check(&mut zlib, &input, &mut expected, &mut ours);
    }
}

#[test]
fn identical_on_tiny_inputs_exhaustively() {
    // Every input of up to 2 bytes over a 3-letter alphabet, and all 4- and
    // 5-byte strings over {a, b}.
    let (mut zlib, mut expected, mut ours) = (CZlib::new(), Vec::new(), Vec::new());
    let alphabet = [0u8, b'a', 0xff];
    check(&mut zlib, &[], &mut expected, &mut ours);
    for &a in &alphabet {
        check(&mut zlib, &[a], &mut expected, &mut ours);
        for &b in &alphabet {
            check(&mut zlib, &[a, b], &mut expected, &mut ours);
        }
    }
    for len in 3..=12 {
        for bits in 0..1u32 << len.min(10) {
            let input: Vec<u8> = (0..len)
                .map(|i| b'a' + ((bits >> (i % 10)) & 1) as u8)
                .collect();
            check(&mut zlib, &input, &mut expected, &mut ours);
        }
    }
}

#[test]
fn identical_on_token_shaped_inputs() {
    let (mut zlib, mut expected, mut ours) = (CZlib::new(), Vec::new(), Vec::new());
    let mut rng = Rng::new(3);
    for _ in 0..3000 {
        let len = 90 + rng.below(450);
        let input = token_like(&mut rng, len);
        check(&mut zlib, &input, &mut expected, &mut ours);
    }
}

#[test]
fn refuses_larger_inputs_without_touching_output() {
    let input = vec![7u8; MAX_SMALL_INPUT + 1];
    let mut out = vec![1, 2, 3];
    assert!(!zlib_compress_small(&input, &mut out));
    assert_eq!(out, [1, 2, 3]);
    assert_eq!(out.capacity(), 3);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Timing of C zlib (one reset stream) against ours on token-shaped inputs.
#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn timing_against_c_zlib() {
    use std::hint::black_box;
    use std::time::Instant;
    let mut rng = Rng::new(4);
    for len in [140usize, 200, 300] {
        let inputs: Vec<Vec<u8>> = (0..64).map(|_| token_like(&mut rng, len)).collect();
        let mut zlib = CZlib::new();
        let mut out = Vec::with_capacity(1024);
        let iters = 20_000;
        let (mut c_runs, mut ours_runs) = (Vec::new(), Vec::new());
        for _ in 0..9 {
            let t = Instant::now();
            for i in 0..iters {
                zlib.compress(black_box(&inputs[i % inputs.len()]), &mut out);
                black_box(&out);
            }
            c_runs.push(t.elapsed().as_nanos() as f64 / iters as f64);
            let t = Instant::now();
            for i in 0..iters {
                out.clear();
                zlib_compress_small(black_box(&inputs[i % inputs.len()]), &mut out);
                black_box(&out);
            }
            ours_runs.push(t.elapsed().as_nanos() as f64 / iters as f64);
        }
        let (c, o) = (median(c_runs), median(ours_runs));
        println!(
            "{len:>4} bytes: C zlib (reset stream) {c:>7.0} ns, zlib-level6-small {o:>6.0} ns, x{:.1}",
            c / o
        );
    }
}
