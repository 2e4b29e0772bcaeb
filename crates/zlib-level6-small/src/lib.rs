//! A DEFLATE / zlib encoder for small inputs that reproduces C zlib's level 6
//! output byte for byte.
//!
//! Tokens must be byte-identical to the official builders, which compress
//! with C zlib at level 6 (default strategy, 15-bit window, `memLevel` 8,
//! zlib wrapper). On a token-sized input C zlib spends about half its time
//! building Huffman trees (its heap), and much of the rest resetting and
//! filling state sized for large inputs. This crate makes exactly zlib's
//! decisions with state sized to the input, and usually proves that zlib
//! would not use dynamic codes without building the trees at all.
//!
//! # Design
//!
//! An independent implementation of RFC 1950 / 1951 and of the rules zlib
//! documents for level 6 (`good_length` 8, `max_lazy` 16, `nice_length` 128,
//! `max_chain` 128, lazy evaluation, `deflate_slow`):
//!
//! * **Hash chains.** zlib inserts every position that has three bytes of
//!   lookahead into a 15-bit hash of those bytes (`memLevel` + 7 bits), in
//!   increasing order, whatever the matcher decides; position 0 doubles as
//!   the empty-chain marker, so it is never a match candidate. The chains
//!   depend on the input only and are built in one pass with zlib's rolling
//!   hash: `prev[i]` is the latest earlier position with the same hash.
//!   zlib's 32768-entry head table is replaced by a linear-probing table
//!   keyed by the hash values the input has (at least twice as many slots
//!   as positions, cleared per call): the same chains, but a token touches
//!   a kilobyte or two of it instead of a few hundred random cache lines of
//!   a 128 KiB table, which matters when the requests in between evict the
//!   caches. The scratch lives in a thread-local; its other buffers only
//!   grow: every entry read is written first by the same call.
//! * **Lazy matching** replays `deflate_slow`: a match is searched at each
//!   position unless the previous match is at least `max_lazy` long; the
//!   search walks at most `max_chain` candidates (a quarter when the previous
//!   match is at least `good_length`), stops at `nice_length` (capped at the
//!   lookahead), only takes strictly longer matches, and drops 3-byte matches
//!   farther than 4096 bytes (`TOO_FAR`). The previous match is emitted when
//!   the current one is not longer. With no match pending, positions
//!   without a chain can only emit the previous byte, so such runs go
//!   through a tight literal loop. The fixed-code block is written as the
//!   symbols are decided (see below); its size is zlib's `static_len`.
//! * **Block choice.** Below 16383 input bytes zlib emits one final block.
//!   It computes the bit cost of a fixed-code block and of a dynamic block
//!   (trees included) and chooses stored when `len + 4` bytes is no more
//!   than the better of the two (in whole bytes), then fixed when it is no
//!   larger than dynamic, else dynamic. So does this crate.
//! * **Huffman trees** follow zlib's construction exactly (the output
//!   depends on it): a binary heap ordered by frequency then subtree depth,
//!   with zlib's tie behaviour (leaves entered in symbol order, heapified,
//!   the same sift comparisons), the forced second code of nearly empty
//!   trees, the overflow repair that limits code lengths to 15 (7 for the
//!   code-length code), canonical codes, zlib's run-length coding of code
//!   lengths, and at least four code-length code lengths in RFC order.
//! * **Skipping the trees.** For the dynamic block, a lower bound is
//!   computed without zlib's heap (see `dynamic_lower_bound`): the exact
//!   data cost, which does not depend on how the heap breaks ties, plus a
//!   lower bound of the tree header from the code lengths that are certain
//!   whatever the ties. Nodes of equal (frequency, height) are the only
//!   ties, so the two-queue Huffman construction is run a whole tie group
//!   at a time (leaves of one frequency, or internal nodes of one key),
//!   which gives the data cost and, walking the groups back from the root,
//!   the range of code lengths of each frequency; a tree's used symbols
//!   are scanned once for the zero runs of the header (exact) and the
//!   windows of four consecutive symbols (the only places where lengths can
//!   be folded into repeat codes). When that bound already loses to the
//!   fixed block, zlib would not choose dynamic codes and the trees are not
//!   built; otherwise they are, exactly as above. (Debug builds check every
//!   bound against the exact trees.) Inputs of up to 184 bytes first try a
//!   quick pass that takes every length a window of four consecutive
//!   symbols covers (but a run's first) as possibly folded, whatever the
//!   ranges, and so needs neither the windows' list nor their ranges: on
//!   token contents of about 140 bytes it decides every time, and when it
//!   falls short the full pass follows. For token contents of up to about
//!   200 bytes the bound decides more than nine times out of ten; longer
//!   contents more and more often need dynamic codes, and above 288 bytes
//!   the bound is not tried.
//! * **Fixed block output.** The fixed codes are tabulated per literal and
//!   per match length (with its extra bits). Since the fixed block is
//!   almost always the one chosen, the tokenizer writes it as it decides
//!   the symbols (keeping them too, for a dynamic block): the bits go
//!   through a 64-bit accumulator that is stored whole after every symbol
//!   into a fixed-size scratch buffer with room for the worst case, and
//!   are copied out once when the fixed block is chosen.
//!
//! Inputs longer than [`MAX_SMALL_INPUT`] are refused (the caller falls back
//! to C zlib): every length up to it is covered by the differential tests
//! and the fuzz target, which compare with C zlib.
//!
//! ```
//! let mut out = Vec::new();
//! assert!(zlib_level6_small::zlib_compress_small(b"hello, hello, hello", &mut out));
//! assert_eq!(out[..2], [0x78, 0x9c]); // the zlib header of level 6
//!
//! // Longer inputs are refused, and `out` is left alone.
//! let big = vec![0; zlib_level6_small::MAX_SMALL_INPUT + 1];
//! assert!(!zlib_level6_small::zlib_compress_small(&big, &mut out));
//! ```
//!
//! # Source layout
//!
//! One concern per module: `tables` (level 6 parameters, RFC 1951
//! tables), `tokenize` (hash chains and lazy matching), `freqs` (symbol
//! frequencies), `fixed` (the fixed-code block written while tokenizing),
//! `huffman` (zlib's tree construction), `header` (run-length coding of
//! code lengths), `dynamic` (the dynamic block), `bound` (the lower bound
//! of the dynamic block, with `bound::ties`), `block` (the block choice and
//! stored block) and `bits` (the bit writer). This file holds the entry
//! point, the per-thread scratch and Adler-32.

