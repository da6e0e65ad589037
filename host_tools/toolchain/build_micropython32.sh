#!/usr/bin/env bash
# Builds the 32-bit MicroPython lane (../shared/micropython32/README.md): the unix port v1.28.0 for i386,
# static, so it runs on any x86-64 Linux. Needs git access to GitHub and gcc-multilib (apt-get installs
# it when missing and we are root). Output: $OUT (default .venv/micropython32/micropython).
# Use it with: UMETER_MICROPYTHON32=$OUT make test
set -euo pipefail
TAG=${MICROPYTHON_TAG:-v1.28.0}
OUT=${1:-.venv/micropython32/micropython}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if ! echo 'int main(void){return 0;}' | gcc -m32 -x c -o "$WORK/probe" - 2>/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing gcc-multilib (32-bit C runtime for gcc -m32)"
    apt-get update -q && apt-get install -y -q gcc-multilib
  else
    echo "gcc -m32 does not work: install gcc-multilib, then run this again" >&2
    exit 1
  fi
fi

echo "cloning micropython $TAG"
git clone --quiet --depth 1 --branch "$TAG" https://github.com/micropython/micropython "$WORK/mp"
git -C "$WORK/mp" submodule update --quiet --init --depth 1 lib/micropython-lib lib/mbedtls
echo "building mpy-cross"
make -s -C "$WORK/mp/mpy-cross" -j"$(nproc)"
echo "building the unix port for i386 (MICROPY_FORCE_32BIT=1, static)"
make -s -C "$WORK/mp/ports/unix" -j"$(nproc)" VARIANT=standard MICROPY_FORCE_32BIT=1 MICROPY_PY_BTREE=0 \
     MICROPY_PY_FFI=0 LDFLAGS_EXTRA=-static
mkdir -p "$(dirname "$OUT")"
cp "$WORK/mp/ports/unix/build-standard/micropython" "$OUT"
"$OUT" -c "import sys; assert sys.maxsize == 2147483647, sys.maxsize; print('32-bit lane ok:', sys.version)"
sha256sum "$OUT"
echo "run the tests on it with: UMETER_MICROPYTHON32=$OUT make test"
