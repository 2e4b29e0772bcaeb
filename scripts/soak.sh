#!/usr/bin/env bash
# Memory soak (not in CI): a release server pinned to CPU 0 under a fixed
# open-loop rate for SOAK_SECS (default 600), half GET /api/agora/token over
# HTTP/1.1 and half gRPC BuildRtcToken, load generators on CPU 1; the
# server's VmRSS / VmHWM is sampled every 30 s. Loopback only.
#
#   scripts/soak.sh                # 5000 req/s in total for 10 minutes
#   RATE=2000 SOAK_SECS=120 scripts/soak.sh
#
# The point is memory. The two generators share CPU 1 and wait for each
# send time by yielding, so their latency figures include taking turns on
# that CPU; measure latency with one generator (BENCHMARKS.md, open loop).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18090}
RATE=${RATE:-5000}
SOAK_SECS=${SOAK_SECS:-600}
BIN=${BIN:-target/release/token-authority}
LOADGEN=${LOADGEN:-target/release/loadgen}
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet -p token-authority -p token-authority-loadgen
export SHENGWANG_APP_ID=970CA35de60c44645bbae8a215061b33
export SHENGWANG_APP_CERTIFICATE=5CFd2fd1755d40ecb72977518be15d3b
LOG=$(mktemp)
taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 50); do
  "$BIN" healthcheck --addr "127.0.0.1:$PORT" >/dev/null 2>&1 && break
  sleep 0.1
done
rss() { awk '/VmRSS|VmHWM/ {printf "%s %s kB  ", $1, $2}' "/proc/$SERVER/status"; }
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "t=0s idle: $(rss)"
HALF=$(awk "BEGIN {print $RATE / 2}")
LOADERS=()
for s in get grpc; do
  taskset -c 1 "$LOADGEN" --addr "127.0.0.1:$PORT" --scenario "$s" --rate "$HALF" \
    --duration "$SOAK_SECS" --warmup 0 --connections 32 >"/tmp/soak-$s.txt" 2>&1 &
  LOADERS+=($!)
done
start=$(date +%s)
while [ $(( $(date +%s) - start )) -lt "$SOAK_SECS" ]; do
  sleep 30
  echo "t=$(( $(date +%s) - start ))s $(rss) load $(cut -d' ' -f1 /proc/loadavg)"
done
wait "${LOADERS[@]}"
cat /tmp/soak-get.txt /tmp/soak-grpc.txt | grep -v '^round'
sleep 5
echo "after the load: $(rss)"
