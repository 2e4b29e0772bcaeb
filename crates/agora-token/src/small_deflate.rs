//! A DEFLATE / zlib encoder for small inputs that reproduces C zlib's level 6
//! output byte for byte.
//!
//! Tokens must be byte-identical to the official builders, which compress
//! with C zlib at level 6 (default strategy, 15-bit window, `memLevel` 8,
//! zlib wrapper). On a token-sized input C zlib spends about half its time
//! building Huffman trees (its heap), and much of the rest resetting and
//! filling state sized for large inputs. This module makes exactly zlib's
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
//!   larger than dynamic, else dynamic. So does this module.
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

use std::cell::RefCell;

/// Largest input, in bytes, that [`zlib_compress_small`] encodes; longer
/// inputs are refused so that the caller uses C zlib.
///
/// Below 16383 bytes zlib emits a single block, never slides its window
/// and never limits match distances; 4096 keeps the proven range well
/// inside that and covers every token (about 100 to 420 bytes).
pub const MAX_SMALL_INPUT: usize = 4096;

// --- zlib level 6 parameters and DEFLATE constants -------------------------

const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
const GOOD_LENGTH: usize = 8;
const MAX_LAZY: usize = 16;
const NICE_LENGTH: usize = 128;
const MAX_CHAIN: usize = 128;
/// 3-byte matches farther than this are not worth it (zlib's `TOO_FAR`).
const TOO_FAR: usize = 4096;
/// 32 KiB window minus zlib's minimum lookahead (258 + 3 + 1).
const MAX_DIST: usize = 32768 - (MAX_MATCH + MIN_MATCH + 1);

const HASH_BITS: u32 = 15; // memLevel 8 + 7
const HASH_MASK: u32 = (1 << HASH_BITS) - 1;
const HASH_SHIFT: u32 = HASH_BITS.div_ceil(MIN_MATCH as u32); // 5

const LITERALS: usize = 256;
const END_BLOCK: usize = 256;
const L_CODES: usize = LITERALS + 1 + 29;
const D_CODES: usize = 30;
const BL_CODES: usize = 19;
const HEAP_SIZE: usize = 2 * L_CODES + 1;
/// The heap array is a power of two long, so masked indices need no
/// bounds checks.
const HEAP_MASK: usize = 1023;
const MAX_BITS: usize = 15;
const MAX_BL_BITS: usize = 7;
const REP_3_6: usize = 16;
const REPZ_3_10: usize = 17;
const REPZ_11_138: usize = 18;

/// The order in which code-length-code lengths are sent (RFC 1951 3.2.7).
const BL_ORDER: [u8; BL_CODES] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];
const EXTRA_BLBITS: [u8; BL_CODES] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7];

// --- length and distance code tables (built at compile time) ---------------

/// Length code (0..29) of a match length minus 3.
const fn length_code(lc: usize) -> usize {
    if lc < 8 {
        lc
    } else if lc == 255 {
        28 // 258 has its own code, as zlib emits it
    } else {
        let nb = (usize::BITS - 1 - lc.leading_zeros()) as usize;
        4 * (nb - 1) + ((lc >> (nb - 2)) & 3)
    }
}

const fn length_extra(code: usize) -> u8 {
    if code < 8 || code == 28 {
        0
    } else {
        (code / 4 - 1) as u8
    }
}

const fn length_base(code: usize) -> usize {
    if code < 8 {
        code
    } else if code == 28 {
        255
    } else {
        (4 + (code & 3)) << (code / 4 - 1)
    }
}

/// Distance code (0..30) of a distance minus 1.
const fn dist_code(d: usize) -> usize {
    if d < 4 {
        d
    } else {
        let nb = (usize::BITS - 1 - d.leading_zeros()) as usize;
        2 * nb + ((d >> (nb - 1)) & 1)
    }
}

const fn dist_extra(code: usize) -> u8 {
    if code < 4 { 0 } else { (code / 2 - 1) as u8 }
}

const fn dist_base(code: usize) -> usize {
    if code < 4 {
        code
    } else {
        (2 + (code & 1)) << (code / 2 - 1)
    }
}

/// For each match length minus 3: (length code, extra bits, extra value).
const LEN_TABLE: [(u8, u8, u8); 256] = {
    let mut t = [(0u8, 0u8, 0u8); 256];
    let mut lc = 0;
    while lc < 256 {
        let code = length_code(lc);
        t[lc] = (
            code as u8,
            length_extra(code),
            (lc - length_base(code)) as u8,
        );
        lc += 1;
    }
    t
};

const LEN_EXTRA: [u8; 29] = {
    let mut t = [0u8; 29];
    let mut c = 0;
    while c < 29 {
        t[c] = length_extra(c);
        c += 1;
    }
    t
};

const DIST_EXTRA: [u8; D_CODES] = {
    let mut t = [0u8; D_CODES];
    let mut c = 0;
    while c < D_CODES {
        t[c] = dist_extra(c);
        c += 1;
    }
    t
};

/// Reverses the low `len` bits of `code` (DEFLATE sends codes MSB first).
const fn reverse_bits(code: u32, len: u32) -> u32 {
    if len == 0 {
        0
    } else {
        code.reverse_bits() >> (32 - len)
    }
}

/// The fixed literal/length code lengths of RFC 1951 3.2.6.
const STATIC_LLEN: [u8; L_CODES + 2] = {
    let mut t = [0u8; L_CODES + 2];
    let mut n = 0;
    while n < L_CODES + 2 {
        t[n] = if n < 144 {
            8
        } else if n < 256 {
            9
        } else if n < 280 {
            7
        } else {
            8
        };
        n += 1;
    }
    t
};

/// The fixed literal/length codes, bit-reversed, paired with their lengths.
const STATIC_LCODES: [(u16, u8); L_CODES + 2] = {
    let mut count = [0u32; MAX_BITS + 1];
    let mut n = 0;
    while n < L_CODES + 2 {
        count[STATIC_LLEN[n] as usize] += 1;
        n += 1;
    }
    let mut next = [0u32; MAX_BITS + 1];
    let mut code = 0u32;
    let mut bits = 1;
    while bits <= MAX_BITS {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
        bits += 1;
    }
    let mut t = [(0u16, 0u8); L_CODES + 2];
    let mut n = 0;
    while n < L_CODES + 2 {
        let len = STATIC_LLEN[n] as usize;
        t[n] = (reverse_bits(next[len], len as u32) as u16, len as u8);
        next[len] += 1;
        n += 1;
    }
    t
};

/// The fixed distance codes: all five bits long.
const STATIC_DCODES: [(u16, u8); D_CODES] = {
    let mut t = [(0u16, 0u8); D_CODES];
    let mut n = 0;
    while n < D_CODES {
        t[n] = (reverse_bits(n as u32, 5) as u16, 5);
        n += 1;
    }
    t
};

// --- scratch state ----------------------------------------------------------

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

/// Arrays of the block choice and the Huffman trees.
struct BlockScratch {
    trees: TreeBuilder,
    bound: BoundScratch,
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

/// Slots of the [`HeadTable`]: four times the most positions an input has.
const HEAD_SLOTS: usize = 4 * MAX_SMALL_INPUT;

/// zlib's head table (the latest position of each 15-bit hash value),
/// keyed by the hash values an input actually has: a linear-probing table
/// of at least four times as many slots as positions (so that probes are
/// short), cleared per call. It gives exactly the chains of zlib's
/// 32768-entry table, while a token-sized input touches a few kilobytes
/// instead of a few hundred random cache lines of a 128 KiB table. (Stamps
/// instead of clearing were tried: clearing the few kilobytes in order
/// brings them into the cache far faster than the probes' random reads
/// would when the cache is cold.)
struct HeadTable {
    /// `(0x8000 | hash) << 16 | position`, or 0 for an empty slot.
    slots: Box<[u32; HEAD_SLOTS]>,
}

impl HeadTable {
    fn new() -> Self {
        HeadTable {
            slots: Box::new([0; HEAD_SLOTS]),
        }
    }

