//! Thin adapters from the wire to [`crate::api`]: gRPC (tonic) and HTTP
//! (the compatible GET endpoint, JSON for every RPC, operations routes).

pub mod codec;
pub mod grpc;
pub mod http;

/// Responses smaller than this are sent uncompressed even when the client
/// accepts gzip (Connect, gRPC, gRPC-Web): a token (~200-400 bytes of
/// base64 of an already deflated payload) gains little, and a gzip stream
/// per response costs more than the whole call.
pub const COMPRESS_MIN_BYTES: usize = 512;
