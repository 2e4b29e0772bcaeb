//! Caller API keys: generated with 256 bits of OS randomness, stored only
//! as SHA-256 hashes, compared in constant time.

use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// SHA-256 of an API key, as stored in the config (64 lowercase hex characters).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
    /// The hash of a key as presented after `Bearer ` (its UTF-8 bytes).
    pub fn of_key(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// Parses 64 hexadecimal characters.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("must be 64 hexadecimal characters (the SHA-256 of the key)".to_owned());
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2).unwrap_or("00"), 16)
                .map_err(|_| "must be hexadecimal".to_owned())?;
        }
        Ok(Self(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeyHash([redacted])")
    }
}

/// A new random API key (256 bits, URL-safe base64 with a `ta_` prefix)
/// and its hash for the config.
pub fn generate_key() -> Result<(String, ApiKeyHash), getrandom::Error> {
    use base64::Engine as _;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)?;
    let key = format!(
        "ta_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let hash = ApiKeyHash::of_key(&key);
    Ok((key, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_hash_and_compare() {
        let (key, hash) = generate_key().unwrap();
        assert!(key.starts_with("ta_") && key.len() > 40);
        assert_eq!(ApiKeyHash::from_hex(&hash.to_hex()).unwrap(), hash);
        assert!(ApiKeyHash::of_key(&key).ct_eq(&hash));
        assert!(!ApiKeyHash::of_key("other").ct_eq(&hash));
        assert!(ApiKeyHash::from_hex("abc").is_err());
        assert!(!format!("{hash:?}").contains(&hash.to_hex()));
    }
}
