//! ns per JWT authentication, per algorithm: what a request with
//! `authorization: Bearer <jwt>` costs in `Authenticator::authenticate`
//! (size check, header and claims parsing, key lookup, signature, claim
//! checks, claims -> policy), against an API key on the same
//! authenticator. Keys are generated here; the JWKS is a file.
//!
//!   cargo bench --bench jwt

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use token_authority::policy::jwt::JwtIssuerConfig;
use token_authority::policy::{Authenticator, CallerConfig, PolicyConfig, generate_key};

fn b64(v: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// (alg, signing key, public JWK).
fn keys() -> Vec<(Algorithm, EncodingKey, Value)> {
    // Before jsonwebtoken is first used, as in the service.
    token_authority::policy::jwt::use_ring_for_signatures();
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let rsa = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let rsa_der = rsa.to_pkcs1_der().unwrap().as_bytes().to_vec();
    let mut out = Vec::new();
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
    ] {
        let enc = EncodingKey::from_rsa_der(&rsa_der);
        let jwk = serde_json::to_value(Jwk::from_encoding_key(&enc, alg).unwrap()).unwrap();
        out.push((alg, enc, jwk));
    }
    for (alg, curve) in [
        (Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256),
        (Algorithm::ES384, &rcgen::PKCS_ECDSA_P384_SHA384),
    ] {
        let kp = rcgen::KeyPair::generate_for(curve).unwrap();
        let enc = EncodingKey::from_ec_der(&kp.serialize_der());
        let jwk = serde_json::to_value(Jwk::from_encoding_key(&enc, alg).unwrap()).unwrap();
        out.push((alg, enc, jwk));
    }
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    out.push((
        Algorithm::EdDSA,
        EncodingKey::from_ed_der(&kp.serialize_der()),
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(kp.public_key_raw())}),
    ));
    out
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let dir = std::env::temp_dir().join(format!("ta-bench-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks: Vec<Value> = keys
        .iter()
        .map(|(alg, _, jwk)| {
            let mut j = jwk.clone();
            j["kid"] = json!(format!("{alg:?}"));
            j
        })
        .collect();
    std::fs::write(dir.join("jwks.json"), json!({"keys": jwks}).to_string()).unwrap();
    let (api_key, hash) = generate_key().unwrap();
    let policy = PolicyConfig {
        kinds: Some(vec!["rtc".into()]),
        channels: Some(vec!["user-{sub}".into(), "team-{claims.team}-*".into()]),
        max_expire_seconds: Some(3600),
        ..Default::default()
    };
    let auth = Authenticator::new(
        &[CallerConfig {
            name: "backend".into(),
            api_key_sha256: Some(hash.to_hex()),
            policy: PolicyConfig {
                kinds: Some(vec!["rtc".into()]),
                channels: Some(vec!["user-*".into(), "team-*".into()]),
                max_expire_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        }],
        None,
    )
    .unwrap()
    .with_jwt_issuers(
        &[JwtIssuerConfig {
            name: "idp".into(),
            issuer: "https://idp.example/".into(),
            audiences: vec!["token-authority".into()],
            jwks_file: Some("jwks.json".into()),
            algorithms: Some(
                [
                    "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
                ]
                .map(String::from)
                .to_vec(),
            ),
            uid_claim: Some("uid".into()),
            policy,
            ..Default::default()
        }],
        &dir,
    )
    .unwrap();
    let ip: IpAddr = [127, 0, 0, 1].into();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // A typical OIDC access token's claims.
    let claims = json!({"iss": "https://idp.example/", "aud": "token-authority",
        "sub": "auth0|5f7c8ec7c33c6c004bbafe82", "uid": 1001, "team": "red",
        "iat": now, "exp": now + 86_400, "scope": "openid profile email",
        "email": "alice@example.com", "email_verified": true});
    let mut g = c.benchmark_group("authenticate");
    g.bench_function("api_key", |b| {
        b.iter(|| {
            auth.authenticate(Some(black_box(&api_key)), &[], ip, false)
                .unwrap()
        });
    });
    let mut jwts = Vec::new();
    for (alg, enc, _) in &keys {
        let mut h = Header::new(*alg);
        h.kid = Some(format!("{alg:?}"));
        let jwt = jsonwebtoken::encode(&h, &claims, enc).unwrap();
        g.bench_function(format!("jwt_{alg:?}"), |b| {
            b.iter(|| {
                auth.authenticate(Some(black_box(&jwt)), &[], ip, false)
                    .unwrap()
            });
        });
        jwts.push(jwt);
    }
    g.finish();
    // The signature check alone: jsonwebtoken's RustCrypto provider
    // against the ring provider the service installs (the process default).
    let mut g = c.benchmark_group("signature");
    let rust_crypto = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
    for ((alg, _, jwk), jwt) in keys.iter().zip(&jwts) {
        let jwk: Jwk = serde_json::from_value(jwk.clone()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let (msg, sig_b64) = jwt.rsplit_once('.').unwrap();
        let sig = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(sig_b64)
                .unwrap()
        };
        g.bench_function(format!("rustcrypto_{alg:?}"), |b| {
            b.iter(|| {
                let v = (rust_crypto.verifier_factory)(alg, &key).unwrap();
                v.verify(black_box(msg.as_bytes()), &sig).unwrap();
            });
        });
        g.bench_function(format!("ring_{alg:?}"), |b| {
            b.iter(|| {
                let ok =
                    jsonwebtoken::crypto::verify(sig_b64, black_box(msg.as_bytes()), &key, *alg)
                        .unwrap();
                assert!(ok);
            });
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
