#!/usr/bin/env bash
# Builds kernels/wasm/kernels.wasm from the C sources (clang-19 + lld-19, no wasm-opt).
#   build.sh          rebuild the committed .wasm in place
#   build.sh --check  rebuild into a temp file and compare bytes with the committed one (exit 1 if stale)
# The output is deterministic: no debug info, source paths mapped to ".", one fixed source order.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)"
CC="${CC:-clang-19}"
command -v "$CC" >/dev/null || { echo "build.sh: $CC not found (apt-get install clang-19 lld-19)" >&2; exit 2; }

sources=(math.c matmul.c gemm_q8.c norm.c rope.c attention.c attention_prefill.c moe.c sample.c vision.c)
flags=(
  --target=wasm32 -O3 -ffreestanding -nostdlib -fno-builtin -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter
  -msimd128 -mrelaxed-simd -mbulk-memory -matomics -mmutable-globals
  -g0 -ffile-prefix-map="$dir"=. -fdebug-prefix-map="$dir"=.
  # Threads share one imported memory (max 4 GiB); the 2 MiB main stack sits first so an overflow traps at 0.
  -Wl,--no-entry -Wl,--import-memory -Wl,--shared-memory -Wl,--max-memory=4294967296
  -Wl,--stack-first -Wl,-z,stack-size=2097152 -Wl,--strip-debug -Wl,--no-export-dynamic
  # Workers set their own stack pointer; the JS arena starts at __heap_base.
  -Wl,--export=__stack_pointer -Wl,--export=__heap_base
)

# The linker writes the output file name into the name section, so both modes build a file named kernels.wasm
# inside a temp dir (the function names stay: they make traps readable).
tmpdir="$(mktemp -d)"
trap 'rm -rf "$tmpdir"' EXIT
tmp="$tmpdir/kernels.wasm"
(cd "$dir" && "$CC" "${flags[@]}" -o "$tmp" "${sources[@]}")

if [ "${1:-}" = "--check" ]; then
  if cmp -s "$tmp" "$dir/kernels.wasm"; then
    echo "kernels.wasm is up to date"
  else
    echo "kernels.wasm is stale: run kernels/wasm/build.sh and commit the result" >&2
    exit 1
  fi
else
  cp "$tmp" "$dir/kernels.wasm"
  chmod 644 "$dir/kernels.wasm"
  echo "built $dir/kernels.wasm ($(wc -c <"$dir/kernels.wasm") bytes)"
fi
