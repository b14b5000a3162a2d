"""The device scripts (run on a lent GPU machine that has torch, transformers and lightning, but not jsonargparse,
datasets, spaCy or gguf) import without those packages and run end to end, here on the CPU with tiny shapes; and
scripts/paired_gains.py, which the README's paired comparisons come from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_GPU_MACHINE = ["spacy", "jsonargparse", "datasets", "gguf", "peft"]


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    blocked = "".join(f"sys.modules[{m!r}] = None; " for m in ABSENT_ON_GPU_MACHINE)
    code = (f"import sys, runpy; {blocked}sys.path.insert(0, 'scripts'); sys.argv = {[script, *args]!r}; "
            f"runpy.run_path('scripts/{script}', run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_bench_runs_without_the_optional_packages(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script("bench.py", "--random-shape", "tiny", "--tokenizer", "tiny", "--questions", "2",
                      "--tokens", "3", "--batch-sizes", "2", "--backends", "dense", "flex", "--seed-questions", "1",
                      "--long", "--long-batch-sizes", "2", "--long-prefix-tokens", "60", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    methods = {r["method"] for r in rows}
    assert {"hf_generate", "origin", "logit_avg", "flex_concat[flex]", "flex_shared_prefix[dense]"} <= methods
    assert any(r["case"].startswith("long: N=10") for r in rows)
    assert all(r["ms_per_question"] > 0 and r["graphs_timed"] == 0 for r in rows)
    assert "hf_generate" in proc.stdout and "x floor" in proc.stdout


def test_gpu_check_runs_without_the_optional_packages():
    proc = run_script("gpu_check.py", "--device", "cpu", "--no-compile", "--skip-decode", "--big-shape", "tiny")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "gpu_check: PASS" in proc.stdout and "vs float32" in proc.stdout


def test_paired_gains_pairs_each_run_with_the_baseline_fact_by_fact(tmp_path):
    """Two runs that differ on two facts out of four: +50 points exactly, an interval around it; a run over other
    facts is refused."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from paired_gains import main

    def run(name: str, right: list[bool], ids=("a", "b", "c", "d")) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "predictions.jsonl").write_text("".join(json.dumps({"id": i, "correct": r}) + "\n"
                                                          for i, r in zip(ids, right)))
        return folder

    base, better = run("base", [True, False, False, False]), run("better", [True, True, True, False])
    lines = main([str(base), str(better), "--resamples", "200"]).splitlines()
    assert lines[2] == "| base | 25.0 | |"
    assert lines[3].startswith("| better | 75.0 | +50.0 [")
    first, rest = run("first", [True, True], ids=("a", "b")), run("rest", [True, False], ids=("c", "d"))
    assert main([str(base), f"{first}+{rest}"]).splitlines()[3].startswith("| first+rest | 75.0 | +50.0 [")
    other = run("other", [True, True, True, True], ids=("a", "b", "c", "e"))
    try:
        main([str(base), str(other)])
    except SystemExit as exc:
        assert "answers other facts" in str(exc)
    else:
        raise AssertionError("a run over other facts must be refused")
