"""Wanda and SparseGPT through sparsekern.pruning.prune on a layer-wise reconstruction problem."""

import pytest
import torch
from torch import nn

import sparsekern as sk


def problem(seed=0, M=24, K=64, tokens=512):
    """A Linear layer and inputs with correlated features of very different scales (as LLM activations have)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(K, K, generator=g) / K**0.5 + torch.eye(K)
    scale = torch.exp(torch.randn(K, generator=g))
    X = (torch.randn(tokens, K, generator=g) @ mix) * scale
    lin = nn.Linear(K, M, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(M, K, generator=g))
    return nn.Sequential(lin), X


def error(model, W, X):
    return float(torch.linalg.norm(X @ W.T - model(X)))


@pytest.mark.parametrize("granularity,sparsity", [("element", 0.5), ("2:4", None)])
def test_data_driven_criteria_reconstruct_better_than_magnitude(granularity, sparsity):
    errs = {}
    for criterion in ("magnitude", "wanda", "sparsegpt"):
        model, X = problem()
        W = model[0].weight.detach().clone()
        masks = sk.pruning.prune(model, sparsity, granularity=granularity, criterion=criterion,
                                 data=list(X.split(128)))
        sk.pruning.remove(model)
        Wp = model[0].weight.detach()
        assert torch.equal(Wp != 0, masks["0"] & (Wp != 0))
        assert float((Wp == 0).float().mean()) >= 0.5
        if granularity == "2:4":
            assert sk.pruning.is_nm(Wp != 0, 2, 4)
        if criterion == "wanda":  # wanda's comparison group is the output row: every row equally sparse
            assert len(set((Wp == 0).sum(1).tolist())) == 1
        with torch.no_grad():
            errs[criterion] = error(model, W, X)
    assert errs["sparsegpt"] < errs["wanda"] < errs["magnitude"], errs


def test_compute_masks_sparsegpt_leaves_model_and_checks_arguments():
    model, X = problem(M=8, K=16, tokens=64)
    W = model[0].weight.detach().clone()
    masks = sk.pruning.compute_masks(model, 0.5, criterion="sparsegpt", data=[X])
    assert torch.equal(model[0].weight, W) and masks["0"].float().mean() <= 0.5
    with pytest.raises(ValueError, match="criterion 'sparsegpt' needs data="):
        sk.pruning.prune(model, 0.5, criterion="sparsegpt")
    with pytest.raises(ValueError, match="'sparsegpt' supports granularity 'element' or 'n:m'"):
        sk.pruning.prune(model, 0.5, granularity="block", criterion="sparsegpt", data=[X])
    conv = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="prunes Linear layers only"):
        sk.pruning.prune(conv, 0.5, criterion="wanda", data=[torch.randn(1, 3, 8, 8)])
