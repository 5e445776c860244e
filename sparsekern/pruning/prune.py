"""prune / compute_masks: masks for the prunable layers of a model, per layer or under one global budget.

Budgets. `sparsity` is a float (every selected layer, or the pool of them with scope="global") or a dict
{layer name: sparsity} (scope="layer"; only the named layers are pruned). A budget of sparsity s over n weights
prunes P = ceil(s*n) of them (at most floor((1-s)*n) kept, so ||W_p||_0 <= N with N = n - P), rounded up to whole
groups as described in masks.py. With scope="global" one P is spent over all selected layers, ranking their
groups together; weight-based scores (magnitude, l1, l2) are then divided by each layer's weight RMS
(sqrt(mean w^2) of the weight as computed), which makes layers of different scale comparable, the global form of
Han et al.'s per-layer threshold "quality x std". Loss-based scores (taylor, second_order) estimate a loss change,
a common unit, and bn_scale compares gammas directly as network slimming does: they are not normalised
(override with normalize="rms" or "none").
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .._checks import check_fraction, fail
from .criteria import CRITERIA, WEIGHT_CRITERIA, LossFn, aggregation, bn_scale_scores, element_scores
from .graph import bn_after
from .interop import effective_weight, write_mask, write_masks
from .layers import FilterFn, prunable_layers
from .wanda import row_keep
from .masks import (
    group_scores,
    group_sum,
    keep_from_group_scores,
    n_to_prune,
    check_nm_sparsity,
    nm_keep,
    parse_granularity,
    select_pruned,
    tile_for,
    view2d,
    expand_groups,
)

WHERE = "sparsekern.pruning.compute_masks"


def compute_masks(
    model: nn.Module,
    sparsity: float | dict[str, float] | None = None,
    *,
    granularity: str = "element",
    criterion: str = "magnitude",
    scope: str = "layer",
    filter_fn: FilterFn | None = None,
    n: int = 2,
    m: int = 4,
    blocksize: tuple[int, int] = (16, 16),
    vector_size: int | None = None,
    channel_dim: int = 0,
    loss_fn: LossFn | None = None,
    data: Iterable | None = None,
    hessian: str = "fisher",
    n_probes: int = 1,
    normalize: str = "auto",
    bn_map: dict[str, str] | None = None,
    _where: str = WHERE,
) -> dict[str, torch.Tensor]:
    """{layer name: keep-mask (bool, shaped like the weight)} for the prunable layers (Linear, Conv) of `model`
    selected by `filter_fn(name, module)` and, when `sparsity` is a dict, named in it. Does not modify `model`.

    granularity: "element", "n:m" (or "2:4", "1:8"...; sparsity None), "block" (`blocksize`), "vector"
    (`vector_size`), "kernel", "channel" (`channel_dim` 0: output channels, 1: input channels); see masks.py.
    criterion: "magnitude", "l1", "l2", "bn_scale" (output channels only; BatchNorm found by graph.bn_after or
    `bn_map`), "second_order" (`hessian` "fisher" or "hutchinson", `n_probes`) and "taylor", the last two from
    `loss_fn(model, batch)` over `data`; "wanda" and "sparsegpt" (Linear layers; calibration batches `data`, each
    run as model(batch), model(*batch) or model(**batch); wanda ranks within output rows at element granularity;
    sparsegpt: element or n:m, and prune() also writes its updated weights). See criteria.py. scope and normalize:
    see this module's docstring. Weights that are already zero count as pruned (masks never grow back).

    `_where` is for sparsekern's own callers: the public function named in errors."""
    where = _where
    if not isinstance(model, nn.Module):
        fail(where, TypeError, f"model must be an nn.Module, got {type(model).__name__}")
    granularity, n, m = parse_granularity(granularity, n, m, where)
    _check_sparsity(where, sparsity, granularity, n, m)
    if criterion not in CRITERIA:
        fail(where, ValueError, f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if scope not in ("layer", "global"):
        fail(where, ValueError, f"scope must be 'layer' or 'global', got {scope!r}")
    if normalize not in ("auto", "rms", "none"):
        fail(where, ValueError, f"normalize must be 'auto', 'rms' or 'none', got {normalize!r}")
    if criterion == "bn_scale" and (granularity != "channel" or channel_dim != 0):
        fail(where, ValueError, "criterion 'bn_scale' scores output channels: use granularity='channel', channel_dim=0")

    layers = prunable_layers(model, filter_fn)
    if isinstance(sparsity, dict):
        if scope == "global":
            fail(where, ValueError, "a dict of per-layer sparsities needs scope='layer'")
        unknown = sorted(set(sparsity) - set(layers))
        if unknown:
            fail(where, ValueError, f"{unknown} are not prunable layers selected by filter_fn (have {list(layers)})")
        layers = {k: v for k, v in layers.items() if k in sparsity}
    if not layers:
        return {}
    if criterion == "sparsegpt":
        return _sparsegpt(where, model, layers, sparsity, granularity, scope, n, m, data, copy=True)
    weights = {k: effective_weight(mod) for k, mod in layers.items()}
    alive = {k: view2d(w) != 0 for k, w in weights.items()}

    if criterion == "bn_scale":
        scores2d = {k: g.view(-1, 1) for k, g in bn_scale_scores(model, layers, bn_map).items()}
    else:
        es = element_scores(model, layers, criterion, loss_fn=loss_fn, data=data, hessian=hessian, n_probes=n_probes)
        scores2d = {k: view2d(s) for k, s in es.items()}
    if granularity == "n:m":
        return {k: nm_keep(scores2d[k], alive[k], n, m).reshape(w.shape) for k, w in weights.items()}

    tiles = {
        k: tile_for(granularity, tuple(w.shape), blocksize=blocksize, vector_size=vector_size, channel_dim=channel_dim,
                    where=where)
        for k, w in weights.items()
    }
    if criterion != "bn_scale":  # bn_scale scores are already one per channel
        scores2d = {k: group_scores(scores2d[k], tiles[k], aggregation(criterion)) for k in layers}
    if scope == "layer":
        per_layer = sparsity if isinstance(sparsity, dict) else dict.fromkeys(layers, sparsity)
        masks = {}
        if criterion == "wanda" and granularity == "element":  # Wanda's comparison group: each output row
            return {k: row_keep(scores2d[k], alive[k], per_layer[k]).reshape(w.shape) for k, w in weights.items()}
        for k, w in weights.items():
            keep = keep_from_group_scores(scores2d[k], alive[k], tiles[k], n_to_prune(per_layer[k], w.numel()))
            masks[k] = keep.reshape(w.shape)
        return masks
    if normalize == "rms" or (normalize == "auto" and criterion in WEIGHT_CRITERIA):
        scores2d = {k: s / weights[k].float().square().mean().sqrt().clamp_min(1e-30) for k, s in scores2d.items()}
    return _global_masks(weights, alive, tiles, scores2d, sparsity)


def _check_sparsity(where: str, sparsity, granularity: str, n: int, m: int) -> None:
    """A float in [0, 1] or a dict of them (or None for n:m, whose pattern fixes the sparsity: a given value, or
    every value of a dict, must equal 1 - n/m rather than be ignored)."""
    values = sparsity.values() if isinstance(sparsity, dict) else [sparsity]
    for s in values:
        if granularity == "n:m":
            check_nm_sparsity(where, s, n, m)
        elif s is None:
            fail(where, ValueError, f"granularity {granularity!r} needs a sparsity")
        else:
            check_fraction(where, s)



def _sparsegpt(where, model, layers, sparsity, granularity, scope, n, m, data, copy: bool) -> dict[str, torch.Tensor]:
    """SparseGPT masks; it prunes layer by layer on the already-pruned model, so it works on a copy of `model`
    when `copy` (compute_masks leaves the model as it is) and updates `model`'s weights otherwise (prune)."""
    if granularity not in ("element", "n:m") or scope != "layer":
        fail(where, ValueError, f"criterion 'sparsegpt' supports granularity 'element' or 'n:m' with scope='layer', "
                                f"got {granularity!r}, {scope!r}")
    from .sparsegpt import prune_sparsegpt

    if copy:
        import copy as copy_

        names = list(layers)
        model = copy_.deepcopy(model)
        modules = dict(model.named_modules())
        layers = {k: modules[k] for k in names}
    nm = dict(n=n, m=m) if granularity == "n:m" else {}
    if isinstance(sparsity, dict):
        masks = {}
        for k in layers:
            masks |= prune_sparsegpt(model, {k: layers[k]}, data, sparsity=sparsity[k], **nm)
        return masks
    return prune_sparsegpt(model, layers, data, sparsity=sparsity, **nm)


def _global_masks(weights, alive, tiles, gscores, sparsity: float) -> dict[str, torch.Tensor]:
    gains = {k: group_sum(a.to(torch.int64), tiles[k]) for k, a in alive.items()}
    total = sum(w.numel() for w in weights.values())
    dead = sum(a.numel() - int(a.sum()) for a in alive.values())
    pruned = select_pruned(
        torch.cat([s.flatten().double() for s in gscores.values()]),
        torch.cat([g.flatten() for g in gains.values()]),
        n_to_prune(sparsity, total) - dead,
    )
    masks, start = {}, 0
    for k, w in weights.items():
        shape = gains[k].shape
        chunk = pruned[start : start + gains[k].numel()].reshape(shape)
        start += gains[k].numel()
        masks[k] = expand_groups(~chunk, tiles[k], tuple(alive[k].shape)).reshape(w.shape)
    return masks


def prune(
    model: nn.Module,
    sparsity: float | dict[str, float] | None = None,
    *,
    granularity: str = "element",
    criterion: str = "magnitude",
    scope: str = "layer",
    filter_fn: FilterFn | None = None,
    dependents: bool = True,
    **options,
) -> dict[str, torch.Tensor]:
    """Computes masks (compute_masks with the same arguments; `options` are its other keywords: n, m,
    blocksize, vector_size, channel_dim, loss_fn, data, hessian, n_probes, normalize, bn_map) and writes them
    into `model` as torch.nn.utils.prune reparametrisations (weight = weight_orig * weight_mask, and-ed with
    existing masks), so pruned weights stay exactly zero through fine-tuning: they are re-masked at every
    forward and their gradient is zero. sparsekern.pruning.remove(model) bakes the masks in. Returns the masks.

    With granularity="channel" (output channels) and `dependents`, a pruned channel becomes a dead unit: its
    bias entry and the gamma and beta of the BatchNorm it feeds are masked as well, so it outputs exactly zero
    (through any activation with f(0) = 0) and shrink_ can remove it without changing the model's output."""
    where = "sparsekern.pruning.prune"
    if criterion == "sparsegpt":
        compute_masks(model, sparsity, granularity=granularity, criterion="magnitude", scope=scope,
                      filter_fn=filter_fn, _where=where, **options)  # the same argument checks, on a cheap criterion
        gran, n, m = parse_granularity(granularity, options.get("n", 2), options.get("m", 4), where)
        layers = prunable_layers(model, filter_fn)
        if isinstance(sparsity, dict):
            layers = {k: v for k, v in layers.items() if k in sparsity}
        masks = _sparsegpt(where, model, layers, sparsity, gran, scope, n, m, options.get("data"), copy=False)
    else:
        masks = compute_masks(model, sparsity, granularity=granularity, criterion=criterion, scope=scope,
                              filter_fn=filter_fn, _where=where, **options)
    write_masks(model, masks)
    if dependents and granularity == "channel" and options.get("channel_dim", 0) == 0:
        mask_dead_units(model, masks, options.get("bn_map"))
    return masks


def mask_dead_units(model: nn.Module, masks: dict[str, torch.Tensor], bn_map: dict[str, str] | None = None) -> None:
    """For every layer whose mask prunes whole output channels, masks those channels' bias and the affine
    parameters of the BatchNorm they feed (found by graph.bn_after), as reparametrisations."""
    modules = dict(model.named_modules())
    rows = {k: view2d(mk).any(1) for k, mk in masks.items()}
    rows = {k: r for k, r in rows.items() if not bool(r.all())}
    bns = bn_after(model, list(rows), bn_map) if rows else {}
    for k, keep in rows.items():
        targets = [(modules[k], "bias")]
        if k in bns and modules[bns[k]].affine:
            targets += [(modules[bns[k]], "weight"), (modules[bns[k]], "bias")]
        for mod, pname in targets:
            if getattr(mod, pname, None) is not None:
                write_mask(mod, keep, pname)
