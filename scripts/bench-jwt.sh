#!/usr/bin/env bash
# Service throughput with JWT callers against API-key callers, in the same
# rounds (A/B interleaved by the load generator's --compare): two release
# servers with the same policy, one whose caller is an API key
# (DIR/key.toml), one whose caller is an RS256 JWT verified against a JWKS
# file (DIR/jwt.toml); the load generator sends the API key to the first and
# the JWT to the second. Method and pinning as scripts/bench-local.sh.
#
#   scripts/bench-jwt.sh                          # 5 rounds x 10 s, get/json/grpc
#   RUNS=3 DURATION=5 scripts/bench-jwt.sh --scenario get
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${NO_BUILD:-}" ]; then
  # Two commands: with --example, cargo would build only the example.
  cargo build --release --quiet -p token-authority -p token-authority-loadgen
  cargo build --release --quiet -p token-authority --example jwt_bench_setup
fi
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
mapfile -t CREDS < <(target/release/examples/jwt_bench_setup "$DIR")
export TOKEN_AUTHORITY_API_KEY="${CREDS[0]}"
export TOKEN_AUTHORITY_COMPARE_API_KEY="${CREDS[1]}"
echo "A: API-key caller (--config key.toml); B (compare): JWT caller, RS256 (--config jwt.toml)"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--scenario get,json,grpc)
NO_BUILD=1 SERVE_ARGS="--config $DIR/key.toml" COMPARE_ARGS="--config $DIR/jwt.toml" \
  scripts/bench-local.sh "${args[@]}"
