"""The LightningCLI of ``predict``, ``fit``, ``validate`` and ``test``: the quiet start, the prediction writer wired in
before ``predict``, and the callback that keeps the other processes of a multi-process run in step.

:func:`selfens_pl.cli.main` (the package's entry point) runs it; ``mask`` builds it without running to read a predict
config.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningCLI
from transformers.utils import logging as hf_logging

import selfens_pl.stopping as stopping
from selfens_pl.data.datamodule import ParaphraseDataModule
from selfens_pl.engine.parallel import register_strategy
from selfens_pl.errors import UserError
from selfens_pl.jsonl import atomic_write
from selfens_pl.lit import short_help
from selfens_pl.lit.module import SelfEnsembleLM
from selfens_pl.lit.preflight import (check_checkpoint, check_fit_batches, check_head_data, check_inputs,
                                      check_output_dir, check_resumable, check_strategy, clear_run)
from selfens_pl.lit.writer import PredictionWriter

#: Third-party warnings that say nothing to a user of this package, filtered by message (any other warning shows).
KNOWN_WARNINGS = (
    # lightning 2.6 calls a torch pytree API that torch 2.13 deprecates (lightning/pytorch/utilities/_pytree.py)
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # lightning's all_gather (the predict summary of a ddp run) calls a torch function that torch 2.13 deprecates
    r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
)


#: Lightning's advertisements ("💡 Tip: ... try installing litlogger / litmodels"), logged on every Trainer start.
LIGHTNING_TIP = "💡 Tip:"


#: The loggers :class:`_DropNoise` filters.
_NOISY_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                  "lightning_utilities.core.rank_zero", "lightning.fabric.utilities.seed", "torch.multiprocessing.spawn")


#: transformers' bar while it loads a checkpoint (about 1 s for the embedded model); download and GGUF conversion
#: bars still show.
HIDDEN_BARS = ("Loading weights",)


class _DropNoise(logging.Filter):
    """Lightning's advertisements; the seed line of processes other than rank 0 (rank 0 says it once); torch's
    note that it stops the other ``ddp_spawn`` processes after one failed (the failure is reported)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith((LIGHTNING_TIP, "Terminating process %s via signal"))
                    or re.match(r"\[rank: [1-9]\d*\] Seed set to", message))


_DROP_NOISE = _DropNoise()


def _hide_bars(factory, args, kwargs):
    if kwargs.get("desc") in HIDDEN_BARS:
        kwargs = {**kwargs, "disable": True}
    return factory(*args, **kwargs)


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time (a handler keeps its stream object)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def quiet_start() -> None:
    """No Lightning advertisements, no known third-party deprecation warning, no checkpoint-loading bar. The seed
    line ("Seed set to 0") stays, once: the CLI seeds with 0 instead of Lightning's "no seed found" default.
    Lightning's progress messages (seed, devices) go to stdout with the results, so that stderr holds only warnings
    and errors: a user error is the one line there."""
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).addFilter(_DROP_NOISE)  # the same filter object is added once
    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:  # Lightning's own (added when the root logger has none)
            if type(handler) is logging.StreamHandler and not isinstance(handler.stream, _CurrentStdout):
                handler.setStream(_CurrentStdout())
    if hasattr(hf_logging, "set_tqdm_hook"):
        hf_logging.set_tqdm_hook(_hide_bars)


#: Launchers whose child processes (``ddp`` on one machine) must be stopped because rank 0 failed.
_FAILED_LAUNCHERS: list = []


class CommandLineProcesses(Callback):
    """The command line's part in the other processes of a multi-process run.

    * ``--trainer.strategy ddp``: rank 0 launched the other processes; when it fails they must not be left waiting
      at a collective. :func:`main` stops them once it has reported the error.
    * ``ddp_spawn``: each process receives the Trainer, this callback included, pickled; unpickling it there gives
      that process the same quiet start (the launched ``ddp`` processes run :func:`main` themselves).
    """

    def __init__(self) -> None:
        self.quiet = True  # a non-empty state: unpickling calls __setstate__ only then

    def on_exception(self, trainer, pl_module, exception) -> None:
        launcher = getattr(trainer.strategy, "launcher", None)
        if getattr(launcher, "procs", None):
            _FAILED_LAUNCHERS.append(launcher)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.quiet:
            quiet_start()


register_strategy()  # --trainer.strategy model_parallel


class SelfEnsembleCLI(LightningCLI):
    def init_parser(self, **kwargs):
        parser = super().init_parser(**{**kwargs, "add_help": False})
        short_help.add_help_flags(parser)  # --help: the package's flags first; --help_all: every flag
        return parser

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--output_dir", type=str, default="outputs/predict",
                            help="Where predict writes predictions.jsonl, summary.json and config.yaml")
        parser.add_argument("--resume", type=bool, default=True,
                            help="Reuse the predictions already in --output_dir (an interrupted run) and answer only "
                                 "the remaining ids; false: start afresh, deleting them")

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(CommandLineProcesses())
        return trainer

    def parse_arguments(self, parser, args) -> None:
        # build_cli passes args on purpose (mask reads a predict config; tests run in-process): Lightning's warning
        # that args is "intended to run from within Python" is not the user's business
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
            super().parse_arguments(parser, args)

    def before_fit(self) -> None:
        check_fit_batches(self.trainer, self.datamodule)

    def before_predict(self) -> None:
        """Every check first (flags, strategy, data, answers, model, prompts, chooser file, checkpoint, output
        folder, resumability), then, only when the run can start, the output folder changes: ``--resume false``
        removes the earlier run whole, and ``config.yaml`` is written (atomically). A failed check leaves the folder
        as it was."""
        output_dir = Path(self.config["predict"]["output_dir"])
        resume = self.config["predict"].get("resume", True)
        check_strategy(self.trainer.strategy, self.model)
        check_head_data(self.model.head, self.datamodule)
        check_inputs(self.model, self.datamodule)
        check_checkpoint(self.config["predict"].get("ckpt_path"))
        check_output_dir(output_dir)
        config = self.parser._subcommands_action._name_parser_map["predict"].dump(
            self.config["predict"], skip_none=False)
        if self.trainer.is_global_zero and resume:
            check_resumable(output_dir, config)
        # the run can start: from here on the folder changes
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = f"{exc.filename}: {exc.strerror}" if exc.strerror and exc.filename else str(exc)
            raise UserError(f"--output_dir={output_dir}: cannot make the directory ({reason})") from None
        if self.trainer.is_global_zero:
            if not resume:
                clear_run(output_dir)  # before the new config: never a new config.yaml beside the old records
            atomic_write(output_dir / "config.yaml", config)
        stopping.resumable(str(output_dir), [] if resume else ["--resume", "true"])
        self.trainer.callbacks.append(PredictionWriter(str(output_dir), resume=resume))


def build_cli(args=None, run: bool = True) -> SelfEnsembleCLI:
    # run=False builds a parser without subcommands: accept (and drop) a leading ``predict`` etc. all the same
    args = list(args)[1:] if not run and args and args[0] in LightningCLI.subcommands() else args
    return SelfEnsembleCLI(
        SelfEnsembleLM,
        ParaphraseDataModule,
        args=args,
        run=run,
        save_config_callback=None,  # predict writes config.yaml into its output_dir instead
        trainer_defaults={"logger": False},
        seed_everything_default=0,  # Lightning's default (True) seeds 0 too, but warns "No seed found" first
    )
