"""Every shipped config parses and instantiates (head class, data module) without loading a model; the CLI's
``--help`` and ``--print_config`` work as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from selfens_pl.data.datamodule import ParaphraseDataModule
from selfens_pl.lit.cli import build_cli

ROOT = Path(__file__).resolve().parents[1]
ALL_CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TOOLS = ("paraphrase_", "confidence_", "sweep_", "chooser_")
#: The studies' configs (studies/<study>/*.yaml): every one a tool's (sweep, chooser, paraphrase)
STUDY_CONFIGS = sorted((ROOT / "studies").glob("*/*.yaml"))
TOOL_CONFIGS = [p for p in ALL_CONFIGS if p.stem.startswith(TOOLS)] + STUDY_CONFIGS
CONFIGS = [p for p in ALL_CONFIGS if p not in TOOL_CONFIGS]  # LightningCLI configs (predict, or fit: finetune_*)


def test_configs_exist():
    names = {p.stem for p in CONFIGS}
    expected = {f"{m}_{t}" for m in ("origin", "per_prompt", "avg", "max", "weighted_avg", "weighted_max", "flex")
                for t in ("webqa", "myriadlama")}
    expected |= {"demo", "auto_avg_myriadlama", "flex_shared_prefix_webqa", "flex_seed_webqa",
                 "llama3b_avg_webqa_gpu"}
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_instantiates(path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs use paths relative to the repository root
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])  # LightningCLI warns when pytest's own argv is present
    config = yaml.safe_load(path.read_text())
    subcommand = "fit" if path.stem.startswith("finetune_") else "predict"
    args = [subcommand, "--config", str(path), "--model.model", str(tiny_model_dir)]
    if config.get("trainer", {}).get("accelerator") == "gpu":
        args += ["--trainer.accelerator=cpu", "--trainer.precision=32-true"]
    cli = build_cli(args, run=False)
    head_config = (config.get("model") or {}).get("head") or {"class_path": "selfens_pl.heads.OriginHead"}
    head = head_config["class_path"]
    module, _, name = head.rpartition(".")
    assert type(cli.model.head).__name__ == name
    assert f"{type(cli.model.head).__module__}.{name}".startswith(module)
    init_args = head_config.get("init_args") or {}
    for key, value in init_args.items():
        attr = "fusion" if (name, key) == ("LogitFusion", "method") else key
        if isinstance(value, dict) and "class_path" in value:  # a nested head (a cascade's ensemble)
            assert type(getattr(cli.model.head, attr)).__name__ == value["class_path"].rpartition(".")[2], key
            continue
        assert getattr(cli.model.head, attr) == value, key
    assert isinstance(cli.datamodule, ParaphraseDataModule)
    assert cli.datamodule.groups is None  # setup (data loading) has not run
    assert cli.model.lm is None  # instantiation never calls configure_model
    assert cli.config["output_dir"] == f"outputs/{path.stem}"


def test_study_configs_are_tool_configs():
    """A study's config is run by its tool (its name says which); configs/ keeps the user presets."""
    assert STUDY_CONFIGS, "studies/*/ should hold the studies' configs"
    other = [str(p.relative_to(ROOT)) for p in STUDY_CONFIGS if not p.stem.startswith(TOOLS)]
    assert not other, f"study configs named for no tool: {other}"


@pytest.mark.parametrize("path", TOOL_CONFIGS, ids=[str(p.relative_to(ROOT)) for p in TOOL_CONFIGS])
def test_tool_config_parses(path, monkeypatch):
    """``paraphrase_*`` / ``confidence_*`` / ``sweep_*`` / ``chooser_*`` configs parse with their own command's parser (no model loaded)."""
    import importlib

    monkeypatch.chdir(ROOT)
    tool = importlib.import_module(f"selfens_pl.commands.{path.stem.split('_')[0]}")
    config = tool.build_parser().parse_args(["--config", str(path)])
    assert config.model.model == "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def cli_runs() -> dict[str, subprocess.CompletedProcess]:
    """``predict --help`` and ``predict --print_config`` run side by side (each pays ~5 s of imports)."""
    commands = {"help": ["predict", "--help"],
                "print_config": ["predict", "--config", "configs/demo.yaml", "--print_config"]}
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = {name: subprocess.Popen([sys.executable, "-m", "selfens_pl", *args], cwd=ROOT, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, args in commands.items()}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def test_predict_help(cli_runs):
    proc = cli_runs["help"]
    assert proc.returncode == 0, proc.stderr
    assert "--model.head" in proc.stdout


def test_print_config(cli_runs):
    proc = cli_runs["print_config"]
    assert proc.returncode == 0, proc.stderr
    assert "class_path" in proc.stdout
    assert "selfens_pl.heads.LogitFusion" in proc.stdout
