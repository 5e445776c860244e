#!/usr/bin/env bash
# The project's commands:
#   ./run.sh demo [options]     prune real architectures, sparsify_ them, check and time against dense
#   ./run.sh test [pytest args] the test suite
#   ./run.sh bench [options]    the kernel microbenchmark (python -m sparsekern bench; --modules for the modules)
#   ./run.sh tune               measure this machine's crossovers for format="auto" (python -m sparsekern tune)
# Each creates or reuses a virtual environment (.venv, or $SPARSEKERN_VENV), installs what is missing, and
# rebuilds the extension when its sources changed. A torch already installed on the machine (a CUDA build on
# a GPU machine, say) is reused; otherwise the CPU build torch==2.13.0 is installed.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${SPARSEKERN_VENV:-.venv}
PY=$VENV/bin/python

setup() {
  if [ ! -x "$PY" ]; then
    if python3 -c "import torch" 2>/dev/null; then
      python3 -m venv --system-site-packages "$VENV"
    else
      python3 -m venv "$VENV"
    fi
  fi
  "$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q torch==2.13.0
  "$PY" -c "import numpy, pytest, pytest_benchmark, hypothesis, ninja, setuptools" 2>/dev/null \
    || "$PY" -m pip install -q numpy pytest pytest-benchmark hypothesis ninja setuptools wheel
  "$PY" -c "import transformers, safetensors" 2>/dev/null \
    || "$PY" -m pip install -q transformers==5.24.0 safetensors==0.8.0
  "$PY" -c "import triton" 2>/dev/null || "$PY" -m pip install -q "triton>=3.2" \
    || echo "run.sh: triton could not be installed; Triton kernels and their tests are skipped" >&2
  local stamp="$VENV/.sparsekern-build" sum
  sum=$(cat setup.py pyproject.toml sparsekern/_constants.py $(find csrc -type f | sort) | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ] || ! "$PY" -c "import sparsekern._C" 2>/dev/null; then
    echo "run.sh: building sparsekern (C++/CUDA extension)..." >&2
    "$PY" -m pip install -q --no-build-isolation --no-deps -e .
    echo "$sum" >"$stamp"
  fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  test) setup; exec "$PY" -m pytest -q "$@" ;;
  bench | demo | tune) setup; exec "$PY" -m sparsekern "$cmd" "$@" ;;
  *) echo "usage: ./run.sh {demo|test|bench|tune} [args]" >&2; exit 2 ;;
esac
