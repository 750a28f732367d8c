"""Progress on the console for ``p2pk simulate`` and ``p2pk run``: live bars on a terminal, plain
lines otherwise (piped, in CI, under nohup), so a log shows the run as it goes rather than
nothing until the end.

Tasks are keyed by the caller; :meth:`Progress.update` sets a task's completed count and
description. In plain mode a line is printed when a task's count changes (each finished
round), with the elapsed time; :meth:`Progress.say` prints a line in either mode.
"""

from __future__ import annotations

import sys
import time
from typing import Hashable, TextIO


class Progress:
    """``with Progress(stream) as progress: progress.add(key, description, total); …``"""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._bars = None
        self._tasks: dict[Hashable, object] = {}
        self._state: dict[Hashable, tuple[int, int]] = {}
        self._start = time.monotonic()

    def __enter__(self) -> "Progress":
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bars, TextColumn, TimeElapsedColumn

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self._bars = Bars(*columns, console=Console(file=self.stream))
            self._bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.__exit__(*exc)
            self._bars = None

    def add(self, key: Hashable, description: str, total: int) -> None:
        """A new task (no-op when ``key`` is known)."""
        if key in self._state:
            return
        self._state[key] = (0, total)
        if self._bars is not None:
            self._tasks[key] = self._bars.add_task(description, total=total)

    def update(self, key: Hashable, completed: int, description: str) -> None:
        """Set a task's completed count and description; a plain line when the count moved."""
        done, total = self._state[key]
        self._state[key] = (completed, total)
        if self._bars is not None:
            self._bars.update(self._tasks[key], completed=completed, description=description)
        elif completed != done:
            self.say(f"{description} [{completed}/{total}]")

    def say(self, message: str) -> None:
        """One line, above the bars on a terminal; with the elapsed time otherwise."""
        if self._bars is not None:
            self._bars.console.print(message, markup=False, highlight=False)
        else:
            elapsed = time.monotonic() - self._start
            print(f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {message}", file=self.stream, flush=True)
