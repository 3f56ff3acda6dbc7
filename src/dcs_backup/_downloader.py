"""Download every file of one backup: plan, probe sizes, schedule largest first, report."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import resource
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from ._api import Client
from ._config import DownloadConfig, worker_processes
from ._errors import ConfigError, DcsBackupError, DiskSpaceError
from ._events import (
    BackupStarted,
    EventBus,
    FileFailed,
    FileSkipped,
    LinksRefreshed,
    Subscriber,
)
from ._integrity import FileChecks
from ._links import LinkSource
from ._manifest import build_manifest, manifest_entries, read_manifest, write_manifest
from ._models import Backup, BackupLinks
from ._obs import normalize_etag, parse_content_length, parse_content_range, parse_obs_error
from ._result import DownloadResult, FileResult
from ._state import FilePaths, load_state, part_length
from ._transfer import FileTransfer, TransferContext
from ._verify import verify_file
from ._workers import WorkerProcess, split_by_size

log = logging.getLogger("dcs_backup.downloader")
DISK_FULL = "the disk is full"


@dataclass
class _Plan:
    name: str
    size: int | None = None
    etag: str | None = None
    done: bool = False
    checks: FileChecks | None = None
    refused: str | None = None  # why an existing file cannot be kept


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
    Every file is verified before it gets its final name, and ``output_dir/manifest.json``
    records how. The result lists every file; ``result.ok`` is False when any failed (their
    ``.part`` files are kept, and a rerun resumes them).
    """
    config = _within_open_file_limit(config or DownloadConfig())
    directory = _prepare_directory(Path(output_dir))
    bus = EventBus(subscribers)
    refresh = _refresher(client, instance_id, backup_id, config)
    if links is None:
        if refresh is None:
            raise ConfigError("download_backup needs a client or links")
        links = await refresh()
    _check_link_schemes(links, config)
    backup = await _backup_record(client, instance_id, backup_id)
    source = LinkSource(
        links,
        refresh,
        margin=config.refresh_margin,
        on_refresh=lambda count, reason: bus.emit(LinksRefreshed(count, reason)),
    )
    started = time.monotonic()
    results: dict[str, FileResult] = {}
    if ssl_context is not None and config.processes != 1:
        # A caller's own SSL context cannot be handed to worker processes: stay in this one.
        config = dataclasses.replace(config, processes=1)
    async with _download_session(config, ssl_context) as session:
        ctx = TransferContext(session, source, directory, backup_id, config, bus)
        plans = await _plan(ctx)
        todo = [p for p in plans if not p.done and not p.refused]
        if config.check_space:
            _check_free_space(directory, todo)
        sizes = [p.size for p in plans]
        total = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
        bus.emit(BackupStarted(backup_id, len(plans), total))
        for plan in plans:
            if plan.done:
                size = plan.checks.size if plan.checks else plan.size or 0
                bus.emit(FileSkipped(plan.name, size, "already complete"))
                results[plan.name] = FileResult(
                    plan.name, "skipped", directory / plan.name, size, checks=plan.checks
                )
            elif plan.refused:
                bus.emit(FileFailed(plan.name, plan.refused))
                results[plan.name] = FileResult(
                    plan.name, "failed", directory / plan.name, plan.size, error=plan.refused
                )
        await _run_transfers(ctx, todo, results)
    result = DownloadResult(
        backup_id=backup_id,
        directory=directory,
        files=tuple(results[p.name] for p in plans),
        seconds=time.monotonic() - started,
        bytes_received=ctx.stats.bytes_received,
        retries=ctx.stats.retries,
        refreshes=source.refresh_count,
    )
    _write_manifest(directory, instance_id, backup_id, backup, result)
    return result


