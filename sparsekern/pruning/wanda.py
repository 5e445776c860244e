"""Wanda (Sun et al., "A Simple and Effective Pruning Approach for Large Language Models", 2023): the score of
weight W_ij is |W_ij| * ||X_j||_2, X_j the j-th input feature over every calibration token, and weights compete
within their output row (each row keeps the same fraction), with no weight update. A handful of batches suffice:
the norms of LLM input features are dominated by a few large-magnitude outlier features, which this protects."""

from __future__ import annotations

import torch
from torch import nn

from .calibration import batches, check_linear, feed
from .interop import effective_weight


def input_norms(model: nn.Module, layers: dict[str, nn.Module], data) -> dict[str, torch.Tensor]:
    """{layer: ||X_j||_2 per input feature j (float32, (in_features,))} over every token of the batches in `data`."""
    check_linear(layers, "wanda")
    sq = {n: torch.zeros(m.in_features, dtype=torch.float64, device=effective_weight(m).device)
          for n, m in layers.items()}

    def add(name, x):
        sq[name] += x.double().square().sum(0)

    feed(model, layers, batches(data, "wanda"), add)
    return {n: s.sqrt().float() for n, s in sq.items()}


def wanda_scores(model: nn.Module, layers: dict[str, nn.Module], data) -> dict[str, torch.Tensor]:
    """{layer: |W| * ||X_j||_2}, shaped like each weight."""
    norms = input_norms(model, layers, data)
    return {n: effective_weight(m).detach().abs().float() * norms[n] for n, m in layers.items()}


def row_keep(scores2d: torch.Tensor, alive2d: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per output row, prunes the ceil(sparsity * K) lowest-scoring weights (already-zero weights first, so a mask
    never grows back) and keeps the rest."""
    from .masks import n_to_prune

    M, K = scores2d.shape
    pruned = n_to_prune(sparsity, K)
    s = torch.where(alive2d, scores2d.double(), float("-inf"))
    order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :K - pruned]
    keep = torch.zeros(M, K, dtype=torch.bool, device=scores2d.device).scatter_(1, order, True)
    return keep & alive2d
