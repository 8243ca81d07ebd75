#!/usr/bin/env bash
# Builds kernels/wasm/kernels.wasm (wasm32) and kernels/wasm/kernels64.wasm (wasm64, memory64) from the C sources
# (clang-19 + lld-19, no wasm-opt).
#   build.sh          rebuild both committed .wasm files in place
#   build.sh --check  rebuild into a temp dir and compare bytes with the committed ones (exit 1 if either is stale)
# The output is deterministic: no debug info, source paths mapped to ".", one fixed source order.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)"
CC="${CC:-clang-19}"
command -v "$CC" >/dev/null || { echo "build.sh: $CC not found (apt-get install clang-19 lld-19)" >&2; exit 2; }

sources=(math.c matmul.c gemm_q8.c gemm_q4.c gemm_nvfp4.c norm.c rope.c attention.c attention_prefill.c moe.c sample.c vision.c)
flags=(
  -O3 -ffreestanding -nostdlib -fno-builtin -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter
  -msimd128 -mrelaxed-simd -mbulk-memory -matomics -mmutable-globals
  -g0 -ffile-prefix-map="$dir"=. -fdebug-prefix-map="$dir"=.
  # Threads share one imported memory; the 2 MiB main stack sits first so an overflow traps at 0.
  -Wl,--no-entry -Wl,--import-memory -Wl,--shared-memory
  -Wl,--stack-first -Wl,-z,stack-size=2097152 -Wl,--strip-debug -Wl,--no-export-dynamic
  # Workers set their own stack pointer; the JS arena starts at __heap_base.
  -Wl,--export=__stack_pointer -Wl,--export=__heap_base
)
# Per target: name, clang flags. wasm32: 4 GiB, the most a 32-bit memory holds. wasm64 (memory64: i64 addresses, so
# pointers, size_t and the two exported globals are i64): 16 GiB, the most V8 allows one memory.
targets=(
  "kernels.wasm --target=wasm32 -Wl,--max-memory=4294967296"
  "kernels64.wasm --target=wasm64 -Wl,--max-memory=17179869184"
)

# The linker writes the output file name into the name section, so both modes build files of the committed names
# inside a temp dir (the function names stay: they make traps readable).
tmpdir="$(mktemp -d)"
trap 'rm -rf "$tmpdir"' EXIT
stale=0
for t in "${targets[@]}"; do
  read -r -a spec <<<"$t"
  name="${spec[0]}"
  tmp="$tmpdir/$name"
  (cd "$dir" && "$CC" "${spec[@]:1}" "${flags[@]}" -o "$tmp" "${sources[@]}")
  if [ "${1:-}" = "--check" ]; then
    if cmp -s "$tmp" "$dir/$name"; then
      echo "$name is up to date"
    else
      echo "$name is stale: run kernels/wasm/build.sh and commit the result" >&2
      stale=1
    fi
  else
    cp "$tmp" "$dir/$name"
    chmod 644 "$dir/$name"
    echo "built $dir/$name ($(wc -c <"$dir/$name") bytes)"
  fi
done
exit "$stale"
