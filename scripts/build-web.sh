#!/usr/bin/env bash
# Builds the engine for WebAssembly (the web/ crate, with SIMD128) into the two modules that `lenet5 serve` and
# `lenet5 site` serve to the training page:
#   assets/web/lenet5.wasm          one thread (wasm32-unknown-unknown), for any page;
#   assets/web/lenet5-threads.wasm  a step shared by Web Workers on shared memory (wasm32-wasip1-threads, the
#                                   `threads` feature), for a cross-origin-isolated page.
# Both come from the stable toolchain. The build is reproducible: the same source and toolchain give the same
# bytes, whatever the checkout's directory.
#
#   scripts/build-web.sh           rebuild both modules
#   scripts/build-web.sh --check   build them aside and fail if a committed module differs (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-unknown-unknown wasm32-wasip1-threads >/dev/null
fi
cargo_home=${CARGO_HOME:-$HOME/.cargo}
flags="-C target-feature=+simd128 --remap-path-prefix=$PWD=/lenet5 --remap-path-prefix=$cargo_home=/cargo"
build() { # target, features, committed module
  local target=$1 features=$2 module=$3 extra=""
  # A WASI reactor's first thread sets itself up (assets/web/threads.js calls these two).
  [ "$target" = wasm32-wasip1-threads ] && extra="-C link-arg=--export=__wasi_init_tp -C link-arg=--export=__wasm_call_ctors"
  RUSTFLAGS="$flags $extra" cargo build --locked -q -p lenet5-web $features --target "$target" --profile wasm \
    --target-dir "target/web-$target"
  local built=target/web-$target/$target/wasm/lenet5_web.wasm
  if [ "$check" = 1 ]; then
    if ! cmp -s "$built" "$module"; then
      echo "$module was not built from this source (and $(rustc --version)): run scripts/build-web.sh" >&2
      exit 1
    fi
    echo "$module is built from this source"
  else
    cp "$built" "$module"
    echo "$module: $(wc -c < "$module") bytes"
  fi
}
check=0
[ "${1:-}" = --check ] && check=1
build wasm32-unknown-unknown "" assets/web/lenet5.wasm
build wasm32-wasip1-threads "--features threads" assets/web/lenet5-threads.wasm
