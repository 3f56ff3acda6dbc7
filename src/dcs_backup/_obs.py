"""What an OBS (S3-compatible) answer to a presigned GET means for the downloader."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_MESSAGE = re.compile(r"<Message>([^<]{0,300})</Message>")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


@dataclass(frozen=True)
class ObsError:
    code: str
    message: str

    @property
    def is_expired(self) -> bool:
        return self.code == "AccessDenied" and "expired" in self.message.lower()


def parse_obs_error(body: str) -> ObsError:
    """Code and message of an OBS XML error body ('' when it is not one)."""
    code = _CODE.search(body)
    message = _MESSAGE.search(body)
    return ObsError(
        code=code.group(1).strip() if code else "",
        message=message.group(1).strip() if message else "",
    )


@dataclass(frozen=True)
class ContentRange:
    start: int
    end: int
    total: int | None


def parse_content_range(value: str | None) -> ContentRange | None:
    """``bytes a-b/total`` or None when absent or malformed (a malformed one is never trusted)."""
    if not value:
        return None
    match = _CONTENT_RANGE.match(value)
    if not match:
        return None
    start, end = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    if end < start or (total is not None and end >= total):
        return None
    return ContentRange(start, end, total)


def parse_content_length(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def normalize_etag(value: str | None) -> str | None:
    """The ETag without quotes or a weak prefix; None when absent."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') or None
