#!/usr/bin/env bash
# One-shot GPU validation and benchmarks of every op, for a session with a CUDA machine and little device time.
# GPU backends: csr_mm / csr_linear / csr_sddmm and semi24_mm / semi24_linear are compiled CUDA kernels,
# bsr_mm / bsr_linear and csr_bitmap_mm / csr_bitmap_linear are Triton.
#
#   bench/gpu_check.sh [stage ...]      stages, in the order given (default: every stage but test_cpu and tune)
#     info          GPU, driver, torch/triton/nvcc/compute-sanitizer versions
#     build         builds the extension for this GPU only (TORCH_CUDA_ARCH_LIST = its capability, 9.0a on
#                   Hopper) and checks every op's GPU backend: the CSR and 2:4 ops "cuda", the BSR and bitmap
#                   ops "triton"
#     test          the GPU tests (markers cuda and triton) of every op test file, tests/test_*mm*.py: every CUDA
#                   kernel variant with poisoned outputs, the Triton kernels compiled for this GPU with their
#                   default configs (SPARSEKERN_AUTOTUNE=0), the BSR autotuner and every BSR candidate config
#     test_cpu      the CPU tests of the same files, a regression check under this machine's torch
#     sanitize      memcheck, then racecheck
#     memcheck      compute-sanitizer memcheck (PyTorch's caching allocator off, so out-of-tensor accesses are
#                   reported): the CSR kernels' sweep of every instantiation, garbage and misaligned input; the 2:4
#                   decode and tensor-core paths, unaligned operands, ragged shapes; the BSR Triton kernel on
#                   padded non-power-of-two blocks, blocks over 128, bad row pointers, split-K, and 16 shapes x
#                   blocks at 10% density (the Triton CSR kernels on bad row pointers too); the bitmap
#                   Triton kernel on an inconsistent bitmap and 6 shapes
#     racecheck     compute-sanitizer racecheck on the kernels that use shared memory: the CSR sweep, and the 2:4
#                   fp16/bf16 kernels (cp.async rings, swizzled tiles, split-K reduction) on ragged shapes
#     bench         csr_mm then csr_linear: python -m sparsekern bench --preset gpu (fp16/bf16 vs cuBLAS and
#                   cuSPARSE in the same process; the CUDA CSR and the Triton bitmap kernel each called directly
#                   beside the dispatch, and the Triton CSR kernel). The bitmap kernel autotunes each shape in
#                   csr_mm; csr_linear reuses those choices (TRITON_CACHE_AUTOTUNING=1 in the bench stages)
#     bench_mm / bench_linear   the two halves of `bench`
#     bench_semi24  --preset semi24 --ops semi24_mm (vs cuBLAS and torch's cuSPARSELt / CUTLASS 2:4)
#     tune_bsr      python -m sparsekern._triton.bsr_mm_tune over the bsr preset's shapes, N and blocks: the
#                   table to paste into sparsekern/_triton/configs.py (BSR_MM_TUNED), as bsr_mm_tuned.py
#     bench_bsr     --preset bsr --ops bsr_mm (vs cuBLAS and torch's BSR kernel); uses tune_bsr's table when run
#                   after it in the same call (SPARSEKERN_BSR_MM_TUNED), else autotunes every shape first (~3 min)
#     tune          --preset gpu-tune with every forced CSR kernel variant as an extra method
#
# Stages after `build` build first when the extension is missing or older than csrc/ (a machine handed back
# between calls). A failing stage does not stop the next; the exit status is 1 when any stage failed.
#
# Environment: OUT (where results go: the device tool's folder; else bench/results/gpu_check), PYTHON (else
# .venv/bin/python when present, else python3: a CUDA build of torch with triton, pytest, ninja and setuptools;
# nothing is downloaded), GPU_CHECK_BUDGET_S (seconds this call may take: a stage that would not fit its
# estimate is skipped, a running one is interrupted at the limit and its partial report kept), GPU_CHECK_REP_MS
# (bench --rep-ms: ms of calls timed per method and case, default 50), GPU_CHECK_ARCH (TORCH_CUDA_ARCH_LIST),
# MAX_JOBS (default 16), GPU_CHECK_DRY_RUN=1 (print the commands instead of running them).
#
# Results: $OUT gets at most 8 files: gpu_check_summary.txt (one line per stage: status, seconds, outcome),
# gpu_check_logs.tar.gz (every log, JUnit XML, sanitizer report, JSON), each benchmark's JSON as <stage>-<name>.json,
# and bsr_mm_tuned.py. They are rewritten after every stage, so a call cut off still returns what it finished.
#
# Device plan (H100, 30 min of device time, 10 min per command). Estimates per stage (EST below, seconds):
# build 150 (nvcc for sm_90a only, csr_mm.cu the longest at ~1 min); test 300 (~1140 tests, ~350 Triton
# compiles at ~0.4 s); memcheck 130 + racecheck 90 (about 25 s of start-up each under the sanitizer); bench_mm
# 320 (120 cases x 6 methods, ~0.075 s per do_bench at rep 50 ms with L2 flushes, plus the bitmap kernel's
# autotuning: 24 shapes x 24-32 candidates timed over 25 ms each and ~250 compiles); bench_linear 80;
# bench_semi24 40 (42 cases x 3 methods); tune_bsr 210 (48 shapes x ~21 candidates: ~380 compiles, ~1000
# timings of 30 ms); bench_bsr 95 with the tuned table (192 cases x 3 methods). Three calls, back to back (run
# with timeout_s=600), then give the machine back:
#   1. (~8.3 min) GPU_CHECK_BUDGET_S=540 bench/gpu_check.sh info build test bench_semi24
#   2. (~6.7 min) GPU_CHECK_BUDGET_S=540 bench/gpu_check.sh bench
#   3. (~8.8 min) GPU_CHECK_BUDGET_S=540 bench/gpu_check.sh sanitize tune_bsr bench_bsr
# About 24 min of commands: with the machine's start and the pauses between calls this uses nearly all of the
# 30 min, so make the calls without delay. A stage skipped for time (see the summary) goes first in the next
# call; on a machine handed back between calls the next call builds again first (150 s).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi

