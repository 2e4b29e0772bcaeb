#!/usr/bin/env bash
# Builds a release server, starts it on loopback with two callers (the
# valid caller and the attacker's own key), [anonymous] off, an admin port
# and the default [limits], and runs scripts/attack.py against it (bounded:
# ATTACK_SECONDS per attack, default 15 s; nine runs). Prints a table for
# SECURITY.md. Uses the public SAMPLE credentials (not a real project).
#
#   scripts/attack.sh
#   ATTACK_SECONDS=5 scripts/attack.sh --only silent
#   NOFILE=256 scripts/attack.sh --only silent   # the server under a 256-fd limit
#   LIMITS='max_concurrent_streams = 16' scripts/attack.sh   # other [limits] (TOML lines)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18180}
ADMIN_PORT=${ADMIN_PORT:-18181}
BIN=${BIN:-target/release/token-authority}
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet -p token-authority
export SHENGWANG_APP_ID=970CA35de60c44645bbae8a215061b33
export SHENGWANG_APP_CERTIFICATE=5CFd2fd1755d40ecb72977518be15d3b
KEY=ta_attack-valid-caller-key-0123456789abcdef
ATTACKER_KEY=ta_attack-attacker-key-0123456789abcdef
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
DIR=$(mktemp -d)
cat >"$DIR/config.toml" <<TOML
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"

[[callers]]
name = "valid"
api_key_sha256 = "$(sha "$KEY")"
kinds = ["*"]

[[callers]]
name = "attacker"
api_key_sha256 = "$(sha "$ATTACKER_KEY")"
kinds = ["*"]

[limits]
${LIMITS:-}
TOML
# The attacker needs many sockets; the server gets NOFILE (default: the
# shell's limit) and sizes max_connections under it.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(
  [ -z "${NOFILE:-}" ] || ulimit -n "$NOFILE"
  exec "$BIN" serve --config "$DIR/config.toml"
) >"$DIR/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; cp "$DIR/server.log" /tmp/attack-server.log 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do
  "$BIN" healthcheck --addr "127.0.0.1:$ADMIN_PORT" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "machine: $(nproc) CPUs, $(uname -sr); load average: $(cut -d' ' -f1-3 /proc/loadavg); server open-files limit: $(awk '/Max open files/ {print $4}' /proc/$SERVER/limits)"
python3 scripts/attack.py --port "$PORT" --admin-port "$ADMIN_PORT" --pid "$SERVER" \
  --key "$KEY" --attacker-key "$ATTACKER_KEY" "$@"
echo "server log lines: $(wc -l <"$DIR/server.log"); 'accept failed' lines: $(grep -c 'accept failed' "$DIR/server.log" || true)"
grep -m3 -i 'warn\|error' "$DIR/server.log" || true
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null | grep -E '^token_authority_(connections|accept)' || true
