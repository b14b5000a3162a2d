"""Command line: LightningCLI subcommands (``predict``, ``fit``, ...) plus the package's own tools.

    python -m selfens_pl predict --config configs/flex_webqa.yaml
    python -m selfens_pl mask --config configs/flex_webqa.yaml --out mask.png

:func:`main` runs every command the same way: a quiet start (:func:`quiet_start`), and a user error (bad flag, bad
data, bad path, a prompt beyond the context window, a missing optional dependency) printed as one line
``selfens_pl: error: <message>`` with exit status 2, while a bug keeps its traceback (the rule:
:mod:`selfens_pl.errors`; ``SELFENS_PL_DEBUG=1`` shows every traceback).
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time

from lightning.pytorch.cli import LightningCLI

from selfens_pl.errors import EXIT_USER_ERROR, PROG, UsageError, debug_enabled, parse_errors_raise, user_error_message
from selfens_pl.lit.cli import _FAILED_LAUNCHERS, build_cli, quiet_start

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


def run_command(argv: list[str] | None = None) -> None:
    """Run one command (a verb of :data:`TOOLS` or a LightningCLI subcommand); errors propagate."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or not (args[0] in TOOLS or args[0] in LightningCLI.subcommands() or args[0].startswith("-")):
        commands = ", ".join([*LightningCLI.subcommands(), *TOOLS])
        raise UsageError(f"unknown command {args[0]!r}: choose one of {commands}" if args
                         else f"a command is needed: one of {commands} (--help for details)")
    if args[0] in TOOLS:
        module_name, func = TOOLS[args[0]].split(":")
        getattr(importlib.import_module(module_name), func)(args[1:])
        return
    build_cli(argv)  # None: LightningCLI reads sys.argv itself (given both, it warns)


def _rank() -> int:
    """This process's rank in a multi-process run (Lightning's ``ddp`` launcher, torchrun), 0 otherwise."""
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _stop_launched_processes() -> None:
    while _FAILED_LAUNCHERS:
        _FAILED_LAUNCHERS.pop().kill(getattr(signal, "SIGKILL", signal.SIGTERM))


def _failed_process_status(wait_s: float = 5.0) -> int | None:
    """The exit status of a process this one launched (``ddp``) that has failed, waiting up to ``wait_s`` for one
    to end; ``None`` when none has. When rank 0 fails because another process died (a collective finds its peer
    gone), that process has reported the cause."""
    deadline = time.monotonic() + wait_s
    for launcher in _FAILED_LAUNCHERS:
        for proc in launcher.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue
            if proc.returncode:
                return proc.returncode
    return None


def main(argv: list[str] | None = None) -> None:
    """``python -m selfens_pl <command> ...``: one line and exit status 2 for a user error, a traceback for a bug."""
    args = list(sys.argv[1:] if argv is None else argv)
    quiet_start()
    try:
        with parse_errors_raise():
            run_command(argv)
    except BaseException as exc:
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
