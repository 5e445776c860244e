import math

import pytest
import torch
import torch.nn.functional as F
from conftest import randomise_bn
from torch import nn

import sparsekern as sk
from sparsekern.pruning.criteria import element_scores

P = sk.pruning

# Granularity grid: name -> (granularity, options)
GRANULARITIES = {
    "element": ("element", {}),
    "2:4": ("2:4", {}),
    "block": ("block", {"blocksize": (4, 4)}),
    "vector": ("vector", {"vector_size": 4}),
    "kernel": ("kernel", {}),
    "channel": ("channel", {}),
    "in_channel": ("channel", {"channel_dim": 1}),
}
CRITERIA = {
    "magnitude": ("magnitude", {}),
    "l1": ("l1", {}),
    "l2": ("l2", {}),
    "taylor": ("taylor", {}),
    "fisher": ("second_order", {"hessian": "fisher"}),
    "hutchinson": ("second_order", {"hessian": "hutchinson", "n_probes": 2}),
    "bn_scale": ("bn_scale", {}),
}


def _model(kind):
    """A target layer "0" (Linear (24, 13) or Conv2d (12, 5, 3, 3) -> 2-D view (12, 45)) feeding a BatchNorm; odd
    sizes so blocks, vectors and 4-groups have ragged edges."""
    if kind == "linear":
        model = nn.Sequential(nn.Linear(13, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 3))
        x = torch.randn(16, 13)
    else:
        model = nn.Sequential(nn.Conv2d(5, 12, 3), nn.BatchNorm2d(12), nn.ReLU(), nn.Flatten(), nn.Linear(192, 3))
        x = torch.randn(16, 5, 6, 6)
    randomise_bn(model).train()
    y = torch.randint(0, 3, (16,))
    return model, [(x[:8], y[:8]), (x[8:], y[8:])]


