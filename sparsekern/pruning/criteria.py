"""Importance criteria: scores per weight (higher = more important), aggregated per group by the granularity.

    magnitude     |w|                                          groups: mean |w|       (the L1 norm per element)
    l1            |w|                                          groups: mean |w|
    l2            w^2                                          groups: sqrt(mean w^2) (the L2 norm / sqrt(size))
    taylor        mean over batches of |g_b * w|               groups: mean   (first-order Taylor, Molchanov et al.)
    second_order  1/2 * h_ii * w^2, h_ii the Hessian diagonal  groups: mean   (Optimal Brain Damage, LeCun et al.)
    bn_scale      |gamma| of the BatchNorm the output channel feeds (network slimming, Liu et al.); channels only
    wanda         |w| * ||x_j||_2 from calibration batches     element: per output row (Sun et al.; wanda.py)
    sparsegpt     OBS with a calibration Hessian, updating the kept weights (Frantar & Alistarh; sparsegpt.py):
                  element and n:m only; prune() writes the updated weights, compute_masks leaves the model as it is

At element granularity magnitude, l1 and l2 rank identically. Group scores are per element (mean rather than sum)
so ragged edge groups and layers of different fan-in compete fairly: a budget counts elements, and the mean is the
score per element pruned. The data-driven criteria take `loss_fn(model, batch) -> scalar` and an iterable of
batches (each consumed once); they run the model in eval mode (BatchNorm on running statistics) and restore the
modules' modes afterwards. Weights under a torch.nn.utils.prune reparametrisation are scored as the module
computes with them (orig * mask).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from .._checks import fail
from .graph import bn_after
from .interop import effective_weight, trainable_name, trainable_param
from .layers import eval_mode, prunable_layers

CRITERIA = ("magnitude", "l1", "l2", "bn_scale", "second_order", "taylor", "wanda", "sparsegpt")
WEIGHT_CRITERIA = ("magnitude", "l1", "l2")
HESSIAN_METHODS = ("fisher", "hutchinson")

LossFn = Callable[[nn.Module, object], torch.Tensor]


def aggregation(criterion: str) -> str:
    return "rms" if criterion == "l2" else "mean"


def element_scores(
    model: nn.Module,
    layers: dict[str, nn.Module],
    criterion: str,
    *,
    loss_fn: LossFn | None = None,
    data: Iterable | None = None,
    hessian: str = "fisher",
    n_probes: int = 1,
) -> dict[str, torch.Tensor]:
    """{layer: element scores shaped like its weight} for every criterion but bn_scale (a channel score)."""
    weights = {n: effective_weight(mod) for n, mod in layers.items()}
    if criterion in ("magnitude", "l1"):
        return {n: w.abs() for n, w in weights.items()}
    if criterion == "l2":
        return {n: w.square() for n, w in weights.items()}
    if criterion == "taylor":
        return taylor_scores(model, loss_fn, data, layers)
    if criterion == "wanda":
        from .wanda import wanda_scores

        return wanda_scores(model, layers, data)
    if criterion == "second_order":
        h = hessian_diagonal(model, loss_fn, data, layers, method=hessian, n_probes=n_probes)
        return {n: 0.5 * h[n] * weights[n].square() for n in layers}
    fail("sparsekern.pruning", ValueError, f"criterion must be one of {CRITERIA}, got {criterion!r}")


def bn_scale_scores(model: nn.Module, layers: dict[str, nn.Module], bn_map: dict[str, str] | None = None):
    """{layer: |gamma| (one per output channel)} of the BatchNorm each layer's output channels feed (found by
    bn_after: explicit `bn_map`, the fx graph, or module order)."""
    found = bn_after(model, list(layers), bn_map)
    missing = [n for n in layers if n not in found]
    if missing:
        fail("sparsekern.pruning", ValueError, f"criterion 'bn_scale': no BatchNorm found after {missing}; pass bn_map")
    modules = dict(model.named_modules())
    out = {}
    for n, layer in layers.items():
        bn = modules[found[n]]
        if not bn.affine or bn.num_features != layer.weight.shape[0]:
            fail("sparsekern.pruning", ValueError, f"BatchNorm {found[n]} after {n} must be affine with "
                 f"{layer.weight.shape[0]} features")  # fmt: skip
        out[n] = effective_weight(bn).abs()
    return out


@contextlib.contextmanager
def _scoring(model: nn.Module):
    """Eval mode (deterministic; BatchNorm on running statistics) with grad enabled."""
    with eval_mode(model), torch.enable_grad():
        yield


def _params(layers: dict[str, nn.Module]) -> dict[str, nn.Parameter]:
    return {n: trainable_param(mod) for n, mod in layers.items()}


def _batches(data: Iterable | None, loss_fn: LossFn | None, what: str):
    if loss_fn is None or data is None:
        fail("sparsekern.pruning", ValueError, f"{what} needs loss_fn(model, batch) and data (an iterable of batches)")
    n = 0
    for batch in data:
        n += 1
        yield batch
    if n == 0:
        fail("sparsekern.pruning", ValueError, f"{what}: data yielded no batches")


def taylor_scores(model: nn.Module, loss_fn: LossFn, data: Iterable, layers: dict[str, nn.Module] | None = None):
    """{layer: mean over batches of |g_b * w|}, the first-order Taylor estimate of the loss change from zeroing
    each weight; taking |.| per batch keeps the gradient noise (a zero mean gradient at convergence would zero
    |mean g * w| everywhere)."""
    params = _params(prunable_layers(model) if layers is None else layers)
    acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = 0
    with _scoring(model):
        for batch in _batches(data, loss_fn, "criterion 'taylor'"):
            grads = torch.autograd.grad(loss_fn(model, batch), list(params.values()), allow_unused=True)
            for (n, p), g in zip(params.items(), grads):
                if g is not None:
                    acc[n] += (g * p.detach()).abs().float()
            count += 1
    return {n: a / count for n, a in acc.items()}


class _LossOf(nn.Module):
    """Wraps `loss_fn(model, batch)` as a module so torch.func.functional_call can swap the model's weights."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def hessian_diagonal(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable,
    layers: dict[str, nn.Module] | None = None,
    *,
    method: str = "fisher",
    n_probes: int = 1,
    chunk_size: int | None = 64,
) -> dict[str, torch.Tensor]:
    """{layer: estimate of the diagonal of the loss Hessian w.r.t. its weight}, from the batches of `data`.

    "fisher": the empirical Fisher, mean over samples of (d loss_n / d w)^2, from per-sample gradients
    (torch.func.vmap over each batch, `chunk_size` samples at a time; `loss_fn` must work on a batch of one).
    For a negative log-likelihood loss it approximates the Hessian near a minimum.
    "hutchinson": mean over batches and `n_probes` Rademacher vectors z of z * (H z), an unbiased estimate of
    diag(H) of each batch's loss (Hessian-vector products by double backward)."""
    if method not in HESSIAN_METHODS:
        fail("sparsekern.pruning", ValueError, f"hessian must be one of {HESSIAN_METHODS}, got {method!r}")
    layers = prunable_layers(model) if layers is None else layers
    params = _params(layers)
    with _scoring(model):
        if method == "fisher":
            return _empirical_fisher(model, layers, params, loss_fn, data, chunk_size)
        return _hutchinson(model, params, loss_fn, data, n_probes)


