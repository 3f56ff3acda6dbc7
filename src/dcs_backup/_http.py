"""Small HTTP helpers shared by the API client and the transfer engine."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a server asked us to wait (``Retry-After`` as seconds or an HTTP date)."""
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - time.time())


def parse_http_date(value: str | None) -> float | None:
    """Unix time of an HTTP ``Date`` header, or None."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
