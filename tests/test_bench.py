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
