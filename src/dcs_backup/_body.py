"""A response body to its ``Sink``: straight from the socket into reused buffers when it can.

aiohttp hands a body over as a new bytes object per socket read, after its parser has copied
it once more; at hundreds of MiB/s per core those allocations, copies and wake-ups were most
of the process's own CPU time. So once aiohttp has parsed the status line and headers, a body
of known length is taken over: the connection's transport gets a ``BufferedProtocol`` whose
buffer the socket reads fill directly (TLS decrypts into it), and each full buffer is written
at once. The connection is closed afterwards, never reused: aiohttp's parser did not see the
body. Small bodies, and bodies of unknown length, go through aiohttp's stream.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import aiohttp

from ._config import DownloadConfig
from ._errors import TransferError
from ._sink import Sink

_TAKE_OVER_FROM = 4  # write_size multiples: smaller bodies stay with aiohttp, which reuses
# the connection (a taken-over one is closed)
_FLUSH_EVERY = 0.05  # seconds at most that received bytes wait in memory (a kill loses them)
_PAUSE_AT = 3  # full buffers waiting for a writer thread: the socket pauses...
_RESUME_AT = 1  # ... until no more than this many wait


async def receive(
    resp: aiohttp.ClientResponse, length: int | None, sink: Sink, config: DownloadConfig
) -> None:
    """Up to ``length`` body bytes (all of them when None) to ``sink``, in order.

    Bytes that arrived are written even when the body breaks off (they are good bytes at
    their offset); then the error is raised.
    """
    if length is not None and _can_take_over(resp, length, config):
        await _receive_directly(resp, length, sink, config)
        return
    batches = Batcher(resp.content, config.write_size, limit=length)
    writing: asyncio.Task[None] | None = None
    try:
        while (batch := await batches.next_batch()) is not None:
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(sink.write(batch))
    finally:
        if writing is not None:
            await writing
        if batches.pending:
            await sink.write(batches.take())


def _can_take_over(resp: aiohttp.ClientResponse, length: int, config: DownloadConfig) -> bool:
    """A plain body of known, large length, on a transport that can change protocols."""
    if length < _TAKE_OVER_FROM * config.write_size:
        return False
    headers = resp.headers
    if "Transfer-Encoding" in headers or headers.get("Content-Encoding", "identity") != "identity":
        return False
    connection = resp.connection
    transport = connection.transport if connection is not None else None
    return (
        transport is not None
        and not transport.is_closing()
        and hasattr(transport, "set_protocol")
        and hasattr(transport, "get_protocol")
    )


async def _receive_directly(
    resp: aiohttp.ClientResponse, length: int, sink: Sink, config: DownloadConfig
) -> None:
    connection = resp.connection
    assert connection is not None and connection.transport is not None
    transport: Any = connection.transport
    original = transport.get_protocol()
    # What aiohttp read past the headers already sits in its stream: it comes first.
    head = resp.content.read_nowait(-1)[:length]
    receiver = _Receiver(transport, original, length - len(head), sink, config)
    drop_timeout = getattr(original, "_drop_timeout", None)
    if drop_timeout is not None:
        drop_timeout()  # aiohttp's read timer would fire: its protocol sees no data any more
    transport.set_protocol(receiver)
    if not transport.is_reading():
        transport.resume_reading()  # aiohttp pauses when its stream buffer is full
    try:
        if head:
            await sink.write([head])
        await receiver.run()
    finally:
        receiver.stop()
        if not receiver.lost:
            transport.set_protocol(original)  # closing then tells aiohttp the usual way
        resp.close()


class _Receiver(asyncio.BufferedProtocol):
    """Fills one buffer from the socket; a full buffer is written on the spot (``Sink.inline``)
    or queued for a writer thread while a fresh buffer fills."""

    def __init__(
        self,
        transport: Any,
        original: asyncio.BaseProtocol,
        left: int,
        sink: Sink,
        config: DownloadConfig,
    ) -> None:
        self._transport = transport
        self._original = original
        self._sink = sink
        self._read_timeout = config.read_timeout
        self._loop = asyncio.get_running_loop()
        self._left = left  # bytes still to come from the socket
        self._buffer = bytearray(config.write_size)
        self._fill = 0
        self._free: list[bytearray] = []
        self._queue: collections.deque[memoryview] = collections.deque()
        self._wake = asyncio.Event()
        self._error: BaseException | None = None
        self._paused = False
        self._last_data = self._loop.time()
        self._flush_timer: asyncio.TimerHandle | None = None
        self._watchdog = self._loop.call_later(self._read_timeout, self._check_idle)
        self._scratch: bytearray | None = None
        self.lost = False

    async def run(self) -> None:
        """Write what is queued, until the body is complete or broke off."""
        while True:
            while self._queue:
                view = self._queue[0]
                await _uncancelled(self._sink.write([view]))
                self._queue.popleft()
                owner = view.obj
                del view
                if isinstance(owner, bytearray):
                    self._free.append(owner)  # written: it can be filled again
                self._resume_if_drained()
            if self._error is not None:
                if self._fill:  # what came before the break is good: keep it
                    self._hand_over()
                    continue
                raise self._error
            if self._left == 0 and not self._fill:
                return
            self._wake.clear()
            await self._wake.wait()

    def stop(self) -> None:
        self._watchdog.cancel()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self._pause()

    def _pause(self) -> None:
        if not self.lost and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def _hand_over(self) -> None:
        """Write the buffer's bytes now, or queue them for a thread and fill a fresh one."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        view = memoryview(self._buffer)[: self._fill]
        if self._sink.inline and not self._queue:
            try:
                self._sink.write_now([view])
            except Exception as exc:  # a full disk, say: the stream stops with it
                self._fail(exc)
            finally:
                view.release()
                self._fill = 0  # written, or lost with the failed write
            return
        self._queue.append(view)
        self._buffer = self._free.pop() if self._free else bytearray(len(self._buffer))
        self._fill = 0
        self._wake.set()
        if len(self._queue) >= _PAUSE_AT and self._left:
            self._pause()  # the disk is behind: let TCP hold the rest for now

    def _resume_if_drained(self) -> None:
        if (
            self._paused
            and not self.lost
            and self._error is None
            and len(self._queue) <= _RESUME_AT
        ):
            self._paused = False
            self._last_data = self._loop.time()  # the wait was ours, not the server's
            self._transport.resume_reading()

    def _flush(self) -> None:
        """On a slow link, bytes do not wait long in memory (a kill would lose them)."""
        self._flush_timer = None
        if self._fill and self._error is None:
            self._hand_over()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake.set()
        self.stop()

    def _check_idle(self) -> None:
        idle = self._loop.time() - self._last_data
        if self._paused or idle < self._read_timeout:
            delay = max(self._read_timeout - idle, 0.1)
            self._watchdog = self._loop.call_later(delay, self._check_idle)
            return
        self._fail(TransferError(f"no data for {self._read_timeout:g} s in the middle of the body"))

    # -- called by the transport ---------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._left <= 0 or self._error is not None:
            # More than the announced length, or after a failure: read it and let it go.
            if self._scratch is None:
                self._scratch = bytearray(65536)
            return memoryview(self._scratch)
        end = min(len(self._buffer), self._fill + self._left)
        return memoryview(self._buffer)[self._fill : end]

    def buffer_updated(self, nbytes: int) -> None:
        if self._left <= 0 or self._error is not None:
            return
        self._fill += nbytes
        self._left -= nbytes
        self._last_data = self._loop.time()
        if self._fill == len(self._buffer) or self._left == 0:
            self._hand_over()
            if self._left == 0:
                self._wake.set()
        elif self._flush_timer is None:
            self._flush_timer = self._loop.call_later(_FLUSH_EVERY, self._flush)

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost says what it means

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._left > 0:
            self._fail(TransferError("the connection broke in the middle of the body"))
        self._original.connection_lost(exc)  # aiohttp's bookkeeping of its connection


