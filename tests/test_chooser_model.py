"""A chooser file records the model it was fit with, and a learned head with the file refuses another model (one
error naming the file, both models and how to fit one), while the same model reached by another name (the embedded
alias and its cache directory, an alias and its hub id, a relative and an absolute path) is accepted. ``"model":
null`` (hand-made weights) is used with any model; a file without the field is refused. ``sweep`` refuses such a
file before its engine pass."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from test_chooser_layout import mixture_file
from test_demos import with_blocks
from test_sweep_short_groups import uneven_file  # noqa: F401  (a fixture)
from test_sweep_wider import sweep_uneven
from tiny_models import build_tiny_model

from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.engine.models import EMBEDDED_MODEL, MODEL_ALIASES
from selfens_pl.errors import UserError
from selfens_pl.heads import RerankHead
from selfens_pl.scoring.chooser import DEMO_FEATURES, FEATURES, Chooser, FitModel, loaded_model_name, model_identity

SHIPPED = "configs/chooser_webqa_demos.json"


def loaded_from(name: str):
    """What the check reads of a loaded model: its config's ``_name_or_path`` (all it reads, so no weights)."""
    return SimpleNamespace(config=SimpleNamespace(_name_or_path=name))


def test_one_model_by_any_of_its_names(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFENS_PL_CACHE", str(tmp_path / "cache"))
    converted = tmp_path / "cache" / EMBEDDED_MODEL
    converted.mkdir(parents=True)
    assert model_identity(EMBEDDED_MODEL) == model_identity(str(converted)) == EMBEDDED_MODEL
    assert model_identity("llama3.2_3b_it") == model_identity(MODEL_ALIASES["llama3.2_3b_it"]) \
        == "meta-llama/Llama-3.2-3B-Instruct"
    snapshot = tmp_path / "hub" / "models--meta-llama--Llama-3.2-3B-Instruct" / "snapshots" / "0cb88a4f"
    snapshot.mkdir(parents=True)
    assert model_identity(str(snapshot)) == "meta-llama/Llama-3.2-3B-Instruct"
    (tmp_path / "m").mkdir()
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    assert model_identity("m") == model_identity("./m") == model_identity(str(tmp_path / "m")) == str(tmp_path / "m")
    assert model_identity("./other") != model_identity("./m")
    assert model_identity("Qwen/Qwen3-4B") != model_identity("llama3.2_3b_it")


def test_the_model_round_trips_and_a_file_without_one_is_refused(tiny_lm, tiny_model_dir, tmp_path):
    fit_with = FitModel.of(str(tiny_model_dir), tiny_lm.lm)
    assert fit_with == FitModel(str(tiny_model_dir), str(tiny_model_dir.resolve()), str(tiny_model_dir))
    path = mixture_file(tmp_path / "c.json")
    chooser = Chooser.load(path)
    assert chooser.fit_with is None and json.loads(open(path).read())["model"] is None  # hand-made: any model
    chooser.check_model(tiny_lm.lm)
    chooser.fit_with = fit_with
    assert Chooser.load(chooser.save(tmp_path / "fit.json")).fit_with == fit_with
    data = json.loads(open(path).read())
    del data["model"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"chooser='.*old.json' does not say which model it was fit with .*fit it "
                                        r"again with your model \(python -m selfens_pl chooser --model.model"):
        Chooser.load(tmp_path / "old.json")
    data["model"] = {"name": 3}
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"chooser='.*bad.json': its 'model' \{'name': 3\} must be null or"):
        Chooser.load(tmp_path / "bad.json")
    data["model"] = {"name": EMBEDDED_MODEL}  # added by hand: its identity is the name's
    (tmp_path / "named.json").write_text(json.dumps(data))
    assert Chooser.load(tmp_path / "named.json").fit_with.identity == EMBEDDED_MODEL


