"""One file: stream it to ``<name>.part``, resume, retry, refresh its link, then finalize."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import tenacity
from yarl import URL

from ._body import receive
from ._config import DownloadConfig
from ._errors import DcsBackupError, IntegrityError, LinkExpiredError, TransferError
from ._events import EventBus, FileDone, FileProgress, FileRetry, FileStarted
from ._http import parse_http_date, parse_retry_after
from ._integrity import FileChecks, StreamVerifier, etag_is_md5
from ._links import LinkSource
from ._obs import normalize_etag, parse_content_length, parse_content_range, parse_obs_error
from ._redact import redact
from ._result import FileResult
from ._sink import Sink
from ._state import (
    FilePaths,
    ResumeState,
    clear_state,
    fsync_directory,
    load_state,
    part_length,
    save_state,
)

log = logging.getLogger("dcs_backup.transfer")

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_FREE_RESTARTS = 3  # starting a file over is free this often per attempt, then it is a failure
_MAX_REFRESHES_WITHOUT_PROGRESS = 2
_INTEGRITY_RETRIES = 1  # a file failing a check is fetched again from byte 0 this often
_SSE_HEADERS = ("x-obs-server-side-encryption", "x-amz-server-side-encryption")


class _Restart(Exception):
    """The bytes on disk cannot be continued: the file starts over from byte 0."""


class _Refreshed(Exception):
    """The link was replaced; ask again at once (this is not a failed attempt)."""


@dataclass
class TransferStats:
    retries: int = 0
    bytes_received: int = 0


@dataclass
class TransferContext:
    """What every file transfer of one backup shares."""

    session: aiohttp.ClientSession
    links: LinkSource
    directory: Path
    backup_id: str
    config: DownloadConfig
    bus: EventBus
    stats: TransferStats = field(default_factory=TransferStats)
    # Write on the event loop (see Sink) when every core runs a download process anyway; with
    # a core to spare, a thread pool puts it to work instead (measured both ways).
    inline_writes: bool = True


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, TransferError):
        return error.retryable
    if isinstance(error, (DcsBackupError, aiohttp.ClientConnectorCertificateError)):
        return False  # an untrusted certificate stays untrusted
    return isinstance(error, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError))


def describe(error: BaseException) -> str:
    """One line for a person: what went wrong, with secrets removed."""
    if isinstance(error, DcsBackupError):
        text = str(error)
    elif isinstance(error, asyncio.TimeoutError):
        text = "timed out waiting for data"
    elif isinstance(error, aiohttp.ClientPayloadError):
        text = "the connection broke in the middle of the body"
    elif isinstance(error, aiohttp.ClientConnectorCertificateError):
        text = (
            f"the TLS certificate of {error.host} is not trusted ({error.certificate_error}): "
            "pass --ca-bundle with the CA that signed it"
        )
    elif isinstance(error, aiohttp.ServerDisconnectedError):
        text = "the server closed the connection"
    else:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return redact(" ".join(text.split()))


class FileTransfer:
    """Downloads one file of the backup into the output directory."""

    def __init__(
        self,
        ctx: TransferContext,
        name: str,
        size_hint: int | None = None,
        *,
        segments: int = 1,
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.size_hint = size_hint  # from the size probe
        self.segments_allowed = segments  # connections this file may use at once
        self.segments: list[list[int]] | None = None  # [start, end, done] when segmented
        self.paths = FilePaths(ctx.directory, name)
        self.size: int | None = None
        self.etag: str | None = None
        self.md5_etag = False
        self.verifier: StreamVerifier | None = None
        self.checks: FileChecks | None = None
        self.offset = 0
        self.resumed_from = 0
        self._request_start = 0  # the offset the latest request started from
        self._refreshes_without_progress = 0
        self._fd: int | None = None

    # -- the whole file ----------------------------------------------------------------------

    async def run(self) -> FileResult:
        started = time.monotonic()
        try:
            await self._open()
            self.resumed_from = self.offset
            size = self.size if self.size is not None else self.size_hint
            self.ctx.bus.emit(FileStarted(self.name, size, self.offset))
            for check_round in range(_INTEGRITY_RETRIES + 1):
                if self._segmented():
                    from ._segments import SegmentedDownload  # it builds on this module

                    await SegmentedDownload(self).run()
                else:
                    await self._download()
                try:
                    await self._finalize()
                    break
                except IntegrityError as exc:
                    # Corrupt bytes never get the final name: fetch the file again from byte 0.
                    self.start_over()
                    if check_round == _INTEGRITY_RETRIES:
                        self._close()
                        clear_state(self.paths)
                        raise IntegrityError(f"failed its check twice: {exc}") from None
                    self.ctx.stats.retries += 1
                    reason = f"failed its check, fetching it again: {exc}"
                    log.warning("%s %s", self.name, reason)
                    self.ctx.bus.emit(FileRetry(self.name, 0, 0.0, reason))
        except (DcsBackupError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            reason = _disk_error(exc, self.paths.part) or describe(exc)
            return FileResult(
                self.name,
                "failed",
                self.paths.final,
                self.size,
                self.resumed_from,
                time.monotonic() - started,
                reason,
            )
        finally:
            self._close()
        seconds = time.monotonic() - started
        assert self.size is not None
        self.ctx.bus.emit(FileDone(self.name, self.size, self.resumed_from, seconds))
        return FileResult(
            self.name,
            "downloaded",
            self.paths.final,
            self.size,
            self.resumed_from,
            seconds,
            checks=self.checks,
        )

    async def _download(self) -> None:
        """Retry requests until every byte is on disk (or the retry policy gives up)."""
        await self.retry_with_progress(
            self._until_failure, lambda: self.offset > self._request_start
        )

    async def retry_with_progress(
        self, attempt: Callable[[], Awaitable[None]], made_progress: Callable[[], bool]
    ) -> None:
        """Run ``attempt`` until it completes or the retry policy gives up.

        Only failures in a row without progress count (``made_progress`` says, after a
        failure, whether the failed request had moved on): a failure after progress is the
        first of a new run, so a long file on a flaky network is not given up on.
        """
        failures = 0
        retrying = self.ctx.config.retry.retrying(
            is_retryable=is_retryable,
            retry_after=lambda e: e.retry_after if isinstance(e, TransferError) else None,
            failures=lambda _state: failures,
            before_sleep=lambda state: self._before_retry(state, failures),
        )
        async for try_ in retrying:
            with try_:
                try:
                    await attempt()
                except BaseException:
                    failures = 1 if made_progress() else failures + 1
                    raise

    async def _open(self) -> None:
        state = load_state(self.paths, self.ctx.backup_id)
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.paths.part, flags, 0o600)
        if state is None or state.size is None:
            os.ftruncate(self._fd, 0)
            self.offset = 0
            return
        self.size, self.etag, self.md5_etag = state.size, state.etag, state.md5_etag
        if state.segments is not None:  # a segmented download: its ranges say what is done
            self.segments = state.segments
            self.offset = sum(done for _, _, done in state.segments)
            return
        self.offset = part_length(self.paths)
        if self.offset > state.size:  # longer than the object: cannot be ours
            os.ftruncate(self._fd, 0)
            self.offset = 0
        self._new_verifier()
        if self.offset:
            # A resumed file is checked as strictly as a fresh one: hash what is on disk.
            assert self.verifier is not None
            await asyncio.get_running_loop().run_in_executor(
                None, self.verifier.catch_up, self.paths.part, self.offset
            )

    def _new_verifier(self) -> None:
        self.verifier = StreamVerifier(
            self.name, mode=self.ctx.config.verify, etag=self.etag, md5_etag=self.md5_etag
        )

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _before_retry(self, state: tenacity.RetryCallState, failures: int) -> None:
        self.ctx.stats.retries += 1
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        reason = describe(error) if error else "unknown"
        log.info("%s: retry %d in %.1fs: %s", self.name, failures, delay, reason)
        self.ctx.bus.emit(FileRetry(self.name, failures, delay, reason))

    async def _until_failure(self) -> None:
        """Requests until the file is complete or a real failure happens.

        Link refreshes and a few restarts are not failures: they ask again at once.
        """
        restarts = 0
        while True:
            try:
                await self._request()
                return
            except _Refreshed:
                continue
            except _Restart as exc:
                restarts += 1
                if restarts > _FREE_RESTARTS:
                    raise TransferError(str(exc)) from None
                log.info("%s: starting over: %s", self.name, exc)

    # -- one request -------------------------------------------------------------------------

    async def _request(self) -> None:
        if self.size is not None and self.offset == self.size:
            return
        self._request_start = self.offset
        async with self.get(self.offset) as (resp, generation):
            expected = await self._check_answer(resp, self.offset > 0, generation)
            await self._stream(resp, expected)

    @contextlib.asynccontextmanager
    async def get(
        self, first: int, last: int | None = None
    ) -> AsyncIterator[tuple[aiohttp.ClientResponse, int]]:
        """GET the object from byte ``first`` (through ``last``) with a fresh link.

        Yields the answer and the generation of the link used. A ranged request carries the
        saved ETag as If-Match, so that a changed object cannot be spliced onto old bytes.
        """
        link, generation = await self.ctx.links.fresh(self.name)
        headers = {"Accept-Encoding": "identity"}
        if first or last is not None:
            headers["Range"] = f"bytes={first}-{'' if last is None else last}"
            if self.etag:
                headers["If-Match"] = f'"{self.etag}"'
        async with self.ctx.session.get(URL(link.url, encoded=True), headers=headers) as resp:
            _widen_socket_reads(resp, self.ctx.config.write_size)
            self.ctx.links.observe_server_date(parse_http_date(resp.headers.get("Date")))
            yield resp, generation

    async def _check_answer(
        self, resp: aiohttp.ClientResponse, ranged: bool, generation: int
    ) -> int | None:
        """Decide what the answer means; return how many body bytes to expect."""
        status = resp.status
        etag = normalize_etag(resp.headers.get("ETag"))
        if status == 200:
            if ranged:  # the server ignored Range: the body starts at byte 0, never append
                log.info("%s: server ignored Range, starting over", self.name)
                self._reset()
            size = parse_content_length(resp.headers.get("Content-Length"))
            encrypted = any(h in resp.headers for h in _SSE_HEADERS)
            self._adopt(size, etag, etag_is_md5(etag, encrypted=encrypted))
            return size
        if status == 206:
            span = parse_content_range(resp.headers.get("Content-Range"))
            if (
                not ranged
                or span is None
                or span.start != self.offset
                or span.total is None
                or span.end != span.total - 1
                or span.total != self.size
                or (etag is not None and self.etag is not None and etag != self.etag)
            ):
                self._reset()
                raise _Restart(f"unexpected partial answer {resp.headers.get('Content-Range')!r}")
            return span.end - span.start + 1
        if status in (412, 416):
            self._reset()
            raise _Restart(f"HTTP {status}: the object changed or is shorter than the saved part")
        await self.raise_for_status(resp, generation)
        raise AssertionError("unreachable")  # pragma: no cover

    async def raise_for_status(self, resp: aiohttp.ClientResponse, generation: int) -> None:
        """An answer with no body to keep: refresh the link, retry, or fail, as it says."""
        status = resp.status
        body = (await resp.content.read(65536)).decode("utf-8", errors="replace")
        if status == 403:
            await self._forbidden(body, generation)
        if status in _RETRY_STATUS:
            error = parse_obs_error(body)
            raise TransferError(
                f"HTTP {status} {error.code}".rstrip(),
                retry_after=parse_retry_after(resp.headers),
            )
        if status == 404:
            raise TransferError(
                "not found (HTTP 404): the backup may have been deleted",
                retryable=False,
            )
        error = parse_obs_error(body)
        raise TransferError(
            f"unexpected HTTP {status} {error.code} {error.message}".strip(),
            retryable=False,
        )

    async def _forbidden(self, body: str, generation: int) -> None:
        links = self.ctx.links
        error = parse_obs_error(body)
        expired = error.is_expired or (
            error.code in ("AccessDenied", "") and links.is_expired(self.name)
        )
        # A bad signature on a link from an older generation may be a stale link: one refresh.
        stale = (
            error.code == "SignatureDoesNotMatch"
            and self._refreshes_without_progress == 0
            and links.can_refresh
        )
        if expired or stale:
            if not links.can_refresh:
                raise LinkExpiredError(
                    f"the link of {self.name} has expired and there are no credentials to fetch "
                    "a new one: get fresh links (dcs-backup links ... > links.json) or give "
                    "credentials"
                )
            if self._refreshes_without_progress >= _MAX_REFRESHES_WITHOUT_PROGRESS:
                raise TransferError(
                    "fresh links are refused as expired at once: check that the "
                    "system clock is right (and the link expiration is not too short)",
                    retryable=False,
                )
            self._refreshes_without_progress += 1
            await links.refresh(generation, reason=f"{self.name}: {error.code or 'HTTP 403'}")
            raise _Refreshed()
        if error.code == "RequestTimeTooSkewed":
            raise TransferError(
                "OBS says the request time is too skewed: fix the system clock",
                retryable=False,
            )
        hint = (
            ": the local clock may be off, or the link was altered"
            if error.code == "SignatureDoesNotMatch"
            else ""
        )
        raise TransferError(
            f"OBS refused the download (HTTP 403 {error.code}: "
            f"{error.message or 'no message'}){hint}",
            retryable=False,
        )

    def _adopt(self, size: int | None, etag: str | None, md5_etag: bool) -> None:
        """A full answer from byte 0: remember which object it is before writing a byte."""
        if size != self.size or etag != self.etag or not self.paths.state.exists():
            self.size, self.etag, self.md5_etag = size, etag, md5_etag
            self._save_state()
        self._new_verifier()

    def _save_state(self, *, durable: bool = True) -> None:
        save_state(
            self.paths,
            ResumeState(
                self.ctx.backup_id,
                self.name,
                self.size,
                self.etag,
                self.md5_etag,
                [list(seg) for seg in self.segments] if self.segments is not None else None,
            ),
            durable=durable,
        )

    def _segmented(self) -> bool:
        """Fetch in ranges: a resumed segmented file, or a large one with connections to spare."""
        if self.segments is not None:
            return True
        config = self.ctx.config
        size = self.size if self.size is not None else self.size_hint
        return (
            self.offset == 0
            and size is not None
            and self.segments_allowed > 1
            and config.segment_size > 0
            and size >= 2 * config.segment_size
        )

    def start_over(self) -> None:
        """Forget ranges and bytes: the next download starts from byte 0 as one stream."""
        self.segments = None
        self._reset()
        self.paths.state.unlink(missing_ok=True)

    def _reset(self) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        if self.offset:
            self.ctx.bus.emit(FileProgress(self.name, 0, self.size, -self.offset))
        self.offset = 0
        self._new_verifier()

    async def _stream(self, resp: aiohttp.ClientResponse, expected: int | None) -> None:
        """The body to disk at ``offset`` on, checked as it goes (see ``_body`` and ``_sink``)."""
        assert self._fd is not None
        if self.verifier is None:
            self._new_verifier()
        assert self.verifier is not None
        start = self.offset
        sink = Sink(self._fd, lambda: self.offset, self._written, self.verifier)
        # MD5, SHA-256 and RESP parsing always belong in threads.
        sink.inline = self.ctx.inline_writes and self.verifier.cheap
        await receive(resp, expected, sink, self.ctx.config)
        received = self.offset - start
        if expected is None:
            if self.size is None:
                self.size = self.offset
                self._save_state()
        elif received != expected:
            raise TransferError(f"the body ended after {received} of {expected} bytes")

    def _written(self, count: int) -> None:
        self.offset += count
        self.note_written(count)

    def note_written(self, count: int) -> None:
        """Bookkeeping for ``count`` new bytes on disk (``offset`` already moved on)."""
        self.ctx.stats.bytes_received += count
        self._refreshes_without_progress = 0
        self.ctx.bus.emit(FileProgress(self.name, self.offset, self.size, count))

    async def _finalize(self) -> None:
        """Check the size, make the bytes durable, and only then give the file its name."""
        assert self._fd is not None
        on_disk = os.fstat(self._fd).st_size
        if self.size is None or on_disk != self.size:
            raise TransferError(f"{on_disk} bytes on disk, expected {self.size}", retryable=False)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, os.fsync, self._fd)
        assert self.verifier is not None
        self.checks = await loop.run_in_executor(
            None, self.verifier.finish, self.paths.part, self.size
        )
        self._close()
        os.replace(self.paths.part, self.paths.final)
        clear_state(self.paths)
        fsync_directory(self.ctx.directory)


def _widen_socket_reads(resp: aiohttp.ClientResponse, size: int) -> None:
    """Let the event loop read up to ``size`` bytes per recv instead of asyncio's 256 KiB.

    Fewer, larger reads mean fewer trips through the loop, the HTTP parser and the stream
    reader per MiB: the event loop is the bottleneck of a fast download.
    """
    connection = resp.connection
    transport = connection.transport if connection is not None else None
    if transport is not None and hasattr(transport, "max_size"):
        transport.max_size = max(int(transport.max_size), size)


def _disk_error(error: BaseException, path: Path) -> str | None:
    if isinstance(error, aiohttp.ClientError) or not isinstance(error, OSError):
        return None
    if error.errno == errno.ENOSPC:
        return f"the disk is full writing {path.name}: free some space and run again to resume"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: {os.strerror(error.errno)}"
    return f"{path.name}: {error.strerror or error}"
