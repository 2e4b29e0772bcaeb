#!/usr/bin/env bash
# Installs what the client matrix (tests/client_matrix.rs) needs, pinned, and
# generates the client stubs from proto/ (no system protoc: buf and
# protoc-gen-es come from npm, grpcio-tools from PyPI). Idempotent and quick
# on a rerun: node_modules (tests/clients/node_modules) and the Python venv
# (target/clients/venv) are rebuilt only when package-lock.json or
# requirements.txt change. Needs node/npm, python3 (with venv) and chromium:
# installed from Debian when missing (as root, like CI).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/clients"
mkdir -p "$out"

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
command -v chromium >/dev/null 2>&1 || apt_install chromium
python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv

stamp() { sha256sum "$1" | cut -d' ' -f1; }

# npm packages, exactly as locked.
if [ "$(cat "$here/node_modules/.stamp" 2>/dev/null)" != "$(stamp "$here/package-lock.json")" ]; then
  echo "== npm ci (tests/clients)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  stamp "$here/package-lock.json" > "$here/node_modules/.stamp"
fi

# Python: grpcio (+ tools, status), connect-python (+ its protoc plugin),
# protobuf, schemathesis.
venv="$out/venv"
if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$(stamp "$here/requirements.txt")" ]; then
  echo "== python venv (target/clients/venv)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  stamp "$here/requirements.txt" > "$venv/.stamp"
fi

# Stubs, from the repo's proto, every run (a second or two), into
# tests/clients/gen (not in git).
gen="$here/gen"
rm -rf "$gen"
mkdir -p "$gen/es" "$gen/py"
(cd "$root" && "$here/node_modules/.bin/buf" generate proto \
  --template "$here/buf.gen.yaml" --output "$gen/es")
"$venv/bin/python" -m grpc_tools.protoc -I "$root/proto" \
  --python_out="$gen/py" --grpc_python_out="$gen/py" \
  --plugin=protoc-gen-connect-python="$venv/bin/protoc-gen-connect-python" \
  --connect-python_out="$gen/py" \
  "$root/proto/agora/token/v1/token_service.proto"
# The browser bundle (connect-web + the generated service), for the page.
"$here/node_modules/.bin/esbuild" "$here/browser/app.mjs" --bundle --format=esm \
  --log-level=warning --outfile="$gen/browser/app.js"
echo "client matrix ready: node $(node --version), $("$venv/bin/python" --version), $(chromium --version 2>/dev/null | head -1)"
