#!/usr/bin/env bash
# Build the trainer to WebAssembly, generate JS bindings for the web and for Node, optimise with wasm-opt.
# Uses `rustup target add wasm32-unknown-unknown` where that works; otherwise Debian's
# rustc-web with -Zbuild-std (the offline path). Outputs: client_wasm/pkg/{web,node}.
# One build serves both: it carries the CPU backend and Burn's WebGPU backend, and picks at
# run time. POLLEN_WASM_FEATURES= (empty) builds a CPU-only trainer: about 30 minutes less on
# two cores the first time, and 0.6 MB gzip instead of 2.7 MB.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${POLLEN_CACHE:-$HOME/.cache/pollen}
WASM_BINDGEN_VERSION=0.2.130   # must equal the wasm-bindgen crate in Cargo.lock
# Its own target dir: the native clippy/test builds use a different rustc, and sharing would thrash.
export CARGO_TARGET_DIR=$CACHE/cargo-target-wasm
export RUSTFLAGS='-C target-feature=+simd128 --cfg getrandom_backend="wasm_js"'
TOOLS=$CACHE/cargo-tools
FEATURES=${POLLEN_WASM_FEATURES-webgpu}
cd "$HERE"

if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  cargo build --release --target wasm32-unknown-unknown --lib ${FEATURES:+--features "$FEATURES"}
else
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-19 \
    /usr/bin/cargo build --release --target wasm32-unknown-unknown --lib -Zbuild-std=std,panic_abort \
    ${FEATURES:+--features "$FEATURES"}
fi

if [ "$("$TOOLS/bin/wasm-bindgen" --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --root "$TOOLS"
fi

WASM=$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/pollen_trainer.wasm
OPT="$HERE/../client_web/node_modules/.bin/wasm-opt"
OPT_FLAGS="-O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext
  --enable-mutable-globals --enable-reference-types --enable-multivalue"
# wasm-opt takes minutes on the WebGPU build, so its output is kept, keyed by what went in.
OPT_CACHE=$CACHE/wasm-opt
mkdir -p "$OPT_CACHE"
for target in web nodejs; do
  out=pkg/${target/nodejs/node}
  rm -rf "$out"
  "$TOOLS/bin/wasm-bindgen" "$WASM" --target "$target" --out-dir "$out"
  key=$( { cat "$out/pollen_trainer_bg.wasm"; "$OPT" --version; echo "$OPT_FLAGS"; } | sha256sum | cut -c1-32)
  if [ ! -f "$OPT_CACHE/$key.wasm" ]; then
    # shellcheck disable=SC2086 # OPT_FLAGS is a list of flags
    "$OPT" $OPT_FLAGS "$out/pollen_trainer_bg.wasm" -o "$OPT_CACHE/$key.tmp"
    mv "$OPT_CACHE/$key.tmp" "$OPT_CACHE/$key.wasm"
  fi
  cp "$OPT_CACHE/$key.wasm" "$out/pollen_trainer_bg.wasm"
done
# Keep the newest few optimised builds; each is up to 12 MB.
ls -t "$OPT_CACHE"/*.wasm | tail -n +9 | xargs -r rm -f
raw=$(stat -c %s pkg/web/pollen_trainer_bg.wasm)
gz=$(gzip -9 -c pkg/web/pollen_trainer_bg.wasm | wc -c)
echo "pollen_trainer_bg.wasm (features: ${FEATURES:-none}): $raw bytes raw, $gz bytes gzip"