def test_the_shipped_file_says_it_was_fit_with_the_embedded_model(tiny_lm, monkeypatch, tmp_path):
    chooser = Chooser.load(SHIPPED, features=DEMO_FEATURES)
    assert chooser.fit_with.name == chooser.fit_with.identity == EMBEDDED_MODEL
    monkeypatch.setenv("SELFENS_PL_CACHE", str(tmp_path))
    chooser.check_model(loaded_from(str(tmp_path / EMBEDDED_MODEL)))  # where the alias loads it from here
    with pytest.raises(UserError) as err:
        chooser.check_model(tiny_lm.lm)
    message = str(err.value)
    in_use = model_identity(tiny_lm.hparams.model)
    assert message.startswith(f"--model.head.init_args.chooser='{SHIPPED}' was fit with the model "
                              f"'{EMBEDDED_MODEL}', but this run's model is '{in_use}'")
    assert "python -m selfens_pl chooser --model.model" in message and "\n" not in message
    with pytest.raises(UserError, match="this model says nothing of where it was loaded from"):
        loaded_model_name(loaded_from(""))


def test_a_head_with_a_file_fit_with_one_tiny_model_refuses_another(tiny_lm, tiny_model_dir, template, groups,
                                                                   tmp_path_factory, tmp_path):
    from selfens_pl.lit.module import SelfEnsembleLM

    other = SelfEnsembleLM(model=str(build_tiny_model(tmp_path_factory.mktemp("tiny-b"), seed=1)), max_new_tokens=8,
                           stop=None)
    other.configure_model()
    weights = [1.0 if name == "mixture" else 0.0 for name in DEMO_FEATURES]
    chooser = Chooser(weights, 0.0, [0.0] * len(DEMO_FEATURES), [1.0] * len(DEMO_FEATURES), DEMO_FEATURES,
                      layout=(1, 3), fit_with=FitModel.of(str(tiny_model_dir), tiny_lm.lm))
    path = str(chooser.save(tmp_path / "fit_a.json"))
    head = RerankHead("learned", chooser=path, demo_answers=True)
    data = with_blocks([dict(g, paraphrases=g["paraphrases"][:1]) for g in groups], m=3)
    prompts = PromptTokenizer(tiny_lm.tokenizer, template)
    with pytest.raises(UserError) as err:
        head.generate(other.decoder, prompts, data)
    assert str(err.value) == (
        f"--model.head.init_args.chooser={path!r} was fit with the model {str(tiny_model_dir)!r}, but this run's "
        f"model is {model_identity(other.hparams.model)!r}: its scores mean something else under another model; fit "
        "a chooser with this one (python -m selfens_pl chooser --model.model <this model> --data.path <questions "
        "with answers> ... --out <file>) or drop the file (rule: mixture)")
    got = head.generate(tiny_lm.decoder, prompts, data)  # the model it was fit with: answers (as the mixture rule)
    assert [r["generation"] for r in got] == [r["generation"] for r in RerankHead(
        "mixture", demo_answers=True, origin_share=None).generate(tiny_lm.decoder, prompts, data)]


def test_the_sweep_refuses_a_chooser_file_fit_with_another_model_before_its_engine_pass(
        tiny_model_dir, uneven_file, tmp_path, monkeypatch):  # noqa: F811
    from selfens_pl.sweep import runner

    weights = [1.0 if name == "mixture" else 0.0 for name in FEATURES]
    chooser = Chooser(weights, 0.0, [0.0] * len(FEATURES), [1.0] * len(FEATURES), layout=(2, 2),
                      fit_with=FitModel(EMBEDDED_MODEL, EMBEDDED_MODEL))
    path = str(chooser.save(tmp_path / "embedded.json"))
    heads = [{"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "learned", "chooser": path}}]
    monkeypatch.setattr(runner, "engine_pass", None)  # never reached
    with pytest.raises(UserError, match=rf"chooser={path!r} was fit with the model '{EMBEDDED_MODEL}', but this "
                                        rf"run's model is '{model_identity(str(tiny_model_dir))}'"):
        sweep_uneven(tiny_model_dir, uneven_file, tmp_path / "out", heads, "1,2")
    chooser.fit_with = FitModel.of(str(tiny_model_dir), SimpleNamespace(config=SimpleNamespace(
        _name_or_path=str(tiny_model_dir))))
    chooser.save(path)
    monkeypatch.undo()
    assert (sweep_uneven(tiny_model_dir, uneven_file, tmp_path / "out2", heads, "1,2") / "runs"
            / "rerank_learned_k2_m2").is_dir()