async def _run_transfers(
    ctx: TransferContext, todo: list[_Plan], results: dict[str, FileResult]
) -> None:
    """Largest files first (a backup is done when its largest shard is), over the processes
    the config asks for: this one takes the first share, workers the others."""
    files = [(p.name, p.size) for p in todo]
    processes = worker_processes(ctx.config, len(files), sum(p.size or 0 for p in todo))
    shares = split_by_size(files, processes) if processes > 1 else [files]
    per_process = max(1, -(-ctx.config.concurrency // len(shares)))
    local = dataclasses.replace(
        ctx,
        config=dataclasses.replace(ctx.config, concurrency=per_process),
        inline_writes=len(shares) >= (os.cpu_count() or 1),
    )
    verbosity = {logging.INFO: 1, logging.DEBUG: 2}.get(logging.getLogger("dcs_backup").level, 0)
    remote = [WorkerProcess(local, share, verbosity) for share in shares[1:]]
    outcomes = await asyncio.gather(
        run_files(local, shares[0], lambda result: results.__setitem__(result.name, result)),
        *(worker.run() for worker in remote),
    )
    for outcome in outcomes[1:]:
        assert isinstance(outcome, dict)
        results.update(outcome)


async def run_files(
    ctx: TransferContext,
    files: list[tuple[str, int | None]],
    report: Callable[[FileResult], None],
) -> None:
    """Download ``files`` in this process, largest first, ``report``-ing each result."""
    files = sorted(files, key=lambda f: -1 if f[1] is None else -f[1])
    queue = list(reversed(files))
    disk_full = False
    # Connections the files leave unused go to ranges of the large ones.
    segments = max(1, ctx.config.concurrency // max(len(files), 1))

    async def worker() -> None:
        nonlocal disk_full
        while queue:
            name, size = queue.pop()
            if disk_full:  # every other file would fail the same way: do not start it
                error = f"not started: {DISK_FULL}"
                report(FileResult(name, "failed", ctx.directory / name, size, error=error))
                continue
            result = await FileTransfer(ctx, name, size, segments=segments).run()
            if result.status == "failed":
                disk_full = disk_full or (result.error or "").startswith(DISK_FULL)
                ctx.bus.emit(FileFailed(result.name, result.error or "failed"))
            report(result)

    await asyncio.gather(*(worker() for _ in range(min(ctx.config.concurrency, len(files)))))


def _refresher(
    client: Client | None, instance_id: str, backup_id: str, config: DownloadConfig
) -> Callable[[], Awaitable[BackupLinks]] | None:
    if client is None:
        return None

    async def refresh() -> BackupLinks:
        links = await client.get_backup_links(
            instance_id, backup_id, expiration=config.link_expiration
        )
        _check_link_schemes(links, config)
        return links

    return refresh


async def _backup_record(client: Client | None, instance_id: str, backup_id: str) -> Backup | None:
    """The backup's record for the manifest (format, creation time), when the API says."""
    if client is None:
        return None
    try:
        for backup in await client.list_backups(instance_id):
            if backup.backup_id == backup_id:
                return backup
    except DcsBackupError as exc:
        log.info("backup record not available for the manifest: %s", exc)
    return None


def _check_link_schemes(links: BackupLinks, config: DownloadConfig) -> None:
    """Plain http links are accepted only to loopback hosts, unless allowed explicitly."""
    if config.allow_http:
        return
    for link in links.links:
        parts = urlsplit(link.url)
        if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
            raise ConfigError(
                f"the link of {link.file_name} is plain http to {parts.hostname}: refusing an "
                "unencrypted download (pass --allow-http to accept it)"
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_FD_RESERVE = 32  # descriptors left for Python, pipes, the API session and logs


def _within_open_file_limit(config: DownloadConfig) -> DownloadConfig:
    """Fewer connections when ``ulimit -n`` is low, rather than "too many open files" late.

    Each connection takes a socket and, at worst, its own ``.part`` file: two descriptors.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return config
    usable = (soft - _FD_RESERVE) // 2
    if usable < 1:
        raise ConfigError(
            f"the limit on open files (ulimit -n = {soft}) is too low: raise it to at least "
            f"{_FD_RESERVE + 2}"
        )
    if config.concurrency > usable:
        log.info("ulimit -n is %d: %d connections instead of %d", soft, usable, config.concurrency)
        return dataclasses.replace(config, concurrency=usable)
    return config


def ca_bundle_context(path: str) -> ssl.SSLContext:
    """Verify servers against the CA certificates in ``path`` (PEM)."""
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use the CA bundle {path}: {exc}") from None


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


def _check_free_space(directory: Path, todo: list[_Plan]) -> None:
    needed = 0
    for plan in todo:
        if plan.size is not None:
            needed += max(plan.size - part_length(FilePaths(directory, plan.name)), 0)
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise DiskSpaceError(
            f"{directory} has {free / 2**20:.0f} MiB free but the backup needs "
            f"{needed / 2**20:.0f} MiB more: free some space, choose another directory, "
            "or pass --force"
        )


def _write_manifest(
    directory: Path,
    instance_id: str,
    backup_id: str,
    backup: Backup | None,
    result: DownloadResult,
) -> None:
    from . import __version__

    checks = [f.checks for f in result.files if f.checks is not None and f.status != "failed"]
    manifest = build_manifest(
        instance_id=instance_id,
        backup_id=backup_id,
        backup=backup,
        files=checks,
        complete=result.ok,
        tool_version=__version__,
    )
    try:
        write_manifest(directory, manifest)
    except OSError as exc:
        log.warning("could not write the manifest: %s", exc.strerror or exc)


@contextlib.asynccontextmanager
async def _download_session(
    config: DownloadConfig, ssl_context: ssl.SSLContext | None
) -> AsyncIterator[aiohttp.ClientSession]:
    if ssl_context is None and config.ca_bundle:
        ssl_context = ca_bundle_context(config.ca_bundle)
    connector = aiohttp.TCPConnector(
        limit=config.concurrency,  # every connection, ranges and probes included
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
        trust_env=True,  # HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as curl honours them
    ) as session:
        yield session


async def _plan(ctx: TransferContext) -> list[_Plan]:
    """What each file needs: skip finished ones, learn sizes (for ordering and the total)."""
    try:
        known = manifest_entries(read_manifest(ctx.directory))
    except (ValueError, OSError):
        known = {}
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
            await _judge_existing(plan, paths.final, known.get(plan.name))
        elif paths.part.exists() and load_state(paths, ctx.backup_id) is None:
            log.info("%s.part has no usable resume state: starting it over", plan.name)
        elif paths.part.exists():
            log.info("%s: resuming at byte %d", plan.name, part_length(paths))
    return plans


async def _judge_existing(plan: _Plan, path: Path, entry: FileChecks | None) -> None:
    """A file already under its final name: keep it only if it is provably the object."""
    on_disk = path.stat().st_size
    if plan.size is not None and plan.size != on_disk:
        plan.refused = (
            f"{path.name} exists with {on_disk} bytes but the backup's file has {plan.size}: "
            "move it away and run again"
        )
        return
    if entry is not None and entry.size == on_disk and (entry.etag in (None, plan.etag)):
        plan.done, plan.checks = True, entry
        return
    report = await asyncio.to_thread(verify_file, path, None)
    if report.ok:
        plan.done, plan.checks = True, report.checks
        if report.checks is not None:
            report.checks.etag = plan.etag
    else:
        plan.refused = (
            f"{path.name} exists but fails its check ({'; '.join(report.problems)}): "
            "move it away and run again"
        )


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
