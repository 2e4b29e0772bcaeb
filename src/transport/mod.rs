//! Thin adapters from the wire to [`crate::api`]: gRPC (tonic) and HTTP
//! (the compatible GET endpoint, JSON for every RPC, operations routes).

pub mod codec;
pub mod grpc;
pub mod http;
