#!/usr/bin/env bash
# One-shot GPU validation of the CSR kernels, for a session with a CUDA machine and little device time:
#
#   bench/gpu_check.sh [stage ...]      stages, in the order given (default: info build test sanitize bench)
#     info       GPU, driver, torch/triton/nvcc/compute-sanitizer versions
#     build      builds the extension for this GPU only (TORCH_CUDA_ARCH_LIST = its capability, 9.0a on Hopper)
#                and checks that csr_mm / csr_linear / csr_sddmm dispatch to the compiled CUDA kernels
#     test       the CUDA and Triton tests of csr_mm (every forced kernel variant, poisoned outputs), then the
#                CPU-side csr_mm / format tests as a regression check
#     sanitize   compute-sanitizer memcheck (with PyTorch's caching allocator off, so out-of-tensor accesses
#                are reported) on a sweep of every kernel instantiation and on garbage input; racecheck on the
#                kernels that use shared memory
#     bench      python -m sparsekern bench --preset gpu (csr_mm and csr_linear, fp16/bf16, vs cuBLAS and
#                cuSPARSE in the same process, plus the Triton kernels beside the CUDA ones)
#     bench_mm / bench_linear   the two halves of `bench`, if one command may not run long enough for both
#     tune       --preset gpu-tune with every forced kernel variant as an extra method (SPARSEKERN_CSR_MM_CONFIG)
#
# Logs and JSON go to $OUT when set (the device tool's folder that comes back), else bench/results/gpu_check.
# The interpreter is $PYTHON, else .venv/bin/python when present, else python3; it needs a CUDA build of torch
# with triton, pytest, ninja and setuptools installed (nothing is downloaded here).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
LOG=${OUT:-bench/results/gpu_check}
mkdir -p "$LOG"
CSR_TESTS=(tests/test_csr_mm_gpu.py tests/test_csr_mm.py)

stage() { echo; echo "=== $1 ($(date +%T))"; }

info() {
  stage info
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv || true
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__,
      torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))"
  nvcc --version | tail -1 || true
  compute-sanitizer --version | head -2 || true
}

build() {
  stage build
  local cap
  cap=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))")
  [ "$cap" = "9.0" ] && cap=9.0a
  local t0=$SECONDS
  TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$cap} MAX_JOBS=${MAX_JOBS:-16} \
    "$PY" -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tee "$LOG/build.log"
  echo "build: $((SECONDS - t0)) s for arch $cap"
  "$PY" - <<'EOF'
import sparsekern as sk
info = sk.backends()
print(info)
gpu = info["gpu_backend"]
missing = [op for op in ("csr_mm", "csr_linear", "csr_sddmm") if gpu.get(op) != "cuda"]
assert not missing, f"these ops have no compiled CUDA kernel: {missing} ({info['extension']})"
EOF
}

test_() {
  stage test
  "$PY" -m pytest -q -p no:cacheprovider -m "cuda or triton" "${CSR_TESTS[@]}" --junitxml="$LOG/test_gpu.xml" \
    2>&1 | tee "$LOG/test_gpu.log" | tail -25
  "$PY" -m pytest -q -p no:cacheprovider -m "not cuda and not triton" "${CSR_TESTS[@]}" tests/test_formats.py \
    2>&1 | tee "$LOG/test_cpu.log" | tail -5
}

sanitize() {
  stage sanitize
  local common=(--error-exitcode 99 --target-processes all --print-limit 20)
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck "${common[@]}" \
    "$PY" -m pytest -q -x -p no:cacheprovider tests/test_csr_mm_gpu.py \
    -k "sanitizer_sweep or garbage or misaligned or index_widths" 2>&1 | tee "$LOG/memcheck.log" | tail -15
  compute-sanitizer --tool racecheck "${common[@]}" \
    "$PY" -m pytest -q -x -p no:cacheprovider tests/test_csr_mm_gpu.py -k "sanitizer_sweep" \
    2>&1 | tee "$LOG/racecheck.log" | tail -8
}

bench_ops() {
  stage "bench $1"
  "$PY" -m sparsekern bench --preset gpu --ops "$1" --out "$LOG" 2>&1 | tee "$LOG/bench_$1.log"
}

tune() {
  stage tune
  "$PY" -m sparsekern bench --preset gpu-tune --ops csr_mm,csr_linear --out "$LOG" \
    --variants nz:4,nz:8,nz:16,nz:32,nz:32:global,nz:32:staged,rows:8,rows:16,rows:32 2>&1 | tee "$LOG/tune.log"
}

[ $# -eq 0 ] && set -- info build test sanitize bench
for s in "$@"; do
  case "$s" in
    info) info ;;
    build) build ;;
    test) test_ ;;
    sanitize) sanitize ;;
    bench) bench_ops csr_mm; bench_ops csr_linear ;;
    bench_mm) bench_ops csr_mm ;;
    bench_linear) bench_ops csr_linear ;;
    tune) tune ;;
    *) echo "gpu_check.sh: unknown stage '$s'" >&2; exit 2 ;;
  esac
done
