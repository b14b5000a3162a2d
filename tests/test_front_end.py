"""One front end (issue 33): the overview of every command, the short ``--help`` of Lightning's subcommands, one flag
name per concept across the verbs that load a model (old names still accepted), ``--data.source auto`` reading a
plain questions file with the user's ids, and the device check of :func:`selfens_pl.commands.device_and_dtype`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from selfens_pl.cli import COMMANDS, LIGHTNING_COMMANDS, TOOLS, main
from selfens_pl.commands import (
    RENAMED,
    add_device_flags,
    add_model_flags,
    confidence,
    device_and_dtype,
    paraphrase,
    rename_flags,
    sweep,
)
from selfens_pl.data.datamodule import ParaphraseDataModule, auto_source, load_groups
from selfens_pl.engine.models import DEFAULT_MAX_NEW_TOKENS
from selfens_pl.errors import UserError, parse_errors_raise
from selfens_pl.lit.cli import build_cli

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
ERROR = "selfens_pl: error: "
SAME_FLAGS = ["--model.model", "smollm2-135m-instruct", "--data.path", "demo", "--trainer.accelerator", "cpu"]


def run_main(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


# -- the overview ---------------------------------------------------------------------------------------------------
def test_every_command_has_its_line():
    from lightning.pytorch.cli import LightningCLI

    assert set(LIGHTNING_COMMANDS) == set(LightningCLI.subcommands())
    assert set(COMMANDS) == set(TOOLS) | set(LIGHTNING_COMMANDS)
    assert set(COMMANDS) == {"predict", "fit", "validate", "test", "ask", "report", "mask", "paraphrase", "confidence",
                             "sweep", "chooser"}


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_command(flag, capsys):
    status, out, err = run_main([flag], capsys)
    assert status == 0 and err == ""
    listed = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert list(listed) == list(COMMANDS)  # every verb, in order, one line each
    for name, line in listed.items():
        assert COMMANDS[name] in line
    assert "--help_all" in out and "<command> --help" in out


def test_no_command_lists_them_and_is_one_error(capsys):
    status, out, err = run_main([], capsys)
    assert status == 2
    assert [line.split()[0] for line in out.splitlines() if line.startswith("  ")] == list(COMMANDS)
    assert err.splitlines() == [f"{ERROR}a command is needed: one of those above"]


def test_help_imports_no_command_and_no_lightning_cli():
    """The overview is printed before a command's module or Lightning's CLI is imported (what the package's own
    ``__init__`` imports is its own affair)."""
    code = ("import sys\nfrom selfens_pl.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('selfens_pl.commands', 'selfens_pl.lit.cli', "
            "'lightning.pytorch.cli'))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


# -- predict --help: short; --help_all: Lightning's -----------------------------------------------------------------
def flags_in(text: str) -> list[str]:
    return [line.split()[0].rstrip(",") for line in text.splitlines() if line.startswith("  --")]


def test_predict_help_is_the_package_flags_first(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    status, short, _ = run_main(["predict", "--help"], capsys)
    assert status == 0
    flags = flags_in(short)
    for flag in ("--help_all", "--output_dir", "--resume", "--model.model", "--model.head", "--data.path",
                 "--data.source", "--ckpt_path", "--trainer.accelerator", "--trainer.devices", "--trainer.strategy",
                 "--trainer.precision"):
        assert flag in flags, flag
    for flag in ("--trainer.max_epochs", "--trainer.gradient_clip_val", "--optimizer", "--lr_scheduler",
                 "--seed_everything", "--trainer.callbacks"):
        assert flag not in flags, flag
    trainer = [i for i, f in enumerate(flags) if f.startswith("--trainer.")]
    own = [i for i, f in enumerate(flags) if f.startswith(("--model.", "--data.", "--output_dir"))]
    assert max(own) < min(trainer)  # the package's own flags first
    assert "--help_all" in short.split("options:")[0]  # the pointer, above the flags

    status, full, _ = run_main(["predict", "--help_all"], capsys)
    assert status == 0
    assert {"--trainer.gradient_clip_val", "--optimizer", "--seed_everything"} <= set(flags_in(full))
    assert set(flags) - {"--help_all"} <= set(flags_in(full)) and len(full.splitlines()) > 2 * len(short.splitlines())


def test_fit_help_adds_how_long_it_trains(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    status, out, _ = run_main(["fit", "--config", str(ROOT / "configs" / "finetune_avg_webqa.yaml"), "-h"], capsys)
    assert status == 0
    assert {"--trainer.max_steps", "--trainer.max_epochs", "--model.learning_rate"} <= set(flags_in(out))


# -- one name per concept ---------------------------------------------------------------------------------------------
def parsed(cfg, key):
    return cfg[key] if hasattr(cfg, "__getitem__") else getattr(cfg, key)


@pytest.mark.parametrize("verb", ["predict", "sweep", "confidence", "paraphrase", "chooser"])
def test_every_verb_takes_the_same_model_data_and_device_flags(verb, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    if verb == "predict":
        cfg = build_cli(["predict", *SAME_FLAGS], run=False).config
    else:
        import importlib

        cfg = importlib.import_module(f"selfens_pl.commands.{verb}").build_parser().parse_args(SAME_FLAGS)
    assert (cfg["model.model"], cfg["data.path"], cfg["trainer.accelerator"]) == ("smollm2-135m-instruct", "demo",
                                                                                  "cpu")


def test_ask_takes_the_same_model_and_device_flags():
    """``ask`` answers one question (no --data.path): the model and the device by predict's names, and the old
    names still."""
    from selfens_pl.commands import ask

    for argv in (["--model.model", "smollm2-135m-instruct", "--trainer.accelerator", "cpu"],
                 ["--model", "smollm2-135m-instruct", "--device", "cpu"]):
        with parse_errors_raise():
            values = vars(ask.parse_args(["q?", *argv])).values()
        assert "smollm2-135m-instruct" in values and "cpu" in values


def test_old_flags_are_rewritten():
    assert rename_flags(["--model", "m", "--device=cpu", "--max_new_tokens", "3", "--stop", "null", "--ks", "1"],
                        RENAMED) == ["--model.model", "m", "--trainer.accelerator=cpu", "--model.max_new_tokens", "3",
                                     "--model.stop", "null", "--ks", "1"]
    old = ["--source", "q.jsonl", "--split=train", "--limit", "2", "--start", "1", "--batch_size", "4"]
    assert rename_flags(old, paraphrase.PARAPHRASE_RENAMED, {"--source": ["--data.source", "webqa"]}) == [
        "--data.path", "q.jsonl", "--data.source", "webqa", "--data.split=train", "--data.limit", "2",
        "--data.start", "1", "--data.batch_size", "4"]
    assert rename_flags(["--model.model", "m", "--", "--model"], RENAMED) == ["--model.model", "m", "--", "--model"]


def test_a_config_with_old_keys_is_one_error(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"model": "smollm2-135m-instruct", "max_new_tokens": 4, "data": {"path": "demo"}},
                                   sort_keys=False))
    status, _, err = run_main(["confidence", "--config", str(path)], capsys)
    assert status == 2
    assert err.splitlines() == [f"{ERROR}--config {path}: old keys (model -> model.model, max_new_tokens -> "
                                "model.max_new_tokens: a dotted name is a key under a section, e.g. model: {model: "
                                "smollm2-135m-instruct}); CHANGELOG.md lists the renames"]


def test_old_and_new_paraphrase_flags_write_the_same_file(tiny_model_dir, tmp_path, one_thread):
    """The old command line (``--source`` read WebQuestions records) and the new one write the same records and
    settings, ids ``webqa-train-<index>`` as before."""
    common = ["--num_paraphrases", "1", "--checks", "[]", "--max_retries", "0"]
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    paraphrase.main(["--model", str(tiny_model_dir), "--source", str(FIXTURES / "webqa_tiny.jsonl"), "--split",
                     "train", "--start", "1", "--limit", "2", "--batch_size", "1", "--max_new_tokens", "3",
                     "--device", "cpu", "--output", str(old), *common])
    paraphrase.main(["--model.model", str(tiny_model_dir), "--data.path", str(FIXTURES / "webqa_tiny.jsonl"),
                     "--data.source", "webqa", "--data.split", "train", "--data.start", "1", "--data.limit", "2",
                     "--model.max_new_tokens", "3", "--trainer.accelerator", "cpu", "--output", str(new), *common])
    assert old.read_text() == new.read_text()
    assert [json.loads(line)["id"] for line in new.read_text().splitlines()] == ["webqa-train-1", "webqa-train-2"]
    assert paraphrase.settings_path(old).read_text() == paraphrase.settings_path(new).read_text()


def test_a_settings_file_from_before_the_renames_is_resumed(tiny_model_dir, tmp_path, one_thread):
    """A paraphrase settings file written before ``data_source`` and ``dtype`` existed (every such file read
    WebQuestions records in float32) still matches the same run; another source is refused, naming its flag."""
    out = tmp_path / "p.jsonl"
    args = ["--model.model", str(tiny_model_dir), "--data.path", str(FIXTURES / "webqa_tiny.jsonl"),
            "--data.source", "webqa", "--data.limit", "1", "--num_paraphrases", "1", "--checks", "[]",
            "--model.max_new_tokens", "2", "--trainer.accelerator", "cpu", "--output", str(out)]
    paraphrase.main(args)
    settings = json.loads(paraphrase.settings_path(out).read_text())
    assert (settings["data_source"], settings["dtype"]) == ("webqa", None)
    old = {k: v for k, v in settings.items() if k not in ("data_source", "dtype")}
    paraphrase.settings_path(out).write_text(json.dumps(old))
    paraphrase.main(args)  # reused
    with pytest.raises(UserError, match=r"--data\.source differ"):
        paraphrase.main([a if a != "webqa" else "auto" for a in args])


# -- the device and dtype ---------------------------------------------------------------------------------------------
def test_device_and_dtype_from_either_kind_of_parser():
    plain = argparse.ArgumentParser()
    add_model_flags(plain, max_new_tokens=5)
    add_device_flags(plain)
    cfg = plain.parse_args(["--trainer.accelerator", "cpu", "--trainer.precision", "bf16-true",
                            "--model.trust_remote_code", "false", "--model.stop", "null"])
    assert device_and_dtype(cfg) == (torch.device("cpu"), torch.bfloat16)
    assert (getattr(cfg, "model.max_new_tokens"), getattr(cfg, "model.stop")) == (5, None)
    cfg = sweep.build_parser().parse_args(["--trainer.accelerator", "cpu", "--trainer.precision", "32-true"])
    assert device_and_dtype(cfg) == (torch.device("cpu"), torch.float32)
    assert device_and_dtype(sweep.build_parser().parse_args([]))[1] is None  # not given: torch's default dtype
    for bad, message in (("bf16-mixed", "a mixed precision is a Trainer feature"), ("fp8", "choose one of")):
        cfg = sweep.build_parser().parse_args(["--trainer.precision", bad])
        with pytest.raises(UserError, match=rf"^--trainer\.precision={bad}: {message}"):
            device_and_dtype(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a torch without CUDA")
def test_cuda_without_cuda_is_one_line(capsys):
    reason = "this torch has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
    for argv in (["sweep", "--trainer.accelerator", "cuda"], ["confidence", "--device", "cuda"],
                 ["paraphrase", "--trainer.accelerator", "gpu"]):
        status, _, err = run_main(argv, capsys)
        assert status == 2
        [line] = err.splitlines()
        assert line.startswith(f"{ERROR}--trainer.accelerator={argv[-1]}: {reason}"), line


def test_an_unknown_accelerator_is_a_parse_error(capsys):
    status, _, err = run_main(["sweep", "--trainer.accelerator", "tpu"], capsys)
    assert status == 2 and len(err.splitlines()) == 1 and "--trainer.accelerator" in err and "tpu" in err


def test_sweep_loads_the_model_in_the_precision_and_records_it(tiny_model_dir, tmp_path):
    args = ["--model.model", str(tiny_model_dir), "--data.limit", "2", "--trainer.accelerator", "cpu",
            "--output_dir", str(tmp_path / "s")]
    cfg, _, _, run = sweep.prepare(sweep.build_parser(), [*args, "--trainer.precision", "bf16-true"])
    assert next(run.decoder.model.parameters()).dtype == torch.bfloat16
    assert run.base["dtype"] == "bfloat16"
    # what the sweep's settings files record stays where it was: the model's name, max_new_tokens (predict's
    # default, as every verb's), stop
    assert (run.base["model"], run.base["max_new_tokens"], run.base["stop"]) == \
        (str(tiny_model_dir), DEFAULT_MAX_NEW_TOKENS, "\n")
    _, _, _, run = sweep.prepare(sweep.build_parser(), args)
    assert next(run.decoder.model.parameters()).dtype == torch.float32 and "dtype" not in run.base


# -- --data.source auto ---------------------------------------------------------------------------------------------
QUESTIONS = [("what is the capital of france?", ["Paris"]), ("who wrote hamlet?", ["William Shakespeare"]),
             ("what currency does japan use?", ["Yen"]), ("where is the eiffel tower?", ["Paris"]),
             ("who painted the mona lisa?", ["Leonardo da Vinci"])]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def predict_ids(path: Path, out: Path, monkeypatch, *extra: str) -> list[dict]:
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    main(["predict", "--data.path", str(path), "--data.few_shot", "[]", "--model.max_new_tokens", "2",
          "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--output_dir", str(out), *extra])
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_a_plain_questions_file_keeps_its_line_numbers(tmp_path, monkeypatch, one_thread):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": q, "answers": a} for q, a in QUESTIONS])
    records = predict_ids(path, tmp_path / "out", monkeypatch)
    assert [r["id"] for r in records] == ["1", "2", "3", "4", "5"]
    assert [r["paraphrases"] for r in records] == [[q] for q, _ in QUESTIONS]
    assert [r["answers"] for r in records] == [a for _, a in QUESTIONS]


def test_ids_questions_and_paraphrases_are_the_users(tmp_path, monkeypatch, one_thread):
    rows = [{"id": f"mine-{i}", "question": q, "answers": a} for i, (q, a) in enumerate(QUESTIONS[:3])]
    rows[0]["paraphrases"] = [QUESTIONS[0][0], "which city is the capital of france?"]  # the question first: kept once
    rows[1]["paraphrases"] = ["who is the author of hamlet?"]  # the question is put first
    records = predict_ids(write_jsonl(tmp_path / "q.jsonl", rows), tmp_path / "out", monkeypatch,
                          "--model.head", "selfens_pl.heads.PerPromptHead")
    assert sorted({r["id"] for r in records}) == ["mine-0", "mine-1", "mine-2"]
    asked = {}  # per_prompt: a record per paraphrase, in order
    for r in sorted(records, key=lambda r: (r["id"], r["paraphrase_index"])):
        asked.setdefault(r["id"], []).extend(r["paraphrases"])
    assert asked == {
        "mine-0": [QUESTIONS[0][0], "which city is the capital of france?"],
        "mine-1": [QUESTIONS[1][0], "who is the author of hamlet?"], "mine-2": [QUESTIONS[2][0]]}
    assert len(records) == 5  # per_prompt: one record per paraphrase


def test_a_record_with_neither_field_is_one_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "a?", "answers": []}, {"text": "b?", "answers": []}])
    status, _, err = run_main(["predict", "--data.path", str(path), "--data.few_shot", "[]"], capsys)
    assert status == 2
    assert err.splitlines() == [f"{ERROR}{path}: line 2: a record needs 'question' (one question) or 'paraphrases' "
                                "(a list of them), or both; it has ['answers', 'text']"]


def test_auto_tells_the_sources_apart(tmp_path):
    assert auto_source("demo") == "demo"
    assert auto_source("stanfordnlp/web_questions") == "webqa"
    assert auto_source("iszhaoxin/MyriadLAMA") == "myriadlama"
    assert auto_source(str(FIXTURES / "myriadlama_grouped_tiny.jsonl")) == "myriadlama"
    assert auto_source(str(FIXTURES / "webqa_tiny.jsonl")) == "file"
    with pytest.raises(UserError, match=r"^--data\.path=someone/questions: --data\.source auto knows the hub"):
        auto_source("someone/questions")
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        auto_source(str(tmp_path / "missing.jsonl"))

    def groups(**kwargs):
        data = ParaphraseDataModule(few_shot=[], **kwargs)
        data.setup()
        return data.groups

    grouped = dict(path=str(FIXTURES / "myriadlama_grouped_tiny.jsonl"), task="myriadlama", num_manual=2)
    assert groups(**grouped) == groups(source="myriadlama", **grouped)
    assert groups() == groups(source="groups")  # the demo set
    # the explicit sources read as before: WebQuestions ids, and {id, paraphrases} records only
    assert [g["id"] for g in groups(path=str(FIXTURES / "webqa_tiny.jsonl"), source="webqa", split="train",
                                    limit=2)] == ["webqa-train-0", "webqa-train-1"]
    assert [g["id"] for g in groups(path=str(FIXTURES / "webqa_tiny.jsonl"), limit=2)] == ["1", "2"]
    with pytest.raises(UserError, match="field 'id' is missing"):
        load_groups(str(FIXTURES / "webqa_tiny.jsonl"))


def test_paraphrase_reads_a_questions_file_with_the_users_ids(tiny_model_dir, tmp_path, one_thread):
    path = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "question": QUESTIONS[0][0], "answers": ["Paris"]},
                                              {"question": QUESTIONS[1][0], "answers": []}])
    out = paraphrase.main(["--model.model", str(tiny_model_dir), "--data.path", str(path), "--num_paraphrases", "1",
                           "--checks", "[]", "--model.max_new_tokens", "2", "--trainer.accelerator", "cpu",
                           "--output", str(tmp_path / "p.jsonl")])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["question"], r["answers"]) for r in rows] == [("a", QUESTIONS[0][0], ["Paris"]),
                                                                       ("2", QUESTIONS[1][0], [])]
    assert json.loads(paraphrase.settings_path(out).read_text())["data_source"] == "file"


def test_confidence_takes_the_model_flags(tiny_model_dir, tmp_path, one_thread):
    out = confidence.main(["--model.model", str(tiny_model_dir), "--data.limit", "1", "--data.num_paraphrases", "2",
                           "--num_samples", "2", "--model.max_new_tokens", "1", "--trainer.accelerator", "cpu",
                           "--output", str(tmp_path / "c.jsonl")])
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["settings"]["model"] == str(tiny_model_dir) and row["settings"]["max_new_tokens"] == 1
    assert "dtype" not in row["settings"]  # float32: as every file written before --trainer.precision


def test_a_user_file_is_asked_with_the_standard_webquestions_block(tmp_path):
    """No few-shot flag for a user's WebQuestions-style file: the standard five-shot block (the demo's), as every
    webqa preset writes it out, rather than an error."""
    from selfens_pl.data.datamodule import ParaphraseDataModule, demo_few_shot

    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "what is the capital of france?", "answers": ["Paris"]}\n')
    data = ParaphraseDataModule(path=str(path))
    data.setup()
    assert data.template.few_shot == demo_few_shot() and len(demo_few_shot()) == 5
    assert [g["id"] for g in data.groups] == ["1"]
