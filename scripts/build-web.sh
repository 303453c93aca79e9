#!/usr/bin/env bash
# Builds the engine for WebAssembly (the web/ crate, with SIMD128) into assets/web/lenet5.wasm, the module that
# `lenet5 serve` and `lenet5 site` serve to the training page. The build is reproducible: the same source and
# toolchain give the same bytes, whatever the checkout's directory.
#
#   scripts/build-web.sh           rebuild assets/web/lenet5.wasm
#   scripts/build-web.sh --check   build it aside and fail if the committed module differs (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-unknown-unknown >/dev/null
fi
cargo_home=${CARGO_HOME:-$HOME/.cargo}
export RUSTFLAGS="-C target-feature=+simd128 --remap-path-prefix=$PWD=/lenet5 --remap-path-prefix=$cargo_home=/cargo"
cargo build --locked -q -p lenet5-web --target wasm32-unknown-unknown --profile wasm --target-dir target/web
built=target/web/wasm32-unknown-unknown/wasm/lenet5_web.wasm
if [ "${1:-}" = --check ]; then
  if ! cmp -s "$built" assets/web/lenet5.wasm; then
    echo "assets/web/lenet5.wasm was not built from this source (and $(rustc --version)): run scripts/build-web.sh" >&2
    exit 1
  fi
  echo "assets/web/lenet5.wasm is built from this source"
else
  cp "$built" assets/web/lenet5.wasm
  echo "assets/web/lenet5.wasm: $(wc -c < assets/web/lenet5.wasm) bytes"
fi
