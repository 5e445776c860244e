"""Fills the bsr_mm tuned table for the GPU it runs on: autotunes each (shape, N, block, dtype) and prints the
entries to paste into configs.BSR_MM_TUNED[<GPU name>].

    python -m sparsekern._triton.bsr_mm_tune --shapes 4096x4096,11008x4096 --ns 1,16,128,4096 --blocks 16,32,64

With --out FILE the table ({GPU name: entries}) also goes to FILE, which SPARSEKERN_BSR_MM_TUNED=FILE makes
later processes use (see configs.py).
"""

from __future__ import annotations

import argparse
import pprint
import sys

import torch

from . import configs


def _pairs(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in item.split("x")) for item in text.split(",") if item]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def write_table(path: str, gpu: str, entries: dict, note: str) -> None:
    """{gpu: entries} as a Python literal after a comment line: what configs.load_bsr_mm_tuned reads."""
    with open(path, "w") as f:
        f.write(f"# bsr_mm tuned on {gpu}: {note}\n{pprint.pformat({gpu: entries}, width=120)}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparsekern._triton.bsr_mm_tune", description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=_pairs, default=_pairs("4096x4096,11008x4096,4096x11008"), help="MxK,...")
    parser.add_argument("--ns", type=_ints, default=_ints("1,16,128,1024,4096"))
    parser.add_argument("--blocks", type=_ints, default=_ints("16,32,64"), help="square block sizes")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    parser.add_argument("--sparsity", type=float, default=0.9, help="block sparsity of the tuning weights")
    parser.add_argument("--out", default="", help="also write the table to this file (for SPARSEKERN_BSR_MM_TUNED)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bsr_mm_tune: needs a CUDA GPU (tuned entries are measurements on that GPU)", file=sys.stderr)
        return 2
    import triton

    from ..formats import BSRMatrix
    from .bsr_mm import bsr_mm, tuned_entries

    gpu = torch.cuda.get_device_name()
    configs.AUTOTUNE = True
    configs.BSR_MM_TUNED.pop(gpu, None)  # re-measure every shape, also those already in the table
    for dtype in (getattr(torch, d) for d in args.dtypes.split(",")):
        for M, K in args.shapes:
            for b in args.blocks:
                keep = torch.rand(-(-M // b), -(-K // b), device="cuda") >= args.sparsity
                W = torch.randn(M, K, device="cuda", dtype=dtype)
                W *= keep.repeat_interleave(b, 0).repeat_interleave(b, 1)[:M, :K]
                A = BSRMatrix.from_dense(W, (b, b))
                for N in args.ns:
                    B = torch.randn(K, N, device="cuda", dtype=dtype)
                    bsr_mm(A.crow_indices, A.col_indices, A.values, M, B)
                    print(f"tuned {M}x{K} N={N} block {b} {dtype}", file=sys.stderr)
    print(f"# configs.BSR_MM_TUNED[{gpu!r}] entries, measured with torch {torch.__version__}, triton {triton.__version__}:")
    pprint.pprint(tuned_entries(), width=120)
    if args.out:
        note = f"torch {torch.__version__}, triton {triton.__version__}, block sparsity {args.sparsity}"
        write_table(args.out, gpu, tuned_entries(), note)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
