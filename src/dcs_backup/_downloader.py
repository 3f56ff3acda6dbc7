"""Download every file of one backup: plan, probe sizes, schedule largest first, report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from yarl import URL

from ._api import Client
from ._config import DownloadConfig
from ._errors import ConfigError, DcsBackupError
from ._events import BackupStarted, EventBus, FileFailed, FileSkipped, LinksRefreshed, Subscriber
from ._links import LinkSource
from ._models import BackupLinks
from ._obs import normalize_etag, parse_content_length, parse_content_range, parse_obs_error
from ._result import DownloadResult, FileResult
from ._state import FilePaths, load_state, part_length
from ._transfer import FileTransfer, TransferContext

log = logging.getLogger("dcs_backup.downloader")


@dataclass
class _Plan:
    name: str
    size: int | None = None
    etag: str | None = None
    done: bool = False


async def download_backup(
    client: Client | None,
    instance_id: str,
    backup_id: str,
    output_dir: str | os.PathLike[str],
    *,
    links: BackupLinks | None = None,
    config: DownloadConfig | None = None,
    subscribers: Iterable[Subscriber] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> DownloadResult:
    """Download every file of a backup into ``output_dir``; resume what an earlier run left.

    ``links`` may be given (e.g. a saved links answer); with a ``client`` too, links that
    expire are fetched again through the API, without one an expired link fails its file.
    The result lists every file; ``result.ok`` is False when any failed (their ``.part``
    files are kept, and a rerun resumes them).
    """
    config = config or DownloadConfig()
    directory = _prepare_directory(Path(output_dir))
    bus = EventBus(subscribers)
    refresh = None
    if client is not None:
        api = client

        async def refresh() -> BackupLinks:
            return await api.get_backup_links(
                instance_id, backup_id, expiration=config.link_expiration
            )

    if links is None:
        if refresh is None:
            raise ConfigError("download_backup needs a client or links")
        links = await refresh()
    source = LinkSource(
        links,
        refresh,
        margin=config.refresh_margin,
        on_refresh=lambda count, reason: bus.emit(LinksRefreshed(count, reason)),
    )
    started = time.monotonic()
    async with _download_session(config, ssl_context) as session:
        ctx = TransferContext(session, source, directory, backup_id, config, bus)
        plans = await _plan(ctx)
        todo = [p for p in plans if not p.done]
        sizes = [p.size for p in plans]
        total = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
        bus.emit(BackupStarted(backup_id, len(plans), total))
        results: dict[str, FileResult] = {}
        for plan in plans:
            if plan.done:
                size = (
                    plan.size
                    if plan.size is not None
                    else FilePaths(directory, plan.name).final.stat().st_size
                )
                bus.emit(FileSkipped(plan.name, size, "already complete"))
                results[plan.name] = FileResult(plan.name, "skipped", directory / plan.name, size)
        # Largest first: a backup is done when its largest shard is. Unknown sizes go first.
        todo.sort(key=lambda p: -1 if p.size is None else -p.size)
        queue: asyncio.Queue[_Plan] = asyncio.Queue()
        for plan in todo:
            queue.put_nowait(plan)

        async def worker() -> None:
            while not queue.empty():
                plan = queue.get_nowait()
                result = await FileTransfer(ctx, plan.name, plan.size).run()
                if result.status == "failed":
                    bus.emit(FileFailed(result.name, result.error or "failed"))
                results[plan.name] = result

        await asyncio.gather(*(worker() for _ in range(min(config.concurrency, len(todo)))))
    return DownloadResult(
        backup_id=backup_id,
        directory=directory,
        files=tuple(results[p.name] for p in plans),
        seconds=time.monotonic() - started,
        bytes_received=ctx.stats.bytes_received,
        retries=ctx.stats.retries,
        refreshes=source.refresh_count,
    )


def _prepare_directory(directory: Path) -> Path:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the output directory {directory}: {exc.strerror}"
        ) from None
    if not directory.is_dir():
        raise ConfigError(f"the output path {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"the output directory {directory} is not writable")
    return directory.resolve()


@contextlib.asynccontextmanager
async def _download_session(
    config: DownloadConfig, ssl_context: ssl.SSLContext | None
) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(
        limit=config.concurrency * 2,
        limit_per_host=0,
        ssl=ssl_context if ssl_context is not None else True,
    )
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
    )
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,  # the bytes on disk must be the object's bytes
        read_bufsize=config.write_size,
        skip_auto_headers=("User-Agent",),
        headers={"User-Agent": "dcs-backup"},
    ) as session:
        yield session


async def _plan(ctx: TransferContext) -> list[_Plan]:
    """What each file needs: skip finished ones, learn sizes (for ordering and the total)."""
    plans = []
    for name in ctx.links.names():
        paths = FilePaths(ctx.directory, name)
        state = load_state(paths, ctx.backup_id)
        plan = _Plan(name)
        if state is not None and paths.part.exists():
            plan.size, plan.etag = state.size, state.etag
        plans.append(plan)
    limit = asyncio.Semaphore(ctx.config.concurrency)

    async def probe(plan: _Plan) -> None:
        async with limit:
            plan.size, plan.etag = await _probe(ctx, plan.name)

    await asyncio.gather(*(probe(p) for p in plans if p.size is None))
    for plan in plans:
        paths = FilePaths(ctx.directory, plan.name)
        if paths.final.exists() and not paths.part.exists():
            on_disk = paths.final.stat().st_size
            if plan.size is None or plan.size == on_disk:
                plan.done = True
            else:
                log.warning(
                    "%s exists with %d bytes but the backup's file has %s: downloading again",
                    plan.name,
                    on_disk,
                    plan.size,
                )
        elif paths.part.exists() and load_state(paths, ctx.backup_id) is None:
            log.info("%s.part has no usable resume state: starting it over", plan.name)
        elif paths.part.exists():
            log.info("%s: resuming at byte %d", plan.name, part_length(paths))
    return plans


async def _probe(ctx: TransferContext, name: str) -> tuple[int | None, str | None]:
    """Size and ETag of one object from a one-byte range GET; (None, None) when unknown."""
    for _ in range(2):
        try:
            link, generation = await ctx.links.fresh(name)
            async with ctx.session.get(
                URL(link.url, encoded=True),
                headers={"Range": "bytes=0-0", "Accept-Encoding": "identity"},
            ) as resp:
                etag = normalize_etag(resp.headers.get("ETag"))
                if resp.status == 206:
                    span = parse_content_range(resp.headers.get("Content-Range"))
                    return (span.total if span else None), etag
                if resp.status == 200:
                    return parse_content_length(resp.headers.get("Content-Length")), etag
                if resp.status == 403 and ctx.links.can_refresh:
                    body = (await resp.content.read(65536)).decode("utf-8", errors="replace")
                    if parse_obs_error(body).is_expired or ctx.links.is_expired(name):
                        await ctx.links.refresh(generation, reason=f"{name}: expired (probe)")
                        continue
                return None, None
        except (aiohttp.ClientError, asyncio.TimeoutError, DcsBackupError):
            return None, None  # the transfer itself meets the problem and reports it per file
    return None, None
