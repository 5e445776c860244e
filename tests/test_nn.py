"""SparseLinear, sparsify_ / densify_, format="auto", explain and the module contract (state_dict, save, copy,
dtype, train, compile, export). SparseConv2d has its own file (test_nn_conv.py)."""

import copy
import io
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

import sparsekern as sk
from sparsekern import tuning
from sparsekern.nn import auto
from tests.conftest import DTYPES, assert_close

FORMATS = ["csr", "bsr", "2:4", "dense"]


def _pruned_linear(fmt, in_f=36, out_f=7, dtype=torch.float32, bias=True):
    """A Linear whose weight is pruned in the shape `fmt` holds (2:4 groups, 4x4 blocks, 70% elements)."""
    lin = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        W = lin.weight
        if fmt == "2:4":
            W.mul_(sk.pruning.nm_mask(W, n=2, m=4))
        elif fmt == "bsr":
            W.mul_(sk.pruning.block_mask(W, 0.5, (4, 4)))
        else:
            W.mul_(sk.pruning.magnitude_mask(W, 0.7))
        W[0] = 0  # an empty row
    return lin.to(dtype)


def _from_dense(lin, fmt):
    return sk.SparseLinear.from_dense(lin, fmt, blocksize=(4, 4) if fmt == "bsr" else None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_sparse_linear_matches_masked_dense(fmt, dtype):
    lin = _pruned_linear(fmt, dtype=dtype)
    sl = _from_dense(lin, fmt)
    assert sl.format == fmt and (sl.in_features, sl.out_features) == (36, 7)
    torch.testing.assert_close(sl.weight, lin.weight, rtol=0, atol=0)
    for shape in [(1, 36), (5, 36), (2, 3, 36), (36,)]:
        x = torch.randn(shape).to(dtype)
        ref = F.linear(x.double(), lin.weight.double(), lin.bias.double())
        assert_close(sl(x), ref, dtype, k=36)
    assert f"format='{fmt}'" in repr(sl) and "sparsity=" in repr(sl)


def test_sparse_linear_from_format_objects_and_bad_input():
    W = torch.randn(6, 10) * (torch.rand(6, 10) > 0.5)
    sl = sk.SparseLinear(sk.CSRMatrix.from_dense(W))
    assert sl.bias is None and torch.equal(sl.weight, W)
    with pytest.raises(ValueError, match="SparseLinear.*2-D"):
        sk.SparseLinear(torch.randn(2, 3, 4))
    with pytest.raises(TypeError, match="SparseLinear"):
        sk.SparseLinear([[1.0]])
    with pytest.raises(ValueError, match="SparseLinear.*bias"):
        sk.SparseLinear(W, torch.zeros(5))
    with pytest.raises(TypeError, match="SparseLinear.from_dense.*nn.Linear"):
        sk.SparseLinear.from_dense(nn.Conv2d(2, 2, 1))
    with pytest.raises(ValueError, match="SparseLinear.from_dense.*2:4"):
        sk.SparseLinear.from_dense(nn.Linear(8, 4), "2:4")
    with pytest.raises(ValueError, match="SparseLinear.from_dense.*format"):
        sk.SparseLinear.from_dense(nn.Linear(8, 4), "coo")
    with pytest.raises(ValueError, match="blocksize"):
        sk.SparseLinear.from_dense(nn.Linear(8, 4), "bsr")


def test_training_updates_stored_values_only():
    lin = _pruned_linear("csr")
    sl = sk.SparseLinear.from_dense(lin, "csr")
    zeros = sl.weight == 0
    assert [n for n, p in sl.named_parameters()] == ["weight_values", "bias"]
    opt = torch.optim.SGD(sl.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        sl(torch.randn(4, 36)).square().sum().backward()
        opt.step()
    assert torch.equal(sl.weight == 0, zeros)  # pruned weights stay pruned
    assert not torch.equal(sl.weight, lin.weight)  # the kept ones learned


@pytest.mark.parametrize("fmt", ["csr", "bsr", "2:4"])
def test_state_dict_between_different_patterns(fmt):
    a, b = _from_dense(_pruned_linear(fmt), fmt), _from_dense(_pruned_linear(fmt), fmt)
    a.weight_values.data[a.weight_values != 0] *= 2  # make sure values, not just the pattern, move
    assert not torch.equal(a.weight, b.weight)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.weight, a.weight, rtol=0, atol=0)
    x = torch.randn(3, 36)
    torch.testing.assert_close(b(x), a(x))
    assert isinstance(b.weight_values, nn.Parameter)


def test_state_dict_across_formats_and_bad_state():
    lin = _pruned_linear("2:4")
    csr, semi = _from_dense(lin, "csr"), _from_dense(lin, "2:4")
    semi.load_state_dict(csr.state_dict())
    assert semi.format == "csr" and torch.equal(semi.weight, lin.weight)
    bad = csr.state_dict()
    bad["weight_col_indices"] = bad["weight_col_indices"] + 100  # out of range for K = 36
    before = copy.deepcopy(semi.state_dict())
    with pytest.raises(ValueError, match="SparseLinear.load_state_dict"):
        semi.load_state_dict(bad)
    for k, v in semi.state_dict().items():  # left as it was
        assert k == "_extra_state" or torch.equal(v, before[k])


def test_save_load_deepcopy_and_dtype_moves():
    model = nn.Sequential(_pruned_linear("csr"), nn.ReLU(), _pruned_linear("csr", 7, 5))
    ref = copy.deepcopy(model)
    sk.sparsify_(model, "csr")
    x = torch.randn(4, 36)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for m in (loaded, copy.deepcopy(model)):
        torch.testing.assert_close(m(x), ref(x))
    for dtype, conv in ((torch.float16, nn.Module.half), (torch.bfloat16, nn.Module.bfloat16)):
        m = conv(copy.deepcopy(model))
        # indices keep their integer dtype (compact int16 columns: K <= 65536)
        assert m[0].weight_values.dtype == dtype and m[0].weight_col_indices.dtype == torch.int16
        assert_close(m(x.to(dtype)), ref.double()(x.double()), dtype, k=36)
    m = copy.deepcopy(model).to(torch.device("cpu"))
    assert isinstance(m[0], sk.SparseLinear)


def test_compile_and_export():
    model = nn.Sequential(_pruned_linear("csr"), nn.ReLU(), _from_dense(_pruned_linear("2:4", 7, 8), "2:4"))
    sk.sparsify_(model, "csr", filter_fn=lambda n, m: n == "0")
    x = torch.randn(3, 36)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x))
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))


