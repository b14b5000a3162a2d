"""Every command of the README and its Python example run, as a new user would type them, with the embedded model
and small limits (a few questions each), in the README's order: later commands read what earlier ones wrote
(``paraphrased.jsonl``, ``my_chooser.json``, the output folders)."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SHARED = ROOT.parent / "shared"

#: Flags added to each verb so that the command runs in seconds (the command as written is otherwise unchanged).
SMALL = {
    "predict": ["--data.limit", "3"],
    "ask": ["--model.max_new_tokens", "6", "--num_paraphrases", "2"],
    "paraphrase": ["--data.limit", "3", "--num_paraphrases", "2"],
    "sweep": ["--data.limit", "6"],
    "chooser": ["--chooser_folds", "2"],
    "fit": ["--trainer.max_steps", "1", "--data.limit", "4"],
    "report": [],
    "mask": [],
}


def readme_commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    out = []
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        match = re.search(r"python -m selfens_pl ([^#\n]*)", line)
        if match:
            out.append(shlex.split(match.group(1)))
    return out


def python_example() -> str:
    [block] = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    return block


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A user's scratch folder: the presets and shared data where the configs look for them, a five-question
    ``questions.jsonl`` (ids and one user paraphrase) and a ``train.jsonl`` of answered questions to fit on."""
    base = tmp_path_factory.mktemp("user")
    work = base / "work"
    work.mkdir()
    (work / "configs").symlink_to(ROOT / "configs")
    if SHARED.exists():
        (base / "shared").symlink_to(SHARED)
    demo = [json.loads(line) for line in (ROOT / "selfens_pl/resources/demo_webqa.jsonl").read_text().splitlines()]
    with (work / "questions.jsonl").open("w") as fh:
        for i, rec in enumerate(demo[:5]):
            line = {"id": f"mine-{i}", "question": rec["paraphrases"][0], "answers": rec["answers"]}
            if i % 2:
                line["paraphrases"] = rec["paraphrases"][1:3]
            fh.write(json.dumps(line) + "\n")
    train = (ROOT / "selfens_pl/resources/webquestions_train.jsonl").read_text().splitlines()[2000:2016]
    (work / "train.jsonl").write_text("".join(
        json.dumps({"question": r["question"], "answers": r["answers"]}) + "\n" for r in map(json.loads, train)))
    return work


def run(args: list[str], cwd: Path, capsys, monkeypatch) -> tuple[int, str, str]:
    """``python -m selfens_pl <args>`` in ``cwd``, in this process (the entry point's ``main``, exit status and all:
    a user error is ``SystemExit(2)``); saves each command the interpreter's start-up and torch's import."""
    from selfens_pl.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["selfens_pl", *args])
    capsys.readouterr()
    try:
        main(list(args))
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return status, out.out, out.err


def test_the_readme_has_commands_for_every_step():
    verbs = [args[0] for args in readme_commands()]
    assert {"predict", "ask", "paraphrase", "chooser", "report", "mask"} <= set(verbs)
    assert len(README.splitlines()) <= 300


def test_every_readme_command_runs(work, capsys, monkeypatch):
    for args in readme_commands():
        verb = args[0]
        small = [flag for i, flag in enumerate(SMALL[verb]) if not (i % 2 == 0 and flag in args)
                 and not (i % 2 == 1 and SMALL[verb][i - 1] in args)]
        status, out, err = run([*args, *small], work, capsys, monkeypatch)
        if "cuda" in args:  # a GPU command on this CPU machine: one line naming the flag, before any model loads
            assert status == 2 and err.strip().count("\n") == 0, err[-2000:]
            assert "cuda" in err.lower() or "gpu" in err.lower(), err
            continue
        assert status == 0, f"{' '.join(args)}\n{out[-3000:]}\n{err[-3000:]}"
        if verb == "predict" and "questions.jsonl" in args:  # the user's ids are kept
            out_dir = Path(work / yaml_output_dir(args, work))
            ids = {json.loads(line)["id"] for line in (out_dir / "predictions.jsonl").read_text().splitlines()}
            assert ids <= {f"mine-{i}" for i in range(5)} and ids, ids


def yaml_output_dir(args: list[str], work: Path) -> str:
    import yaml

    if "--output_dir" in args:
        return args[args.index("--output_dir") + 1]
    config = yaml.safe_load((work / args[args.index("--config") + 1]).read_text())
    return config["output_dir"]


def test_the_python_example_runs(work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    capsys.readouterr()
    exec(compile(python_example(), "README.md", "exec"), {"__name__": "__readme__"})
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("avg", "vote", "rerank"))]
    assert len(lines) == 3, lines
