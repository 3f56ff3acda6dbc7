"""Progress display: one subscriber of the engine's events (tqdm bars, or plain log lines)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

from ._events import (
    BackupStarted,
    Event,
    FileDone,
    FileFailed,
    FileProgress,
    FileRetry,
    FileSkipped,
    FileStarted,
    LinksRefreshed,
)

MiB = 1024 * 1024


def _mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


class Progress:
    """Shows a backup's progress on ``stream`` (stderr by default).

    On a terminal: a bar per active file plus a total bar. Otherwise (a log, a pipe, or
    ``bars=False``): a plain line every ``interval`` seconds, and one per notable event.
    """

    def __init__(
        self, *, stream: TextIO | None = None, bars: bool | None = None, interval: float = 5.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.bars = self.stream.isatty() if bars is None else bars
        self.interval = interval
        self.total: int | None = None
        self.done = 0
        self.files = 0
        self.finished = 0
        self.active: dict[str, int | None] = {}
        self._started = time.monotonic()
        self._last_line = self._started
        self._total_bar: tqdm[Any] | None = None
        self._file_bars: dict[str, tqdm[Any]] = {}
        self._free_positions: list[int] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, BackupStarted):
            self.total, self.files = event.total_bytes, event.files
            if self.bars:
                self._total_bar = tqdm(
                    total=event.total_bytes,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=f"total ({event.files} files)",
                    position=0,
                    file=self.stream,
                    dynamic_ncols=True,
                    mininterval=0.2,
                )
        elif isinstance(event, FileStarted):
            self.active[event.name] = event.size
            self.done += event.offset
            if self._total_bar is not None:
                self._total_bar.update(event.offset)
            if self.bars:
                self._open_file_bar(event)
            elif event.offset:
                self._say(f"resuming {event.name} at {_mib(event.offset)}")
        elif isinstance(event, FileProgress):
            self.done += event.delta
            bar = self._file_bars.get(event.name)
            if bar is not None:
                if event.size is not None and bar.total != event.size:
                    bar.total = event.size
                bar.update(event.delta)
            if self._total_bar is not None:
                self._total_bar.update(event.delta)
            elif not self.bars:
                self._maybe_line()
        elif isinstance(event, FileSkipped):
            self.finished += 1
            self.done += event.size
            if self._total_bar is not None:
                self._total_bar.update(event.size)
            self._say(f"{event.name}: {event.reason}")
        elif isinstance(event, FileRetry):
            self._say(f"retry {event.name} in {event.delay:.1f}s: {event.reason}")
        elif isinstance(event, LinksRefreshed):
            self._say(f"download links refreshed ({event.reason})")
        elif isinstance(event, FileDone):
            self.finished += 1
            self.active.pop(event.name, None)
            self._close_file_bar(event.name)
            if not self.bars:
                self._say(f"done {event.name} ({_mib(event.size)}, {event.seconds:.1f}s)")
        elif isinstance(event, FileFailed):
            self.active.pop(event.name, None)
            self._close_file_bar(event.name)
            self._say(f"FAILED {event.name}: {event.error}")

    def close(self) -> None:
        for name in list(self._file_bars):
            self._close_file_bar(name)
        if self._total_bar is not None:
            self._total_bar.close()
            self._total_bar = None

    def _open_file_bar(self, event: FileStarted) -> None:
        position = self._free_positions.pop(0) if self._free_positions else len(self._file_bars) + 1
        name = event.name if len(event.name) <= 40 else "…" + event.name[-39:]
        self._file_bars[event.name] = tqdm(
            total=event.size,
            initial=event.offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=name,
            position=position,
            leave=False,
            file=self.stream,
            dynamic_ncols=True,
            mininterval=0.2,
        )

    def _close_file_bar(self, name: str) -> None:
        bar = self._file_bars.pop(name, None)
        if bar is not None:
            position = bar.pos
            bar.close()
            self._free_positions.append(abs(position))
            self._free_positions.sort()

    def _say(self, text: str) -> None:
        if self.bars:
            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _maybe_line(self) -> None:
        now = time.monotonic()
        if now - self._last_line < self.interval:
            return
        self._last_line = now
        elapsed = max(now - self._started, 1e-6)
        rate = self.done / elapsed
        part = f"{_mib(self.done)}"
        if self.total:
            left = max(self.total - self.done, 0)
            eta = f", ETA {left / rate:.0f}s" if rate > 0 else ""
            part += f" of {_mib(self.total)} ({100 * self.done / self.total:.0f}%){eta}"
        self._say(
            f"[{elapsed:.0f}s] {part}, {rate / MiB:.1f} MiB/s, {len(self.active)} active, "
            f"{self.finished}/{self.files} files done"
        )