    /// Empties the slots used for an input of `n` bytes and returns their
    /// index mask.
    fn start(&mut self, n: usize) -> usize {
        let size = (4 * n).next_power_of_two().clamp(64, HEAD_SLOTS);
        if let Some(used) = self.slots.get_mut(..size) {
            // In kilobytes: glibc clears larger blocks with `rep stosb`,
            // which no faster here and which callgrind counts per byte.
            for chunk in used.chunks_mut(256) {
                chunk.fill(0);
            }
        }
        size - 1
    }
}

/// The slot where the probe for hash value `h` starts (Fibonacci hashing:
/// the low bits of zlib's hash ignore the first byte).
#[inline]
fn head_slot(h: u32) -> usize {
    (h.wrapping_mul(0x9E37_79B1) >> 19) as usize
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

// --- public entry point -----------------------------------------------------

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

// --- match finding: zlib's deflate_slow at level 6 ---------------------------

/// Symbol frequencies of the block.
struct Freqs {
    lit: [u32; L_CODES],
    dist: [u32; D_CODES],
    /// Bitmap of the literal/length symbols with a nonzero frequency, so
    /// that the sparse table need not be scanned.
    used: [u64; L_CODES.div_ceil(64)],
    /// zlib's `static_len`: the bits of the symbols in the fixed code
    /// (see [`static_bits`]), set by [`tokenize`] from the fixed block it
    /// writes.
    fixed_bits: u32,
}

impl Freqs {
    fn new() -> Self {
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
    fn add_lit(&mut self, sym: usize) {
        self.lit[sym] += 1;
        self.used[sym / 64] |= 1 << (sym % 64);
    }

    /// A literal byte.
    #[inline]
    fn add_byte(&mut self, byte: u8) {
        self.add_lit(usize::from(byte));
    }

    /// A match of length `lc + 3` whose distance minus one has code
    /// `dcode`.
    #[inline]
    fn add_match(&mut self, lc: usize, dcode: usize) {
        let (code, _, _) = LEN_TABLE[lc & 0xFF];
        self.add_lit(LITERALS + 1 + usize::from(code));
        self.dist[dcode % D_CODES] += 1;
    }

    /// The used literal/length symbols, ascending.
    fn used_lits(&self) -> impl Iterator<Item = usize> + '_ {
        set_bits(&self.used)
    }
}

/// The positions of the set bits of a bitmap, ascending.
fn set_bits(words: &[u64]) -> impl Iterator<Item = usize> + '_ {
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
fn nonzero_bitmap(freqs: &[u32]) -> [u64; 1] {
    let mut w = 0u64;
    for (n, &f) in freqs.iter().enumerate().take(64) {
        w |= u64::from(f != 0) << n;
    }
    [w]
}

/// Room for a fixed-code block of at most [`MAX_SMALL_INPUT`] bytes: a
/// symbol takes at most 31 bits (a match of 3 or more bytes at most
/// 8 + 5 + 5 + 13, a literal 9), so under 11 bits a byte, plus the block
/// header, end-of-block code and a whole last 8-byte store.
const FIXED_BUF: usize = 8192;
const _: () = assert!(MAX_SMALL_INPUT * 11 / 8 + 16 <= FIXED_BUF);

/// The fixed-code block, written as symbols are decided: the bits go
/// through a 64-bit accumulator that is stored whole after every symbol,
/// keeping its pending bits.
struct FixedWriter<'a> {
    buf: &'a mut [u8; FIXED_BUF],
    /// Whole bytes written.
    pos: usize,
    acc: u64,
    /// Pending bits in `acc` (below 8 between symbols).
    n: u32,
}

impl<'a> FixedWriter<'a> {
    fn new(buf: &'a mut [u8; FIXED_BUF]) -> Self {
        FixedWriter {
            buf,
            pos: 0,
            acc: 0b011, // fixed codes, final
            n: 3,
        }
    }

    /// Appends `len` (at most 31) bits.
    #[inline(always)]
    fn put(&mut self, bits: u64, len: u32) {
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
    fn literal(&mut self, byte: u8) {
        let code = FIXED_LIT[usize::from(byte)];
        self.put(u64::from(code & 0xFFFF), code >> 16);
    }

    /// A match of length `lc + 3`; `d` is the distance minus one and
    /// `dcode` its code.
    #[inline(always)]
    fn matched(&mut self, lc: usize, d: usize, dcode: usize) {
        let code = FIXED_LEN[lc & 0xFF];
        let (lbits, llen) = (u64::from(code & 0xFFFF), code >> 16);
        let dextra = u32::from(DIST_EXTRA[dcode]);
        let dbits = u64::from(STATIC_DCODES[dcode].0) | ((d - dist_base(dcode)) as u64) << 5;
        self.put(lbits | dbits << llen, llen + 5 + dextra);
    }

    /// Ends the block: returns zlib's `static_len` (the bits after the
    /// block header) and the block's length in bytes.
    fn finish(mut self) -> (u32, usize) {
        let (eob, eob_len) = STATIC_LCODES[END_BLOCK];
        self.put(u64::from(eob), u32::from(eob_len));
        let bits = 8 * self.pos as u32 + self.n - 3;
        (bits, self.pos + usize::from(self.n != 0))
    }
}

/// Fills `scratch.syms` with zlib's literal / match decisions, `freqs`
/// with their frequencies and `scratch.fixed` with the fixed-code block;
/// returns the number of symbols and the fixed block's length in bytes.
fn tokenize(scratch: &mut Scratch, input: &[u8], freqs: &mut Freqs) -> (usize, usize) {
    let n = input.len();
    let mask = scratch.head.start(n);
    let Scratch {
        head,
        prev,
        syms,
        fixed,
        ..
    } = scratch;
    let mut fixed = FixedWriter::new(fixed);
    // Grown, never cleared: every entry read is written first (`prev` at
    // every position with three bytes of lookahead, which are the only
    // ones read; `syms` up to the symbol count, at most one per byte).
    if prev.len() < n {
        prev.resize(n, 0);
    }
    if syms.len() < n {
        syms.resize(n, 0);
    }

    // Every position with three bytes of lookahead is inserted, in order,
    // with zlib's rolling hash (three updates shift a byte out).
    if let [b0, b1, rest @ ..] = input {
        let slots = &mut head.slots;
        let prev = &mut prev[..rest.len()];
        let mut h = (u32::from(*b0) << HASH_SHIFT) ^ u32::from(*b1);
        for i in 0..rest.len() {
            h = ((h << HASH_SHIFT) ^ u32::from(rest[i])) & HASH_MASK;
            let key = (0x8000 | h) << 16;
            // At most n - 2 hash values in at least 4n slots: an empty
            // slot always ends the probe.
            let mut k = head_slot(h);
            loop {
                let slot = &mut slots[k & mask & (HEAD_SLOTS - 1)];
                let entry = *slot;
                if entry == 0 || entry & 0xFFFF_0000 == key {
                    prev[i] = entry as u16;
                    // Positions are below MAX_SMALL_INPUT < 65536.
                    *slot = key | i as u32;
                    break;
                }
                k += 1;
            }
        }
    }

    let prev = &prev[..n];
    let syms = &mut syms[..n];
    // Positions from here on have no three bytes of lookahead: no chain.
    let chained = n.saturating_sub(MIN_MATCH - 1);
    let mut count = 0usize;
    let mut strstart = 0usize;
    let mut match_length = MIN_MATCH - 1;
    let mut match_start = 0usize;
    let mut match_available = false;
    while strstart < n {
        if match_available && match_length < MIN_MATCH {
            // No match pending and none to search for: zlib emits the
            // previous byte and moves on, so runs of positions without a
            // chain are literals.
            while strstart < chained && prev[strstart] == 0 {
                let byte = input[strstart - 1];
                syms[count] = u32::from(byte);
                count += 1;
                freqs.add_byte(byte);
                fixed.literal(byte);
                strstart += 1;
            }
        }
        let lookahead = n - strstart;
        let hash_head = if lookahead >= MIN_MATCH {
            usize::from(prev[strstart])
        } else {
            0
        };
        let prev_length = match_length;
        let prev_match = match_start;
        match_length = MIN_MATCH - 1;

        if hash_head != 0 && prev_length < MAX_LAZY && strstart - hash_head <= MAX_DIST {
            // When the previous match already reaches the end of the input,
            // no match can be longer and zlib emits the previous one.
            if prev_length < lookahead {
                let (len, start) =
                    longest_match(input, prev, strstart, hash_head, prev_length, lookahead);
                if let Some(start) = start {
                    match_start = start;
                }
                match_length = len;
                if match_length == MIN_MATCH && strstart - match_start > TOO_FAR {
                    match_length = MIN_MATCH - 1;
                }
            }
        }

        if prev_length >= MIN_MATCH && match_length <= prev_length {
            let dist = strstart - 1 - prev_match;
            let lc = prev_length - MIN_MATCH;
            syms[count] = ((dist as u32) << 16) | lc as u32;
            count += 1;
            let d = (dist - 1) & 0x7FFF;
            let dcode = dist_code(d) % D_CODES;
            freqs.add_match(lc, dcode);
            fixed.matched(lc, d, dcode);
            strstart += prev_length - 1;
            match_available = false;
            match_length = MIN_MATCH - 1;
        } else if match_available {
            let byte = input[strstart - 1];
            syms[count] = u32::from(byte);
            count += 1;
            freqs.add_byte(byte);
            fixed.literal(byte);
            strstart += 1;
        } else {
            match_available = true;
            strstart += 1;
        }
    }
    if match_available {
        let byte = input[strstart - 1];
        syms[count] = u32::from(byte);
        count += 1;
        freqs.add_byte(byte);
        fixed.literal(byte);
    }
    let (fixed_bits, fixed_len) = fixed.finish();
    freqs.fixed_bits = fixed_bits;
    (count, fixed_len)
}

/// zlib's `longest_match` for the string at `strstart`, starting the chain
/// at `cur`: returns the best length (at least `prev_length`, at most the
/// lookahead) and the new match start if a longer match was found.
///
/// Requires `prev_length < lookahead`, `cur < strstart` and `cur != 0`.
#[inline]
fn longest_match(
    input: &[u8],
    prev: &[u16],
    strstart: usize,
    mut cur: usize,
    prev_length: usize,
    lookahead: usize,
) -> (usize, Option<usize>) {
    let mut chain = MAX_CHAIN;
    if prev_length >= GOOD_LENGTH {
        chain >>= 2;
    }
    let nice = NICE_LENGTH.min(lookahead);
    let max_len = MAX_MATCH.min(lookahead);
    let limit = strstart.saturating_sub(MAX_DIST);
    let scan = &input[strstart..strstart + max_len];
    let mut best_len = prev_length;
    let mut best_start = None;
    loop {
        // zlib compares bytes beyond the input too, but only once a match
        // already covers the whole lookahead, which ends the search; so
        // the length capped at the lookahead decides the same way.
        let cand = &input[cur..cur + max_len];
        if cand[best_len] == scan[best_len] {
            let len = common_prefix(cand, scan);
            if len > best_len {
                best_start = Some(cur);
                best_len = len;
                if len >= nice {
                    break;
                }
            }
        }
        cur = usize::from(prev[cur]);
        chain -= 1;
        if cur <= limit || chain == 0 {
            break;
        }
    }
    (best_len, best_start)
}

/// Length of the common prefix of two equally long slices.
#[inline]
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let mut i = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let x = u64::from_le_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]);
        let y = u64::from_le_bytes([y[0], y[1], y[2], y[3], y[4], y[5], y[6], y[7]]);
        let diff = x ^ y;
        if diff != 0 {
            return i + (diff.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + a[i..]
        .iter()
        .zip(&b[i..])
        .take_while(|(x, y)| x == y)
        .count()
}

// --- Huffman trees: zlib's construction ------------------------------------

/// Huffman tree construction state, with zlib's node numbering: leaves are
/// symbols, internal nodes are numbered from the symbol count upward.
struct TreeBuilder {
    /// Frequency of each node.
    freq: [u32; HEAP_SIZE],
    /// Parent of each node.
    dad: [u16; HEAP_SIZE],
    /// Depth in the final tree (code length for leaves).
    len: [u8; HEAP_SIZE],
    /// zlib's heap (1-based, `1..=heap_len`), then from `heap_max` on the
    /// nodes in the order they left it. An entry packs
    /// `freq << 32 | subtree depth << 16 | node`, so zlib's `smaller` (by
    /// frequency, then depth, equal counting as smaller) is a single
    /// comparison of `entry >> 16`.
    heap: [u64; HEAP_MASK + 1],
    heap_len: usize,
    heap_max: usize,
    /// The leaves of the tree being built (1-based, as the heap).
    leaf_list: [u16; L_CODES + 1],
    /// The code-length symbols of the last dynamic header built (at most
    /// one per literal/length and distance code).
    header: [LenSym; L_CODES + D_CODES],
}

/// A built Huffman tree.
struct Tree<const N: usize> {
    /// Code length per symbol (0: unused).
    lens: [u8; N],
    /// Largest symbol with a nonzero length.
    max_code: usize,
    /// Number of codes of each length.
    bl_count: [u16; MAX_BITS + 1],
}

/// Static description of a tree kind, as in zlib's `static_tree_desc`.
struct TreeKind<'a> {
    /// Lengths of the fixed code, when the tree has one.
    static_lens: Option<&'a [u8]>,
    /// Extra bits of the symbols from `extra_base` on.
    extra: &'a [u8],
    extra_base: usize,
    max_length: usize,
}

