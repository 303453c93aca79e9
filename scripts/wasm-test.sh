#!/usr/bin/env bash
# Runs the engine's own tests compiled to WebAssembly with SIMD128, as the training page runs it: the SIMD128
# kernels against their references, the PyTorch fixtures, the finite-difference gradient checks and the parsers
# (those that need a temporary directory are skipped: WASI has none). Node runs the tests through its WASI
# (web/tests/wasi-run.mjs); rustup adds the target. Without Node it says so and does nothing.
#
#   scripts/wasm-test.sh [TEST FILTERS...]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1; then
  echo "note: no Node.js to run the WebAssembly tests with; skipped"
  exit 0
fi
target=wasm32-wasip1-threads
rustup target add "$target" >/dev/null 2>&1 || true
export CARGO_TARGET_WASM32_WASIP1_THREADS_RUNNER="node --no-warnings $PWD/web/tests/wasi-run.mjs"
# With SIMD128, as scripts/build-web.sh builds the page's modules; without the threads feature, so each test runs
# on one thread (tests/wasm.rs compares the threaded module's training with the native one's, bit for bit).
RUSTFLAGS="-C target-feature=+simd128" cargo test --release --locked -p lenet5-core --no-default-features --lib \
  --target "$target" --target-dir target/wasm-test -- --test-threads=1 "$@"