def ce_loss(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def _tile(gran, opts, shape):
    return P.masks.tile_for(gran, shape, **{k: v for k, v in opts.items() if k != "n"})


def reference_mask(S2, tile, agg, n_prune):
    """Independent loop implementation of the documented rule: prune tiles by increasing per-element score
    (mean, or sqrt(mean) for rms), ties by tile index, until at least n_prune elements are pruned."""
    bm, bk = tile
    M, K = S2.shape
    groups = []
    for i in range(0, M, bm):
        for j in range(0, K, bk):
            mean = S2[i : i + bm, j : j + bk].double().mean().item()
            groups.append((math.sqrt(mean) if agg == "rms" else mean, len(groups), i, j))
    keep = torch.ones(M, K, dtype=torch.bool)
    pruned = 0
    for _, _, i, j in sorted(groups):
        if pruned >= n_prune:
            break
        keep[i : i + bm, j : j + bk] = False
        pruned += keep[i : i + bm, j : j + bk].numel()
    return keep


@pytest.mark.parametrize("crit", CRITERIA)
@pytest.mark.parametrize("gran", GRANULARITIES)
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_granularity_criterion_grid(kind, gran, crit):
    model, data = _model(kind)
    granularity, gopts = GRANULARITIES[gran]
    criterion, copts = CRITERIA[crit]
    opts = dict(granularity=granularity, criterion=criterion, filter_fn=lambda n, m: n == "0",
                loss_fn=ce_loss, data=data, **gopts, **copts)  # fmt: skip
    sparsity = None if gran == "2:4" else 0.6
    if crit == "bn_scale" and gran != "channel":
        with pytest.raises(ValueError, match="bn_scale"):
            P.compute_masks(model, sparsity, **opts)
        return
    torch.manual_seed(1)
    masks = P.compute_masks(model, sparsity, **opts)
    assert list(masks) == ["0"]
    W = model[0].weight
    mask = masks["0"]
    assert mask.dtype == torch.bool and mask.shape == W.shape
    M2 = P.view2d(mask)
    rows, K = M2.shape

    layer = {"0": model[0]}
    if crit == "bn_scale":
        S2 = model[1].weight.detach().abs()[:, None].expand(rows, K)
    else:
        torch.manual_seed(1)  # the same Hutchinson probes as compute_masks drew
        S2 = P.view2d(element_scores(model, layer, criterion, loss_fn=ce_loss, data=data, **copts)["0"])

    if gran == "2:4":
        assert P.is_nm(mask, 2, 4)
        assert int(M2.sum()) == rows * (2 * (K // 4) + min(2, K % 4))
        # in each group of 4 the kept scores are the 2 largest
        for r in range(rows):
            for j in range(0, K, 4):
                s, k = S2[r, j : j + 4], M2[r, j : j + 4]
                if k.all():
                    continue
                assert s[k].min() >= s[~k].max()
        return

    n_prune = math.ceil(0.6 * W.numel())
    tile = _tile(granularity, gopts, tuple(W.shape))
    assert P.is_block_pattern(mask, tile)
    n_pruned = int((~M2).sum())
    assert n_prune <= n_pruned < n_prune + tile[0] * tile[1]
    agg = "rms" if crit == "l2" else "mean"
    torch.testing.assert_close(M2, reference_mask(S2, tile, agg, n_prune))


@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (33, 7), (1000, 1), (6, 4, 3, 3)])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_magnitude_mask_keeps_the_largest(shape, sparsity):
    W = torch.randn(shape)
    mask = P.magnitude_mask(W, sparsity)
    n_prune = math.ceil(sparsity * W.numel() - 1e-6)
    assert int((~mask).sum()) == n_prune
    if 0 < n_prune < W.numel():
        assert W.abs()[mask].min() > W.abs()[~mask].max()


def test_rounding_rule():
    # 0.9 * 100 is 90.00000000000001 in floating point: still 90 pruned, not 91.
    assert P.masks.n_to_prune(0.9, 100) == 90
    assert P.masks.n_to_prune(0.5, 7) == 4  # at least the requested sparsity: 4/7 >= 0.5
    assert P.masks.n_to_prune(0.0, 7) == 0 and P.masks.n_to_prune(1.0, 7) == 7


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (2, 8), (3, 4)])
def test_nm_mask(n, m):
    W = torch.randn(9, 3, 3, 3)  # 2-D view (9, 27): a ragged tail of 27 % m
    mask = P.nm_mask(W, n, m)
    assert P.is_nm(mask, n, m)
    # groups run along ci*kh*kw flattened as W.reshape(co, -1): the same mask as on the 2-D view
    torch.testing.assert_close(mask, P.nm_mask(W.reshape(9, -1), n, m).reshape(W.shape))
    W2, M2 = W.reshape(9, -1).abs(), mask.reshape(9, -1)
    K = W2.shape[1]
    assert int(M2.sum()) == 9 * (n * (K // m) + min(n, K % m))
    for j in range(0, K, m):
        s, k = W2[:, j : j + m], M2[:, j : j + m]
        for r in range(9):
            if not k[r].all():
                assert s[r][k[r]].min() > s[r][~k[r]].max()
    assert not P.is_nm(torch.ones(2, 8, dtype=torch.bool), n, m)


def test_block_mask_whole_blocks_lowest_mean():
    W = torch.randn(10, 21)
    mask = P.block_mask(W, 0.5, blocksize=(4, 8))
    assert P.is_block_pattern(mask, (4, 8))
    torch.testing.assert_close(mask, reference_mask(W.abs(), (4, 8), "mean", math.ceil(0.5 * W.numel())))
    assert not P.is_block_pattern(P.magnitude_mask(W, 0.5), (4, 8))


def test_zero_weights_count_as_pruned():
    W = torch.randn(20, 30)
    W[:, :6] = 0  # 20% already zero
    mask = P.magnitude_mask(W, 0.5)
    assert not mask[:, :6].any() and int((~mask).sum()) == 300
    # a group granularity prunes all-zero groups first, for free: at 20% nothing else goes, at 25% one more
    bm = P.block_mask(W, 0.2, blocksize=(20, 6))
    assert not bm[:, :6].any() and bm[:, 6:].all()
    bm = P.block_mask(W, 0.25, blocksize=(20, 6))
    assert not bm[:, :6].any() and int((~bm).sum()) == 240


def _three_layers():
    return nn.Sequential(nn.Linear(10, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5))


@pytest.mark.parametrize("granularity, opts", [("element", {}), ("block", {"blocksize": (4, 4)}), ("channel", {})])
@pytest.mark.parametrize("sparsity", [0.3, 0.75])
def test_global_budget(granularity, opts, sparsity):
    model = _three_layers()
    masks = P.compute_masks(model, sparsity, granularity=granularity, scope="global", **opts)
    total = sum(m.numel() for m in masks.values())
    budget = total - math.ceil(sparsity * total)  # N
    kept = sum(int((mod.weight * masks[n]).count_nonzero()) for n, mod in P.prunable_layers(model).items())
    assert kept <= budget
    if granularity == "element":
        assert kept == budget
    # not uniform: a global budget allocates differently across layers
    per_layer = [1 - float(mk.float().mean()) for mk in masks.values()]
    assert max(per_layer) - min(per_layer) > 0.01


def test_global_normalisation():
    model = _three_layers()
    ref = P.compute_masks(model, 0.6, scope="global")
    with torch.no_grad():
        model[2].weight.mul_(1000.0)
    # weight scores are divided by the layer's weight RMS: scaling a layer changes nothing
    same = P.compute_masks(model, 0.6, scope="global")
    for n in ref:
        torch.testing.assert_close(same[n], ref[n])
    # unnormalised, the scaled-up layer escapes pruning and the others pay for it
    raw = P.compute_masks(model, 0.6, scope="global", normalize="none")
    pruned = lambda masks, n: float((~masks[n]).float().mean())  # noqa: E731
    assert pruned(ref, "2") > 0.3 and pruned(raw, "2") < pruned(ref, "2") - 0.2
    assert pruned(raw, "0") > pruned(ref, "0") + 0.2


def test_dict_and_filter():
    model = _three_layers()
    masks = P.compute_masks(model, {"0": 0.5, "4": 0.2})
    assert set(masks) == {"0", "4"}
    assert int((~masks["0"]).sum()) == 150 and int((~masks["4"]).sum()) == 20
    masks = P.compute_masks(model, 0.5, filter_fn=lambda n, m: m.out_features != 5)
    assert set(masks) == {"0", "2"}
    with pytest.raises(ValueError, match="not prunable"):
        P.compute_masks(model, {"1": 0.5})
    with pytest.raises(ValueError, match="scope='layer'"):
        P.compute_masks(model, {"0": 0.5}, scope="global")


def _quadratic_problem(d=10, N=2048, sigma=0.5):
    """Least squares with orthogonal features of different scales: the weights at the optimum, where zeroing
    weight i raises the loss by exactly 1/2 H_ii w_i^2. Magnitudes decrease with i, loss increases with i."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(N, d, generator=g, dtype=torch.float64))
    w_true = 3.0 - 0.2 * torch.arange(d, dtype=torch.float64)
    scales = (2.0 ** torch.arange(d, dtype=torch.float64)).sqrt() / w_true
    X = q * scales * N**0.5
    y = X @ w_true + sigma * torch.randn(N, generator=g, dtype=torch.float64)
    w_hat = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    model = nn.Linear(d, 1, bias=False).double()
    model.weight.data = w_hat[None].clone()

    def loss_fn(m, batch):
        return 0.5 * (m(batch[0])[:, 0] - batch[1]).square().mean()

    base = loss_fn(model, (X, y)).item()
    increase = []
    for i in range(d):
        w = w_hat.clone()
        w[i] = 0
        increase.append(0.5 * (X @ w - y).square().mean().item() - base)
    return model, loss_fn, (X, y), torch.tensor(increase, dtype=torch.float64)


@pytest.mark.parametrize("hessian", ["fisher", "hutchinson"])
def test_second_order_ranks_by_true_loss_increase(hessian):
    model, loss_fn, (X, y), increase = _quadratic_problem()
    # Hutchinson on the full batch, whose Hessian is diagonal; the Fisher from per-sample gradients in batches
    data = [(X, y)] if hessian == "hutchinson" else [(X[i : i + 512], y[i : i + 512]) for i in range(0, len(X), 512)]
    scores = element_scores(model, {"": model}, "second_order", loss_fn=loss_fn, data=data, hessian=hessian)[""][0]
    assert torch.equal(scores.argsort(), increase.argsort())
    if hessian == "hutchinson":  # a diagonal Hessian: z * Hz is exact with any probe
        torch.testing.assert_close(scores.double(), increase, rtol=1e-4, atol=0)
    k = 4
    mask = P.compute_masks(model, k / 10, criterion="second_order", hessian=hessian, loss_fn=loss_fn, data=data)[""][0]
    assert set((~mask).nonzero().flatten().tolist()) == set(increase.argsort()[:k].tolist())
    # the test discriminates: magnitude would prune the weights whose removal costs the most
    magnitude = P.magnitude_mask(model.weight, k / 10)[0]
    assert set((~magnitude).nonzero().flatten().tolist()).isdisjoint(increase.argsort()[:k].tolist())


def test_fisher_matches_per_sample_loop():
    model, data = _model("conv")
    fisher = P.hessian_diagonal(model, ce_loss, data, method="fisher")
    model.eval()
    ref = {n: torch.zeros_like(m.weight) for n, m in P.prunable_layers(model).items()}
    count = 0
    for x, y in data:
        for i in range(len(x)):
            params = [m.weight for m in P.prunable_layers(model).values()]
            grads = torch.autograd.grad(ce_loss(model, (x[i : i + 1], y[i : i + 1])), params)
            for n, g in zip(ref, grads):
                ref[n] += g.square()
            count += 1
    for n in ref:
        torch.testing.assert_close(fisher[n], ref[n] / count, rtol=1e-4, atol=1e-8)


def test_taylor_scores_match_manual():
    model, data = _model("linear")
    scores = P.taylor_scores(model, ce_loss, data)
    assert model.training  # modes restored
    model.eval()
    w = model[3].weight
    ref = sum((torch.autograd.grad(ce_loss(model, b), w)[0] * w).abs() for b in data) / len(data)
    torch.testing.assert_close(scores["3"], ref.detach())


def test_data_criteria_need_data():
    model, _ = _model("linear")
    with pytest.raises(ValueError, match="loss_fn"):
        P.compute_masks(model, 0.5, criterion="taylor")
    with pytest.raises(ValueError, match="no batches"):
        P.compute_masks(model, 0.5, criterion="second_order", loss_fn=ce_loss, data=[])


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = self.bn(self.conv(x))
        if h.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            h = h.relu()
        return self.head(h.mean((2, 3)))


def test_bn_scale_picks_smallest_gamma():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4))
    gamma = torch.tensor([0.9, -0.05, 0.3, 2.0, -0.2, 0.01, 1.5, -0.7])
    model[1].weight.data = gamma.clone()
    masks = P.compute_masks(model, 0.5, granularity="channel", criterion="bn_scale")
    rows = P.view2d(masks["0"]).all(1)
    assert sorted((~rows).nonzero().flatten().tolist()) == sorted(gamma.abs().argsort()[:4].tolist())
    # an explicit mapping overrides the graph, and untraceable models fall back to module order
    other = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    model[3], model[4] = nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8)
    model[4].weight.data = other.clone()
    swapped = P.compute_masks(model, 0.5, granularity="channel", criterion="bn_scale", bn_map={"0": "4"},
                              filter_fn=lambda n, m: n == "0")  # fmt: skip
    assert (~P.view2d(swapped["0"]).all(1)).nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert P.bn_after(_Untraceable(), ["conv"]) == {"conv": "bn"}
    with pytest.raises(ValueError, match="no BatchNorm"):
        P.compute_masks(_three_layers(), 0.5, granularity="channel", criterion="bn_scale")


def test_masks_never_grow():
    model = _three_layers()
    P.prune(model, 0.5)
    first = P.read_masks(model)
    again = P.compute_masks(model, 0.3)
    for n in first:
        assert torch.equal(again[n], first[n])  # already 50% zero: nothing to add, nothing comes back
    more = P.compute_masks(model, 0.8)
    for n in first:
        assert not (more[n] & ~first[n]).any()
        assert int((~more[n]).sum()) == math.ceil(0.8 * more[n].numel())
    # data-driven criteria differentiate through the reparametrisation (weight_orig)
    data = [(torch.randn(8, 10), torch.randint(0, 5, (8,)))]
    for criterion, hessian in [("taylor", "fisher"), ("second_order", "fisher"), ("second_order", "hutchinson")]:
        more = P.compute_masks(model, 0.7, criterion=criterion, hessian=hessian, loss_fn=ce_loss, data=data)
        for n in first:
            assert not (more[n] & ~first[n]).any() and int((~more[n]).sum()) == math.ceil(0.7 * more[n].numel())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_weights(dtype):
    W = torch.randn(24, 40).to(dtype)
    for mask in (P.magnitude_mask(W, 0.6), P.block_mask(W, 0.6, (8, 8)), P.nm_mask(W)):
        assert mask.dtype == torch.bool and mask.shape == W.shape
    torch.testing.assert_close(P.block_mask(W, 0.6, (8, 8)), P.block_mask(W.float(), 0.6, (8, 8)))
    assert int((~P.magnitude_mask(W, 0.6)).sum()) == 576


def test_torch_prune_interop():
    model = _three_layers()
    lin = model[0]
    torch.nn.utils.prune.l1_unstructured(lin, "weight", amount=0.3)
    old = P.read_masks(model)["0"]
    assert int((~old).sum()) == 90
    P.prune(model, 0.6)  # reads the existing mask, combines (and), counts its zeros toward the budget
    new = P.read_masks(model)
    assert set(new) == {"0", "2", "4"}
    assert not (new["0"] & ~old).any() and int((~new["0"]).sum()) == 180
    assert "weight_orig" in dict(lin.named_parameters()) and "weight_mask" in dict(lin.named_buffers())
    torch.testing.assert_close(lin.weight, lin.weight_orig * lin.weight_mask)
    # torch's own pruning on top of ours combines through its PruningContainer
    torch.nn.utils.prune.random_unstructured(model[2], "weight", amount=0.1)
    assert not (P.read_masks(model)["2"] & ~new["2"]).any()
    orig = lin.weight_orig
    P.remove(model)
    assert P.read_masks(model) == {} and not torch.nn.utils.prune.is_pruned(model)
    assert lin.weight is orig and torch.equal(lin.weight != 0, new["0"])
    # write_masks writes a fresh reparametrisation
    P.write_masks(model, {"0": new["0"]})
    assert torch.equal(P.read_masks(model)["0"], new["0"])
    with pytest.raises(ValueError, match="shape"):
        P.write_masks(model, {"2": new["0"]})


def test_channel_prune_kills_units():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    randomise_bn(model)
    model.eval()
    masks = P.prune(model, 0.5, granularity="channel", filter_fn=lambda n, m: n == "0")
    dead = ~P.view2d(masks["0"]).all(1)
    assert int(dead.sum()) == 4
    h = model[:3](torch.randn(2, 3, 6, 6))
    assert (h[:, dead] == 0).all() and (h[:, ~dead] != 0).any()


def _mlp_and_step(opt_kwargs):
    torch.manual_seed(0)
    model = _three_layers()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, **opt_kwargs)
    x, y = torch.randn(64, 10), torch.randint(0, 5, (64,))

    def train_step(t=0):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return model, train_step


def _assert_pruned_stay_zero(model):
    for n, mod in P.prunable_layers(model).items():
        mask = mod.weight_mask != 0
        assert (mod.weight[~mask] == 0).all()
        if mod.weight_orig.grad is not None:
            assert (mod.weight_orig.grad[~mask] == 0).all()


def test_iterative_prune_keeps_zeros():
    model, train_step = _mlp_and_step({"momentum": 0.9, "weight_decay": 1e-2})
    for _ in range(5):
        train_step()  # momentum buffers are nonzero everywhere before pruning

    def finetune(m, k):
        for _ in range(5):
            train_step()
            _assert_pruned_stay_zero(m)

    targets = P.iterative_sparsities(0.9, 3)
    assert targets == pytest.approx([1 - 0.1 ** (1 / 3), 1 - 0.1 ** (2 / 3), 0.9])
    hist = P.iterative_prune(model, targets, finetune, evaluate=lambda m: 0.5)
    assert [h["round"] for h in hist] == [0, 1, 2] and hist[-1]["finetuned"] == 0.5
    for h, s in zip(hist, targets):
        assert h["sparsity"] == pytest.approx(s, abs=2e-3)
    for mod in P.prunable_layers(model).values():
        assert int((mod.weight == 0).sum()) == math.ceil(0.9 * mod.weight.numel() - 1e-6)


def test_polynomial_schedule():
    f = lambda t: P.polynomial_sparsity(t, 0.8, begin_step=10, end_step=50, initial_sparsity=0.1)  # noqa: E731
    assert f(0) == 0.1 and f(10) == 0.1 and f(50) == 0.8 and f(99) == 0.8
    assert f(30) == pytest.approx(0.8 + (0.1 - 0.8) * 0.5**3)
    values = [f(t) for t in range(60)]
    assert values == sorted(values)


def test_gradual_prune():
    model, train_step = _mlp_and_step({"momentum": 0.9, "weight_decay": 1e-2})

    def step(t):
        train_step()
        if t >= 2:
            _assert_pruned_stay_zero(model)

    hist = P.gradual_prune(model, step, total_steps=24, final_sparsity=0.8, begin_step=2, end_step=14, frequency=4)
    assert [t for t, _ in hist] == [2, 6, 10, 14]
    assert [s for _, s in hist] == pytest.approx([P.polynomial_sparsity(t, 0.8, 2, 14) for t in (2, 6, 10, 14)])
    for mod in P.prunable_layers(model).values():
        assert int((mod.weight == 0).sum()) == math.ceil(0.8 * mod.weight.numel() - 1e-6)
    pruner = P.GradualPruner(model, 0.9, 0, 10, frequency=5)
    assert pruner.step(3) is None and pruner.step(10) == 0.9


def test_to_format_csr():
    W = torch.randn(6, 4, 3, 3)
    mask = P.magnitude_mask(W, 0.7)
    A = P.to_format(W, mask, "csr")
    assert A.shape == (6, 36) and A.nnz == int(mask.sum())
    torch.testing.assert_close(A.to_dense(), (W * mask).reshape(6, 36))
    with pytest.raises(ValueError, match="whole blocks"):
        P.to_format(W, mask, "bsr", blocksize=(2, 4))
    with pytest.raises(ValueError, match="2:4"):
        P.to_format(W, P.nm_mask(W, 3, 4), "2:4")
    with pytest.raises(ValueError, match="format"):
        P.to_format(W, mask, "coo")


@pytest.mark.skipif(not hasattr(sk, "BSRMatrix"), reason="BSRMatrix not in this build")
def test_to_format_bsr_without_fill():
    for shape in [(48, 64), (40, 70)]:  # ragged edges too
        W = torch.randn(shape)
        mask = P.block_mask(W, 0.6, blocksize=(16, 16))
        A = P.to_format(W, mask, "bsr", blocksize=(16, 16))
        # one stored block per kept tile: no block of explicit zeros
        assert A.values.shape[0] == int(P.masks.group_sum(mask.long(), (16, 16)).bool().sum())
        torch.testing.assert_close(A.to_dense(), W * mask)


@pytest.mark.skipif(not hasattr(sk, "Semi24Matrix"), reason="Semi24Matrix not in this build")
def test_to_format_semi24():
    W = torch.randn(32, 64, dtype=torch.float16)
    mask = P.nm_mask(W, 2, 4)
    A = P.to_format(W, mask, "2:4")
    torch.testing.assert_close(A.to_dense(), W * mask)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sparsity": 1.5}, r"\[0, 1\]"),
        ({"sparsity": 0.5, "granularity": "row"}, "granularity"),
        ({"sparsity": 0.5, "criterion": "random"}, "criterion"),
        ({"sparsity": 0.5, "scope": "model"}, "scope"),
        ({"sparsity": 0.5, "normalize": "max"}, "normalize"),
        ({"sparsity": 0.3, "granularity": "2:4"}, "fixes the sparsity"),
        ({"sparsity": None}, "needs a sparsity"),
        ({"sparsity": 0.5, "granularity": "block", "criterion": "bn_scale"}, "bn_scale"),
        ({"sparsity": 0.5, "granularity": "channel", "channel_dim": 2}, "channel_dim"),
        ({"sparsity": None, "granularity": "4:4"}, "n < m"),
    ],
)
def test_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        P.compute_masks(_three_layers(), **kwargs)