#[inline]
fn node_of(entry: u64) -> usize {
    (entry & 0xFFFF) as usize
}

#[inline]
fn depth_of(entry: u64) -> u64 {
    (entry >> 16) & 0xFFFF
}

impl TreeBuilder {
    fn new() -> Self {
        TreeBuilder {
            freq: [0; HEAP_SIZE],
            dad: [0; HEAP_SIZE],
            len: [0; HEAP_SIZE],
            heap: [0; HEAP_MASK + 1],
            heap_len: 0,
            heap_max: HEAP_SIZE,
            leaf_list: [0; L_CODES + 1],
            header: [LenSym {
                sym: 0,
                extra: 0,
                extra_bits: 0,
            }; L_CODES + D_CODES],
        }
    }

    /// Sifts `heap[k]` down: zlib's `pqdownheap`, done bottom-up.
    ///
    /// zlib walks down the path of smaller children (the right one on a
    /// tie) and stops above the first child that is not smaller than the
    /// moving entry (equal keys stop it). Children along that path never
    /// decrease, so the same place is found by first moving the whole path
    /// up one level, then climbing back from the bottom past the children
    /// the entry is not larger than: one comparison per level instead of
    /// two on the way down, where the entry usually ends.
    #[inline]
    fn sift_down(&mut self, k: usize) {
        let heap_len = self.heap_len;
        let heap = &mut self.heap;
        let v = heap[k & HEAP_MASK];
        let mut hole = k;
        let mut j = k << 1;
        while j < heap_len {
            let left = heap[j & HEAP_MASK];
            let right = heap[(j + 1) & HEAP_MASK];
            // key(right) <= key(left): low 16 bits hold the node number.
            let pick_right = right <= (left | 0xFFFF);
            let child = if pick_right { right } else { left };
            j += usize::from(pick_right);
            heap[hole & HEAP_MASK] = child;
            hole = j;
            j <<= 1;
        }
        if j == heap_len {
            heap[hole & HEAP_MASK] = heap[j & HEAP_MASK];
            hole = j;
        }
        // Climb back while the child moved up is not smaller than `v`.
        while hole > k {
            let parent = hole >> 1;
            let above = heap[parent & HEAP_MASK];
            // The entry now at `parent` is the child that was moved up.
            if v <= (above | 0xFFFF) {
                heap[hole & HEAP_MASK] = above;
                hole = parent;
            } else {
                break;
            }
        }
        heap[hole & HEAP_MASK] = v;
    }

    /// zlib's `pqdownheap` as written: for entries that stop early.
    #[inline]
    fn sift_down_top(&mut self, mut k: usize) {
        let heap_len = self.heap_len;
        let heap = &mut self.heap;
        let v = heap[k & HEAP_MASK];
        let mut j = k << 1;
        while j <= heap_len {
            let mut child = heap[j & HEAP_MASK];
            if j < heap_len {
                let right = heap[(j + 1) & HEAP_MASK];
                if right <= (child | 0xFFFF) {
                    j += 1;
                    child = right;
                }
            }
            if v <= (child | 0xFFFF) {
                break;
            }
            heap[k & HEAP_MASK] = child;
            k = j;
            j <<= 1;
        }
        heap[k & HEAP_MASK] = v;
    }

    /// Builds the tree of `freqs` (whose zero entries may be bumped to 1 by
    /// the two-codes rule, as zlib does), adding the data cost to `opt_len`
    /// and, for trees with a fixed code, the fixed cost to `static_len`.
    ///
    /// `used` is the bitmap of the symbols with a nonzero frequency.
    fn build<const N: usize>(
        &mut self,
        freqs: &mut [u32; N],
        used: &[u64],
        kind: &TreeKind<'_>,
        opt_len: &mut i64,
        static_len: &mut i64,
    ) -> Tree<N> {
        self.heap_len = 0;
        self.heap_max = HEAP_SIZE;
        let mut max_code: isize = -1;
        for n in set_bits(used) {
            let f = freqs[n];
            self.freq[n] = f;
            self.heap_len += 1;
            self.heap[self.heap_len] = (u64::from(f) << 32) | n as u64;
            max_code = n as isize;
        }
        // At least two codes, so that every code is at least one bit long.
        while self.heap_len < 2 {
            let node = if max_code < 2 {
                max_code += 1;
                max_code as usize
            } else {
                0
            };
            self.heap_len += 1;
            self.heap[self.heap_len] = (1 << 32) | node as u64;
            freqs[node] = 1;
            self.freq[node] = 1;
            *opt_len -= 1;
            if let Some(stree) = kind.static_lens {
                *static_len -= i64::from(stree[node]);
            }
        }
        let max_code = max_code as usize;
        // The leaves, before the heap reorders them.
        let leaves = self.heap_len;
        for k in 1..=leaves {
            self.leaf_list[k] = node_of(self.heap[k]) as u16;
        }

        for k in (1..=self.heap_len / 2).rev() {
            self.sift_down_top(k);
        }

        // Repeatedly combine the two least frequent nodes.
        let mut node = N;
        loop {
            let n = self.heap[1];
            self.heap[1] = self.heap[self.heap_len];
            self.heap_len -= 1;
            self.sift_down(1);
            let m = self.heap[1];
            self.heap_max -= 2;
            self.heap[self.heap_max + 1] = n;
            self.heap[self.heap_max] = m;
            let f = self.freq[node_of(n)] + self.freq[node_of(m)];
            let depth = depth_of(n).max(depth_of(m)) + 1;
            self.freq[node] = f;
            self.dad[node_of(n)] = node as u16;
            self.dad[node_of(m)] = node as u16;
            self.heap[1] = (u64::from(f) << 32) | (depth << 16) | node as u64;
            node += 1;
            self.sift_down_top(1);
            if self.heap_len < 2 {
                break;
            }
        }
        self.heap_max -= 1;
        self.heap[self.heap_max] = self.heap[1];

        let bl_count = self.gen_bitlen(max_code, kind, opt_len, static_len);
        let mut lens = [0u8; N];
        for &n in &self.leaf_list[1..=leaves] {
            let n = usize::from(n);
            lens[n] = self.len[n];
        }
        Tree {
            lens,
            max_code,
            bl_count,
        }
    }

