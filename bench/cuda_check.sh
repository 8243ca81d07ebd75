#!/usr/bin/env bash
# The cuda backend on a lent GPU, in four stages (issue 15), each writing its pass/fail table to $OUT before the
# next starts, reading nothing from ../shared. At most 300 s from start to end, unpacking .device/env.sh included:
# the stage limits (70 + 60 + 115 + 45 = 290 s) leave 10 s for the unpacking, and every limit is also cut to what
# is left of the 300 s, so a slow unpack or stage takes time from the later stages, not from the lease's rerun.
#   1. tests/backend_ops_test.ts, the cuda column: every op case ≡ the reference within its documented bound
#   2. tiny and ms4-mini on cuda ≡ wasm: the prompt's logits, and 64 greedy ids identical
#   3. full-size mistral-small-4 with device-made weights (FP8 on a ≥ 120 GB GPU, else NVFP4 experts): load, prefill of
#      2,048 tokens, decode tok/s at batch 1 and 64 against the ceilings of the measured device bandwidth
#   4. a make-checkpoint `tiny` in transformers' Mistral4ForCausalLM vs ours on cuda, under both softmax scales
# Prepare once here:   bash ../shared/tools/device/pack.sh     (writes .device/: Deno, the npm cache, env.sh)
# Run on the device:   carry [".device"], command: OUT=$OUT bash bench/cuda_check.sh      (or name stages: 1 3)
# Result: $OUT/cuda_check.md (the summary) and $OUT/stage{1,2,3,4}.md (one table each).
set -uo pipefail
deadline=$(($(date +%s) + 300))
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
[ -f .device/env.sh ] || { echo "cuda_check: no .device/env.sh: run 'bash ../shared/tools/device/pack.sh' and carry .device" >&2; exit 2; }
# shellcheck disable=SC1091
. .device/env.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}" NO_COLOR=1
RUN=(deno run -A --no-lock --cached-only)

# lim N: N seconds, or what is left before the deadline if less (at least 1: `timeout 0` would not limit at all).
lim() {
  local left=$((deadline - $(date +%s)))
  if [ "$left" -lt "$1" ]; then echo $((left > 0 ? left : 1)); else echo "$1"; fi
}
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(1 2 3 4)
device=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
mem_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1 | tr -d ' ')
summary="$OUT/cuda_check.md"
{
  echo "# bench/cuda_check.sh on ${device:-an unknown device} ($(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo
  echo "| stage | what | result | seconds |"
  echo "|---|---|---|---|"
} >"$summary"

# row STAGE WHAT FILE START: a summary row from a stage's table (FAIL anywhere in it, or no table, fails it; a
# stage 3 target its bounds cannot decide makes it "pass, some undecided").
row() {
  local verdict=pass
  if [ ! -s "$3" ] || grep -q "FAIL" "$3"; then verdict=FAIL; elif grep -q "undecided" "$3"; then
    verdict="pass, some undecided"
  fi
  echo "| $1 | $2 | $verdict | $(($(date +%s) - $4)) |" >>"$summary"
  echo "stage $1 ($2): $verdict"
}

stage1() {
  local t0; t0=$(date +%s)
  BACKEND_OPS_REPORT=1 timeout "$(lim 70)" deno test -A --no-lock --cached-only --filter "backend ops: cuda" \
    tests/backend_ops_test.ts >"$OUT/stage1.log" 2>&1
  local rc=$?
  python3 - "$OUT/stage1.log" "$rc" >"$OUT/stage1.md" <<'PY'
import re, sys
log, rc = open(sys.argv[1], errors="replace").read(), int(sys.argv[2])
errs = {}
for m in re.finditer(r"^cuda\t(.+?)\t(\S+)\t(\S+)$", log, re.M):
    errs[m.group(1)] = (m.group(2), m.group(3))
print("| case | normalised error | state error | result |\n|---|---|---|---|")
steps = re.findall(r"^\s+(.+?) \.\.\. (ok|FAILED)", log, re.M)
for name, res in steps:
    e, s = errs.get(name, ("", ""))
    print(f"| {name} | {e} | {s} | {'pass' if res == 'ok' else 'FAIL'} |")
skipped = re.search(r"^cuda does not run: (.*)$", log, re.M)
if skipped: print(f"\nnot run on cuda (refused by supports): {skipped.group(1)}")
if not steps: print(f"| (no case ran: exit {rc}) | | | FAIL |")
elif rc != 0: print(f"\ndeno test exited {rc}: FAIL")
PY
  row 1 "backend_ops_test cuda column" "$OUT/stage1.md" "$t0"
}

