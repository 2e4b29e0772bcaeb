//! JWT callers (`[[jwt_issuers]]`): a client presents a JWT it already
//! has (an OpenID Connect ID or access token, a Kubernetes projected
//! service-account token) as `authorization: Bearer <jwt>`, and its claims
//! become its policy.
//!
//! Verification, in order, each failure naming its check (never the
//! token): size (`max_jwt_bytes`), shape (three base64url parts, JSON
//! header and claims), `alg` (never `none`, never HMAC; in the issuer's
//! allow-list), `iss` (selects the issuer), the key (`kid` in the JWKS; an
//! unknown `kid` of a remote JWKS triggers one rate-limited refetch), the
//! signature, `exp` (required), `nbf` and `iat` (checked when present,
//! numbers only), `aud` (one of `audiences`), `bound_claims`, and the
//! claims the policy reads (`name_claim`, `uid_claim` / `account_claim`,
//! `channels_claim`, `roles_claim`, template placeholders), each of the
//! right type. Signature and standard claims are checked by the
//! `jsonwebtoken` crate; the type checks of `exp`, `nbf` and `iat` are
//! repeated here so a claim of the wrong type is refused, never skipped.

pub mod keys;
mod ring_provider;
pub use ring_provider::install as use_ring_for_signatures;

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use agora_token::Role;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::bounded::BoundedMap;
use super::{Denial, Glob, Policy, PolicyConfig, TokenBucket};
use crate::domain::rules;
pub use keys::{KeySet, KeyStatus, Lookup, Refresh, RemoteKeys};

/// Default clock leeway for `exp`, `nbf` and `iat` (seconds).
pub const DEFAULT_LEEWAY: u64 = 30;
/// Largest clock leeway (seconds).
pub const MAX_LEEWAY: u64 = 300;
/// Default largest JWT (bytes).
pub const DEFAULT_MAX_JWT_BYTES: usize = 8192;
/// Largest `max_jwt_bytes`.
pub const MAX_MAX_JWT_BYTES: usize = 65536;
/// Most subjects per issuer whose rate-limit buckets are kept.
pub const MAX_TRACKED_SUBJECTS: usize = 100_000;

/// One `[[jwt_issuers]]` entry of the config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// Name (metrics label; callers are logged as `NAME:SUBJECT`).
    pub name: String,
    /// The exact `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values (at least one).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// HTTPS URL of the JWKS (exclusive with `jwks_file`).
    pub jwks_url: Option<String>,
    /// A JWKS file (reloaded when it changes).
    pub jwks_file: Option<PathBuf>,
    /// PEM CA certificates trusted for `jwks_url` instead of the public roots.
    pub jwks_ca_file: Option<PathBuf>,
    /// Shortest JWKS refresh interval, also the retry interval (default 60).
    pub jwks_min_refresh_seconds: Option<u64>,
    /// Longest JWKS refresh interval (default 3600).
    pub jwks_max_refresh_seconds: Option<u64>,
    /// How long fetched keys stay usable while the JWKS is unreachable (default 86400).
    pub jwks_max_stale_seconds: Option<u64>,
    /// Shortest interval between refetches for an unknown `kid` (default 30).
    pub jwks_refetch_min_seconds: Option<u64>,
    /// Allowed `alg` values (default `["RS256"]`).
    pub algorithms: Option<Vec<String>>,
    /// Clock leeway, seconds (default 30, at most 300).
    pub leeway_seconds: Option<u64>,
    /// Largest JWT accepted, bytes (default 8192).
    pub max_jwt_bytes: Option<usize>,
    /// The claim naming the caller in logs and audit (default `sub`).
    pub name_claim: Option<String>,
    /// The claim holding the numeric uid the tokens are bound to.
    pub uid_claim: Option<String>,
    /// The claim holding the string account the tokens are bound to.
    pub account_claim: Option<String>,
    /// A claim with an array of channel names or globs.
    pub channels_claim: Option<String>,
    /// A claim with an array of roles (`publisher`, `subscriber`).
    pub roles_claim: Option<String>,
    /// Claims that must have these values (a claim holding an array must
    /// contain the value; a configured array means any of its values).
    #[serde(default)]
    pub bound_claims: BTreeMap<String, Value>,
    /// The policy: as for `[[callers]]`, except that `channels` are
    /// templates (`{sub}`, `{claims.NAME}`; `{{` and `}}` for braces).
    #[serde(flatten)]
    pub policy: PolicyConfig,
}

