# syntax=docker/dockerfile:1
#
# token-authority: multi-stage build.
#   docker build -t token-authority .      (BuildKit: the default since Docker 23)
#   docker run --rm -p 8080:8080 \
#     -e SHENGWANG_APP_ID=... -e SHENGWANG_APP_CERTIFICATE_FILE=/run/secrets/agora_cert \
#     -v "$PWD/agora_cert:/run/secrets/agora_cert:ro" token-authority
# Credentials come only from the environment or mounted files at run time,
# never from build arguments or image layers.

# ---- build -----------------------------------------------------------------
# The toolchain the project is tested with (MSRV 1.85).
FROM rust:1.95-bookworm AS build
WORKDIR /src

# The whole workspace (every crate under crates/, the service, build.rs,
# proto/) is copied as is: no per-target placeholder files to keep in step
# with the manifests. Only the service is built (`-p`): the load generator,
# crates/loadgen, is a dev tool, not part of the image. Dependencies are cached by BuildKit cache mounts
# instead of an image layer: the registry (downloaded crates) and the target
# directory persist between builds, so a source change rebuilds only the
# workspace's own crates. The cache mounts are not part of the image, hence
# the binary is copied out in the same step.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p token-authority \
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
