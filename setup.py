"""Build sparsekern._C: the C++ CPU kernels always, the CUDA kernels when torch is a CUDA build and nvcc exists.

Needs torch already installed: `pip install --no-build-isolation -e .`
"""

import glob
import os
import runpy
import shutil

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _constant_defines():
    """-DSPARSEKERN_<NAME>=<value> for each constant of sparsekern/_constants.py (csrc/constants.h reads them), loaded
    by path: the package itself needs the extension this script builds."""
    constants = runpy.run_path(os.path.join(ROOT, "sparsekern", "_constants.py"))
    return [f"-DSPARSEKERN_{k}={v}" for k, v in sorted(constants.items()) if k.isupper() and type(v) is int]


def _with_cuda():
    if os.environ.get("SPARSEKERN_NO_CUDA") == "1":
        return False
    return torch.version.cuda is not None and (
        shutil.which("nvcc") is not None or os.environ.get("CUDA_HOME") is not None
    )


defines = _constant_defines()
cxx_flags = ["-O3", "-g0", "-fopenmp", "-DAT_PARALLEL_OPENMP=1", *defines]
sources = ["csrc/sparsekern.cpp", *_sources("csrc/cpu/*.cpp")]
ext_kwargs = dict(extra_link_args=["-fopenmp"], include_dirs=[os.path.join(ROOT, "csrc")])

if _with_cuda():
    sources += _sources("csrc/cuda/*.cu")
    # sm_80 covers mma.sp and cp.async; sm_90a adds the Hopper-only paths. Override with TORCH_CUDA_ARCH_LIST.
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0a")
    ext = CUDAExtension(
        "sparsekern._C",
        sources,
        extra_compile_args={
            "cxx": cxx_flags + ["-DSPARSEKERN_WITH_CUDA"],
            "nvcc": ["-O3", "--expt-relaxed-constexpr", "-lineinfo", "-DSPARSEKERN_WITH_CUDA", *defines],
        },
        **ext_kwargs,
    )
else:
    ext = CppExtension("sparsekern._C", sources, extra_compile_args={"cxx": cxx_flags}, **ext_kwargs)

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
