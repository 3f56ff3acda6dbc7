"""JSON forms of what crosses a process boundary: events, results, links, the config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ._config import DownloadConfig
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
from ._integrity import FileChecks
from ._models import BackupLinks, parse_links
from ._result import FileResult
from ._retry import RetryPolicy

_EVENTS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        BackupStarted,
        FileStarted,
        FileProgress,
        FileRetry,
        LinksRefreshed,
        FileSkipped,
        FileDone,
        FileFailed,
    )
}


def event_to_json(event: Event) -> dict[str, Any]:
    return {"type": type(event).__name__, **dataclasses.asdict(event)}


def event_from_json(data: dict[str, Any]) -> Event:
    cls = _EVENTS[data.pop("type")]
    event: Event = cls(**data)
    return event


def result_to_json(result: FileResult) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    data["path"] = str(result.path)
    data["checks"] = result.checks.to_json() if result.checks else None
    return data


def result_from_json(data: dict[str, Any]) -> FileResult:
    checks = FileChecks.from_json(data["checks"]) if data.get("checks") else None
    return FileResult(**{**data, "path": Path(data["path"]), "checks": checks})


def config_to_json(config: DownloadConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_json(data: dict[str, Any]) -> DownloadConfig:
    return DownloadConfig(**{**data, "retry": RetryPolicy(**data["retry"])})


def links_to_json(links: BackupLinks) -> dict[str, Any]:
    return links.to_json()


def links_from_json(data: dict[str, Any]) -> BackupLinks:
    return parse_links(data)
