//! The dynamic block's header: zlib's run-length coding of code lengths
//! (`scan_tree` / `send_tree`).

use crate::tables::{REP_3_6, REPZ_3_10, REPZ_11_138};

/// One step of zlib's run-length coding of code lengths: a code-length
/// symbol (0..=18) and, for repeat codes, its extra bits.
#[derive(Clone, Copy)]
pub(crate) struct LenSym {
    pub(crate) sym: u8,
    pub(crate) extra: u8,
    pub(crate) extra_bits: u8,
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
pub(crate) fn rle_lengths(lens: &[u8], mut emit: impl FnMut(LenSym)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

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
}
