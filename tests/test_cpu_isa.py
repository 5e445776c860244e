"""The AVX2 and baseline CPU kernel variants, which a machine with AVX-512 never picks on its own, run in
subprocesses with SPARSEKERN_CPU_ISA capping the choice (read once per process): a quick check that the capped
variant is the one running, then the CPU tests of every op file under it."""

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import torch, sparsekern as sk
torch.manual_seed(0)

def close(out, ref, k):
    tol = 1e-5 * max(1.0, k ** 0.5)
    err = (out.double() - ref).abs().max().item() if out.numel() else 0.0
    assert err <= tol * (1 + ref.abs().max().item()), (err, out.shape)

M, K = 45, 131
W = torch.randn(M, K)
W[torch.rand(M, K) < 0.6] = 0
W[3] = 0
for N in (1, 2, 3, 4, 5, 70):
    B = torch.randn(K, N)
    ref = W.double() @ B.double()
    A = sk.CSRMatrix.from_dense(W, bitmap=True)
    close(torch.ops.sparsekern.csr_mm(A.crow_indices, A.col_indices, A.values, B, None), ref, K)
    close(torch.ops.sparsekern.csr_bitmap_mm(A.crow_indices, A.col_indices, A.values, A.bitmap, B), ref, K)
    close(sk.ops.sparse_linear(B.t(), A), ref.t(), K)
    close(sk.ops.bsr_mm(sk.BSRMatrix.from_dense(W, blocksize=(16, 32)), B), ref, K)
    W24 = W * sk.pruning.nm_mask(W, n=2, m=4)
    close(sk.ops.semi24_mm(sk.Semi24Matrix.from_dense(W24), B), W24.double() @ B.double(), K)
print(sk.backends()["cpu_isa"])
"""


ORDER = ["base", "avx2", "avx512"]


@pytest.mark.parametrize("isa", ["avx2", "base"])
def test_cpu_kernel_variant(isa):
    import sparsekern as sk

    native = sk.backends()["cpu_isa"]
    expected = ORDER[min(ORDER.index(isa), ORDER.index(native))]
    env = {**os.environ, "SPARSEKERN_CPU_ISA": isa}
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == expected  # the capped variant is the one that ran


@pytest.mark.parametrize("isa", ["avx2", "base"])
def test_cpu_op_suites_under_variant(isa):
    """The CPU tests of every op file, in a pytest subprocess that runs the capped variant (~12 s each on a quiet
    machine, ~2.5 min on a loaded 2-core one)."""
    import sparsekern as sk

    if sk.backends()["cpu_isa"] == isa:
        pytest.skip(f"{isa} is this CPU's own variant: the op files in this run already test it")
    here = os.path.dirname(os.path.abspath(__file__))
    files = [os.path.join(here, f) for f in ("test_ops.py", "test_csr_mm.py", "test_csr_bitmap_mm.py", "test_bsr_mm.py",
                                             "test_semi24_mm.py")]
    env = {**os.environ, "SPARSEKERN_CPU_ISA": isa}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not triton and not cuda", *files]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(here))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
