"""A run's output folder changes only when the run can start (issue 34): every check of flags, data, model, chooser
file, checkpoint and output folder comes before anything is written or replaced, a resumed run with any setting that
changes its records (``--data.limit`` and ``--data.start`` included) is refused naming it, and each mistake is one
line on stderr with exit status 2. Flag checks of the verbs come before their model loads or their model pass.

Real runs on the tiny model through the package's entry point (:func:`selfens_pl.cli.main`, in-process, or a
subprocess where the environment matters), in a folder holding a finished ``avg`` run of configs/demo.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from test_ddp import read_jsonl
from tiny_models import build_tiny_model

from selfens_pl.cli import main
from selfens_pl.data.datamodule import demo_path
from selfens_pl.lit.writer import PREDICTIONS, SUMMARY
from selfens_pl.scoring.chooser import FEATURES, Chooser, FitModel

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
ERROR = "selfens_pl: error: "


def run_main(capsys, monkeypatch, *argv: str) -> tuple[int, str]:
    """``python -m selfens_pl ...`` in this process: ``(exit status, stderr)``."""
    monkeypatch.delenv("SELFENS_PL_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    capsys.readouterr()
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def one_line(code: int, err: str) -> str:
    assert code == 2, (code, err[-3000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR), err
    return lines[0][len(ERROR):]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else {}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("failed-start")
    demo = Path(demo_path()).read_text().splitlines()
    rows = [json.loads(line) for line in demo[:4]]
    rows[2]["answers"] = []
    (tmp / "no_answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "broken.jsonl").write_text(demo[0] + "\n" + demo[1][:40] + "\n")
    (tmp / "a_file").write_text("not a directory\n")
    # a chooser file fit with another model: refused for this one
    other = Chooser([0.0] * len(FEATURES), 0.0, [0.0] * len(FEATURES), [1.0] * len(FEATURES), FEATURES,
                    fit_with=FitModel("other-org/other-model", "other-org/other-model"))
    other.save(tmp / "other_model_chooser.json")
    return tmp


@pytest.fixture
def avg_run(inputs, tiny_model_dir, tmp_path, capsys, monkeypatch):
    """A folder holding a finished ``avg`` run of the demo config (tiny model, 4 questions); ``(base args, folder,
    its files)``."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    base = ["predict", "--config", str(DEMO), "--model.model", str(tiny_model_dir), "--model.max_new_tokens", "4",
            "--output_dir", str(out)]
    code, err = run_main(capsys, monkeypatch, *base, "--data.limit", "4")
    assert code == 0, err[-3000:]
    files = snapshot(out)
    assert set(files) == {"config.yaml", PREDICTIONS, SUMMARY}
    assert {r["method"] for r in read_jsonl(out / PREDICTIONS)} == {"avg"}
    return base, out, files


MAX = ["--model.head.init_args.method", "max"]
RERANK = ["--model.head", "selfens_pl.heads.RerankHead", "--model.head.init_args.rule", "learned"]

