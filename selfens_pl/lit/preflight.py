"""Checks the CLI runs before predicting: one clear error instead of a run that would mix or fail.

* :func:`check_resumable`: the output directory holds predictions made with other settings than the config about to
  run (resuming would mix their answers with new ones);
* :func:`check_strategy`: a Lightning strategy predict cannot run with;
* :func:`check_head_data`: a head setting the data cannot serve (demonstration answers without extra blocks).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, SingleDeviceStrategy

from selfens_pl.errors import UserError
from selfens_pl.heads.rerank import rescores_demo_answers
from selfens_pl.lit.writer import PART_GLOB, PREDICTIONS

#: Config keys that may change between an interrupted run and its resumption (they do not change any answer).
RESUME_FREE_KEYS = {"data": {"batch_size", "num_workers", "limit", "val_path", "val_split", "val_limit", "val_size"},
                    "model": {"learning_rate", "weight_decay"}}

_ABSENT = object()


def _difference(name: str, before, after) -> str | None:
    """``--name`` when the two values differ, saying which config lacks the key; ``None`` when they are equal."""
    if before is _ABSENT and after is _ABSENT or before == after:
        return None
    if before is _ABSENT:
        return f"--{name} (only in this run's config)"
    if after is _ABSENT:
        return f"--{name} (only in its config.yaml)"
    return f"--{name}"


def check_resumable(output_dir: Path, config_yaml: str) -> None:
    """One clear error when ``output_dir`` holds predictions made with another model, head or data set than
    ``config_yaml`` (the config about to run), since resuming would mix them. Every ``model`` and ``data`` key
    counts except :data:`RESUME_FREE_KEYS`, and so do ``trainer.precision`` and ``ckpt_path``; a key that only one
    of the two configs has is a difference too (its value there may change every answer)."""
    output_dir = Path(output_dir)
    old_path = output_dir / "config.yaml"
    has_predictions = (output_dir / PREDICTIONS).is_file() or any(output_dir.glob(PART_GLOB))
    if not has_predictions or not old_path.is_file():
        return
    old, new = yaml.safe_load(old_path.read_text()) or {}, yaml.safe_load(config_yaml) or {}
    changed = []
    for section in ("model", "data"):
        before, after = old.get(section) or {}, new.get(section) or {}
        for key in sorted((set(before) | set(after)) - RESUME_FREE_KEYS.get(section, set())):
            changed.append(_difference(f"{section}.{key}", before.get(key, _ABSENT), after.get(key, _ABSENT)))
    before, after = old.get("trainer") or {}, new.get("trainer") or {}
    changed.append(_difference("trainer.precision", before.get("precision", _ABSENT),
                               after.get("precision", _ABSENT)))
    # fine-tuned weights answer differently
    changed.append(_difference("ckpt_path", old.get("ckpt_path", _ABSENT), new.get("ckpt_path", _ABSENT)))
    changed = [c for c in changed if c is not None]
    if changed:
        raise UserError(f"--output_dir {output_dir} holds predictions made with other settings "
                        f"({', '.join(changed)} differ from its config.yaml): pass --resume false to replace them, "
                        "or another --output_dir")


def check_strategy(strategy, pl_module=None) -> None:
    """One clear error for a strategy predict cannot run with. Predict runs with one device; ``ddp`` (a whole model
    in every process); ``model_parallel`` (Lightning's ``ModelParallelStrategy``: tensor parallelism, each process
    holding a slice of every layer, :mod:`selfens_pl.engine.parallel`); or ``--model.device_map`` in ONE process.
    ``fsdp`` / ``deepspeed`` shard the weights for training: the decoder calls the Hugging Face model directly with
    its own KV cache, outside the wrapper that would gather the shards."""
    name = getattr(strategy, "strategy_name", None) or type(strategy).__name__
    if not isinstance(strategy, (SingleDeviceStrategy, DDPStrategy, ModelParallelStrategy)):
        raise UserError(f"--trainer.strategy={name} is not supported by predict: use --trainer.strategy ddp "
                        "--trainer.devices N for a model that fits one device (a copy per device), "
                        "--trainer.strategy model_parallel --trainer.devices N to split a larger model over N "
                        "devices (tensor parallel), or --model.device_map auto in one process")
    device_map = None if pl_module is None else pl_module.hparams.get("device_map")
    processes = getattr(strategy, "num_processes", 1) * getattr(strategy, "num_nodes", 1)
    if device_map is not None and (processes > 1 or isinstance(strategy, ModelParallelStrategy)):
        raise UserError(f"--model.device_map spreads ONE process's model over the devices; it cannot run under "
                        f"--trainer.strategy={name} with {processes} processes: use --trainer.devices 1, or drop "
                        "--model.device_map and split the model with --trainer.strategy model_parallel")


def check_head_data(head, datamodule) -> None:
    """One clear error for a head that needs what the data does not give: ``RerankHead(demo_answers=True)`` rescores
    the answers of the extra few-shot blocks' demonstrations, which ``--data.demo_blocks 1`` does not have (the run
    would silently be the head without them)."""
    blocks = getattr(getattr(datamodule, "hparams", None), "demo_blocks", 1)
    if rescores_demo_answers(head) and blocks < 2:
        raise UserError(f"--model.head.init_args.demo_answers=true rescores the answers of the extra few-shot blocks' "
                        f"demonstrations, but --data.demo_blocks={blocks} asks with none: set --data.demo_blocks 2 "
                        "or more (and --data.few_shot_pool), or demo_answers false")
