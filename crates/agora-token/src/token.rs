//! AccessToken2: build (sign, compress, encode), parse untrusted strings,
//! verify signatures (spec sections 1, 3, 4 and 6).

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::compress;
use crate::credentials::{AppCertificate, AppId, is_hex32};
use crate::error::{BuildError, ParseError, VerifyError};
use crate::pack::{Reader, Writer};
use crate::service::Service;

/// The version prefix of AccessToken2.
pub const VERSION: &str = "007";

/// Longest token string [`UnverifiedToken::parse`] accepts (characters).
pub const MAX_TOKEN_LEN: usize = 512 * 1024;

/// Largest decompressed content [`UnverifiedToken::parse`] accepts (bytes).
/// Checked while inflating, before the memory is allocated.
pub const MAX_CONTENT_LEN: usize = 256 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 with a key of at most 64 bytes. HMAC pads shorter keys with
/// zeros to the block size, so padding here gives the same MAC while using
/// the infallible fixed-size constructor.
fn hmac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut block = [0u8; 64];
    let n = key.len().min(64);
    block[..n].copy_from_slice(&key[..n]);
    let mut mac = <HmacSha256 as hmac::digest::KeyInit>::new(&block.into());
    for p in parts {
        mac.update(p);
    }
    mac
}

/// The signing key of spec section 4:
/// `HMAC(u32(salt), HMAC(u32(issue_ts), certificate))`.
pub fn signing_key(certificate: &AppCertificate, issue_ts: u32, salt: u32) -> [u8; 32] {
    let k1 = hmac(&issue_ts.to_le_bytes(), &[certificate.expose_secret()])
        .finalize()
        .into_bytes();
    hmac(&salt.to_le_bytes(), &[&k1])
        .finalize()
        .into_bytes()
        .into()
}

/// Size of the signature field at the start of the content: `u16(32)` + 32 bytes.
const SIGNATURE_FIELD: usize = 34;

/// A token to build: the official `AccessToken2` object. Services are packed
/// sorted by type, stably (repeated types keep the order they were added in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The app id.
    pub app_id: AppId,
    /// Issue time, unix seconds.
    pub issue_ts: u32,
    /// Token lifetime in seconds after `issue_ts`.
    pub expire: u32,
    /// Random salt (the official builders use 1..=99999999).
    pub salt: u32,
    /// The services, in the order they were added.
    pub services: Vec<Service>,
}

impl AccessToken {
    /// A token without services.
    pub fn new(app_id: AppId, issue_ts: u32, expire: u32, salt: u32) -> Self {
        Self {
            app_id,
            issue_ts,
            expire,
            salt,
            services: Vec::new(),
        }
    }

    /// Adds a service (several of one type are allowed).
    pub fn add_service(&mut self, service: Service) {
        self.services.push(service);
    }

    /// Builder-style [`AccessToken::add_service`].
    #[must_use]
    pub fn with_service(mut self, service: Service) -> Self {
        self.add_service(service);
        self
    }

    /// The content before compression: `bytes(signature) signing_info`.
    pub fn content(&self, certificate: &AppCertificate) -> Result<Vec<u8>, BuildError> {
        encode_content(
            self.app_id.as_str().as_bytes(),
            self.issue_ts,
            self.expire,
            self.salt,
            &self.services,
            certificate,
        )
    }

    /// Signs, compresses and encodes the token: `"007" + base64(zlib(content))`.
    pub fn build(&self, certificate: &AppCertificate) -> Result<String, BuildError> {
        let content = self.content(certificate)?;
        Ok(encode_token(&content))
    }
}

/// Packs and signs: the whole content of a token.
pub(crate) fn encode_content(
    app_id: &[u8],
    issue_ts: u32,
    expire: u32,
    salt: u32,
    services: &[Service],
    certificate: &AppCertificate,
) -> Result<Vec<u8>, BuildError> {
    if services.is_empty() {
        return Err(BuildError::NoService);
    }
    let mut buf = Vec::with_capacity(256);
    buf.resize(SIGNATURE_FIELD, 0);
    let mut w = Writer::new(&mut buf);
    w.bytes("app_id", app_id)?;
    w.u32(issue_ts);
    w.u32(expire);
    w.u32(salt);
    w.count("services", services.len())?;
    if services.is_sorted_by_key(Service::service_type) {
        for s in services {
            s.pack(&mut w)?;
        }
    } else {
        let mut sorted: Vec<&Service> = services.iter().collect();
        sorted.sort_by_key(|s| s.service_type()); // stable
        for s in sorted {
            s.pack(&mut w)?;
        }
    }
    let key = signing_key(certificate, issue_ts, salt);
    let signature = hmac(&key, &[&buf[SIGNATURE_FIELD..]])
        .finalize()
        .into_bytes();
    buf[0..2].copy_from_slice(&32u16.to_le_bytes());
    buf[2..SIGNATURE_FIELD].copy_from_slice(&signature);
    Ok(buf)
}

