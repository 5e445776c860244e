"""Per-layer accounting: parameters, nonzeros, MACs (dense and effective), format and kernel, and optionally the
latency of each layer and of the whole model, sparse against dense.

MACs are counted from one forward pass on `example_input` (forward hooks record each layer's output size):
a Linear does in_features MACs per output element, a convolution (ci/groups)*kh*kw; "effective" MACs count
only the nonzero weights (dense MACs * nnz(weight) / numel(weight)): the work a sparse kernel does. Bias
additions are not counted. Params and nnz cover weight and bias, sparsity the weight (the total row: the
fraction of MACs removed); weights under a torch.nn.utils.prune
reparametrisation are counted as the module computes with them (orig * mask).

Latency of a sparse layer (SparseLinear / SparseConv2d) is set against the same layer materialised dense
(nn.Linear / nn.Conv2d, the path MKL / oneDNN take) on the same input, and the whole model against a dense copy of
it (sparsekern.densify_), each the median of `repeats` calls after a warm-up.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_int
from .pruning.interop import effective_weight
from .pruning.layers import eval_mode, prunable_layers


@dataclass
class LayerRow:
    layer: str
    kind: str
    params: int
    nnz: int
    macs: int  # dense
    effective_macs: int
    sparsity: float  # of the weight
    format: str = "dense"
    kernel: str = ""
    latency_ms: float | None = None
    dense_ms: float | None = None  # the same layer materialised dense (sparse layers only)

    @property
    def speedup(self) -> float | None:
        if self.latency_ms is None or self.dense_ms is None or self.latency_ms <= 0:
            return None
        return self.dense_ms / self.latency_ms


@dataclass
class Report:
    rows: list[LayerRow]
    model_ms: float | None = None  # the whole model, as it is
    dense_model_ms: float | None = None  # a dense copy of it (sparsekern.densify_)

    @property
    def total(self) -> LayerRow:
        lat = [r.latency_ms for r in self.rows]
        dense = [r.dense_ms if r.dense_ms is not None else r.latency_ms for r in self.rows]
        macs, eff = sum(r.macs for r in self.rows), sum(r.effective_macs for r in self.rows)
        return LayerRow(
            "total", "", sum(r.params for r in self.rows), sum(r.nnz for r in self.rows), macs, eff,
            1.0 - eff / macs if macs else 0.0, "", "", None if None in lat else sum(lat),
            None if None in dense or not any(r.dense_ms is not None for r in self.rows) else sum(dense),
        )  # fmt: skip

    @property
    def speedup(self) -> float | None:
        """Dense model ms / this model ms, end to end (latency=True)."""
        return None if not self.model_ms or self.dense_model_ms is None else self.dense_model_ms / self.model_ms

    def __str__(self) -> str:
        head = ["layer", "kind", "params", "nnz", "sparsity", "MACs", "eff. MACs", "format", "kernel"]
        with_latency = any(r.latency_ms is not None for r in self.rows)
        with_dense = any(r.dense_ms is not None for r in self.rows)
        head += ["latency ms"] if with_latency else []
        head += ["dense ms", "speedup"] if with_dense else []
        lines = []
        for r in [*self.rows, self.total]:
            cells = [r.layer, r.kind, f"{r.params:,}", f"{r.nnz:,}", f"{r.sparsity:.1%}", f"{r.macs:,}",
                     f"{r.effective_macs:,}", r.format, r.kernel]  # fmt: skip
            if with_latency:
                cells.append("" if r.latency_ms is None else f"{r.latency_ms:.3f}")
            if with_dense:
                cells.append("" if r.dense_ms is None else f"{r.dense_ms:.3f}")
                cells.append("" if r.speedup is None else f"{r.speedup:.2f}x")
            lines.append(cells)
        widths = [max(len(c) for c in col) for col in zip(head, *lines)]

        def fmt(cells):  # names left-aligned, numbers right-aligned
            return "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "-" * len(fmt(head))
        out = [fmt(head), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1])]
        if self.model_ms is not None:
            out.append(f"end to end: {self.model_ms:.3f} ms" + (
                f", dense model {self.dense_model_ms:.3f} ms, speedup {self.speedup:.2f}x"
                if self.dense_model_ms is not None else ""))
        return "\n".join(out)


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    from .nn._weight import SparseWeight

    dense = prunable_layers(model)
    return {n: m for n, m in model.named_modules() if isinstance(m, SparseWeight) or n in dense}


def _call(model, args):
    if len(args) == 1 and isinstance(args[0], dict):
        return model(**args[0])
    return model(*args)


def report(model: nn.Module, example_input, *, latency: bool = False, repeats: int = 20) -> Report:
    """The per-layer table of `model` (Linear, convolution, SparseLinear and SparseConv2d layers) for one forward
    on `example_input` (a tensor, a tuple of positional arguments, or a dict of keyword arguments). The forward
    runs under no_grad in eval mode (modes restored).

    latency=True also times each layer alone on the input it received (the median of `repeats` calls after a
    warm-up, in ms, synchronising CUDA when the input is on a GPU; a layer called several times is timed per
    call and summed), each sparse layer's dense equivalent on the same input, and the whole model against a dense
    copy of it (`Report.speedup`)."""
    if latency:
        check_int("sparsekern.report", repeats, "repeats", 1)
    layers = _layers(model)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    # per call: (output positions = output elements per output channel, the inputs when timing)
    seen: dict[str, list] = {n: [] for n in layers}

    def record(name):
        def hook(m, inp, out):
            channels = out.shape[-1] if isinstance(m, nn.Linear) or hasattr(m, "in_features") else out.shape[-3]
            seen[name].append((out.numel() // channels, inp if latency else None))
        return hook

    hooks = [mod.register_forward_hook(record(n)) for n, mod in layers.items()]
    try:
        with eval_mode(model), torch.no_grad():
            _call(model, args)
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for n, mod in layers.items():
        w = effective_weight(mod)
        bias = mod.bias.detach() if mod.bias is not None else torch.zeros(0)
        positions = sum(p for p, _ in seen[n])
        w_nnz = int((w != 0).sum())
        fmt = getattr(mod, "format", "dense")
        kernel = mod.kernel(positions // max(len(seen[n]), 1)) if hasattr(mod, "kernel") else "dense"
        row = LayerRow(
            n, type(mod).__name__, w.numel() + bias.numel(), w_nnz + int((bias != 0).sum()),
            positions * w.numel(), positions * w_nnz, 1.0 - w_nnz / w.numel() if w.numel() else 0.0, fmt, kernel,
        )  # fmt: skip
        if latency and seen[n]:
            inputs = [i for _, i in seen[n]]
            with eval_mode(model):
                row.latency_ms = _time(mod, inputs, repeats)
                if hasattr(mod, "to_dense_module"):
                    row.dense_ms = _time(mod.to_dense_module().eval(), inputs, repeats)
        rows.append(row)
    rep = Report(rows)
    if latency:
        dense = copy.deepcopy(model)
        from .nn import densify_

        densify_(dense)
        with eval_mode(model), eval_mode(dense):
            rep.model_ms = _time(model, [args], repeats)
            rep.dense_model_ms = _time(dense, [args], repeats)
    return rep


def _time(mod: nn.Module, inputs: list, repeats: int) -> float:
    total = 0.0
    cuda = any(isinstance(t, torch.Tensor) and t.is_cuda for inp in inputs for t in inp)
    with torch.no_grad():
        for inp in inputs:
            _call(mod, inp)  # warm-up
            times = []
            for _ in range(repeats):
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                _call(mod, inp)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            total += statistics.median(times)
    return total * 1e3
