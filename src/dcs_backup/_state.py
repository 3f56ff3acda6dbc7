"""Where a file lives while it downloads, and the small resume state beside it.

``<name>.part`` holds the bytes so far; ``<name>.state`` (JSON) says which object they belong
to (backup id, size, ETag). The state is keyed by backup and file name, never by URL, so a
later run resumes with fresh links. The bytes done are the ``.part`` file's length.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_VERSION = 1


@dataclass(frozen=True)
class ResumeState:
    backup_id: str
    file_name: str
    size: int | None
    etag: str | None
    md5_etag: bool = False  # the ETag is the MD5 of the bytes (single part, not encrypted)
    # Segmented downloads: [start, end (exclusive), bytes done from start] per range.
    segments: list[list[int]] | None = None


class FilePaths:
    """The final, partial and state paths of one file inside the output directory."""

    def __init__(self, directory: Path, name: str) -> None:
        self.final = directory / name
        self.part = directory / f"{name}.part"
        self.state = directory / f"{name}.state"


def load_state(paths: FilePaths, backup_id: str) -> ResumeState | None:
    """The saved state if it is readable and belongs to this backup and file, else None."""
    try:
        data = json.loads(paths.state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        return None
    size, etag = data.get("size"), data.get("etag")
    if data.get("backup_id") != backup_id or data.get("file_name") != paths.final.name:
        return None
    if not (size is None or (isinstance(size, int) and size >= 0)):
        return None
    if not (etag is None or isinstance(etag, str)):
        return None
    segments = data.get("segments")
    if segments is not None and not _valid_segments(segments, size):
        return None
    return ResumeState(
        backup_id=backup_id,
        file_name=paths.final.name,
        size=size,
        etag=etag,
        md5_etag=data.get("md5_etag") is True,
        segments=segments,
    )


def _valid_segments(segments: object, size: int | None) -> bool:
    """Ranges that tile [0, size) in order, each with 0 <= done <= its length."""
    if size is None or not isinstance(segments, list) or not segments:
        return False
    position = 0
    for item in segments:
        if not (isinstance(item, list) and len(item) == 3 and all(type(x) is int for x in item)):
            return False
        start, end, done = item
        if start != position or end <= start or not 0 <= done <= end - start:
            return False
        position = end
    return position == size


def save_state(paths: FilePaths, state: ResumeState, *, durable: bool = True) -> None:
    """Write the state atomically (a reader sees the old state or the new, never half).

    ``durable=False`` skips the fsync: for frequent progress saves, which only need to
    survive the process (a crash of the machine is what the final checks are for).
    """
    tmp = paths.state.with_name(paths.state.name + ".tmp")
    payload = json.dumps({"version": STATE_VERSION, **asdict(state)}).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, payload)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, paths.state)


def clear_state(paths: FilePaths) -> None:
    for path in (paths.state, paths.part):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def part_length(paths: FilePaths) -> int:
    try:
        return paths.part.stat().st_size
    except FileNotFoundError:
        return 0


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