    /// zlib's `gen_bitlen`: depths from the root, capped at the maximum
    /// length, then the overflow repair that rebuilds the length counts and
    /// reassigns lengths to leaves in increasing frequency order.
    fn gen_bitlen(
        &mut self,
        max_code: usize,
        kind: &TreeKind<'_>,
        opt_len: &mut i64,
        static_len: &mut i64,
    ) -> [u16; MAX_BITS + 1] {
        let max_length = kind.max_length;
        let mut bl_count = [0u16; MAX_BITS + 1];
        let mut overflow: i32 = 0;
        self.len[node_of(self.heap[self.heap_max])] = 0; // the root
        for h in self.heap_max + 1..HEAP_SIZE {
            let n = node_of(self.heap[h]);
            let mut bits = usize::from(self.len[usize::from(self.dad[n])]) + 1;
            if bits > max_length {
                bits = max_length;
                overflow += 1;
            }
            self.len[n] = bits as u8;
            if n > max_code {
                continue; // an internal node
            }
            bl_count[bits] += 1;
            let xbits = if n >= kind.extra_base {
                usize::from(kind.extra[n - kind.extra_base])
            } else {
                0
            };
            let f = i64::from(self.freq[n]);
            *opt_len += f * (bits + xbits) as i64;
            if let Some(stree) = kind.static_lens {
                *static_len += f * (usize::from(stree[n]) + xbits) as i64;
            }
        }
        if overflow == 0 {
            return bl_count;
        }

        // Move leaves down from the overflowing level, two at a time.
        while overflow > 0 {
            let mut bits = max_length - 1;
            while bits > 0 && bl_count[bits] == 0 {
                bits -= 1;
            }
            bl_count[bits] = bl_count[bits].wrapping_sub(1);
            bl_count[bits + 1] = bl_count[bits + 1].wrapping_add(2);
            bl_count[max_length] = bl_count[max_length].wrapping_sub(1);
            overflow -= 2;
        }
        // Reassign lengths: the least frequent leaves get the longest codes.
        let mut h = HEAP_SIZE;
        for bits in (1..=max_length).rev() {
            let mut count = bl_count[bits];
            while count != 0 && h > 0 {
                h -= 1;
                let m = node_of(self.heap[h]);
                if m > max_code {
                    continue;
                }
                if usize::from(self.len[m]) != bits {
                    *opt_len += (bits as i64 - i64::from(self.len[m])) * i64::from(self.freq[m]);
                    self.len[m] = bits as u8;
                }
                count -= 1;
            }
        }
        bl_count
    }
}

/// Canonical codes (bit-reversed for LSB-first output) from code lengths.
fn gen_codes<const N: usize>(
    lens: &[u8; N],
    max_code: usize,
    bl_count: &[u16; MAX_BITS + 1],
) -> [(u16, u8); N] {
    let mut next = [0u32; MAX_BITS + 1];
    let mut code = 0u32;
    for bits in 1..=MAX_BITS {
        code = (code + u32::from(bl_count[bits - 1])) << 1;
        next[bits] = code;
    }
    let mut codes = [(0u16, 0u8); N];
    for (n, &len) in lens.iter().enumerate().take(max_code + 1) {
        if len != 0 {
            let l = usize::from(len);
            codes[n] = (reverse_bits(next[l], u32::from(len)) as u16, len);
            next[l] += 1;
        }
    }
    codes
}

/// One step of zlib's run-length coding of code lengths: a code-length
/// symbol (0..=18) and, for repeat codes, its extra bits.
#[derive(Clone, Copy)]
struct LenSym {
    sym: u8,
    extra: u8,
    extra_bits: u8,
}

/// Length of the run of copies of `lens[start]` from `start` on, capped at
/// `max` (`start` must be in bounds).
#[inline]
fn run_length(lens: &[u8], start: usize, max: usize) -> usize {
    let end = lens.len().min(start + max);
    let run = lens.get(start..end).unwrap_or_default();
    match run.split_first() {
        Some((&cur, rest)) => 1 + rest.iter().take_while(|&&l| l == cur).count(),
        None => 0,
    }
}

/// zlib's `scan_tree` / `send_tree`: calls `emit` with each code-length
/// symbol describing `lens` (the lengths up to the largest used symbol).
///
/// zlib walks the lengths one by one and closes a group when the next
/// length differs or the group reaches `max_count`; this walks whole groups.
/// A group shorter than `min_count` is sent as plain lengths; otherwise a
/// nonzero group is sent as its length (unless the previous group had the
/// same one) and a repeat code, and a zero group as a zero-repeat code.
/// The next group's limits depend on whether it repeats zeros (138, 3),
/// continues the same length (6, 3), or starts a new one (7, 4).
fn rle_lengths(lens: &[u8], mut emit: impl FnMut(LenSym)) {
    const PLAIN: u8 = 0;
    let mut prevlen: Option<u8> = None;
    let (mut max_count, mut min_count) = if lens.first() == Some(&0) {
        (138, 3)
    } else {
        (7, 4)
    };
    let mut i = 0;
    while let Some(&cur) = lens.get(i) {
        let count = run_length(lens, i, max_count);
        i += count;
        let mut count = count;
        if count < min_count {
            for _ in 0..count {
                emit(LenSym {
                    sym: cur,
                    extra: 0,
                    extra_bits: PLAIN,
                });
            }
        } else if cur != 0 {
            if prevlen != Some(cur) {
                emit(LenSym {
                    sym: cur,
                    extra: 0,
                    extra_bits: PLAIN,
                });
                count -= 1;
            }
            emit(LenSym {
                sym: REP_3_6 as u8,
                extra: (count - 3) as u8,
                extra_bits: 2,
            });
        } else if count <= 10 {
            emit(LenSym {
                sym: REPZ_3_10 as u8,
                extra: (count - 3) as u8,
                extra_bits: 3,
            });
        } else {
            emit(LenSym {
                sym: REPZ_11_138 as u8,
                extra: (count - 11) as u8,
                extra_bits: 7,
            });
        }
        prevlen = Some(cur);
        (max_count, min_count) = match lens.get(i) {
            Some(0) => (138, 3),
            Some(&next) if next == cur => (6, 3),
            _ => (7, 4),
        };
    }
}

// --- block output -----------------------------------------------------------

/// LSB-first bit writer.
struct Bits<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl<'a> Bits<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Bits { out, acc: 0, n: 0 }
    }

    /// Appends the low `len` (at most 32) bits of `value`.
    #[inline]
    fn put(&mut self, value: u32, len: u8) {
        self.acc |= u64::from(value) << self.n;
        self.n += u32::from(len);
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    #[inline]
    fn code(&mut self, (code, len): (u16, u8)) {
        self.put(u32::from(code), len);
    }

    /// Pads to a byte boundary and writes out the pending bits.
    fn align(&mut self) {
        let bytes = self.n.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..bytes]);
        self.acc = 0;
        self.n = 0;
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

/// The three trees of a dynamic block and zlib's cost figures for it.
struct Dynamic {
    ltree: Tree<L_CODES>,
    dtree: Tree<D_CODES>,
    bltree: Tree<BL_CODES>,
    /// Index in [`BL_ORDER`] of the last code-length length sent.
    max_blindex: usize,
    /// Number of code-length symbols, in [`TreeBuilder::header`].
    header_len: usize,
    /// zlib's `opt_len`: bits of the dynamic block (trees included).
    opt_len: i64,
    /// zlib's `static_len`: bits of the fixed-code block.
    static_len: i64,
}

const LKIND: TreeKind<'static> = TreeKind {
    static_lens: Some(&STATIC_LLEN),
    extra: &LEN_EXTRA,
    extra_base: LITERALS + 1,
    max_length: MAX_BITS,
};

const STATIC_DLENS: [u8; D_CODES] = [5; D_CODES];

const DKIND: TreeKind<'static> = TreeKind {
    static_lens: Some(&STATIC_DLENS),
    extra: &DIST_EXTRA,
    extra_base: 0,
    max_length: MAX_BITS,
};

const BLKIND: TreeKind<'static> = TreeKind {
    static_lens: None,
    extra: &EXTRA_BLBITS,
    extra_base: 0,
    max_length: MAX_BL_BITS,
};

