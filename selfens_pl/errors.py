"""What a failed command prints: one line for a user error, the traceback for a bug.

:func:`selfens_pl.cli.main` runs every subcommand (``predict``, ``fit``, ... and the verbs ``ask``, ``paraphrase``,
``confidence``, ``report``, ``mask``, ``sweep``) through :func:`user_error_message`. A **user error** prints one
line on stderr, ``selfens_pl: error: <message>``, and exits with status 2; anything else is a **bug** and keeps
Python's traceback (status 1). ``SELFENS_PL_DEBUG=1`` shows the traceback of every error, user errors and parse
errors included.

The rule goes by the exception's type, and for the checks of one library by where it was raised; it never reads
source lines or bytecode. The user's:

* :class:`UserError`, wherever it is raised (by the package, or by a callback the package gives a library): the
  package raises it where it checks what the user gave (a flag, a config key, a data file or record, a path, a
  model that cannot do what was asked, a missing optional dependency), with a message naming the record, file or
  flag;
* a command-line parse error (an unknown flag or config key, a value of the wrong type or outside its choices, a
  missing argument): jsonargparse's and argparse's own errors, raised as :class:`UsageError` while a command runs
  (:func:`parse_errors_raise`); multi-line jsonargparse messages are cut to the flag and the problem;
* a :class:`UserError` a configured class's constructor raised (a head checking its ``init_args``) that
  jsonargparse, instantiating the classes, re-raised from it as its own ``ValueError`` (the innermost frame is
  jsonargparse's): the constructor's message;
* Lightning's ``MisconfigurationException``, wherever it is raised;
* a ``ValueError`` / ``TypeError`` raised by Lightning's own code (the innermost frame is in Lightning) while its
  accelerator connector (:data:`LIGHTNING_FLAG_CHECK`, a frame the traceback passes through) checks the Trainer's
  flags: ``--trainer.accelerator``, ``devices``, ``strategy``, ``precision`` (``--trainer.devices x`` fails in
  Lightning's device parser, beneath the connector). One that the connector gets from another library (torch) is
  not a check of a flag: a bug;
* any ``OSError`` (``FileNotFoundError``, ``NotADirectoryError``, ``PermissionError``, ``IsADirectoryError``, a
  hub repository that does not exist, no network): it reports the environment (a path, a permission, a URL), not a
  code path, wherever it was raised;
* ``ModuleNotFoundError`` of a module that is not this package's: a dependency is not installed (an optional one
  such as ``pyarrow``). A module of the package that does not exist (a stale import path) is a bug.

Anything else is a bug: a plain ``ValueError`` (raised by torch, transformers, ``int("x")`` in our code, or a
``raise ValueError`` the package should have made a :class:`UserError`), an ``ImportError`` that is not a missing
module, and an internal invariant of the package that fails: :class:`InternalError` (a ``RuntimeError`` whose
message says it is a bug: "rows do not split into groups", "combine needs one score per member"), or an
``AssertionError``.

An exception that crossed a process boundary arrives as text: a DataLoader worker's error is re-raised by torch
with the worker's traceback in its message, a ``ddp_spawn`` process's error as ``ProcessRaisedException``. The same
rule is applied to the type that text names on its last line (``selfens_pl.errors.UserError``, an ``OSError`` name,
``ModuleNotFoundError``, ``MisconfigurationException``; the connector's checks run in the main process only).
Under ``--trainer.strategy ddp`` every process runs this command: a process other than rank 0 names its rank and
reports a moment later, so that an error every process meets (a broken data file) is reported once, by rank 0,
which stops the other processes as it fails (:class:`selfens_pl.lit.cli.SelfEnsembleCLI`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

PROG = "selfens_pl"
DEBUG_ENV = "SELFENS_PL_DEBUG"
EXIT_USER_ERROR = 2
PACKAGE = __name__.split(".")[0]
PACKAGE_DIR = Path(__file__).resolve().parent

#: The Lightning module that checks the Trainer's flags (``--trainer.accelerator``, ``devices``, ``strategy``,
#: ``precision``): a ValueError / TypeError that Lightning raises beneath it is the user's.
LIGHTNING_FLAG_CHECK = "accelerator_connector.py"
#: Lightning's packages (the unified one and the standalone ones).
LIGHTNING_PACKAGES = ("lightning", "lightning_fabric", "pytorch_lightning")

#: The exception types, as another process's traceback names them, that are the user's (module docstring).
_OS_ERRORS = {"OSError", "IOError", "FileNotFoundError", "FileExistsError", "NotADirectoryError", "IsADirectoryError",
              "PermissionError", "ConnectionError", "ConnectionRefusedError", "ConnectionResetError",
              "ConnectionAbortedError", "BrokenPipeError", "TimeoutError"}
_USER_ERRORS = {"UserError", f"{__name__}.UserError"}


class UserError(ValueError):
    """A mistake in what the user gave (a flag, a config key, a data file, a record, a path): the command prints its
    message on one line and exits with status 2. A ``ValueError`` subclass, so ``except ValueError`` still catches
    it. Raised by the package wherever it checks its input; anything else that fails is a bug."""


class InternalError(RuntimeError):
    """An internal invariant of the package failed (two of its own structures disagree, a function got what its
    callers in the package never pass): a bug, never the user's mistake, whatever input led there. The command
    prints its traceback (status 1), and the message says it is a bug."""

    def __str__(self) -> str:  # not in __init__: a pickled copy (another process) keeps the args as given
        return f"{super().__str__()} (internal error: a bug in {PACKAGE}, please report it)"


class UsageError(Exception):
    """A command-line parse error: an unknown flag or config key, a bad value, a missing argument."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


