import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import randomise_bn
from torch import nn

import sparsekern as sk

P = sk.pruning


def cnn():
    return randomise_bn(nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
        nn.Conv2d(24, 8, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    ))  # fmt: skip


def mlp():
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 48), nn.GELU(), nn.Linear(48, 5)).eval()


class ResNetish(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12)
        self.c1, self.bn1 = nn.Conv2d(12, 10, 3, padding=1, bias=False), nn.BatchNorm2d(10)
        self.c2, self.bn2 = nn.Conv2d(10, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        h = F.relu(self.bn0(self.stem(x)))
        r = F.relu(self.bn1(self.c1(h)))
        h = F.relu(self.bn2(self.c2(r)) + h)  # residual: stem and c2 channels are tied
        return self.fc(F.adaptive_avg_pool2d(h, 1).view(h.size(0), -1))


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _check_shrink(model, x):
    """Channel-prune, then shrink: the shrunk model's output equals the masked model's, with fewer params/MACs."""
    masked_out = model(x)
    before = sk.report(model, x)
    params = _params(model)
    plan = P.shrink_plan(model)
    assert plan
    P.shrink_(model)
    torch.testing.assert_close(model(x), masked_out, rtol=1e-5, atol=1e-5)
    after = sk.report(model, x)
    assert _params(model) < params and after.total.macs < before.total.macs
    return plan, before, after


def test_shrink_cnn():
    torch.manual_seed(0)
    model, x = cnn(), torch.randn(4, 3, 8, 8)
    masks = P.prune(model, 0.5, granularity="channel", filter_fn=lambda n, m: n in ("0", "4", "7", "10"))
    plan, before, after = _check_shrink(model, x)
    for n in ("0", "4", "7", "10"):
        assert plan[n] == (~P.view2d(masks[n]).all(1)).nonzero().flatten().tolist()
    assert [model[i].out_channels for i in (0, 4, 7)] == [8, 12, 4]
    assert model[1].num_features == 8 and model[5].num_features == 12 and model[5].running_mean.shape == (12,)
    assert model[10].in_features == 4 * 16 and model[10].out_features == 16 and model[12].in_features == 16
    # removing a unit also removes its input columns downstream: fewer MACs than the masked model's nonzeros
    assert after.total.macs < before.total.effective_macs


def test_shrink_mlp_and_convenience():
    torch.manual_seed(0)
    model, x = mlp(), torch.randn(7, 20)
    reference = copy.deepcopy(model)
    P.prune(reference, 0.5, granularity="channel", criterion="l2", filter_fn=lambda n, m: n != "4")
    expected = reference(x)
    # shrink_ with a sparsity prunes the removable layers itself (the output layer is kept)
    before = sk.report(model, x)
    P.shrink_(model, 0.5, criterion="l2")
    after = sk.report(model, x)
    assert after.total.params < before.total.params / 2 and after.total.macs < before.total.macs / 2
    widths = (model[0].out_features, model[2].in_features, model[2].out_features, model[4].in_features)
    assert widths == (32, 32, 24, 24)
    assert model[4].out_features == 5
    torch.testing.assert_close(model(x), expected)


def test_shrink_residual_keeps_tied_channels_consistent():
    torch.manual_seed(0)
    model, x = randomise_bn(ResNetish()), torch.randn(2, 3, 6, 6)
    masks = P.prune(model, 0.5, granularity="channel", filter_fn=lambda n, m: n != "fc")
    dead = {n: set((~P.view2d(mk).all(1)).nonzero().flatten().tolist()) for n, mk in masks.items()}
    plan, _, _ = _check_shrink(model, x)
    # a channel of the residual sum goes only if pruned in both branches
    assert set(plan["stem"]) == set(plan["c2"]) == dead["stem"] & dead["c2"]
    assert set(plan["c1"]) == dead["c1"]
    assert model.stem.out_channels == model.c2.out_channels == model.c1.in_channels == model.fc.in_features


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3), nn.Conv2d(3, 6, 3)
        self.c, self.head = nn.Conv2d(12, 4, 1), nn.Linear(6, 2)

    def forward(self, x):
        h = torch.cat([self.a(x), self.b(x)], 1)
        return self.c(h).mean((2, 3)), self.head(self.b(x).mean((2, 3)))


def test_shrink_keeps_channels_it_cannot_follow():
    torch.manual_seed(0)
    model, x = Concat().eval(), torch.randn(2, 3, 5, 5)
    masks = P.prune(model, 0.5, granularity="channel", filter_fn=lambda n, m: n in ("a", "c"))
    dead = {n: (~P.view2d(mk).all(1)).nonzero().flatten().tolist() for n, mk in masks.items()}
    graph = P.ChannelGraph(model)
    assert any("cat" in reason for reason in graph.group_of("a").pinned)
    assert any("called 2 times" in reason for reason in graph.group_of("b").pinned)
    with pytest.warns(UserWarning) as caught:
        assert P.shrink_plan(model) == {}
    assert {str(w.message).split(": ", 1)[1] for w in caught} == {
        f"channels {dead['a']} of ['a'] are pruned but kept: their tensor feeds call_function cat",
        f"channels {dead['c']} of ['c'] are pruned but kept: their tensor feeds call_method mean",
    }
    out = model(x)
    with pytest.warns(UserWarning, match="pruned but kept"):
        P.shrink_(model)
    assert model.a.out_channels == 6
    for got, want in zip(model(x), out):
        torch.testing.assert_close(got, want)


def test_shrink_refuses_to_change_the_output():
    torch.manual_seed(0)
    model = cnn()
    # torch's structured pruning zeroes filters but leaves the BatchNorm shift: the channels still carry a
    # constant into a zero-padded convolution, which no smaller layer reproduces
    torch.nn.utils.prune.ln_structured(model[4], "weight", amount=0.5, n=1, dim=0)
    with pytest.raises(ValueError, match="nonzero value"):
        P.shrink_plan(model)
    with pytest.raises(ValueError, match="fx"):
        P.shrink_(_Untraceable())


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else x
