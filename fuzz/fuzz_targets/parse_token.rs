//! Fuzz the untrusted-input paths: 007 and 006 parsing, decoding of raw
//! content, and verification. Fails if anything panics, or if a token
//! verifies with a certificate it was not built with.

#![no_main]

use agora_token::{AppCertificate, UnverifiedToken, v1::V1Token};
use libfuzzer_sys::fuzz_target;

// A certificate none of the seed tokens (official vectors) was built with.
const CERT: &str = "0123456789abcdefABCDEF0123456789";

fuzz_target!(|data: &[u8]| {
    let Ok(cert) = AppCertificate::new(CERT) else {
        return;
    };
    // As a token string.
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = UnverifiedToken::parse(s) {
            // Random input never carries a valid HMAC under our certificate.
            assert!(t.verify(&cert).is_err(), "a random token verified");
        }
        if let Ok(t) = V1Token::parse(s) {
            assert!(t.verify(&cert, b"", b"").is_err());
        }
    }
    // As decompressed content (skips base64 and zlib, reaches the layout).
    if let Ok(t) = UnverifiedToken::from_content(data) {
        assert!(t.verify(&cert).is_err(), "random content verified");
        let _ = (t.expires_at(), t.app_id_lossy(), t.signing_info().len());
    }
    // As compressed bytes behind the version prefix.
    use base64::Engine as _;
    let token = format!("007{}", base64::engine::general_purpose::STANDARD.encode(data));
    if let Ok(t) = UnverifiedToken::parse(&token) {
        assert!(t.verify(&cert).is_err());
    }
});
