#!/usr/bin/env bash
# Build the trainer to WebAssembly, generate JS bindings for the web and for Node, optimise with wasm-opt.
# Uses `rustup target add wasm32-unknown-unknown` where that works; otherwise Debian's
# rustc-web with -Zbuild-std (the offline path). Outputs: client_wasm/pkg/{web,node}.
# POLLEN_WASM_FEATURES=webgpu adds Burn's WebGPU backend (about 30 minutes more to build on
# two cores; 11.6 MB raw / 2.7 MB gzip instead of 2.2 MB / 0.6 MB).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${POLLEN_CACHE:-$HOME/.cache/pollen}
WASM_BINDGEN_VERSION=0.2.130   # must equal the wasm-bindgen crate in Cargo.lock
# Its own target dir: the native clippy/test builds use a different rustc, and sharing would thrash.
export CARGO_TARGET_DIR=$CACHE/cargo-target-wasm
export RUSTFLAGS='-C target-feature=+simd128 --cfg getrandom_backend="wasm_js"'
TOOLS=$CACHE/cargo-tools
cd "$HERE"

if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  cargo build --release --target wasm32-unknown-unknown --lib ${POLLEN_WASM_FEATURES:+--features "$POLLEN_WASM_FEATURES"}
else
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-19 \
    /usr/bin/cargo build --release --target wasm32-unknown-unknown --lib -Zbuild-std=std,panic_abort \
    ${POLLEN_WASM_FEATURES:+--features "$POLLEN_WASM_FEATURES"}
fi

if [ "$("$TOOLS/bin/wasm-bindgen" --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --root "$TOOLS"
fi

WASM=$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/pollen_trainer.wasm
OPT="$HERE/../client_web/node_modules/.bin/wasm-opt"
for target in web nodejs; do
  out=pkg/${target/nodejs/node}
  rm -rf "$out"
  "$TOOLS/bin/wasm-bindgen" "$WASM" --target "$target" --out-dir "$out"
  "$OPT" -O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    "$out/pollen_trainer_bg.wasm" -o "$out/pollen_trainer_bg.wasm"
done
raw=$(stat -c %s pkg/web/pollen_trainer_bg.wasm)
gz=$(gzip -9 -c pkg/web/pollen_trainer_bg.wasm | wc -c)
echo "pollen_trainer_bg.wasm: $raw bytes raw, $gz bytes gzip"
