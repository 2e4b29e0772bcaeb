//! Packing primitives of the AccessToken2 format (spec section 2).
//!
//! [`Writer`] refuses anything that does not fit its `u16` length or count
//! prefix instead of wrapping (the Go and Rust reference builders wrap
//! silently and produce a validly signed token that parses as something
//! else). [`Reader`] is bounds-checked: every read returns a `Result` and a
//! short read names the field that was being read. Neither ever panics.

use crate::error::{BuildError, ParseError};

/// Appends little-endian packed values to a byte buffer.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// Writes into `buf`, after whatever it already holds.
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        Self { buf }
    }

    /// `u16`, little-endian.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// `i16`, little-endian two's complement.
    pub fn i16(&mut self, v: i16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// `u32`, little-endian.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A `u16` count of items; `field` names what is counted in the error.
    pub fn count(&mut self, field: &'static str, n: usize) -> Result<(), BuildError> {
        let n = u16::try_from(n).map_err(|_| BuildError::TooMany { field, count: n })?;
        self.u16(n);
        Ok(())
    }

    /// `bytes(s)`: a `u16` length and the raw bytes. Refuses more than 65535 bytes.
    pub fn bytes(&mut self, field: &'static str, s: &[u8]) -> Result<(), BuildError> {
        let len = u16::try_from(s.len()).map_err(|_| BuildError::TooLong {
            field,
            len: s.len(),
        })?;
        self.u16(len);
        self.buf.extend_from_slice(s);
        Ok(())
    }
}

/// Reads packed values from untrusted bytes without ever panicking.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.data
    }

    /// Takes the next `n` bytes, or fails naming `field` if fewer are left.
    pub fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], ParseError> {
        if n > self.data.len() {
            return Err(ParseError::Truncated { field });
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ParseError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    /// `u16`, little-endian.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, ParseError> {
        self.array(field).map(u16::from_le_bytes)
    }

    /// `i16`, little-endian two's complement.
    pub fn i16(&mut self, field: &'static str) -> Result<i16, ParseError> {
        self.array(field).map(i16::from_le_bytes)
    }

    /// `u32`, little-endian.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, ParseError> {
        self.array(field).map(u32::from_le_bytes)
    }

    /// `bytes(s)`: a `u16` length and that many bytes.
    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], ParseError> {
        let len = self.u16(field)?;
        self.take(field, usize::from(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_packs_little_endian_and_prefixes() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.u16(0x0102);
        w.u32(0x0304_0506);
        w.i16(-1);
        w.bytes("s", b"ab").unwrap();
        w.bytes("e", b"").unwrap();
        assert_eq!(buf, [2, 1, 6, 5, 4, 3, 0xff, 0xff, 2, 0, b'a', b'b', 0, 0]);
    }

    #[test]
    fn writer_refuses_what_does_not_fit_u16() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        let big = vec![b'c'; 65_536];
        assert_eq!(
            w.bytes("channel_name", &big),
            Err(BuildError::TooLong {
                field: "channel_name",
                len: 65_536
            })
        );
        assert!(w.bytes("channel_name", &big[..65_535]).is_ok());
        assert!(matches!(
            w.count("services", 65_536),
            Err(BuildError::TooMany { .. })
        ));
    }

    #[test]
    fn reader_reports_short_reads() {
        let mut r = Reader::new(&[5, 0, b'a']);
        assert_eq!(r.bytes("uid"), Err(ParseError::Truncated { field: "uid" }));
        let mut r = Reader::new(&[1]);
        assert_eq!(r.u16("x"), Err(ParseError::Truncated { field: "x" }));
        let mut r = Reader::new(&[1, 2, 3, 4, 9]);
        assert_eq!(r.u32("x"), Ok(0x0403_0201));
        assert_eq!(r.remaining(), &[9]);
    }
}
