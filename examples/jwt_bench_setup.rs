//! Setup for `scripts/bench-jwt.sh`: generates an RSA key, writes its JWKS
//! to `DIR/jwks.json` and a config file for JWT callers to
//! `DIR/jwt.toml`, one for an API-key caller with the same policy to
//! `DIR/key.toml`, and prints the API key and an RS256 JWT (valid one day)
//! on two lines.
//!
//! `cargo run --release --example jwt_bench_setup -- DIR`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn main() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    // Before jsonwebtoken is first used, as in the service.
    token_authority::policy::jwt::use_ring_for_signatures();
    let dir =
        std::path::PathBuf::from(std::env::args().nth(1).expect("usage: jwt_bench_setup DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let rsa = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let enc = EncodingKey::from_rsa_der(rsa.to_pkcs1_der().unwrap().as_bytes());
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap()).unwrap();
    jwk["kid"] = json!("bench");
    std::fs::write(dir.join("jwks.json"), json!({"keys": [jwk]}).to_string()).unwrap();
    // The same policy for both: RTC tokens for any channel and uid (the
    // load generator's requests), at most one hour.
    let policy = "kinds = [\"rtc\"]\nmax_expire_seconds = 86400\n";
    std::fs::write(
        dir.join("jwt.toml"),
        format!(
            "[[jwt_issuers]]\nname = \"idp\"\nissuer = \"https://idp.example/\"\naudiences = [\"token-authority\"]\njwks_file = \"jwks.json\"\nname_claim = \"sub\"\n{policy}"
        ),
    )
    .unwrap();
    let (key, hash) = token_authority::policy::generate_key().unwrap();
    std::fs::write(
        dir.join("key.toml"),
        format!(
            "[[callers]]\nname = \"backend\"\napi_key_sha256 = \"{}\"\n{policy}",
            hash.to_hex()
        ),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": "https://idp.example/", "aud": "token-authority",
        "sub": "auth0|5f7c8ec7c33c6c004bbafe82", "iat": now, "exp": now + 86_400,
        "scope": "openid profile email", "email": "alice@example.com", "email_verified": true});
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("bench".into());
    println!("{key}");
    println!("{}", jsonwebtoken::encode(&h, &claims, &enc).unwrap());
}
