"""Bad input gives ONE clear error (a single one-line ValueError, or a CLI usage error) naming the record or flag."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import build_tiny_model

from selfens_pl.data.datamodule import ParaphraseDataModule, demo_path, load_groups
from selfens_pl.engine.models import resolve_model_name
from selfens_pl.errors import UserError
from selfens_pl.heads import FlexFusion, LogitFusion, OriginHead, PerPromptHead
from selfens_pl.lit.cli import build_cli
from selfens_pl.lit.module import SelfEnsembleLM

ROOT = Path(__file__).resolve().parents[1]

HEADS = {
    "origin": OriginHead,
    "per_prompt": PerPromptHead,
    "logit_avg": lambda: LogitFusion("avg"),
    "flex": lambda: FlexFusion(backend="dense"),
}


def one_line(exc_info) -> str:
    """The error is one message, not a wrapped chain or a multi-line dump."""
    message = str(exc_info.value)
    assert "\n" not in message, message
    assert exc_info.value.__cause__ is None, exc_info.value.__cause__
    return message


def generate(head, lm: SelfEnsembleLM, template, groups):
    return head.generate(lm.decoder, lm.prompts(template), groups)


# -- empty paraphrase lists ----------------------------------------------------------------------------------------
def test_groups_file_with_empty_paraphrases(tmp_path):
    path = tmp_path / "groups.jsonl"
    rows = [{"id": "q1", "paraphrases": ["who wrote hamlet?"], "answers": ["Shakespeare"]},
            {"id": "q2", "paraphrases": [], "answers": ["Paris"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"groups\.jsonl: line 2: field 'paraphrases' must be a non-empty list") as e:
        load_groups(str(path))
    one_line(e)


@pytest.mark.parametrize("name", HEADS)
def test_head_with_empty_paraphrases(name, tiny_lm, template, groups):
    bad = [*groups[:1], {**groups[1], "paraphrases": []}]
    with pytest.raises(ValueError, match=rf"record '{groups[1]['id']}': empty paraphrase list") as e:
        generate(HEADS[name](), tiny_lm, template, bad)
    one_line(e)


# -- scoring without answers ---------------------------------------------------------------------------------------
def test_score_without_answers(tiny_lm, template, groups):
    assert tiny_lm.hparams.score
    bad = [groups[0], {**groups[1], "answers": []}]
    with pytest.raises(ValueError, match=rf"record '{groups[1]['id']}' has no answers.*--model\.score=false") as e:
        tiny_lm.predict_step({"groups": bad, "template": template}, 0)
    one_line(e)


# -- model names ---------------------------------------------------------------------------------------------------
def test_unknown_model_alias():
    with pytest.raises(ValueError, match=r"--model\.model='llama9_it'.*known alias") as e:
        resolve_model_name("llama9_it")
    one_line(e)


# -- weighted fusion without confidences ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["weighted_avg", "weighted_max"])
@pytest.mark.parametrize("head", ["logit", "flex"])
def test_weighted_without_confidences(head, method, tiny_lm, template, groups):
    fusion = LogitFusion(method) if head == "logit" else FlexFusion(fusion=method, backend="dense")
    assert all(g["confidences"] is None for g in groups)
    with pytest.raises(ValueError, match=rf"record '{groups[0]['id']}': method={method} needs one confidence") as e:
        generate(fusion, tiny_lm, template, groups)
    one_line(e)


# -- context window ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_lm(tmp_path_factory) -> SelfEnsembleLM:
    path = build_tiny_model(tmp_path_factory.mktemp("tiny-llama-64"), max_position_embeddings=64)
    lm = SelfEnsembleLM(model=str(path), max_new_tokens=8, stop=None)
    lm.configure_model()
    return lm


@pytest.mark.parametrize("name", HEADS)
def test_prompt_beyond_context_window(name, short_lm, template, groups):
    with pytest.raises(ValueError, match=rf"record '{groups[0]['id']}': .*context window of 64 tokens") as e:
        generate(HEADS[name](), short_lm, template, groups)
    one_line(e)


# -- CLI and data flags --------------------------------------------------------------------------------------------
def test_unknown_config_key(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    with pytest.raises(SystemExit) as e:
        build_cli(["predict", "--config", "configs/demo.yaml", "--data.bogus", "1"], run=False)
    assert e.value.code != 0
    assert "bogus" in capsys.readouterr().err


def test_num_paraphrases_beyond_group_size():
    data = ParaphraseDataModule(path="demo", num_paraphrases=6)
    with pytest.raises(ValueError, match=r"record '[^']+' has 5 paraphrases, fewer than --data\.num_paraphrases=6") as e:
        data.setup("predict")
    one_line(e)


def test_sweep_over_a_record_without_answers_names_it(tmp_path, tiny_model_dir):
    """The sweep scores every method against the gold answers: a record without any is named up front (not met
    deep in the scoring, where the metric cannot tell which record it is)."""
    from selfens_pl.commands import sweep

    rows = [json.loads(line) for line in Path(demo_path()).read_text().splitlines()[:3]]
    rows[1]["answers"] = []
    path = tmp_path / "groups.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match=rf"record '{rows[1]['id']}' has no answers.*the sweep scores") as e:
        sweep.main(["--model.model", str(tiny_model_dir), "--data.path", str(path), "--data.few_shot", "[]",
                    "--ks", "1,2", "--model.max_new_tokens", "2", "--resamples", "10", "--trainer.accelerator", "cpu",
                    "--output_dir", str(tmp_path / "out")])
    one_line(e)