/// `"007" + base64(zlib(content))`.
pub(crate) fn encode_token(content: &[u8]) -> String {
    let mut z = Vec::new();
    compress::zlib_compress(content, &mut z);
    let mut s = String::with_capacity(VERSION.len() + z.len().div_ceil(3) * 4);
    s.push_str(VERSION);
    STANDARD.encode_string(&z, &mut s);
    s
}

/// A parsed but **not verified** token. Nothing in it can be trusted until
/// [`UnverifiedToken::verify`] returns a [`VerifiedToken`].
///
/// Its fields are read-only: what [`UnverifiedToken::verify`] checks is
/// exactly what was parsed, so a [`VerifiedToken`] proves every field:
///
/// ```
/// # use agora_token::{AppCertificate, AppId, UnverifiedToken, builders};
/// # let app_id = AppId::new("970CA35de60c44645bbae8a215061b33")?;
/// # let cert = AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b")?;
/// # let token = builders::rtm("u", 60).build(&app_id, &cert, 1, 1)?;
/// let t = UnverifiedToken::parse(&token)?;
/// assert_eq!((t.issue_ts(), t.services().len()), (1, 1));
/// assert!(t.verify(&cert).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Nothing can be changed between parse and verify:
///
/// ```compile_fail
/// # use agora_token::{AppCertificate, AppId, UnverifiedToken, builders};
/// # let app_id = AppId::new("970CA35de60c44645bbae8a215061b33")?;
/// # let cert = AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b")?;
/// # let token = builders::rtm("u", 60).build(&app_id, &cert, 1, 1)?;
/// let mut t = UnverifiedToken::parse(&token)?;
/// t.expire = u32::MAX; // error: the field is private
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// ```compile_fail
/// # use agora_token::{AppCertificate, AppId, UnverifiedToken, builders};
/// # let app_id = AppId::new("970CA35de60c44645bbae8a215061b33")?;
/// # let cert = AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b")?;
/// # let token = builders::rtm("u", 60).build(&app_id, &cert, 1, 1)?;
/// let mut t = UnverifiedToken::parse(&token)?;
/// t.services.clear(); // error: the field is private
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedToken {
    signature: Vec<u8>,
    signing_info: Vec<u8>,
    app_id: Vec<u8>,
    issue_ts: u32,
    expire: u32,
    salt: u32,
    service_count: u16,
    services: Vec<Service>,
    stopped_at_unknown_service_type: Option<u16>,
    trailing_bytes: usize,
    bytes_after_zlib_stream: usize,
}

