"""Calibration passes for the data-driven LLM criteria (wanda, sparsegpt): run the model on batches and hand every
input a layer receives to a callback."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from .._checks import fail
from .layers import eval_mode

WHERE = "sparsekern.pruning"


def call(model: nn.Module, batch):
    """model(**batch) for a dict (a tokenizer's output), model(*batch) for a tuple or list, else model(batch)."""
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def batches(data: Iterable | None, what: str) -> list:
    """`data` as a list (each pass re-reads it); ValueError naming `what` when there is none."""
    out = list(data) if data is not None else []
    if not out:
        fail(WHERE, ValueError, f"criterion {what!r} needs data=: an iterable of calibration batches (input_ids, a "
                                "dict of model kwargs, a tuple of args)")
    return out


def check_linear(layers: dict[str, nn.Module], what: str) -> None:
    bad = [n for n, m in layers.items() if not isinstance(m, nn.Linear)]
    if bad:
        fail(WHERE, ValueError, f"criterion {what!r} prunes Linear layers only; {bad} are not (exclude them with "
                                "filter_fn)")


class _Stop(Exception):
    pass


def feed(model: nn.Module, layers: dict[str, nn.Module], data: list, on_input: Callable[[str, torch.Tensor], None],
         stop_after: nn.Module | None = None) -> None:
    """Runs every batch of `data` through `model` (eval, no_grad) and calls on_input(name, x2d) with each input
    (tokens, in_features) that each of `layers` receives. With `stop_after`, the forward is cut short once that
    module has run (later layers' work would be discarded)."""

    def hook(name):
        def record(mod, args):
            on_input(name, args[0].detach().reshape(-1, args[0].shape[-1]))
        return record

    def stop(mod, args, out):
        raise _Stop

    handles = [mod.register_forward_pre_hook(hook(n)) for n, mod in layers.items()]
    if stop_after is not None:
        handles.append(stop_after.register_forward_hook(stop))
    try:
        with eval_mode(model), torch.no_grad():
            for batch in data:
                try:
                    call(model, batch)
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()
