"""A sparse Llama end to end, the way published sparse LLMs travel: prune with SparseGPT on calibration batches,
swap the Linear layers for sparse kernels, save a compressed-tensors checkpoint (what llm-compressor writes and
vLLM serves), load it into a fresh model and generate.

The model is built from a config (no download): a small Llama whose outputs are peaked enough (initializer_range
2.4 / sqrt(hidden): 0.3 at hidden 64, where tests/test_hf.py measured it) that text sampled from it has structure; calibration and held-out text are sampled from the dense model.
For each of 2:4 and 60% unstructured it prints perplexity on held-out text (magnitude vs SparseGPT pruning), the
checkpoint size, whether the reloaded model generates the same tokens, and greedy tokens/s dense vs sparse.
Needs `pip install sparsekern[hf]`.

    python examples/hf_sparse_llama.py [--hidden 256 --intermediate 704 --layers 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import sparsekern as sk


def decoder_linear(name, module):
    return "lm_head" not in name


def perplexity(model, seqs: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.exp(model(seqs, labels=seqs).loss))


def tokens_per_s(model, prompt, new_tokens: int, repeats: int = 3) -> float:
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    times = []
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=2, do_sample=False, pad_token_id=0)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.generate(prompt, **kw)
            times.append(time.perf_counter() - t0)
    return new_tokens / statistics.median(times)


def main(hidden: int = 256, intermediate: int = 704, layers: int = 2, vocab: int = 512, calib_batches: int = 8,
         seq_len: int = 64, new_tokens: int = 32, verbose: bool = True) -> list[dict]:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                         num_key_value_heads=max(1, hidden // 256), max_position_embeddings=256,
                         initializer_range=2.4 / hidden**0.5, tie_word_embeddings=False)
    dense = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        text = dense.generate(torch.randint(0, vocab, (4 * calib_batches + 16, 1)), max_new_tokens=seq_len - 1,
                              do_sample=True, top_k=0, pad_token_id=0)
    calib, held_out = list(text[: 4 * calib_batches].split(4)), text[4 * calib_batches:]
    prompt = held_out[:1, :8]
    rows = []
    dense_tps = tokens_per_s(dense, prompt, new_tokens)
    for name, sparsity, granularity, fmt in (("2:4", None, "2:4", "2:4"), ("60%", 0.6, "element", "csr")):
        ppl = {}
        for criterion in ("magnitude", "sparsegpt"):
            model = copy.deepcopy(dense)
            t0 = time.perf_counter()
            sk.pruning.prune(model, sparsity, granularity=granularity, criterion=criterion,
                             filter_fn=decoder_linear, data=calib)
            prune_s = time.perf_counter() - t0
            sk.pruning.remove(model)
            ppl[criterion] = perplexity(model, held_out)
        sk.sparsify_(model, format=fmt, filter_fn=decoder_linear)  # the SparseGPT model
        with tempfile.TemporaryDirectory() as path:
            sk.save_compressed(model, path)
            size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
            fresh = sk.interop.hf.from_compressed(path)  # built on the meta device: no dense weights allocated
        kw = dict(max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        with torch.no_grad():
            same = torch.equal(fresh.generate(prompt, **kw), model.generate(prompt, **kw))
        rows.append({"pattern": name, "ppl_dense": perplexity(dense, held_out), "ppl_magnitude": ppl["magnitude"],
                     "ppl_sparsegpt": ppl["sparsegpt"], "sparsegpt_s": prune_s, "checkpoint_mb": size / 2**20,
                     "dense_mb": sum(p.numel() * 4 for p in dense.parameters()) / 2**20, "same_tokens": same,
                     "tokens_per_s_dense": dense_tps, "tokens_per_s_sparse": tokens_per_s(fresh, prompt, new_tokens)})
    if verbose:
        print(f"Llama hidden {hidden}, intermediate {intermediate}, {layers} layers, vocab {vocab}, fp32; "
              f"{calib_batches} calibration batches of 4 x {seq_len} tokens; {torch.get_num_threads()} threads")
        print(f"{'pattern':>8} {'ppl dense':>10} {'magnitude':>10} {'sparsegpt':>10} {'ckpt MiB':>9} "
              f"{'reload=':>8} {'tok/s dense':>12} {'tok/s sparse':>13}")
        for r in rows:
            print(f"{r['pattern']:>8} {r['ppl_dense']:10.2f} {r['ppl_magnitude']:10.2f} {r['ppl_sparsegpt']:10.2f} "
                  f"{r['checkpoint_mb']:6.1f}/{r['dense_mb']:.0f} {str(r['same_tokens']):>8} "
                  f"{r['tokens_per_s_dense']:12.1f} {r['tokens_per_s_sparse']:13.1f}")
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=704)
    p.add_argument("--layers", type=int, default=2)
    a = p.parse_args()
    main(a.hidden, a.intermediate, a.layers)
