//! Verification keys of a JWT issuer: a JWKS document parsed into the
//! keys it may verify (and with which algorithms), loaded from a file or
//! fetched over HTTPS and refreshed.
//!
//! A remote JWKS ([`RemoteKeys`]) is fetched when the service starts (it is
//! not ready until every issuer has keys), then again when its cache
//! lifetime (`Cache-Control: max-age`, held within the configured bounds)
//! ends. A JWT whose `kid` is unknown triggers one refetch, at most every
//! `jwks_refetch_min_seconds`. When a fetch fails the keys already loaded
//! keep working until `jwks_max_stale_seconds` after the last successful
//! fetch; readiness says so meanwhile, and is NOT_SERVING once they expire.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The largest JWKS document read (bytes).
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// How long one JWKS fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The refresh interval when the server sends no `max-age` (then held
/// within the bounds).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// One usable verification key.
pub struct KeyEntry {
    /// `kid`, when the JWKS gives one.
    pub kid: Option<String>,
    /// The key.
    pub key: DecodingKey,
    /// The algorithms it may verify (its `alg`, or those of its type).
    pub algs: Vec<Algorithm>,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("kid", &self.kid)
            .field("algs", &self.algs)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one JWKS document.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<KeyEntry>,
}

/// What looking a key up found.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The key to verify with.
    Found(&'a KeyEntry),
    /// No key with this `kid`.
    UnknownKid,
    /// The JWT has no `kid` and the set has several keys for its algorithm.
    Ambiguous,
    /// The key with this `kid` may not verify this algorithm.
    WrongAlgorithm,
}

fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// The name of an algorithm as written in a JWT header.
pub fn alg_name(a: Algorithm) -> &'static str {
    algorithm_name(a)
}

/// The asymmetric algorithms a JWT issuer may allow.
pub const ALLOWED_ALGORITHMS: [&str; 7] = [
    "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
];

/// Parses an allowed algorithm name (never `none`, never HMAC).
pub fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    if !ALLOWED_ALGORITHMS.contains(&s) {
        return Err(format!(
            "algorithm {s:?} is not allowed (allowed: {}; never none or HMAC)",
            ALLOWED_ALGORITHMS.join(", ")
        ));
    }
    Algorithm::from_str(s).map_err(|_| format!("algorithm {s:?} is unknown"))
}

impl KeySet {
    /// Parses a JWKS document. Keys this service cannot use (symmetric,
    /// encryption keys, unknown types or curves) are skipped and named in
    /// the second value; a document without any usable key is an error.
    pub fn parse(json: &[u8]) -> Result<(Self, Vec<String>), String> {
        let doc: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("not a JSON document: {e}"))?;
        let Some(keys) = doc.get("keys").and_then(|k| k.as_array()) else {
            return Err("not a JWKS: no \"keys\" array".to_owned());
        };
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match Self::entry(k) {
                Ok(e) => out.push(e),
                Err(why) => skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        if out.is_empty() {
            return Err(format!(
                "no usable signing key (of {} keys{}{})",
                keys.len(),
                if skipped.is_empty() { "" } else { ": " },
                skipped.join("; ")
            ));
        }
        Ok((Self { keys: out }, skipped))
    }

