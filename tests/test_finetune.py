"""`fit` trains the wrapped LM with the fused layout, checkpoints, and `predict` loads the checkpoint."""

from __future__ import annotations

import json

import torch

from selfens_pl.lit.cli import build_cli
from selfens_pl.lit.training import answer_loss

RUN = ["--model.max_new_tokens", "4", "--data.path", "demo", "--data.num_paraphrases", "3", "--data.batch_size", "4",
       "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
       "--trainer.enable_model_summary", "false"]
COMMON = ["--model.head.class_path", "selfens_pl.heads.FlexFusion", "--model.head.init_args.layout", "shared_prefix",
          *RUN]


def train_loss(lm, datamodule) -> float:
    with torch.no_grad():
        losses = [answer_loss(lm.lm, lm.tokenizer, lm.head, lm.prompts(b["template"]), b["groups"], lm.hparams.stop)
                  for b in map(datamodule.collate, [datamodule.groups[i:i + 4] for i in range(0, 16, 4)])]
    return float(torch.stack(losses).mean())


def untrained_weight(model_dir, key: str) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")[key.removeprefix("lm.")]


def test_fit_lowers_loss_checkpoints_and_predict_loads_it(tiny_model_dir, tmp_path):
    root = tmp_path / "fit"
    fit = build_cli(["fit", "--model.model", str(tiny_model_dir), "--model.learning_rate", "3e-3", *COMMON,
                     "--data.val_size", "4", "--trainer.max_steps", "20", "--trainer.val_check_interval", "5",
                     "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
                     "--trainer.default_root_dir", str(root)], run=False)
    fit.datamodule.setup("fit")
    fit.model.configure_model()
    before = train_loss(fit.model, fit.datamodule)
    fit.trainer.fit(fit.model, fit.datamodule)
    after = train_loss(fit.model, fit.datamodule)
    assert fit.trainer.global_step == 20
    assert after < before - 0.1, (before, after)
    assert "val/accuracy" in fit.trainer.callback_metrics  # validation generated and scored
    assert 4 not in {len(g["paraphrases"]) for g in fit.datamodule.val_groups} and len(fit.datamodule.val_groups) == 4

    ckpts = sorted((root / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert ckpts, "no checkpoint written"
    saved = torch.load(ckpts[-1], map_location="cpu", weights_only=False)["state_dict"]
    key = "lm.model.layers.0.self_attn.q_proj.weight"
    out = tmp_path / "predict"
    pred = build_cli(["predict", "--model.model", str(tiny_model_dir), *COMMON, "--data.limit", "4",
                      "--ckpt_path", str(ckpts[-1]), "--output_dir", str(out)])
    # the same LightningModule class serves predict, with the fine-tuned weights from the checkpoint
    torch.testing.assert_close(pred.model.state_dict()[key], saved[key])
    assert not torch.allclose(saved[key], untrained_weight(tiny_model_dir, key))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 4 and summary["method"] == "flex_shared_prefix"


def test_lora_fit_trains_only_adapters_and_predict_loads_them(tiny_model_dir, tmp_path):
    import pytest

    pytest.importorskip("peft")
    root = tmp_path / "lora"
    lora = ["--model.lora_rank", "4"]
    fit = build_cli(["fit", "--model.model", str(tiny_model_dir), "--model.learning_rate", "1e-2", *lora, *COMMON,
                     "--trainer.max_steps", "5", "--trainer.limit_val_batches", "0",
                     "--trainer.default_root_dir", str(root)], run=False)
    fit.datamodule.setup("fit")
    fit.model.configure_model()
    trainable = {n for n, p in fit.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in fit.model.named_parameters()}
    fit.trainer.fit(fit.model, fit.datamodule)
    changed = {n for n, p in fit.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable  # the base model is frozen
    ckpt = sorted((root / "checkpoints").glob("*.ckpt"))[-1]
    pred = build_cli(["predict", "--model.model", str(tiny_model_dir), *lora, *COMMON, "--data.limit", "2",
                      "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "out")])
    name = next(iter(changed))
    torch.testing.assert_close(dict(pred.model.named_parameters())[name], dict(fit.model.named_parameters())[name])


def test_fit_refuses_a_head_without_a_training_loss_before_loading_the_model(tiny_model_dir, tmp_path):
    """VoteHead has no loss of its own: fit raises naming --model.head before the LM loads or any step runs."""
    import pytest

    from selfens_pl.errors import UserError

    fit = build_cli(["fit", "--model.model", str(tiny_model_dir), "--model.head", "selfens_pl.heads.VoteHead", *RUN,
                     "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
                     "--trainer.default_root_dir", str(tmp_path)], run=False)
    with pytest.raises(UserError, match=r"--model\.head=VoteHead .*PerPromptHead"):
        fit.trainer.fit(fit.model, fit.datamodule)
    assert fit.trainer.global_step == 0 and fit.model.lm is None
