//! The dynamic-code block: its three trees, zlib's cost figures, and its
//! output.

use crate::bits::Bits;
use crate::freqs::{Freqs, nonzero_bitmap};
use crate::header::{LenSym, rle_lengths};
use crate::huffman::{BLKIND, DKIND, LKIND, Tree, TreeBuilder, gen_codes};
use crate::tables::{
    BL_CODES, BL_ORDER, D_CODES, DIST_EXTRA, END_BLOCK, L_CODES, LEN_TABLE, LITERALS, dist_base,
    dist_code,
};

/// The three trees of a dynamic block and zlib's cost figures for it.
pub(crate) struct Dynamic {
    ltree: Tree<L_CODES>,
    dtree: Tree<D_CODES>,
    bltree: Tree<BL_CODES>,
    /// Index in [`BL_ORDER`] of the last code-length length sent.
    pub(crate) max_blindex: usize,
    /// Number of code-length symbols, in [`TreeBuilder::header`].
    header_len: usize,
    /// zlib's `opt_len`: bits of the dynamic block (trees included).
    pub(crate) opt_len: i64,
    /// zlib's `static_len`: bits of the fixed-code block.
    pub(crate) static_len: i64,
}

/// Builds the trees exactly as zlib's `_tr_flush_block` does.
pub(crate) fn build_dynamic(builder: &mut TreeBuilder, freqs: &Freqs) -> Dynamic {
    let mut opt_len: i64 = 0;
    let mut static_len: i64 = 0;
    let mut lit = freqs.lit;
    let mut dist = freqs.dist;
    let ltree = builder.build(&mut lit, &freqs.used, &LKIND, &mut opt_len, &mut static_len);
    let dused = nonzero_bitmap(&dist);
    let dtree = builder.build(&mut dist, &dused, &DKIND, &mut opt_len, &mut static_len);
    // The code-length code, its symbols kept for `write_dynamic`.
    let mut bl_freq = [0u32; BL_CODES];
    let mut header_len = 0;
    let header = &mut builder.header;
    let mut count_sym = |s: LenSym| {
        bl_freq[usize::from(s.sym)] += 1;
        if let Some(slot) = header.get_mut(header_len) {
            *slot = s;
            header_len += 1;
        }
    };
    rle_lengths(&ltree.lens[..=ltree.max_code], &mut count_sym);
    rle_lengths(&dtree.lens[..=dtree.max_code], &mut count_sym);
    let mut unused = 0;
    let blused = nonzero_bitmap(&bl_freq);
    let bltree = builder.build(&mut bl_freq, &blused, &BLKIND, &mut opt_len, &mut unused);
    // At least four code-length lengths are sent. (Some length in 1..=15
    // always occurs, so zlib's search never goes below index 3 either.)
    let mut max_blindex = BL_CODES - 1;
    while max_blindex > 3 && bltree.lens[usize::from(BL_ORDER[max_blindex])] == 0 {
        max_blindex -= 1;
    }
    opt_len += 3 * (max_blindex as i64 + 1) + 5 + 5 + 4;
    Dynamic {
        ltree,
        dtree,
        bltree,
        max_blindex,
        header_len,
        opt_len,
        static_len,
    }
}

/// Writes the block's symbols with the given codes, then end-of-block.
fn write_symbols(
    bits: &mut Bits<'_>,
    syms: &[u32],
    lcodes: &[(u16, u8); L_CODES + 2],
    dcodes: &[(u16, u8); D_CODES],
) {
    for &sym in syms {
        let dist = (sym >> 16) as usize;
        if dist == 0 {
            bits.code(lcodes[(sym & 0xff) as usize]);
        } else {
            let (code, extra_bits, extra) = LEN_TABLE[(sym & 0xff) as usize];
            bits.code(lcodes[LITERALS + 1 + usize::from(code)]);
            if extra_bits != 0 {
                bits.put(u32::from(extra), extra_bits);
            }
            let d = dist - 1;
            let dcode = dist_code(d);
            bits.code(dcodes[dcode]);
            let dextra = DIST_EXTRA[dcode];
            if dextra != 0 {
                bits.put((d - dist_base(dcode)) as u32, dextra);
            }
        }
    }
    bits.code(lcodes[END_BLOCK]);
}

/// A final block with dynamic codes.
pub(crate) fn write_dynamic(bits: &mut Bits<'_>, syms: &[u32], d: &Dynamic, header: &[LenSym]) {
    bits.put(0b101, 3); // dynamic codes, final
    let lcodes = d.ltree.max_code + 1;
    let dcodes = d.dtree.max_code + 1;
    bits.put((lcodes - 257) as u32, 5);
    bits.put((dcodes - 1) as u32, 5);
    bits.put((d.max_blindex + 1 - 4) as u32, 4);
    for &sym in &BL_ORDER[..=d.max_blindex] {
        bits.put(u32::from(d.bltree.lens[usize::from(sym)]), 3);
    }
    let blcodes = gen_codes(&d.bltree.lens, d.bltree.max_code, &d.bltree.bl_count);
    for s in header.iter().take(d.header_len) {
        bits.code(blcodes[usize::from(s.sym)]);
        if s.extra_bits != 0 {
            bits.put(u32::from(s.extra), s.extra_bits);
        }
    }
    let lc = gen_codes(&d.ltree.lens, d.ltree.max_code, &d.ltree.bl_count);
    let mut lfull = [(0u16, 0u8); L_CODES + 2];
    lfull[..L_CODES].copy_from_slice(&lc);
    let dc = gen_codes(&d.dtree.lens, d.dtree.max_code, &d.dtree.bl_count);
    write_symbols(bits, syms, &lfull, &dc);
    bits.align();
}
