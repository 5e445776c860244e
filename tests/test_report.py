import torch
from torch import nn

import sparsekern as sk


def _model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False), nn.Flatten(), nn.Linear(8 * 5 * 5, 6),
    )  # fmt: skip


def test_report_counts_params_and_macs():
    model, x = _model(), torch.randn(2, 3, 9, 9)
    model.train()
    running = model[1].running_mean.clone()
    rep = sk.report(model, x)
    assert model.training and torch.equal(model[1].running_mean, running)  # no side effects
    conv0, conv3, fc = rep.rows
    assert [r.layer for r in rep.rows] == ["0", "3", "5"]
    # N * Hout * Wout * co * (ci / groups) * kh * kw; Linear: rows * out * in
    assert conv0.macs == 2 * 5 * 5 * 8 * 3 * 9 and conv0.params == 8 * 3 * 9 + 8
    assert conv3.macs == 2 * 5 * 5 * 8 * 2 * 9 and conv3.params == 8 * 2 * 9
    assert fc.macs == 2 * 6 * 200 and fc.kind == "Linear" and fc.format == "dense"
    assert all(r.effective_macs == r.macs and r.nnz == r.params for r in rep.rows)
    assert rep.total.macs == sum(r.macs for r in rep.rows) and rep.total.latency_ms is None

    masks = sk.pruning.prune(model, 0.75, filter_fn=lambda n, m: n != "5")
    rep = sk.report(model, x)
    conv0 = rep.rows[0]
    assert conv0.nnz == int(masks["0"].sum()) + 8 and conv0.sparsity == 1 - int(masks["0"].sum()) / 216
    assert conv0.effective_macs == 2 * 5 * 5 * int(masks["0"].sum())
    text = str(rep)
    assert "eff. MACs" in text and "total" in text and "Conv2d" in text


def test_report_latency():
    model, x = _model(), torch.randn(2, 3, 9, 9)
    rep = sk.report(model, x, latency=True, repeats=3)
    assert all(r.latency_ms is not None and r.latency_ms > 0 for r in rep.rows)
    assert rep.total.latency_ms == sum(r.latency_ms for r in rep.rows)
    assert "latency ms" in str(rep)
