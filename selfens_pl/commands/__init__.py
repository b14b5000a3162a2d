"""The command-line verbs that are not LightningCLI subcommands (``python -m selfens_pl <verb> ...``).

Each module has a ``main(argv)``; :data:`selfens_pl.cli.TOOLS` maps the verb to it. The library they use lives in the
layers below (``data``, ``engine``, ``scoring``, ``heads``, ``sweep``, ``lit``); a verb never exports helpers to
another verb, except this module's parser shared by the verbs that load a model and groups.
"""

from __future__ import annotations

from jsonargparse import ActionConfigFile, ArgumentParser

from selfens_pl.data.datamodule import ParaphraseDataModule
from selfens_pl.engine.models import EMBEDDED_MODEL


def model_and_data_parser(verb: str, description: str, data_help: str) -> ArgumentParser:
    """The flags every model-and-groups verb starts with: ``--config``, ``--model`` and ``--data.*`` (predict's)."""
    parser = ArgumentParser(prog=f"python -m selfens_pl {verb}", description=description)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the flags below")
    parser.add_argument("--model", type=str, default=EMBEDDED_MODEL,
                        help="Alias, smollm2-135m-instruct (embedded), local directory or hub id")
    parser.add_class_arguments(ParaphraseDataModule, "data", help=data_help)
    return parser