/// Where an issuer's keys come from.
#[derive(Debug)]
pub enum KeySource {
    /// A JWKS file, read with the configuration.
    File(Arc<KeySet>),
    /// A remote JWKS.
    Remote(Arc<RemoteKeys>),
}

/// A piece of a channel template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Configuration text (`*`, `?` special).
    Text(String),
    /// The value of a claim (literal).
    Claim(String),
}

/// A compiled `[[jwt_issuers]]` entry.
#[derive(Debug)]
pub struct JwtIssuer {
    /// Name (metrics label).
    pub name: Arc<str>,
    issuer: String,
    audiences: Vec<String>,
    /// The keys.
    pub keys: KeySource,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    max_bytes: usize,
    name_claim: String,
    uid_claim: Option<String>,
    account_claim: Option<String>,
    channels_claim: Option<String>,
    roles_claim: Option<String>,
    templates: Option<Vec<Vec<Piece>>>,
    bound_claims: Vec<(String, Value)>,
    policy: Policy,
    rate: Option<(f64, u32)>,
    buckets: Mutex<BoundedMap<u64, Arc<TokenBucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

/// The identity an issuer's JWTs bind tokens to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// A numeric uid (1..=4294967295).
    Uid(u32),
    /// A string account.
    Account(String),
}

impl Bound {
    /// As an RTM / Chat user id (the uid in decimal).
    pub fn as_user_id(&self) -> String {
        match self {
            Self::Uid(u) => u.to_string(),
            Self::Account(a) => a.clone(),
        }
    }
}

/// A caller authenticated by a JWT.
#[derive(Debug)]
pub struct JwtCaller {
    /// The issuer that vouched for it.
    pub issuer: Arc<JwtIssuer>,
    /// `ISSUER:SUBJECT` (logs, audit).
    pub name: Arc<str>,
    /// Its policy: the issuer's, with its claims applied.
    pub policy: Policy,
    /// The identity its tokens are bound to.
    pub bound: Option<Bound>,
    /// Its subject's rate limit.
    pub bucket: Option<Arc<TokenBucket>>,
}

/// Why a JWT was not accepted: a denial, or an unknown `kid` of a remote
/// JWKS (worth one refetch).
#[derive(Debug)]
pub enum JwtFail {
    /// Refused.
    Denied(Denial),
    /// The key is not in the cached JWKS.
    UnknownKid(Arc<RemoteKeys>, Denial),
}

fn refuse(check: &'static str, detail: impl Into<String>) -> JwtFail {
    JwtFail::Denied(Denial::Jwt {
        check,
        detail: detail.into(),
    })
}

fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c)
                            if c.is_ascii_alphanumeric()
                                || matches!(c, '_' | '-' | '.' | ':' | '/') =>
                        {
                            name.push(c)
                        }
                        Some(c) => {
                            return Err(format!(
                                "template {t:?}: character {c:?} in a placeholder"
                            ));
                        }
                        None => return Err(format!("template {t:?}: unclosed {{")),
                    }
                }
                let name = name.strip_prefix("claims.").unwrap_or(&name).to_owned();
                if name.is_empty() {
                    return Err(format!("template {t:?}: empty placeholder"));
                }
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(Piece::Claim(name));
            }
            '}' => {
                return Err(format!(
                    "template {t:?}: unmatched }} (write }}}} for a brace)"
                ));
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

fn seconds(what: &str, v: Option<u64>, default: u64, min: u64, max: u64) -> Result<u64, String> {
    let v = v.unwrap_or(default);
    if !(min..=max).contains(&v) {
        return Err(format!("{what}: must be {min}..={max}"));
    }
    Ok(v)
}

fn claim_name(what: &str, v: &Option<String>) -> Result<Option<String>, String> {
    match v {
        Some(s) if s.trim().is_empty() => Err(format!("{what}: must not be empty")),
        other => Ok(other.clone()),
    }
}

impl JwtIssuer {
    /// Compiles an entry; `base` resolves relative paths. Reads
    /// `jwks_file` and `jwks_ca_file`. Errors name the key.
    pub fn new(c: &JwtIssuerConfig, base: &std::path::Path) -> Result<Self, String> {
        ring_provider::install();
        if c.name.trim().is_empty() {
            return Err("name: must not be empty".to_owned());
        }
        if c.issuer.trim().is_empty() {
            return Err("issuer: must not be empty".to_owned());
        }
        if c.audiences.is_empty() || c.audiences.iter().any(|a| a.is_empty()) {
            return Err("audiences: list at least one audience (non-empty)".to_owned());
        }
        let resolve = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        let refresh = Refresh {
            min: std::time::Duration::from_secs(seconds(
                "jwks_min_refresh_seconds",
                c.jwks_min_refresh_seconds,
                60,
                1,
                86_400,
            )?),
            max: std::time::Duration::from_secs(seconds(
                "jwks_max_refresh_seconds",
                c.jwks_max_refresh_seconds,
                3600,
                1,
                604_800,
            )?),
            max_stale: std::time::Duration::from_secs(seconds(
                "jwks_max_stale_seconds",
                c.jwks_max_stale_seconds,
                86_400,
                1,
                604_800,
            )?),
            refetch_min: std::time::Duration::from_secs(seconds(
                "jwks_refetch_min_seconds",
                c.jwks_refetch_min_seconds,
                30,
                1,
                86_400,
            )?),
        };
        if refresh.min > refresh.max {
            return Err(
                "jwks_min_refresh_seconds: must not exceed jwks_max_refresh_seconds".to_owned(),
            );
        }
        let keys = match (&c.jwks_url, &c.jwks_file) {
            (Some(_), Some(_)) => {
                return Err("jwks_url and jwks_file: give one, not both".to_owned());
            }
            (None, None) => return Err("needs jwks_url or jwks_file".to_owned()),
            (None, Some(f)) => {
                if c.jwks_ca_file.is_some() {
                    return Err("jwks_ca_file: only with jwks_url".to_owned());
                }
                let path = resolve(f);
                let bytes = std::fs::read(&path)
                    .map_err(|e| format!("jwks_file: cannot read {}: {e}", path.display()))?;
                let (set, _) = KeySet::parse(&bytes)
                    .map_err(|e| format!("jwks_file: {}: {e}", path.display()))?;
                KeySource::File(Arc::new(set))
            }
            (Some(url), None) => {
                let ca = c
                    .jwks_ca_file
                    .as_ref()
                    .map(|p| {
                        let path = resolve(p);
                        std::fs::read(&path).map_err(|e| {
                            format!("jwks_ca_file: cannot read {}: {e}", path.display())
                        })
                    })
                    .transpose()?;
                KeySource::Remote(Arc::new(RemoteKeys::new(url, ca.as_deref(), refresh)?))
            }
        };
        let algorithms = c
            .algorithms
            .clone()
            .unwrap_or_else(|| vec!["RS256".to_owned()]);
        if algorithms.is_empty() {
            return Err("algorithms: list at least one".to_owned());
        }
        let algorithms = algorithms
            .iter()
            .map(|a| keys::parse_algorithm(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("algorithms: {e}"))?;
        let leeway = seconds(
            "leeway_seconds",
            c.leeway_seconds,
            DEFAULT_LEEWAY,
            0,
            MAX_LEEWAY,
        )?;
        let max_bytes = c.max_jwt_bytes.unwrap_or(DEFAULT_MAX_JWT_BYTES);
        if !(256..=MAX_MAX_JWT_BYTES).contains(&max_bytes) {
            return Err(format!("max_jwt_bytes: must be 256..={MAX_MAX_JWT_BYTES}"));
        }
        let uid_claim = claim_name("uid_claim", &c.uid_claim)?;
        let account_claim = claim_name("account_claim", &c.account_claim)?;
        if uid_claim.is_some() && account_claim.is_some() {
            return Err("uid_claim and account_claim: give one, not both".to_owned());
        }
        let bound = uid_claim.is_some() || account_claim.is_some();
        if bound
            && (c.policy.uid_ranges.is_some()
                || c.policy.accounts.is_some()
                || c.policy.user_ids.is_some())
        {
            return Err(
                "uid_ranges, accounts and user_ids: not with uid_claim or account_claim (the \
                 bound identity is the only one allowed)"
                    .to_owned(),
            );
        }
        let templates = c
            .policy
            .channels
            .as_ref()
            .map(|v| {
                v.iter()
                    .map(|t| parse_template(t))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|e| format!("channels: {e}"))?;
        let mut base_policy = c.policy.clone();
        base_policy.channels = None;
        let rate = match (c.policy.rate_per_second, c.policy.burst) {
            (Some(r), b) if r.is_finite() && r > 0.0 => {
                Some((r, b.unwrap_or(r.ceil() as u32).max(1)))
            }
            _ => None,
        };
        let policy = Policy::compile(&base_policy)?;
        for (k, v) in &c.bound_claims {
            if k.is_empty() {
                return Err("bound_claims: a claim name must not be empty".to_owned());
            }
            if v.is_null() || v.is_object() || v.as_array().is_some_and(Vec::is_empty) {
                return Err(format!(
                    "bound_claims.{k}: must be a string, number, boolean or a non-empty array of them"
                ));
            }
        }
        Ok(Self {
            name: Arc::from(c.name.as_str()),
            issuer: c.issuer.clone(),
            audiences: c.audiences.clone(),
            keys,
            algorithms,
            leeway,
            max_bytes,
            name_claim: claim_name("name_claim", &c.name_claim)?
                .unwrap_or_else(|| "sub".to_owned()),
            uid_claim,
            account_claim,
            channels_claim: claim_name("channels_claim", &c.channels_claim)?,
            roles_claim: claim_name("roles_claim", &c.roles_claim)?,
            templates,
            bound_claims: c.bound_claims.clone().into_iter().collect(),
            policy,
            rate,
            buckets: Mutex::new(BoundedMap::new(MAX_TRACKED_SUBJECTS)),
            hasher: std::collections::hash_map::RandomState::new(),
        })
    }

    /// The `iss` this issuer accepts.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The remote JWKS, if any.
    pub fn remote(&self) -> Option<&Arc<RemoteKeys>> {
        match &self.keys {
            KeySource::Remote(r) => Some(r),
            KeySource::File(_) => None,
        }
    }

    fn bucket(&self, subject: &str) -> Option<Arc<TokenBucket>> {
        let (rate, burst) = self.rate?;
        let key = self.hasher.hash_one(subject);
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        Some(Arc::clone(map.get_or_insert_with(key, || {
            Arc::new(TokenBucket::new(rate, burst))
        })))
    }
}

/// The parts of a JWT before verification: header `alg` and `kid`, the
/// claims.
struct Parsed {
    alg: Algorithm,
    kid: Option<String>,
    claims: Map<String, Value>,
}

fn b64_json(what: &'static str, part: &str) -> Result<Map<String, Value>, JwtFail> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| refuse("format", format!("the {what} is not base64url")))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| refuse("format", format!("the {what} is not JSON")))?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(refuse("format", format!("the {what} is not a JSON object"))),
    }
}

/// Whether a bearer credential has the shape of a JWT (three
/// dot-separated parts), so it is not taken for an API key.
pub fn looks_like_jwt(s: &str) -> bool {
    s.bytes().filter(|&b| b == b'.').count() == 2
}

fn parse(token: &str) -> Result<Parsed, JwtFail> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse("format", "a JWT has three dot-separated parts"));
    };
    let header = b64_json("header", h)?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        Some(_) => return Err(refuse("alg", "the header's alg is not a string")),
        None => return Err(refuse("alg", "the header has no alg")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(refuse(
            "alg",
            "alg none (an unsigned JWT) is never accepted",
        ));
    }
    if alg.starts_with("HS") {
        return Err(refuse(
            "alg",
            format!(
                "{alg} (HMAC) is never accepted: only asymmetric signatures verify against a JWKS"
            ),
        ));
    }
    let alg = keys::parse_algorithm(alg).map_err(|e| refuse("alg", e))?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(refuse("kid", "the header's kid is not a string")),
    };
    if header.contains_key("crit") {
        return Err(refuse(
            "crit",
            "critical header extensions are not supported",
        ));
    }
    let claims = b64_json("claims", p)?;
    Ok(Parsed { alg, kid, claims })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A numeric date claim: absent, or a non-negative number.