def test_transformer_encoder_sparsified(monkeypatch):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    sk.pruning.prune(enc, 0.8)
    sk.pruning.remove(enc)
    ref = copy.deepcopy(enc).eval()
    sk.sparsify_(enc, "csr")
    swapped = [n for n, m in enc.named_modules() if isinstance(m, sk.SparseLinear)]
    assert sorted(swapped) == sorted(f"layers.{i}.linear{j}" for i in range(2) for j in (1, 2))
    enc.eval()
    x = torch.randn(2, 5, 32)
    fused, fwd = [], torch._transformer_encoder_layer_fwd
    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", lambda *a: fused.append(1) or fwd(*a))
    with torch.no_grad():  # eval + no_grad: where the fused dense fast path would bypass the sparse kernels
        expected = ref(x)
        assert len(fused) == 2  # the dense model takes it
        torch.testing.assert_close(enc(x), expected, rtol=1e-5, atol=1e-5)
    assert len(fused) == 2  # the sparsified one does not
    # MultiheadAttention reads out_proj.weight: a SparseLinear there still computes the right thing
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    ref_out = mha(x, x, x)[0]
    mha.out_proj = sk.SparseLinear.from_dense(mha.out_proj, "csr")
    torch.testing.assert_close(mha(x, x, x)[0], ref_out, rtol=1e-5, atol=1e-5)


