#!/usr/bin/env bash
# WatchToken under load, bounded, loopback only (BENCHMARKS.md "WatchToken"):
#
#  1. memory: the server's RSS idle, then with WATCHES idle watches (24 h
#     tokens: no renewal during the run) over CONNS HTTP/2 connections;
#     reported per watch above the idle baseline;
#  2. unary throughput with those watches open (server A) vs the same
#     binary without watches (server B), A/B in the same rounds
#     (loadgen --compare; medians over RUNS); and the server's CPU time per
#     unary request at a fixed rate (RATE req/s, open loop), A and B
#     alternating: less sensitive to other load on the machine than req/s;
#  3. CPU per renewal: RENEW_WATCHES watches of 60 s tokens (renewed every
#     24-30 s) on a fresh server; its CPU time over WINDOW seconds divided
#     by the tokens delivered in them, minus its idle CPU over the same time.
#
#   scripts/watch-load.sh
#   WATCHES=2000 RUNS=3 WINDOW=30 scripts/watch-load.sh      # shorter
#   ONLY_MEMORY=1 scripts/watch-load.sh                      # step 1 only
#
# Servers are pinned to SERVER_CPU, the clients to CLIENT_CPU, at nice -10
# when allowed. Uses the public SAMPLE credentials (not a real project).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-28380}
WATCHES=${WATCHES:-10000}
CONNS=${CONNS:-40}
RUNS=${RUNS:-5}
DURATION=${DURATION:-10}
RATE=${RATE:-5000}
RENEW_WATCHES=${RENEW_WATCHES:-2000}
WINDOW=${WINDOW:-60}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BIN=${BIN:-target/release/token-authority}
LOADGEN=${LOADGEN:-target/release/loadgen}
WATCHERS=${WATCHERS_BIN:-target/release/watchers}
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet -p token-authority -p token-authority-loadgen
export SHENGWANG_APP_ID=970CA35de60c44645bbae8a215061b33
export SHENGWANG_APP_CERTIFICATE=5CFd2fd1755d40ecb72977518be15d3b
DIR=$(mktemp -d)
cat >"$DIR/watch.toml" <<TOML
mode = "open"
[limits]
max_concurrent_streams = 512          # 10000 watches over 40 connections: 250 streams each
max_watches_per_caller = 20000        # open mode: every watch from 127.0.0.1 counts as one client
max_connections_per_client = 128
TOML
NICE=(nice -n -10)
"${NICE[@]}" true 2>/dev/null || NICE=()
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && echo "logs kept in $DIR" || rm -rf "$DIR"
}
trap cleanup EXIT
LAST=
serve() { # port; sets LAST to its pid
  "${NICE[@]}" taskset -c "$SERVER_CPU" "$BIN" serve --listen "127.0.0.1:$1" --config "$DIR/watch.toml" \
    >"$DIR/server-$1.log" 2>&1 &
  LAST=$!
  PIDS+=("$LAST")
  for _ in $(seq 100); do
    "$BIN" healthcheck --addr "127.0.0.1:$1" >/dev/null 2>&1 && break
    sleep 0.1
  done
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
deliveries() {
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^token_authority_watch_deliveries_total / {print $2}'
}
watchers() { # port watches expire; sets LAST to its pid once all are open
  "${NICE[@]}" taskset -c "$CLIENT_CPU" "$WATCHERS" --addr "127.0.0.1:$1" --watches "$2" \
    --connections "$CONNS" --expire "$3" --report 1 >"$DIR/watchers-$1.log" 2>&1 &
  LAST=$!
  PIDS+=("$LAST")
  for _ in $(seq 600); do
    grep -q "^open=$2 " "$DIR/watchers-$1.log" 2>/dev/null && break
    kill -0 "$LAST" 2>/dev/null || { cat "$DIR/watchers-$1.log" >&2; exit 1; }
    sleep 0.5
  done
  grep -q "^open=$2 " "$DIR/watchers-$1.log" || { echo "watchers did not open $2 streams" >&2; exit 1; }
}
echo "machine: $(nproc) CPUs; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
serve "$PORT"; A=$LAST
serve $((PORT + 1)); B=$LAST
# Warm both (runtime threads, allocator) before the baseline.
"${NICE[@]}" taskset -c "$CLIENT_CPU" "$LOADGEN" --addr "127.0.0.1:$PORT" --compare "127.0.0.1:$((PORT + 1))" \
  --scenario grpc --runs 1 --duration 2 --warmup 1 >/dev/null
sleep 1
A0=$(rss_kb "$A")
echo "== 1. memory: $WATCHES idle watches over $CONNS connections"
echo "server A RSS idle (after warm-up): ${A0} kB"
watchers "$PORT" "$WATCHES" 86400; W=$LAST
sleep 3
A1=$(rss_kb "$A")
echo "server A RSS with $WATCHES watches: ${A1} kB"
echo "per watch above idle: $(( (A1 - A0) * 1024 / WATCHES )) bytes"
[ -z "${ONLY_MEMORY:-}" ] || exit 0

echo "== 2. unary throughput: A ($WATCHES watches open) vs B (none), same rounds"
"${NICE[@]}" taskset -c "$CLIENT_CPU" "$LOADGEN" --addr "127.0.0.1:$PORT" --compare "127.0.0.1:$((PORT + 1))" \
  --scenario grpc,get --runs "$RUNS" --duration "$DURATION" --warmup 2 --connections 32
echo "== 2b. server CPU per unary request at a fixed rate (open loop, $RATE req/s, ${DURATION} s), A and B alternating"
HZ=$(getconf CLK_TCK)
for r in $(seq "$RUNS"); do
  for s in "$A:$PORT" "$B:$((PORT + 1))"; do
    pid=${s%%:*}; port=${s##*:}
    t0=$(cpu_ticks "$pid")
    "${NICE[@]}" taskset -c "$CLIENT_CPU" "$LOADGEN" --addr "127.0.0.1:$port" --scenario grpc \
      --rate "$RATE" --runs 1 --duration "$DURATION" --warmup 0 --connections 32 --json >"$DIR/rate.json"
    t1=$(cpu_ticks "$pid")
    awk -v r="$r" -v p="$port" -v a="$t0" -v b="$t1" -v hz="$HZ" -v n=$((RATE * DURATION)) \
      'BEGIN {printf "round %s server %s: %.1f us CPU per request\n", r, p, (b - a) / hz * 1e6 / n}'
  done
done
echo "watchers still open: $(tail -n1 "$DIR/watchers-$PORT.log")"
echo "server A RSS after the load: $(rss_kb "$A") kB; B: $(rss_kb "$B") kB"
kill "$W" "$A" "$B" 2>/dev/null || true

echo "== 3. CPU per renewal: $RENEW_WATCHES watches of 60 s tokens on a fresh server"
serve $((PORT + 2)); C=$LAST
HZ=$(getconf CLK_TCK)
c0=$(cpu_ticks "$C")
sleep 10
idle_per_s=$(awk -v a="$c0" -v b="$(cpu_ticks "$C")" 'BEGIN {print (b - a) / 10}')
watchers $((PORT + 2)) "$RENEW_WATCHES" 60; W2=$LAST
# Past the first wave of renewals (24-30 s after opening).
sleep 35
c1=$(cpu_ticks "$C"); d1=$(deliveries $((PORT + 2)))
sleep "$WINDOW"
c2=$(cpu_ticks "$C"); d2=$(deliveries $((PORT + 2)))
echo "renewals in ${WINDOW} s: $((d2 - d1)); server CPU: $(awk -v a="$c1" -v b="$c2" -v hz="$HZ" 'BEGIN {printf "%.2f s", (b - a) / hz}') (idle: ${idle_per_s} ticks/s)"
awk -v a="$c1" -v b="$c2" -v hz="$HZ" -v n=$((d2 - d1)) -v idle="$idle_per_s" -v w="$WINDOW" \
  'BEGIN {printf "CPU per renewal: %.1f us (idle CPU subtracted)\n", ((b - a) - idle * w) / hz * 1e6 / n}'
echo "server RSS with $RENEW_WATCHES renewing watches: $(rss_kb "$C") kB"
echo "watchers: $(tail -n1 "$DIR/watchers-$((PORT + 2)).log")"
kill "$W2" 2>/dev/null || true
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
