"""`python -m sparsekern bench`: sparse kernels vs dense and vendor anchors, measured in one process.

Per case and method: median ms, speedup over dense measured in the same run, TFLOP/s of useful work
(2·nnz·N, the same numerator for every method), GB/s of the bytes the method must move, and that as a share of
the machine's measured copy bandwidth (% of the memory floor; on a CPU whose caches hold the operands this can
exceed 100%). Results go to a JSON file per device and date.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import re
from pathlib import Path

import torch

from ..backends import backends
from .shapes import PRESETS
from .timing import copy_bandwidth_gbs, median_ms

# op -> module providing cases(preset, device)
OPS = {
    "csr_mm": "sparsekern.bench.csr_mm",
    "csr_linear": "sparsekern.bench.csr_linear",
    "semi24_mm": "sparsekern.bench.semi24_mm",
    "bsr_mm": "sparsekern.bench.bsr_mm",
}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        model = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{model or platform.processor() or 'CPU'} ({torch.get_num_threads()} threads)"


def _agrees(ours: torch.Tensor, dense: torch.Tensor) -> bool:
    """Our result against dense in the same dtype, relative to the output's scale (each has its own rounding)."""
    scale = dense.float().abs().max().item() or 1.0
    tol = 1e-4 if dense.dtype == torch.float32 else 2e-2
    return (ours.float() - dense.float()).abs().max().item() <= tol * scale


def _ours(method: str) -> bool:
    """Our methods: the compiled kernel ("sparsekern"), its forced variants ("sparsekern[...]"), Triton beside it."""
    return method == "triton" or method.startswith("sparsekern")


def run_cases(ops: list[str], preset: dict, device: torch.device, copy_gbs: float, log=print,
              rep_ms: float = 100) -> list[dict]:
    rows = []
    for op in ops:
        for case in importlib.import_module(OPS[op]).cases(preset, device):
            dense_out = case.methods["dense"][0]()
            agrees = True
            times = {}
            for name, calls in case.methods.items():
                try:
                    # Every method of ours must agree: the compiled kernel, its variants, and Triton beside it.
                    if _ours(name):
                        agrees &= _agrees(calls[0](), dense_out)
                    times[name] = median_ms(calls, device, rep_ms=rep_ms)
                except (RuntimeError, ValueError, NotImplementedError) as e:
                    # e.g. torch.sparse lacks this dtype here, or a forced variant does not fit this shape; our
                    # default methods must always run
                    times[name] = None
                    agrees &= name not in ("sparsekern", "triton")
                    log(f"  {name} unsupported for {case.params}: {str(e).splitlines()[0][:100]}")
            for name, ms in times.items():
                nbytes = case.dense_bytes if name == "dense" else case.bytes
                row = dict(op=op, **case.params, method=name, median_ms=ms, agrees_with_dense=agrees)
                if ms is not None:
                    gbs = nbytes / (ms * 1e-3) / 1e9
                    row.update(
                        speedup_vs_dense=times["dense"] / ms if times["dense"] else None,
                        tflops=case.flops / (ms * 1e-3) / 1e12,
                        gbs=gbs,
                        pct_memory_floor=100 * gbs / copy_gbs,
                    )
                rows.append(row)
            log(_format_case(op, case.params, times, rows[-len(times):], agrees))
    return rows


def _format_case(op, params, times, rows, agrees) -> str:
    p = params
    head = f"{op:10s} {p['M']:>6}x{p['K']:<6} N={p['N']:<5} {p['sparsity']:>4.0%} {p['dtype']:8s}"
    extra = {k: v for k, v in p.items() if k not in ("M", "K", "N", "sparsity", "dtype")}
    if extra:  # e.g. the block size of bsr_mm cases
        head += " " + " ".join(f"{k}={v}" for k, v in extra.items())
    parts = []
    for row in rows:
        if row["median_ms"] is None:
            parts.append(f"{row['method']} n/a")
        elif row["method"] == "dense":
            parts.append(f"dense {row['median_ms']:.3f} ms")
        else:
            parts.append(f"{row['method']} {row['median_ms']:.3f} ms ({row['speedup_vs_dense']:.2f}x)")
    ours = next(r for r in rows if r["method"] == "sparsekern")
    tail = (
        f"| {ours['tflops']:.3f} TFLOP/s {ours['gbs']:.1f} GB/s {ours['pct_memory_floor']:.0f}% floor"
        if ours["median_ms"]
        else ""
    )
    return f"{head} | {' | '.join(parts)} {tail}{'' if agrees else '  RESULT MISMATCH'}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparsekern bench", description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, from {sorted(OPS)}")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="default: gpu with CUDA, else cpu")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", default="bench/results", help="folder for the JSON results ('' for none)")
    parser.add_argument(
        "--variants", default="",
        help="comma-separated SPARSEKERN_CSR_MM_CONFIG values (e.g. nz:16,nz:32:staged,rows:16), each timed as an "
        "extra method sparsekern[<value>]: CUDA kernel tuning in one run",
    )
    parser.add_argument(
        "--rep-ms", type=float, default=100,
        help="GPU: ms of repeated calls timed per method and case, after a quarter of that as warm-up (default 100; "
        "a smaller window shortens a large preset)",
    )
    parser.add_argument("--modules", action="store_true",
                        help="benchmark the drop-in modules (sparsify_ on a Linear, an MLP and ResNet-50) instead")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    ops = [o for o in args.ops.split(",") if o]
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        parser.error(f"unknown ops {unknown}; choose from {sorted(OPS)}")
    preset_name = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    variants = [v for v in args.variants.split(",") if v]
    preset = dict(PRESETS[preset_name], variants=variants)

    copy_gbs = copy_bandwidth_gbs(device)
    meta = dict(
        device=_device_name(device),
        date=datetime.date.today().isoformat(),
        preset=preset_name,
        variants=variants,
        rep_ms=args.rep_ms,
        copy_bandwidth_gbs=copy_gbs,
        **{k: v for k, v in backends().items() if k in ("torch", "torch_cuda", "triton", "python", "threads")},
    )
    print(f"sparsekern bench: {meta['device']}, torch {meta['torch']}, preset {preset_name}, "
          f"measured copy bandwidth {copy_gbs:.1f} GB/s")
    if args.modules:
        from .modules import run

        rows, preset_name = run(), "modules"
    else:
        rows = run_cases(ops, preset, device, copy_gbs, rep_ms=args.rep_ms)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", meta["device"]).strip("-").lower()
        path = out / f"{slug}-{preset_name}{'-variants' if variants else ''}-{meta['date']}.json"
        path.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        print(f"wrote {path}")
    return 0 if all(r.get("agrees_with_dense", True) for r in rows) else 1
