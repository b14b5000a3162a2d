"""Command line: LightningCLI subcommands (``predict``, ``fit``, ...) plus the package's own tools.

    python -m selfens_pl predict --config configs/flex_webqa.yaml
    python -m selfens_pl mask --config configs/flex_webqa.yaml --out mask.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from selfens_pl.data import ParaphraseDataModule
from selfens_pl.module import SelfEnsembleLM
from selfens_pl.writer import PredictionWriter, check_resumable, check_strategy

#: Commands that are not LightningCLI subcommands: name -> "module:function" taking argv.
TOOLS = {
    "mask": "selfens_pl.commands.mask:main",
    "paraphrase": "selfens_pl.commands.paraphrase:main",
    "confidence": "selfens_pl.commands.confidence:main",
    "report": "selfens_pl.commands.report:main",
    "ask": "selfens_pl.commands.ask:main",
    "sweep": "selfens_pl.commands.sweep:main",
}


class SelfEnsembleCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--output_dir", type=str, default="outputs/predict",
                            help="Where predict writes predictions.jsonl, summary.json and config.yaml")
        parser.add_argument("--resume", type=bool, default=True,
                            help="Reuse the predictions already in --output_dir (an interrupted run) and answer only "
                                 "the remaining ids; false: start afresh, deleting them")

    def before_predict(self) -> None:
        output_dir = Path(self.config["predict"]["output_dir"])
        resume = self.config["predict"].get("resume", True)
        check_strategy(self.trainer.strategy, self.model)
        output_dir.mkdir(parents=True, exist_ok=True)
        if self.trainer.is_global_zero:
            config = self.parser._subcommands_action._name_parser_map["predict"].dump(
                self.config["predict"], skip_none=False)
            if resume:
                check_resumable(output_dir, config)
            (output_dir / "config.yaml").write_text(config)
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
    )


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in TOOLS:
        module_name, func = TOOLS[args[0]].split(":")
        import importlib

        getattr(importlib.import_module(module_name), func)(args[1:])
        return
    build_cli(argv)  # None: LightningCLI reads sys.argv itself
