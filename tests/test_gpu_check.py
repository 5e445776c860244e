"""bench/gpu_check.sh, the script a session with a GPU runs, checked without one so that no device minute goes to
a typo: its syntax, every stage of its help and of its device plan handled, the pytest selections it runs
matching tests, and its result bundle."""

import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _script(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def _help_stages(text):
    """Stage names of the help: lines '    name   text' (and 'a / b   text') of the stage list."""
    block = text.split("[stage ...]")[1].split("\n\n")[0]
    names = []
    for line in block.splitlines()[1:]:
        m = re.match(r"    (\w+(?: / \w+)*)\s{2,}", line)
        if m:
            names += m.group(1).split(" / ")
    return names


def test_syntax():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_every_stage_of_the_help_and_plan_is_handled(tmp_path):
    text = _script("--help").stdout
    stages = _help_stages(text)
    assert {"build", "test", "sanitize", "bench", "bench_semi24", "tune_bsr", "bench_bsr"} <= set(stages)
    plan = re.findall(r"bench/gpu_check\.sh ((?:\w+ ?)+)$", text, re.M)
    assert len(plan) == 3, "the device plan has three calls"
    for call in [stages] + [p.split() for p in plan]:
        run = _script(*call, GPU_CHECK_DRY_RUN="1", OUT=str(tmp_path))
        assert run.returncode == 0, run.stderr
        assert "unknown stage" not in run.stderr
    assert _script("nonsense", GPU_CHECK_DRY_RUN="1", OUT=str(tmp_path)).returncode == 2


def test_time_budget_skips_stages_that_would_not_fit(tmp_path):
    run = _script("build", "bench_bsr", GPU_CHECK_DRY_RUN="1", GPU_CHECK_BUDGET_S="60", OUT=str(tmp_path))
    summary = run.stdout.split("=== summary")[1]
    assert re.search(r"build\s+SKIPPED \(time", summary) and re.search(r"bench_bsr\s+SKIPPED \(time", summary)


def test_pytest_selections_match_tests(tmp_path):
    """Each pytest command of the test and sanitizer stages, collected here: its markers and -k expressions
    must select tests, for a sanitizer from every file it names (CUDA tests are collected without a GPU)."""
    run = _script("test", "test_cpu", "sanitize", GPU_CHECK_DRY_RUN="1", OUT=str(tmp_path))
    commands = [shlex.split(line) for line in run.stdout.splitlines() if " -m pytest " in line]
    assert len(commands) == 4
    for argv in commands:
        args = [a for a in argv[argv.index("pytest") + 1:] if not a.startswith("--junitxml")]
        collect = subprocess.run([sys.executable, "-m", "pytest", *args, "--collect-only"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
        assert collect.returncode == 0, collect.stdout[-2000:]
        files = {a for a in args if a.startswith("tests/")}
        selected = {line.split("::")[0] for line in collect.stdout.splitlines() if "::" in line}
        assert selected == files if "compute-sanitizer" in argv else selected, f"{args} selects {selected}"


def test_results_bundle(tmp_path):
    """A real (non-dry) stage: the summary and the log archive land in OUT, nothing else (at most 8 files come
    back from a device call). `info` runs here too; without a GPU its version queries fail inside the log."""
    _script("info", OUT=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check_logs.tar.gz", "gpu_check_summary.txt"]
    assert (tmp_path / "gpu_check_summary.txt").read_text().startswith("info ")
    with tarfile.open(tmp_path / "gpu_check_logs.tar.gz") as tar:
        assert {"./info.log", "./gpu_check_summary.txt"} <= set(tar.getnames())