# nvcc and compute-sanitizer where a CUDA image keeps them, for a PATH without them
for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do
  [ -d "$d" ] && case ":$PATH:" in *":$d:"*) ;; *) PATH=$PATH:$d ;; esac
done
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
DEST=${OUT:-bench/results/gpu_check}
LOG=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
SUMMARY=$LOG/gpu_check_summary.txt
BUDGET=${GPU_CHECK_BUDGET_S:-0}
REP_MS=${GPU_CHECK_REP_MS:-50}
DRY=${GPU_CHECK_DRY_RUN:-0}
mkdir -p "$DEST"
failed=0
built=0

OP_TESTS=(tests/test_*mm*.py tests/test_ops.py)
# Sanitizer selections (pytest -k; parametrize ids dtype0/1/2 are float32/float16/bfloat16, conftest.DTYPES):
MEMCHECK_K="sanitizer_sweep or garbage or misaligned or index_widths or clamps_row_pointers"  # CSR: 11 tests
MEMCHECK_K+=" or semi24_decode_and_tc or semi24_cuda_unaligned or (float64_reference and cuda-semi24)"  # 2:4: 13
MEMCHECK_K+=" or bsr_linear_and_padding or bsr_split_k or (bsr_mm_cuda and 0.1 and dtype1)"      # BSR: 34
MEMCHECK_K+=" or bsr_bad_row_pointers or bsr_blocks_over_128"
MEMCHECK_K+=" or csr_bitmap_inconsistent_bitmap or (float64_reference and cuda-csr_bitmap)"    # bitmap: 3
RACECHECK_K="sanitizer_sweep or (float64_reference and cuda-semi24_mm)"  # 1 + 1 test (every semi24_mm sample)
SANITIZER=(compute-sanitizer --error-exitcode 99 --print-limit 20)

# Seconds a stage needs; with GPU_CHECK_BUDGET_S, a stage is skipped when less than this is left.
declare -A EST=([info]=10 [build]=150 [test]=300 [test_cpu]=90 [memcheck]=130 [racecheck]=90 [bench_mm]=320
                [bench_linear]=80 [bench_semi24]=40 [tune_bsr]=210 [bench_bsr]=95 [tune]=110)

# run NAME CMD...: runs CMD (a program, or a function of this script) with its output in $LOG/NAME.log and its
# tail shown; a program within the time left.
run() {
  local name=$1 rc left=$((BUDGET - SECONDS))
  shift
  if [ "$DRY" = 1 ]; then
    printf '%q ' "$@"
    echo
    return 0
  fi
  if [ "$BUDGET" -gt 0 ] && [ "$left" -le 0 ]; then
    echo "$name: no time left"
    return 124
  elif [ "$BUDGET" -gt 0 ] && [ "$(type -t "$1")" = file ] && command -v timeout >/dev/null; then
    # SIGINT first: pytest still writes its summary and JUnit report
    timeout -s INT -k 20 "$left" "$@" >"$LOG/$name.log" 2>&1
  else
    "$@" >"$LOG/$name.log" 2>&1
  fi
  rc=$?
  tail -n "${TAIL:-8}" "$LOG/$name.log"
  [ "$rc" = 124 ] && echo "$name: interrupted at the time budget"
  return "$rc"
}

