"""Multi-process predict: ``--trainer.strategy ddp --trainer.devices 2`` on the CPU (gloo) splits the groups across
the processes, nothing repeated or lost, and gives exactly the records and scores of a one-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from selfens_pl.data.datamodule import ParaphraseDataModule, ShardSampler, demo_path
from selfens_pl.lit.cli import build_cli
from selfens_pl.lit.preflight import check_strategy
from selfens_pl.lit.writer import PREDICTIONS, SUMMARY

N_GROUPS = 11  # odd: the two processes get 6 and 5 groups


def write_groups(path: Path, n: int) -> list[str]:
    """The first ``n`` demo groups; every other one also accepts words the tiny model tends to say, so that some
    answers are correct and the scores are not all zero."""
    recs = [json.loads(line) for line in Path(demo_path()).read_text().splitlines()[:n]]
    for i, rec in enumerate(recs):
        if i % 2:
            rec["answers"] = rec["answers"] + ["currency", "bor"]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return [r["id"] for r in recs]


def write_config(path: Path, model_dir: Path, groups: Path, head: dict | None = None, **model) -> Path:
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False},
        "model": {"model": str(model_dir), "max_new_tokens": 8, **model},
        "data": {"path": str(groups), "few_shot": [], "batch_size": 2, "num_paraphrases": 3},
    }
    if head is not None:
        config["model"]["head"] = head
    path.write_text(yaml.safe_dump(config))
    return path


def subprocess_env() -> dict:
    # one thread per process: the processes share the machine's cores
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_ddp_two_processes_match_one_process(tmp_path, tiny_model_dir, monkeypatch, one_thread):
    ids = write_groups(tmp_path / "groups.jsonl", N_GROUPS)
    head = {"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg"}}
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, tmp_path / "groups.jsonl", head)
    ddp_dir, one_dir = tmp_path / "ddp", tmp_path / "one"
    ddp = subprocess.Popen(
        [sys.executable, "-m", "selfens_pl", "predict", "--config", str(config), "--output_dir", str(ddp_dir),
         "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"],
        cwd=tmp_path, env=subprocess_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # meanwhile the one-process run, in this process
        monkeypatch.setattr(sys, "argv", ["selfens_pl"])
        build_cli(["predict", "--config", str(config), "--output_dir", str(one_dir)])
        out, err = ddp.communicate(timeout=300)
    finally:
        ddp.kill()
    assert ddp.returncode == 0, (out + err)[-4000:]

    one, multi = read_jsonl(one_dir / PREDICTIONS), read_jsonl(ddp_dir / PREDICTIONS)
    assert [r["id"] for r in multi] == sorted(ids)  # every id once, ordered by id
    # same records: predictions, generations, correct; each answer's mean_prob (a float over another batch
    # composition) to float precision
    assert [{k: v for k, v in r.items() if k != "mean_prob"} for r in multi] == \
        [{k: v for k, v in r.items() if k != "mean_prob"} for r in one]
    assert [r["mean_prob"] for r in multi] == pytest.approx([r["mean_prob"] for r in one], rel=1e-4)
    assert not list(ddp_dir.glob("predictions.rank*.jsonl"))  # parts merged away

    s_one, s_multi = json.loads((one_dir / SUMMARY).read_text()), json.loads((ddp_dir / SUMMARY).read_text())
    assert s_multi["run"]["n_per_process"] == [6, 5]
    for key in ("n", "records", "accuracy", "exact_match", "f1"):
        assert s_multi[key] == pytest.approx(s_one[key]), key
    assert s_multi["n"] == N_GROUPS
    # the torchmetrics numbers reduced across the processes agreed with the scores of the merged file (the writer
    # checks it, raising otherwise), so the summary states them once
    assert not {"accuracy", "exact_match", "f1"} & s_multi["run"].keys()


def test_shard_sampler_splits_without_repeats():
    for n in range(0, 9):
        for world in (1, 2, 3, 4):
            shares = [list(ShardSampler(range(n), world, rank)) for rank in range(world)]
            assert sorted(i for share in shares for i in share) == list(range(n))
            assert [len(s) for s in shares] == [len(ShardSampler(range(n), world, r)) for r in range(world)]


def test_data_module_skips_ids(tmp_path):
    ids = write_groups(tmp_path / "groups.jsonl", 5)
    dm = ParaphraseDataModule(path=str(tmp_path / "groups.jsonl"), few_shot=[], batch_size=2)
    dm.setup()
    dm.skip_ids = {ids[0], ids[3]}
    answered = [g["id"] for batch in dm.predict_dataloader() for g in batch["groups"]]
    assert answered == [ids[1], ids[2], ids[4]]


def test_sharding_strategies_rejected():
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy

    check_strategy(DDPStrategy())
    check_strategy(SingleDeviceStrategy("cpu"))
    with pytest.raises(ValueError, match=r"--trainer.strategy=fsdp is not supported by predict") as e:
        check_strategy(FSDPStrategy())
    assert "\n" not in str(e.value)
