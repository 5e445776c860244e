"""Per-layer accounting: parameters, nonzeros, MACs (dense and effective), format and, optionally, latency.

MACs are counted from one forward pass on `example_input` (forward hooks record each layer's output size):
a Linear does in_features MACs per output element, a convolution (ci/groups)*kh*kw; "effective" MACs count
only the nonzero weights (dense MACs * nnz(weight) / numel(weight)): the work a sparse kernel does. Bias
additions are not counted. Params and nnz cover weight and bias, sparsity the weight (the total row: the
fraction of MACs removed); weights under a torch.nn.utils.prune
reparametrisation are counted as the module computes with them (orig * mask).
"""

from __future__ import annotations

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
    latency_ms: float | None = None


@dataclass
class Report:
    rows: list[LayerRow]

    @property
    def total(self) -> LayerRow:
        lat = [r.latency_ms for r in self.rows]
        macs, eff = sum(r.macs for r in self.rows), sum(r.effective_macs for r in self.rows)
        return LayerRow(
            "total", "", sum(r.params for r in self.rows), sum(r.nnz for r in self.rows), macs, eff,
            1.0 - eff / macs if macs else 0.0, "", None if None in lat else sum(lat),
        )  # fmt: skip

    def __str__(self) -> str:
        head = ["layer", "kind", "params", "nnz", "sparsity", "MACs", "eff. MACs", "format"]
        with_latency = any(r.latency_ms is not None for r in self.rows)
        head += ["latency ms"] if with_latency else []
        lines = []
        for r in [*self.rows, self.total]:
            cells = [r.layer, r.kind, f"{r.params:,}", f"{r.nnz:,}", f"{r.sparsity:.1%}", f"{r.macs:,}",
                     f"{r.effective_macs:,}", r.format]  # fmt: skip
            if with_latency:
                cells.append("" if r.latency_ms is None else f"{r.latency_ms:.3f}")
            lines.append(cells)
        widths = [max(len(c) for c in col) for col in zip(head, *lines)]

        def fmt(cells):  # names left-aligned, numbers right-aligned
            return "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "-" * len(fmt(head))
        return "\n".join([fmt(head), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1])])


def report(model: nn.Module, example_input, *, latency: bool = False, repeats: int = 20) -> Report:
    """The per-layer table of `model` (Linear and convolution layers) for one forward on `example_input` (a
    tensor, or a tuple of positional arguments). The forward runs under no_grad in eval mode (modes restored).

    latency=True also times each layer alone on the input it received: the median of `repeats` calls after a
    warm-up, in ms (synchronising CUDA when the input is on a GPU); a layer called several times is timed per
    call and summed."""
    if latency:
        check_int("sparsekern.report", repeats, "repeats", 1)
    layers = prunable_layers(model)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    # per call: (output positions = output elements per output channel, the inputs when timing)
    seen: dict[str, list] = {n: [] for n in layers}

    def record(name):
        return lambda m, inp, out: seen[name].append((out.numel() // m.weight.shape[0], inp if latency else None))

    hooks = [mod.register_forward_hook(record(n)) for n, mod in layers.items()]
    try:
        with eval_mode(model), torch.no_grad():
            model(*args)
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for n, mod in layers.items():
        w = effective_weight(mod)
        bias = mod.bias.detach() if mod.bias is not None else torch.zeros(0)
        positions = sum(p for p, _ in seen[n])
        w_nnz = int((w != 0).sum())
        rows.append(
            LayerRow(
                n, type(mod).__name__, w.numel() + bias.numel(), w_nnz + int((bias != 0).sum()),
                positions * w.numel(), positions * w_nnz, 1.0 - w_nnz / w.numel() if w.numel() else 0.0,
                latency_ms=_time_layer(mod, [i for _, i in seen[n]], repeats) if latency and seen[n] else None,
            )
        )  # fmt: skip
    return Report(rows)


def _time_layer(mod: nn.Module, inputs: list, repeats: int) -> float:
    total = 0.0
    cuda = any(t.is_cuda for inp in inputs for t in inp if isinstance(t, torch.Tensor))
    with torch.no_grad():
        for inp in inputs:
            mod(*inp)  # warm-up
            times = []
            for _ in range(repeats):
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                mod(*inp)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            total += statistics.median(times) * 1e3
    return total
