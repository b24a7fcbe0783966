"""``fiml replay``'s progress bar: records done of the range's total, and records a second.

Shown only on a terminal (stderr), and only for a long run: a range of more than
``AFTER_RECORDS`` records, or one still running after ``AFTER_S`` seconds. A pipe or a file
never receives any of it, whatever ``FORCE_COLOR`` or the like say.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["AFTER_RECORDS", "AFTER_S", "RangeProgress"]

AFTER_RECORDS = 200_000
AFTER_S = 2.0


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} records/s" if speed else "", style="progress.data.speed")


class RangeProgress:
    """A callable ``(done, total)`` that draws the bar once the run is long enough; ``close``
    removes nothing (the last state stays on screen above the summary line)."""

    def __init__(
        self,
        label: str,
        is_tty: bool,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
        after_records: int | None = None,
        after_s: float | None = None,
    ) -> None:
        self._label, self._is_tty, self._clock = label, is_tty, clock
        self._after_records = AFTER_RECORDS if after_records is None else after_records
        self._after_s = AFTER_S if after_s is None else after_s
        self._console = console
        self._started = clock()
        self._bar: Progress | None = None
        self._task = TaskID(0)

    @property
    def shown(self) -> bool:
        """Whether the bar has been drawn."""
        return self._bar is not None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            if not self._is_tty:
                return
            if total <= self._after_records and self._clock() - self._started <= self._after_s:
                return
            # narrow enough for 80 columns: a label, the bar, done/total, rate, time left
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                _RateColumn(),
                TimeRemainingColumn(),
                console=self._console or Console(stderr=True),
                transient=False,
            )
            self._task = self._bar.add_task(self._label, total=total)
            self._bar.start()
        self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        """Stop drawing (if the bar was shown)."""
        if self._bar is not None:
            self._bar.stop()
