"""The command-line verbs that are not LightningCLI subcommands (``python -m selfens_pl <verb> ...``).

Each module has a ``main(argv)``; :data:`selfens_pl.cli.TOOLS` maps the verb to it. The library they use lives in the
layers below (``data``, ``engine``, ``scoring``, ``heads``, ``sweep``, ``lit``); a verb never exports helpers to
another verb. This module holds what the verbs that load a model share, so that one concept has one flag, named as
``predict`` names it:

* the model: ``--model.model``, ``--model.max_new_tokens``, ``--model.stop``, ``--model.trust_remote_code``
  (:func:`add_model_flags`);
* the questions: ``--data.*``, the flags of :class:`~selfens_pl.data.datamodule.ParaphraseDataModule`;
* the device and dtype: ``--trainer.accelerator``, ``--trainer.precision`` (:func:`add_device_flags`, read by
  :func:`device_and_dtype`);
* the flags' old names, still accepted on the command line (:func:`rename_flags`; CHANGELOG.md lists them).

The helpers work with a ``jsonargparse`` parser (nested namespaces) and with a plain ``argparse`` one (dotted
attribute names), so that a verb with positional arguments can use them too.
"""

from __future__ import annotations

import argparse
import inspect
from typing import Literal

import torch
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from selfens_pl.data.datamodule import ParaphraseDataModule
from selfens_pl.engine.models import EMBEDDED_MODEL
from selfens_pl.errors import UserError

#: ``--trainer.accelerator`` values, as predict's Trainer takes them (``auto``: cuda, else mps, else cpu).
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")

#: ``--trainer.precision`` values a verb loads the weights in (predict's "true" precisions; 32 is the default).
PRECISIONS = {"32-true": torch.float32, "32": torch.float32, "bf16-true": torch.bfloat16, "16-true": torch.float16,
              "64-true": torch.float64, "64": torch.float64}

#: Old flag -> its name now, for every verb that loads a model (``paraphrase`` adds its data flags).
RENAMED = {"--model": "--model.model", "--device": "--trainer.accelerator",
           "--max_new_tokens": "--model.max_new_tokens", "--stop": "--model.stop"}

_ABSENT = object()


def _is_jsonargparse(parser) -> bool:
    return isinstance(parser, ArgumentParser)


def _flag_bool(text: str) -> bool:
    """``true`` / ``false`` for a plain argparse parser (argparse's ``type=bool`` takes any text as true)."""
    lowered = str(text).strip().lower()
    if lowered not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return lowered == "true"


def _optional_str(text: str) -> str | None:
    """A string, or ``null`` for none (as jsonargparse reads ``str | None``)."""
    return None if text == "null" else text


def add_model_flags(parser, max_new_tokens: int, stop: str | None = "\n", with_stop: bool = True,
                    model_help: str | None = None, max_new_tokens_help: str = "Most tokens generated per answer"):
    """``--model.model``, ``--model.max_new_tokens``, ``--model.stop`` (``with_stop``) and
    ``--model.trust_remote_code``: predict's names for the model a verb loads and how it generates. Returns their
    argument group."""
    jsonargparse = _is_jsonargparse(parser)
    group = parser.add_argument_group("The model (predict's --model.* flags)")
    group.add_argument("--model.model", type=str, default=EMBEDDED_MODEL,
                       help=model_help or f"Alias (llama3.2_3b_it, ...), {EMBEDDED_MODEL} (embedded), local directory "
                                          "or hub id")
    group.add_argument("--model.max_new_tokens", type=int, default=max_new_tokens, help=max_new_tokens_help)
    if with_stop:
        group.add_argument("--model.stop", type=str | None if jsonargparse else _optional_str, default=stop,
                           help="Stop string ending an answer once it has started (null: none)")
    group.add_argument("--model.trust_remote_code", type=bool if jsonargparse else _flag_bool, default=False,
                       help="Passed to from_pretrained for models with custom code")
    return group


