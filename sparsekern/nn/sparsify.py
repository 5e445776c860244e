"""sparsify_: swap a model's pruned nn.Linear / nn.Conv2d layers for SparseLinear / SparseConv2d, in place."""

from __future__ import annotations

import logging
import statistics
import time
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .._checks import fail
from ..pruning.interop import effective_weight, existing_mask
from ..pruning.layers import eval_mode
from . import auto
from ._weight import FORMATS, SparseWeight
from .conv import SparseConv2d
from .linear import SparseLinear

log = logging.getLogger("sparsekern")
_WHERE = "sparsekern.sparsify_"
# Candidates timed on the real input must beat dense by this much. On the shared 2-core EPYC VM the same dense
# call varied by 10% between runs, and with a 1.05 margin the demo's 2:4 decode stack took layers whose timed win was
# noise and ran 0.92x dense end to end: a layer that is not clearly faster stays dense.
MEASURED_MARGIN = 1.2


def _swappable(module: nn.Module):
    if isinstance(module, nn.Linear):
        return SparseLinear
    if isinstance(module, nn.Conv2d):
        return SparseConv2d
    return None


def _shared_params(model: nn.Module) -> dict[int, list[str]]:
    """id(parameter) -> every name it is reachable under, for parameters reachable under more than one."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return {k: v for k, v in names.items() if len(v) > 1}


def _weight_param(module: nn.Module) -> nn.Parameter:
    return module._parameters.get("weight_orig", module._parameters.get("weight"))


def _record_inputs(model: nn.Module, layers: dict[str, nn.Module], example_inputs) -> dict[str, list[tuple]]:
    """{layer: [(input args, output positions)]} from one forward of `example_inputs` (eval, no_grad)."""
    seen: dict[str, list[tuple]] = {n: [] for n in layers}

    def hook(name):
        def record(mod, args, out):
            # Linear: tokens = rows of the (*, out_features) output; Conv2d: output positions (N x H x W).
            channels = out.shape[-1] if isinstance(mod, nn.Linear) else out.shape[-3]
            seen[name].append((tuple(a.detach() for a in args), out.numel() // max(channels, 1)))
        return record

    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    kwargs = {}
    if len(args) == 1 and isinstance(args[0], dict):
        args, kwargs = (), args[0]
    handles = [mod.register_forward_hook(hook(n)) for n, mod in layers.items()]
    try:
        with eval_mode(model), torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return seen


def _flush(device: torch.device) -> None:
    """Evicts the caches between timed calls, as the other layers of a model do between two calls of one layer."""
    if device.type == "cpu":
        _flush.buf = getattr(_flush, "buf", None)
        if _flush.buf is None:
            _flush.buf = torch.empty(12 << 20)  # 48 MiB of fp32, over the LLC of the CPUs this ran on
        _flush.buf.zero_()


def time_module(module: nn.Module, calls: list[tuple], repeats: int = 7) -> float:
    """Median seconds of `module` over the recorded calls (summed), each call on cold caches."""
    device = next(iter(module.buffers()), next(iter(module.parameters()))).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    total = 0.0
    with torch.no_grad():
        for args in calls:
            module(*args)
            times = []
            for _ in range(repeats):
                _flush(device)
                sync()
                t0 = time.perf_counter()
                module(*args)
                sync()
                times.append(time.perf_counter() - t0)
            total += statistics.median(times)
    return total


def _measured_choice(dense: nn.Module, build: Callable, decision: auto.Decision,
                     calls: list[tuple]) -> tuple[nn.Module | None, auto.Decision]:
    """Times dense and every candidate the table does not rule out (predicted >= 0.5x) on the layer's inputs."""
    t_dense = time_module(dense, calls)
    best, best_t, best_c = None, t_dense / MEASURED_MARGIN, None
    for cand, pred in sorted(decision.predicted.items(), key=lambda kv: -kv[1]):
        if pred < 0.5:
            continue
        module = build(cand)
        t = time_module(module, calls)
        decision.measured[cand] = t_dense / t
        if t < best_t:
            best, best_t, best_c = module, t, cand
    shown = ", ".join(f"{c} {s:.2f}x" for c, s in decision.measured.items()) or "no candidate predicted >= 0.5x"
    if best is None:
        decision.format, decision.blocksize = "dense", None
        decision.reason = f"dense: measured on this layer's input, nothing beat dense by {MEASURED_MARGIN}x ({shown})"
    else:
        decision.format, decision.blocksize = auto.split(best_c)
        decision.reason = f"{best_c}: measured {t_dense / best_t:.2f}x dense on this layer's input ({shown})"
    return best, decision


