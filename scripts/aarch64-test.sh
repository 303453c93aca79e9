#!/usr/bin/env bash
# Builds lenet5 for aarch64 (Linux), runs its numeric tests under qemu's user-mode emulation, and checks that a
# short training run prints the same metrics as the native build. Needs rustup, and gcc-aarch64-linux-gnu and
# qemu-user (installed with apt-get when run as root on Debian/Ubuntu). Slow: the emulator runs ~100x slower.
#
#   scripts/aarch64-test.sh [DATA_ROOT]     # DATA_ROOT holds mnist/ (default: $LENET5_DATA, else ./data)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-${LENET5_DATA:-data}}
target=aarch64-unknown-linux-gnu
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user >/dev/null
fi
rustup target add "$target" >/dev/null
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
dir=target/aarch64-check

# The engine's tests: the kernels against their references and PyTorch's tensors, the finite-difference
# gradient checks, no allocation per training step, and the parsers against damaged files. (The tests that start the binary
# themselves cannot run here: the host cannot execute an aarch64 program directly.)
cargo test --release --locked --target "$target" --target-dir "$dir" -p lenet5-core

# The same short run on both builds must print the same metrics.
cargo build --release --locked
cargo build --release --locked --target "$target" --target-dir "$dir"
run() {
  local out
  out=$(mktemp -d)
  "$@" train --data "$data" --no-download --epochs 2 --train-limit 2000 --test-limit 500 --out "$out/run" \
    --progress plain | grep -o 'train_loss.*val_acc [0-9.]*'
  rm -rf "$out"
}
native=$(run target/release/lenet5)
emulated=$(run qemu-aarch64 -L /usr/aarch64-linux-gnu "$dir/$target/release/lenet5")
echo "native:  $native"
echo "aarch64: $emulated"
# The builds round differently (AVX-512 or AVX2 kernels against portable ones with NEON): the printed metrics
# agree to the last digit in every run so far; allow one unit of it either way.
if paste <(echo "$native" | tr -s ' ' '\n') <(echo "$emulated" | tr -s ' ' '\n') \
  | awk '$1 != $2 && ($1 !~ /^[0-9.]+$/ || $2 !~ /^[0-9.]+$/ || ($1 - $2) ^ 2 > 1.01e-8) { bad = 1 } END { exit bad }'; then
  echo "same metrics (to one unit of the last digit)"
else
  echo "metrics differ"
  exit 1
fi