# The extension is importable and every op has its GPU backend.
check_backends() {
  [ "$DRY" = 1 ] && return 0
  "$PY" - <<'EOF'
import sparsekern as sk

info = sk.backends()
gpu = info["gpu_backend"]
print("extension:", info["extension"], "| triton", info["triton"], "| gpu", info["gpu"])
print("gpu backends:", gpu)
want = {**dict.fromkeys(["csr_mm", "csr_linear", "csr_sddmm", "semi24_mm", "semi24_linear"], "cuda"),
        **dict.fromkeys(["bsr_mm", "bsr_linear", "csr_bitmap_mm", "csr_bitmap_linear"], "triton")}
wrong = {op: gpu.get(op) for op, backend in want.items() if gpu.get(op) != backend}
assert not wrong, f"GPU backends not as expected (want {want}): {wrong}"
assert info["triton"], "triton is not importable: the BSR and bitmap ops have no GPU backend"
EOF
}

sources_sum() { cat setup.py pyproject.toml $(find csrc -type f | sort) | sha256sum | cut -d' ' -f1; }

versions() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton',
    triton.__version__, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))"
  nvcc --version | tail -1
  compute-sanitizer --version | head -2
}

info() {
  TAIL=10 run info versions
}

build() {
  local arch=${GPU_CHECK_ARCH:-9.0a}
  if [ -z "${GPU_CHECK_ARCH:-}" ] && [ "$DRY" != 1 ]; then
    arch=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))") || return 1
    [ "$arch" = "9.0" ] && arch=9.0a
  fi
  local env=(env TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-16}")
  echo "building for TORCH_CUDA_ARCH_LIST=$arch with $PY"
  if ! TAIL=3 run build "${env[@]}" "$PY" -m pip install -q --no-build-isolation --no-deps -e .; then
    # A compile error fails both ways; anything else (no pip, a setuptools without editable installs) need not:
    # the extension built in place serves pytest and `python -m` run from the root.
    grep -qE "ninja: build stopped|error: command .* failed" "$LOG/build.log" && return 1
    TAIL=3 run build_inplace "${env[@]}" "$PY" setup.py build_ext --inplace || return 1
  fi
  TAIL=3 run backends check_backends || return 1
  [ "$DRY" = 1 ] || { mkdir -p build && sources_sum >build/gpu_check.stamp; }
  built=1
}

# Builds unless this call built already or the last build is of the current sources and passes the checks.
ensure_built() {
  [ "$built" = 1 ] && return 0
  if [ "$DRY" != 1 ] && [ "$(cat build/gpu_check.stamp 2>/dev/null)" = "$(sources_sum)" ] \
    && check_backends >"$LOG/backends.log" 2>&1; then
    built=1
    return 0
  fi
  build
}

pytest_run() {  # pytest_run NAME [pytest args...]
  local name=$1
  shift
  TAIL=${TAIL:-12} run "$name" env SPARSEKERN_AUTOTUNE=0 "$PY" -m pytest -q -p no:cacheprovider \
    --junitxml="$LOG/$name.xml" "$@"
}

test_() {
  ensure_built || return 1
  pytest_run test_gpu -m "cuda or triton" --durations=15 "${OP_TESTS[@]}"
}

test_cpu() {
  ensure_built || return 1
  pytest_run test_cpu -m "not cuda and not triton" "${OP_TESTS[@]}" tests/test_formats*.py
}

memcheck() {
  ensure_built || return 1
  TAIL=15 run memcheck env PYTORCH_NO_CUDA_MEMORY_CACHING=1 SPARSEKERN_AUTOTUNE=0 "${SANITIZER[@]}" --tool memcheck \
    "$PY" -m pytest -q -p no:cacheprovider --junitxml="$LOG/memcheck.xml" -m "cuda or triton" \
    tests/test_csr_mm_gpu.py tests/test_semi24_mm.py tests/test_bsr_mm.py tests/test_csr_bitmap_mm.py tests/test_ops.py \
    -k "$MEMCHECK_K"
}

racecheck() {
  ensure_built || return 1
  TAIL=10 run racecheck env SPARSEKERN_AUTOTUNE=0 "${SANITIZER[@]}" --tool racecheck \
    "$PY" -m pytest -q -p no:cacheprovider --junitxml="$LOG/racecheck.xml" -m cuda \
    tests/test_csr_mm_gpu.py tests/test_ops.py -k "$RACECHECK_K"
}

bench_op() {  # bench_op NAME PRESET OP [extra bench args...]: JSON in $LOG/NAME/
  local name=$1 preset=$2 op=$3
  shift 3
  ensure_built || return 1
  # TRITON_CACHE_AUTOTUNING: a Triton kernel's autotuning choices on disk, reused by the next bench process
  TAIL=4 run "$name" env TRITON_CACHE_AUTOTUNING=1 "$PY" -m sparsekern bench --preset "$preset" --ops "$op" \
    --rep-ms "$REP_MS" --out "$LOG/$name" "$@"
}