#: name -> (arguments after the base ones, what the one line says); every case leaves the avg run as it was
FAILED_STARTS = {
    # the sequence, step 1: a bad flag with --resume false replaced nothing before
    "limit_0": (lambda f: [*MAX, "--resume", "false", "--data.limit", "0"], "--data.limit must be >= 1, got 0"),
    # step 2: a resumed run with another head and limit is refused (it reported max over avg records)
    "other_head_and_limit": (lambda f: [*MAX, "--data.limit", "3", "--resume", "true"],
                             "holds predictions made with other settings (--model.head.init_args.method, "
                             "--data.limit differ from its config.yaml): pass --resume false"),
    "other_limit": (lambda f: ["--data.limit", "3", "--resume", "true"], "(--data.limit differ from its config"),
    "other_start": (lambda f: ["--data.limit", "4", "--data.start", "1", "--resume", "true"],
                    "(--data.start differ from its config"),
    "batch_size_0": (lambda f: [*MAX, "--resume", "false", "--data.batch_size", "0"],
                     "--data.batch_size must be a whole number >= 1, got 0"),
    "num_paraphrases_0": (lambda f: [*MAX, "--resume", "false", "--data.num_paraphrases", "0"],
                          "--data.num_paraphrases must be a whole number >= 1, got 0"),
    "no_answers": (lambda f: [*MAX, "--resume", "false", "--data.path", str(f / "no_answers.jsonl")],
                   "has no answers to score against (give answers, or run with --model.score=false)"),
    "prompt_too_long": (lambda f: [*MAX, "--resume", "false", "--model.max_new_tokens", "2040"],
                        "+ --model.max_new_tokens=2040 exceeds the model's context window of 2048 tokens"),
    "broken_file": (lambda f: [*MAX, "--resume", "false", "--data.path", str(f / "broken.jsonl")],
                    "broken.jsonl: line 2: invalid JSON"),
    "missing_chooser": (lambda f: [*RERANK, "--model.head.init_args.chooser", str(f / "nowhere.json"),
                                   "--resume", "false"], "cannot read the chooser file (No such file or directory)"),
    "chooser_of_another_model": (lambda f: [*RERANK, "--model.head.init_args.chooser",
                                            str(f / "other_model_chooser.json"), "--resume", "false"],
                                 "was fit with the model 'other-org/other-model'"),
    "model_path": (lambda f: [*MAX, "--resume", "false", "--model.model", str(f / "no_model_here")],
                   "is neither a known alias"),
    "checkpoint": (lambda f: [*MAX, "--resume", "false", "--ckpt_path", str(f / "none.ckpt")],
                   "none.ckpt: no such file"),
}


@pytest.mark.parametrize("case", FAILED_STARTS)
def test_a_failed_start_leaves_the_earlier_run_untouched(case, inputs, avg_run, capsys, monkeypatch):
    base, out, files = avg_run
    extra, expected = FAILED_STARTS[case]
    message = one_line(*run_main(capsys, monkeypatch, *base, *extra(inputs)))
    assert expected in message, message
    assert snapshot(out) == files  # config.yaml, predictions and summary as they were; no part file


def test_the_mixing_sequence_ends_in_an_error_or_a_fresh_run_never_in_max_over_avg(avg_run, capsys, monkeypatch):
    base, out, files = avg_run
    one_line(*run_main(capsys, monkeypatch, *base, *MAX, "--resume", "false", "--data.limit", "0"))
    one_line(*run_main(capsys, monkeypatch, *base, *MAX, "--data.limit", "3", "--resume", "true"))
    assert snapshot(out) == files
    code, err = run_main(capsys, monkeypatch, *base, *MAX, "--data.limit", "3", "--resume", "false")
    assert code == 0, err[-3000:]
    summary = json.loads((out / SUMMARY).read_text())
    records = read_jsonl(out / PREDICTIONS)
    assert (summary["method"], summary["n"], summary["resumed"]) == ("max", 3, 0)
    assert {r["method"] for r in records} == {"max"} and len(records) == 3
    assert "method: max" in (out / "config.yaml").read_text()


def test_a_run_with_the_same_settings_resumes(avg_run, capsys, monkeypatch):
    """The refusals above are of other settings only: the same command with --resume true reuses every id."""
    base, out, files = avg_run
    code, err = run_main(capsys, monkeypatch, *base, "--data.limit", "4", "--resume", "true")
    assert code == 0, err[-3000:]
    assert json.loads((out / SUMMARY).read_text())["resumed"] == 4
    assert (out / PREDICTIONS).read_bytes() == files[PREDICTIONS]


# -- the hub, offline -----------------------------------------------------------------------------------------------
def hub_env(cache: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(cache)}
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "SELFENS_PL_DEBUG"):
        env.pop(key, None)
    return env


