//! Compiles `proto/` without a system `protoc`: `protox` parses the files
//! into a descriptor set, `tonic-prost-build` generates the messages and
//! the service, and `pbjson-build` generates their proto3 JSON mapping.
//! The descriptor set is also written to `OUT_DIR` for gRPC reflection.

use std::path::PathBuf;

use prost::Message as _;

const PROTO: &str = "proto/agora/token/v1/token_service.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile([PROTO], ["proto"])?;
    let descriptor = fds.encode_to_vec();
    std::fs::write(out.join("token_service_descriptor.bin"), &descriptor)?;

    tonic_prost_build::configure()
        .build_server(true)
        // The client is used by the integration tests (tests/service); it
        // is generated without the `connect` helper so the service build
        // does not need tonic's channel feature. (The load generator,
        // crates/loadgen, generates its own client.)
        .build_client(true)
        .build_transport(false)
        // prost's codec with a small encode buffer (src/transport/codec.rs).
        .codec_path("crate::transport::codec::TokenCodec")
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor)?
        // proto3 JSON: answer with every field, defaults included.
        .emit_fields()
        .build(&[".agora.token.v1"])?;
    Ok(())
}