tune_bsr() {
  ensure_built || return 1
  TAIL=3 run tune_bsr "$PY" -m sparsekern._triton.bsr_mm_tune --shapes 4096x4096,11008x4096 --ns 1,16,128,4096 \
    --blocks 16,32,64 --dtypes float16,bfloat16 --out "$LOG/bsr_mm_tuned.py"
}

bench_bsr() {
  local tuned=${SPARSEKERN_BSR_MM_TUNED:-}
  [ -z "$tuned" ] && [ -f "$LOG/bsr_mm_tuned.py" ] && tuned=$LOG/bsr_mm_tuned.py
  echo "bsr_mm tuned table: ${tuned:-none (autotuning every shape first)}"
  SPARSEKERN_BSR_MM_TUNED=$tuned bench_op bench_bsr bsr bsr_mm
}

tune() {
  bench_op tune gpu-tune csr_mm,csr_linear \
    --variants nz:4,nz:8,nz:16,nz:32,nz:32:global,nz:32:staged,rows:8,rows:16,rows:32
}

# One line per stage: status, seconds, what its log says about the outcome.
outcome() {
  local log=$LOG/$1.log
  [ -f "$log" ] || return 0
  { grep -E "^=* *[0-9]+ (passed|failed|error|skipped|deselected).* in [0-9.]+s" "$log" | tail -1
    grep -E "ERROR SUMMARY" "$log" | tr '\n' ' '
    grep -cE "RESULT MISMATCH" "$log" | sed -n 's/^\([1-9][0-9]*\)$/\1 RESULT MISMATCH rows/p'
    grep -E "^wrote " "$log"; } | tr '\n' ' '
}

# Everything in $LOG as one archive, plus the JSON results and the tuned table as files of their own.
bundle() {
  [ "$DRY" = 1 ] && return 0
  tar czf "$DEST/gpu_check_logs.tar.gz" -C "$LOG" .
  cp "$SUMMARY" "$DEST/"
  [ -f "$LOG/bsr_mm_tuned.py" ] && cp "$LOG/bsr_mm_tuned.py" "$DEST/"
  local json
  for json in "$LOG"/*/*.json; do
    [ -f "$json" ] && cp "$json" "$DEST/$(basename "$(dirname "$json")")-$(basename "$json")"
  done
  return 0
}

stage() {  # stage NAME FUNCTION [args...]
  local name=$1 fn=$2 t0=$SECONDS status
  shift 2
  if [ "$BUDGET" -gt 0 ] && [ $((BUDGET - SECONDS)) -lt "${EST[$name]:-60}" ]; then
    status="SKIPPED (time: $((BUDGET - SECONDS)) s left, needs ~${EST[$name]:-60} s)"
  else
    echo
    echo "=== $name ($(date +%T))"
    if "$fn" "$@"; then status=ok; else status="FAILED (rc $?)"; failed=1; fi
  fi
  printf '%-13s %-40s %5d s  %s\n' "$name" "$status" $((SECONDS - t0)) "$(outcome "$name")" | tee -a "$SUMMARY"
  bundle
}

[ $# -eq 0 ] && set -- info build test sanitize bench bench_semi24 tune_bsr bench_bsr
echo "gpu_check: logs in $LOG, results to $DEST, python $PY, budget ${BUDGET} s"
for s in "$@"; do
  case "$s" in
    info) stage info info ;;
    build) stage build build ;;
    test) stage test test_ ;;
    test_cpu) stage test_cpu test_cpu ;;
    sanitize) stage memcheck memcheck; stage racecheck racecheck ;;
    memcheck) stage memcheck memcheck ;;
    racecheck) stage racecheck racecheck ;;
    bench) stage bench_mm bench_op bench_mm gpu csr_mm; stage bench_linear bench_op bench_linear gpu csr_linear ;;
    bench_mm) stage bench_mm bench_op bench_mm gpu csr_mm ;;
    bench_linear) stage bench_linear bench_op bench_linear gpu csr_linear ;;
    bench_semi24) stage bench_semi24 bench_op bench_semi24 semi24 semi24_mm ;;
    tune_bsr) stage tune_bsr tune_bsr ;;
    bench_bsr) stage bench_bsr bench_bsr ;;
    tune) stage tune tune ;;
    *) echo "gpu_check.sh: unknown stage '$s'" >&2; exit 2 ;;
  esac
done
echo
echo "=== summary ($SECONDS s)"
cat "$SUMMARY"
exit "$failed"
