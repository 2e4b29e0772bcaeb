//! The symbol frequencies of the block, with bitmaps of the used symbols.

use crate::tables::{D_CODES, END_BLOCK, L_CODES, LEN_TABLE, LITERALS};

/// Symbol frequencies of the block.
pub(crate) struct Freqs {
    pub(crate) lit: [u32; L_CODES],
    pub(crate) dist: [u32; D_CODES],
    /// Bitmap of the literal/length symbols with a nonzero frequency, so
    /// that the sparse table need not be scanned.
    pub(crate) used: [u64; L_CODES.div_ceil(64)],
    /// zlib's `static_len`: the bits of the symbols in the fixed code
    /// (see [`static_bits`](crate::block::static_bits)), set by [`tokenize`](crate::tokenize::tokenize) from the fixed block it
    /// writes.
    pub(crate) fixed_bits: u32,
}

impl Freqs {
    pub(crate) fn new() -> Self {
        let mut f = Freqs {
            lit: [0; L_CODES],
            dist: [0; D_CODES],
            used: [0; L_CODES.div_ceil(64)],
            fixed_bits: 0,
        };
        f.add_lit(END_BLOCK);
        f
    }

    #[inline]
    pub(crate) fn add_lit(&mut self, sym: usize) {
        self.lit[sym] += 1;
        self.used[sym / 64] |= 1 << (sym % 64);
    }

    /// A literal byte.
    #[inline]
    pub(crate) fn add_byte(&mut self, byte: u8) {
        self.add_lit(usize::from(byte));
    }

    /// A match of length `lc + 3` whose distance minus one has code
    /// `dcode`.
    #[inline]
    pub(crate) fn add_match(&mut self, lc: usize, dcode: usize) {
        let (code, _, _) = LEN_TABLE[lc & 0xFF];
        self.add_lit(LITERALS + 1 + usize::from(code));
        self.dist[dcode % D_CODES] += 1;
    }

    /// The used literal/length symbols, ascending.
    pub(crate) fn used_lits(&self) -> impl Iterator<Item = usize> + '_ {
        set_bits(&self.used)
    }
}

/// The positions of the set bits of a bitmap, ascending.
pub(crate) fn set_bits(words: &[u64]) -> impl Iterator<Item = usize> + '_ {
    words.iter().enumerate().flat_map(|(i, &word)| {
        let mut w = word;
        std::iter::from_fn(move || {
            (w != 0).then(|| {
                let bit = w.trailing_zeros() as usize;
                w &= w - 1;
                i * 64 + bit
            })
        })
    })
}

/// The bitmap of the nonzero entries of a table of at most 64 entries.
pub(crate) fn nonzero_bitmap(freqs: &[u32]) -> [u64; 1] {
    let mut w = 0u64;
    for (n, &f) in freqs.iter().enumerate().take(64) {
        w |= u64::from(f != 0) << n;
    }
    [w]
}
