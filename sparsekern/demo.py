"""python -m sparsekern demo: the whole job on real architectures, in about two minutes on a 2-core CPU.

Builds a Llama-style decoder stack and a ResNet-style CNN from torch modules (and a Hugging Face Llama when
transformers is installed), prunes them four ways (2:4, 90% unstructured, 32x32 blocks, channels + shrink_),
sparsify_s them with format="auto" timed on the example input, checks every output against the masked dense
model, and prints the per-layer report and the end-to-end speedups against the dense model in the same run.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import time

import torch
import torch.nn.functional as F
from torch import nn

from . import explain, report, sparsify_, tuning
from .pruning import prune, remove, shrink_
from .report import _time


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class DecoderLayer(nn.Module):
    """Llama's block: pre-norm causal attention (q/k/v/o projections) and a SwiGLU MLP (gate/up/down)."""

    def __init__(self, dim: int, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn_norm, self.mlp_norm = RMSNorm(dim), RMSNorm(dim)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.gate_proj, self.up_proj = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        B, T, D = x.shape
        h = self.attn_norm(x)
        q, k, v = (p(h).view(B, T, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, D)
        x = x + self.o_proj(a)
        h = self.mlp_norm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


def llama_stack(dim=1024, hidden=2816, heads=8, layers=2) -> nn.Module:
    return nn.Sequential(*(DecoderLayer(dim, hidden, heads) for _ in range(layers)))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int):
        super().__init__()
        cout = 4 * mid
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return F.relu(self.body(x) + self.skip(x))


def resnet(depths=(1, 1, 1, 1), widths=(64, 128, 256, 512), classes=1000) -> nn.Module:
    """ResNet-50's architecture with `depths` bottlenecks per stage ((3, 4, 6, 3) is ResNet-50)."""
    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for i, (d, w) in enumerate(zip(depths, widths)):
        for j in range(d):
            layers.append(Bottleneck(cin, w, 2 if j == 0 and i > 0 else 1))
            cin = 4 * w
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))
    with torch.no_grad():  # trained-looking BatchNorm statistics, so channel ranking by BN scale means something
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.0)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _prune(model: nn.Module, how: str) -> nn.Module:
    """A pruned copy of `model` (masks baked in, so the copy is the masked dense reference)."""
    model = copy.deepcopy(model)
    convs_and_linears = lambda n, m: isinstance(m, (nn.Linear, nn.Conv2d)) and m.weight.shape[1] > 3  # noqa: E731
    if how == "2:4":
        prune(model, 0.5, granularity="n:m", filter_fn=convs_and_linears)
    elif how.startswith("block"):
        prune(model, 0.9, granularity="block", blocksize=(32, 32), filter_fn=convs_and_linears)
    elif how == "channels":
        return shrink_(model, 0.5, criterion="bn_scale")
    else:
        prune(model, float(how.rstrip("%")) / 100, filter_fn=convs_and_linears)
    return remove(model)


def _case(name: str, dense: nn.Module, how: str, x: torch.Tensor, repeats: int, show_report: bool,
          format: str = "auto") -> dict:
    ref = _prune(dense, how)
    t0 = time.perf_counter()
    blocksize = (32, 32) if format == "bsr" else None
    sparse = (ref if how == "channels" else
              sparsify_(copy.deepcopy(ref), format, example_inputs=x if format == "auto" else None, blocksize=blocksize,
                        filter_fn=lambda n, m: m.weight.shape[1] > 3))
    t_sparsify = time.perf_counter() - t0
    with torch.no_grad():
        y, y_ref = sparse(x), ref(x)
    err = float((y - y_ref).abs().max() / y_ref.abs().max().clamp_min(1e-30))
    t_dense = _time(dense, [(x,)], repeats)
    t_sparse = _time(sparse, [(x,)], repeats)
    formats: dict[str, int] = {}
    for m in sparse.modules():
        if hasattr(m, "format") and hasattr(m, "weight_values"):
            formats[m.format] = formats.get(m.format, 0) + 1
    if show_report:
        print(report(sparse, x, latency=True, repeats=max(repeats // 2, 2)))
        print()
    row = dict(model=name, pruning=how, input=tuple(x.shape), dense_ms=t_dense, sparse_ms=t_sparse,
               speedup=t_dense / t_sparse, max_rel_err=err, formats=formats, sparsify_s=t_sparsify)
    print(f"  {name:18s} {how:9s} {str(tuple(x.shape)):18s} dense {t_dense:8.2f} ms  sparse {t_sparse:8.2f} ms  "
          f"{row['speedup']:5.2f}x  err {err:.1e}  {formats or 'shrunk dense'}  (sparsify_ {t_sparsify:.1f} s)",
          flush=True)
    return row


def _hf_llama(repeats: int) -> None:
    """A Hugging Face LlamaForCausalLM from a config (no download), 2:4-pruned and sparsified: same logits, same
    greedy tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=512, intermediate_size=1408, num_hidden_layers=2, num_attention_heads=8,
                      num_key_value_heads=8, vocab_size=1000, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    prune(model, 0.5, granularity="n:m", filter_fn=lambda n, m: isinstance(m, nn.Linear) and "lm_head" not in n)
    remove(model)
    ids = torch.randint(0, 1000, (1, 16))
    ref = copy.deepcopy(model)
    sparsify_(model, example_inputs={"input_ids": ids})
    with torch.no_grad():
        same_logits = torch.allclose(model(ids).logits, ref(ids).logits, rtol=1e-4, atol=1e-4)
        gen = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
        same_tokens = torch.equal(model.generate(ids, **gen), ref.generate(ids, **gen))
    n = sum(hasattr(m, "weight_values") for m in model.modules())
    print(f"  HF LlamaForCausalLM (2 layers, 2:4): {n} layers sparse, logits equal: {same_logits}, greedy tokens "
          f"equal: {same_tokens}, lm_head tied to the embeddings stays dense: {type(model.lm_head) is nn.Linear}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sparsekern demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    ap.add_argument("--resnet-depths", default="1,1,1,1", help="bottlenecks per stage (3,4,6,3 = ResNet-50)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tab, source = tuning.table()
    print(f"sparsekern demo: {tuning.machine_key()['cpu']}, {tuning.cpu_isa()}, {torch.get_num_threads()} threads, "
          f"fp32; auto's table: {source}\n")
    rows = []
    with torch.no_grad():
        llama = llama_stack().eval()
        print("Llama-style decoder (2 layers, hidden 1024, MLP 2816), outputs vs the masked dense model:")
        for i, how in enumerate(("90%", "2:4", "block32")):
            for tokens in (1, 64):
                x = torch.randn(1, tokens, 1024)
                rows.append(_case("llama-stack", llama, how, x, args.repeats, show_report=(i == 0 and tokens == 64)))
        depths = tuple(int(d) for d in args.resnet_depths.split(","))
        cnn = resnet(depths)
        print(f"\nResNet-style CNN (bottleneck depths {depths}), batch 1, 224x224:")
        x = torch.randn(1, 3, 224, 224)
        for how in ("80%", "2:4", "channels"):
            rows.append(_case("resnet", cnn, how, x, args.repeats, show_report=False))
    if importlib.util.find_spec("transformers") is not None:
        print("\nHugging Face transformers:")
        _hf_llama(args.repeats)
    first = next(m for m in llama.modules() if isinstance(m, nn.Linear))
    print(f"\nexplain (an unpruned layer): {explain(first, 64)}")
    return 0 if all(r["max_rel_err"] < 1e-4 for r in rows) else 1
