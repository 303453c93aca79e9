#!/usr/bin/env bash
# The C export (lenet5 export --c DIR) on a Cortex-M4, with Debian's gcc-arm-none-eabi and qemu-system-arm.
#
#   scripts/cortex-m4.sh DIR IMAGES.idx N
#
# runs the first N images of a raw IDX images file through the network on an emulated MPS2-AN386 board and
# prints one line per image, as the host driver (tests/fixtures/c/driver.c) prints them. (`lenet5 export --c`
# itself prints the network's flash and RAM on a Cortex-M4.)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cflags=(-mcpu=cortex-m4 -mthumb -Os -std=c99 -Wall -Wextra -Werror -pedantic -ffreestanding)
dir=${1:-}
images=${2:-}
count=${3:-}
[ -f "$dir/lenet5_model.c" ] && [ -f "$images" ] && [ -n "$count" ] \
  || { echo "usage: $0 DIR IMAGES.idx N (DIR from lenet5 export --c)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
  echo "#define TEST_IMAGES $count"
  echo "static const unsigned char test_images[TEST_IMAGES][784] = {"
  od -An -v -tu1 -j16 -N $((count * 784)) "$images" | tr -s ' \n' '\n\n' | grep -v '^$' \
    | awk '{printf "%s%s", (NR % 784 == 1 ? "{" : ","), $1} NR % 784 == 0 {print "},"}'
  echo "};"
} > "$work/images.h"
arm-none-eabi-gcc "${cflags[@]}" -nostdlib -nostartfiles -I "$dir" -I "$work" \
  -T "$here/tests/fixtures/c/cortex-m/link.ld" "$here/tests/fixtures/c/cortex-m/main.c" "$dir/lenet5_model.c" \
  -lgcc -o "$work/firmware.elf"
# qemu writes what the firmware writes through semihosting to its standard error.
timeout 300 qemu-system-arm -machine mps2-an386 -nographic -monitor none -serial none \
  -semihosting-config enable=on,target=native -kernel "$work/firmware.elf" 2>&1
