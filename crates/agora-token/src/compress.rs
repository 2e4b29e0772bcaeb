//! zlib compression and capped decompression.
//!
//! Tokens are byte-identical to the official python3 / C++ builders because
//! both use C zlib at level 6. Inputs up to
//! [`zlib_level6_small::MAX_SMALL_INPUT`] bytes (every real token) go
//! through [`zlib_level6_small`], an encoder for small inputs that makes
//! exactly zlib level 6's decisions, proven byte-identical by differential
//! tests and fuzzing, and about 2-3.5x faster on token-sized input. Anything
//! larger falls back to C zlib itself (flate2 over `libz-sys`, built from
//! source with the `static` feature so the output does not depend on the
//! zlib a distribution ships; zlib-ng's output differs). Creating a C deflate
//! stream allocates about 270 KB of tables, so each thread keeps one and
//! resets it between uses.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::ParseError;

/// The compression level of every official builder (zlib's default).
pub const LEVEL: u32 = 6;

thread_local! {
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::new(LEVEL), true));
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(true));
}

/// Appends the zlib stream (RFC 1950, level 6) of `input` to `out`:
/// byte-identical to C zlib's.
pub fn zlib_compress(input: &[u8], out: &mut Vec<u8>) {
    if zlib_level6_small::zlib_compress_small(input, out) {
        return;
    }
    zlib_compress_c(input, out);
}

/// [`zlib_compress`] always through C zlib (the reference; for benches and
/// differential tests).
pub fn zlib_compress_c(input: &[u8], out: &mut Vec<u8>) {
    DEFLATE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut c) => compress_with(&mut c, input, out),
        // Re-entrancy cannot happen (nothing here calls back into this
        // function), but if it ever did, a fresh stream gives the same bytes.
        Err(_) => compress_with(
            &mut Compress::new(Compression::new(LEVEL), true),
            input,
            out,
        ),
    });
}

fn compress_with(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) {
    c.reset();
    // zlib's deflateBound for level 6 is input + input/4096 + small change;
    // this reserve is always enough, and the loop below copes if not.
    out.reserve(input.len() + input.len() / 8 + 64);
    let start = c.total_in();
    loop {
        let consumed = usize::try_from(c.total_in() - start).unwrap_or(input.len());
        let rest = input.get(consumed..).unwrap_or_default();
        match c.compress_vec(rest, out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => break,
            // Out of space: grow and continue the same stream.
            Ok(Status::Ok | Status::BufError) => out.reserve(out.capacity().max(64)),
            // zlib reports a stream error only for misuse of the stream
            // state, which `reset` above rules out; start over on a fresh one.
            Err(_) => {
                *c = Compress::new(Compression::new(LEVEL), true);
                return compress_with(c, input, out);
            }
        }
    }
}

/// Inflates a zlib stream, refusing output larger than `max` bytes before
/// allocating it. Returns the content and the number of input bytes after
/// the end of the zlib stream (ignored, as every reference parser does).
pub fn zlib_decompress(input: &[u8], max: usize) -> Result<(Vec<u8>, usize), ParseError> {
    INFLATE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut d) => decompress_with(&mut d, input, max),
        Err(_) => decompress_with(&mut Decompress::new(true), input, max),
    })
}

fn decompress_with(
    d: &mut Decompress,
    input: &[u8],
    max: usize,
) -> Result<(Vec<u8>, usize), ParseError> {
    d.reset(true);
    let limit = max.saturating_add(1);
    let mut out = Vec::with_capacity(input.len().saturating_mul(3).max(64).min(limit));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= limit {
                return Err(ParseError::ContentTooLarge { max });
            }
            let more = out.capacity().min(limit - out.len());
            out.reserve_exact(more);
        }
        let consumed = usize::try_from(d.total_in()).map_err(|_| ParseError::Zlib)?;
        let rest = input.get(consumed..).ok_or(ParseError::Zlib)?;
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(rest, &mut out, FlushDecompress::None)
            .map_err(|_| ParseError::Zlib)?;
        if out.len() > max {
            return Err(ParseError::ContentTooLarge { max });
        }
        match status {
            Status::StreamEnd => {
                let used = usize::try_from(d.total_in()).map_err(|_| ParseError::Zlib)?;
                return Ok((out, input.len().saturating_sub(used)));
            }
            _ if d.total_in() == in_before
                && d.total_out() == out_before
                && out.len() < out.capacity() =>
            {
                // No progress with room to write: the input ended early.
                return Err(ParseError::Zlib);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_and_c_zlib_agree() {
        for len in [0usize, 1, 157, 300, 4096, 4097, 20_000] {
            let data: Vec<u8> = (0..len as u32).map(|i| (i * 31 % 251) as u8).collect();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            zlib_compress(&data, &mut a);
            zlib_compress_c(&data, &mut b);
            assert_eq!(a, b, "{len}");
        }
    }

    #[test]
    fn round_trip_and_reuse_give_identical_bytes() {
        let data: Vec<u8> = (0..500u32).map(|i| (i * 7 % 13) as u8).collect();
        let mut a = Vec::new();
        zlib_compress(&data, &mut a);
        let mut b = Vec::new();
        zlib_compress(&data, &mut b);
        assert_eq!(a, b);
        let (back, extra) = zlib_decompress(&a, 1000).unwrap();
        assert_eq!(back, data);
        assert_eq!(extra, 0);
    }

    #[test]
    fn decompression_is_capped_and_counts_trailing_bytes() {
        let data = vec![0u8; 10_000];
        let mut z = Vec::new();
        zlib_compress(&data, &mut z);
        assert_eq!(
            zlib_decompress(&z, 9_999),
            Err(ParseError::ContentTooLarge { max: 9_999 })
        );
        assert_eq!(zlib_decompress(&z, 10_000).unwrap().0.len(), 10_000);
        z.extend_from_slice(b"junk");
        assert_eq!(zlib_decompress(&z, 10_000).unwrap().1, 4);
        let cut = &z[..z.len() - 10];
        assert_eq!(zlib_decompress(cut, 10_000), Err(ParseError::Zlib));
        assert_eq!(zlib_decompress(b"", 10), Err(ParseError::Zlib));
    }
}
