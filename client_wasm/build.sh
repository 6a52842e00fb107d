#!/usr/bin/env bash
# Build the trainer to WebAssembly, generate JS bindings for the web and for Node, optimise with wasm-opt.
# Uses `rustup target add wasm32-unknown-unknown` where that works; otherwise Debian's
# rustc-web with -Zbuild-std (the offline path). The threaded build always rebuilds std
# (-Zbuild-std): with Debian's rustc-web where it is installed, else rustup's rust-src. Outputs: client_wasm/pkg/{web,node} and
# pkg/{web,node}-threads. The first carries the CPU backend and Burn's WebGPU backend, and picks
# at run time. POLLEN_WASM_FEATURES= (empty) builds it CPU-only: about 30 minutes less on two
# cores the first time, and 0.6 MB gzip instead of 2.7 MB. pkg/{web,node}-relaxed is the CPU
# backend alone with relaxed SIMD, on one thread. The threaded build is CPU-only, with atomics
# and shared memory, and runs the CPU backend on a pool of workers (src/threads.rs); it is built
# twice, plain and with relaxed SIMD (pkg/{web,node}-threads-relaxed).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${POLLEN_CACHE:-$HOME/.cache/pollen}
WASM_BINDGEN_VERSION=0.2.130   # must equal the wasm-bindgen crate in Cargo.lock
TOOLS=$CACHE/cargo-tools
FEATURES=${POLLEN_WASM_FEATURES-webgpu}
OPT="$HERE/../client_web/node_modules/.bin/wasm-opt"
OPT_FLAGS="-O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext
  --enable-mutable-globals --enable-reference-types --enable-multivalue"
# wasm-opt takes minutes on the WebGPU build, so its output is kept, keyed by what went in.
OPT_CACHE=$CACHE/wasm-opt
mkdir -p "$OPT_CACHE"
cd "$HERE"

