"""Typed records of the DCS API's answers, and the validation that turns JSON into them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ._errors import MalformedResponseError, UnsafeNameError
from ._redact import redact

MAX_LINKS = 64
BACKUP_STATUSES = ("waiting", "backuping", "succeed", "failed", "expired", "deleted")
# A plain base name: no separators, no leading dot, printable ASCII the DCS names use.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=@,-]{0,254}$")


@dataclass(frozen=True)
class Backup:
    """One backup record of an instance, as ``list_backups`` returns it."""

    backup_id: str
    instance_id: str
    status: str
    backup_name: str = ""
    size: int | None = None
    backup_type: str | None = None
    backup_format: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    progress: str | None = None
    remark: str | None = None
    error_code: str | None = None


@dataclass(frozen=True)
class BackupLink:
    """One file of a backup and its presigned download URL (a secret: never log it raw)."""

    file_name: str
    url: str

    def __repr__(self) -> str:
        return f"BackupLink(file_name={self.file_name!r}, url={redact(self.url)!r})"


@dataclass(frozen=True)
class BackupLinks:
    """The answer of the links call: where the files are and how to fetch them."""

    file_path: str
    bucket_name: str
    links: tuple[BackupLink, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "file_path": self.file_path,
            "bucket_name": self.bucket_name,
            "links": [{"file_name": x.file_name, "link": x.url} for x in self.links],
        }


def check_file_name(name: object, *, where: str = "links answer") -> str:
    """Accept only a plain base name; anything that could leave the output directory is refused."""
    if not isinstance(name, str) or not name:
        raise UnsafeNameError(f"{where}: empty or non-text file name {name!r}")
    if (
        name in (".", "..", "manifest.json")
        or not _SAFE_NAME.match(name)
        or name.endswith((".part", ".state", ".tmp"))
    ):
        raise UnsafeNameError(f"{where}: refusing unsafe file name {name!r}")
    return name


def _require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise MalformedResponseError(f"{where}: field {key!r} is missing")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise MalformedResponseError(f"{where}: field {key!r} has the wrong type")
    return value


def _optional(obj: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        return None
    return value


def parse_links(data: object) -> BackupLinks:
    """Validate the links answer; raise MalformedResponseError or UnsafeNameError if it is off."""
    where = "links answer"
    if not isinstance(data, dict):
        raise MalformedResponseError(f"{where}: expected a JSON object")
    links_raw = _require(data, "links", list, where)
    if not links_raw:
        raise MalformedResponseError(f"{where}: the backup has no files")
    if len(links_raw) > MAX_LINKS:
        raise MalformedResponseError(
            f"{where}: {len(links_raw)} links, more than the {MAX_LINKS} the API allows"
        )
    links: list[BackupLink] = []
    seen: set[str] = set()
    for index, item in enumerate(links_raw):
        here = f"{where}: link {index}"
        if not isinstance(item, dict):
            raise MalformedResponseError(f"{here}: expected an object")
        name = check_file_name(_require(item, "file_name", str, here), where=here)
        if name in seen:
            raise UnsafeNameError(f"{here}: duplicate file name {name!r}")
        seen.add(name)
        url = _require(item, "link", str, here)
        if not url.startswith(("https://", "http://")):
            raise MalformedResponseError(f"{here}: link for {name!r} is not an http(s) URL")
        links.append(BackupLink(file_name=name, url=url))
    file_path = data.get("file_path")
    bucket = data.get("bucket_name")
    return BackupLinks(
        file_path=file_path if isinstance(file_path, str) else "",
        bucket_name=bucket if isinstance(bucket, str) else "",
        links=tuple(links),
    )


def parse_backup(item: object, index: int) -> Backup:
    where = f"backups answer: record {index}"
    if not isinstance(item, dict):
        raise MalformedResponseError(f"{where}: expected an object")
    size = _optional(item, "size", int)
    return Backup(
        backup_id=_require(item, "backup_id", str, where),
        instance_id=_optional(item, "instance_id", str) or "",
        status=_require(item, "status", str, where),
        backup_name=_optional(item, "backup_name", str) or "",
        size=size if size is None or size >= 0 else None,
        backup_type=_optional(item, "backup_type", str),
        backup_format=_optional(item, "backup_format", str),
        created_at=_optional(item, "created_at", str),
        updated_at=_optional(item, "updated_at", str),
        progress=_optional(item, "progress", str),
        remark=_optional(item, "remark", str),
        error_code=_optional(item, "error_code", str),
    )


def parse_backup_page(data: object) -> tuple[int, list[Backup]]:
    """One page of the backups list: (total_num, records)."""
    where = "backups answer"
    if not isinstance(data, dict):
        raise MalformedResponseError(f"{where}: expected a JSON object")
    total = _require(data, "total_num", int, where)
    records = data.get("backup_record_response") or []
    if not isinstance(records, list):
        raise MalformedResponseError(f"{where}: 'backup_record_response' is not a list")
    return total, [parse_backup(item, i) for i, item in enumerate(records)]
