"""Progress for long collections on the terminal (rich)."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from collector.fetch import FetchCounters
from collector.model import SliceKey
from collector.pipeline import Progress as ProgressCallbacks


class RichProgress(ProgressCallbacks):
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.rows = 0
        self.failed = 0
        self._counters = FetchCounters()
        self._bar = Progress(
            TextColumn("[bold]slices"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not enabled,
            transient=False,
        )
        self._task = self._bar.add_task("collect", total=None, info="")

    def __enter__(self) -> RichProgress:
        self._bar.__enter__()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bar.__exit__(t, e, tb)

    def set_total(self, total: int) -> None:
        self._bar.update(self._task, total=total)

    def _info(self) -> str:
        c = self._counters
        return f"rows {self.rows:,}  retries {c.retries}  throttled {c.throttles}  failed {self.failed}"

    def slices_written(self, keys: Sequence[SliceKey], rows: int) -> None:
        self.rows += rows
        self._bar.update(self._task, advance=len(keys), info=self._info())

    def slice_failed(self, key: SliceKey, reason: str) -> None:
        self.failed += 1
        self._bar.update(self._task, advance=1, info=self._info())

    def counters(self, counters: FetchCounters) -> None:
        self._counters = counters
