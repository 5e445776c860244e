"""Which modules are pruned, and how sparse a model is."""

from __future__ import annotations

import contextlib
from typing import Callable

from torch import nn

from .interop import effective_weight

FilterFn = Callable[[str, nn.Module], bool]


def is_prunable(module: nn.Module) -> bool:
    """Layers whose weight rows are output channels: Linear and (non-transposed) convolutions, whose 2-D view is
    (out, in) and (co, ci*kh*kw)."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.modules.conv._ConvNd) and not module.transposed)


def prunable_layers(model: nn.Module, filter_fn: FilterFn | None = None) -> dict[str, nn.Module]:
    """{name: module} of the prunable layers of `model` for which `filter_fn(name, module)` is true (all of
    them without a filter), in registration order."""
    return {
        n: m for n, m in model.named_modules() if is_prunable(m) and (filter_fn is None or filter_fn(n, m))
    }


def model_sparsity(model: nn.Module, filter_fn: FilterFn | None = None) -> float:
    """The fraction of zeros over the weights of the prunable layers (as computed: orig * mask)."""
    total = zeros = 0
    for mod in prunable_layers(model, filter_fn).values():
        w = effective_weight(mod)
        total += w.numel()
        zeros += int((w == 0).sum())
    return zeros / total if total else 0.0


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode for the duration (BatchNorm on running statistics, no dropout); restores every module's mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
