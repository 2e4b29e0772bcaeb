//! Generated code for `proto/agora/token/v1/token_service.proto`: the
//! prost messages, the tonic server and client, and the pbjson proto3 JSON
//! mapping (`serde` impls). Nothing here is written by hand.

#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used
)]

include!(concat!(env!("OUT_DIR"), "/agora.token.v1.rs"));
include!(concat!(env!("OUT_DIR"), "/agora.token.v1.serde.rs"));

/// The encoded `FileDescriptorSet` of the API, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/token_service_descriptor.bin"));
