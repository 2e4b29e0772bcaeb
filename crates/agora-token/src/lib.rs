//! # agora-token
//!
//! Agora / Shengwang **AccessToken2** ("007") tokens: build, parse and
//! verify, byte-exact with the official implementations.
//!
//! * [`AccessToken`] is the official token object: any services, any
//!   privileges, explicit issue time and salt.
//! * [`builders`] holds every official builder (RTC, RTC+RTM, RTM, RTM2,
//!   Chat, FPA, APaaS/Education); each returns a [`Grant`] to sign.
//! * [`UnverifiedToken::parse`] reads untrusted strings without panicking and
//!   with capped memory; [`UnverifiedToken::verify`] checks the signature in
//!   constant time and returns a [`VerifiedToken`] proof.
//! * [`v1`] recognises the legacy "006" token (never issued).
//!
//! Token strings are byte-identical to the python3 and C++ builders (C zlib,
//! level 6): zlib is built from source, so the distribution's zlib does not
//! matter.
//!
//! ```
//! use agora_token::{AppCertificate, AppId, UnverifiedToken, builders};
//!
//! let app_id = AppId::new("970CA35de60c44645bbae8a215061b33")?;
//! let cert = AppCertificate::new("5CFd2fd1755d40ecb72977518be15d3b")?;
//! let grant = builders::rtc_with_uid("lobby", 42, builders::Role::Publisher, 3600, 3600);
//! let token = grant.build(&app_id, &cert, 1_700_000_000, 12_345)?;
//! let parsed = UnverifiedToken::parse(&token)?;
//! assert!(parsed.verify(&cert).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! This crate does no I/O and has no async or service dependency.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod builders;
mod compress;
mod credentials;
mod error;
mod pack;
pub mod service;
mod token;
pub mod v1;

pub use builders::{Grant, ParseRoleError, Role, RtcPrivilegeExpires};
pub use credentials::{AppCertificate, AppId, is_hex32};
pub use error::{BuildError, CredentialError, ParseError, VerifyError};
pub use service::{Payload, Privileges, Rtm2Grant, Rtm2Permissions, Service};
pub use token::{
    AccessToken, MAX_CONTENT_LEN, MAX_TOKEN_LEN, UnverifiedToken, VERSION, VerifiedToken,
    signing_key,
};
