//! Inspection of any token: 007 (and legacy 006) decoded, its signature
//! checked against the configured certificates, reported field by field.

use super::*;
use agora_token::service::{privilege_name, service_name};
use agora_token::{AppCertificate, ParseError, Payload, UnverifiedToken, v1::V1Token};

/// Signature check result of an inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Verifies with a configured certificate of the token's app.
    Valid,
    /// Does not verify with any configured certificate of the token's app.
    Invalid,
    /// Not checked: no certificate for the token's app (or, for 006, no
    /// channel and uid given); [`Inspection::not_checked`] says which.
    NotChecked,
}

/// A privilege as inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectedPrivilege {
    /// Privilege id.
    pub id: u16,
    /// Its name, if known.
    pub name: Option<&'static str>,
    /// 007: seconds after the issue time; 006: absolute unix time (0 = never).
    pub expire: u32,
    /// Absolute expiry, unix seconds (007: issue time + value; 006: the value).
    pub expires_at: u64,
}

/// A service as inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectedService {
    /// Service type number.
    pub service_type: u16,
    /// Its name (`UNKNOWN` for others).
    pub name: &'static str,
    /// Privileges in id order.
    pub privileges: Vec<InspectedPrivilege>,
    /// The payload.
    pub payload: Payload,
}

/// Token format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVersion {
    /// AccessToken2.
    V007,
    /// Legacy AccessToken (v1).
    V006,
}

/// What [`Issuer::inspect`] found in a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Format version.
    pub version: TokenVersion,
    /// Embedded app id (lossy text).
    pub app_id: String,
    /// Issue time (007; 0 for 006, which has none).
    pub issued_at: u32,
    /// Token expiry, unix seconds.
    pub expires_at: u64,
    /// Token lifetime in seconds (007), 0 for 006.
    pub expire: u32,
    /// Salt.
    pub salt: u32,
    /// Services (006: one pseudo-service holding its privileges, type 0).
    pub services: Vec<InspectedService>,
    /// Whether the token has expired now.
    pub expired: bool,
    /// Signature check.
    pub signature: SignatureStatus,
    /// 007: the service count field.
    pub service_count: u16,
    /// 007: type at which reading stopped.
    pub stopped_at_unknown_service_type: Option<u16>,
    /// 007: signed bytes after the last service read.
    pub trailing_bytes: usize,
    /// 007: unsigned bytes after the zlib stream.
    pub bytes_after_zlib_stream: usize,
    /// 006: CRC-32 of the channel name and uid the token was made for.
    pub v1_crc: Option<(u32, u32)>,
    /// Human-readable remarks (e.g. "this is a v1 token").
    pub notes: Vec<String>,
    /// Why the signature was not checked, when it was not.
    pub not_checked: Option<&'static str>,
}

/// [`Inspection::not_checked`]: no certificate of the token's app is configured.
pub const NO_CERTIFICATE: &str = "no certificate for this app in the environment";
/// [`Inspection::not_checked`]: a 006 token's signature covers the channel
/// and uid it was made for, which the token does not contain.
pub const NEEDS_CHANNEL_AND_UID: &str = "a 006 token is verified with the channel and uid it was made for: give --channel and --uid or --account";

/// Why a token could not be inspected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token: {0}")]
pub struct InspectError(pub ParseError);

