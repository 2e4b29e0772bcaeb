//! The tie groups of the two-queue Huffman construction: the exact data
//! cost of zlib's trees and the range of code lengths of each frequency,
//! whatever way zlib's heap breaks ties.

use crate::tables::{L_CODES, MAX_BITS};

/// Frequencies below this are counted in a table; larger ones are sorted.
pub(crate) const SMALL_FREQS: usize = 64;
/// Most tie groups of a tree: every group fills at least one of the at
/// most `2 * (L_CODES - 1)` removals.
const MAX_GROUPS: usize = 2 * L_CODES;
/// `TieGroups::g_run` of a group of internal nodes.
const NODE_GROUP: u16 = u16::MAX;

/// The tie groups of the two-queue Huffman construction of one tree,
/// handled a whole group at a time (see [`TieGroups::build`]).
pub(crate) struct TieGroups {
    /// The distinct leaf frequencies, ascending, and how many leaves have
    /// each ("runs").
    pub(super) run_freq: [u32; L_CODES],
    pub(super) run_count: [u32; L_CODES],
    /// Depth range of the leaves of each run.
    pub(super) run_lo: [u8; L_CODES],
    pub(super) run_hi: [u8; L_CODES],
    /// Run of each frequency below [`SMALL_FREQS`] (valid for the
    /// frequencies of the current tree only).
    run_of_small: [u16; SMALL_FREQS],
    /// Number of runs.
    pub(super) runs: usize,
    /// Leaves per frequency below [`SMALL_FREQS`], and which are nonzero.
    pub(super) small: [u32; SMALL_FREQS],
    small_mask: u64,
    /// Of those, the leaves whose lengths are certainly sent, as
    /// [`scan_quick`](super::scan_quick) counts them.
    pub(super) certain: [u32; SMALL_FREQS],
    /// Frequencies of at least [`SMALL_FREQS`], sorted before use.
    pub(super) big: [u32; L_CODES],
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
    pub(super) fn new() -> Self {
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
    pub(super) fn start(&mut self) {
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
    pub(super) fn add_leaf(&mut self, f: u32) {
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
    pub(super) fn build(&mut self, leaves: usize) -> Option<i64> {
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
    pub(super) fn run_of(&self, f: u32) -> usize {
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
    pub(super) fn range_of(&self, f: u32) -> (u8, u8) {
        let r = self.run_of(f);
        (self.run_lo[r], self.run_hi[r])
    }
}