def _empirical_fisher(model, layers, params, loss_fn, data, chunk_size):
    keys = {n: ".".join(filter(None, ("model", n, trainable_name(layers[n])))) for n in params}
    wrapper = _LossOf(model, loss_fn)
    weights = {keys[n]: p.detach() for n, p in params.items()}
    acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = 0
    for batch in _batches(data, loss_fn, "criterion 'second_order'"):
        leaves, spec = tree_flatten(batch)
        where = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]

        def loss_one(w, *sample, leaves=leaves, spec=spec, where=where):
            one = list(leaves)
            for i, t in zip(where, sample):
                one[i] = t.unsqueeze(0)
            return torch.func.functional_call(wrapper, w, (tree_unflatten(one, spec),))

        per_sample = torch.func.vmap(
            torch.func.grad(loss_one), in_dims=(None,) + (0,) * len(where), chunk_size=chunk_size
        )(weights, *(leaves[i] for i in where))
        for n in params:
            acc[n] += per_sample[keys[n]].float().square().sum(0)
        count += leaves[where[0]].shape[0]
    return {n: a / count for n, a in acc.items()}


def _hutchinson(model, params, loss_fn, data, n_probes):
    if n_probes < 1:
        fail("sparsekern.pruning", ValueError, f"n_probes must be >= 1, got {n_probes}")
    plist = list(params.values())
    acc = [torch.zeros_like(p, dtype=torch.float32) for p in plist]
    count = 0
    for batch in _batches(data, loss_fn, "criterion 'second_order'"):
        grads = torch.autograd.grad(loss_fn(model, batch), plist, create_graph=True, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(plist, grads)]
        live = [i for i, g in enumerate(grads) if g.requires_grad]
        for _ in range(n_probes):
            zs = [torch.randint_like(plist[i], 2) * 2 - 1 for i in live]
            hz = torch.autograd.grad([grads[i] for i in live], [plist[i] for i in live], grad_outputs=zs,
                                     retain_graph=True, allow_unused=True)  # fmt: skip
            for i, z, h in zip(live, zs, hz):
                if h is not None:
                    acc[i] += (z * h).float()
        count += n_probes
    return {n: a / count for n, a in zip(params, acc)}
