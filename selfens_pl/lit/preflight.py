"""Checks the CLI runs before predicting (and fitting): one clear error instead of a run that would mix or fail.

Predict checks everything it can before it writes anything (:meth:`selfens_pl.lit.cli.SelfEnsembleCLI.before_predict`),
so that a run's output folder changes only when the run can start:

* :func:`check_strategy`: a Lightning strategy predict cannot run with;
* :func:`check_head_data`: a head setting the data cannot serve (demonstration answers without extra blocks);
* :func:`check_inputs`: the data read and checked (the data module's own checks: a broken file, ``--data.limit``,
  ``--data.batch_size``, ``--data.num_paraphrases``, ...), gold answers to score against, the model's name, files
  and hub access, every prompt within the model's context window, a chooser file fit for this model and layout;
* :func:`check_checkpoint`: a ``--ckpt_path`` that does not exist;
* :func:`check_resumable`: the output directory holds predictions made with other settings than the config about to
  run (resuming would mix their answers with new ones);

then :func:`clear_run` (``--resume false``) removes the earlier run whole. :func:`check_fit_batches`: ``fit``'s data
too small for its validation interval, before training starts.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import yaml
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, SingleDeviceStrategy

from selfens_pl.data.demos import members
from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.engine.batches import check_context
from selfens_pl.errors import UserError
from selfens_pl.heads import FlexFusion, OriginHead
from selfens_pl.heads.flex import build_layout
from selfens_pl.heads.controls import check_selection
from selfens_pl.heads.rerank import rescores_demo_answers
from selfens_pl.lit.writer import PART_GLOB, PREDICTIONS, SUMMARY

#: Config keys that may change between an interrupted run and its resumption (they do not change any answer).
#: ``data.limit`` and ``data.start`` are not among them: they choose which ids a run answers (and, with
#: ``--data.few_shot_source``, its few-shot block), so a run resumed with another one is refused.
RESUME_FREE_KEYS = {"data": {"batch_size", "num_workers", "val_path", "val_split", "val_limit", "val_size"},
                    "model": {"learning_rate", "weight_decay"}}

_ABSENT = object()

#: Settings added after runs were made, each with the value that answers as runs made before it did: a folder
#: whose config.yaml predates the setting resumes when this run asks for that value (``"name"``: a ``model`` or
#: ``data`` key; ``"model.head.<init arg>"``: a head's init argument, whatever the head).
ADDED_SETTINGS: dict[str, object] = {
    "data.chat_template": "none",  # before it, every prompt was the plain text one
    "model.head.chooser_features": None,  # before it, a learned chooser had the standard features
}


def _difference(name: str, before, after) -> str | None:
    """``--name`` when the two values differ, saying which config lacks the key; ``None`` when they are equal. Two
    mappings with the same ``class_path`` (a head) name the setting inside that differs
    (``--model.head.init_args.method``). A setting of :data:`ADDED_SETTINGS` that the old config lacks counts as
    the value runs made before it answered with."""
    added = name.replace(".init_args.", ".")
    if before is _ABSENT and after is not _ABSENT and added in ADDED_SETTINGS:
        was = ADDED_SETTINGS[added]
        return None if after == was else f"--{name} ({after!r} here; its config.yaml predates it: {was!r})"
    if before is _ABSENT and after is _ABSENT or before == after:
        return None
    if before is _ABSENT:
        return f"--{name} (only in this run's config)"
    if after is _ABSENT:
        return f"--{name} (only in its config.yaml)"
    if isinstance(before, dict) and isinstance(after, dict) and before.get("class_path") == after.get("class_path"):
        inner = [_difference(f"{name}.{key}", before.get(key, _ABSENT), after.get(key, _ABSENT))
                 for key in sorted(set(before) | set(after))]
        return ", ".join(d for d in inner if d is not None) or None
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
    # a control for similar demonstrations (heads/controls.py) on random blocks, or on none
    check_selection(_heads(head), getattr(getattr(datamodule, "hparams", None), "demo_selection", "random"), blocks,
                    "--data.demo_blocks 2 or more")


# -- everything predict reads, before it writes ----------------------------------------------------------------------
def check_inputs(module, datamodule) -> None:
    """One clear error, before predict writes anything, for what would otherwise fail while it runs: the data
    (read and checked by the data module's ``setup``, which Lightning's own call then finds done), a group without
    answers to score against, a model that cannot be loaded (its name, files, or the hub), a prompt beyond the
    model's context window, a chooser file that cannot serve this model or layout. The model's weights are not
    loaded: its config and tokenizer say what these checks need."""
    from selfens_pl.engine.models import load_config_and_tokenizer

    datamodule.setup("predict")
    groups, hp = datamodule.groups, module.hparams
    if hp.score:
        for group in groups:
            if not group.get("answers"):
                raise UserError(f"record {group['id']!r} has no answers to score against (give answers, or run with "
                                "--model.score=false)")
    config, tokenizer = load_config_and_tokenizer(hp.model, hp.trust_remote_code)
    check_prompts(module.head, groups, PromptTokenizer(tokenizer, datamodule.template),
                  getattr(config, "max_position_embeddings", None), hp.max_new_tokens)
    check_choosers(module.head, config, groups)


def _heads(head) -> list:
    """``head`` and the heads it answers through (a cascade's ensemble)."""
    out = [head]
    while getattr(out[-1], "ensemble", None) is not None:
        out.append(out[-1].ensemble)
    return out


def check_prompts(head, groups: list[dict], prompts: PromptTokenizer, context: int | None,
                  max_new_tokens: int) -> None:
    """The error the run would meet in its batch (:func:`selfens_pl.engine.batches.check_context`, the same words)
    for the first group with a prompt that does not fit ``context`` tokens with ``max_new_tokens`` more: each
    member's prompt the head asks (origin: paraphrase 0 with the standard block only), and a FlexFusion head's fused
    sequence."""
    if context is None:
        return
    window = SimpleNamespace(context_length=context, max_new_tokens=max_new_tokens)
    heads = _heads(head)
    origin_only = all(isinstance(h, OriginHead) and not h.agreement for h in heads)
    flex = [h for h in heads if isinstance(h, FlexFusion)]
    for group in groups:
        asked = members(group)[:1] if origin_only else members(group)
        for member in asked:
            block = prompts.for_block(group, member.block_index)
            check_context(window, len(block.prefix_ids) + len(block.question_ids(member.text)), group["id"])
        for h in flex:
            layout = build_layout(prompts, group["paraphrases"], h.layout, h.positions, group)
            check_context(window, layout.next_position, group["id"], what="fused sequence (highest position)")


def check_choosers(head, config, groups: list[dict]) -> None:
    """A learned chooser (``RerankHead(rule=learned)``, alone or as a cascade's ensemble): a file, fit with this
    model (``config``: the model's, loaded from where the run loads it), at the layout of every group; the head's
    own errors, raised now."""
    for h in _heads(head):
        if getattr(h, "rule", None) != "learned":
            continue
        h._check_chooser()
        chooser = getattr(h, "model", None)
        if chooser is None:
            continue
        if chooser.fit_with is not None:
            chooser.check_model(SimpleNamespace(config=config))
        for group in groups:
            h.check_layout(group)


def check_checkpoint(ckpt_path) -> None:
    """``--ckpt_path`` names a file that exists (Lightning's own names, ``last``, ``best``, ``hpc``, ``registry``,
    are left to it)."""
    if ckpt_path is None or str(ckpt_path) in ("last", "best", "hpc", "registry") or "://" in str(ckpt_path):
        return
    if not Path(ckpt_path).is_file():
        raise UserError(f"--ckpt_path={ckpt_path}: no such file")


def clear_run(output_dir: Path) -> None:
    """``--resume false``, once the run can start: the earlier run's predictions (merged and part files) and summary
    are removed, so that nothing of it is left beside the new one (``config.yaml`` is written next)."""
    output_dir = Path(output_dir)
    for path in [output_dir / SUMMARY, output_dir / PREDICTIONS, *output_dir.glob(PART_GLOB)]:
        path.unlink(missing_ok=True)


# -- fit ---------------------------------------------------------------------------------------------------------------
def check_fit_batches(trainer, datamodule) -> None:
    """``--trainer.val_check_interval N`` (a whole number of training batches) when an epoch of the training data
    has fewer than N batches: one error naming the flag and the batch count, before training (Lightning's own check
    raises once the loop has started, with a traceback). The data module reads its data here (its ``setup``)."""
    interval = getattr(trainer, "val_check_interval", None)
    if not isinstance(interval, int) or isinstance(interval, bool):
        return
    if trainer.check_val_every_n_epoch is None or not trainer.limit_val_batches:
        return
    datamodule.setup("fit")
    groups = len(datamodule.groups)
    batch_size = datamodule.hparams.batch_size
    per_process = math.ceil(groups / max(1, trainer.world_size))
    batches = math.ceil(per_process / batch_size)
    limit = trainer.limit_train_batches
    if isinstance(limit, int) and not isinstance(limit, bool):
        batches = min(batches, limit)
    elif isinstance(limit, float) and limit < 1.0:
        batches = int(batches * limit)
    if interval > batches:
        processes = f" over {trainer.world_size} processes" if trainer.world_size > 1 else ""
        raise UserError(f"--trainer.val_check_interval={interval}: validates every {interval} training batches, but "
                        f"an epoch has {batches} ({groups} training groups, --data.batch_size {batch_size}{processes})"
                        f": give a smaller interval, more data, or --trainer.check_val_every_n_epoch null to count "
                        "batches across epochs")


def check_output_dir(output_dir: Path) -> None:
    """``--output_dir`` can be made (or is a directory): the nearest part of it that exists is a directory. Nothing
    is made here (predict makes it once every other check passed)."""
    output_dir = Path(output_dir)
    existing = next((p for p in [output_dir, *output_dir.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        reason = "File exists, not a directory" if existing == output_dir else "Not a directory"
        raise UserError(f"--output_dir={output_dir}: cannot make the directory ({output_dir}: {reason})")
