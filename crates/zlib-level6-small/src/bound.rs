//! A lower bound of the dynamic block's size, computed without zlib's
//! heap: when it already loses to the fixed block, zlib would not use
//! dynamic codes and the trees need not be built.

mod ties;

use crate::freqs::{Freqs, nonzero_bitmap};
use crate::header::rle_lengths;
use crate::tables::{
    BL_CODES, BL_ORDER, D_CODES, DIST_EXTRA, L_CODES, LEN_EXTRA, LITERALS, MAX_BITS, REPZ_3_10,
    REPZ_11_138,
};
use ties::TieGroups;

/// Arrays of [`dynamic_lower_bound`]; every entry it reads was written by
/// the same call, so they are never cleared.
pub(crate) struct BoundScratch {
    /// Used symbols of the tree at hand as `freq << 9 | symbol`, in symbol
    /// order (see [`scan_used`]).
    pub(crate) used: [u32; L_CODES],
    /// Entries of `used` that end four consecutive symbols.
    pub(crate) windows: [u16; L_CODES],
    /// Lengths certainly sent, per run of [`TieGroups`].
    pub(crate) sent: [u32; L_CODES],
    pub(crate) groups: TieGroups,
}

impl BoundScratch {
    pub(crate) fn new() -> Self {
        BoundScratch {
            used: [0; L_CODES],
            windows: [0; L_CODES],
            sent: [0; L_CODES],
            groups: TieGroups::new(),
        }
    }
}

/// Code-length symbols certainly sent, as [`dynamic_lower_bound`] counts
/// them.
struct Tally {
    /// Symbols whose value is known.
    pub(crate) exact: [u32; BL_CODES],
    present: [bool; BL_CODES],
    /// Extra bits of the repeat codes known to be sent.
    pub(crate) extra_bits: i64,
    /// Lengths known only to lie in a range: (lo, hi, count).
    uncertain: [(u8, u8, u32); MAX_RANGES],
    pub(crate) ranges: usize,
    /// False when some range had to be dropped (still a lower bound).
    fits: bool,
}

impl Tally {
    pub(crate) fn new() -> Self {
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
/// `groups.certain` (for frequencies below [`SMALL_FREQS`](ties::SMALL_FREQS); the larger
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
pub(crate) fn dynamic_lower_bound(
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
    use crate::block::{BlockScratch, block_bytes, static_bits};
    use crate::dynamic::build_dynamic;
    use crate::huffman::TreeBuilder;
    use crate::tables::END_BLOCK;
    use crate::test_rng::Rng;

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
