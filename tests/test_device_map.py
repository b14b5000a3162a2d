"""``--model.device_map``: one process, the model's layers spread over several devices by accelerate (on the CPU:
part of the model offloaded to disk), answers token for token as the whole model does, through every head and
through ``predict``; the flags that cannot go together get one clear error."""

from __future__ import annotations

import sys

import pytest
from test_ddp import read_jsonl, write_config, write_groups

from selfens_pl.heads import FlexFusion, LogitFusion, OriginHead, PerPromptHead
from selfens_pl.lit.cli import build_cli
from selfens_pl.lit.module import SelfEnsembleLM
from selfens_pl.lit.writer import PREDICTIONS

HEADS = {
    "origin": OriginHead,
    "per_prompt": PerPromptHead,
    "avg": lambda: LogitFusion("avg"),
    "max": lambda: LogitFusion("max"),
    "flex_shared_prefix": lambda: FlexFusion(layout="shared_prefix", backend="dense"),
    "flex_concat": lambda: FlexFusion(layout="concat", backend="dense"),
}
#: Layer 1, the final norm and the LM head offloaded to disk; the embedding and layer 0 stay in memory.
SPLIT = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
         "model.norm": "disk", "lm_head": "disk"}
#: A budget of 400 kB for the CPU: accelerate puts what does not fit (~0.5 MB in all) on disk.
BUDGET = {"device_map": "auto", "max_memory": {"cpu": "400KB"}}


def answers(lm: SelfEnsembleLM, groups, template) -> list[str]:
    lm.configure_model()
    return [r["generation"] for r in lm.answer(groups, template)]


@pytest.mark.parametrize("dispatch", [SPLIT, BUDGET], ids=["dict", "max_memory"])
def test_split_model_gives_the_same_tokens(tmp_path, tiny_model_dir, groups, template, dispatch, one_thread):
    kwargs = {"device_map": dispatch} if dispatch is SPLIT else dict(dispatch)
    split = SelfEnsembleLM(model=str(tiny_model_dir), max_new_tokens=8, stop=None, offload_folder=str(tmp_path),
                           **kwargs)
    split.configure_model()
    device_map = split.lm.hf_device_map
    # the layers sit on two devices, and the offloaded weights are only loaded for their forward
    assert device_map["model.layers.0"] == "cpu" and device_map["model.layers.1"] == "disk", device_map
    assert split.lm.model.layers[1].mlp.up_proj.weight.is_meta
    assert split.lm.lm_head.weight.is_meta  # the decoder puts its inputs on the embedding's device instead
    whole = SelfEnsembleLM(model=str(tiny_model_dir), max_new_tokens=8, stop=None)
    for name, head in HEADS.items():
        split.head = whole.head = head()
        expected = answers(whole, groups, template)
        assert answers(split, groups, template) == expected, name
        assert all(expected), name


def test_predict_with_device_map_matches_whole_model(tmp_path, tiny_model_dir, monkeypatch, one_thread):
    write_groups(tmp_path / "groups.jsonl", 4)
    head = {"class_path": "selfens_pl.heads.LogitFusion", "init_args": {"method": "avg"}}
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, tmp_path / "groups.jsonl", head)
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    build_cli(["predict", "--config", str(config), "--output_dir", str(tmp_path / "whole")])
    # Lightning moves the module to its device and precision: the dispatched model must stay where accelerate put it
    build_cli(["predict", "--config", str(config), "--output_dir", str(tmp_path / "split"), "--model.device_map",
               "auto", "--model.max_memory", "{cpu: 400KB}", "--model.offload_folder", str(tmp_path / "offload"),
               "--trainer.precision", "32-true"])
    whole, split = read_jsonl(tmp_path / "whole" / PREDICTIONS), read_jsonl(tmp_path / "split" / PREDICTIONS)
    assert split == whole and len(split) == 4


# -- errors ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"device_map": "everywhere"}, r"--model.device_map='everywhere': choose one of auto, balanced"),
    ({"device_map": ["cpu"]}, r"--model.device_map=\['cpu'\]: give auto"),
    ({"max_memory": {"cpu": "1GB"}}, r"--model.max_memory budgets the devices of --model.device_map"),
    ({"device_map": SPLIT}, r"puts modules on 'disk': give --model.offload_folder"),
    ({"device_map": "auto", "max_memory": "1GB"}, r"--model.max_memory='1GB': give a dict"),
    ({"device_map": "auto", "lora_rank": 4}, r"--model.device_map='auto' cannot be combined with --model.lora_rank"),
])
def test_bad_device_map_flags(tiny_model_dir, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SelfEnsembleLM(model=str(tiny_model_dir), **kwargs).configure_model()


def test_device_map_runs_in_one_process(tmp_path, tiny_model_dir, monkeypatch):
    write_groups(tmp_path / "groups.jsonl", 2)
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, tmp_path / "groups.jsonl")
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    with pytest.raises(ValueError, match=r"--model.device_map spreads ONE process.s model.*--trainer.strategy=DDPStrategy "
                                         r"with 2 processes"):
        build_cli(["predict", "--config", str(config), "--output_dir", str(tmp_path / "out"), "--model.device_map",
                   "auto", "--trainer.strategy", "ddp", "--trainer.devices", "2"])
    assert not (tmp_path / "out" / PREDICTIONS).exists()


def test_device_map_does_not_fine_tune(tiny_model_dir):
    from lightning import Trainer
    from lightning.pytorch.trainer.states import TrainerFn

    lm = SelfEnsembleLM(model=str(tiny_model_dir), device_map="auto")
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.state.fn = TrainerFn.FITTING
    lm.trainer = trainer
    with pytest.raises(ValueError, match=r"--model.device_map='auto' serves predict \(and validate\) only"):
        lm.configure_model()


def test_flex_attention_refused_on_several_devices(tiny_model_dir):
    """FlexAttention's BlockMask reads segment ids on the device it was built on; the dense mask is moved by the
    dispatch hooks. (Two GPUs are simulated by the map accelerate would have written.)"""
    lm = SelfEnsembleLM(model=str(tiny_model_dir), device_map="auto", head=FlexFusion(backend="flex"))
    lm.configure_model()  # one device (the CPU): flex runs
    lm.lm.hf_device_map = {"model.embed_tokens": 0, "model.layers": 1, "lm_head": 1}
    with pytest.raises(ValueError, match=r"backend=flex runs FlexAttention.*dispatched over 2 devices.*backend dense"):
        lm._check_dispatched_head()
    lm.head = FlexFusion(backend="dense")
    lm._check_dispatched_head()
