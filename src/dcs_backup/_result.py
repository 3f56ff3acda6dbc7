"""What a download reports back: per file, and for the whole backup."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ._integrity import FileChecks

FileStatus = Literal["downloaded", "skipped", "failed"]


@dataclass(frozen=True)
class FileResult:
    name: str
    status: FileStatus
    path: Path
    size: int | None = None
    resumed_from: int = 0
    seconds: float = 0.0
    error: str | None = None
    checks: FileChecks | None = None


@dataclass(frozen=True)
class DownloadResult:
    """The outcome of ``download_backup``: ``ok`` is True when every file is complete."""

    backup_id: str
    directory: Path
    files: tuple[FileResult, ...]
    seconds: float
    bytes_received: int
    retries: int
    refreshes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(f.status != "failed" for f in self.files)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files if f.status != "failed")

    def to_json(self) -> dict[str, Any]:
        seconds = max(self.seconds, 1e-9)
        return {
            "backup_id": self.backup_id,
            "directory": str(self.directory),
            "ok": self.ok,
            "files": [
                {
                    "name": f.name,
                    "status": f.status,
                    "size": f.size,
                    "resumed_from": f.resumed_from,
                    "seconds": round(f.seconds, 3),
                    "error": f.error,
                    "verified": f.checks.verified if f.checks else [],
                }
                for f in self.files
            ],
            "total_bytes": self.total_bytes,
            "bytes_received": self.bytes_received,
            "seconds": round(self.seconds, 3),
            "throughput_mib_s": round(self.bytes_received / seconds / 2**20, 2),
            "retries": self.retries,
            "refreshes": self.refreshes,
        }
