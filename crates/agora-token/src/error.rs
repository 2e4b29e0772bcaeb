//! Error types of the token library: one enum per boundary.

use thiserror::Error;

/// Why a token could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A string does not fit its `u16` length prefix.
    #[error("{field} is {len} bytes; the token format allows at most 65535")]
    TooLong {
        /// The packed field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A list does not fit its `u16` count prefix.
    #[error("{field} has {count} entries; the token format allows at most 65535")]
    TooMany {
        /// The packed list.
        field: &'static str,
        /// Its number of entries.
        count: usize,
    },
    /// A token needs at least one service (the official builders refuse too).
    #[error("a token needs at least one service")]
    NoService,
}

/// Why a string is not an AccessToken2 (or a legacy 006 token).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The version prefix is not `007`.
    #[error("not an AccessToken2: the token must start with \"007\"")]
    NotVersion007,
    /// The version prefix is not `006`.
    #[error("not a legacy AccessToken: the token must start with \"006\"")]
    NotVersion006,
    /// The token string is longer than this library accepts.
    #[error("the token is {len} characters; at most {max} are accepted")]
    TokenTooLong {
        /// Length of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The part after the version is not standard padded base64.
    #[error("the token is not valid base64 (standard alphabet with '=' padding)")]
    Base64,
    /// The decoded bytes are not a valid zlib stream.
    #[error("the token's compressed content is not a valid zlib stream")]
    Zlib,
    /// The decompressed content is larger than this library accepts.
    #[error("the token's content inflates to more than {max} bytes")]
    ContentTooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// The content ends in the middle of a field.
    #[error("the token's content is truncated (while reading {field})")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
}

/// Why a token's signature was not accepted. Deliberately coarse: the
/// reason a forgery failed is of no use to anyone but the forger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the token's signature does not verify with this certificate")]
pub struct VerifyError;

/// Why a string is not a valid app id or app certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// Not 32 characters.
    #[error("must be 32 hexadecimal characters, got {len} characters")]
    Length {
        /// Length of the input in characters (bytes for non-ASCII input).
        len: usize,
    },
    /// 32 characters, but not all hexadecimal digits.
    #[error("must be 32 hexadecimal characters (0-9, a-f, A-F); found another character")]
    NotHex,
}
