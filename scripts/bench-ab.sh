#!/usr/bin/env bash
# Interleaved A/B/C... of several server builds, one at a time, the way the
# bisections in BENCHMARKS.md were measured: each round starts every build
# in turn on CPU 0, runs the load generator on CPU 1 against it, stops it.
# Prints per-round req/s and, per build, the median and the median of its
# per-round ratios to the first build.
#
#   ROUNDS=5 SCEN=grpc scripts/bench-ab.sh base=/tmp/old-bin new=target/release/token-authority:cfg.toml
#
# A build is NAME=BINARY[:CONFIG_FILE]. PRIO (default "chrt -f 50") runs the
# server and the load generator at real-time priority; DUR (s) per run.
# Loopback only; uses the public SAMPLE credentials (not a real project).
set -euo pipefail
cd "$(dirname "$0")/.."
LOADGEN=${LOADGEN:-target/release/loadgen}
PORT=${PORT:-25500}
export SHENGWANG_APP_ID=970CA35de60c44645bbae8a215061b33
export SHENGWANG_APP_CERTIFICATE=5CFd2fd1755d40ecb72977518be15d3b
# shellcheck disable=SC2206 # a command and its flags
PRIO=(${PRIO:-chrt -f 50})
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for r in $(seq "${ROUNDS:-3}"); do
  for spec in "$@"; do
    name=${spec%%=*}
    rest=${spec#*=}
    bin=${rest%%:*}
    cfg=()
    [ "$rest" != "$bin" ] && cfg=(--config "${rest#*:}")
    PORT=$((PORT + 1))
    "${PRIO[@]}" taskset -c 0 "$bin" serve --listen "127.0.0.1:$PORT" "${cfg[@]}" >/dev/null 2>&1 &
    server=$!
    for _ in $(seq 50); do
      "$bin" healthcheck --addr "127.0.0.1:$PORT" >/dev/null 2>&1 && break
      sleep 0.1
    done
    v=$("${PRIO[@]}" taskset -c 1 "$LOADGEN" --addr "127.0.0.1:$PORT" --runs 1 --duration "${DUR:-3}" \
      --warmup 1 --connections 32 --scenario "${SCEN:-grpc}" 2>&1 | awk '/^round/ {print $5}')
    kill "$server"
    wait "$server" 2>/dev/null || true
    echo "$r $name ${v:-0}" | tee -a "$OUT"
  done
done
python3 - "$OUT" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    r, n, v = line.split()
    d[n][r] = float(v)
names = list(d)
base = names[0]
for n in names:
    rs = [d[n][r] / d[base][r] for r in d[n] if d[base].get(r)]
    print(f"{n:12s} median req/s {statistics.median(d[n].values()):9.0f}  "
          f"ratio to {base} {statistics.median(rs):.3f} ({min(rs):.3f}-{max(rs):.3f})")
PY
