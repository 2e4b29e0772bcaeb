//! App id and app certificate: validated on construction, the certificate
//! redacted in `Debug` and zeroed on drop.

use std::fmt;

use zeroize::Zeroizing;

use crate::error::CredentialError;

fn check_hex32(s: &str) -> Result<(), CredentialError> {
    if s.len() != 32 {
        return Err(CredentialError::Length { len: s.len() });
    }
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CredentialError::NotHex);
    }
    Ok(())
}

/// An Agora / Shengwang app id: 32 hexadecimal characters, case preserved
/// (it is packed as the 32 ASCII characters, not hex-decoded).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(String);

impl AppId {
    /// Validates `s` as an app id.
    pub fn new(s: &str) -> Result<Self, CredentialError> {
        check_hex32(s)?;
        Ok(Self(s.to_owned()))
    }

    /// The app id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AppId").field(&self.0).finish()
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for AppId {
    type Err = CredentialError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// An app certificate: 32 hexadecimal characters. Its ASCII bytes, case
/// included, are the HMAC input. `Debug` prints `[redacted]`, there is no
/// `Display`, and the memory is zeroed on drop.
#[derive(Clone)]
pub struct AppCertificate(Zeroizing<[u8; 32]>);

impl AppCertificate {
    /// Validates `s` as an app certificate. The error never contains `s`.
    pub fn new(s: &str) -> Result<Self, CredentialError> {
        check_hex32(s)?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(s.as_bytes());
        Ok(Self(bytes))
    }

    /// The certificate's ASCII bytes, for signing. Keep them out of logs.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for AppCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppCertificate([redacted])")
    }
}

impl PartialEq for AppCertificate {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for AppCertificate {}

/// Whether `s` is 32 hexadecimal characters (the app id rule).
pub fn is_hex32(s: &[u8]) -> bool {
    s.len() == 32 && s.iter().all(u8::is_ascii_hexdigit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_length_and_alphabet() {
        assert!(AppId::new("970CA35de60c44645bbae8a215061b33").is_ok());
        assert_eq!(
            AppId::new("970CA35de60c"),
            Err(CredentialError::Length { len: 12 })
        );
        assert_eq!(
            AppId::new("970CA35de60c44645bbae8a215061b3g"),
            Err(CredentialError::NotHex)
        );
        // python3's bytes.fromhex accepts spaces; we do not.
        assert!(AppCertificate::new("00112233445566778899aabbccdd  ee").is_err());
    }

    #[test]
    fn certificate_debug_is_redacted() {
        let c = AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b").unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains("5CFd"), "{s}");
        assert!(s.contains("redacted"));
    }
}
