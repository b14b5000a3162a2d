"""A progress bar for the verbs that work outside a Lightning Trainer (``paraphrase``; ``sweep`` may use it too),
drawn like predict's (Lightning's ``RichProgressBar``): description, bar, ``done/total``, ``elapsed • remaining`` and
the rate, in the verb's own unit::

    Paraphrasing ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 48/200 0:01:03 • 0:03:20 0.76 questions/s

    with ProgressBar(total=200, description="Paraphrasing", unit="questions") as bar:
        for batch in batches:
            ...
            bar.advance(len(batch))

It writes to stdout, as predict's bar does, so that stderr keeps only warnings and errors (a user error is the one
line there). On a terminal it is a live bar; otherwise (a log file, a pipe, CI) it prints one plain line every
``every`` items and at the end, so a long run still shows how far it is and when it will end.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta


def _clock(seconds: float | None) -> str:
    return "-:--:--" if seconds is None else str(timedelta(seconds=int(seconds)))


class ProgressBar:
    """``total`` items (``done`` of them finished before this run: a resumed run), advanced with :meth:`advance`.

    The rate and the remaining time count only the items this run did. ``stream`` defaults to ``sys.stdout``;
    ``every`` (plain lines only) defaults to a tenth of the remaining items.
    """

    def __init__(self, total: int, description: str, unit: str = "items", done: int = 0, stream=None,
                 every: int | None = None):
        self.total, self.description, self.unit = int(total), description, unit
        self.done = self.start_done = int(done)
        self.stream = stream or sys.stdout
        self.every = max(1, every or (self.total - self.done) // 10)
        self._last_line = self.done
        self._live = None
        if getattr(self.stream, "isatty", lambda: False)():
            self._live = self._rich_bar()
        self.start = time.perf_counter()  # after drawing the bar: importing its columns is no work done

    # -- figures ---------------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def rate(self) -> float | None:
        """Items per second in this run (``None`` before the first)."""
        done, seconds = self.done - self.start_done, self.elapsed()
        return done / seconds if done and seconds > 0 else None

    def remaining(self) -> float | None:
        rate = self.rate()
        return None if rate is None else (self.total - self.done) / rate

    def line(self) -> str:
        """The plain form: ``Paraphrasing 48/200 0:01:03 • 0:03:20 0.76 questions/s``."""
        rate = self.rate()
        speed = "-" if rate is None else f"{rate:.2f}"
        return (f"{self.description} {self.done}/{self.total} {_clock(self.elapsed())} • "
                f"{_clock(self.remaining())} {speed} {self.unit}/s")

    # -- drawing -----------------------------------------------------------------------------------------------------
    def _rich_bar(self):
        # Lightning's own columns and theme: the same look as predict's bar
        from lightning.pytorch.callbacks.progress.rich_progress import (
            BatchesProcessedColumn,
            CustomBarColumn,
            CustomTimeColumn,
            RichProgressBarTheme,
        )
        from rich.console import Console
        from rich.progress import Progress, TextColumn

        theme = RichProgressBarTheme()
        progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            CustomBarColumn(complete_style=theme.progress_bar, finished_style=theme.progress_bar_finished,
                            pulse_style=theme.progress_bar_pulse),
            BatchesProcessedColumn(style=theme.batch_progress),
            CustomTimeColumn(style=theme.time),
            TextColumn("{task.fields[speed]}", style=theme.processing_speed),
            console=Console(file=self.stream), auto_refresh=True, refresh_per_second=2)
        progress.start()
        self._task = progress.add_task(self.description, total=self.total, completed=self.done, speed="")
        return progress

    def advance(self, n: int = 1) -> None:
        """``n`` more items done."""
        self.done = min(self.total, self.done + int(n))
        if self._live is not None:
            rate = self.rate()
            self._live.update(self._task, completed=self.done,
                              speed=f"{rate:.2f}{self.unit}/s" if rate is not None else "")
        elif self.done - self._last_line >= self.every or self.done == self.total:
            self._last_line = self.done
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
