#!/usr/bin/env bash
# Cache behaviour per request, load-independent: runs a server under
# cachegrind (simulated L1 caches and branch predictor), sends 300 then 1,300
# sequential requests of one kind, and prints the difference per request:
# instructions, L1 instruction / data misses, mispredicted branches, and
# "est. cycles", a model (Ir / 2.5 + 12 per L1 miss + 15 per mispredict),
# not a measurement. BENCHMARKS.md compares builds with it.
#
#   scripts/cachegrind-request.sh target/release/token-authority grpc [serve args...]
#
# Kinds: get (GET token, keep-alive), healthz, grpc (grpcio unary
# BuildRtcToken over one channel, as real clients send it: with
# grpc-accept-encoding). Needs valgrind and python3 (grpcio for grpc).
# Loopback only; uses the public SAMPLE credentials (not a real project).
set -euo pipefail
BIN=$1
KIND=$2
shift 2
case "$KIND" in get | healthz | grpc) ;; *)
  echo "kind must be get, healthz or grpc" >&2
  exit 2
  ;;
esac
export SHENGWANG_APP_ID=970CA35de60c44645bbae8a215061b33
export SHENGWANG_APP_CERTIFICATE=5CFd2fd1755d40ecb72977518be15d3b
export RUST_LOG=${RUST_LOG:-info}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

run() {
  local n=$1 out=$2
  shift 2
  local port=$((20000 + RANDOM % 10000))
  valgrind --tool=cachegrind --cache-sim=yes --branch-sim=yes --cachegrind-out-file="$out" \
    "$BIN" serve --listen "127.0.0.1:$port" "$@" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 200); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port)).close()" 2>/dev/null && break
    sleep 0.2
  done
  python3 - "$port" "$n" "$KIND" <<'PY'
import sys
port, n, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if kind == "grpc":
    import grpc
    call = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary(
        "/agora.token.v1.TokenService/BuildRtcToken",
        request_serializer=None, response_deserializer=None)
    req = bytes([0x0A, 5]) + b"bench" + bytes([0x10, 7])  # channel_name "bench", uid 7
    for _ in range(n):
        assert len(call(req)) > 100
else:
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(n):
        path = "/healthz" if kind == "healthz" else f"/api/agora/token?channelName=bench-{i % 100}&uid={i + 1}"
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        assert r.status == 200, (r.status, body)
PY
  kill -TERM "$pid"
  wait "$pid" || true
}

run 300 "$WORK/a" "$@"
run 1300 "$WORK/b" "$@"
python3 - "$WORK/a" "$WORK/b" <<'PY'
import sys
events = "Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw Bc Bcm Bi Bim".split()
def summary(path):
    return [int(x) for x in open(path).read().split("summary:")[1].split()]
a, b = summary(sys.argv[1]), summary(sys.argv[2])
p = dict(zip(events, [(y - x) / 1000 for x, y in zip(a, b)]))
est = p["Ir"] / 2.5 + 12 * (p["I1mr"] + p["D1mr"] + p["D1mw"]) + 15 * (p["Bcm"] + p["Bim"])
print(f"per request: instructions {p['Ir']:.0f}, I1 misses {p['I1mr']:.0f}, "
      f"D1 misses {p['D1mr'] + p['D1mw']:.0f}, mispredicts {p['Bcm'] + p['Bim']:.0f}, est. cycles {est:.0f}")
PY
