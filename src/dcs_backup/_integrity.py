"""What is checked of each file, while it streams and at the end (DESIGN: integrity).

Default (``verify="auto"``): the size always; an ``.rdb`` its magic and CRC-64 trailer (as
sure as MD5 against accidental corruption, and 20x cheaper); MD5 against the ETag for files
with no checksum of their own (AOF, an RDB saved with ``rdbchecksum no``, anything else);
an ``.aof`` must also parse as RESP (after an RDB preamble whose trailer is checked too).
``verify="full"``: MD5 (against the ETag where it is an MD5) and SHA-256 of every file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ._errors import IntegrityError
from ._formats import AofChecker, FormatError, RdbChecker

VerifyMode = Literal["auto", "full"]
_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
_READ = 1 << 20


def etag_is_md5(etag: str | None, *, encrypted: bool = False) -> bool:
    """A single-part, unencrypted object's ETag is the MD5 of its bytes; others are not."""
    return bool(etag and _MD5_HEX.match(etag.lower())) and not encrypted


def file_kind(name: str) -> str:
    if name.endswith(".rdb"):
        return "rdb"
    if name.endswith(".aof"):
        return "aof"
    return "other"


@dataclass
class FileChecks:
    """One file's record in the manifest: what was computed and what it was checked against."""

    name: str
    size: int
    kind: str
    etag: str | None = None
    crc64: str | None = None
    rdb_version: int | None = None
    rdb_checksummed: bool | None = None
    md5: str | None = None
    sha256: str | None = None
    aof_commands: int | None = None
    verified: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileChecks:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class StreamVerifier:
    """Fed a file's bytes in order (from a worker thread); ``finish`` checks and records."""

    def __init__(
        self,
        name: str,
        *,
        mode: VerifyMode = "auto",
        etag: str | None = None,
        md5_etag: bool = False,
        want_md5: bool | None = None,
        want_sha256: bool | None = None,
    ) -> None:
        self.name = name
        self.kind = file_kind(name)
        self.etag = etag
        self.md5_etag = md5_etag and etag_is_md5(etag)
        self._rdb = RdbChecker() if self.kind == "rdb" else None
        self._aof = AofChecker() if self.kind == "aof" else None
        if want_md5 is None:
            want_md5 = mode == "full" or self.kind != "rdb"
        if want_sha256 is None:
            want_sha256 = mode == "full"
        self._md5 = hashlib.md5() if want_md5 else None
        self._sha256 = hashlib.sha256() if want_sha256 else None
        self.size = 0

    @property
    def cheap(self) -> bool:
        """Only the CRC-64 (over 10 GB/s) runs: checking costs nearly nothing per byte."""
        return self._md5 is None and self._sha256 is None and self._aof is None

    def update(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self._md5 is not None:
            self._md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        if self._rdb is not None:
            self._rdb.update(data)
        if self._aof is not None:
            self._aof.update(bytes(data))  # it searches the bytes, which views cannot

    def catch_up(self, path: Path, length: int) -> None:
        """Feed the first ``length`` bytes already on disk (after a resume)."""
        with path.open("rb") as f:
            left = length
            while left:
                block = f.read(min(_READ, left))
                if not block:
                    raise IntegrityError(f"{path.name}: shorter on disk than its saved progress")
                self.update(block)
                left -= len(block)

    def finish(self, path: Path, expected_size: int | None) -> FileChecks:
        """Run the end checks; raise IntegrityError naming what is wrong."""
        checks = FileChecks(self.name, self.size, self.kind, etag=self.etag)
        if expected_size is not None and self.size != expected_size:
            raise IntegrityError(f"{self.size} bytes checked, the object has {expected_size}")
        checks.verified.append("size")
        try:
            if self._rdb is not None:
                self._rdb.finish()
                checks.rdb_version = self._rdb.version
                checks.rdb_checksummed = self._rdb.checksummed
                checks.crc64 = f"{self._rdb.crc:016x}"
                if self._rdb.checksummed:
                    checks.verified.append("rdb-crc64")
                elif self._md5 is None:  # no checksum inside: fall back to MD5 of the file
                    self._md5 = _hash_file(path, hashlib.md5())
            if self._aof is not None:
                self._aof.finish()
                checks.aof_commands = self._aof.commands
                checks.verified.append("aof-resp")
                if self._aof.preamble_size is not None:
                    checks.verified.append("aof-preamble-crc64")
        except FormatError as exc:
            raise IntegrityError(str(exc)) from None
        if self._md5 is not None:
            checks.md5 = self._md5.hexdigest()
            if self.md5_etag:
                if checks.md5 != (self.etag or "").lower():
                    raise IntegrityError(
                        f"MD5 {checks.md5} does not match the object's ETag {self.etag}"
                    )
                checks.verified.append("md5=etag")
        if self._sha256 is not None:
            checks.sha256 = self._sha256.hexdigest()
        return checks


def _hash_file(path: Path, digest: Any) -> Any:
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_READ), b""):
            digest.update(block)
    return digest
