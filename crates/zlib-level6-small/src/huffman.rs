//! Huffman trees built exactly as zlib builds them (its heap, tie
//! behaviour, forced codes, length limits and overflow repair), and
//! canonical codes.

use crate::freqs::set_bits;
use crate::header::LenSym;
use crate::tables::{
    D_CODES, DIST_EXTRA, EXTRA_BLBITS, HEAP_MASK, HEAP_SIZE, L_CODES, LEN_EXTRA, LITERALS,
    MAX_BITS, MAX_BL_BITS, STATIC_LLEN, reverse_bits,
};

/// Huffman tree construction state, with zlib's node numbering: leaves are
/// symbols, internal nodes are numbered from the symbol count upward.
pub(crate) struct TreeBuilder {
    /// Frequency of each node.
    pub(crate) freq: [u32; HEAP_SIZE],
    /// Parent of each node.
    dad: [u16; HEAP_SIZE],
    /// Depth in the final tree (code length for leaves).
    pub(crate) len: [u8; HEAP_SIZE],
    /// zlib's heap (1-based, `1..=heap_len`), then from `heap_max` on the
    /// nodes in the order they left it. An entry packs
    /// `freq << 32 | subtree depth << 16 | node`, so zlib's `smaller` (by
    /// frequency, then depth, equal counting as smaller) is a single
    /// comparison of `entry >> 16`.
    pub(crate) heap: [u64; HEAP_MASK + 1],
    heap_len: usize,
    heap_max: usize,
    /// The leaves of the tree being built (1-based, as the heap).
    leaf_list: [u16; L_CODES + 1],
    /// The code-length symbols of the last dynamic header built (at most
    /// one per literal/length and distance code).
    pub(crate) header: [LenSym; L_CODES + D_CODES],
}

/// A built Huffman tree.
pub(crate) struct Tree<const N: usize> {
    /// Code length per symbol (0: unused).
    pub(crate) lens: [u8; N],
    /// Largest symbol with a nonzero length.
    pub(crate) max_code: usize,
    /// Number of codes of each length.
    pub(crate) bl_count: [u16; MAX_BITS + 1],
}

/// Static description of a tree kind, as in zlib's `static_tree_desc`.
pub(crate) struct TreeKind<'a> {
    /// Lengths of the fixed code, when the tree has one.
    static_lens: Option<&'a [u8]>,
    /// Extra bits of the symbols from `extra_base` on.
    pub(crate) extra: &'a [u8],
    extra_base: usize,
    max_length: usize,
}

pub(crate) const LKIND: TreeKind<'static> = TreeKind {
    static_lens: Some(&STATIC_LLEN),
    extra: &LEN_EXTRA,
    extra_base: LITERALS + 1,
    max_length: MAX_BITS,
};

const STATIC_DLENS: [u8; D_CODES] = [5; D_CODES];

pub(crate) const DKIND: TreeKind<'static> = TreeKind {
    static_lens: Some(&STATIC_DLENS),
    extra: &DIST_EXTRA,
    extra_base: 0,
    max_length: MAX_BITS,
};

pub(crate) const BLKIND: TreeKind<'static> = TreeKind {
    static_lens: None,
    extra: &EXTRA_BLBITS,
    extra_base: 0,
    max_length: MAX_BL_BITS,
};

#[inline]
fn node_of(entry: u64) -> usize {
    (entry & 0xFFFF) as usize
}

#[inline]
fn depth_of(entry: u64) -> u64 {
    (entry >> 16) & 0xFFFF
}

impl TreeBuilder {
    pub(crate) fn new() -> Self {
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
    pub(crate) fn build<const N: usize>(
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
pub(crate) fn gen_codes<const N: usize>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freqs::nonzero_bitmap;
    use crate::tables::BL_CODES;
    use crate::test_rng::Rng;

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
}
