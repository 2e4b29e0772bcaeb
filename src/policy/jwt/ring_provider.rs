//! JWT signature verification with `ring` (the crypto library rustls
//! already uses here), through `jsonwebtoken`'s documented extension point,
//! its [`CryptoProvider`]: the crate still does the JWS work (signing input,
//! base64url, claims); `ring` only checks the signature. Signing (tests,
//! benches) and the JWK helpers stay with the crate's RustCrypto provider.
//!
//! Why: the RustCrypto RSA verifier rebuilds the key and runs a generic
//! big-integer exponentiation on every call, several hundred microseconds
//! per RS256 JWT here; `ring`'s is about ten times faster (BENCHMARKS.md).
//! `ring` also refuses RSA keys under 2048 bits.
//!
//! [`install`] makes it the process default once; compiling a JWT issuer
//! calls it, which in the service is the first use of `jsonwebtoken`. A
//! program that used the crate before (a test minting JWTs) calls it
//! first itself: otherwise the crate's own provider stays in place, and
//! verification is as correct, only slower (a warning says so).

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use ring::signature as rs;

/// A key and the `ring` algorithm that verifies with it.
struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match (self.alg, self.key.kind()) {
            (a, DecodingKeyKind::RsaModulusExponent { n, e }) => {
                let params: &rs::RsaParameters = match a {
                    Algorithm::RS256 => &rs::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &rs::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &rs::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &rs::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &rs::RSA_PSS_2048_8192_SHA384,
                    Algorithm::PS512 => &rs::RSA_PSS_2048_8192_SHA512,
                    _ => return Err(signature::Error::new()),
                };
                rs::RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .is_ok()
            }
            (a, DecodingKeyKind::SecretOrDer(bytes)) => {
                let alg: &dyn rs::VerificationAlgorithm = match a {
                    // The uncompressed point 04 || x || y, as from a JWK.
                    Algorithm::ES256 => &rs::ECDSA_P256_SHA256_FIXED,
                    Algorithm::ES384 => &rs::ECDSA_P384_SHA384_FIXED,
                    Algorithm::EdDSA => &rs::ED25519,
                    _ => return Err(signature::Error::new()),
                };
                rs::UnparsedPublicKey::new(alg, bytes)
                    .verify(msg, sig)
                    .is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    use jsonwebtoken::AlgorithmFamily as F;
    let fits = matches!(
        (alg, key.family(), key.kind()),
        (
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512,
            F::Rsa,
            DecodingKeyKind::RsaModulusExponent { .. },
        ) | (
            Algorithm::ES256 | Algorithm::ES384,
            F::Ec,
            DecodingKeyKind::SecretOrDer(_)
        ) | (Algorithm::EdDSA, F::Ed, DecodingKeyKind::SecretOrDer(_))
    );
    if !fits {
        // HMAC, or a key of another family: never verified here.
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        key: key.clone(),
    }))
}

/// Makes `ring` verify JWT signatures in this process (once; see the
/// module docs). Signing and the JWK helpers are RustCrypto's.
pub fn install() {
    static RING: std::sync::OnceLock<CryptoProvider> = std::sync::OnceLock::new();
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let base = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
        let ring = RING.get_or_init(|| CryptoProvider {
            signer_factory: base.signer_factory,
            verifier_factory: new_verifier,
            jwk_utils: base.jwk_utils.clone(),
        });
        if ring.install_default().is_err() {
            tracing::debug!(
                "jsonwebtoken's crypto provider was already chosen; JWTs verify with it"
            );
        }
    });
}
