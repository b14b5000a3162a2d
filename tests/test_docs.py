"""The guides stay true: every file of the repository that ``docs/*.md`` and the studies' READMEs name exists
(``selfens_pl/...``, ``configs/...``, ``scripts/...``, ``studies/...``, ``docs/...``, ``tests/...``), every image
they show exists, and every ``python -m selfens_pl ...`` command in their code blocks is a known verb whose
arguments its parser reads (tools with a parser of their own; ``predict`` / ``fit`` through the LightningCLI,
without loading a model)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
from lightning.pytorch.cli import LightningCLI

from selfens_pl.cli import TOOLS
from test_readme import expand  # the README's shorthand for a family of files, {a,b}_x.yaml

ROOT = Path(__file__).resolve().parents[1]
#: The hand-written guides: every markdown file of docs/ and every study's README (its generated reports aside).
GUIDES = sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "studies").glob("**/README.md"))
PATH = re.compile(r"(?<![\w./-])((?:selfens_pl|configs|scripts|studies|docs|tests)/[\w{},./*-]*\w)")


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def is_guide(path: Path) -> bool:
    """A generated report (``sweep.md``, ``report.md``) starts with the command's own title; a guide does not."""
    return not re.match(r"# selfens_pl (sweep|report)\n", text(path))


GUIDES = [p for p in GUIDES if is_guide(p)]


def test_the_guides_are_there():
    names = {p.name for p in GUIDES if p.parent.name == "docs"}
    assert {"README.md", "methods.md", "data.md", "scaling.md", "fine-tuning.md", "sweep.md", "errors.md",
            "api.md"} <= names, sorted(names)
    long = [f"{p.relative_to(ROOT)}: {len(text(p).splitlines())} lines" for p in GUIDES
            if p.parent.name == "docs" and len(text(p).splitlines()) > 400]
    assert not long, f"a guide should stay under ~400 lines: {long}"


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_file_exists(guide):
    paths = sorted({p for raw in PATH.findall(text(guide)) for p in expand(raw)})
    missing = [p for p in paths if not (any(ROOT.glob(p)) if "*" in p else (ROOT / p).exists())]
    assert not missing, f"{guide.relative_to(ROOT)} names files that do not exist: {missing}"


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_image_exists(guide):
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text(guide))
    missing = [i for i in images if not (guide.parent / i).exists()]
    assert not missing, f"{guide.relative_to(ROOT)} shows images that do not exist: {missing}"


def commands() -> list[tuple[str, list[str]]]:
    """Every ``python -m selfens_pl ...`` command of the guides' code blocks (continued lines joined)."""
    out = []
    for guide in GUIDES:
        blocks = re.findall(r"```(?:bash)?\n(.*?)```", text(guide), flags=re.S)
        for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
            if line.startswith("$ "):  # a transcript of an error (docs/errors.md), not a command to run
                continue
            for match in re.finditer(r"python -m selfens_pl ([^#\n]*)", line):
                out.append((str(guide.relative_to(ROOT)), shlex.split(match.group(1))))
    return out


COMMANDS = commands()
#: Files a guide's earlier command writes (``chooser --out my_chooser.json``), as a shipped file of the same kind.
WRITTEN_EARLIER = {"my_chooser.json": "configs/chooser_webqa_demos.json"}


def test_every_command_is_a_known_verb():
    verbs = {args[0] for _, args in COMMANDS}
    assert {"predict", "sweep", "chooser", "paraphrase"} <= verbs
    unknown = verbs - set(TOOLS) - set(LightningCLI.subcommands())
    assert not unknown, f"the guides run verbs the command line does not have: {sorted(unknown)}"


def tool_module(verb: str):
    import importlib

    return importlib.import_module(TOOLS[verb].split(":")[0])


@pytest.mark.parametrize("where,args", [(w, a) for w, a in COMMANDS if a[0] in TOOLS
                                        and hasattr(tool_module(a[0]), "build_parser")],
                         ids=lambda x: x if isinstance(x, str) else " ".join(x[:3]))
def test_tool_commands_parse(where, args, monkeypatch):
    """``sweep`` / ``chooser`` / ``paraphrase`` / ``confidence``: their own parser reads the arguments (no model)."""
    monkeypatch.chdir(ROOT)
    tool_module(args[0]).build_parser().parse_args(args[1:])


@pytest.mark.parametrize("where,args", [(w, a) for w, a in COMMANDS if a[0] in ("predict", "fit")],
                         ids=lambda x: x if isinstance(x, str) else " ".join(x[:3]))
def test_lightning_commands_parse(where, args, tiny_model_dir, monkeypatch):
    """``predict`` / ``fit``: the LightningCLI parses and instantiates them (the model is never loaded)."""
    from selfens_pl.lit.cli import build_cli

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    args = [WRITTEN_EARLIER.get(a, a) for a in args]
    if "--ckpt_path" in args:  # the subcommand's own argument: the parser without subcommands (run=False) lacks it
        at = args.index("--ckpt_path")
        args = args[:at] + args[at + 2:]
    build_cli([*args, "--model.model", str(tiny_model_dir), "--trainer.accelerator", "cpu"], run=False)
