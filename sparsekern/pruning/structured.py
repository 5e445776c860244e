"""shrink_: channel pruning that physically removes the pruned channels, leaving smaller dense layers.

A channel is removed when the weight rows of every layer producing it are zero (channel-pruned), together with
the BatchNorm entries it flows through and the matching input channels (columns, or the flattened block of
columns after a flatten) of the layers consuming it. The model is read with torch.fx (graph.py): sequential
chains and DAGs with residual adds are handled (channels tied by an add are removed only when pruned in every
branch, keeping the branches consistent); channels that reach the output, a concatenation, a grouped convolution
or any op not understood are kept (see ChannelGraph's `pinned` reasons).

The shrunk model computes exactly what the masked model computes (in eval mode) provided a removed channel
contributes nothing downstream: the value it takes at each consumer (its bias pushed through the BatchNorms and
activations on the way) must be zero. prune(..., granularity="channel") guarantees that by masking the bias and
BatchNorm affine parameters of pruned channels; otherwise shrink_ raises ValueError rather than change the output.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .._checks import fail
from .graph import ChannelGraph, Group
from .interop import effective_weight, remove
from .layers import FilterFn
from .masks import view2d
from .prune import prune

WHERE = "sparsekern.pruning.shrink_"


def _graph(model: nn.Module) -> ChannelGraph:
    try:
        return ChannelGraph(model)
    except ValueError as e:
        fail(WHERE, ValueError, f"{e}; shrink_ reads the model's channel dependencies with torch.fx")


def _removals(graph: ChannelGraph) -> list[tuple[Group, torch.Tensor, int]]:
    """[(group, output channels to remove, channel count)] for every unpinned group that loses channels."""
    mods = graph.modules
    C = {p: mods[p].weight.shape[0] for g in graph.groups() for p in g.producers}
    constants = None
    out = []
    for g in graph.groups():
        zero = torch.stack([(view2d(effective_weight(mods[p])) == 0).all(1).cpu() for p in g.producers]).all(0)
        gone = zero.nonzero().flatten()
        if g.pinned:
            if gone.numel():
                warnings.warn(f"{WHERE}: channels {gone.tolist()} of {g.producers} are pruned but kept: their "
                              f"tensor {'; '.join(dict.fromkeys(g.pinned))}", stacklevel=3)  # fmt: skip
            continue
        if gone.numel() == zero.numel():
            gone = gone[1:]  # keep one (zero) channel rather than build zero-width layers
        if gone.numel() == 0:
            continue
        constants = graph.constants_at_consumers(C) if constants is None else constants
        for consumer, _ in g.consumers:
            v = constants[consumer][gone]
            if not bool((v == 0).all()):
                bad = int(gone[(v != 0).nonzero()[0, 0]])
                fail(WHERE, ValueError,
                     f"channel {bad} of {g.producers} is pruned but reaches {consumer} as the nonzero value "
                     f"{float(constants[consumer][bad])} (its bias / BatchNorm shift through the activations), so "
                     "removing it would change the output; prune with sk.pruning.prune(..., granularity='channel'), "
                     "which masks the bias and BatchNorm of pruned channels, or zero them")  # fmt: skip
        out.append((g, gone, zero.numel()))
    return out


def shrink_plan(model: nn.Module) -> dict[str, list[int]]:
    """{layer: the output channels shrink_ would remove} (layers losing none are left out). Pure."""
    return {p: gone.tolist() for g, gone, _ in _removals(_graph(model)) for p in g.producers}


def _set(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))
    else:
        setattr(module, name, value.contiguous())


def shrink_(
    model: nn.Module,
    sparsity: float | dict[str, float] | None = None,
    *,
    criterion: str = "l1",
    filter_fn: FilterFn | None = None,
    **prune_options,
) -> nn.Module:
    """Removes pruned output channels from `model` in place (see the module docstring) and returns it.

    With `sparsity`, first channel-prunes the layers whose channels can be removed (and `filter_fn` selects)
    with prune(model, sparsity, granularity="channel", criterion=criterion, **prune_options). Pruning
    reparametrisations are baked in first (remove). Shrunk layers get new Parameters: build the optimiser after.
    Exact for the eval-mode output (BatchNorms use running statistics). A layer keeps at least one channel.
    Pruned channels that cannot be removed are kept (zero), with a warning giving the reason."""
    graph = _graph(model)
    if sparsity is not None:
        free = {p for g in graph.groups() if not g.pinned for p in g.producers}
        prune(model, sparsity, granularity="channel", channel_dim=0, criterion=criterion,
              filter_fn=lambda n, m: n in free and (filter_fn is None or filter_fn(n, m)), **prune_options)  # fmt: skip
    remove(model)
    mods = graph.modules
    for g, gone, C in _removals(graph):
        keep = torch.ones(C, dtype=torch.bool)
        keep[gone] = False
        keep = keep.nonzero().flatten()
        for p in dict.fromkeys(g.producers):
            mod = mods[p]
            _set(mod, "weight", mod.weight.detach()[keep.to(mod.weight.device)])
            if mod.bias is not None:
                _set(mod, "bias", mod.bias.detach()[keep.to(mod.bias.device)])
            setattr(mod, "out_features" if isinstance(mod, nn.Linear) else "out_channels", keep.numel())
        for b in dict.fromkeys(g.followers):
            bn = mods[b]
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(bn, name, None) is not None:
                    _set(bn, name, getattr(bn, name).detach()[keep.to(getattr(bn, name).device)])
            bn.num_features = keep.numel()
        for c, flat in dict.fromkeys(g.consumers):
            mod = mods[c]
            cols = keep
            if flat:  # a flattened (C, H, W) map: channel k is the columns [k*H*W, (k+1)*H*W)
                if mod.in_features % C:
                    fail(WHERE, ValueError, f"{c} takes {mod.in_features} features, not a multiple of {C} channels")
                per = mod.in_features // C
                cols = (keep[:, None] * per + torch.arange(per)).flatten()
            _set(mod, "weight", mod.weight.detach()[:, cols.to(mod.weight.device)])
            setattr(mod, "in_features" if isinstance(mod, nn.Linear) else "in_channels", cols.numel())
    return model
