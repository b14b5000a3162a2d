"""Command line: LightningCLI subcommands (``predict``, ``fit``, ...) plus the package's own tools.

    python -m selfens_pl --help                  # every command, one line each (:data:`COMMANDS`)
    python -m selfens_pl predict --help          # predict's own flags; --help_all: Lightning's every flag
    python -m selfens_pl predict --config configs/flex_webqa.yaml
    python -m selfens_pl mask --config configs/flex_webqa.yaml --out mask.png

The overview is printed before Lightning, transformers or a command's module is imported (:func:`main`), so that
it costs only the package's own import.

:func:`main` runs every command the same way: a quiet start (:func:`quiet_start`), and a user error (bad flag, bad
data, bad path, a prompt beyond the context window, a missing optional dependency) printed as one line
``selfens_pl: error: <message>`` with exit status 2, while a bug keeps its traceback (the rule:
:mod:`selfens_pl.errors`; ``SELFENS_PL_DEBUG=1`` shows every traceback). SIGTERM and SIGINT stop a command after
the batch in flight (:mod:`selfens_pl.stopping`): one line ``selfens_pl: stopped by SIGTERM ...`` naming the
command that resumes, exit status 128 + the signal's number (143, 130).
"""

from __future__ import annotations

import importlib
import os
import shlex
import signal
import subprocess
import sys
import time

import selfens_pl.stopping as stopping
from selfens_pl.errors import EXIT_USER_ERROR, PROG, UsageError, debug_enabled, parse_errors_raise, user_error_message
from selfens_pl.verbs import COMMANDS

#: LightningCLI's subcommands (``LightningCLI.subcommands()``, named here so that ``--help`` need not import
#: Lightning; a test keeps the two equal).
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

#: Commands that are not LightningCLI subcommands: name -> "module:function" taking argv.
TOOLS = {
    "mask": "selfens_pl.commands.mask:main",
    "paraphrase": "selfens_pl.commands.paraphrase:main",
    "confidence": "selfens_pl.commands.confidence:main",
    "report": "selfens_pl.commands.report:main",
    "ask": "selfens_pl.commands.ask:main",
    "sweep": "selfens_pl.commands.sweep:main",
    "chooser": "selfens_pl.commands.chooser:main",
}

HELP_FLAGS = ("-h", "--help")


def overview() -> str:
    """``python -m selfens_pl --help``: every command, one line each, and where each one's flags are."""
    width = max(map(len, COMMANDS))
    lines = [f"usage: python -m {PROG} <command> [flags]", "",
             "Self-ensembles of paraphrased prompts for causal LMs.", "", "commands:"]
    lines += [f"  {name:<{width}}  {line}" for name, line in COMMANDS.items()]
    lines += ["", f"A command's flags: python -m {PROG} <command> --help (predict, fit, validate and test show the",
              "package's own flags and the Trainer's most used ones; --help_all shows every Lightning flag).",
              "--config FILE gives a command its flags as YAML (configs/ holds examples)."]
    return "\n".join(lines) + "\n"


def run_command(argv: list[str] | None = None) -> None:
    """Run one command (a verb of :data:`TOOLS` or a LightningCLI subcommand); errors propagate."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or not (args[0] in COMMANDS or args[0].startswith("-")):
        raise UsageError(f"unknown command {args[0]!r}: choose one of {', '.join(COMMANDS)} (--help: what each does)"
                         if args else f"a command is needed: one of {', '.join(COMMANDS)} (--help: what each does)")
    if args[0] in TOOLS:
        module_name, func = TOOLS[args[0]].split(":")
        getattr(importlib.import_module(module_name), func)(args[1:])
        return
    from selfens_pl.lit.cli import build_cli

    build_cli(argv)  # None: LightningCLI reads sys.argv itself (given both, it warns)


def _rank() -> int:
    """This process's rank in a multi-process run (Lightning's ``ddp`` launcher, torchrun), 0 otherwise."""
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _failed_launchers() -> list:
    lit_cli = sys.modules.get("selfens_pl.lit.cli")  # none launched a process when Lightning's CLI never loaded
    return lit_cli._FAILED_LAUNCHERS if lit_cli is not None else []


def _stop_launched_processes() -> None:
    launchers = _failed_launchers()
    while launchers:
        launchers.pop().kill(getattr(signal, "SIGKILL", signal.SIGTERM))


def _failed_process_status(wait_s: float = 5.0) -> int | None:
    """The exit status of a process this one launched (``ddp``) that has failed, waiting up to ``wait_s`` for one
    to end; ``None`` when none has. When rank 0 fails because another process died (a collective finds its peer
    gone), that process has reported the cause."""
    deadline = time.monotonic() + wait_s
    for launcher in _failed_launchers():
        for proc in launcher.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue
            if proc.returncode:
                return proc.returncode
    return None


def stop_message(stop: stopping.Stopped, args: list[str]) -> str:
    """The line a command stopped by a signal prints: what stopped it, where its finished work is and the command
    that resumes it (the same one, plus what the command asked to add: predict's ``--resume true``)."""
    hint = stop.hint
    if hint is None:
        return str(stop)
    kept, extra = hint
    return (f"{stop}; the finished work is kept in {kept}; resume with: python -m {PROG} "
            f"{shlex.join([*args, *extra])}")


def main(argv: list[str] | None = None) -> None:
    """``python -m selfens_pl <command> ...``: one line and exit status 2 for a user error, a traceback for a bug."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in HELP_FLAGS:  # the overview, before anything heavy is imported
        print(overview(), end="", flush=True)
        if not args:  # stderr: the one line of every user error
            print(f"{PROG}: error: a command is needed: one of those above", file=sys.stderr)
        sys.exit(0 if args else EXIT_USER_ERROR)
    from selfens_pl.lit.cli import quiet_start

    quiet_start()
    try:
        with stopping.handle_signals(), parse_errors_raise():
            run_command(argv)
    except BaseException as exc:
        if isinstance(exc, stopping.Stopped):  # not an error: no traceback, under SELFENS_PL_DEBUG too
            print(f"{PROG}: {stop_message(exc, args)}", file=sys.stderr, flush=True)
            sys.exit(exc.status)
        message = None if debug_enabled() else user_error_message(exc, args)
        if message is None:
            status = None if debug_enabled() else _failed_process_status()
            _stop_launched_processes()
            if status is not None:  # another process failed first and printed why; this error is its consequence
                # at once: tearing the interpreter down with a broken process group can abort in C++ (gloo's
                # threads: "terminate called without an active exception", status -6 instead of the peer's)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
            raise
        rank = _rank()
        if rank:  # rank 0 reports an error every process meets, and stops the others before this wakes up
            time.sleep(1.0)
            message = f"rank {rank}: {message}"
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        _stop_launched_processes()
        if rank:
            # at once (interpreter teardown with a process group takes seconds): rank 0 waits for this status
            sys.stdout.flush()
            os._exit(EXIT_USER_ERROR)
        sys.exit(EXIT_USER_ERROR)