def add_device_flags(parser):
    """``--trainer.accelerator`` and ``--trainer.precision``, predict's names for where and in what dtype the model
    runs (:func:`device_and_dtype` reads them). Returns their argument group."""
    group = parser.add_argument_group("The device (predict's --trainer.accelerator and --trainer.precision)")
    accelerator = {"type": Literal[ACCELERATORS]} if _is_jsonargparse(parser) else {"choices": ACCELERATORS}
    group.add_argument("--trainer.accelerator", **accelerator, default="auto",
                       help="Device: cpu, cuda (or gpu), mps, or auto (cuda when present, then mps, else cpu)")
    group.add_argument("--trainer.precision", type=str | None if _is_jsonargparse(parser) else _optional_str,
                       default=None, help="Dtype of the weights: 32-true (float32, the default), bf16-true, 16-true "
                                          "or 64-true")
    return group


def _value(cfg, key: str, default=_ABSENT):
    """``cfg``'s ``key`` (``"model.model"``): a jsonargparse namespace nests it, an argparse one has the dotted
    attribute."""
    if isinstance(cfg, Namespace):
        if key in cfg:
            return cfg[key]
    elif hasattr(cfg, key):
        return getattr(cfg, key)
    if default is _ABSENT:
        raise KeyError(f"the parser has no --{key}")
    return default


def device_and_dtype(cfg) -> tuple[torch.device, torch.dtype | None]:
    """The device of ``--trainer.accelerator`` and the dtype of ``--trainer.precision`` (``None``: not given, the
    weights load in torch's default dtype, float32). One error naming the flag for a device this torch cannot use
    or a precision the weights cannot be loaded in."""
    accelerator = _value(cfg, "trainer.accelerator", "auto") or "auto"
    precision = _value(cfg, "trainer.precision", None)
    flag = f"--trainer.accelerator={accelerator}"
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if accelerator == "auto":
        device = "cuda" if cuda else "mps" if mps else "cpu"
    elif accelerator == "cpu":
        device = "cpu"
    elif accelerator in ("cuda", "gpu"):
        if not cuda and not (accelerator == "gpu" and mps):
            reason = ("this torch has no CUDA (a CPU build)" if torch.version.cuda is None
                      else "no CUDA device is visible (CUDA_VISIBLE_DEVICES, the driver)")
            raise UserError(f"{flag}: {reason}; use --trainer.accelerator cpu")
        device = "cuda" if cuda else "mps"
    elif accelerator == "mps":
        if not mps:
            raise UserError(f"{flag}: MPS is not available here (Apple silicon only); use --trainer.accelerator cpu")
        device = "mps"
    else:
        raise UserError(f"{flag}: choose one of {', '.join(ACCELERATORS)}")
    if precision is None:
        return torch.device(device), None
    if str(precision) not in PRECISIONS:
        mixed = "mixed" in str(precision) or str(precision) in ("16", "bf16")
        raise UserError(f"--trainer.precision={precision}: "
                        + ("a mixed precision is a Trainer feature; this verb loads the weights in one dtype: "
                           if mixed else "") + f"choose one of {', '.join(PRECISIONS)}")
    return torch.device(device), PRECISIONS[str(precision)]


def dtype_setting(dtype: torch.dtype | None) -> str | None:
    """The dtype as a verb's settings file records it: ``None`` for float32 (and not given), which every file
    written before ``--trainer.precision`` existed was made in, so that they stay reusable."""
    return None if dtype in (None, torch.float32) else str(dtype).removeprefix("torch.")


def load_model(cfg, decoder_class=None, stop: str | None = "\n"):
    """The decoder of ``--model.*`` on ``--trainer.accelerator`` in ``--trainer.precision``
    (:func:`selfens_pl.engine.models.load_decoder`); ``stop`` where the parser has no ``--model.stop``."""
    from selfens_pl.engine.models import load_decoder

    device, dtype = device_and_dtype(cfg)
    return load_decoder(model=_value(cfg, "model.model"), max_new_tokens=_value(cfg, "model.max_new_tokens"),
                        device=device, stop=_value(cfg, "model.stop", stop), decoder_class=decoder_class,
                        dtype=dtype, trust_remote_code=_value(cfg, "model.trust_remote_code", False))