async def _uncancelled(write: Any) -> None:
    """A write that started finishes, even when the download is cancelled meanwhile."""
    task = asyncio.ensure_future(write)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


class Batcher:
    """A response body's chunks, gathered into batches for one write each.

    A batch is full at ``write_size`` bytes, or holds whatever came in the last 50 ms on a
    slower link (bytes waiting in memory are lost if the process is killed). ``limit`` caps
    the bytes taken from the body: a range never writes past its end, whatever is sent.
    """

    def __init__(
        self, content: aiohttp.StreamReader, write_size: int, limit: int | None = None
    ) -> None:
        self.content = content
        self.write_size = write_size
        self.left = limit
        self.pending: list[bytes] = []
        self._pending_bytes = 0
        self._loop = asyncio.get_running_loop()
        self._since = self._loop.time()

    async def next_batch(self) -> list[bytes] | None:
        """The next batch to write; None at the end (``pending`` may still hold a last one)."""
        while self.left is None or self.left > 0:
            # readchunk hands over the socket's chunks one by one; iter_any would join (copy)
            # everything buffered first.
            chunk, _ = await self.content.readchunk()
            if not chunk:
                if self.content.at_eof():
                    return None
                continue
            if self.left is not None:
                chunk = chunk[: self.left]
                self.left -= len(chunk)
            self.pending.append(chunk)
            self._pending_bytes += len(chunk)
            if (
                self._pending_bytes >= self.write_size
                or self._loop.time() - self._since > _FLUSH_EVERY
            ):
                return self.take()
        return None

    def take(self) -> list[bytes]:
        batch, self.pending, self._pending_bytes = self.pending, [], 0
        self._since = self._loop.time()
        return batch
