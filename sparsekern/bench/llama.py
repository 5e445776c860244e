"""A Llama-shaped decoder end to end: greedy generation tokens/s, dense vs sparsekern at 2:4 and at 70% unstructured
(magnitude-pruned decoder Linears, lm_head dense as llm-compressor leaves it), and the peak RSS of load_compressed
vs loading the dense checkpoint. Needs transformers and safetensors (`pip install sparsekern[hf]`).

    python -m sparsekern.bench.llama [--layers 4] [--repeats 3]      or      sparsekern.bench.llama.run(...)

Generation runs dense and each sparse model alternately in one process, `repeats` times, and reports medians (the
machine may be shared). Each load is measured in a fresh subprocess: the model is built on the meta device, so the
only tensors ever allocated are the checkpoint's, and the figure is the peak RSS during the load minus the RSS just
before it (ru_maxrss is a high-water mark: the baseline is taken before any large allocation).

The memory floor: batch-1 decode streams every weight once per token, so dense weight bytes / sparse weight bytes
(`weight_bytes_per_token`) bounds the speedup. With the 250 MiB lm_head dense it is what holds a 4-layer model's
70% unstructured speedup near 1.4x whatever the kernel (32-bit column indices: 8 bytes per kept weight).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from . import _device_name

SHAPE = dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4,
             vocab_size=32000)  # TinyLlama-1.1B's layer shapes


def llama_config(layers: int = 4, **overrides):
    from transformers import LlamaConfig

    return LlamaConfig(**(SHAPE | dict(num_hidden_layers=layers, max_position_embeddings=512,
                                       tie_word_embeddings=False) | overrides))


def _decoder_linear(name, module):
    return "lm_head" not in name


def sparse_variant(dense, kind: str):
    """A copy of `dense` pruned by magnitude ("2:4" or "70%") and sparsified to the matching format."""
    import sparsekern as sk

    model = copy.deepcopy(dense)
    if kind == "2:4":
        sk.pruning.prune(model, None, granularity="2:4", filter_fn=_decoder_linear)
    else:
        sk.pruning.prune(model, float(kind.rstrip("%")) / 100, filter_fn=_decoder_linear)
    sk.pruning.remove(model)
    return sk.sparsify_(model, format="2:4" if kind == "2:4" else "csr", filter_fn=_decoder_linear)


# What a decode step's kernel reads of each sparse weight (the CPU CSR kernel ignores the row order, and the bitmap
# is read only where dispatch picks the bitmap kernel, never on AVX2).
_KERNEL_READS = {"csr": ("values", "crow_indices", "col_indices"), "bsr": ("values", "crow_indices", "col_indices"),
                 "2:4": ("values", "metadata"), "dense": ("values",)}


def weight_bytes_per_token(model) -> int:
    """Weight bytes one greedy decode step must read: every Linear's weight as its kernel reads it, one embedding
    row, the norms. Batch-1 decode is bound by this stream, so dense bytes / sparse bytes is the ceiling on the
    tokens/s speedup (attention over a short context and the Python around it add time to both)."""
    from ..nn._weight import SparseWeight

    total = 0
    for mod in model.modules():
        if isinstance(mod, SparseWeight):
            total += sum(getattr(mod, f"weight_{n}").nbytes for n in _KERNEL_READS[mod.format])
            total += mod.bias.nbytes if mod.bias is not None else 0
        elif isinstance(mod, torch.nn.Embedding):
            total += mod.weight[0].nbytes
        else:
            total += sum(p.nbytes for p in mod.parameters(recurse=False))
    return total


def tokens_per_second(model, prompt: torch.Tensor, new_tokens: int) -> float:
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        t0 = time.perf_counter()
        model.generate(prompt, **kw)
        return new_tokens / (time.perf_counter() - t0)


_LOAD_CHILD = r"""
import json, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
path, how = sys.argv[1], sys.argv[2]
cfg = LlamaConfig.from_pretrained(path)
cfg.quantization_config = None
with torch.device("meta"):
    model = LlamaForCausalLM(cfg)
