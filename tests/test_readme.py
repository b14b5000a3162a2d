"""The README stays true: every file, config, script, image and command it names exists, every shipped config is
in its table, and every ``--config`` command parses with the parser of its verb."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from lightning.pytorch.cli import LightningCLI

from selfens_pl.cli import TOOLS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def expand(name: str) -> list[str]:
    """``{a,b}_x.yaml`` -> ``a_x.yaml``, ``b_x.yaml`` (the README's shorthand for a family of files)."""
    match = re.search(r"\{([^{}]+)\}", name)
    if not match:
        return [name]
    return [out for part in match.group(1).split(",")
            for out in expand(name[:match.start()] + part + name[match.end():])]


def named(pattern: str) -> list[str]:
    return sorted({path for raw in re.findall(pattern, README) for path in expand(raw)})


def test_every_named_file_exists():
    paths = named(r"((?:selfens_pl|scripts|configs|docs|tests|studies)/[\w{},./*-]*\w)")
    assert len(paths) > 8, "the README should name the package's files"
    missing = [p for p in paths if not (any(ROOT.glob(p)) if "*" in p else (ROOT / p).exists())]
    assert not missing, f"the README names files that do not exist: {missing}"


def test_every_config_is_in_the_table():
    rows = "\n".join(line for line in README.splitlines() if line.startswith("| `"))
    table = {p for raw in re.findall(r"`([\w{},]+\.yaml)`", rows) for p in expand(raw)}
    shipped = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert not table - shipped, f"the table lists configs that are not shipped: {sorted(table - shipped)}"
    assert not shipped - table, f"shipped configs the README's table does not list: {sorted(shipped - table)}"


def code_blocks(language: str) -> list[str]:
    """The README's fenced blocks of ``language``, fences paired in order (an opening fence names a language or
    none, the next fence closes it)."""
    blocks, current, lang = [], None, None
    for line in README.splitlines():
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                if lang == language:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def commands() -> list[list[str]]:
    """Every ``python -m selfens_pl ...`` command of the README's code blocks (continued lines joined)."""
    blocks = code_blocks("bash")
    lines = " ".join(blocks).replace("\\\n", " ").splitlines()
    out = []
    for line in lines:
        for match in re.finditer(r"python -m selfens_pl ([^#\n]*)", line):
            out.append(shlex.split(match.group(1)))
    return out


def test_every_command_is_a_known_verb():
    verbs = {args[0] for args in commands()}
    assert {"predict", "report", "chooser", "paraphrase", "ask", "mask"} <= verbs
    unknown = verbs - set(TOOLS) - set(LightningCLI.subcommands())
    assert not unknown, f"the README runs verbs the command line does not have: {sorted(unknown)}"


def tool_module(verb: str):
    import importlib

    return importlib.import_module(TOOLS[verb].split(":")[0])


# the tools with a parser of their own (``mask`` builds predict's: tests/test_mask.py runs it end to end)
@pytest.mark.parametrize("args", [a for a in commands() if "--config" in a and a[0] in TOOLS
                                  and hasattr(tool_module(a[0]), "build_parser")], ids=lambda a: " ".join(a[:3]))
def test_tool_commands_parse(args, monkeypatch):
    """``paraphrase`` / ``confidence`` / ``sweep`` with a config: their own parser reads it (no model run)."""
    monkeypatch.chdir(ROOT)
    tool_module(args[0]).build_parser().parse_args(args[1:])
