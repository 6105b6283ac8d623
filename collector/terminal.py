"""Progress of long collections on the terminal (rich)."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from rich import progress as bar
from rich.console import Console

from collector.model import SliceKey
from collector.progress import Progress
from collector.retry import Counters


class RichProgress(Progress):
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.rows = 0
        self.failed = 0
        self._counters = Counters()
        self._bar = bar.Progress(
            bar.TextColumn("[bold]slices"),
            bar.BarColumn(),
            bar.MofNCompleteColumn(),
            bar.TextColumn("{task.fields[info]}"),
            bar.TimeElapsedColumn(),
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

    def counters(self, counters: Counters) -> None:
        self._counters = counters