    fn entry(k: &serde_json::Value) -> Result<KeyEntry, String> {
        let jwk: Jwk = serde_json::from_value(k.clone())
            .map_err(|e| format!("unsupported or malformed key: {e}"))?;
        if let Some(u) = &jwk.common.public_key_use {
            if *u != PublicKeyUse::Signature {
                return Err("not a signing key (use is not \"sig\")".to_owned());
            }
        }
        let by_type: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
            ],
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => return Err("unsupported EC curve".to_owned()),
            },
            AlgorithmParameters::OctetKeyPair(p) => match p.curve {
                EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
                _ => return Err("unsupported OKP curve".to_owned()),
            },
            AlgorithmParameters::OctetKey(_) => {
                return Err("symmetric (oct) keys are never used".to_owned());
            }
        };
        let algs = match &jwk.common.key_algorithm {
            None => by_type,
            Some(a) => {
                // KeyAlgorithm's Debug is its JOSE name.
                let name = format!("{a:?}");
                let alg = Algorithm::from_str(&name)
                    .ok()
                    .filter(|a| by_type.contains(a))
                    .ok_or_else(|| format!("alg {name} does not fit the key type"))?;
                vec![alg]
            }
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
        Ok(KeyEntry {
            kid: jwk.common.key_id.clone(),
            key,
            algs,
        })
    }

    /// The key for a JWT's `kid` and `alg`.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        match kid {
            Some(kid) => match self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                None => Lookup::UnknownKid,
                Some(k) if !k.algs.contains(&alg) => Lookup::WrongAlgorithm,
                Some(k) => Lookup::Found(k),
            },
            None => {
                let mut fit = self.keys.iter().filter(|k| k.algs.contains(&alg));
                match (fit.next(), fit.next()) {
                    (Some(k), None) => Lookup::Found(k),
                    (None, _) => Lookup::UnknownKid,
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                }
            }
        }
    }

    /// The number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Bounds of a remote JWKS's refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refresh {
    /// Shortest refresh interval (also the retry interval after a failure).
    pub min: Duration,
    /// Longest refresh interval.
    pub max: Duration,
    /// How long keys stay usable after the last successful fetch.
    pub max_stale: Duration,
    /// Shortest interval between refetches for an unknown `kid`.
    pub refetch_min: Duration,
}

#[derive(Debug)]
struct Loaded {
    keys: Arc<KeySet>,
    valid_until: Instant,
}

#[derive(Debug, Default)]
struct Failing {
    since: Option<Instant>,
    error: String,
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

/// Readiness of one remote JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    /// Keys loaded and the last fetch worked.
    Fresh,
    /// Keys loaded, but refreshing fails (the reason).
    Stale(String),
    /// No usable keys (the reason).
    Missing(String),
}

/// A JWKS fetched over HTTPS and refreshed.
pub struct RemoteKeys {
    url: hyper::Uri,
    url_text: String,
    client: HttpsClient,
    refresh: Refresh,
    loaded: ArcSwapOption<Loaded>,
    failing: Mutex<Failing>,
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    started: std::sync::atomic::AtomicBool,
    /// What identifies this source across reloads (URL, CA, bounds).
    pub(crate) identity: String,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("url", &self.url_text)
            .finish_non_exhaustive()
    }
}

