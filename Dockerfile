# syntax=docker/dockerfile:1
#
# token-authority: multi-stage build.
#   docker build -t token-authority .      (BuildKit: the default since Docker 23)
#   docker run --rm -p 8080:8080 \
#     -e SHENGWANG_APP_ID=... -e SHENGWANG_APP_CERTIFICATE_FILE=/run/secrets/agora_cert \
#     -v "$PWD/agora_cert:/run/secrets/agora_cert:ro" token-authority
# Credentials come only from the environment or mounted files at run time,
# never from build arguments or image layers.
#
# Dependencies are cached with cargo-chef: `cargo chef prepare` derives a
# recipe from the manifests themselves (every workspace member, bench,
# example and build script), so the cached layer cannot drift from them;
# it changes only when a manifest or Cargo.lock does. .ci/run runs the same
# three cargo commands on a clean copy without a container engine
# (scripts/docker-build-check.sh), and hadolint over this file.

# ---- chef: the toolchain the project is tested with (MSRV 1.85) ------------
FROM rust:1.95-bookworm AS chef
RUN cargo install --locked cargo-chef --version 0.1.78
WORKDIR /src

# ---- plan: the recipe (manifests and lock file only) -----------------------
FROM chef AS plan
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---- build -----------------------------------------------------------------
# Only the service is built (`-p`): the load generator, crates/loadgen, is a
# dev tool, not part of the image.
FROM chef AS build
COPY --from=plan /src/recipe.json recipe.json
RUN cargo chef cook --release --locked -p token-authority --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p token-authority \
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