def rename_flags(argv: list[str], renamed: dict[str, str], added: dict[str, list[str]] | None = None) -> list[str]:
    """``argv`` with the flags' old names replaced by their names now (``--model X`` and ``--model=X`` ->
    ``--model.model X``). ``added``: tokens an old flag also stands for (``paraphrase --source X`` read WebQuestions
    records: ``--data.path X --data.source webqa``), put after its value. A ``--config`` file that still uses an
    old key is one error naming the file and the keys' names now (a YAML file is not rewritten)."""
    added = added or {}
    check_config_keys(argv, renamed, added)
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        name, eq, value = token.partition("=")
        if token == "--":  # the rest is positional
            out += argv[i:]
            break
        if name in renamed and (eq or i + 1 < len(argv)):
            out += [f"{renamed[name]}={value}"] if eq else [renamed[name], argv[i + 1]]
            out += added.get(name, [])
            i += 1 if eq else 2
            continue
        out.append(token)
        i += 1
    return out


def check_config_keys(argv: list[str], renamed: dict[str, str], added: dict[str, list[str]] | None = None) -> None:
    """One error for a ``--config`` file of ``argv`` whose top-level keys include old flag names (``model: X``,
    ``max_new_tokens: 10``, ...): jsonargparse alone would say "Option 'max_new_tokens' is not accepted"."""
    import yaml

    paths = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    paths += [a.partition("=")[2] for a in argv if a.startswith("--config=")]
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                config = yaml.safe_load(fh)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # the parser reports a file it cannot read, as for any other file
        if not isinstance(config, dict):
            continue
        old = [key for key, value in config.items() if f"--{key}" in renamed
               and not (key == "model" and isinstance(value, dict))]  # a mapping is model: {model: ...}, the new form
        if old:
            now = ", ".join(f"{key} -> {renamed['--' + key].removeprefix('--')}"
                            + "".join(f" + {flag.removeprefix('--')} {value}" for flag, value
                                      in zip(*[iter((added or {}).get("--" + key, []))] * 2))
                            for key in old)
            raise UserError(f"--config {path}: old keys ({now}: a dotted name is a key under a section, e.g. "
                             "model: {model: smollm2-135m-instruct}); CHANGELOG.md lists the renames")


def data_flags(parser, help: str, keep: tuple[str, ...] | None = None, skip: tuple[str, ...] = ()) -> None:
    """``--data.*``: the :class:`ParaphraseDataModule` flags (only ``keep``, or all but ``skip``)."""
    if keep is not None:
        names = set(inspect.signature(ParaphraseDataModule.__init__).parameters) - {"self"}
        skip = tuple(sorted(names - set(keep)))
    parser.add_class_arguments(ParaphraseDataModule, "data", help=help, skip=set(skip))


def model_and_data_parser(verb: str, description: str, data_help: str, max_new_tokens: int,
                          with_stop: bool = True, data_keep: tuple[str, ...] | None = None,
                          data_skip: tuple[str, ...] = ("batch_size", "num_workers"),
                          model_help: str | None = None,
                          max_new_tokens_help: str = "Most tokens generated per answer") -> ArgumentParser:
    """The flags every model-and-questions verb starts with: ``--config``, ``--model.*``, ``--data.*`` and
    ``--trainer.accelerator`` / ``--trainer.precision``, as predict names them. ``--data.batch_size`` is left out
    by default: a verb that batches by rows or prompts has its own flag, and a flag it ignored would be silent."""
    parser = ArgumentParser(prog=f"python -m selfens_pl {verb}", description=description)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the flags below")
    add_model_flags(parser, max_new_tokens, with_stop=with_stop, model_help=model_help,
                    max_new_tokens_help=max_new_tokens_help)
    data_flags(parser, data_help, keep=data_keep, skip=() if data_keep else data_skip)
    add_device_flags(parser)
    return parser


def instantiate(parser, cfg):
    """The classes of ``cfg`` (the data module, heads), across jsonargparse's rename of the method in 4.49."""
    return (getattr(parser, "instantiate", None) or parser.instantiate_classes)(cfg)