impl Issuer {
    pub fn inspect(
        &self,
        token: &str,
        v1_identity: Option<(&str, &str)>,
    ) -> Result<Inspection, InspectError> {
        let now = u64::from(self.clock.now());
        let token = token.trim();
        if token.starts_with(agora_token::v1::VERSION) {
            let t = V1Token::parse(token).map_err(InspectError)?;
            return Ok(self.inspect_v1(&t, v1_identity, now));
        }
        let t = UnverifiedToken::parse(token).map_err(InspectError)?;
        let certs = self.certificates_for(t.app_id());
        let mut notes = Vec::new();
        let mut not_checked = None;
        // An app id is 32 hexadecimal characters: a token with any other
        // cannot have been issued for an app, whatever the certificates.
        let signature = if !t.app_id_is_valid() {
            notes.push(
                "the embedded app id is not 32 hexadecimal characters: no app can have issued this token"
                    .to_owned(),
            );
            SignatureStatus::Invalid
        } else if certs.is_empty() {
            not_checked = Some(NO_CERTIFICATE);
            SignatureStatus::NotChecked
        } else if certs.iter().any(|c| t.verify(c).is_ok()) {
            SignatureStatus::Valid
        } else {
            SignatureStatus::Invalid
        };
        if let Some(ty) = t.stopped_at_unknown_service_type() {
            notes.push(format!(
                "reading stopped at unknown service type {ty}; later services cannot be read"
            ));
        }
        if t.trailing_bytes() > 0 && t.stopped_at_unknown_service_type().is_none() {
            notes.push(format!(
                "{} signed bytes follow the last service (ignored)",
                t.trailing_bytes()
            ));
        }
        if t.bytes_after_zlib_stream() > 0 {
            notes.push(format!(
                "{} unsigned bytes follow the compressed content (ignored)",
                t.bytes_after_zlib_stream()
            ));
        }
        let services = t
            .services()
            .iter()
            .map(|s| {
                let ty = s.service_type();
                InspectedService {
                    service_type: ty,
                    name: service_name(ty),
                    privileges: s
                        .privileges
                        .iter()
                        .map(|(id, v)| InspectedPrivilege {
                            id,
                            name: privilege_name(ty, id),
                            expire: v,
                            expires_at: u64::from(t.issue_ts()) + u64::from(v),
                        })
                        .collect(),
                    payload: s.payload.clone(),
                }
            })
            .collect();
        Ok(Inspection {
            version: TokenVersion::V007,
            app_id: t.app_id_lossy().into_owned(),
            issued_at: t.issue_ts(),
            expires_at: t.expires_at(),
            expire: t.expire(),
            salt: t.salt(),
            services,
            expired: t.is_expired_at(now),
            signature,
            service_count: t.service_count(),
            stopped_at_unknown_service_type: t.stopped_at_unknown_service_type(),
            trailing_bytes: t.trailing_bytes(),
            bytes_after_zlib_stream: t.bytes_after_zlib_stream(),
            v1_crc: None,
            notes,
            not_checked,
        })
    }

    fn certificates_for(&self, app_id: &[u8]) -> Vec<&AppCertificate> {
        self.apps
            .iter()
            .filter(|a| a.app_id.as_str().as_bytes() == app_id)
            .flat_map(|a| std::iter::once(&a.certificate).chain(a.secondary.as_ref()))
            .collect()
    }

    fn inspect_v1(&self, t: &V1Token, identity: Option<(&str, &str)>, now: u64) -> Inspection {
        let certs = self.certificates_for(t.app_id.as_bytes());
        let mut notes = vec![
            "this is a legacy v1 (006) AccessToken; current SDKs expect AccessToken2 (007) tokens"
                .to_owned(),
        ];
        let mut not_checked = None;
        let signature = match identity {
            _ if certs.is_empty() => {
                not_checked = Some(NO_CERTIFICATE);
                SignatureStatus::NotChecked
            }
            None => {
                notes.push(format!("not verified: {NEEDS_CHANNEL_AND_UID}"));
                not_checked = Some(NEEDS_CHANNEL_AND_UID);
                SignatureStatus::NotChecked
            }
            Some((channel, uid)) => {
                if !t.matches(channel.as_bytes(), uid.as_bytes()) {
                    notes.push(
                        "the channel name or uid does not match the token's CRC-32 values"
                            .to_owned(),
                    );
                }
                if certs
                    .iter()
                    .any(|c| t.verify(c, channel.as_bytes(), uid.as_bytes()).is_ok())
                {
                    SignatureStatus::Valid
                } else {
                    SignatureStatus::Invalid
                }
            }
        };
        let privileges = t
            .privileges
            .iter()
            .map(|(id, v)| InspectedPrivilege {
                id,
                name: agora_token::v1::privilege_name(id),
                expire: v,
                expires_at: u64::from(v),
            })
            .collect();
        let expires_at = u64::from(t.ts);
        Inspection {
            version: TokenVersion::V006,
            app_id: t.app_id.clone(),
            issued_at: 0,
            expires_at,
            expire: 0,
            salt: t.salt,
            services: vec![InspectedService {
                service_type: 0,
                name: "V1",
                privileges,
                payload: Payload::Other(0),
            }],
            expired: now >= expires_at,
            signature,
            service_count: 0,
            stopped_at_unknown_service_type: None,
            trailing_bytes: 0,
            bytes_after_zlib_stream: 0,
            v1_crc: Some((t.crc_channel_name, t.crc_uid)),
            notes,
            not_checked,
        }
    }
}
