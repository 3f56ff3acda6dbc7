"""What the download engine tells its subscribers (progress bars, logs, a library's own code).

A subscriber is any callable taking one event; it runs on the event loop, so it must be quick
and must not raise (an exception from a subscriber is logged and dropped).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger("dcs_backup.events")


@dataclass(frozen=True)
class BackupStarted:
    backup_id: str
    files: int
    total_bytes: int | None  # None while some sizes are unknown


@dataclass(frozen=True)
class FileStarted:
    name: str
    size: int | None
    offset: int  # bytes already on disk (resumed from)


@dataclass(frozen=True)
class FileProgress:
    name: str
    done: int
    size: int | None
    delta: int  # new bytes since the previous event; negative when a file starts over


@dataclass(frozen=True)
class FileRetry:
    name: str
    failures: int
    delay: float
    reason: str


@dataclass(frozen=True)
class LinksRefreshed:
    count: int  # refresh calls so far
    reason: str


@dataclass(frozen=True)
class FileSkipped:
    name: str
    size: int
    reason: str


@dataclass(frozen=True)
class FileDone:
    name: str
    size: int
    resumed_from: int
    seconds: float


@dataclass(frozen=True)
class FileFailed:
    name: str
    error: str


Event = (
    BackupStarted
    | FileStarted
    | FileProgress
    | FileRetry
    | LinksRefreshed
    | FileSkipped
    | FileDone
    | FileFailed
)
Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers each event to every subscriber, isolating the engine from their failures."""

    def __init__(self, subscribers: Iterable[Subscriber] = ()) -> None:
        self._subscribers = list(subscribers)

    def emit(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber %r failed", subscriber)
