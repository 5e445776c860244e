"""One list of sample inputs per op, the arguments of `torch.ops.sparsekern.<op>` as its schema orders them, on any
device: what tests/test_ops.py checks against a float64 dense reference, runs through torch.library.opcheck and
compiles, on the CPU and (when present) the GPU. The model is pytorch/extension-cpp's `sample_inputs(device)`.

Here in tests/ rather than in the package: only the tests use it, and its generators (random_24,
random_block_sparse) live with the format tests.

Each family's list crosses odd shapes (1, 7, 33, 257, 1000), the densities that reach a kernel's edge cases (all
zero, fully dense, empty rows or block rows, a single stored entry) and every dtype, once per dtype rather than
as a full cross product; zero-sized operands come once, in fp32. Per op the list also holds the variants its
schema allows: compact (int16) columns, int64 indices, a row order, a bias or none, strided operands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from conftest import DTYPES, random_sparse
from test_formats_bsr import random_block_sparse
from test_semi24_mm import random_24

import sparsekern as sk

CSR_OPS = ("csr_mm", "csr_linear", "csr_sddmm")
BITMAP_OPS = ("csr_bitmap_mm", "csr_bitmap_linear")
BSR_OPS = ("bsr_mm", "bsr_linear")
SEMI24_OPS = ("semi24_mm", "semi24_linear")
OPS = CSR_OPS + BITMAP_OPS + BSR_OPS + SEMI24_OPS


@dataclass
class Sample:
    op: str
    name: str
    args: tuple
    expected: Callable[[], torch.Tensor]  # the float64 result, from the dense form of the same (rounded) inputs
    k: int  # products summed per output element (sets the tolerance)
    dtype: torch.dtype
    mkn: tuple[int, int, int]  # the product's (M, K, N)

    @property
    def tol(self) -> torch.dtype:
        """The dtype whose tolerance applies: fp32 tensor-core products on a GPU (the BSR and bitmap Triton
        kernels) run as TF32, a 10-bit mantissa like fp16's (sparsekern._triton.configs.FP32_INPUT_PRECISION)."""
        tf32 = self.dtype == torch.float32 and self.op in BSR_OPS + BITMAP_OPS and self.args[0].is_cuda
        return torch.float16 if tf32 else self.dtype


# (M, K, N, density): shapes odd on every side, each density once per dtype.
_CSR_CASES = [(1, 1, 1, 1.0), (7, 33, 5, 0.5), (40, 64, 1, "empty rows"), (33, 7, 257, 0.0), (257, 1000, 33, 0.1),
              (1000, 257, 7, 0.01), (1000, 1000, 65, 0.1)]
_ZERO_SIZED = [(0, 5, 3), (4, 0, 3), (4, 0, 1), (4, 5, 0), (0, 0, 0)]


def _matrix(M, K, density, dtype, device):
    if density == "empty rows":
        W = random_sparse(M, K, 0.5, dtype)
        W[::3] = 0
        W[:, 5:20] = 0  # columns never referenced
        return W.to(device)
    return random_sparse(M, K, 1.0 - density, dtype, device)


def _product(op, name, i, W, head, tail, N, device) -> Sample:
    """The sample of a product op whose schema is (*head, B, *tail) for `_mm` and (x, *head, bias, *tail) for
    `_linear`. Case i alternates the operand variants: B row- or column-major (the kernels read it through its
    strides), a bias or none."""
    dtype, (M, K) = W.dtype, W.shape
    Wd = W.double()
    if op.endswith("_mm"):
        B = torch.randn(K, N) if i % 2 else torch.randn(N, K).t()
        B = B.to(dtype).to(device)
        return Sample(op, name, (*head, B, *tail), lambda: Wd @ B.double(), K, dtype, (M, K, N))
    x = torch.randn(N, K).to(dtype).to(device)
    bias = torch.randn(M).to(dtype).to(device) if i % 2 == 0 else None
    return Sample(op, name, (x, *head, bias, *tail),
                  lambda: x.double() @ Wd.T + (0 if bias is None else bias.double()), K, dtype, (M, K, N))


def _cases(cases, zero_sized_extra):
    """Each case once per dtype, then the zero-sized operands once in fp32."""
    return [(dtype, *c) for dtype in DTYPES for c in cases] + [(torch.float32, *s, *zero_sized_extra)
                                                               for s in _ZERO_SIZED]