# -- parse errors --------------------------------------------------------------------------------------------------
@contextmanager
def parse_errors_raise():
    """While the block runs, a parser that would print its usage and exit with status 2 raises :class:`UsageError`
    instead: one place for every parser of every command (LightningCLI's jsonargparse parsers and the verbs' own
    argparse / jsonargparse parsers), so none of them needs its own handling. ``--help`` is unaffected."""
    import jsonargparse

    def argparse_error(self, message):
        raise UsageError(message)

    original = jsonargparse.ArgumentParser.error

    def jsonargparse_error(self, message, ex=None):
        # exit_on_error=False: jsonargparse parses a nested value (a class's init_args, a union member) and catches
        # the error itself; leave that path alone
        if not self.exit_on_error:
            return original(self, message, ex)
        raise UsageError(message) from ex

    saved = argparse.ArgumentParser.error, original
    argparse.ArgumentParser.error, jsonargparse.ArgumentParser.error = argparse_error, jsonargparse_error
    try:
        yield
    finally:
        argparse.ArgumentParser.error, jsonargparse.ArgumentParser.error = saved


_PARSER_KEY = re.compile(r'^Parser key "([^"]+)":\s*(.*)$')
_LITERAL = re.compile(r"^Expected a typing\.Literal\[(.*)\]\.?(?: Got value: (.*))?$")
_EXPECTED = re.compile(r"^Expected a <class '([\w.]+)'>\.?(?: Got value: (.*))?$")
_NOT_ACCEPTED = re.compile(r"^Option '([^']+)' is not accepted$")
_NOISE = re.compile(r"^(Does not validate against any of the Union subtypes|Subtypes:|Errors:|Given value type:|"
                    r"Expected a <class 'NoneType'>|Expected a path but )")


def summarize_parse_error(message: str, argv: list[str] | None = None) -> str:
    """One line naming the flag from a (possibly multi-line, nested) jsonargparse / argparse error message.

    ``Parser key "model.head": ... class_path 'selfens_pl.heads.LogitFusion': Parser key "method": Expected a
    typing.Literal['avg', 'max']. Got value: x`` becomes ``--model.head.init_args.method='x': choose one of avg,
    max``. A message it does not recognise is joined onto one line. A config file that is not valid YAML is named
    from ``argv`` (jsonargparse's message does not name it)."""
    if message.startswith("Problems parsing config") and argv:
        configs = _config_files(argv)
        if len(configs) == 1:
            message = f"--config {configs[0]}: {message}"
    lines = [re.sub(r"^- ", "", line.strip()) for line in message.strip().splitlines()]  # "- " bullets
    lines = [line for line in lines if line]
    keys, given, class_path, detail = [], None, False, None
    for line in lines:
        match = _PARSER_KEY.match(line)
        if match and detail is None:
            keys.append(("init_args." if class_path and keys else "") + match.group(1))
            if match.group(2):
                detail = match.group(2)
            continue
        if line.startswith("Given value:"):
            given = given or line.split(":", 1)[1].strip()
            continue
        if line.startswith("Problem with given class_path"):
            class_path = True
            continue
        if detail is None and not _NOISE.match(line):
            detail = line
    if not keys or detail is None:
        return one_line(message)
    flag = "--" + ".".join(keys)
    if match := _LITERAL.match(detail):
        choices = ", ".join(c.strip().strip("'\"") for c in match.group(1).split(","))
        value = match.group(2) if match.group(2) is not None else given
        return f"{flag}={value!r}: choose one of {choices}"
    if match := _NOT_ACCEPTED.match(detail):
        return f"{flag}{'.init_args' if class_path else ''}.{match.group(1)}: no such option"
    if match := _EXPECTED.match(detail):
        value = match.group(2) if match.group(2) is not None else given
        nullable = " (or null)" if any("NoneType" in line for line in lines) else ""
        return f"{flag}={value!r}: expected a{'n' if match.group(1)[0] in 'aeiou' else ''} {match.group(1)}{nullable}"
    if given and not given.startswith(("NestedArg(", "{")):
        return one_line(f"{flag}={given!r}: {detail}")
    return one_line(f"{flag}: {detail}")


def _config_files(argv: list[str]) -> list[str]:
    files = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


# -- classification ------------------------------------------------------------------------------------------------
def one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())