fn client_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| format!("jwks_ca_file: not PEM certificates: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("jwks_ca_file: unusable certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("jwks_ca_file: holds no certificate".to_owned());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn max_age(headers: &hyper::HeaderMap) -> Option<Duration> {
    let cc = headers.get(hyper::header::CACHE_CONTROL)?.to_str().ok()?;
    cc.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

impl RemoteKeys {
    /// A source for `url` (`https` only), trusting `ca_pem` (PEM
    /// certificates) or, without it, the public web PKI roots.
    pub fn new(url: &str, ca_pem: Option<&[u8]>, refresh: Refresh) -> Result<Self, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("jwks_url: not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err("jwks_url: must be an https:// URL with a host".to_owned());
        }
        let tls = client_config(ca_pem)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        let ca_digest = ca_pem.map_or_else(String::new, |p| {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(p))
        });
        Ok(Self {
            identity: format!("{url} {ca_digest} {refresh:?}"),
            url: uri,
            url_text: url.to_owned(),
            client,
            refresh,
            loaded: ArcSwapOption::empty(),
            failing: Mutex::new(Failing::default()),
            last_refetch: tokio::sync::Mutex::new(None),
            started: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The JWKS URL.
    pub fn url(&self) -> &str {
        &self.url_text
    }

    /// The keys, while usable.
    pub fn keys(&self) -> Result<Arc<KeySet>, String> {
        match self.loaded.load().as_ref() {
            Some(l) if Instant::now() < l.valid_until => Ok(Arc::clone(&l.keys)),
            Some(_) => Err(format!(
                "the keys from {} expired: it has been unreachable for longer than \
                 jwks_max_stale_seconds ({})",
                self.url_text,
                self.last_error()
            )),
            None => Err(format!(
                "the keys from {} are not loaded yet ({})",
                self.url_text,
                self.last_error()
            )),
        }
    }

    fn last_error(&self) -> String {
        let f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match f.since {
            Some(since) => format!(
                "fetching fails since {} s ago: {}",
                since.elapsed().as_secs(),
                f.error
            ),
            None => "no fetch has completed".to_owned(),
        }
    }

    /// Readiness of this source.
    pub fn status(&self) -> KeyStatus {
        match self.keys() {
            Err(e) => KeyStatus::Missing(e),
            Ok(_) => {
                let f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
                match f.since {
                    None => KeyStatus::Fresh,
                    Some(since) => {
                        let left = self.loaded.load().as_ref().map_or(0, |l| {
                            l.valid_until
                                .saturating_duration_since(Instant::now())
                                .as_secs()
                        });
                        KeyStatus::Stale(format!(
                            "{} unreachable for {} s ({}); cached keys stay valid for {left} s more",
                            self.url_text,
                            since.elapsed().as_secs(),
                            f.error
                        ))
                    }
                }
            }
        }
    }

    async fn get(&self) -> Result<(KeySet, Option<Duration>), String> {
        let req = hyper::Request::get(self.url.clone())
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| format!("request: {e}"))?;
        let fetch = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
            if resp.status() != hyper::StatusCode::OK {
                return Err(format!("HTTP status {}", resp.status()));
            }
            let age = max_age(resp.headers());
            let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    format!("reading the body failed (at most {MAX_JWKS_BYTES} bytes): {e}")
                })?
                .to_bytes();
            let (set, skipped) = KeySet::parse(&body)?;
            for s in skipped {
                tracing::debug!(url = %self.url_text, key = %s, "JWKS key skipped");
            }
            Ok((set, age))
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| format!("no answer within {} s", FETCH_TIMEOUT.as_secs()))?
    }

    /// Fetches once; returns when to refresh next.
    pub async fn fetch(&self) -> Duration {
        match self.get().await {
            Ok((set, age)) => {
                let n = set.len();
                let now = Instant::now();
                self.loaded.store(Some(Arc::new(Loaded {
                    keys: Arc::new(set),
                    valid_until: now + self.refresh.max_stale,
                })));
                let was_failing = {
                    let mut f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
                    f.since.take().is_some()
                };
                let next = age
                    .unwrap_or(DEFAULT_REFRESH)
                    .clamp(self.refresh.min, self.refresh.max);
                if was_failing {
                    tracing::info!(url = %self.url_text, keys = n, "JWKS reachable again");
                } else {
                    tracing::debug!(url = %self.url_text, keys = n, next_s = next.as_secs(), "JWKS loaded");
                }
                next
            }
            Err(e) => {
                tracing::warn!(url = %self.url_text, error = %e, "JWKS fetch failed; cached keys (if any) stay in use until they expire");
                let mut f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
                f.since.get_or_insert_with(Instant::now);
                f.error = e;
                self.refresh.min
            }
        }
    }

    /// A refetch because a JWT named an unknown `kid`, at most every
    /// `refetch_min`; concurrent callers wait for the one in progress.
    pub async fn refetch(&self) {
        let mut last = self.last_refetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.refresh.refetch_min) {
            return;
        }
        *last = Some(Instant::now());
        let _ = self.fetch().await;
    }

    /// Starts the refresh task (once; needs a Tokio runtime, else it does
    /// nothing). The task ends when the source is dropped (a reload that
    /// no longer names it).
    pub fn start(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err()
            || self.started.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(me) = weak.upgrade() else { break };
                let next = me.fetch().await;
                drop(me);
                tokio::time::sleep(next).await;
            }
        });
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
