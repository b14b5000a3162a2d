"""``predict --help`` (and ``fit``, ``validate``, ``test``): the package's own flags first, and the few Trainer flags
most runs set; ``--help_all`` prints LightningCLI's full help (760 lines, every Trainer flag, callbacks, optimizer).

The short help is the full help with the other flags hidden: the same parser formats it, so a flag's text, type and
default read the same in both.
"""

from __future__ import annotations

import argparse
import sys

from selfens_pl.errors import PROG
from selfens_pl.verbs import COMMANDS

#: Flags of the main group shown in the short help (by ``dest``).
OPTIONS = ("help", "help_all", "config", "print_config", "output_dir", "resume")

#: The Trainer's flags shown: where and how the model runs.
TRAINER = ("trainer.accelerator", "trainer.devices", "trainer.strategy", "trainer.precision")

#: More Trainer flags for ``fit``: how long it trains.
FIT_TRAINER = ("trainer.max_epochs", "trainer.max_steps")

#: The subcommand's own flags shown (``Trainer.predict(ckpt_path=...)``: fine-tuned weights).
METHOD = ("ckpt_path",)

#: Sections whose every flag is shown (the ``--model`` / ``--data`` config-file flags are not).
SECTIONS = ("model.", "data.")


def _verb(parser) -> str:
    return parser.prog.split()[-1]


def _shown(dest: str, verb: str) -> bool:
    return (dest in OPTIONS or dest in TRAINER or dest in METHOD or dest.startswith(SECTIONS)
            or (verb == "fit" and dest in FIT_TRAINER))


def format_short_help(parser) -> str:
    """The short help of a LightningCLI subcommand's ``parser``: its own sections first (options, model, data),
    then the Trainer flags of :data:`TRAINER` and ``ckpt_path``."""
    verb = _verb(parser)
    hidden = [a for a in parser._actions if not _shown(a.dest, verb)]
    saved = {"usage": parser.usage, "description": parser.description, "groups": parser._action_groups,
             "helps": [(a, a.help) for a in hidden], "titles": [(g, g.title) for g in parser._action_groups]}
    shown = [g for g in parser._action_groups if any(_shown(a.dest, verb) for a in g._group_actions)]
    trainer = [g for g in shown if any(a.dest.startswith("trainer.") for a in g._group_actions)]
    method = [g for g in shown if any(a.dest in METHOD for a in g._group_actions)]
    try:
        for action in hidden:
            action.help = argparse.SUPPRESS
        for group in trainer:
            group.title = "The Trainer's most used flags (--help_all: every one)"
        for group in method:  # Lightning titles it with the start of Trainer.<verb>'s docstring
            group.title = f"Trainer.{verb}'s own flags (--help_all: every one)"
        # the package's own sections first, the Trainer's after them
        parser._action_groups = [g for g in shown if g not in trainer] + trainer
        parser.usage = f"python -m {PROG} {verb} [--config FILE] [--SECTION.FLAG VALUE ...]"
        parser.description = (f"{verb}: {COMMANDS.get(verb, verb)}. The package's flags and the Trainer's most "
                              "used ones; --help_all shows every flag of Lightning's command line.")
        return parser.format_help()
    finally:
        parser.usage, parser.description, parser._action_groups = (saved["usage"], saved["description"],
                                                                    saved["groups"])
        for action, text in saved["helps"]:
            action.help = text
        for group, title in saved["titles"]:
            group.title = title


class ShortHelp(argparse._HelpAction):
    """``-h`` / ``--help``: :func:`format_short_help`."""

    def __call__(self, parser, namespace, values, option_string=None):
        if not any(a.dest.startswith(SECTIONS) for a in parser._actions):  # the parser above the subcommands
            return super().__call__(parser, namespace, values, option_string)
        sys.stdout.write(format_short_help(parser))  # stdout, as argparse prints a help
        parser.exit()


class FullHelp(argparse._HelpAction):
    """``--help_all``: LightningCLI's help, every flag."""


def add_help_flags(parser) -> None:
    """``-h`` / ``--help`` (short) and ``--help_all`` (full) on a parser made without argparse's own help."""
    parser.add_argument("-h", "--help", action=ShortHelp,
                        help="Show the package's flags and the Trainer's most used ones, and exit")
    parser.add_argument("--help_all", action=FullHelp, help="Show every flag (Lightning's full help) and exit")
