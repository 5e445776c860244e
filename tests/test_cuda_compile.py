"""Every CUDA source compiles with nvcc against torch's headers: for sm_80, and for sm_90a where the file
asks for it (a line `// sparsekern-arch: sm_90a`), with the -D defines setup.py derives from sparsekern/_constants.py.
Every CUDA header is compiled through some source. Runs on CPU-only machines; skipped only without nvcc."""

import os
import re
import runpy
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
from torch.utils.cpp_extension import include_paths

ROOT = Path(__file__).resolve().parent.parent
CU_FILES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
CUDA_HEADERS = sorted(p for ext in ("*.cuh", "*.h") for p in (ROOT / "csrc" / "cuda").rglob(ext))
NVCC = shutil.which("nvcc")
# As setup.py: -DSPARSEKERN_<NAME>=<value> per constant (csrc/constants.h #errors without them).
CONSTANTS = runpy.run_path(str(ROOT / "sparsekern" / "_constants.py"))
DEFINES = [f"-DSPARSEKERN_{k}={v}" for k, v in sorted(CONSTANTS.items()) if k.isupper() and type(v) is int]

FLAGS = [
    "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE", "-D_GLIBCXX_USE_CXX11_ABI=1", "-DTORCH_EXTENSION_NAME=_C",
    "-std=c++20", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr", "-O3",
    "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
]


def _archs(path: Path) -> list[str]:
    extra = re.findall(r"//\s*sparsekern-arch:\s*(sm_\w+)", path.read_text())
    return ["sm_80", *extra]


CASES = [(p, arch) for p in CU_FILES for arch in _archs(p)]


def test_there_are_cuda_sources():
    assert CU_FILES, "csrc/cuda/*.cu not found"
    assert "-DSPARSEKERN_DECODE_MAX_N=16" in DEFINES


def test_every_cuda_header_is_included():
    # A header no source includes would never be compiled here (nor built into the extension).
    text = "\n".join(p.read_text() for p in [*CU_FILES, *CUDA_HEADERS])
    included = set(re.findall(r'#include\s+"cuda/([^"]+)"', text))
    orphans = [h.name for h in CUDA_HEADERS if h.relative_to(ROOT / "csrc" / "cuda").as_posix() not in included]
    assert CUDA_HEADERS and not orphans, f"CUDA headers included nowhere: {orphans}"


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("path,arch", CASES, ids=[f"{p.name}-{a}" for p, a in CASES])
def test_nvcc_compiles(path, arch, tmp_path):
    compute = arch.replace("sm_", "compute_")
    cmd = [
        NVCC, "-c", str(path), "-o", str(tmp_path / "out.o"),
        *(f"-I{p}" for p in include_paths()), f"-I{sysconfig.get_paths()['include']}", f"-I{ROOT / 'csrc'}",
        *FLAGS, *DEFINES, "-gencode", f"arch={compute},code={arch}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ}, timeout=600)
    assert proc.returncode == 0, f"nvcc failed for {path.name} ({arch}):\n{proc.stderr[-4000:]}"