def sparsify_(model: nn.Module, format: str = "auto", filter_fn: Callable[[str, nn.Module], bool] | None = None, *,
              example_inputs=None, n_tokens=None, blocksize=None) -> nn.Module:
    """Replaces every eligible nn.Linear / nn.Conv2d of `model` by SparseLinear / SparseConv2d, in place; returns
    `model`.

    - format: "auto" (per layer, the fastest of csr / bsr 16-32-64 / 2:4 on this machine, and the layer stays
      an untouched nn.Linear / nn.Conv2d unless one is faster than dense), or one of "csr", "bsr" (with
      `blocksize`), "2:4", "dense" for every selected layer.
    - filter_fn(name, module) -> bool selects layers (default: all Linear and Conv2d).
    - example_inputs (a tensor, a tuple of positional arguments, or a dict of keyword arguments): auto then
      runs the model once, and times the candidate formats of each layer on the input it received (cold
      caches) against the dense layer. Without it auto predicts from the machine's table (sparsekern.tune) at
      `n_tokens` (Linear) or DEFAULT_CONV_TOKENS output positions (Conv2d).
    - torch.nn.utils.prune reparametrisations are honoured: the layer computes with orig * mask, the mask is
      the pattern (explicit zeros where the mask keeps them), and the swapped layer carries no pruning hook.
    - Weights tied or shared with another module (a language model's lm_head and its embeddings) stay dense,
      and so does MultiheadAttention's out_proj, which the attention reads as `.weight` (no kernel would run).
    Every swap and skip is logged on the "sparsekern" logger (INFO); each swapped module keeps its
    `decision` (sparsekern.explain prints it).
    """
    if not isinstance(model, nn.Module):
        fail(_WHERE, TypeError, f"model must be an nn.Module, got {type(model).__name__}")
    if format != "auto" and format not in FORMATS:
        fail(_WHERE, ValueError, f"format must be 'auto' or one of {FORMATS}, got {format!r}")
    if filter_fn is not None and not callable(filter_fn):
        fail(_WHERE, TypeError, "filter_fn must be callable as filter_fn(name, module) -> bool")
    if _swappable(model) is not None:
        fail(_WHERE, ValueError, f"model is itself an {type(model).__name__}, which cannot be replaced in place: use "
                                 f"{_swappable(model).__name__}.from_dense(layer), or sparsify_ a module holding it")
    shared = _shared_params(model)
    modules = dict(model.named_modules())
    layers: dict[str, nn.Module] = {}
    for name, mod in modules.items():
        if _swappable(mod) is None or isinstance(mod, SparseWeight):
            continue
        if filter_fn is not None and not filter_fn(name, mod):
            continue
        parent = modules[name.rpartition(".")[0]] if "." in name else model
        w = _weight_param(mod)
        if isinstance(parent, nn.MultiheadAttention):
            log.info("sparsify_: %s stays dense: MultiheadAttention reads it as .weight, no sparse kernel runs", name)
        elif w is not None and id(w) in shared:
            log.info("sparsify_: %s stays dense: its weight is shared with %s", name,
                     ", ".join(n for n in shared[id(w)] if not n.startswith(name + ".")))
        elif isinstance(mod, nn.Conv2d) and mod.padding_mode != "zeros":
            log.info("sparsify_: %s stays dense: padding_mode=%r", name, mod.padding_mode)
        else:
            layers[name] = mod
    recorded = _record_inputs(model, layers, example_inputs) if example_inputs is not None else {}
    swapped = 0
    for name, mod in layers.items():
        cls = _swappable(mod)
        W, mask = effective_weight(mod), existing_mask(mod)
        calls = recorded.get(name)
        if recorded and not calls:
            log.info("sparsify_: %s stays dense: the example input did not reach it", name)
            continue
        kind = "conv" if cls is SparseConv2d else "linear"
        tokens = sorted({p for _, p in calls}) if calls else n_tokens
        if format == "auto":
            W2 = W.reshape(W.shape[0], -1)
            # Grouped bsr / 2:4 convolutions have no sparse kernel (SparseConv2d's docstring): only csr competes.
            allowed = {"csr"} if getattr(mod, "groups", 1) > 1 else None
            decision = auto.choose(W2, None if mask is None else mask.reshape(W2.shape), tokens, kind, allowed)
            new = None
            if calls:
                def build(cand, mod=mod, mask=mask):
                    fmt, bs = auto.split(cand)
                    return cls.from_dense(mod, fmt, blocksize=bs, mask=mask)
                dense = mod
                hooks = mod._forward_pre_hooks
                if any(isinstance(h, torch_prune.BasePruningMethod) for h in hooks.values()):
                    dense = cls.from_dense(mod, "dense", mask=mask).to_dense_module()
                new, decision = _measured_choice(dense, build, decision, [a for a, _ in calls])
            elif decision.format != "dense":
                new = cls.from_dense(mod, decision.format, blocksize=decision.blocksize, mask=mask)
            if new is None:
                log.info("sparsify_: %s stays dense: %s", name, decision.reason)
                continue
            new.decision = decision
        else:
            where = f"{_WHERE} ({name})"
            try:
                new = cls.from_dense(mod, format, blocksize=blocksize, mask=mask)
            except (TypeError, ValueError) as e:
                fail(where, type(e), str(e))
        new.train(mod.training)
        for hid, hook in mod._forward_pre_hooks.items():
            if not isinstance(hook, torch_prune.BasePruningMethod):
                new._forward_pre_hooks[hid] = hook
        new._forward_hooks.update(mod._forward_hooks)
        parent_name, _, attr = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        setattr(parent, attr, new)
        if isinstance(parent, nn.TransformerEncoderLayer) and parent.activation_relu_or_gelu:
            # Its fused inference path (torch._transformer_encoder_layer_fwd) reads linear1/linear2.weight as
            # dense tensors, so no sparse kernel would run; this flag gates only that path.
            parent.activation_relu_or_gelu = 0
            log.info("sparsify_: %s: TransformerEncoderLayer's fused dense fast path turned off", parent_name)
        swapped += 1
        log.info("sparsify_: %s -> %s (%s)", name, new.format,
                 new.decision.reason if getattr(new, "decision", None) else f"format={format!r}")
    log.info("sparsify_: %d of %d eligible layers swapped", swapped, len(layers))
    return model


def densify_(model: nn.Module) -> nn.Module:
    """The inverse of sparsify_: every SparseLinear / SparseConv2d back to nn.Linear / nn.Conv2d (weights
    materialised), in place; returns `model`. What sparsekern.report times sparse layers against."""
    for name, mod in list(model.named_modules()):
        if isinstance(mod, SparseWeight):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, mod.to_dense_module().train(mod.training))
    return model