def user_error_message(exc: BaseException, argv: list[str] | None = None) -> str | None:
    """The one-line message for a user error (see the module docstring for the rule), ``None`` for a bug.
    ``argv``: the command line, to name a config file a parse error is about."""
    if isinstance(exc, UsageError):
        return summarize_parse_error(str(exc), argv)
    if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt: not ours to report
        return None
    remote = _remote_exception(exc)  # first: torch re-raises a worker's UserError as a UserError holding its text
    if remote is not None:
        return _remote_message(*remote)
    if isinstance(exc, UserError) or _is_misconfiguration(type(exc)):
        return one_line(exc)
    if (wrapped := _instantiation_cause(exc)) is not None:
        return one_line(wrapped)
    if isinstance(exc, OSError):
        return _os_error_message(exc)
    if isinstance(exc, ModuleNotFoundError) and not _is_own_module(exc.name):
        return f"{exc} (a dependency is missing: install it)"
    if isinstance(exc, (ValueError, TypeError)) and _lightning_flag_check(exc):
        return one_line(exc)
    return None


def _instantiation_cause(exc: BaseException) -> UserError | None:
    """The :class:`UserError` a class's constructor raised (a head checking its ``init_args``) when jsonargparse,
    instantiating the configured classes, re-raised it as its own ``ValueError`` (``raise ... from`` it: "Does not
    validate against any of the Union subtypes", the failed constructor's message among the others); ``None`` for
    anything else."""
    if not isinstance(exc, ValueError) or not isinstance(exc.__cause__, UserError):
        return None
    files = list(_frame_files(exc))
    return exc.__cause__ if files and "jsonargparse" in files[-1].parts else None


def _os_error_message(exc: OSError) -> str:
    if exc.strerror and exc.filename is not None:  # from the OS: "[Errno 13] Permission denied: 'x'"
        target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
        return one_line(f"{target}: {exc.strerror}")
    return one_line(exc)


def _is_misconfiguration(cls: type) -> bool:
    return any(c.__name__ == "MisconfigurationException" and c.__module__.split(".")[0] in LIGHTNING_PACKAGES
               for c in cls.__mro__)


def _is_own_module(name: str | None) -> bool:
    return bool(name) and (name == PACKAGE or name.startswith(PACKAGE + "."))


def _lightning_dirs() -> list[Path]:
    """The directories of Lightning's packages that are imported (an exception cannot come from one that is not)."""
    dirs = []
    for name in LIGHTNING_PACKAGES:
        file = getattr(sys.modules.get(name), "__file__", None)
        if file:
            dirs.append(Path(file).resolve().parent)
    return dirs


def _lightning_flag_check(exc: BaseException) -> bool:
    """Whether Lightning raised ``exc`` itself (its innermost frame is Lightning's) beneath its accelerator
    connector (the traceback passes through :data:`LIGHTNING_FLAG_CHECK`)."""
    dirs = _lightning_dirs()
    files = list(_frame_files(exc))
    if not dirs or not files:
        return False

    def in_lightning(path: Path) -> bool:
        try:
            return any(path.resolve().is_relative_to(d) for d in dirs)
        except (OSError, ValueError):  # a frame without a real file ("<string>")
            return False

    return in_lightning(files[-1]) and any(f.name == LIGHTNING_FLAG_CHECK and in_lightning(f) for f in files)


def _frame_files(exc: BaseException):
    """The file of each frame of ``exc``'s traceback, outermost first."""
    tb = exc.__traceback__
    while tb is not None:
        yield Path(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next


# -- errors from other processes (DataLoader workers, ddp_spawn) ---------------------------------------------------
_FRAME = re.compile(r'^\s+File "[^"]+", line \d+')
_LAST_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?:: (.*))?$")
_PROCESS = re.compile(r"-- Process (\d+) terminated")


def _remote_exception(exc: Exception) -> tuple[str, str, str | None] | None:
    """``(type name as the text writes it, message, process)`` of the original exception when ``exc`` carries
    another process's traceback as text, else ``None``. The type name is the first line after the frames (each
    frame is indented): ``selfens_pl.errors.UserError`` for the package's, ``FileNotFoundError`` for a builtin."""
    text = str(exc)
    start = text.rfind("Traceback (most recent call last):")
    if start < 0:
        return None
    lines = text[start:].splitlines()[1:]
    last = next((i for i, line in enumerate(lines) if line.strip() and not line.startswith(" ")), None)
    if last is None or not any(_FRAME.match(line) for line in lines[:last]):  # no frame: not a traceback
        return None
    match = _LAST_LINE.match(lines[last])
    if match is None:
        return None
    message = " ".join([match.group(2) or "", *lines[last + 1:]])
    process = _PROCESS.search(text[:start])
    return match.group(1), one_line(message), process and process.group(1)


def _remote_message(type_name: str, message: str, process: str | None) -> str | None:
    module, _, name = type_name.rpartition(".")
    user = (type_name in _USER_ERRORS or (not module and name in _OS_ERRORS)
            or (name == "MisconfigurationException" and module.split(".")[0] in LIGHTNING_PACKAGES)
            or (type_name == "ModuleNotFoundError" and not _is_own_module(_missing_module(message))))
    if not user:
        return None
    return f"rank {process}: {message}" if process is not None else message


def _missing_module(message: str) -> str | None:
    match = re.match(r"No module named '([^']+)'", message)
    return match and match.group(1)
