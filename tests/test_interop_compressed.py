"""load_compressed / save_compressed against checkpoints that compressed-tensors 0.12.2 wrote
(tests/fixtures/make_compressed_tensors.py), and bad checkpoints."""

import json
import os
import shutil

import pytest
import safetensors.torch as safetensors_torch  # a test extra (run.sh installs it): never skipped
import torch
from torch import nn

import sparsekern as sk
from sparsekern.interop import compressed_tensors as ct
from tests.fixtures.make_compressed_tensors import TinyNet

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
KINDS = {"bitmask": ("sparse-bitmask", "csr"), "24": ("sparse-24-bitmask", "2:4")}


def ckpt_dir(kind):
    return os.path.join(FIXTURES, f"ct_{kind}")


def expected(kind):
    return safetensors_torch.load_file(os.path.join(FIXTURES, f"ct_{kind}_expected.safetensors"))


def read_dir(path):
    out = {}
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            out |= safetensors_torch.load_file(os.path.join(path, f))
    return out


def dense_net(kind):
    net = TinyNet()
    net.load_state_dict(expected(kind))
    return net


@pytest.mark.parametrize("kind", KINDS)
def test_load_what_compressed_tensors_wrote(kind, monkeypatch):
    fmt, ours = KINDS[kind]
    monkeypatch.setattr(ct, "_ROW_BLOCK_ELEMENTS", 64)  # several row blocks per layer: the bounded-memory path
    net = sk.load_compressed(TinyNet(), ckpt_dir(kind))
    assert isinstance(net.fc1, sk.SparseLinear) and net.fc1.format == ours and net.fc2.format == ours
    assert type(net.head) is nn.Linear  # ignored by the checkpoint's config
    exp = expected(kind)
    for name in ("fc1", "fc2"):
        assert torch.equal(getattr(net, name).dense_weight_2d(), exp[f"{name}.weight"])
    assert torch.equal(net.fc1.bias, exp["fc1.bias"]) and torch.equal(net.norm.weight, exp["norm.weight"])
    x = torch.randn(5, 36)
    torch.testing.assert_close(net(x), dense_net(kind)(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_save_writes_what_compressed_tensors_writes(kind, tmp_path):
    """Byte-equal tensors and the same sparsity config as compressed-tensors' own writer: its decompressor (and
    vLLM) read sparsekern's checkpoints as theirs (the fixture script also ran that decompressor on ours)."""
    fmt, ours = KINDS[kind]
    net = sk.sparsify_(dense_net(kind), format=ours, filter_fn=lambda n, m: n != "head")
    sk.save_compressed(net, str(tmp_path))
    mine, theirs = read_dir(str(tmp_path)), read_dir(ckpt_dir(kind))
    assert sorted(mine) == sorted(theirs)
    for k in theirs:
        assert mine[k].dtype == theirs[k].dtype and torch.equal(mine[k], theirs[k]), k
    with open(tmp_path / "config.json") as f, open(os.path.join(ckpt_dir(kind), "config.json")) as g:
        a, b = json.load(f)["quantization_config"], json.load(g)["quantization_config"]
    for key in ("format", "targets", "ignore", "sparsity_structure"):
        assert a["sparsity_config"][key] == b["sparsity_config"][key], key
    assert a["quant_method"] == b["quant_method"] == "compressed-tensors"
    back = sk.load_compressed(TinyNet(), str(tmp_path))
    for name in ("fc1", "fc2"):
        assert torch.equal(getattr(back, name).dense_weight_2d(), getattr(net, name).dense_weight_2d())


def test_mixed_formats_sharded_and_regex_targets(tmp_path):
    net = dense_net("24")
    net.fc1 = sk.SparseLinear.from_dense(net.fc1, "2:4")
    net.fc2 = sk.SparseLinear.from_dense(net.fc2, "bsr", blocksize=(4, 4))
    sk.save_compressed(net, str(tmp_path), max_shard_size=4000)
    assert os.path.isfile(tmp_path / "model.safetensors.index.json")
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]) > 1
    cfg_file = tmp_path / "config.json"
    cfg = json.loads(cfg_file.read_text())
    assert cfg["quantization_config"]["sparsity_config"]["format"] == "sparse-bitmask"  # not every layer is 2:4
    cfg["quantization_config"]["sparsity_config"] |= {"targets": ["re:fc\\d"], "ignore": []}
    cfg_file.write_text(json.dumps(cfg))
    back = sk.load_compressed(TinyNet(), str(tmp_path))
    assert back.fc1.format == back.fc2.format == "csr"
    x = torch.randn(3, 36)
    torch.testing.assert_close(back(x), net(x), rtol=1e-5, atol=1e-5)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _bad_copy(tmp_path, kind="bitmask"):
    dst = tmp_path / "ckpt"
    shutil.copytree(ckpt_dir(kind), dst)
    return dst


def _rewrite(path, drop=None, change=None):
    for f in os.listdir(path):
        if f.endswith(".safetensors"):
            t = safetensors_torch.load_file(os.path.join(path, f))
            if drop in t or (change and change[0] in t):
                t.pop(drop, None)
                if change:
                    t[change[0]] = change[1]
                safetensors_torch.save_file(t, os.path.join(path, f))


@pytest.mark.parametrize("case", ["truncated", "missing", "wrong_shape", "bad_bitmask", "quantized", "unknown",
                                  "model_shape"])
def test_bad_checkpoint_raises_and_leaves_model(case, tmp_path):
    path = _bad_copy(tmp_path, "24" if case == "missing" else "bitmask")
    model = TinyNet()
    if case == "truncated":
        shard = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))[0]
        data = (path / shard).read_bytes()
        (path / shard).write_bytes(data[:-20])
        match = f"{shard}: tensor '.*' is truncated"
    elif case == "missing":
        _rewrite(path, drop="fc2.bitmask")
        match = "tensor 'fc2.bitmask' .* is missing"
    elif case == "wrong_shape":
        _rewrite(path, change=("fc1.bitmask", torch.zeros(44, 4, dtype=torch.uint8)))
        match = r"model-0000\d-of-00002.safetensors: tensor 'fc1.bitmask' has shape \(44, 4\)"
    elif case == "bad_bitmask":  # right shapes, but the bits disagree with the row offsets
        exp = dense_net("bitmask").fc1.weight != 0
        bits = torch.from_numpy(__import__("numpy").packbits(exp.numpy(), axis=-1, bitorder="little"))
        bits[0, 0] ^= 1
        _rewrite(path, change=("fc1.bitmask", bits))
        match = "layer 'fc1'.*row 0 has"
    elif case == "quantized":
        cfg = json.loads((path / "config.json").read_text())
        cfg["quantization_config"] |= {"format": "pack-quantized", "config_groups": {"group_0": {}}}
        (path / "config.json").write_text(json.dumps(cfg))
        match = "config.json: the checkpoint is quantized"
    elif case == "unknown":
        cfg = json.loads((path / "config.json").read_text())
        cfg["quantization_config"]["sparsity_config"]["format"] = "marlin-24"
        (path / "config.json").write_text(json.dumps(cfg))
        match = "config.json: sparsity format 'marlin-24' is not one of"
    else:
        model.fc1 = nn.Linear(36, 40)
        match = r"tensor 'fc1.bitmask' has shape \(44, 5\); the model's fc1 is \(40, 36\)"
    before, types = _state(model), [type(m) for m in model.modules()]
    with pytest.raises((ValueError, KeyError, TypeError), match=match):
        sk.load_compressed(model, str(path))
    after = model.state_dict()
    assert [type(m) for m in model.modules()] == types
    assert all(torch.equal(before[k], after[k]) for k in before)
