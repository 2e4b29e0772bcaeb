//! zlib level 6's parameters, the DEFLATE constants (RFC 1951) and the
//! length, distance and fixed-code tables, built at compile time.

pub(crate) const MIN_MATCH: usize = 3;
pub(crate) const MAX_MATCH: usize = 258;
pub(crate) const GOOD_LENGTH: usize = 8;
pub(crate) const MAX_LAZY: usize = 16;
pub(crate) const NICE_LENGTH: usize = 128;
pub(crate) const MAX_CHAIN: usize = 128;
/// 3-byte matches farther than this are not worth it (zlib's `TOO_FAR`).
pub(crate) const TOO_FAR: usize = 4096;
/// 32 KiB window minus zlib's minimum lookahead (258 + 3 + 1).
pub(crate) const MAX_DIST: usize = 32768 - (MAX_MATCH + MIN_MATCH + 1);

const HASH_BITS: u32 = 15; // memLevel 8 + 7
pub(crate) const HASH_MASK: u32 = (1 << HASH_BITS) - 1;
pub(crate) const HASH_SHIFT: u32 = HASH_BITS.div_ceil(MIN_MATCH as u32); // 5

pub(crate) const LITERALS: usize = 256;
pub(crate) const END_BLOCK: usize = 256;
pub(crate) const L_CODES: usize = LITERALS + 1 + 29;
pub(crate) const D_CODES: usize = 30;
pub(crate) const BL_CODES: usize = 19;
pub(crate) const HEAP_SIZE: usize = 2 * L_CODES + 1;
/// The heap array is a power of two long, so masked indices need no
/// bounds checks.
pub(crate) const HEAP_MASK: usize = 1023;
pub(crate) const MAX_BITS: usize = 15;
pub(crate) const MAX_BL_BITS: usize = 7;
pub(crate) const REP_3_6: usize = 16;
pub(crate) const REPZ_3_10: usize = 17;
pub(crate) const REPZ_11_138: usize = 18;

/// The order in which code-length-code lengths are sent (RFC 1951 3.2.7).
pub(crate) const BL_ORDER: [u8; BL_CODES] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];
pub(crate) const EXTRA_BLBITS: [u8; BL_CODES] =
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7];

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
pub(crate) const fn dist_code(d: usize) -> usize {
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

pub(crate) const fn dist_base(code: usize) -> usize {
    if code < 4 {
        code
    } else {
        (2 + (code & 1)) << (code / 2 - 1)
    }
}

/// For each match length minus 3: (length code, extra bits, extra value).
pub(crate) const LEN_TABLE: [(u8, u8, u8); 256] = {
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

pub(crate) const LEN_EXTRA: [u8; 29] = {
    let mut t = [0u8; 29];
    let mut c = 0;
    while c < 29 {
        t[c] = length_extra(c);
        c += 1;
    }
    t
};

pub(crate) const DIST_EXTRA: [u8; D_CODES] = {
    let mut t = [0u8; D_CODES];
    let mut c = 0;
    while c < D_CODES {
        t[c] = dist_extra(c);
        c += 1;
    }
    t
};

/// Reverses the low `len` bits of `code` (DEFLATE sends codes MSB first).
pub(crate) const fn reverse_bits(code: u32, len: u32) -> u32 {
    if len == 0 {
        0
    } else {
        code.reverse_bits() >> (32 - len)
    }
}

/// The fixed literal/length code lengths of RFC 1951 3.2.6.
pub(crate) const STATIC_LLEN: [u8; L_CODES + 2] = {
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
pub(crate) const STATIC_LCODES: [(u16, u8); L_CODES + 2] = {
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
pub(crate) const STATIC_DCODES: [(u16, u8); D_CODES] = {
    let mut t = [(0u16, 0u8); D_CODES];
    let mut n = 0;
    while n < D_CODES {
        t[n] = (reverse_bits(n as u32, 5) as u16, 5);
        n += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

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
}