/// Builds the trees exactly as zlib's `_tr_flush_block` does.
fn build_dynamic(builder: &mut TreeBuilder, freqs: &Freqs) -> Dynamic {
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

/// zlib's `static_len`: the bits of the block's symbols in the fixed code.
/// (zlib's adjustments for the codes it forces into nearly empty trees
/// cancel out in this figure.)
fn static_bits(freqs: &Freqs) -> i64 {
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
fn block_bytes(bits: i64) -> i64 {
    (bits + 3 + 7) >> 3
}

/// Chooses and writes the single, final block, as zlib's `_tr_flush_block`:
/// stored when `len + 4` bytes is no more than the best coded size, else
/// fixed codes when they are no larger than dynamic ones, else dynamic.
fn write_block(
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

/// A final block with dynamic codes.
fn write_dynamic(bits: &mut Bits<'_>, syms: &[u32], d: &Dynamic, header: &[LenSym]) {
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

// --- the lower bound of a dynamic block -------------------------------------

/// Frequencies below this are counted in a table; larger ones are sorted.
const SMALL_FREQS: usize = 64;
/// Most tie groups of a tree: every group fills at least one of the at
/// most `2 * (L_CODES - 1)` removals.
const MAX_GROUPS: usize = 2 * L_CODES;
/// `TieGroups::g_run` of a group of internal nodes.
const NODE_GROUP: u16 = u16::MAX;

/// Arrays of [`dynamic_lower_bound`]; every entry it reads was written by
/// the same call, so they are never cleared.
struct BoundScratch {
    /// Used symbols of the tree at hand as `freq << 9 | symbol`, in symbol
    /// order (see [`scan_used`]).
    used: [u32; L_CODES],
    /// Entries of `used` that end four consecutive symbols.
    windows: [u16; L_CODES],
    /// Lengths certainly sent, per run of [`TieGroups`].
    sent: [u32; L_CODES],
    groups: TieGroups,
}

impl BoundScratch {
    fn new() -> Self {
        BoundScratch {
            used: [0; L_CODES],
            windows: [0; L_CODES],
            sent: [0; L_CODES],
            groups: TieGroups::new(),
        }
    }
}

/// The tie groups of the two-queue Huffman construction of one tree,
/// handled a whole group at a time (see [`TieGroups::build`]).
struct TieGroups {
    /// The distinct leaf frequencies, ascending, and how many leaves have
    /// each ("runs").
    run_freq: [u32; L_CODES],
    run_count: [u32; L_CODES],
    /// Depth range of the leaves of each run.
    run_lo: [u8; L_CODES],
    run_hi: [u8; L_CODES],
    /// Run of each frequency below [`SMALL_FREQS`] (valid for the
    /// frequencies of the current tree only).
    run_of_small: [u16; SMALL_FREQS],
    /// Number of runs.
    runs: usize,
    /// Leaves per frequency below [`SMALL_FREQS`], and which are nonzero.
    small: [u32; SMALL_FREQS],
    small_mask: u64,
    /// Of those, the leaves whose lengths are certainly sent, as
    /// [`scan_quick`] counts them.
    certain: [u32; SMALL_FREQS],
    /// Frequencies of at least [`SMALL_FREQS`], sorted before use.
    big: [u32; L_CODES],
    nbig: usize,
    /// Per group, in removal order: first removal, number of members, leaf
    /// run (or [`NODE_GROUP`]), and the range of depths its members get.
    g_slot: [u32; MAX_GROUPS],
    g_count: [u32; MAX_GROUPS],
    g_run: [u16; MAX_GROUPS],
    g_lo: [u16; MAX_GROUPS + 1],
    g_hi: [u16; MAX_GROUPS + 1],
    /// The groups of internal nodes, in removal order, then the root: the
    /// creation index of their first node, and their group.
    ng_start: [u32; MAX_GROUPS + 1],
    ng_group: [u16; MAX_GROUPS + 1],
    /// Queue of the internal nodes not yet removed, in creation order, as
    /// runs of equal (frequency, height).
    nq_freq: [u32; L_CODES],
    nq_height: [u16; L_CODES],
    nq_count: [u32; L_CODES],
}

impl TieGroups {
    fn new() -> Self {
        TieGroups {
            run_freq: [0; L_CODES],
            run_count: [0; L_CODES],
            run_lo: [0; L_CODES],
            run_hi: [0; L_CODES],
            run_of_small: [0; SMALL_FREQS],
            runs: 0,
            small: [0; SMALL_FREQS],
            small_mask: 0,
            certain: [0; SMALL_FREQS],
            big: [0; L_CODES],
            nbig: 0,
            g_slot: [0; MAX_GROUPS],
            g_count: [0; MAX_GROUPS],
            g_run: [0; MAX_GROUPS],
            g_lo: [0; MAX_GROUPS + 1],
            g_hi: [0; MAX_GROUPS + 1],
            ng_start: [0; MAX_GROUPS + 1],
            ng_group: [0; MAX_GROUPS + 1],
            nq_freq: [0; L_CODES],
            nq_height: [0; L_CODES],
            nq_count: [0; L_CODES],
        }
    }

    /// Starts a tree: no leaves.
    fn start(&mut self) {
        let mut mask = self.small_mask;
        while mask != 0 {
            let f = mask.trailing_zeros() as usize;
            self.small[f] = 0;
            self.certain[f] = 0;
            mask &= mask - 1;
        }
        self.small_mask = 0;
        self.nbig = 0;
    }

    /// Adds a leaf of frequency `f` (nonzero; at most [`L_CODES`] leaves).
    #[inline]
    fn add_leaf(&mut self, f: u32) {
        match self.small.get_mut(f as usize) {
            Some(count) => {
                *count += 1;
                self.small_mask |= 1 << f;
            }
            None => {
                if let Some(slot) = self.big.get_mut(self.nbig) {
                    *slot = f;
                    self.nbig += 1;
                }
            }
        }
    }

    /// For the `leaves` added since [`TieGroups::start`] (at least two),
    /// returns the cost of an optimal code (the sum of the internal nodes'
    /// frequencies) and records the range of depths that zlib's heap can
    /// give the leaves of each frequency (see [`TieGroups::range_of`]);
    /// `None` when a leaf may get more than [`MAX_BITS`] bits.
    ///
    /// zlib removes nodes by (frequency, height); the same keys leave a
    /// two-queue construction (leaves sorted, internal nodes in creation
    /// order) in the same order. The members of a key's group are
    /// interchangeable: the order among them is the heap's. A group is
    /// either leaves of one frequency (height 0) or internal nodes (every
    /// node is more frequent than its children, so a group never grows
    /// while it is being removed), and consecutive removals pair up: the
    /// first member may complete a pair begun by the previous group, the
    /// next ones pair among themselves into nodes of one key (twice the
    /// frequency, one more height), and an odd last member begins a pair
    /// with the next group. So the whole construction is a few steps per
    /// group. Depths then go from the root down: a group's members get one
    /// more than the depths that the nodes they form can get, which may be
    /// any depth of their own groups.
    fn build(&mut self, leaves: usize) -> Option<i64> {
        // Runs of equal frequencies, ascending.
        let mut runs = 0;
        let mut mask = self.small_mask;
        while mask != 0 {
            let f = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            self.run_freq[runs] = f as u32;
            self.run_count[runs] = self.small[f];
            self.run_of_small[f] = runs as u16;
            runs += 1;
        }
        if self.nbig != 0 {
            let big = &mut self.big[..self.nbig];
            big.sort_unstable();
            for &f in big.iter() {
                if runs != 0 && self.run_freq[runs - 1] == f {
                    self.run_count[runs - 1] += 1;
                } else {
                    self.run_freq[runs] = f;
                    self.run_count[runs] = 1;
                    runs += 1;
                }
            }
        }
        self.runs = runs;

        // Forward: the groups in removal order, a group at a time.
        let removals = 2 * (leaves as u32).saturating_sub(1);
        let (mut run, mut q_head, mut q_tail) = (0usize, 0usize, 0usize);
        let (mut slot, mut consumed) = (0u32, 0u32);
        let (mut groups, mut node_groups) = (0usize, 0usize);
        // The first member of a pair begun by the previous group.
        let mut pending: Option<(u32, u16)> = None;
        let mut cost: i64 = 0;
        while slot < removals {
            let leaf_next =
                run < runs && (q_head == q_tail || self.run_freq[run] <= self.nq_freq[q_head]);
            let (f, h, c) = if leaf_next {
                let group = (self.run_freq[run], 0, self.run_count[run]);
                self.g_run[groups] = run as u16;
                run += 1;
                group
            } else {
                if q_head == q_tail {
                    return None; // unreachable: some node is left
                }
                let group = (
                    self.nq_freq[q_head],
                    self.nq_height[q_head],
                    self.nq_count[q_head],
                );
                q_head += 1;
                self.g_run[groups] = NODE_GROUP;
                self.ng_start[node_groups] = consumed;
                self.ng_group[node_groups] = groups as u16;
                node_groups += 1;
                consumed += group.2;
                group
            };
            self.g_slot[groups] = slot;
            self.g_count[groups] = c;
            groups += 1;
            slot += c;

            let mut left = c;
            let mut push = |freq: u32, height: u16, count: u32| {
                if q_tail > q_head
                    && self.nq_freq[q_tail - 1] == freq
                    && self.nq_height[q_tail - 1] == height
                {
                    self.nq_count[q_tail - 1] += count;
                } else {
                    self.nq_freq[q_tail] = freq;
                    self.nq_height[q_tail] = height;
                    self.nq_count[q_tail] = count;
                    q_tail += 1;
                }
            };
            if let Some((pf, ph)) = pending.take() {
                push(pf + f, ph.max(h) + 1, 1);
                cost += i64::from(pf + f);
                left -= 1;
            }
            let pairs = left / 2;
            if pairs != 0 {
                push(2 * f, h + 1, pairs);
                cost += 2 * i64::from(f) * i64::from(pairs);
            }
            if left % 2 == 1 {
                pending = Some((f, h));
            }
        }
        // The root (the last node made) is never removed: depth 0.
        self.ng_start[node_groups] = consumed;
        self.ng_group[node_groups] = groups as u16;
        self.g_lo[groups] = 0;
        self.g_hi[groups] = 0;

        // Backward: members of a group get one more than the depths of the
        // nodes their removals form (node `slot / 2` in creation order).
        let mut p = node_groups;
        for g in (0..groups).rev() {
            let first = self.g_slot[g] / 2;
            let last = (self.g_slot[g] + self.g_count[g] - 1) / 2;
            while p > 0 && self.ng_start[p] > last {
                p -= 1;
            }
            let (mut lo, mut hi) = (u16::MAX, 0u16);
            let mut q = p;
            loop {
                let parent = usize::from(self.ng_group[q]);
                lo = lo.min(self.g_lo[parent]);
                hi = hi.max(self.g_hi[parent]);
                if q == 0 || self.ng_start[q] <= first {
                    break;
                }
                q -= 1;
            }
            self.g_lo[g] = lo.saturating_add(1);
            self.g_hi[g] = hi.saturating_add(1);
            let leaf_run = self.g_run[g];
            if leaf_run != NODE_GROUP {
                if hi >= MAX_BITS as u16 {
                    return None; // zlib may have to shorten codes
                }
                let r = usize::from(leaf_run);
                self.run_lo[r] = (lo + 1) as u8;
                self.run_hi[r] = (hi + 1) as u8;
            }
        }
        Some(cost)
    }

    /// The run of the leaves of frequency `f` (one of the frequencies of
    /// the last [`TieGroups::build`]).
    #[inline]
    fn run_of(&self, f: u32) -> usize {
        match self.run_of_small.get(f as usize) {
            Some(&r) => usize::from(r),
            None => {
                let run = self.run_freq[..self.runs].iter().position(|&x| x == f);
                run.unwrap_or(0) // every frequency of the tree has a run
            }
        }
    }

    /// Depth range of the leaves of frequency `f` (as for `run_of`).
    #[inline]
    fn range_of(&self, f: u32) -> (u8, u8) {
        let r = self.run_of(f);
        (self.run_lo[r], self.run_hi[r])
    }
}

/// Code-length symbols certainly sent, as [`dynamic_lower_bound`] counts
/// them.
struct Tally {
    /// Symbols whose value is known.
    exact: [u32; BL_CODES],
    present: [bool; BL_CODES],
    /// Extra bits of the repeat codes known to be sent.
    extra_bits: i64,
    /// Lengths known only to lie in a range: (lo, hi, count).
    uncertain: [(u8, u8, u32); MAX_RANGES],
    ranges: usize,
    /// False when some range had to be dropped (still a lower bound).
    fits: bool,
}

impl Tally {
    fn new() -> Self {
        Tally {
            exact: [0; BL_CODES],
            present: [false; BL_CODES],
            extra_bits: 0,
            uncertain: [(0, 0, 0); MAX_RANGES],
            ranges: 0,
            fits: true,
        }
    }

    #[inline]
    fn add(&mut self, sym: usize, extra: u8, n: u32) {
        self.exact[sym] += n;
        self.present[sym] = true;
        self.extra_bits += i64::from(extra) * i64::from(n);
    }

    /// `n` lengths in `lo..=hi`.
    fn add_range(&mut self, lo: u8, hi: u8, n: u32) {
        if lo == hi {
            self.add(usize::from(lo), 0, n);
        } else if let Some(r) = self.uncertain[..self.ranges]
            .iter_mut()
            .find(|r| (r.0, r.1) == (lo, hi))
        {
            r.2 += n;
        } else if let Some(slot) = self.uncertain.get_mut(self.ranges) {
            *slot = (lo, hi, n);
            self.ranges += 1;
        } else {
            self.fits = false;
        }
    }

    /// The zero lengths of `run` consecutive unused symbols, as zlib sends
    /// them (whatever the other lengths).
    #[inline]
    fn add_zeros(&mut self, mut run: usize) {
        while run > 0 {
            let c = run.min(138);
            match c {
                1 | 2 => self.add(0, 0, c as u32),
                3..=10 => self.add(REPZ_3_10, 3, 1),
                _ => self.add(REPZ_11_138, 7, 1),
            }
            run -= c;
        }
    }
}

/// One pass over a tree's used symbols (the set bits of `bitmap`, whose
/// frequencies in `freqs` are nonzero): lists them in `bs.used` (`freq <<
/// 9 | symbol`, in symbol order), counts their frequencies into
/// `bs.groups`, tallies the zero lengths between them (zlib sends those
/// alike whatever the other lengths), and lists in `bs.windows` the
/// entries that end four consecutive symbols. Returns the numbers of
/// entries and of windows.
fn scan_used(
    bitmap: &[u64],
    freqs: &[u32],
    bs: &mut BoundScratch,
    tally: &mut Tally,
) -> (usize, usize) {
    bs.groups.start();
    let BoundScratch {
        used,
        windows,
        groups,
        ..
    } = bs;
    let (mut n, mut w) = (0, 0);
    let (mut expected, mut streak) = (0, 0);
    for (base, &word) in (0..).step_by(64).zip(bitmap) {
        let mut bits = word;
        while bits != 0 {
            let sym = base + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let (Some(&f), Some(slot)) = (freqs.get(sym), used.get_mut(n)) else {
                return (n, w); // unreachable: the bitmap matches `freqs`
            };
            *slot = (f << 9) | sym as u32;
            groups.add_leaf(f);
            if sym == expected {
                streak += 1;
                if streak >= 4 {
                    windows[w] = n as u16;
                    w += 1;
                }
            } else {
                tally.add_zeros(sym - expected);
                streak = 1;
            }
            expected = sym + 1;
            n += 1;
        }
    }
    (n, w)
}

/// Words of the largest bitmap [`scan_quick`] takes (the literal/length
/// tree's).
const BITMAP_WORDS: usize = L_CODES.div_ceil(64);

/// The quick form of [`scan_used`]: counts the used symbols' frequencies
/// into `groups` and tallies the zero lengths between them as it does,
/// but instead of listing the windows of four consecutive symbols, takes
/// every symbol that such a window covers, but the first of its run of
/// consecutive symbols, as possibly folded into a repeat code (whatever
/// the lengths): the others are counted per frequency in
/// `groups.certain` (for frequencies below [`SMALL_FREQS`]; the larger
/// ones are left out). Returns the number of used symbols.
fn scan_quick(bitmap: &[u64], freqs: &[u32], groups: &mut TieGroups, tally: &mut Tally) -> usize {
    groups.start();
    let mut b = [0u64; BITMAP_WORDS + 2]; // b[j + 1] = bitmap[j]
    for (slot, &w) in b[1..].iter_mut().zip(bitmap) {
        *slot = w;
    }
    // Bit i of `c4` (shifted as `b`): symbols i..i + 4 are all used.
    let mut c4 = [0u64; BITMAP_WORDS + 2];
    for j in 1..=BITMAP_WORDS {
        let (w, next) = (b[j], b[j + 1]);
        c4[j] = w & (w >> 1 | next << 63) & (w >> 2 | next << 62) & (w >> 3 | next << 61);
    }
    let (mut n, mut expected) = (0, 0);
    for j in 1..=BITMAP_WORDS {
        let (w, c, pc) = (b[j], c4[j], c4[j - 1]);
        let covered = c | (c << 1 | pc >> 63) | (c << 2 | pc >> 62) | (c << 3 | pc >> 61);
        let not_first = w << 1 | b[j - 1] >> 63;
        let certain = w & !(covered & not_first);
        let base = 64 * (j - 1);
        let mut bits = w;
        while bits != 0 {
            let bit = bits.trailing_zeros();
            bits &= bits - 1;
            let sym = base + bit as usize;
            let Some(&f) = freqs.get(sym) else {
                return n; // unreachable: the bitmap matches `freqs`
            };
            groups.add_leaf(f);
            if let Some(count) = groups.certain.get_mut(f as usize) {
                *count += (certain >> bit) as u32 & 1;
            }
            if sym != expected {
                tally.add_zeros(sym - expected);
            }
            expected = sym + 1;
            n += 1;
        }
    }
    n
}

/// The quick form of [`tally_lengths`], after [`scan_quick`]: the lengths
/// counted as certain, per frequency run.
fn tally_quick(groups: &TieGroups, tally: &mut Tally) {
    for r in 0..groups.runs {
        let count = groups.certain.get(groups.run_freq[r] as usize).copied();
        if let Some(count @ 1..) = count {
            tally.add_range(groups.run_lo[r], groups.run_hi[r], count);
        }
    }
}

/// Tallies the lengths of the tree just scanned and built that are
/// certainly sent: a length is folded into a repeat code only inside a
/// run of at least four equal lengths of consecutive symbols, and never
/// the run's first, so every length is counted (per frequency run) but
/// those of windows of four consecutive symbols whose ranges meet.
fn tally_lengths(bs: &mut BoundScratch, n: usize, windows: usize, tally: &mut Tally) {
    let BoundScratch {
        used,
        windows: ends,
        sent,
        groups,
    } = bs;
    let used = &used[..n];
    let runs = groups.runs;
    sent[..runs].copy_from_slice(&groups.run_count[..runs]);
    let mut folded_to = 0; // entries below this are already taken off
    for &k in &ends[..windows] {
        let k = usize::from(k); // at least 3
        let (mut lo, mut hi) = (0u8, u8::MAX);
        for &u in used.get(k - 3..=k).unwrap_or_default() {
            let (l, h) = groups.range_of(u >> 9);
            lo = lo.max(l);
            hi = hi.min(h);
        }
        if lo <= hi {
            for &u in used.get((k - 2).max(folded_to)..=k).unwrap_or_default() {
                if let Some(count) = sent.get_mut(groups.run_of(u >> 9)) {
                    *count = count.saturating_sub(1);
                }
            }
            folded_to = k + 1;
        }
    }
    for ((&count, &lo), &hi) in sent[..runs].iter().zip(&groups.run_lo).zip(&groups.run_hi) {
        if count != 0 {
            tally.add_range(lo, hi, count);
        }
    }
}

/// A lower bound of zlib's `opt_len` (the dynamic block's bits), computed
/// without zlib's heap, or `None` when it cannot tell cheaply. It tries to
/// reach `target` (the bits from which zlib prefers the fixed block) and
/// stops refining once it knows it cannot.
///
/// * **Data.** zlib's trees are Huffman trees whose nodes leave the heap
///   by (frequency, depth); only the order among nodes with equal keys
///   depends on the heap. The same keys leave a two-queue construction
///   (sorted leaves, internal nodes in creation order) in the same order
///   and merge into nodes with the same keys, so its cost (the sum of the
///   internal nodes' frequencies) is zlib's exact data cost, unless a code
///   is longer than 15 bits (then no bound is given).
/// * **Which lengths are certain.** Nodes of one key fill that key's
///   removals in an order that depends on the ties. Walking the removals
///   from the root down, a removal's depth is one more than the depth of
///   the node it forms, which may fill any removal of its key: this gives,
///   per key, the range of depths its nodes can get. A symbol's code length
///   lies in its key's range (leaves of one frequency share a key); a
///   one-length range is certain. [`TieGroups::build`] does this a whole
///   group of equal keys at a time.
/// * **Header.** zlib's code-length code costs at least an optimal
///   (unlimited) prefix code for the code-length symbols certainly sent:
///   zero runs are known exactly; a length is folded into a repeat code
///   only inside a run of four or more equal lengths of consecutive
///   symbols (and never the run's first), so lengths that cannot be in
///   such a run are certainly sent. Dropping occurrences never makes an
///   optimal code costlier, and neither does merging symbols, so lengths
///   known only to lie in a range are counted first with all the lengths
///   of overlapping ranges merged into one symbol. If that falls short,
///   all the symbols of each range are given one length of the range, for
///   every combination: an optimal code's cost is concave in the counts
///   (the optimal code for a mix of two count vectors serves each of them
///   at least as well as their own), so its least value over all ways of
///   giving lengths within the ranges is at such a combination.
/// * The distance tree is handled the same way, except that a tree of
///   fewer than two distances is known exactly (zlib's forced codes).
///
/// With `quick_first`, a quicker and weaker pass is tried first (see
/// [`lower_bound_pass`]), and the full one only when that falls short.
fn dynamic_lower_bound(
    bs: &mut BoundScratch,
    freqs: &Freqs,
    target: i64,
    quick_first: bool,
) -> Option<i64> {
    let mut quick = None;
    if quick_first {
        let bound = lower_bound_pass(bs, freqs, target, true)?;
        if bound >= target {
            return Some(bound);
        }
        quick = Some(bound);
    }
    let full = lower_bound_pass(bs, freqs, target, false)?;
    Some(quick.map_or(full, |q| full.max(q)))
}

/// One pass of [`dynamic_lower_bound`]: `quick` takes every length that a
/// window of four consecutive symbols covers as possibly folded (see
/// [`scan_quick`]) and stops at the first bound; otherwise the windows
/// whose depth ranges cannot meet are told apart and the bound refined.
fn lower_bound_pass(bs: &mut BoundScratch, freqs: &Freqs, target: i64, quick: bool) -> Option<i64> {
    // Literal/length tree.
    let mut tally = Tally::new();
    let (nl, windows) = if quick {
        (
            scan_quick(&freqs.used, &freqs.lit, &mut bs.groups, &mut tally),
            0,
        )
    } else {
        scan_used(&freqs.used, &freqs.lit, bs, &mut tally)
    };
    if nl < 2 {
        return None; // zlib forces a second code: not worth modelling
    }
    let mut data_bits = bs.groups.build(nl)?;
    for (&f, &extra) in freqs.lit[LITERALS + 1..].iter().zip(&LEN_EXTRA) {
        data_bits += i64::from(f) * i64::from(extra);
    }
    if quick {
        tally_quick(&bs.groups, &mut tally);
    } else {
        tally_lengths(bs, nl, windows, &mut tally);
    }

    // Distance tree.
    for (&f, &extra) in freqs.dist.iter().zip(&DIST_EXTRA) {
        data_bits += i64::from(f) * i64::from(extra);
    }
    let nd = freqs.dist.iter().filter(|&&f| f != 0).count();
    if nd >= 2 {
        let dused = nonzero_bitmap(&freqs.dist);
        if quick {
            let nd = scan_quick(&dused, &freqs.dist, &mut bs.groups, &mut tally);
            data_bits += bs.groups.build(nd)?;
            tally_quick(&bs.groups, &mut tally);
        } else {
            let (nd, windows) = scan_used(&dused, &freqs.dist, bs, &mut tally);
            data_bits += bs.groups.build(nd)?;
            tally_lengths(bs, nd, windows, &mut tally);
        }
    } else {
        // zlib gives a lone code (or none) partners: all one bit long, and
        // the data costs a bit per distance.
        let mut lens = [0u8; D_CODES];
        let max_code = match freqs.dist.iter().position(|&f| f != 0) {
            None => {
                lens[..2].fill(1);
                1
            }
            Some(s) => {
                data_bits += i64::from(freqs.dist[s]);
                let partner = if s < 2 { s + 1 } else { 0 };
                lens[s] = 1;
                lens[partner] = 1;
                s.max(partner)
            }
        };
        rle_lengths(&lens[..=max_code], |s| {
            tally.add(usize::from(s.sym), s.extra_bits, 1);
        });
    }
    let Tally {
        exact,
        present,
        extra_bits,
        uncertain,
        ranges,
        fits,
    } = tally;
    let uncertain = &uncertain[..ranges];

    let max_blindex = (3..BL_CODES)
        .rev()
        .find(|&k| present[usize::from(BL_ORDER[k])])
        .unwrap_or(3);
    let fixed_bits = data_bits + extra_bits + 3 * (max_blindex as i64 + 1) + 5 + 5 + 4;

    // First bound: the lengths of overlapping ranges count as one symbol.
    let mut joined_up = [false; MAX_BITS + 1]; // v merged with v + 1
    for &(lo, hi, _) in uncertain {
        for v in lo..hi {
            joined_up[usize::from(v)] = true;
        }
    }
    let mut merged = exact;
    for v in 1..=MAX_BITS {
        if joined_up[v - 1] {
            merged[v] += merged[v - 1];
            merged[v - 1] = 0;
        }
        for &(_, hi, n) in uncertain {
            if usize::from(hi) == v {
                merged[v] += n;
            }
        }
    }
    let merged_bound = fixed_bits + huffman_cost(&merged);
    if quick || merged_bound >= target || uncertain.is_empty() || !fits {
        return Some(merged_bound);
    }

    // Second bound: every choice of one length per range; keep the least.
    let mut choices = 1usize;
    for &(lo, hi, _) in uncertain {
        choices = choices.saturating_mul(usize::from(hi - lo) + 1);
    }
    if choices > MAX_CHOICES {
        return Some(merged_bound);
    }
    let mut least = i64::MAX;
    // All-low and all-high first: the likeliest to fall short.
    let order = [0, choices - 1].into_iter().chain(1..choices - 1);
    for mut choice in order.take(choices) {
        let mut counts = exact;
        for &(lo, hi, n) in uncertain {
            let width = usize::from(hi - lo) + 1;
            counts[usize::from(lo) + choice % width] += n;
            choice /= width;
        }
        let bound = fixed_bits + huffman_cost(&counts);
        if bound < target {
            // Cannot reach the target: the cheaper first bound will do.
            return Some(merged_bound);
        }
        least = least.min(bound);
    }
    Some(least)
}

/// Most distinct depth ranges tracked by [`dynamic_lower_bound`].
const MAX_RANGES: usize = 16;
/// Most combinations of range ends tried by [`dynamic_lower_bound`].
const MAX_CHOICES: usize = 32;

/// The bits of an optimal prefix code for symbols with these counts (the
/// sum of the internal node weights of a Huffman tree; 0 for one symbol).
fn huffman_cost(counts: &[u32; BL_CODES]) -> i64 {
    let mut w = [0u32; BL_CODES];
    let mut n = 0;
    for &c in counts {
        if c != 0 {
            w[n] = c;
            n += 1;
        }
    }
    let w = &mut w[..n];
    w.sort_unstable();
    // Two queues: sorted leaves, and internal nodes in creation order.
    let mut nodes = [0u32; BL_CODES];
    let (mut q1, mut q2, mut made) = (0, 0, 0);
    let mut cost = 0i64;
    let pick = |q1: &mut usize, q2: &mut usize, made: usize, nodes: &[u32]| {
        let leaf = w.get(*q1).copied();
        let node = nodes.get(*q2).copied().filter(|_| *q2 < made);
        match (leaf, node) {
            (Some(l), Some(m)) if l <= m => {
                *q1 += 1;
                l
            }
            (Some(l), None) => {
                *q1 += 1;
                l
            }
            (_, Some(m)) => {
                *q2 += 1;
                m
            }
            (None, None) => 0,
        }
    };
    for _ in 1..n {
        let a = pick(&mut q1, &mut q2, made, &nodes);
        let b = pick(&mut q1, &mut q2, made, &nodes);
        nodes[made] = a + b;
        made += 1;
        cost += i64::from(a + b);
    }
    cost
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*, for reproducible random cases.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn length_and_distance_tables_follow_rfc1951() {
        // RFC 1951 3.2.5: (first symbol, extra bits, first length) rows.
        let rows = [
            (257, 0, 3),
            (265, 1, 11),
            (269, 2, 19),
            (273, 3, 35),
            (277, 4, 67),
        ];
        for (sym, extra, len) in rows {
            let (code, bits, value) = LEN_TABLE[len - 3];
            assert_eq!((usize::from(code) + 257, bits, value), (sym, extra, 0));
        }
        assert_eq!(LEN_TABLE[255], (28, 0, 0)); // 258 is symbol 285
        assert_eq!(LEN_TABLE[254], (27, 5, 30)); // 257 = 227 + 30
        for (lc, &(code, bits, value)) in LEN_TABLE.iter().enumerate() {
            assert!(u32::from(value) < 1 << bits);
            assert_eq!(length_base(usize::from(code)) + usize::from(value), lc);
        }
        for d in 0..32768 {
            let code = dist_code(d);
            assert!(code < D_CODES);
            assert!(d >= dist_base(code) && d - dist_base(code) < 1 << DIST_EXTRA[code]);
        }
        assert_eq!(
            (dist_code(32767), dist_base(29), DIST_EXTRA[29]),
            (29, 24576, 13)
        );
    }

    #[test]
    fn fixed_codes_are_canonical() {
        // RFC 1951 3.2.6: 0..143 are 00110000.. (8 bits), 256 is 0000000.
        assert_eq!(STATIC_LCODES[0], (reverse_bits(0b0011_0000, 8) as u16, 8));
        assert_eq!(
            STATIC_LCODES[144],
            (reverse_bits(0b1_1001_0000, 9) as u16, 9)
        );
        assert_eq!(STATIC_LCODES[256], (0, 7));
        assert_eq!(STATIC_LCODES[280], (reverse_bits(0b1100_0000, 8) as u16, 8));
        assert_eq!(STATIC_DCODES[1], (reverse_bits(1, 5) as u16, 5));
    }

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

    /// zlib's `scan_tree`, one length at a time, as the reference.
    fn rle_reference(lens: &[u8]) -> Vec<(u8, u8)> {
        let mut out = Vec::new();
        let len_at = |n: usize| lens.get(n).map_or(-1, |&l| i32::from(l));
        let (mut prevlen, mut nextlen, mut count) = (-1, len_at(0), 0);
        let (mut max_count, mut min_count) = if nextlen == 0 { (138, 3) } else { (7, 4) };
        for n in 0..lens.len() {
            let curlen = nextlen;
            nextlen = len_at(n + 1);
            count += 1;
            if count < max_count && curlen == nextlen {
                continue;
            } else if count < min_count {
                for _ in 0..count {
                    out.push((curlen as u8, 0));
                }
            } else if curlen != 0 {
                if curlen != prevlen {
                    out.push((curlen as u8, 0));
                    count -= 1;
                }
                out.push((16, count as u8 - 3));
            } else if count <= 10 {
                out.push((17, count as u8 - 3));
            } else {
                out.push((18, count as u8 - 11));
            }
            count = 0;
            prevlen = curlen;
            (max_count, min_count) = if nextlen == 0 {
                (138, 3)
            } else if curlen == nextlen {
                (6, 3)
            } else {
                (7, 4)
            };
        }
        out
    }

    #[test]
    fn run_length_coding_matches_the_reference() {
        let mut rng = Rng(7);
        for case in 0..3000 {
            let n = 1 + rng.below(300) as usize;
            let mut lens = Vec::with_capacity(n);
            while lens.len() < n {
                let v = if rng.below(3) == 0 {
                    0
                } else {
                    1 + rng.below(case % 15 + 1) as u8
                };
                let cap = if rng.below(4) == 0 { 200 } else { 9 };
                let run = 1 + rng.below(cap) as usize;
                lens.extend(std::iter::repeat_n(v, run));
            }
            lens.truncate(n);
            let mut got = Vec::new();
            rle_lengths(&lens, |s| got.push((s.sym, s.extra)));
            assert_eq!(got, rle_reference(&lens), "{lens:?}");
            for start in 0..n {
                let max = 1 + rng.below(140) as usize;
                let expected = lens[start..]
                    .iter()
                    .take(max)
                    .take_while(|&&l| l == lens[start]);
                assert_eq!(run_length(&lens, start, max), expected.count());
            }
        }
    }

    #[test]
    fn bottom_up_sift_equals_zlib_sift() {
        let mut rng = Rng(11);
        for _ in 0..2000 {
            let mut a = TreeBuilder::new();
            let n = 1 + rng.below(60) as usize;
            a.heap_len = n;
            for k in 1..=n {
                // Few distinct keys, so that ties abound.
                let key = (rng.below(4) << 32) | (rng.below(2) << 16);
                a.heap[k] = key | k as u64;
            }
            for k in (1..=n / 2).rev() {
                a.sift_down_top(k);
            }
            let mut b = TreeBuilder::new();
            b.heap = a.heap;
            b.heap_len = n;
            while a.heap_len > 1 {
                let last = a.heap[a.heap_len];
                for t in [&mut a, &mut b] {
                    t.heap[1] = last;
                    t.heap_len -= 1;
                }
                a.sift_down_top(1);
                b.sift_down(1);
                assert_eq!(a.heap[..=a.heap_len], b.heap[..=b.heap_len]);
            }
        }
    }

    fn kraft_sum(lens: &[u8]) -> f64 {
        lens.iter()
            .filter(|&&l| l != 0)
            .map(|&l| 0.5f64.powi(i32::from(l)))
            .sum()
    }

    #[test]
    fn trees_are_complete_and_length_limited() {
        // Fibonacci frequencies force depths beyond the limits.
        let mut fib = [1u32; L_CODES];
        for i in 2..30 {
            fib[i] = fib[i - 1] + fib[i - 2];
        }
        let mut builder = TreeBuilder::new();
        let mut lit = [0u32; L_CODES];
        lit[..30].copy_from_slice(&fib[..30]);
        let used = [(1u64 << 30) - 1, 0, 0, 0, 0];
        let (mut opt, mut stat) = (0, 0);
        let tree = builder.build(&mut lit, &used, &LKIND, &mut opt, &mut stat);
        assert_eq!(tree.lens.iter().max(), Some(&15));
        assert!((kraft_sum(&tree.lens) - 1.0).abs() < 1e-12);
        let cost: i64 = (0..30)
            .map(|i| i64::from(lit[i]) * i64::from(tree.lens[i]))
            .sum();
        assert_eq!(opt, cost);

        let mut bl = [0u32; BL_CODES];
        bl.copy_from_slice(&fib[..BL_CODES]);
        let used = nonzero_bitmap(&bl);
        let (mut opt, mut stat) = (0, 0);
        let tree = builder.build(&mut bl, &used, &BLKIND, &mut opt, &mut stat);
        assert_eq!(tree.lens.iter().max(), Some(&7));
        assert!((kraft_sum(&tree.lens) - 1.0).abs() < 1e-12);

        // One symbol: zlib adds a second one, both one bit long.
        let mut dist = [0u32; D_CODES];
        dist[5] = 3;
        let used = nonzero_bitmap(&dist);
        let (mut opt, mut stat) = (0, 0);
        let tree = builder.build(&mut dist, &used, &DKIND, &mut opt, &mut stat);
        assert_eq!((tree.lens[0], tree.lens[5], tree.max_code), (1, 1, 5));
        assert_eq!(dist[0], 1);
    }

    #[test]
    fn huffman_cost_is_optimal_on_small_cases() {
        let mut counts = [0u32; BL_CODES];
        assert_eq!(huffman_cost(&counts), 0);
        counts[3] = 5;
        assert_eq!(huffman_cost(&counts), 0);
        counts[7] = 1;
        counts[9] = 1;
        counts[1] = 2;
        // Optimal lengths 1, 3, 3, 2: 5 + 3 + 3 + 4.
        assert_eq!(huffman_cost(&counts), 15);
    }

    #[test]
    fn lower_bound_never_exceeds_the_dynamic_block() {
        let mut rng = Rng(5);
        let mut block = BlockScratch {
            trees: TreeBuilder::new(),
            bound: BoundScratch::new(),
        };
        let mut decided = 0;
        for case in 0..4000u64 {
            let mut freqs = Freqs::new();
            let symbols = 2 + rng.below(1 + case % 290);
            let skew = rng.below(4);
            for _ in 0..symbols {
                let mut sym = rng.below(L_CODES as u64) as usize;
                for _ in 0..skew {
                    sym = sym.min(rng.below(L_CODES as u64) as usize);
                }
                if sym == END_BLOCK {
                    continue;
                }
                let cap = if rng.below(5) == 0 { 40 } else { 3 };
                let times = 1 + rng.below(cap);
                for _ in 0..times {
                    freqs.add_lit(sym);
                    if sym > LITERALS {
                        freqs.dist[rng.below(1 + case % D_CODES as u64) as usize] += 1;
                    }
                }
            }
            let exact = build_dynamic(&mut block.trees, &freqs);
            assert_eq!(exact.static_len, static_bits(&freqs));
            let fixed_target = 8 * block_bytes(exact.static_len) - 10;
            for target in [
                i64::MIN,
                fixed_target,
                exact.opt_len,
                exact.opt_len + 1,
                i64::MAX,
            ] {
                let quick_first = case.wrapping_add(target as u64) % 2 == 0;
                let bound = dynamic_lower_bound(&mut block.bound, &freqs, target, quick_first);
                let Some(lower) = bound else {
                    continue;
                };
                assert!(
                    lower <= exact.opt_len,
                    "case {case}: {lower} > {}",
                    exact.opt_len
                );
                if target == fixed_target && lower >= target {
                    decided += 1;
                }
            }
        }
        assert!(decided > 100, "the bound decided only {decided} cases");
    }
}