if [ "$("$TOOLS/bin/wasm-bindgen" --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --root "$TOOLS"
fi

rustup_wasm() { rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; }
# Debian's rustc-web, its std sources and wasm-ld (scripts/setup.sh installs them where rustup cannot serve).
debian_wasm() { [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library ] && command -v wasm-ld-19 >/dev/null; }

# build SUFFIX FEATURES EXTRA_TARGET_FEATURES [LINK_ARG...]: the trainer into pkg/web$SUFFIX and
# pkg/node$SUFFIX. Link arguments and the path remapping go to the trainer's own compile only
# (`cargo rustc`), not into RUSTFLAGS, where any change would rebuild every dependency.
build() {
  local suffix=$1 features=$2 extra=$3 out key relaxed= atomics=
  shift 3
  [[ $extra == *relaxed-simd* ]] && relaxed=1
  [[ $extra == *atomics* ]] && atomics=1
  # The trainer's own paths (in its panic messages) are named relative to the crate, so that a
  # build from another clone of the same commit is the same bytes, and wasm-opt's output is
  # found in its cache instead of taking minutes again (a CI run builds from a fresh clone).
  local link=(--remap-path-prefix="$HERE=client_wasm")
  for arg in "$@"; do link+=(-C "link-arg=$arg"); done
  # Each build its own target dir: their flags differ, and the native clippy/test builds use a
  # different rustc; sharing would rebuild everything each time.
  export CARGO_TARGET_DIR=$CACHE/cargo-target-wasm$suffix
  export RUSTFLAGS="-C target-feature=+simd128$extra --cfg getrandom_backend=\"wasm_js\""
  if [ -z "$extra" ] && rustup_wasm; then
    cargo rustc --release --target wasm32-unknown-unknown --lib ${features:+--features "$features"} -- "${link[@]}"
  elif [ -n "$extra" ] && ! debian_wasm && rustup_wasm; then
    # Threads need std itself rebuilt with atomics: -Zbuild-std, from rustup's rust-src.
    RUSTC_BOOTSTRAP=1 cargo rustc --release --target wasm32-unknown-unknown --lib -Zbuild-std=std,panic_abort \
      ${features:+--features "$features"} -- "${link[@]}"
  else
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-19 \
      /usr/bin/cargo rustc --release --target wasm32-unknown-unknown --lib -Zbuild-std=std,panic_abort \
      ${features:+--features "$features"} -- "${link[@]}"
  fi
  local wasm=$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/pollen_trainer.wasm
  for target in web nodejs; do
    out=pkg/${target/nodejs/node}$suffix
    rm -rf "$out"
    "$TOOLS/bin/wasm-bindgen" "$wasm" --target "$target" --out-dir "$out"
    key=$( { cat "$out/pollen_trainer_bg.wasm"; "$OPT" --version; echo "$OPT_FLAGS${extra:+ $extra}"; } | sha256sum | cut -c1-32)
    if [ ! -f "$OPT_CACHE/$key.wasm" ]; then
      # shellcheck disable=SC2086 # OPT_FLAGS is a list of flags
      "$OPT" $OPT_FLAGS ${atomics:+--enable-threads} ${relaxed:+--enable-relaxed-simd} "$out/pollen_trainer_bg.wasm" \
        -o "$OPT_CACHE/$key.tmp"
      mv "$OPT_CACHE/$key.tmp" "$OPT_CACHE/$key.wasm"
    fi
    cp "$OPT_CACHE/$key.wasm" "$out/pollen_trainer_bg.wasm"
  done
}

build "" "$FEATURES" ""
# The CPU backend alone with relaxed SIMD, on one thread: what a page that is not cross-origin
# isolated (no shared memory, so no pool) runs on the CPU where the engine has relaxed SIMD, and
# Node's one-thread jobs. CPU-only, so its compile is the threaded builds' size, not the WebGPU one's.
build -relaxed "" ",+relaxed-simd"
# The CPU backend on several threads, for pages that are cross-origin isolated and for Node
# (src/threads.rs): shared memory, up to 4 GiB like the single-threaded build.
# wasm-ld makes the memory shared and imported, with the thread-local storage symbols that
# wasm-bindgen's thread support needs (Debian's rustc does not pass these itself).
THREADS_LINK=(--shared-memory --import-memory --max-memory=4294967296
  --export=__wasm_init_tls --export=__tls_size --export=__tls_align --export=__tls_base)
build -threads threads ",+atomics,+bulk-memory,+mutable-globals" "${THREADS_LINK[@]}"
# The same with relaxed SIMD, whose fused multiply-add the CPU convolutions' microkernel uses
# (src/simd_lanes.rs), for engines that have it: an engine without it rejects the whole module,
# so the page and Node pick one of the two by feature detection (client_web/src/cpu-pool.js).
# Both share the plain build's JavaScript glue, which the page imports once for either.
build -threads-relaxed threads ",+atomics,+bulk-memory,+mutable-globals,+relaxed-simd" "${THREADS_LINK[@]}"
for target in web node; do
  cmp -s pkg/$target-threads/pollen_trainer.js pkg/$target-threads-relaxed/pollen_trainer.js ||
    { echo "build.sh: the relaxed-SIMD build's glue differs from the plain one's ($target)" >&2; exit 1; }
done
# Keep the newest few optimised builds (six files each); each file is up to 12 MB.
ls -t "$OPT_CACHE"/*.wasm | tail -n +19 | xargs -r rm -f
raw=$(stat -c %s pkg/web/pollen_trainer_bg.wasm)
gz=$(gzip -9 -c pkg/web/pollen_trainer_bg.wasm | wc -c)
echo "pollen_trainer_bg.wasm (features: ${FEATURES:-none}): $raw bytes raw, $gz bytes gzip"
for suffix in relaxed threads threads-relaxed; do
  echo "pollen_trainer_bg.wasm ($suffix): $(stat -c %s pkg/web-$suffix/pollen_trainer_bg.wasm) bytes raw," \
    "$(gzip -9 -c pkg/web-$suffix/pollen_trainer_bg.wasm | wc -c) bytes gzip"
done