stage2() {
  local t0; t0=$(date +%s)
  timeout "$(lim 60)" "${RUN[@]}" bench/cuda_check.ts logits --gen 64 >"$OUT/stage2.md" 2>"$OUT/stage2.log" ||
    echo "| (stage 2 stopped: exit $?, see stage2.log) | | | | FAIL |" >>"$OUT/stage2.md"
  row 2 "tiny, ms4-mini logits + 64 greedy ids ≡ wasm" "$OUT/stage2.md" "$t0"
}

stage3() {
  local t0 dtype; t0=$(date +%s)
  # 141 GB H200: the FP8 checkpoint (~112 GiB); 80 GB H100: NVFP4 experts.
  if [ "${mem_mib:-0}" -ge 120000 ]; then dtype=f8e4m3; else dtype=nvfp4; fi
  echo "mistral-small-4, --dtype $dtype, device-made weights, on ${device:-?}" >"$OUT/stage3.md"
  echo >>"$OUT/stage3.md"
  if timeout "$(lim 95)" "${RUN[@]}" bench/bench.ts --model mistral-small-4 --dtype "$dtype" --backend cuda --prompt 2048 \
    --gen 8 --batch 1,64 --repetitions 1 --json >"$OUT/stage3.json" 2>"$OUT/stage3.log"; then
    local gbps
    gbps=$(timeout "$(lim 10)" "${RUN[@]}" bench/cuda_check.ts bandwidth 2>>"$OUT/stage3.log")
    timeout "$(lim 10)" "${RUN[@]}" bench/cuda_check.ts roofline "$OUT/stage3.json" "${gbps:-0}" --batch 64 \
      --dtype "$dtype" >>"$OUT/stage3.md" 2>>"$OUT/stage3.log" || echo "| (roofline failed, see stage3.log) | | | | | FAIL |" >>"$OUT/stage3.md"
  else
    echo "| (bench stopped: exit $?; last lines of stage3.log below) | | | | | FAIL |" >>"$OUT/stage3.md"
    tail -n 5 "$OUT/stage3.log" | sed 's/^/    /' >>"$OUT/stage3.md"
  fi
  row 3 "mistral-small-4 $dtype: prefill, decode b1/b64 vs roofline" "$OUT/stage3.md" "$t0"
}

stage4() {
  local t0 dir; t0=$(date +%s)
  dir=$(mktemp -d)
  {
    timeout "$(lim 10)" "${RUN[@]}" make_checkpoint.ts --model tiny --out "$dir/tiny" --force >/dev/null &&
      timeout "$(lim 15)" "${RUN[@]}" bench/cuda_check.ts hf-logits "$dir/tiny" "$OUT/ours" >/dev/null &&
      timeout "$(lim 20)" python3 bench/cuda_check_hf.py "$dir/tiny" "$OUT/ours"
  } >"$OUT/stage4.md" 2>"$OUT/stage4.log" || echo "| (stage 4 stopped: exit $?, see stage4.log) | | FAIL |" >>"$OUT/stage4.md"
  rm -rf "$dir"
  row 4 "transformers Mistral4ForCausalLM vs ours on cuda" "$OUT/stage4.md" "$t0"
}

for s in "${stages[@]}"; do "stage$s"; done
echo
cat "$summary"
for s in "${stages[@]}"; do
  echo
  echo "## stage $s"
  echo
  cat "$OUT/stage$s.md"
done
grep -q "| FAIL |" "$summary" && exit 1
exit 0
