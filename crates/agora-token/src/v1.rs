//! The legacy "006" AccessToken (v1), for recognition and inspection only
//! (spec appendix A). Nothing in this library issues one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::credentials::{AppCertificate, is_hex32};
use crate::error::{ParseError, VerifyError};
use crate::pack::Reader;
use crate::service::Privileges;
use crate::token::MAX_TOKEN_LEN;

/// The version prefix of the legacy token.
pub const VERSION: &str = "006";

/// v1 privilege ids.
pub mod privilege {
    /// Join channel.
    pub const JOIN_CHANNEL: u16 = 1;
    /// Publish audio.
    pub const PUBLISH_AUDIO_STREAM: u16 = 2;
    /// Publish video.
    pub const PUBLISH_VIDEO_STREAM: u16 = 3;
    /// Publish data stream.
    pub const PUBLISH_DATA_STREAM: u16 = 4;
    /// RTM login.
    pub const RTM_LOGIN: u16 = 1000;
}

/// The name of a v1 privilege id.
pub fn privilege_name(id: u16) -> Option<&'static str> {
    Some(match id {
        1 => "joinChannel",
        2 => "publishAudioStream",
        3 => "publishVideoStream",
        4 => "publishDataStream",
        1000 => "rtmLogin",
        _ => return None,
    })
}

/// A parsed, unverified v1 token. Privilege values and `ts` are absolute
/// unix times (0 = never expires).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Token {
    /// The app id (32 characters after the prefix).
    pub app_id: String,
    /// The signature field.
    pub signature: Vec<u8>,
    /// CRC-32 of the channel name the token was built for.
    pub crc_channel_name: u32,
    /// CRC-32 of the uid string the token was built for.
    pub crc_uid: u32,
    /// Salt.
    pub salt: u32,
    /// The token's own expiry, unix seconds.
    pub ts: u32,
    /// Privileges with absolute expiry times.
    pub privileges: Privileges,
    message: Vec<u8>,
}

impl V1Token {
    /// Parses a 006 token. Never panics.
    pub fn parse(token: &str) -> Result<Self, ParseError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(ParseError::TokenTooLong {
                len: token.len(),
                max: MAX_TOKEN_LEN,
            });
        }
        let rest = token
            .strip_prefix(VERSION)
            .ok_or(ParseError::NotVersion006)?;
        let app_id = rest
            .get(..32)
            .ok_or(ParseError::Truncated { field: "app_id" })?;
        let body = rest.get(32..).unwrap_or_default();
        let content = STANDARD.decode(body).map_err(|_| ParseError::Base64)?;
        let mut r = Reader::new(&content);
        let signature = r.bytes("signature")?.to_vec();
        let crc_channel_name = r.u32("crc_channel_name")?;
        let crc_uid = r.u32("crc_uid")?;
        let message = r.bytes("message")?.to_vec();
        let mut m = Reader::new(&message);
        let salt = m.u32("salt")?;
        let ts = m.u32("ts")?;
        let privileges = Privileges::unpack(&mut m)?;
        Ok(Self {
            app_id: app_id.to_owned(),
            signature,
            crc_channel_name,
            crc_uid,
            salt,
            ts,
            privileges,
            message,
        })
    }

    /// Whether `channel_name` and `uid` (the uid string: `""` for uid 0)
    /// match the CRC-32 values in the token.
    pub fn matches(&self, channel_name: &[u8], uid: &[u8]) -> bool {
        crc32fast::hash(channel_name) == self.crc_channel_name
            && crc32fast::hash(uid) == self.crc_uid
    }

    /// Verifies the token for `channel_name` and `uid`: both CRCs, then the
    /// HMAC, compared in constant time.
    pub fn verify(
        &self,
        certificate: &AppCertificate,
        channel_name: &[u8],
        uid: &[u8],
    ) -> Result<(), VerifyError> {
        if !is_hex32(self.app_id.as_bytes()) || !self.matches(channel_name, uid) {
            return Err(VerifyError);
        }
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(certificate.expose_secret())
            .map_err(|_| VerifyError)?;
        mac.update(self.app_id.as_bytes());
        mac.update(channel_name);
        mac.update(uid);
        mac.update(&self.message);
        mac.verify_slice(&self.signature).map_err(|_| VerifyError)
    }
}
