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

    /// Parses 64 hexadecimal characters (either case; surrounding
    /// whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| {
            let what = match s.chars().position(|c| !c.is_ascii_hexdigit()) {
                Some(i) => format!("character {} is not hexadecimal", i + 1),
                None => format!("got {}", s.len()),
            };
            format!("must be 64 hexadecimal characters (the SHA-256 of the key); {what}")
        })?;
        Ok(Self(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
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

    #[test]
    fn hex_forms_and_errors() {
        let lower = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let h = ApiKeyHash::from_hex(lower).unwrap();
        assert_eq!(h, ApiKeyHash::of_key("test"));
        assert_eq!(h.to_hex(), lower);
        // Upper case and surrounding whitespace are accepted; output is lower case.
        let upper = format!("  {}\n", lower.to_ascii_uppercase());
        assert_eq!(ApiKeyHash::from_hex(&upper).unwrap().to_hex(), lower);
        // Wrong length (odd or even) and a non-hex character are explained.
        for (bad, n) in [
            ("", 0),
            ("abc", 3),
            (&lower[..62], 62),
            (&format!("{lower}00"), 66),
        ] {
            let e = ApiKeyHash::from_hex(bad).unwrap_err();
            assert!(e.contains("64 hexadecimal characters"), "{e}");
            assert!(e.ends_with(&format!("got {n}")), "{e}");
        }
        let e = ApiKeyHash::from_hex(&format!("{}g", &lower[..63])).unwrap_err();
        assert!(
            e.contains("64 hexadecimal") && e.contains("character 64"),
            "{e}"
        );
        // Also when the length is wrong too (a multi-byte character).
        let e = ApiKeyHash::from_hex(&format!("{}é", &lower[..63])).unwrap_err();
        assert!(e.contains("character 64 is not hexadecimal"), "{e}");
        assert!(ApiKeyHash::from_hex(&format!("+{}", &lower[1..])).is_err());
    }
}
