"""The benchmark harness runs end to end (a smoke test of the tool, not a timing assertion)."""

import json

from sparsekern.bench import main


def test_bench_quick_preset_writes_results(tmp_path, capsys):
    assert main(["--preset", "quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    data = json.loads(path.read_text())
    assert data["meta"]["preset"] == "quick" and data["meta"]["copy_bandwidth_gbs"] > 0
    methods = {r["method"] for r in data["rows"]}
    assert methods == {"dense", "torch.sparse", "sparsekern"}
    for row in data["rows"]:
        assert row["agrees_with_dense"] and row["median_ms"] > 0 and row["tflops"] > 0
    assert "sparsekern" in capsys.readouterr().out
