"""Presigned links: when they expire, and a single-flight refresh shared by every transfer."""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from ._errors import LinkExpiredError
from ._models import BackupLink, BackupLinks

log = logging.getLogger("dcs_backup.links")

RefreshFn = Callable[[], Awaitable[BackupLinks]]


def link_expires_at(url: str) -> float | None:
    """Unix time after which a presigned URL stops working, or None if it does not say.

    V2 query auth carries ``Expires`` (Unix time); V4 carries ``X-Amz-Date`` + ``X-Amz-Expires``.
    """
    query = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    expires = query.get("expires")
    if expires and expires.isdigit():
        return float(expires)
    date, seconds = query.get("x-amz-date"), query.get("x-amz-expires")
    if date and seconds and seconds.isdigit():
        try:
            start = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            return None
        return float(start + int(seconds))
    return None


@dataclass(frozen=True)
class _Entry:
    link: BackupLink
    expires_at: float | None  # on the server's clock
    fetched_at: float  # local monotonic time
    generation: int


class LinkSource:
    """The current link of every file, refreshed through ``refresh`` when one expires.

    Many tasks asking for a refresh at once share one call (single flight); a task whose link
    was already replaced by a newer generation gets the new one without any call.
    ``clock_offset`` (server time minus local time, learned from ``Date`` headers) lets expiry
    be judged by the server's clock even when the local one is off.
    """

    def __init__(
        self,
        links: BackupLinks,
        refresh: RefreshFn | None,
        *,
        margin: float = 30.0,
        on_refresh: Callable[[int, str], None] | None = None,
    ) -> None:
        self._refresh_fn = refresh
        self._margin = margin
        self._on_refresh = on_refresh
        self._generation = 0
        self._entries: dict[str, _Entry] = {}
        self._inflight: asyncio.Task[None] | None = None
        self.refresh_count = 0
        self.clock_offset = 0.0
        self._install(links)

    @property
    def can_refresh(self) -> bool:
        return self._refresh_fn is not None

    def names(self) -> list[str]:
        return list(self._entries)

    def server_now(self) -> float:
        return time.time() + self.clock_offset

    def observe_server_date(self, server_time: float | None) -> None:
        """Learn the server's clock from a response ``Date`` (1 s resolution is plenty)."""
        if server_time is not None:
            # Date has whole seconds: on average the true time is half a second later.
            self.clock_offset = server_time + 0.5 - time.time()

    def _install(self, links: BackupLinks) -> None:
        first = not self._entries
        self._generation += 1
        now = time.monotonic()
        for link in links.links:
            if not first and link.file_name not in self._entries:
                log.warning("refreshed links name a new file %s: ignored", link.file_name)
                continue
            self._entries[link.file_name] = _Entry(
                link, link_expires_at(link.url), now, self._generation
            )

    @property
    def generation(self) -> int:
        return self._generation

    def snapshot(self) -> BackupLinks:
        """The current links of every file (to hand to another process)."""
        links = tuple(entry.link for entry in self._entries.values())
        return BackupLinks(file_path="", bucket_name="", links=links)

    def current(self, name: str) -> tuple[BackupLink, int]:
        entry = self._entries[name]
        return entry.link, entry.generation

    def is_expired(self, name: str) -> bool:
        entry = self._entries[name]
        return entry.expires_at is not None and entry.expires_at <= self.server_now()

    def expires_soon(self, name: str) -> bool:
        """True when the link should be refreshed before a new request starts with it.

        The margin shrinks to a quarter of the link's lifetime as fetched, so that links
        that live shorter than the margin do not cause a refresh before every request.
        """
        entry = self._entries[name]
        if entry.expires_at is None:
            return False
        remaining = entry.expires_at - self.server_now()
        age = time.monotonic() - entry.fetched_at
        lifetime = remaining + age
        return remaining <= min(self._margin, max(lifetime, 0.0) / 4)

    async def fresh(self, name: str) -> tuple[BackupLink, int]:
        """The link to start a request with: refreshed first when it is about to expire."""
        if self.expires_soon(name) and self.can_refresh:
            await self.refresh(self._entries[name].generation, reason="about to expire")
        if self.is_expired(name) and not self.can_refresh:
            raise LinkExpiredError(
                f"the link of {name} has expired and there are no credentials to fetch a new "
                "one: get fresh links (dcs-backup links ... > links.json) or give credentials"
            )
        return self.current(name)

    async def refresh(self, stale_generation: int, *, reason: str) -> None:
        """Replace the links unless a newer generation than ``stale_generation`` is in place."""
        if self._refresh_fn is None:
            raise LinkExpiredError(
                "a download link has expired and there are no credentials to fetch new ones: "
                "get fresh links (dcs-backup links ... > links.json) or give credentials"
            )
        while self._generation <= stale_generation:
            if self._inflight is None:
                self._inflight = asyncio.ensure_future(self._do_refresh(reason))
            task = self._inflight
            try:
                await asyncio.shield(task)
            finally:
                if task.done() and self._inflight is task:
                    self._inflight = None

    async def _do_refresh(self, reason: str) -> None:
        assert self._refresh_fn is not None
        links = await self._refresh_fn()
        self.refresh_count += 1
        self._install(links)
        log.info("links refreshed (%s), generation %d", reason, self._generation)
        if self._on_refresh is not None:
            self._on_refresh(self.refresh_count, reason)
