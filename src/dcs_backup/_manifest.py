"""``DIR/manifest.json``: what was downloaded and how each file was proven."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ._integrity import FileChecks
from ._models import Backup

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def build_manifest(
    *,
    instance_id: str,
    backup_id: str,
    backup: Backup | None,
    files: list[FileChecks],
    complete: bool,
    tool_version: str,
) -> dict[str, Any]:
    return {
        "manifest_version": MANIFEST_VERSION,
        "tool": f"dcs-backup {tool_version}",
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "instance_id": instance_id,
        "backup_id": backup_id,
        "backup_format": backup.backup_format if backup else None,
        "backup_created_at": backup.created_at if backup else None,
        "backup_size": backup.size if backup else None,
        "complete": complete,
        "files": [f.to_json() for f in sorted(files, key=lambda f: f.name)],
    }


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write atomically: a reader sees the old manifest or the new one, never half of one."""
    path = directory / MANIFEST_NAME
    tmp = directory / f".{MANIFEST_NAME}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (json.dumps(manifest, indent=2) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest, or None when there is none; ValueError when it is unreadable."""
    path = directory / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ValueError(f"{path} is not a dcs-backup manifest")
    return data


def manifest_entries(manifest: dict[str, Any] | None) -> dict[str, FileChecks]:
    if not manifest:
        return {}
    entries = {}
    for item in manifest.get("files", []):
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            try:
                entries[item["name"]] = FileChecks.from_json(item)
            except TypeError:
                continue
    return entries
