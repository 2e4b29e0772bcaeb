//! Differential fuzzing of `zlib_level6_small` against C zlib:
//! for every input it accepts, `zlib_compress_small` must produce exactly
//! the bytes of C zlib at level 6 (flate2 over libz-sys, built from source),
//! and it must refuse longer inputs without writing anything. (cargo fuzz
//! builds with debug assertions, so the encoder also checks each lower
//! bound it uses against the exact Huffman trees.)
//!
//! Run with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run deflate_diff --sanitizer none -- -max_len=4096`.

#![no_main]

use std::cell::RefCell;

use flate2::{Compress, Compression, FlushCompress, Status};
use libfuzzer_sys::fuzz_target;
use zlib_level6_small::{MAX_SMALL_INPUT, zlib_compress_small};

thread_local! {
    static ZLIB: RefCell<Compress> = RefCell::new(Compress::new(Compression::new(6), true));
}

fuzz_target!(|data: &[u8]| {
    let mut ours = Vec::new();
    let accepted = zlib_compress_small(data, &mut ours);
    assert_eq!(accepted, data.len() <= MAX_SMALL_INPUT);
    if !accepted {
        assert!(ours.is_empty());
        return;
    }
    let mut expected = Vec::with_capacity(data.len() + 64);
    ZLIB.with(|zlib| {
        let mut zlib = zlib.borrow_mut();
        zlib.reset();
        let status = zlib
            .compress_vec(data, &mut expected, FlushCompress::Finish)
            .expect("zlib failed");
        assert_eq!(status, Status::StreamEnd);
    });
    assert!(
        ours == expected,
        "output differs from C zlib for {} bytes",
        data.len()
    );
});
