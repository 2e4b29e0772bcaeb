# syntax=docker/dockerfile:1
#
# token-authority: multi-stage build.
#   docker build -t token-authority .
#   docker run --rm -p 8080:8080 \
#     -e SHENGWANG_APP_ID=... -e SHENGWANG_APP_CERTIFICATE_FILE=/run/secrets/agora_cert \
#     -v "$PWD/agora_cert:/run/secrets/agora_cert:ro" token-authority
# Credentials come only from the environment or mounted files at run time,
# never from build arguments or image layers.

# ---- build -----------------------------------------------------------------
# The toolchain the project is tested with (MSRV 1.85).
FROM rust:1.95-bookworm AS build
WORKDIR /src

# 1. Dependencies only, cached until Cargo.toml / Cargo.lock change: build
#    the service with placeholder sources. Only the service (`-p`): the
#    load generator (crates/loadgen) is a workspace member, so its manifest
#    is needed to load the workspace, but it is a dev tool, not in the image.
COPY Cargo.toml Cargo.lock ./
COPY crates/agora-token/Cargo.toml crates/agora-token/Cargo.toml
COPY crates/loadgen/Cargo.toml crates/loadgen/Cargo.toml
RUN mkdir -p src crates/agora-token/src crates/agora-token/benches crates/loadgen/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs crates/agora-token/src/lib.rs crates/loadgen/src/lib.rs \
 && echo 'fn main() {}' > crates/agora-token/benches/token.rs \
 && echo 'fn main() {}' > crates/loadgen/src/main.rs \
 && echo 'fn main() {}' > build.rs \
 && cargo build --release --locked -p token-authority \
 && rm -rf src crates/agora-token/src crates/agora-token/benches crates/loadgen/src build.rs

# 2. The service itself, locked as CI builds it.
COPY . .
RUN touch build.rs src/main.rs src/lib.rs crates/agora-token/src/lib.rs \
 && cargo build --release --locked -p token-authority \
 && install -D -m 0755 target/release/token-authority /out/token-authority

# ---- runtime ---------------------------------------------------------------
# glibc + libgcc, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/token-authority /usr/local/bin/token-authority
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/token-authority", "healthcheck", "--addr", "127.0.0.1:8080"]
ENTRYPOINT ["/usr/local/bin/token-authority"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
