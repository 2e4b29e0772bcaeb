//! The fixed-code block writer: the block is written as the tokenizer
//! decides the symbols, since it is almost always the one chosen.

use crate::MAX_SMALL_INPUT;
use crate::tables::{
    DIST_EXTRA, END_BLOCK, LEN_TABLE, LITERALS, STATIC_DCODES, STATIC_LCODES, dist_base,
};

/// Room for a fixed-code block of at most [`MAX_SMALL_INPUT`] bytes: a
/// symbol takes at most 31 bits (a match of 3 or more bytes at most
/// 8 + 5 + 5 + 13, a literal 9), so under 11 bits a byte, plus the block
/// header, end-of-block code and a whole last 8-byte store.
pub(crate) const FIXED_BUF: usize = 8192;
const _: () = assert!(MAX_SMALL_INPUT * 11 / 8 + 16 <= FIXED_BUF);

/// The fixed-code block, written as symbols are decided: the bits go
/// through a 64-bit accumulator that is stored whole after every symbol,
/// keeping its pending bits.
pub(crate) struct FixedWriter<'a> {
    buf: &'a mut [u8; FIXED_BUF],
    /// Whole bytes written.
    pos: usize,
    pub(crate) acc: u64,
    /// Pending bits in `acc` (below 8 between symbols).
    pub(crate) n: u32,
}

impl<'a> FixedWriter<'a> {
    pub(crate) fn new(buf: &'a mut [u8; FIXED_BUF]) -> Self {
        FixedWriter {
            buf,
            pos: 0,
            acc: 0b011, // fixed codes, final
            n: 3,
        }
    }

    /// Appends `len` (at most 31) bits.
    #[inline(always)]
    pub(crate) fn put(&mut self, bits: u64, len: u32) {
        self.acc |= bits << self.n;
        self.n += len;
        // `pos` stays far below the cap (see FIXED_BUF), which only spares
        // a bounds check.
        let at = self.pos.min(FIXED_BUF - 8);
        self.buf[at..at + 8].copy_from_slice(&self.acc.to_le_bytes());
        // n <= 7 + 31: at most four whole bytes are done.
        let bytes = self.n / 8;
        self.pos += bytes as usize;
        self.acc >>= 8 * bytes;
        self.n &= 7;
    }

    #[inline(always)]
    pub(crate) fn literal(&mut self, byte: u8) {
        let code = FIXED_LIT[usize::from(byte)];
        self.put(u64::from(code & 0xFFFF), code >> 16);
    }

    /// A match of length `lc + 3`; `d` is the distance minus one and
    /// `dcode` its code.
    #[inline(always)]
    pub(crate) fn matched(&mut self, lc: usize, d: usize, dcode: usize) {
        let code = FIXED_LEN[lc & 0xFF];
        let (lbits, llen) = (u64::from(code & 0xFFFF), code >> 16);
        let dextra = u32::from(DIST_EXTRA[dcode]);
        let dbits = u64::from(STATIC_DCODES[dcode].0) | ((d - dist_base(dcode)) as u64) << 5;
        self.put(lbits | dbits << llen, llen + 5 + dextra);
    }

    /// Ends the block: returns zlib's `static_len` (the bits after the
    /// block header) and the block's length in bytes.
    pub(crate) fn finish(mut self) -> (u32, usize) {
        let (eob, eob_len) = STATIC_LCODES[END_BLOCK];
        self.put(u64::from(eob), u32::from(eob_len));
        let bits = 8 * self.pos as u32 + self.n - 3;
        (bits, self.pos + usize::from(self.n != 0))
    }
}

/// The fixed code of each literal byte: bit-reversed code | length << 16.
const FIXED_LIT: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut b = 0;
    while b < 256 {
        let (code, len) = STATIC_LCODES[b];
        t[b] = code as u32 | (len as u32) << 16;
        b += 1;
    }
    t
};

/// The fixed code of each match length minus 3, followed by its extra
/// bits: bits | total length << 16.
const FIXED_LEN: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut lc = 0;
    while lc < 256 {
        let (code, extra, value) = LEN_TABLE[lc];
        let (bits, len) = STATIC_LCODES[LITERALS + 1 + code as usize];
        t[lc] = (bits as u32 | (value as u32) << len) | ((len + extra) as u32) << 16;
        lc += 1;
    }
    t
};
