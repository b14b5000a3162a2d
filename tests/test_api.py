"""The Python API (:mod:`selfens_pl.api`): one process answers with several heads, and every answer equals what
``predict`` writes for the same groups, prompt and head, token for token."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from selfens_pl import Answer, Group, LogitFusion, RerankHead, SelfEnsemble, VoteHead
from selfens_pl.data.datamodule import demo_few_shot
from selfens_pl.errors import UserError
from selfens_pl.lit.cli import build_cli

QUESTIONS = ["what currency do they use in qatar?", "who played princess leia from star wars?",
             "what is the capital of france?"]
PARAPHRASES = [["which currency is used in qatar?", "what money does qatar use?"],
               ["which actress played princess leia in star wars?"],
               ["which city is the capital of france?", "france's capital city is what?"]]
ANSWERS = [["Qatari riyal"], ["Carrie Fisher"], ["Paris"]]
HEADS = {
    "avg": (lambda: LogitFusion("avg"), {"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg"}}),
    "rerank_mixture": (lambda: RerankHead(rule="mixture"),
                       {"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "mixture"}}),
    "vote": (lambda: VoteHead(), {"class_path": "selfens_pl.heads.VoteHead"}),
}


def predict_records(tmp_path, monkeypatch, model: str, head_config: dict, groups: list[dict],
                    extra: dict | None = None) -> list[dict]:
    path = tmp_path / "groups.jsonl"
    path.write_text("".join(json.dumps(g) + "\n" for g in groups))
    out = tmp_path / f"out-{head_config['class_path'].rsplit('.', 1)[1]}"
    config = {"trainer": {"accelerator": "cpu", "devices": 1, "logger": False},
              "model": {"model": model, "head": head_config},
              "data": {"path": str(path), "source": "groups", "task": "webqa", "few_shot": demo_few_shot(),
                       **(extra or {})},
              "output_dir": str(out), "resume": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    build_cli(["predict", "--config", str(tmp_path / "config.yaml")])
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def embedded():
    return SelfEnsemble.load("smollm2-135m-instruct", device="cpu")


def test_three_heads_in_one_process_equal_predict(embedded, tmp_path, monkeypatch):
    """The README's Python example: three questions, three heads, one loaded model; each answer is predict's."""
    questions = [Group(q, answers=a, id=f"q{i}") for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS))]
    groups = [{"id": f"q{i}", "paraphrases": [q, *p], "answers": a}
              for i, (q, p, a) in enumerate(zip(QUESTIONS, PARAPHRASES, ANSWERS))]
    for method, (make_head, head_config) in HEADS.items():
        out = embedded.answer(questions, head=make_head(), paraphrases=PARAPHRASES)
        assert [a.method for a in out] == [method] * 3
        assert all(isinstance(a, Answer) for a in out)
        expected = {r["id"]: r for r in predict_records(tmp_path, monkeypatch, "smollm2-135m-instruct", head_config,
                                                        groups)}
        for answer in out:
            want = expected[answer.id]
            assert (answer.generation, answer.prediction) == (want["generation"], want["prediction"]), method
            assert answer.correct == want["correct"]
            assert answer.confidence == pytest.approx(want["mean_prob"], rel=1e-4)
        if method != "avg":  # vote and rerank know every member's own answer
            assert all(len(a.members) == 1 + len(p) for a, p in zip(out, PARAPHRASES))
    assert sum(a.correct for a in out) >= 2  # the model does answer these: the comparison is not of empty strings


def test_one_paraphrase_fused_is_origin(tiny_model_dir):
    """A group of one member: every fusion head answers what the question alone answers."""
    se = SelfEnsemble.load(str(tiny_model_dir), device="cpu", max_new_tokens=6, stop=None)
    origin = se.answer(QUESTIONS)
    for head in (LogitFusion("avg"), LogitFusion("max"), VoteHead(), RerankHead(rule="mixture")):
        fused = se.answer(QUESTIONS, head=head)
        assert [a.generation for a in fused] == [a.generation for a in origin], head.method


def test_errors_name_the_argument(tiny_model_dir):
    se = SelfEnsemble.load(str(tiny_model_dir), device="cpu", max_new_tokens=4)
    cases = [
        (dict(demo_blocks=0), r"answer\(demo_blocks=0\)"),
        (dict(demo_blocks=3), r"answer\(demo_blocks=3\) needs pool="),
        (dict(batch_size=0), r"answer\(batch_size=0\)"),
        (dict(paraphrases=[["x"]]), r"answer\(paraphrases=...\): 1 lists for 3 questions"),
        (dict(paraphrases="sometimes"), r"answer\(paraphrases='sometimes'\)"),
        (dict(head="avg"), r"answer\(head='avg'\)"),
        (dict(task="trivia"), r"answer\(task='trivia'\)"),
        (dict(demo_selection="nearest"), r"demo_selection='nearest'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserError, match=message):
            se.answer(QUESTIONS, **kwargs)
    with pytest.raises(UserError, match=r"give a list of questions"):
        se.answer("what is the capital of france?")
    with pytest.raises(UserError, match=r"id 'a' repeats"):
        se.answer([Group("x?", id="a"), Group("y?", id="a")])
    with pytest.raises(UserError, match=r"device 'cuda:7'|device 'cuda:7': this torch has no usable CUDA"):
        SelfEnsemble.load(str(tiny_model_dir), device="cuda:7")
    with pytest.raises(UserError, match=r"dtype 'float8': choose one of"):
        SelfEnsemble.load(str(tiny_model_dir), dtype="float8")
    with pytest.raises(UserError, match=r"max_new_tokens=0"):
        SelfEnsemble.load(str(tiny_model_dir), max_new_tokens=0)


def test_dtype_is_applied(tiny_model_dir):
    import torch

    se = SelfEnsemble.load(str(tiny_model_dir), device="cpu", dtype="bfloat16", max_new_tokens=3)
    assert next(se.module.lm.parameters()).dtype == torch.bfloat16
    assert len(se.answer(QUESTIONS[:1])) == 1
