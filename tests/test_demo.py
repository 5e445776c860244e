"""The demo's pieces on small sizes: every pruning of each architecture, sparsified, matches the masked dense
model (the full demo, `python -m sparsekern demo`, takes minutes)."""

import pytest
import torch

from sparsekern import demo


@pytest.mark.parametrize("how, fmt", [("90%", "csr"), ("2:4", "2:4"), ("block32", "bsr"), ("90%", "auto")])
def test_llama_stack_cases(how, fmt):
    model = demo.llama_stack(dim=64, hidden=96, heads=4, layers=1).eval()
    row = demo._case("llama", model, how, torch.randn(1, 5, 64), repeats=1, show_report=False, format=fmt)
    assert row["max_rel_err"] < 1e-5 and row["dense_ms"] > 0 and row["sparse_ms"] > 0
    assert fmt == "auto" or row["formats"] == {fmt: 7}


@pytest.mark.parametrize("how, fmt", [("80%", "csr"), ("2:4", "2:4"), ("channels", "auto")])
def test_resnet_cases(how, fmt):
    model = demo.resnet(depths=(1, 1), widths=(8, 16), classes=10)
    row = demo._case("resnet", model, how, torch.randn(1, 3, 32, 32), repeats=1, show_report=False, format=fmt)
    assert row["max_rel_err"] < 1e-5
    assert how == "channels" or row["formats"][fmt] > 0