import sparsekern as sk
from safetensors.torch import load_file
def status(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM (the peak RSS) to the current RSS
if how == "dense":
    model.load_state_dict(load_file(path + "/model.safetensors"), assign=True, strict=False)
else:
    sk.load_compressed(model, path)
# safetensors maps the file: a tensor's pages become resident when first read. Read every one, as the first
# forward would, so both figures are the resident size of a usable model.
for t in list(model.parameters()) + list(model.buffers()):
    if not t.is_meta:
        t.sum()
print(json.dumps({"before": before, "peak": status("VmHWM"), "after": status("VmRSS")}))
"""


def _load_rss(path: str, how: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _LOAD_CHILD, path, how], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(layers: int = 4, repeats: int = 3, prompt_len: int = 8, new_tokens: int = 16,
        kinds: tuple[str, ...] = ("2:4", "70%"), vocab_size: int = 32000, measure_load: bool = True,
        threads: int | None = None) -> dict:
    """{"device", "config", "tokens_per_s": {kind: median}, "speedup": {kind: x}, "load_rss_mb": {...}}.
    `threads`: torch.set_num_threads for the generation (default: as configured)."""
    if threads:
        torch.set_num_threads(threads)
    from transformers import LlamaForCausalLM

    import sparsekern as sk

    torch.manual_seed(0)
    cfg = llama_config(layers, vocab_size=vocab_size)
    dense = LlamaForCausalLM(cfg).eval()
    models = {"dense": dense} | {k: sparse_variant(dense, k).eval() for k in kinds}
    prompt = torch.randint(0, vocab_size, (1, prompt_len))
    for m in models.values():  # warm-up: thread pool, first-touch pages, kernel selection
        tokens_per_second(m, prompt, 4)
    samples = {k: [] for k in models}
    for _ in range(repeats):
        for k, m in models.items():
            samples[k].append(tokens_per_second(m, prompt, new_tokens))
    tps = {k: statistics.median(v) for k, v in samples.items()}
    result = {"device": _device_name(torch.device("cpu")), "torch": torch.__version__,
              "config": {"layers": layers, "vocab_size": vocab_size, "prompt": prompt_len, "new_tokens": new_tokens,
                         "repeats": repeats, "dtype": "float32", "threads": torch.get_num_threads()} | SHAPE,
              "tokens_per_s": tps, "tokens_per_s_samples": samples,
              "speedup": {k: tps[k] / tps["dense"] for k in kinds},
              "weight_mb_per_token": {k: weight_bytes_per_token(m) / 2**20 for k, m in models.items()}}
    result["memory_floor_speedup"] = {k: result["weight_mb_per_token"]["dense"] / result["weight_mb_per_token"][k]
                                      for k in kinds}
    if measure_load:
        rss = {}
        with tempfile.TemporaryDirectory() as tmp:
            dense_dir = os.path.join(tmp, "dense")
            dense.save_pretrained(dense_dir)
            rss["dense"] = _load_rss(dense_dir, "dense")
            for k in kinds:
                d = os.path.join(tmp, k.replace(":", "of").rstrip("%"))
                sk.save_compressed(models[k], d)
                rss[k] = _load_rss(d, "compressed")
                rss[k]["checkpoint_mb"] = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)) / 2**20
            rss["dense"]["checkpoint_mb"] = sum(
                os.path.getsize(os.path.join(dense_dir, f)) for f in os.listdir(dense_dir)) / 2**20
        result["load_rss_mb"] = {k: {"peak_minus_before": (v["peak"] - v["before"]) / 2**20,
                                     "after_minus_before": (v["after"] - v["before"]) / 2**20,
                                     "checkpoint_mb": v["checkpoint_mb"]} for k, v in rss.items()}
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--no-load", action="store_true", help="skip the load_compressed peak-RSS measurement")
    a = p.parse_args(argv)
    r = run(a.layers, a.repeats, new_tokens=a.new_tokens, vocab_size=a.vocab_size, measure_load=not a.no_load,
            threads=a.threads)
    print(f"{r['device']}, torch {r['torch']}, Llama hidden 2048 / intermediate 5632 / {a.layers} layers / vocab "
          f"{a.vocab_size}, fp32, batch 1, greedy, {a.new_tokens} new tokens, median of {a.repeats}")
    for k, v in r["tokens_per_s"].items():
        extra = (f"  {r['speedup'][k]:.2f}x dense (memory floor {r['memory_floor_speedup'][k]:.2f}x)"
                 if k in r["speedup"] else "")
        print(f"  {k:>6}: {v:7.2f} tokens/s, {r['weight_mb_per_token'][k]:.0f} MiB of weights per token{extra}")
    for k, v in r.get("load_rss_mb", {}).items():
        print(f"  load {k:>6}: peak RSS +{v['peak_minus_before']:.0f} MiB, after +{v['after_minus_before']:.0f} MiB "
              f"(checkpoint {v['checkpoint_mb']:.0f} MiB)")
    print(json.dumps(r, indent=1, default=str))


if __name__ == "__main__":
    main()
