"""The benchmark harness runs end to end (a smoke test of the tool, not a timing assertion)."""

import json

from sparsekern.bench import main


def test_bench_quick_preset_writes_results(tmp_path, capsys):
    assert main(["--preset", "quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    data = json.loads(path.read_text())
    assert data["meta"]["preset"] == "quick" and data["meta"]["copy_bandwidth_gbs"] > 0
    methods = {r["method"] for r in data["rows"]}
    # The CSR cases also time both CSR kernels directly, bypassing the per-call choice.
    assert methods == {"dense", "torch.sparse", "sparsekern", "sparsekern[csr]", "sparsekern[bitmap]"}
    for row in data["rows"]:
        assert row["agrees_with_dense"] and row["median_ms"] > 0 and row["tflops"] > 0
    assert "sparsekern" in capsys.readouterr().out


def test_bench_variants_and_linear_cases(tmp_path):
    """--variants adds one method per forced CUDA kernel configuration (ignored by the CPU kernel, so here it
    only has to run and agree), and the csr_linear cases run."""
    args = ["--preset", "quick", "--device", "cpu", "--ops", "csr_mm,csr_linear", "--variants", "nz:8,rows:16"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*-variants-*.json")
    data = json.loads(path.read_text())
    assert data["meta"]["variants"] == ["nz:8", "rows:16"]
    assert {r["op"] for r in data["rows"]} == {"csr_mm", "csr_linear"}
    assert {r["method"] for r in data["rows"]} == {"dense", "torch.sparse", "sparsekern", "sparsekern[csr]",
                                                   "sparsekern[bitmap]", "sparsekern[nz:8]", "sparsekern[rows:16]"}
    assert all(r["agrees_with_dense"] for r in data["rows"])


def test_llama_memory_floor_counts_what_the_kernels_read():
    """bench.llama's memory floor: a 2:4 Linear (M, K) costs M*K/2 fp32 values plus K/8 metadata bytes per row
    (K a multiple of 64, where the layout pads nothing), a dense one M*K*4 bytes, the embedding one row."""
    import torch
    from transformers import LlamaForCausalLM

    from sparsekern.bench import llama

    torch.manual_seed(0)
    cfg = llama.llama_config(1, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                             vocab_size=100)
    dense = LlamaForCausalLM(cfg).eval()
    sparse = llama.sparse_variant(dense, "2:4")
    linears = [m for n, m in dense.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
    params = sum(p.nbytes for p in dense.parameters())
    emb = dense.model.embed_tokens.weight
    assert llama.weight_bytes_per_token(dense) == params - emb.nbytes + emb[0].nbytes
    saved = sum(m.weight.nbytes - (m.weight.numel() * 2 + m.weight.numel() // 8) for m in linears)
    assert llama.weight_bytes_per_token(sparse) == llama.weight_bytes_per_token(dense) - saved
