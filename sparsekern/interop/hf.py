"""Hugging Face transformers helpers: build a model from a compressed-tensors checkpoint's config.json without
allocating its dense weights, then load the checkpoint into it (sparsekern.load_compressed)."""

from __future__ import annotations

import os

import torch
from torch import nn

from .._checks import fail
from .compressed_tensors import load_compressed

_WHERE = "sparsekern.interop.hf.from_compressed"


def materialize_buffers(model: nn.Module) -> nn.Module:
    """Recreates the non-persistent buffers a model built on the meta device is left without (no checkpoint holds
    them: rotary-embedding frequencies): every module holding one is rebuilt as type(module)(model.config), the
    way transformers modules that own such buffers are constructed. Returns `model`."""
    config = getattr(model, "config", None)
    for name, mod in list(model.named_modules()):
        if not any(b is not None and b.is_meta for b in mod._buffers.values()):
            continue
        if any(p.is_meta for p in mod.parameters(recurse=False)):
            fail(_WHERE, ValueError, f"{name} still has parameters on the meta device after loading")
        try:
            new = type(mod)(config)
        except TypeError as e:
            fail(_WHERE, TypeError, f"cannot rebuild {name} ({type(mod).__name__}) to recreate its buffers: {e}")
        device = next((t.device for t in model.parameters() if not t.is_meta), torch.device("cpu"))
        new = new.to(device)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    return model


def from_compressed(path: str, model_cls=None, *, strict: bool = True) -> nn.Module:
    """The transformers model of the compressed-tensors checkpoint at `path` (its config.json; `model_cls`
    defaults to AutoModelForCausalLM), built on the meta device and loaded with load_compressed, so the only
    tensors allocated are the checkpoint's: target Linear layers arrive as SparseLinear (CSR or 2:4). In eval
    mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not os.path.isdir(path):
        fail(_WHERE, FileNotFoundError, f"{path} is not a directory")
    config = AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the model is built plain; load_compressed reads the sparsity config
    cls = model_cls or AutoModelForCausalLM
    with torch.device("meta"):
        model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    load_compressed(model, path, strict=strict)
    return materialize_buffers(model).eval()
