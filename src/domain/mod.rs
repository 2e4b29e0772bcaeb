//! The domain: validated requests become tokens.
//!
//! [`Issuer`] applies the defaults and the input rules of [`rules`] and
//! calls the official builders of `agora-token`; [`Issuer::inspect`] decodes
//! any token. Nothing here knows of gRPC, HTTP, configuration or callers.

mod clock;
mod draft;
mod inspect;
mod issuer;
mod requests;
pub mod rules;

pub use clock::*;
pub use draft::*;
pub use inspect::*;
pub use issuer::*;
pub use requests::*;