def test_an_unreachable_hub_is_one_line_at_once_and_a_cached_model_loads(tmp_path):
    """The hub cannot be reached (HF_ENDPOINT at a closed port): a model not in the cache is one line naming the
    flag, with none of huggingface_hub's retry lines and none of its waiting; a model in the cache loads from it."""
    cache = tmp_path / "hub-cache"
    snapshot_dir = cache / "models--tinyorg--tiny" / "snapshots" / "0123abcd"
    build_tiny_model(snapshot_dir)
    (cache / "models--tinyorg--tiny" / "refs").mkdir()
    (cache / "models--tinyorg--tiny" / "refs" / "main").write_text("0123abcd")
    predict = [sys.executable, "-m", "selfens_pl", "predict", "--config", str(DEMO), "--data.limit", "2",
               "--model.max_new_tokens", "4"]
    started = time.monotonic()
    missing = subprocess.run([*predict, "--model.model", "someorg/notcached", "--output_dir", str(tmp_path / "o1")],
                             cwd=tmp_path, env=hub_env(cache), capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - started
    assert one_line(missing.returncode, missing.stderr) == (
        f"--model.model=someorg/notcached: cannot reach the hub (http://127.0.0.1:9: offline?) and no local copy in "
        f"the cache ({cache})")
    assert "Retry" not in missing.stdout + missing.stderr
    assert seconds < 60, seconds  # huggingface_hub's retries alone took 46 s
    assert not (tmp_path / "o1").exists()
    cached = subprocess.run([*predict, "--model.model", "tinyorg/tiny", "--output_dir", str(tmp_path / "o2")],
                            cwd=tmp_path, env=hub_env(cache), capture_output=True, text=True, timeout=300)
    assert cached.returncode == 0, cached.stderr[-3000:]
    assert "cannot be reached: loading tinyorg/tiny from the local cache" in cached.stdout
    assert "Retry" not in cached.stdout + cached.stderr
    assert json.loads((tmp_path / "o2" / SUMMARY).read_text())["n"] == 2


# -- fit, mask, sweep, chooser, paraphrase --------------------------------------------------------------------------
def test_fit_data_too_small_for_its_validation_interval(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = one_line(*run_main(capsys, monkeypatch, "fit", "--config", str(ROOT / "configs/finetune_avg_webqa.yaml"),
                                 "--model.model", str(tiny_model_dir), "--data.limit", "4"))
    assert message.startswith("--trainer.val_check_interval=10: validates every 10 training batches, but an epoch "
                              "has 1 (4 training groups, --data.batch_size 4)"), message
    assert not (tmp_path / "outputs").exists()  # no checkpoint folder, nothing trained


def test_mask_prints_no_lightning_warning(tiny_model_dir, tmp_path, capsys, monkeypatch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, err = run_main(capsys, monkeypatch, "mask", "--config", str(DEMO), "--model.model", str(tiny_model_dir),
                             "--out", str(tmp_path / "mask.png"))
    assert code == 0 and err == "", err
    assert not [w for w in caught if "args parameter is intended" in str(w.message)], [str(w.message) for w in caught]
    assert (tmp_path / "mask.png").is_file()


@pytest.mark.parametrize("verb, extra, expected", [
    ("sweep", ["--chooser_folds", "1"], "--chooser_folds must be >= 2, got 1"),
    ("chooser", ["--out", "a_file/chooser.json"], "--out=a_file/chooser.json: cannot write it (a_file is a file, "
                                                  "not a directory)"),
    ("chooser", ["--k", "0"], "--k must be >= 1, got 0"),
    ("sweep", ["--output_dir", "a_file/out"], "--output_dir=a_file/out: cannot make the directory (a_file is a file)"),
])
def test_verb_flags_are_refused_before_the_data_and_the_model(verb, extra, expected, tmp_path, capsys, monkeypatch):
    """The data path does not exist and the model is not there: the flag's error comes first, so it was checked
    before either was read (and long before the model pass; no facts.jsonl)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x\n")
    message = one_line(*run_main(capsys, monkeypatch, verb, "--model.model", str(tmp_path / "no_model"),
                                 "--data.path", str(tmp_path / "no_data.jsonl"), "--trainer.accelerator", "cpu",
                                 "--output_dir", str(tmp_path / "out"), *extra))
    assert message == expected
    assert not (tmp_path / "out").exists()


def test_paraphrase_writes_no_settings_file_when_its_model_fails_to_load(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question": "who wrote hamlet?", "answers": ["Shakespeare"]}) + "\n")
    output = tmp_path / "p" / "paraphrases.jsonl"
    message = one_line(*run_main(capsys, monkeypatch, "paraphrase", "--model.model", str(tmp_path / "no_model"),
                                 "--data.path", str(questions), "--trainer.accelerator", "cpu",
                                 "--output", str(output)))
    assert "is neither a known alias" in message
    assert not output.with_name(output.name + ".settings.json").exists() and not output.exists()
