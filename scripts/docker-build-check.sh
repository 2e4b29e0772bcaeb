#!/usr/bin/env bash
# The Dockerfile's build stages without a container engine, on a clean copy
# of the build context: the same `cargo chef prepare`, `cargo chef cook` and
# `cargo build --locked` commands (checked to be the Dockerfile's, word for
# word), then the binary runs. .ci/run calls it.
#
# cargo-chef is installed with `cargo install --locked`, at the Dockerfile's
# version, into $TOKEN_AUTHORITY_CI_TOOLS (default ~/.cache/token-authority-ci);
# the target directory lives there too (as BuildKit's layer cache would keep
# the cooked dependencies), so a second run rebuilds only the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
tools=${TOKEN_AUTHORITY_CI_TOOLS:-$HOME/.cache/token-authority-ci}

# The commands, as the Dockerfile has them.
prepare='cargo chef prepare --recipe-path recipe.json'
cook='cargo chef cook --release --locked -p token-authority --recipe-path recipe.json'
build='cargo build --release --locked -p token-authority'
for c in "$prepare" "$cook" "$build"; do
  if ! grep -qF "RUN $c" Dockerfile; then
    echo "docker-build-check: the Dockerfile no longer runs '$c': update this script with it" >&2
    exit 1
  fi
done
chef_version=$(sed -n 's/^RUN cargo install --locked cargo-chef --version \([0-9.]*\)$/\1/p' Dockerfile)
if [ -z "$chef_version" ]; then
  echo "docker-build-check: no 'cargo install --locked cargo-chef --version X' in the Dockerfile" >&2
  exit 1
fi

export PATH="$tools/bin:$PATH"
if [ "$(cargo-chef --version 2>/dev/null)" != "cargo-chef $chef_version" ]; then
  echo "== installing cargo-chef $chef_version into $tools"
  cargo install --locked --quiet --root "$tools" cargo-chef --version "$chef_version"
fi

# The build context: the files git knows (tracked, or untracked and not
# ignored), less what .dockerignore excludes.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
git ls-files -z --cached --others --exclude-standard \
  | python3 -c '
import fnmatch, sys
pats = []
for line in open(".dockerignore"):
    line = line.strip()
    if line and not line.startswith("#"):
        pats.append(line.rstrip("/"))
for path in sys.stdin.read().split("\0"):
    if not path:
        continue
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    if any(fnmatch.fnmatchcase(p, pat) or fnmatch.fnmatchcase(p, pat.removeprefix("**/"))
           for p in prefixes for pat in pats):
        continue
    sys.stdout.write(path + "\0")
' | while IFS= read -r -d '' f; do
      [ -f "$f" ] || continue   # deleted but still tracked
      mkdir -p "$context/$(dirname "$f")"
      cp "$f" "$context/$f"
    done

echo "== plan: $prepare"
(cd "$context" && $prepare)

# The build stage: WORKDIR with the recipe alone, cook, then the context.
src="$tools/docker-src"
rm -rf "$src"
mkdir -p "$src"
cp "$context/recipe.json" "$src/"
rm "$context/recipe.json"
export CARGO_TARGET_DIR="$tools/docker-target"
echo "== build: $cook"
(cd "$src" && $cook)
cp -R "$context/." "$src/"
echo "== build: $build"
(cd "$src" && $build)
"$CARGO_TARGET_DIR/release/token-authority" --version
echo "docker-build-check: the Dockerfile's build steps pass"
