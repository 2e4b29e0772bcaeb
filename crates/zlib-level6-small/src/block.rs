//! The choice of the single, final block (stored, fixed or dynamic codes)
//! exactly as zlib's `_tr_flush_block` makes it, and the stored block.

use crate::bits::Bits;
use crate::bound::{BoundScratch, dynamic_lower_bound};
use crate::dynamic::{build_dynamic, write_dynamic};
use crate::freqs::Freqs;
use crate::huffman::TreeBuilder;
use crate::tables::{DIST_EXTRA, LEN_EXTRA, LITERALS, STATIC_LLEN};

/// Arrays of the block choice and the Huffman trees.
pub(crate) struct BlockScratch {
    pub(crate) trees: TreeBuilder,
    pub(crate) bound: BoundScratch,
}

/// zlib's `static_len`: the bits of the block's symbols in the fixed code.
/// (zlib's adjustments for the codes it forces into nearly empty trees
/// cancel out in this figure.)
pub(crate) fn static_bits(freqs: &Freqs) -> i64 {
    let mut bits = 0i64;
    for n in freqs.used_lits() {
        let extra = if n > LITERALS {
            LEN_EXTRA[n - LITERALS - 1]
        } else {
            0
        };
        bits += i64::from(freqs.lit[n]) * i64::from(STATIC_LLEN[n] + extra);
    }
    for (&f, &extra) in freqs.dist.iter().zip(&DIST_EXTRA) {
        bits += i64::from(f) * i64::from(5 + extra);
    }
    bits
}

/// Inputs above this length skip the lower bound: they are usually
/// compressed best with dynamic codes.
const BOUND_MAX_INPUT: usize = 288;

/// Inputs up to this length try the quick pass of the lower bound first:
/// on token contents of up to about 180 bytes it decides more than nine
/// times out of ten; on longer ones the full pass is more and more often
/// needed after it.
const QUICK_MAX_INPUT: usize = 184;

/// Block size in whole bytes as zlib counts it: 3 header bits, rounded up.
pub(crate) fn block_bytes(bits: i64) -> i64 {
    (bits + 3 + 7) >> 3
}

/// Chooses and writes the single, final block, as zlib's `_tr_flush_block`:
/// stored when `len + 4` bytes is no more than the best coded size, else
/// fixed codes when they are no larger than dynamic ones, else dynamic.
pub(crate) fn write_block(
    scratch: &mut BlockScratch,
    syms: &[u32],
    fixed: &[u8],
    freqs: &Freqs,
    input: &[u8],
    out: &mut Vec<u8>,
) {
    let stored_len = input.len() as i64;
    debug_assert_eq!(i64::from(freqs.fixed_bits), static_bits(freqs));
    let static_lenb = block_bytes(i64::from(freqs.fixed_bits));
    // When even a lower bound of the dynamic block's size is no smaller
    // than the fixed block, zlib would not choose the dynamic block: the
    // trees need not be built. (Above BOUND_MAX_INPUT the bound rarely
    // decides and is not worth computing; debug builds always check it.)
    let lower = if input.len() <= BOUND_MAX_INPUT || cfg!(debug_assertions) {
        // The fewest bits for which zlib would prefer the fixed block.
        let target = 8 * static_lenb - 3 - 7;
        let quick_first = input.len() <= QUICK_MAX_INPUT;
        dynamic_lower_bound(&mut scratch.bound, freqs, target, quick_first)
    } else {
        None
    };
    if let Some(lower) = lower {
        #[cfg(debug_assertions)]
        {
            let exact = build_dynamic(&mut scratch.trees, freqs);
            debug_assert!(lower <= exact.opt_len, "bound {lower} > {}", exact.opt_len);
            debug_assert_eq!(exact.static_len, static_bits(freqs));
        }
        if static_lenb <= block_bytes(lower) {
            if stored_len + 4 <= static_lenb {
                write_stored(&mut Bits::new(out), input);
            } else {
                out.extend_from_slice(fixed);
            }
            return;
        }
    }

    let dynamic = build_dynamic(&mut scratch.trees, freqs);
    let mut opt_lenb = block_bytes(dynamic.opt_len);
    let static_lenb = block_bytes(dynamic.static_len);
    if static_lenb <= opt_lenb {
        opt_lenb = static_lenb;
    }
    let mut bits = Bits::new(out);
    if stored_len + 4 <= opt_lenb {
        write_stored(&mut bits, input);
    } else if static_lenb == opt_lenb {
        bits.out.extend_from_slice(fixed);
    } else {
        write_dynamic(&mut bits, syms, &dynamic, &scratch.trees.header);
    }
}

/// A final stored block (its length is below 65536).
fn write_stored(bits: &mut Bits<'_>, input: &[u8]) {
    bits.put(0b001, 3); // stored, final
    bits.align();
    let len = input.len() as u16;
    bits.out.extend_from_slice(&len.to_le_bytes());
    bits.out.extend_from_slice(&(!len).to_le_bytes());
    bits.out.extend_from_slice(input);
}
