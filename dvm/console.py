"""Terminal output shared by the commands: a rich console, JSON output, a progress bar that is silent
when stdout is not a terminal."""

from __future__ import annotations

import json
import sys


def console(stderr: bool = False):
    from rich.console import Console  # noqa: PLC0415 - rich only when rendering

    return Console(stderr=stderr, highlight=False)


def interactive(args) -> bool:
    return sys.stdout.isatty() and not getattr(args, "json", False)


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class Progress:
    """A rich progress bar on a terminal; silent otherwise."""

    def __init__(self, enabled: bool, description: str):
        self.enabled = enabled
        self.description = description
        self._progress = None
        self._task = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415 - rich only when rendering

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                                      console=console(stderr=True), transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=None)
        return self

    def update(self, done: int, total: int | None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
