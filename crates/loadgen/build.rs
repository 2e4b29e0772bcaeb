//! Compiles the service's API (`../../proto`) into prost messages and a
//! tonic client, without a system `protoc` (`protox` parses the files), as
//! the service's own build script does. Client only: the load generator
//! serves nothing, and needs no proto3 JSON mapping (its JSON bodies are
//! written by hand).

const PROTO: &str = "../../proto/agora/token/v1/token_service.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto");
    let fds = protox::compile([PROTO], ["../../proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        // Channels are built with `Endpoint` (TCP_NODELAY, one per
        // `--h2-connections`); no generated `connect` helper.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