impl UnverifiedToken {
    /// Parses a 007 token string. Any string is safe to pass: the result is
    /// an error or a token, never a panic, and memory use is capped.
    pub fn parse(token: &str) -> Result<Self, ParseError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(ParseError::TokenTooLong {
                len: token.len(),
                max: MAX_TOKEN_LEN,
            });
        }
        let body = token
            .strip_prefix(VERSION)
            .ok_or(ParseError::NotVersion007)?;
        let compressed = STANDARD.decode(body).map_err(|_| ParseError::Base64)?;
        let (content, after) = compress::zlib_decompress(&compressed, MAX_CONTENT_LEN)?;
        let mut t = Self::from_content(&content)?;
        t.bytes_after_zlib_stream = after;
        Ok(t)
    }

    /// Parses decompressed content (`bytes(signature) signing_info`).
    pub fn from_content(content: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(content);
        let signature = r.bytes("signature")?.to_vec();
        let signing_info = r.remaining().to_vec();
        let app_id = r.bytes("app_id")?.to_vec();
        let issue_ts = r.u32("issue_ts")?;
        let expire = r.u32("expire")?;
        let salt = r.u32("salt")?;
        let service_count = r.u16("service count")?;
        let mut services =
            Vec::with_capacity(usize::from(service_count).min(r.remaining().len() / 4));
        let mut stopped_at_unknown_service_type = None;
        for _ in 0..service_count {
            let before = r.clone();
            let t = r.u16("service type")?;
            match Service::unpack(t, &mut r)? {
                Some(s) => services.push(s),
                None => {
                    stopped_at_unknown_service_type = Some(t);
                    r = before;
                    break;
                }
            }
        }
        Ok(Self {
            signature,
            signing_info,
            app_id,
            issue_ts,
            expire,
            salt,
            service_count,
            services,
            stopped_at_unknown_service_type,
            trailing_bytes: r.remaining().len(),
            bytes_after_zlib_stream: 0,
        })
    }

    /// The signature field as received (32 bytes in a well-formed token).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The signed bytes exactly as received (everything after the signature field).
    pub fn signing_info(&self) -> &[u8] {
        &self.signing_info
    }

    /// The embedded app id, as raw bytes.
    pub fn app_id(&self) -> &[u8] {
        &self.app_id
    }

    /// Issue time, unix seconds.
    pub fn issue_ts(&self) -> u32 {
        self.issue_ts
    }

    /// Token lifetime in seconds after [`UnverifiedToken::issue_ts`].
    pub fn expire(&self) -> u32 {
        self.expire
    }

    /// Salt.
    pub fn salt(&self) -> u32 {
        self.salt
    }

    /// The service count field.
    pub fn service_count(&self) -> u16 {
        self.service_count
    }

    /// The services read, in token order.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The type at which reading stopped because it is not 1..=8 (the
    /// reference parsers stop there too: its length is not self-describing).
    pub fn stopped_at_unknown_service_type(&self) -> Option<u16> {
        self.stopped_at_unknown_service_type
    }

    /// Bytes after the last service read (covered by the signature; ignored).
    /// When reading stopped at an unknown type, this counts from that type.
    pub fn trailing_bytes(&self) -> usize {
        self.trailing_bytes
    }

    /// Bytes after the end of the zlib stream (not signed; ignored).
    pub fn bytes_after_zlib_stream(&self) -> usize {
        self.bytes_after_zlib_stream
    }

    /// The embedded app id as text (lossy for bytes that are not UTF-8).
    pub fn app_id_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.app_id)
    }

    /// Whether the embedded app id is 32 hexadecimal characters.
    pub fn app_id_is_valid(&self) -> bool {
        is_hex32(&self.app_id)
    }

    /// Unix time at which the token expires: `issue_ts + expire` (no overflow).
    pub fn expires_at(&self) -> u64 {
        u64::from(self.issue_ts) + u64::from(self.expire)
    }

    /// Whether the token has expired at unix time `now`.
    pub fn is_expired_at(&self, now: u64) -> bool {
        now >= self.expires_at()
    }

    /// Verifies the signature: recomputes the HMAC over the signing bytes as
    /// received and compares it in constant time. Refuses, like the Node.js,
    /// Go and Rust references, a token whose embedded app id is not 32 hex
    /// characters.
    pub fn verify(&self, certificate: &AppCertificate) -> Result<VerifiedToken<'_>, VerifyError> {
        if !self.app_id_is_valid() || self.signature.is_empty() {
            return Err(VerifyError);
        }
        let key = signing_key(certificate, self.issue_ts, self.salt);
        hmac(&key, &[&self.signing_info])
            .verify_slice(&self.signature)
            .map_err(|_| VerifyError)?;
        Ok(VerifiedToken { token: self })
    }
}

/// Proof that a token's signature verified. Only
/// [`UnverifiedToken::verify`] can create one.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedToken<'a> {
    token: &'a UnverifiedToken,
}

impl<'a> VerifiedToken<'a> {
    /// The verified token.
    pub fn token(&self) -> &'a UnverifiedToken {
        self.token
    }
}

impl std::ops::Deref for VerifiedToken<'_> {
    type Target = UnverifiedToken;
    fn deref(&self) -> &UnverifiedToken {
        self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::privilege;

    const APP: &str = "970CA35de60c44645bbae8a215061b33";
    const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

    #[test]
    fn worked_example_of_the_spec() {
        let t = AccessToken::new(AppId::new(APP).unwrap(), 1_111_111, 600, 1).with_service(
            Service::rtc("7d72365eb983485397e3e3f9d460bdda", "2882341273")
                .with_privilege(privilege::RTC_JOIN_CHANNEL, 600),
        );
        let cert = AppCertificate::new(CERT).unwrap();
        let content = t.content(&cert).unwrap();
        assert_eq!(content.len(), 138);
        assert_eq!(&content[..4], &[0x20, 0, 0x16, 0xa0]);
        let token = t.build(&cert).unwrap();
        assert!(token.starts_with("007eJxTYBBbsMMnKq7p9Hf/"));
        assert!(token.ends_with("gDCaiTj"));
        let parsed = UnverifiedToken::parse(&token).unwrap();
        assert!(parsed.verify(&cert).is_ok());
        assert_eq!(parsed.services, t.services);
    }

    #[test]
    fn zero_services_is_refused() {
        let t = AccessToken::new(AppId::new(APP).unwrap(), 1, 1, 1);
        assert_eq!(
            t.build(&AppCertificate::new(CERT).unwrap()),
            Err(BuildError::NoService)
        );
    }

    #[test]
    fn wrong_certificate_does_not_verify() {
        let cert = AppCertificate::new(CERT).unwrap();
        let other = AppCertificate::new(&CERT.to_lowercase()).unwrap();
        let t = AccessToken::new(AppId::new(APP).unwrap(), 5, 6, 7)
            .with_service(Service::rtm("u").with_privilege(1, 6))
            .build(&cert)
            .unwrap();
        let p = UnverifiedToken::parse(&t).unwrap();
        assert_eq!(p.verify(&other).err(), Some(VerifyError));
    }
}
