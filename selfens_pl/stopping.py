"""Stopping on SIGTERM and SIGINT: after the batch in flight, everything finished kept, one line saying how to resume.

:func:`selfens_pl.cli.main` runs every command under :func:`handle_signals`, so that a batch scheduler's preemption
(SIGTERM, then SIGKILL after a grace period) and Ctrl-C (SIGINT) stop a command the same way:

* inside a loop that writes its results batch by batch (:func:`enter` ... :func:`leave`, or :func:`after_batch`:
  predict's loop, the sweep's engine pass, paraphrase's loop), a signal is noted and the loop stops at the next
  :func:`checkpoint`, which it reaches once the batch in flight is on disk (the predict writer after a batch's commit
  line, :func:`selfens_pl.jsonl.append_jsonl` after an append); leaving the loop with a stop noted stops there;
* anywhere else (reading the data, loading the model, merging, writing a summary) the command stops at once: nothing
  there is half-written (those files are replaced atomically) and no finished batch is lost;
* a second signal stops at once, inside a loop too (the batch in flight is then answered again on resume).

Stopping raises :class:`Stopped`, a ``BaseException`` as ``KeyboardInterrupt`` is (no ``except Exception`` on the
way swallows it; Lightning passes it on after its ``on_exception`` hooks). :func:`selfens_pl.cli.main` prints one line
on stderr, ``selfens_pl: stopped by SIGTERM ...``, naming where the finished work is and the command that resumes
(:func:`resumable`: a command that knows it can be resumed says so and what to add to its command line), and exits
with ``128 + the signal's number`` (143 for SIGTERM, 130 for SIGINT), as a shell reports a process a signal ended.

Below every layer: imports nothing of the package.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

#: The signals that stop a command cleanly.
SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGINT", None)) if s is not None)


class Stopped(BaseException):
    """A command stopped by ``signum``; ``after_batch``: at a checkpoint, after the batch in flight was written."""

    def __init__(self, signum: int, after_batch: bool = False):
        super().__init__(signum, after_batch)
        self.signum, self.after_batch = int(signum), after_batch
        #: ``(kept, resume_args)`` of :func:`resumable` when the stop left :func:`handle_signals`, else ``None``.
        self.hint: tuple[str, list[str]] | None = None

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def status(self) -> int:
        """The exit status: ``128 + signum``, as a shell reports a process ended by the signal."""
        return 128 + self.signum

    def __str__(self) -> str:
        return f"stopped by {self.name}" + (" after the batch in flight" if self.after_batch else "")


class _State:
    def __init__(self) -> None:
        self.installed = False
        self.pid = os.getpid()  # the process that installed the handlers
        self.depth = 0  # loops entered (enter/leave) and not left
        self.pending: int | None = None  # a signal noted inside a loop, not acted on yet
        self.kept: str | None = None  # where the finished work is (resumable)
        self.resume_args: list[str] = []  # what the command line needs to resume (predict: --resume true)


_STATE = _State()


def _handler(signum, frame) -> None:
    if os.getpid() != _STATE.pid:  # a forked child (a DataLoader worker): the command's own process decides
        return
    if _STATE.depth and _STATE.pending is None:
        _STATE.pending = signum  # stop once the batch in flight is written
        return
    _STATE.pending = None
    raise Stopped(signum)


@contextmanager
def handle_signals():
    """While the block runs, SIGTERM and SIGINT stop the command as the module docstring says (the main thread
    only: elsewhere Python cannot set a handler, and the block changes nothing)."""
    if _STATE.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    _STATE.__init__()
    _STATE.installed, _STATE.pid = True, os.getpid()
    try:
        yield
    except Stopped as stop:
        stop.hint = resume_hint()
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        _STATE.__init__()


def resumable(kept: str, resume_args: list[str] | None = None) -> None:
    """The running command keeps its finished work in ``kept`` and resumes with its own command line plus
    ``resume_args``: a stop says so."""
    _STATE.kept, _STATE.resume_args = str(kept), list(resume_args or [])


def resume_hint() -> tuple[str, list[str]] | None:
    """``(kept, resume_args)`` of :func:`resumable`, ``None`` when the command said nothing."""
    return None if _STATE.kept is None else (_STATE.kept, list(_STATE.resume_args))


def enter() -> None:
    """A loop that writes batch by batch starts: a signal now waits for its next :func:`checkpoint`."""
    _STATE.depth += 1


def leave(stop_pending: bool = True) -> None:
    """The loop ends; with ``stop_pending`` (it ended normally) a stop noted meanwhile takes effect now."""
    _STATE.depth = max(0, _STATE.depth - 1)
    if not _STATE.depth:
        if stop_pending:
            checkpoint()
        _STATE.pending = None  # the loop failed: its error is reported, not a stop


def checkpoint() -> None:
    """The batch in flight is written: stop here if a signal was noted (raises :class:`Stopped`)."""
    if _STATE.pending is not None:
        signum, _STATE.pending = _STATE.pending, None
        raise Stopped(signum, after_batch=True)


@contextmanager
def after_batch():
    """:func:`enter` ... :func:`leave` around a loop that calls :func:`checkpoint` after each batch it writes."""
    enter()
    try:
        yield
    except BaseException:
        leave(stop_pending=False)
        raise
    leave()