fn date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtFail> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        {
            Some(v) => Ok(Some(v)),
            None => Err(refuse(
                name,
                format!("claim {name} must be a non-negative number of seconds"),
            )),
        },
        Some(_) => Err(refuse(
            name,
            format!("claim {name} must be a number (NumericDate), not another type"),
        )),
    }
}

fn map_error(e: &jsonwebtoken::errors::Error) -> JwtFail {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => refuse("signature", "the signature does not verify"),
        K::ExpiredSignature => refuse("exp", "the JWT has expired"),
        K::ImmatureSignature => refuse("nbf", "the JWT is not valid yet"),
        K::InvalidIssuer => refuse("iss", "wrong issuer"),
        K::InvalidAudience => refuse("aud", "the JWT is not for this service (aud)"),
        K::MissingRequiredClaim(c) => {
            let check = match c.as_str() {
                "aud" => "aud",
                "iss" => "iss",
                "exp" => "exp",
                _ => "claims",
            };
            refuse(check, format!("required claim {c} is missing"))
        }
        K::InvalidClaimFormat(c) => refuse("claims", format!("claim {c} has the wrong type")),
        K::InvalidAlgorithm | K::MissingAlgorithm => {
            refuse("alg", "the algorithm does not fit the key")
        }
        K::Base64(_) | K::Utf8(_) | K::InvalidToken => refuse("format", "malformed JWT"),
        K::Json(_) => refuse("format", "malformed JSON in the JWT"),
        _ => refuse("key", "the key cannot verify this JWT"),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

fn claim_matches(have: &Value, want: &Value) -> bool {
    match want {
        Value::Array(any) => any.iter().any(|w| claim_matches(have, w)),
        w => match have {
            Value::Array(items) => items.iter().any(|h| h == w),
            h => h == w,
        },
    }
}

impl JwtIssuer {
    /// Verifies `token` (already parsed) with this issuer's keys and maps
    /// its claims to a caller.
    fn verify(self: &Arc<Self>, token: &str, p: &Parsed) -> Result<JwtCaller, JwtFail> {
        if !self.algorithms.contains(&p.alg) {
            return Err(refuse(
                "alg",
                format!(
                    "{} is not allowed for issuer {}",
                    keys::alg_name(p.alg),
                    self.name
                ),
            ));
        }
        let set = match &self.keys {
            KeySource::File(s) => Arc::clone(s),
            KeySource::Remote(r) => r.keys().map_err(|e| refuse("jwks", e))?,
        };
        let key = match set.find(p.kid.as_deref(), p.alg) {
            Lookup::Found(k) => k,
            Lookup::UnknownKid => {
                let d = Denial::Jwt {
                    check: "kid",
                    detail: match &p.kid {
                        Some(k) => format!(
                            "no key {:?} in the JWKS of issuer {}",
                            k.chars().take(64).collect::<String>(),
                            self.name
                        ),
                        None => format!(
                            "no key for {} in the JWKS of issuer {}",
                            keys::alg_name(p.alg),
                            self.name
                        ),
                    },
                };
                return Err(match &self.keys {
                    KeySource::Remote(r) => JwtFail::UnknownKid(Arc::clone(r), d),
                    KeySource::File(_) => JwtFail::Denied(d),
                });
            }
            Lookup::Ambiguous => {
                return Err(refuse(
                    "kid",
                    "the JWT has no kid and the JWKS has several keys for its alg",
                ));
            }
            Lookup::WrongAlgorithm => {
                return Err(refuse(
                    "alg",
                    "the key named by kid may not verify this alg",
                ));
            }
        };
        // Types first: a wrong-typed date is refused, never skipped.
        let now = now_secs();
        match date(&p.claims, "exp")? {
            None => return Err(refuse("exp", "claim exp is required")),
            Some(exp) if exp.saturating_add(self.leeway) < now => {
                return Err(refuse("exp", "the JWT has expired"));
            }
            Some(_) => {}
        }
        if let Some(nbf) = date(&p.claims, "nbf")? {
            if nbf > now.saturating_add(self.leeway) {
                return Err(refuse("nbf", "the JWT is not valid yet"));
            }
        }
        if let Some(iat) = date(&p.claims, "iat")? {
            if iat > now.saturating_add(self.leeway) {
                return Err(refuse("iat", "the JWT was issued in the future"));
            }
        }
        let mut v = Validation::new(p.alg);
        v.algorithms = vec![p.alg];
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&self.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v)
            .map_err(|e| map_error(&e))?;
        self.caller(&p.claims)
    }

    fn check_bound_claims(&self, claims: &Map<String, Value>) -> Result<(), JwtFail> {
        for (k, want) in &self.bound_claims {
            match claims.get(k) {
                None => {
                    return Err(refuse(
                        "bound_claims",
                        format!("required claim {k} is missing"),
                    ));
                }
                Some(have) if !claim_matches(have, want) => {
                    return Err(refuse(
                        "bound_claims",
                        format!("claim {k} does not have a required value"),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The caller and its policy from verified claims.
    fn caller(self: &Arc<Self>, claims: &Map<String, Value>) -> Result<JwtCaller, JwtFail> {
        self.check_bound_claims(claims)?;
        let subject = match claims.get(&self.name_claim) {
            Some(Value::String(s))
                if !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control) =>
            {
                s
            }
            Some(_) => {
                return Err(refuse(
                    "claims",
                    format!(
                        "claim {} (the caller's name) must be a non-empty string of at most 256 bytes without control characters",
                        self.name_claim
                    ),
                ));
            }
            None => {
                return Err(refuse(
                    "claims",
                    format!("claim {} (the caller's name) is missing", self.name_claim),
                ));
            }
        };
        let bound = if let Some(c) = &self.uid_claim {
            let uid = match claims.get(c) {
                Some(Value::Number(n)) => n.as_u64().and_then(|u| u32::try_from(u).ok()),
                Some(Value::String(s)) if s.len() <= 10 && !s.starts_with('0') => {
                    rules::parse_uid(c, s).ok()
                }
                Some(_) => None,
                None => return Err(refuse("uid_claim", format!("claim {c} is missing"))),
            };
            match uid {
                Some(u) if u > 0 => Some(Bound::Uid(u)),
                _ => {
                    return Err(refuse(
                        "uid_claim",
                        format!(
                            "claim {c} must be a uid 1..=4294967295 (a number or its canonical decimal string)"
                        ),
                    ));
                }
            }
        } else if let Some(c) = &self.account_claim {
            match claims.get(c) {
                Some(Value::String(s)) if rules::account(c, s).is_ok() => {
                    Some(Bound::Account(s.clone()))
                }
                Some(_) => {
                    return Err(refuse(
                        "account_claim",
                        format!(
                            "claim {c} must be a valid account (a non-empty string of the Agora character set, at most 255 bytes)"
                        ),
                    ));
                }
                None => return Err(refuse("account_claim", format!("claim {c} is missing"))),
            }
        } else {
            None
        };
        let mut channels: Option<Vec<Glob>> = None;
        if let Some(templates) = &self.templates {
            let out = channels.get_or_insert_with(Vec::new);
            for t in templates {
                let mut g = Glob::new("");
                for piece in t {
                    match piece {
                        Piece::Text(s) => g.push_pattern(s),
                        Piece::Claim(name) => match claims.get(name).and_then(scalar_text) {
                            Some(v) => g.push_literal(&v),
                            None => {
                                return Err(refuse(
                                    "channels",
                                    format!(
                                        "claim {name} (in a channel template) must be a string or an integer"
                                    ),
                                ));
                            }
                        },
                    }
                }
                out.push(g);
            }
        }
        if let Some(c) = &self.channels_claim {
            let list = match claims.get(c) {
                None => Vec::new(),
                Some(Value::Array(items)) if items.len() <= 256 => items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) if s.len() <= 128 => Ok(Glob::new(s)),
                        _ => Err(()),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|()| refuse("channels_claim", format!("claim {c} must be an array of strings (channel names or globs, at most 128 bytes each)")))?,
                Some(_) => {
                    return Err(refuse("channels_claim", format!("claim {c} must be an array of at most 256 channel names or globs")));
                }
            };
            channels.get_or_insert_with(Vec::new).extend(list);
        }
        let roles = match &self.roles_claim {
            None => None,
            Some(c) => {
                let bad = || {
                    refuse(
                        "roles_claim",
                        format!("claim {c} must be an array of roles (publisher, subscriber)"),
                    )
                };
                let items: Vec<&Value> = match claims.get(c) {
                    None => Vec::new(),
                    Some(Value::Array(items)) => items.iter().collect(),
                    Some(v @ Value::String(_)) => vec![v],
                    Some(_) => return Err(bad()),
                };
                let mut roles = Vec::new();
                for i in items {
                    let Value::String(s) = i else {
                        return Err(bad());
                    };
                    // Other roles of the identity provider are not ours: ignored.
                    if let Ok(r) = s.parse::<Role>() {
                        roles.push(r);
                    }
                }
                Some(roles)
            }
        };
        let policy = self.policy.derive(channels, roles, bound.as_ref());
        let name: Arc<str> = Arc::from(format!("{}:{subject}", self.name));
        Ok(JwtCaller {
            issuer: Arc::clone(self),
            bucket: self.bucket(subject),
            name,
            policy,
            bound,
        })
    }
}

/// Verifies a JWT against the configured issuers.
pub fn authenticate(issuers: &[Arc<JwtIssuer>], token: &str) -> Result<JwtCaller, JwtFail> {
    let max = issuers
        .iter()
        .map(|i| i.max_bytes)
        .max()
        .unwrap_or(DEFAULT_MAX_JWT_BYTES);
    if token.len() > max {
        return Err(refuse(
            "max_jwt_bytes",
            format!("the JWT is {} bytes, more than {max}", token.len()),
        ));
    }
    let p = parse(token)?;
    let iss = match p.claims.get("iss") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(refuse("iss", "claim iss must be a string")),
        None => return Err(refuse("iss", "claim iss is required")),
    };
    // Several entries may share an `iss` (one policy per group, per
    // Kubernetes service account, ...): the first whose `bound_claims` the
    // claims meet is the one that verifies (its keys, audiences, every
    // check); choosing on unverified claims grants nothing by itself.
    let mut same_iss = issuers.iter().filter(|i| i.issuer == iss).peekable();
    if same_iss.peek().is_none() {
        return Err(refuse("iss", "no configured issuer has this iss"));
    }
    let mut refusal = None;
    for issuer in same_iss {
        if let Err(e) = issuer.check_bound_claims(&p.claims) {
            refusal.get_or_insert(e);
            continue;
        }
        if token.len() > issuer.max_bytes {
            return Err(refuse(
                "max_jwt_bytes",
                format!(
                    "the JWT is {} bytes, more than {}",
                    token.len(),
                    issuer.max_bytes
                ),
            ));
        }
        return issuer.verify(token, &p);
    }
    Err(refusal.unwrap_or_else(|| refuse("bound_claims", "no issuer entry matches")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_reject_bad_braces() {
        assert_eq!(
            parse_template("team-{claims.team}-*").unwrap(),
            vec![
                Piece::Text("team-".into()),
                Piece::Claim("team".into()),
                Piece::Text("-*".into())
            ]
        );
        assert_eq!(
            parse_template("{{x}}").unwrap(),
            vec![Piece::Text("{x}".into())]
        );
        assert!(parse_template("a{").is_err());
        assert!(parse_template("a}").is_err());
        assert!(parse_template("{}").is_err());
        assert!(parse_template("{a b}").is_err());
    }

    #[test]
    fn malformed_jwts_name_their_check() {
        let check = |t: &str| match parse(t) {
            Err(JwtFail::Denied(Denial::Jwt { check, .. })) => check,
            _ => "accepted",
        };
        assert_eq!(check("a.b"), "format");
        assert_eq!(check("!!.e30.x"), "format");
        // {"alg":"none"}
        assert_eq!(check("eyJhbGciOiJub25lIn0.e30."), "alg");
        // {"alg":"HS256"}
        assert_eq!(check("eyJhbGciOiJIUzI1NiJ9.e30.x"), "alg");
        // {"alg":"RS256"} with claims "[]"
        assert_eq!(check("eyJhbGciOiJSUzI1NiJ9.W10.x"), "format");
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("ta_abc"));
    }
}
