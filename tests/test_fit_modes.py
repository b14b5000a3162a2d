"""``fit`` trains the wrapped model in train mode (dropout on) and validates it in eval mode, and Lightning finds no
module in eval mode at the start of training (its "Found N module(s) in eval mode" warning). A tiny model with
attention dropout, fit through the CLI with a callback that looks inside every step."""

from __future__ import annotations

import sys
import warnings

import torch
import yaml
from lightning.pytorch.callbacks import Callback
from test_ddp import write_groups
from tiny_models import build_tiny_model

from selfens_pl.lit.cli import build_cli
from selfens_pl.lit.training import answer_loss


def loss(pl_module, batch) -> float:
    with torch.no_grad():
        return float(answer_loss(pl_module.lm, pl_module.tokenizer, pl_module.head,
                                 pl_module.prompts(batch["template"]), batch["groups"], pl_module.hparams.stop))


class ModeRecorder(Callback):
    """What each training and validation batch found: the LM's mode (every submodule's), and in training the loss
    of the same batch twice (dropout makes them differ)."""

    def __init__(self) -> None:
        self.train_modes, self.val_modes, self.twice = [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train_modes.append({m.training for m in pl_module.lm.modules()})
        self.twice.append((loss(pl_module, batch), loss(pl_module, batch)))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val_modes.append({m.training for m in pl_module.lm.modules()})


def test_fit_trains_in_train_mode_and_validates_in_eval_mode(tmp_path, monkeypatch, one_thread):
    model = build_tiny_model(tmp_path / "tiny-dropout", attention_dropout=0.3)
    write_groups(tmp_path / "groups.jsonl", 8)
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "enable_checkpointing": False, "max_steps": 2,
                    "val_check_interval": 1, "limit_val_batches": 1, "num_sanity_val_steps": 0,
                    "callbacks": [{"class_path": "test_fit_modes.ModeRecorder"}]},
        "model": {"model": str(model), "max_new_tokens": 4, "learning_rate": 1e-3,
                  "head": {"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg"}}},
        "data": {"path": str(tmp_path / "groups.jsonl"), "few_shot": [], "batch_size": 2, "num_paraphrases": 2,
                 "val_size": 2},
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = build_cli(["fit", "--config", str(tmp_path / "fit.yaml")])
    [recorder] = [c for c in cli.trainer.callbacks if isinstance(c, ModeRecorder)]
    assert len(recorder.train_modes) == 2 and len(recorder.val_modes) == 2
    assert recorder.train_modes == [{True}, {True}]  # every module of the LM in train mode
    assert recorder.val_modes == [{False}, {False}]  # and in eval mode while validating, then back
    assert all(a != b for a, b in recorder.twice), recorder.twice  # dropout is on
    assert not [w for w in caught if "eval mode" in str(w.message)], [str(w.message) for w in caught]
    assert {m.training for m in cli.model.lm.modules()} == {True}
