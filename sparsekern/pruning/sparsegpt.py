"""SparseGPT (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot", 2023):
Optimal Brain Surgeon per layer, with the Hessian of the layer-wise reconstruction loss ||W X - W_p X||^2,
H = 2 X X^T / tokens, from calibration inputs.

Columns are processed left to right in blocks of `blocksize`: within a block the mask is chosen adaptively (the
lowest w^2 / [H^-1]_jj^2 of the block, the OBS saliency; for n:m, per group of m columns as the group is reached),
and every pruned weight's error is spread over the not-yet-processed columns of its row through the upper Cholesky
factor of H^-1, which is what makes the remaining weights compensate. Layers are pruned sequentially in module
order: each layer's Hessian is measured on inputs produced by the already-pruned layers before it, so errors do
not compound silently (the forward of each calibration pass stops at the layer being measured).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import fail
from .calibration import WHERE, batches, check_linear, feed
from .interop import effective_weight, trainable_param


def hessian(model: nn.Module, name: str, layer: nn.Linear, data: list) -> torch.Tensor:
    """2 X X^T / tokens (float64, (in, in)) of the inputs `layer` receives over `data`."""
    H = torch.zeros(layer.in_features, layer.in_features, dtype=torch.float64, device=effective_weight(layer).device)
    count = [0]

    def add(_, x):
        x = x.double()
        H.addmm_(x.T, x)
        count[0] += x.shape[0]

    feed(model, {name: layer}, data, add, stop_after=layer)
    return H * (2.0 / max(count[0], 1))


def sparsegpt_weight(W: torch.Tensor, H: torch.Tensor, *, sparsity: float | None = None, n: int = 0, m: int = 0,
                     alive: torch.Tensor | None = None, blocksize: int = 128, percdamp: float = 0.01
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned and updated W, keep-mask) for W (M, K) under Hessian H (K, K): unstructured at `sparsity` (each
    column block prunes ceil(sparsity * its size) weights, so the layer prunes at least ceil(sparsity * M * K))
    or n:m along K (n kept of every m). `alive`: weights that may be kept (already-zero ones never come back).
    `percdamp`: fraction of mean(diag H) added to the diagonal (dead inputs and rank deficiency)."""
    M, K = W.shape
    nm = n > 0
    if nm and blocksize % m:
        blocksize = m * max(1, blocksize // m)
    W = W.detach().double().clone()
    H = H.double().clone()
    alive = torch.ones_like(W, dtype=torch.bool) if alive is None else alive.clone()
    dead_in = torch.diag(H) == 0
    H[dead_in, dead_in] = 1.0
    W[:, dead_in] = 0.0
    W[~alive] = 0.0
    H.diagonal().add_(percdamp * torch.diag(H).mean())
    try:
        L = torch.linalg.cholesky(H)
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    except RuntimeError as e:
        fail(WHERE, ValueError, f"criterion 'sparsegpt': the Hessian is not positive definite even damped "
                                f"(percdamp={percdamp}); raise percdamp or give more calibration data ({e})")
    keep = torch.ones_like(alive)
    for i1 in range(0, K, blocksize):
        i2 = min(i1 + blocksize, K)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        saliency = W1.square() / torch.diag(Hinv1).square()
        saliency[~alive[:, i1:i2]] = -1.0  # dead weights go first
        prune1 = torch.zeros_like(W1, dtype=torch.bool)
        if not nm:
            k = min(saliency.numel(), math.ceil(sparsity * saliency.numel() - 1e-6))
            if k > 0:
                prune1.view(-1)[torch.topk(saliency.flatten(), k, largest=False).indices] = True
        for i in range(i2 - i1):
            if nm and i % m == 0:
                width = min(m, i2 - i1 - i)
                s = W1[:, i:i + width].square() / torch.diag(Hinv1)[i:i + width].square()
                s[~alive[:, i1 + i:i1 + i + width]] = -1.0
                drop = width - min(n, width)
                if drop:
                    prune1.scatter_(1, i + torch.topk(s, drop, dim=1, largest=False).indices, True)
            w, d = W1[:, i], Hinv1[i, i]
            q = torch.where(prune1[:, i], torch.zeros_like(w), w)
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
        keep[:, i1:i2] = ~prune1
    keep &= alive
    return W * keep, keep


def prune_sparsegpt(model: nn.Module, layers: dict[str, nn.Module], data, *, sparsity: float | None = None,
                    n: int = 0, m: int = 0, blocksize: int = 128, percdamp: float = 0.01) -> dict[str, torch.Tensor]:
    """Prunes `layers` of `model` in module order with SparseGPT, writing the updated weights into the model (the
    weight, or weight_orig under a torch.nn.utils.prune reparametrisation); returns {layer: keep-mask}."""
    check_linear(layers, "sparsegpt")
    data = batches(data, "sparsegpt")
    masks = {}
    for name, layer in layers.items():
        H = hessian(model, name, layer, data)
        w = effective_weight(layer).detach()
        W, keep = sparsegpt_weight(w, H, sparsity=sparsity, n=n, m=m, alive=w != 0, blocksize=blocksize,
                                   percdamp=percdamp)
        with torch.no_grad():
            trainable_param(layer).copy_(W.to(w.dtype))
        masks[name] = keep
    return masks
