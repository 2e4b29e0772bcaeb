//! An LSB-first bit writer.

/// LSB-first bit writer.
pub(crate) struct Bits<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) acc: u64,
    pub(crate) n: u32,
}

impl<'a> Bits<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Bits { out, acc: 0, n: 0 }
    }

    /// Appends the low `len` (at most 32) bits of `value`.
    #[inline]
    pub(crate) fn put(&mut self, value: u32, len: u8) {
        self.acc |= u64::from(value) << self.n;
        self.n += u32::from(len);
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    #[inline]
    pub(crate) fn code(&mut self, (code, len): (u16, u8)) {
        self.put(u32::from(code), len);
    }

    /// Pads to a byte boundary and writes out the pending bits.
    pub(crate) fn align(&mut self) {
        let bytes = self.n.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..bytes]);
        self.acc = 0;
        self.n = 0;
    }
}