def test_torch_prune_reparametrisation_is_honoured(caplog):
    model = nn.Sequential(nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 4))
    torch_prune.l1_unstructured(model[0], "weight", amount=0.6)
    x = torch.randn(5, 36)
    ref, kept = model(x), int(model[0].weight_mask.sum())
    with caplog.at_level(logging.INFO, logger="sparsekern"):
        sk.sparsify_(model, "csr")
    assert isinstance(model[0], sk.SparseLinear) and not model[0]._forward_pre_hooks
    assert model[0].weight_values.numel() == kept
    torch.testing.assert_close(model(x), ref)
    assert "0 -> csr" in caplog.text and "2 of 2" in caplog.text


def test_tied_weights_stay_dense(caplog):
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.proj = nn.Linear(8, 8)
            self.lm_head = nn.Linear(8, 10, bias=False)
            self.lm_head.weight = self.embed.weight

        def forward(self, ids):
            return self.lm_head(self.proj(self.embed(ids)))

    model = LM()
    with caplog.at_level(logging.INFO, logger="sparsekern"):
        sk.sparsify_(model, "csr")
    assert isinstance(model.proj, sk.SparseLinear) and type(model.lm_head) is nn.Linear
    assert model.lm_head.weight is model.embed.weight and "shared with embed.weight" in caplog.text


def test_sparsify_bad_input_names_sparsify():
    with pytest.raises(ValueError, match="sparsify_.*format"):
        sk.sparsify_(nn.Sequential(nn.Linear(4, 4)), "bitmap")
    with pytest.raises(ValueError, match="sparsify_.*SparseLinear.from_dense"):
        sk.sparsify_(nn.Linear(4, 4), "csr")
    with pytest.raises(TypeError, match="sparsify_.*nn.Module"):
        sk.sparsify_(torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"sparsify_ \(0\).*2:4"):
        sk.sparsify_(nn.Sequential(nn.Linear(8, 4)), "2:4")


def _write_table(tmp_path, monkeypatch, csr_speedups):
    """A table for this machine's key in a temporary cache dir: csr at densities (0.1, 0.5) with the given
    speedups at every N, every other format 0.5x."""
    monkeypatch.setenv("SPARSEKERN_CACHE_DIR", str(tmp_path))
    slow = {str(n): [0.5, 0.5] for n in (1, 64)}
    tab = {"tokens": [1, 64], "densities": [0.1, 0.5],
           "speedup": {**{f: slow for f in tuning.FORMATS}, "csr": {str(n): csr_speedups for n in (1, 64)},
                       "2:4": {str(n): [0.5] for n in (1, 64)}}}
    tuning.cache_path().parent.mkdir(parents=True, exist_ok=True)
    tuning.cache_path().write_text(json.dumps(tab))


def test_auto_follows_the_table(tmp_path, monkeypatch):
    _write_table(tmp_path, monkeypatch, [3.0, 0.6])
    sparse = _pruned_linear("csr")  # 70% pruned + an empty row: density ~0.26 -> interpolated 2.07x
    with torch.no_grad():
        sparse.weight.mul_(sk.pruning.magnitude_mask(sparse.weight, 0.9))
    d = auto.choose(sparse.weight)
    assert d.format == "csr" and d.predicted["csr"] > auto.MARGIN and "tuned on this machine" in d.reason
    dense = nn.Linear(7, 5)
    assert auto.choose(dense.weight).format == "dense"
    model = nn.Sequential(sparse, nn.ReLU(), dense)
    ref = copy.deepcopy(model)
    sk.sparsify_(model)
    assert isinstance(model[0], sk.SparseLinear) and model[2] is dense  # auto on a dense weight: untouched
    x = torch.randn(3, 36)
    torch.testing.assert_close(model(x), ref(x))
    assert "csr_linear" in sk.explain(model[0], 16) and "C++ CPU kernel" in sk.explain(model[0], 16)
    assert "would pick dense" in sk.explain(dense)


