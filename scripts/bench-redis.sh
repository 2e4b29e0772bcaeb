#!/usr/bin/env bash
# Benchmarks of the shared rate-limit store (issue 20), on loopback, with
# scripts/bench-local.sh and the load generator, A/B in the same rounds:
#
#   1. store:    token requests of one caller (a limit it never reaches) with
#                `rate_limit_store` against the same config without it
#                (the in-process limiter). Every request is one Redis call.
#   2. attacker: one caller whose limit is exhausted (burst 1, one token per
#                1000 s) hammering the service, with the store and the local
#                over-limit cache against the store without the cache; the
#                refusals per second are the loadgen's `errors`, and the
#                Redis calls are read from the servers' metrics.
#
#   scripts/bench-redis.sh               # 5 rounds x 10 s, 32 connections, both parts
#   RUNS=3 DURATION=5 PART=store scripts/bench-redis.sh
#   PART=latency RATE=2000 scripts/bench-redis.sh   # open loop: p99 below saturation
#   PART=cluster scripts/bench-redis.sh  # 4. a 3-master Redis Cluster (A) vs one redis-server (B)
#
# Ports: the servers on PORT and PORT+1 of each part (18080.., see below), Redis on REDIS_PORT
# and up (+10..+12 for the cluster); set both when other sessions share the machine.
#
# CPUs: the server (and the compared server) on SERVER_CPU (0), the load
# generator on CLIENT_CPU (1), redis-server on REDIS_CPU (default 0, beside
# the server: the store's CPU counts against the service, as on a small
# node). Needs redis-server (apt-get install redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
DURATION=${DURATION:-10}
PART=${PART:-store,latency,attacker}
REDIS_PORT=${REDIS_PORT:-16379}
REDIS_CPU=${REDIS_CPU:-0}
KEY=ta_bench-redis-key-0123456789abcdef
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet -p token-authority -p token-authority-loadgen
HASH=$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)
DIR=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait "${PIDS[@]}" 2>/dev/null || true; rm -rf "$DIR"' EXIT
redis() { # redis PORT [ARGS...]: a fresh redis-server on REDIS_CPU
  local port=$1
  shift
  taskset -c "$REDIS_CPU" redis-server --port "$port" --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$DIR" "$@" >"$DIR/redis-$port.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "redis-server did not start on $port" >&2
  exit 1
}
evalsha() { # evalsha PORT: script calls Redis ran
  redis-cli -p "$1" info commandstats | awk -F'[=,:]' '/^cmdstat_evalsha/ {print $3}'
}
echo "redis: $(redis-server --version | cut -d' ' -f3) on CPU $REDIS_CPU"

# config NAME RATE BURST [LIMITS...]
config() {
  local name=$1 rate=$2 burst=$3
  shift 3
  {
    printf '[[callers]]\nname = "bench"\napi_key_sha256 = "%s"\nkinds = ["*"]\n' "$HASH"
    printf 'rate_per_second = %s\nburst = %s\n[limits]\n' "$rate" "$burst"
    printf '%s\n' "$@"
  } >"$DIR/$name.toml"
}
store() { echo "rate_limit_store = \"redis://127.0.0.1:$1/0\""; }

if [[ ",$PART," == *",store,"* ]]; then
  redis "$REDIS_PORT"
  config store 1000000000 4000000000 "$(store "$REDIS_PORT")"
  config local 1000000000 4000000000
  echo "== 1. token requests: store (A, :18080) vs in-process (B, :18081)"
  NO_BUILD=1 PORT=18080 RUNS=$RUNS DURATION=$DURATION \
    SERVE_ARGS="--config $DIR/store.toml" COMPARE_ARGS="--config $DIR/local.toml" \
    scripts/bench-local.sh --scenario get,json,grpc --api-key "$KEY" || true
  echo "   Redis script calls: $(evalsha "$REDIS_PORT")"
fi

if [[ ",$PART," == *",latency,"* ]]; then
  # Open loop below saturation: the latency a request sees, not the
  # throughput the machine has left.
  redis $((REDIS_PORT + 3))
  config lstore 1000000000 4000000000 "$(store $((REDIS_PORT + 3)))"
  config llocal 1000000000 4000000000
  echo "== 3. latency at ${RATE:-2000} req/s (open loop): store (A, :18100) vs in-process (B, :18101)"
  NO_BUILD=1 PORT=18100 RUNS=$RUNS DURATION=$DURATION \
    SERVE_ARGS="--config $DIR/lstore.toml" COMPARE_ARGS="--config $DIR/llocal.toml" \
    scripts/bench-local.sh --scenario get,grpc --rate "${RATE:-2000}" --api-key "$KEY" || true
fi

if [[ ",$PART," == *",attacker,"* ]]; then
  redis $((REDIS_PORT + 1))
  redis $((REDIS_PORT + 2))
  config cache 0.001 1 "$(store $((REDIS_PORT + 1)))"
  config nocache 0.001 1 "$(store $((REDIS_PORT + 2)))" 'rate_limit_store_local_cache = false'
  echo "== 2. over-limit attacker: store with the over-limit cache (A, :18090) vs without (B, :18091)"
  echo "   (every request is refused with 429 after the first: loadgen counts them as errors)"
  NO_BUILD=1 PORT=18090 RUNS=$RUNS DURATION=$DURATION \
    SERVE_ARGS="--config $DIR/cache.toml" COMPARE_ARGS="--config $DIR/nocache.toml" \
    scripts/bench-local.sh --scenario get --api-key "$KEY" || true
  echo "   Redis script calls: with the cache $(evalsha $((REDIS_PORT + 1))), without $(evalsha $((REDIS_PORT + 2)))"
fi

if [[ ",$PART," == *",cluster,"* ]]; then
  # The same token requests as part 1, the store a 3-master cluster (all
  # nodes on REDIS_CPU) against one redis-server: the cost of the cluster
  # client and of the two scripts a request with credentials sends there
  # (throttle and bucket are in different slots).
  nodes=()
  for i in 10 11 12; do
    p=$((REDIS_PORT + i))
    redis "$p" --cluster-enabled yes --cluster-config-file "$DIR/nodes-$p.conf"
    nodes+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-yes >"$DIR/cluster-create.log"
  for _ in $(seq 100); do
    redis-cli -p $((REDIS_PORT + 10)) cluster info | grep -q cluster_state:ok && break
    sleep 0.1
  done
  redis $((REDIS_PORT + 4))
  config cluster 1000000000 4000000000 \
    "rate_limit_store = \"redis+cluster://${nodes[0]},${nodes[1]}\""
  config single 1000000000 4000000000 "$(store $((REDIS_PORT + 4)))"
  echo "== 4. token requests: cluster store (A, :$((${CPORT:-18110}))) vs one redis-server (B)"
  NO_BUILD=1 PORT=${CPORT:-18110} RUNS=$RUNS DURATION=$DURATION \
    SERVE_ARGS="--config $DIR/cluster.toml" COMPARE_ARGS="--config $DIR/single.toml" \
    scripts/bench-local.sh --scenario get,grpc --api-key "$KEY" || true
  total=0
  for p in 10 11 12; do
    c=$(evalsha $((REDIS_PORT + p)))
    total=$((total + ${c:-0}))
  done
  echo "   Redis script calls: cluster $total (over 3 nodes), single $(evalsha $((REDIS_PORT + 4)))"
fi