def _csr_family(op: str, device) -> list[Sample]:
    out = []
    bitmap = op in BITMAP_OPS
    for i, (dtype, M, K, N, density) in enumerate(_cases(_CSR_CASES, (0.5,))):
        W = _matrix(M, K, density, dtype, device)
        # Alternate the index variants over the cases: compact columns, int64 indices, the row order.
        col_dtype = torch.int16 if i % 3 == 1 and not bitmap else None
        index_dtype = torch.int64 if i % 3 == 2 and not bitmap else None
        A = sk.CSRMatrix.from_dense(W, index_dtype=index_dtype, col_dtype=col_dtype, bitmap=bitmap)
        crow, col = A.crow_indices, A.col_indices
        name = f"{op}-{str(dtype)[6:]}-{M}x{K}x{N}-{density}"
        if op == "csr_sddmm":  # G as a transposed view, as the csr_linear backward passes it
            G = (torch.randn(M, N) if i % 2 else torch.randn(N, M).t()).to(dtype).to(device)
            B = torch.randn(K, N).to(dtype).to(device)
            out.append(Sample(op, name, (crow, col, G, B), lambda W=W, G=G, B=B: (G.double() @ B.double().T)[W != 0],
                              N, dtype, (M, K, N)))
        elif bitmap:  # (crow, col, val, bitmap, B) and (x, crow, col, val, bitmap, bias)
            out.append(_product(op, name, i, W, (crow, col, A.values, A.bitmap), (), N, device))
        else:  # (crow, col, val, B, row_order) and (x, crow, col, val, bias, row_order)
            out.append(_product(op, name, i, W, (crow, col, A.values), (A.row_order if i % 2 else None,), N, device))
    return out


# (M, K, N, blocksize, density): every block shape the kernels specialise (square, tall, wide, over 128, odd),
# edge blocks cut by M and K.
_BSR_CASES = [(1, 1, 1, (16, 16), 1.0), (33, 70, 5, (32, 32), 0.5), (61, 83, 17, (3, 5), 0.6),
              (200, 300, 64, (128, 32), 0.7), (257, 130, 33, (16, 64), 0.5), (130, 140, 9, (64, 64), 0.0),
              (40, 50, 100, (128, 128), 1.0)]


def _bsr_family(op: str, device) -> list[Sample]:
    out = []
    for i, (dtype, M, K, N, blocksize, density) in enumerate(_cases(_BSR_CASES, ((16, 16), 0.5))):
        W = random_block_sparse(M, K, blocksize, density, dtype, device)
        A = sk.BSRMatrix.from_dense(W, blocksize, index_dtype=torch.int64 if i % 3 == 2 else None)
        name = f"{op}-{str(dtype)[6:]}-{M}x{K}x{N}-{blocksize[0]}x{blocksize[1]}-{density}"
        # (crow, col, val, M, B) and (x, crow, col, val, M, bias)
        out.append(_product(op, name, i, W, (A.crow_indices, A.col_indices, A.values, M), (), N, device))
    return out


# (M, K, N, fill): N = 1 (the CPU gather path), N = 16 (the widest decode on GPU), N not a multiple of 16 (padded
# columns), N = 1100 (several row panels), K tails inside a k32 step, a partial last 32-row block.
_SEMI24_CASES = [(1, 1, 1, "full"), (70, 300, 1, "partial"), (7, 33, 5, "partial"), (33, 7, 65, "zero"),
                 (129, 190, 16, "full"), (100, 250, 17, "partial"), (37, 131, 130, "partial"), (300, 64, 1100, "full")]


def _semi24_family(op: str, device) -> list[Sample]:
    out = []
    for i, (dtype, M, K, N, fill) in enumerate(_cases(_SEMI24_CASES, ("partial",))):
        W = random_24(M, K, dtype, fill, device) if M and K else torch.zeros(M, K, dtype=dtype, device=device)
        A = sk.Semi24Matrix.from_dense(W)
        name = f"{op}-{str(dtype)[6:]}-{M}x{K}x{N}-{fill}"
        # (values, metadata, B) and (x, values, metadata, bias)
        out.append(_product(op, name, i, W, (A.values, A.metadata), (), N, device))
    return out


def sample_inputs(op: str, device="cpu") -> list[Sample]:
    """The samples of `torch.ops.sparsekern.<op>` on `device` (fresh random values each call)."""
    if op in CSR_OPS or op in BITMAP_OPS:
        return _csr_family(op, device)
    if op in BSR_OPS:
        return _bsr_family(op, device)
    if op in SEMI24_OPS:
        return _semi24_family(op, device)
    raise KeyError(op)


def small_inputs(op: str, device="cpu") -> list[tuple]:
    """The fp32 samples of `op` with M, K, N in 1..99, in list order: [1] has compact columns (CSR) and A's row
    order, [2] int64 indices (CSR, BSR)."""
    return [s.args for s in sample_inputs(op, device) if s.dtype == torch.float32 and 0 < min(s.mkn)
            and max(s.mkn) < 100]


def opcheck_inputs(op: str, device="cpu") -> list[tuple]:
    """Two small fp32 samples of `op` for torch.library.opcheck: one with every float input requiring grad (the
    autograd registration), one without (the plain kernel), each with the index variants of its position."""
    small = small_inputs(op, device)
    with_grad = tuple(t.detach().clone().requires_grad_(True) if isinstance(t, torch.Tensor) and t.is_floating_point()
                      else t for t in small[1])
    return [with_grad, small[2]]
