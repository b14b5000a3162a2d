"""The command line as users meet it (``python -m selfens_pl ...``).

* A user error prints one line on stderr, ``selfens_pl: error: <message>`` naming the record, file or flag, and exits
  with status 2; a bug keeps its traceback; ``SELFENS_PL_DEBUG=1`` shows the traceback of a user error too. The
  kinds of user error run as real subprocesses, started together (each spends seconds importing).
* Every verb goes through the same handling (in-process: :func:`selfens_pl.cli.main`).
* A quiet start: no Lightning tip, no known deprecation warning, one seed line.
* The parse errors' one-line summaries. The rule itself (:mod:`selfens_pl.errors`): tests/test_error_rule.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import build_tiny_model
from test_ddp import write_config, write_groups

from selfens_pl import errors
from selfens_pl.cli import main
from selfens_pl.commands.report import ORACLE_LABEL, load_run
from selfens_pl.data.datamodule import demo_path
from selfens_pl.lit.cli import build_cli
from selfens_pl.lit.writer import PREDICTIONS, SUMMARY

ROOT = Path(__file__).resolve().parents[1]
ERROR = "selfens_pl: error: "


def cli_env(**extra: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    if "SELFENS_PL_DEBUG" not in extra:
        env.pop("SELFENS_PL_DEBUG", None)
    return env


def write_inputs(tmp: Path, model_dir: Path) -> dict[str, Path]:
    demo = Path(demo_path()).read_text().splitlines()
    files = {"good": tmp / "good.jsonl", "broken": tmp / "broken.jsonl", "empty": tmp / "empty.jsonl",
             "missing": tmp / "nowhere" / "groups.jsonl", "a_file": tmp / "a_file", "config": tmp / "config.yaml",
             "bad_config": tmp / "bad_key.yaml"}
    files["good"].write_text("\n".join(demo[:3]) + "\n")
    records = [json.loads(line) for line in demo[:3]]
    for i in (0, 2):  # the second record alone has no confidences for a weighted rule (met while answering it)
        records[i]["confidences"] = [1.0] * len(records[i]["paraphrases"])
    files["unweighted_second"] = tmp / "unweighted_second.jsonl"
    files["unweighted_second"].write_text("".join(json.dumps(r) + "\n" for r in records))
    files["broken"].write_text(demo[0] + "\n" + demo[1][:40] + "\n" + demo[2] + "\n")  # line 2 cut short
    files["empty"].write_text("")
    files["a_file"].write_text("not a directory\n")
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False},
        "model": {"model": str(model_dir), "max_new_tokens": 4, "stop": None},
        "data": {"path": str(files["good"]), "few_shot": [], "batch_size": 2},
    }
    files["config"].write_text(yaml.safe_dump(config))
    files["bad_config"].write_text(yaml.safe_dump({**config, "data": {**config["data"], "bogus_key": 3}}))
    return files


# A bug: a ValueError raised inside a library (json) that the package did not expect. The same type as a user error,
# raised elsewhere: it must keep its traceback.
BUG = ("import json, sys\n"
       "import selfens_pl.commands.report as report\n"
       "from selfens_pl.cli import main\n"
       "report.load_run = lambda directory: json.loads('{')\n"
       "main(['report', 'anywhere'])\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """Every subprocess of this module, started together; ``{name: (status, stdout, stderr)}``."""
    tmp = tmp_path_factory.mktemp("cli")
    files = write_inputs(tmp, tiny_model_dir)
    short = build_tiny_model(tmp / "tiny-64", max_position_embeddings=64)
    predict = [sys.executable, "-m", "selfens_pl", "predict", "--config", str(files["config"])]
    cases = {
        "broken_line": (predict + ["--data.path", str(files["broken"]), "--output_dir", str(tmp / "o1")], {}),
        "empty_file": (predict + ["--data.path", str(files["empty"]), "--output_dir", str(tmp / "o2")], {}),
        "missing_path": (predict + ["--data.path", str(files["missing"]), "--output_dir", str(tmp / "o3")], {}),
        "context_window": (predict + ["--model.model", str(short), "--output_dir", str(tmp / "o4")], {}),
        "output_dir": (predict + ["--output_dir", str(files["a_file"] / "out")], {}),
        "bad_flag": (predict + ["--data.bogus", "1"], {}),
        "config_key": ([sys.executable, "-m", "selfens_pl", "predict", "--config", str(files["bad_config"])], {}),
        "debug": (predict + ["--data.path", str(files["broken"]), "--output_dir", str(tmp / "o5")],
                  {"SELFENS_PL_DEBUG": "1"}),
        "bug": ([sys.executable, "-c", BUG], {}),
        "ok": (predict + ["--output_dir", str(tmp / "ok")], {}),
        # two processes; only rank 1's share (group 1 of 3) lacks the confidences its weighted rule needs
        "ddp_rank1": (predict + ["--data.path", str(files["unweighted_second"]), "--data.batch_size", "1",
                                 "--model.head", "selfens_pl.heads.LogitFusion",
                                 "--model.head.init_args.method", "weighted_avg",
                                 "--output_dir", str(tmp / "ddp"), "--trainer.strategy", "ddp",
                                 "--trainer.devices", "2"], {}),
    }
    procs = {name: subprocess.Popen(cmd, cwd=tmp, env=cli_env(**env), text=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE) for name, (cmd, env) in cases.items()}
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=400)
            results[name] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            proc.kill()
    results["files"] = files
    return results


def one_line_error(result) -> str:
    status, out, err = result
    assert status == 2, (status, err[-3000:])
    assert "Traceback" not in err + out, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR), lines[0]
    return lines[0][len(ERROR):]


def test_broken_jsonl_line(runs):
    assert one_line_error(runs["broken_line"]).startswith(f"{runs['files']['broken']}: line 2: invalid JSON")


def test_empty_file(runs):
    assert one_line_error(runs["empty_file"]) == f"{runs['files']['empty']}: no records"


def test_missing_path(runs):
    assert one_line_error(runs["missing_path"]) == f"no such file or directory: {runs['files']['missing']}"


def test_prompt_beyond_context_window(runs):
    first_id = json.loads(runs["files"]["good"].read_text().splitlines()[0])["id"]
    message = one_line_error(runs["context_window"])
    assert message.startswith(f"record '{first_id}': prompt of "), message
    assert message.endswith("exceeds the model's context window of 64 tokens"), message


def test_output_dir_that_cannot_be_made(runs):
    target = runs["files"]["a_file"] / "out"
    assert one_line_error(runs["output_dir"]) == (f"--output_dir={target}: cannot make the directory "
                                                  f"({target}: Not a directory)")


def test_bad_flag(runs):
    assert one_line_error(runs["bad_flag"]) == "unrecognized arguments: --data.bogus 1"


def test_unknown_config_key(runs):
    assert one_line_error(runs["config_key"]) == "Subcommand 'predict' does not accept option 'data.bogus_key'"


def test_error_in_another_ddp_process(runs):
    """Rank 1 fails alone: it reports its error, naming its rank; rank 0, whose collective then finds its peer gone,
    adds no traceback, stops and exits with rank 1's status (or is stopped by Lightning's process observer first)."""
    status, out, err = runs["ddp_rank1"]
    second = json.loads(runs["files"]["unweighted_second"].read_text().splitlines()[1])["id"]
    assert status in (2, -9), (status, err[-3000:])
    assert "Traceback" not in err, err
    [line] = err.splitlines()
    assert line.startswith(f"{ERROR}rank 1: record '{second}': method=weighted_avg needs one confidence per "
                           "paraphrase"), line


def test_debug_shows_the_traceback(runs):
    status, out, err = runs["debug"]
    assert status == 1, err[-3000:]
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith(f"selfens_pl.errors.UserError: {runs['files']['broken']}: line 2: invalid JSON")
    assert ERROR not in err


def test_a_bug_keeps_its_traceback(runs):
    status, out, err = runs["bug"]
    assert status == 1, err[-3000:]
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("json.decoder.JSONDecodeError: Expecting property name")
    assert ERROR not in err


def test_quiet_start(runs):
    status, out, err = runs["ok"]
    assert status == 0, err[-3000:]
    assert "Tip" not in out + err
    assert "deprecated" not in (out + err).lower()
    assert "Loading weights" not in err
    assert (out + err).count("Seed set to") == 1 and "No seed found" not in err
    assert err.strip() == "", err  # stderr: only warnings and errors, and there are none
    assert "predictions:" in out


# -- every verb, through the same main (in-process) ----------------------------------------------------------------
VERB_CASES = {
    "report": (lambda f: ["report", str(f["missing"].parent)], "no such output directory"),
    "ask": (lambda f: ["ask"], "the following arguments are required: question"),
    "paraphrase": (lambda f: ["paraphrase", "--bogus"], "unrecognized arguments: --bogus"),
    "confidence": (lambda f: ["confidence", "--data.path", str(f["broken"]), "--data.few_shot", "[]"],
                   "line 2: invalid JSON"),
    "mask": (lambda f: ["mask", "--config", str(f["config"]), "--data.path", str(f["empty"])], "no records"),
    "mask_flag": (lambda f: ["mask", "--index", "x"], "argument --index: invalid int value: 'x'"),
    "predict_choice": (lambda f: ["predict", "--config", str(f["config"]), "--model.head",
                                  "selfens_pl.heads.LogitFusion", "--model.head.init_args.method", "x"],
                       ("--model.head.init_args.method='x': choose one of avg, max, weighted_avg, weighted_max, "
                        "prob_avg, entropy_weighted")),
    "predict_type": (lambda f: ["predict", "--config", str(f["config"]), "--data.limit", "abc"],
                     "--data.limit='abc': expected an int (or null)"),
    # Lightning's accelerator connector checks the Trainer's flags (a TypeError from its device parser)
    "predict_devices": (lambda f: ["predict", "--config", str(f["config"]), "--trainer.devices", "x"],
                        "`devices` selected with `CPUAccelerator` should be an int > 0."),
}


@pytest.mark.parametrize("case", VERB_CASES)
def test_every_verb_reports_one_line(case, tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.delenv("SELFENS_PL_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    monkeypatch.chdir(tmp_path)
    files = write_inputs(tmp_path, tiny_model_dir)
    argv, expected = VERB_CASES[case]
    with pytest.raises(SystemExit) as exit_info:
        main(argv(files))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(ERROR) and expected in err, err


# -- parse errors, on one line ---------------------------------------------------------------------------------
def test_parse_error_summaries():
    nested = ('Parser key "model.head":\n  Does not validate against any of the Union subtypes\n'
              "  Subtypes: [<class 'selfens_pl.heads.base.FusionHead'>, <class 'NoneType'>]\n  Errors:\n"
              "    - Problem with given class_path 'selfens_pl.heads.LogitFusion':\n"
              "        Option 'bogus' is not accepted\n    - Expected a <class 'NoneType'>\n"
              "  Given value type: <class 'jsonargparse._util.NestedArg'>\n"
              "  Given value: NestedArg(key='bogus', val='1')")
    assert errors.summarize_parse_error(nested) == "--model.head.init_args.bogus: no such option"
    assert errors.summarize_parse_error('Parser key "resume":\n  Expected a <class \'bool\'>. Got value: maybe') == \
        "--resume='maybe': expected a bool"
    assert errors.summarize_parse_error("Problems parsing config: bad\n  line 2", ["--config", "c.yaml"]) == \
        "--config c.yaml: Problems parsing config: bad line 2"
    assert errors.summarize_parse_error("unrecognized arguments: --x 1") == "unrecognized arguments: --x 1"


# -- what predict prints at the end ---------------------------------------------------------------------------------
def predict_in_process(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    capsys.readouterr()
    build_cli(["predict", *args])
    return capsys.readouterr().out


def table_row(out: str, label: str) -> list[str]:
    [line] = [line for line in out.splitlines() if line.startswith(label + " ")]
    return line[len(label):].split()


def test_per_prompt_table_shows_each_paraphrase_and_the_oracle(tmp_path, tiny_model_dir, monkeypatch, capsys,
                                                               one_thread):
    write_groups(tmp_path / "groups.jsonl", 6)
    head = {"class_path": "selfens_pl.heads.PerPromptHead"}
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, tmp_path / "groups.jsonl", head)
    out = predict_in_process(monkeypatch, capsys, "--config", str(config), "--output_dir", str(tmp_path / "out"))
    run = load_run(tmp_path / "out")  # what `report` computes from the files
    assert len(run.per_paraphrase) == 3 and run.oracle is not None
    assert any(acc > 0 for acc in run.per_paraphrase.values())  # the figures below are not all zero
    for index, acc in run.per_paraphrase.items():
        assert table_row(out, f"  paraphrase {index}") == [str(run.per_paraphrase_n[index]), f"{100 * acc:.1f}%"]
    assert table_row(out, f"  {ORACLE_LABEL}") == [str(run.oracle_n), f"{100 * run.oracle:.1f}%"]
    summary = json.loads((tmp_path / "out" / SUMMARY).read_text())
    assert summary["accuracy_by_paraphrase"] == {str(i): acc for i, acc in run.per_paraphrase.items()}
    assert summary["oracle_accuracy"] == run.oracle


def test_resumed_run_reports_its_own_speed(tmp_path, tiny_model_dir, monkeypatch, capsys, one_thread):
    ids = write_groups(tmp_path / "groups.jsonl", 5)
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, tmp_path / "groups.jsonl")
    args = ["--config", str(config), "--output_dir", str(tmp_path / "out")]
    predict_in_process(monkeypatch, capsys, *args)
    # what a run stopped after its first batch (2 groups) leaves: that batch in its part file, no merge, no summary
    # (a run limited to 2 cannot be resumed without the limit: another --data.limit is refused)
    first = [r for r in map(json.loads, (tmp_path / "out" / PREDICTIONS).read_text().splitlines()) if r["id"] in ids[:2]]
    (tmp_path / "out" / "predictions.rank0.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in first) + json.dumps({"_batch": 0, "_records": len(first)}) + "\n")
    (tmp_path / "out" / PREDICTIONS).unlink()
    (tmp_path / "out" / SUMMARY).unlink()

    out = predict_in_process(monkeypatch, capsys, *args)  # resumes: answers the other 3
    summary = json.loads((tmp_path / "out" / SUMMARY).read_text())
    assert (summary["n"], summary["resumed"], summary["run"]["n"]) == (5, 2, 3)
    # seconds is rounded to 1 ms (a fast run takes a few): the speed lies within what that rounding allows
    seconds = summary["seconds"]
    assert 3 / (seconds + 5e-4) * 0.999 <= summary["questions_per_s"] <= 3 / max(seconds - 5e-4, 1e-6) * 1.001
    assert table_row(out, "origin")[-1] == f"{summary['questions_per_s']:.2f}"
    assert "resumed: 2 of 5 ids were already answered" in out and "covers the 3 this run answered" in out
    records = [json.loads(line) for line in (tmp_path / "out" / PREDICTIONS).read_text().splitlines()]
    assert summary["accuracy"] == sum(r["correct"] for r in records) / 5  # over all ids

    out = predict_in_process(monkeypatch, capsys, *args)  # nothing left: no speed to report
    again = json.loads((tmp_path / "out" / SUMMARY).read_text())
    assert (again["n"], again["run"]["n"], again["questions_per_s"]) == (5, 0, None)
    assert again["accuracy"] == summary["accuracy"]
    assert table_row(out, "origin")[-1] == "-"
    assert "this run answered none" in out