#![forbid(unsafe_code)]

use std::cell::RefCell;

mod bits;
mod block;
mod bound;
mod dynamic;
mod fixed;
mod freqs;
mod header;
mod huffman;
mod tables;
#[cfg(test)]
mod test_rng;
mod tokenize;

use block::{BlockScratch, write_block};
use bound::BoundScratch;
use fixed::FIXED_BUF;
use freqs::Freqs;
use huffman::TreeBuilder;
use tokenize::{HeadTable, tokenize};

/// Largest input, in bytes, that [`zlib_compress_small`] encodes; longer
/// inputs are refused so that the caller uses C zlib.
///
/// Below 16383 bytes zlib emits a single block, never slides its window
/// and never limits match distances; 4096 keeps the proven range well
/// inside that and covers every token (about 100 to 420 bytes).
pub const MAX_SMALL_INPUT: usize = 4096;

/// Per-thread buffers reused across calls, so no call clears large tables.
struct Scratch {
    /// The hash heads of the current call, in an open-addressing table
    /// of the hash values seen (see [`HeadTable`]).
    head: HeadTable,
    /// `prev[i]`: latest earlier position with the hash of position `i`, or
    /// 0 (zlib's NIL) when there is none.
    prev: Vec<u16>,
    /// Symbols: a literal byte (`dist == 0`) or `dist << 16 | (len - 3)`.
    syms: Vec<u32>,
    /// The fixed-code block, written while tokenizing (never cleared:
    /// only the bytes written by the current call are read).
    fixed: Box<[u8; FIXED_BUF]>,
    /// Arrays of the block choice (never need clearing).
    block: BlockScratch,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            head: HeadTable::new(),
            prev: Vec::new(),
            syms: Vec::new(),
            fixed: Box::new([0; FIXED_BUF]),
            block: BlockScratch {
                trees: TreeBuilder::new(),
                bound: BoundScratch::new(),
            },
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

/// Appends to `out` the zlib stream (RFC 1950: header `78 9c`, DEFLATE data,
/// big-endian Adler-32) that C zlib produces at level 6 for `input`, and
/// returns true.
///
/// Returns false without touching `out` when `input` is longer than
/// [`MAX_SMALL_INPUT`]; the caller then uses C zlib.
pub fn zlib_compress_small(input: &[u8], out: &mut Vec<u8>) -> bool {
    if input.len() > MAX_SMALL_INPUT {
        return false;
    }
    let done = SCRATCH.try_with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => encode(&mut scratch, input, out),
        // Nothing in `encode` can re-enter, but a fresh scratch would give
        // the same bytes anyway.
        Err(_) => encode(&mut Scratch::new(), input, out),
    });
    if done.is_err() {
        // The thread is being torn down and its scratch is gone.
        encode(&mut Scratch::new(), input, out);
    }
    true
}

/// Encodes `input` (at most [`MAX_SMALL_INPUT`] bytes) into `out`.
fn encode(scratch: &mut Scratch, input: &[u8], out: &mut Vec<u8>) {
    // A DEFLATE stream is never longer than the stored form: header, one
    // stored block (1 + 4 bytes) and the checksum.
    out.reserve(input.len() + 16);
    out.extend_from_slice(&[0x78, 0x9c]);
    let mut freqs = Freqs::new();
    let (count, fixed_len) = tokenize(scratch, input, &mut freqs);
    let syms = scratch.syms.get(..count).unwrap_or_default();
    let fixed = scratch.fixed.get(..fixed_len).unwrap_or_default();
    write_block(&mut scratch.block, syms, fixed, &freqs, input, out);
    out.extend_from_slice(&adler32(input).to_be_bytes());
}

/// Adler-32 (RFC 1950 9.) of `data`.
fn adler32(data: &[u8]) -> u32 {
    const BASE: u32 = 65521;
    // 5552 is the largest run for which `b` cannot overflow a u32.
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= BASE;
        b %= BASE;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adler32_known_values() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        // Long enough for the modulo to matter.
        let data = vec![0xFFu8; 6000];
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &data {
            a = (a + u64::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(adler32(&data), ((b << 16) | a) as u32);
    }

    #[test]
    fn empty_input_is_an_empty_fixed_block() {
        let mut out = Vec::new();
        assert!(zlib_compress_small(b"", &mut out));
        assert_eq!(out, [0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    }

    #[test]
    fn too_long_input_is_refused_untouched() {
        let mut out = vec![9];
        assert!(!zlib_compress_small(
            &vec![0; MAX_SMALL_INPUT + 1],
            &mut out
        ));
        assert_eq!(out, [9]);
    }
}