def test_auto_measured_never_slower_than_dense(tmp_path, monkeypatch):
    # The table claims every format is fast; with example inputs auto times them and keeps only real wins.
    _write_table(tmp_path, monkeypatch, [50.0, 50.0])
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), _pruned_linear("csr", 64, 64))
    with torch.no_grad():
        model[2].weight.mul_(sk.pruning.magnitude_mask(model[2].weight, 0.95))
    ref = copy.deepcopy(model)
    x = torch.randn(8, 64)
    sk.sparsify_(model, example_inputs=x)
    for m in model:
        if isinstance(m, sk.SparseLinear):
            assert m.decision.measured and "measured" in m.decision.reason
            assert max(m.decision.measured.values()) >= 1.0
    torch.testing.assert_close(model(x), ref(x))


def test_auto_without_a_table_keeps_dense(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEKERN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "shipped_path", lambda isa: tmp_path / "none.json")
    d = auto.choose(_pruned_linear("csr").weight)
    assert d.format == "dense" and "sparsekern.tune()" in d.reason


def test_tune_measures_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEKERN_CACHE_DIR", str(tmp_path))
    tab = sk.tune(shape=(64, 64), tokens=(1, 4), densities=(0.1, 0.5), repeats=1, copies=1, verbose=False)
    assert set(tab["speedup"]) == set(tuning.FORMATS)
    assert all(len(tab["speedup"]["csr"][str(n)]) == 2 and min(tab["speedup"]["csr"][str(n)]) > 0 for n in (1, 4))
    loaded, source = tuning.table()
    assert loaded["meta"] == tab["meta"] and "tuned on this machine" in source
    assert tab["meta"]["isa"] == sk.backends()["cpu_isa"]


def test_speedup_interpolation():
    tab = {"densities": [0.1, 0.5], "speedup": {"csr": {"1": [4.0, 1.0], "16": [2.0, 0.5]}, "2:4": {"1": [1.5]}}}
    assert tuning.speedup(tab, "csr", 0.3, 1) == pytest.approx(2.5)
    assert tuning.speedup(tab, "csr", 0.05, 1) == 4.0  # held below the sparsest point
    assert tuning.speedup(tab, "csr", 1.0, 1) == pytest.approx(0.5)  # scaled with density above the densest
    assert tuning.speedup(tab, "csr", 0.1, 4) == pytest.approx(3.0)  # log-N interpolation
    assert tuning.speedup(tab, "2:4", 0.5, 1000) == 1.5


def test_report_sparse_vs_dense_latency():
    model = nn.Sequential(_pruned_linear("csr"), nn.ReLU(), nn.Linear(7, 3))
    sk.sparsify_(model, "csr", filter_fn=lambda n, m: n == "0")
    rep = sk.report(model, torch.randn(4, 36), latency=True, repeats=2)
    sparse_row, dense_row = rep.rows
    # 4 tokens at 30% density: the bitmap decode kernel on AVX-512 (sparsekern.dispatch), the CSR one elsewhere.
    assert sparse_row.kernel == model[0].kernel(4) and sparse_row.kernel in ("csr_linear", "csr_bitmap_linear")
    assert sparse_row.format == "csr" and sparse_row.dense_ms > 0
    assert dense_row.format == "dense" and dense_row.dense_ms is None
    assert rep.model_ms > 0 and rep.dense_model_ms > 0 and rep.speedup > 0
    text = str(rep)
    assert "speedup" in text and "end to end" in text


def test_densify_inverts_sparsify():
    model = nn.Sequential(_pruned_linear("csr"), nn.ReLU())
    ref = copy.deepcopy(model)
    sk.sparsify_(model, "csr")
    sk.densify_(model)
    assert type(model[0]) is nn.Linear
    torch.testing.assert_close(model[0].weight, ref[0].weight)
