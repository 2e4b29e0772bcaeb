//! Match finding: zlib's hash chains and `deflate_slow` at level 6.

use crate::fixed::FixedWriter;
use crate::freqs::Freqs;
use crate::tables::{
    D_CODES, GOOD_LENGTH, HASH_MASK, HASH_SHIFT, MAX_CHAIN, MAX_DIST, MAX_LAZY, MAX_MATCH,
    MIN_MATCH, NICE_LENGTH, TOO_FAR, dist_code,
};
use crate::{MAX_SMALL_INPUT, Scratch};

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
pub(crate) struct HeadTable {
    /// `(0x8000 | hash) << 16 | position`, or 0 for an empty slot.
    pub(crate) slots: Box<[u32; HEAD_SLOTS]>,
}

impl HeadTable {
    pub(crate) fn new() -> Self {
        HeadTable {
            slots: Box::new([0; HEAD_SLOTS]),
        }
    }

    /// Empties the slots used for an input of `n` bytes and returns their
    /// index mask.
    pub(crate) fn start(&mut self, n: usize) -> usize {
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

/// Fills `scratch.syms` with zlib's literal / match decisions, `freqs`
/// with their frequencies and `scratch.fixed` with the fixed-code block;
/// returns the number of symbols and the fixed block's length in bytes.
pub(crate) fn tokenize(scratch: &mut Scratch, input: &[u8], freqs: &mut Freqs) -> (usize, usize) {
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
