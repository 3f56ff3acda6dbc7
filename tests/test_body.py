"""The body path: a taken-over connection on a real 127.0.0.1 socket, against a server that
sends exactly what each test wants (breaks, stalls, too many bytes), into a real file."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dcs_backup import DownloadConfig, _body, _sink
from dcs_backup._errors import TransferError
from dcs_backup._sink import Sink
from helpers import fill_disk_after

WRITE_SIZE = 64 * 1024
BODY = random.Random(7).randbytes(3 * 1024 * 1024 + 12345)

Serve = Callable[[asyncio.StreamWriter], Awaitable[None]]
CLIENT_TLS: list[ssl.SSLContext] = []  # trusts the test CA


@pytest.fixture(params=["http", "https"])
async def server(
    request: pytest.FixtureRequest, tls_files: dict[str, Path]
) -> AsyncIterator[Callable[[Serve], str]]:
    """``server(serve)`` -> a URL whose GET is answered by ``serve(writer)``, over plain
    HTTP and over TLS (whose transport hands data to protocols its own way)."""
    handlers: list[Serve] = []
    tls: ssl.SSLContext | None = None
    if request.param == "https":
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(tls_files["cert"], tls_files["key"])
        CLIENT_TLS.clear()
        CLIENT_TLS.append(ssl.create_default_context(cafile=str(tls_files["ca"])))

    tasks: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        await reader.readuntil(b"\r\n\r\n")
        try:
            await handlers[0](writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = srv.sockets[0].getsockname()[1]

    def url(serve: Serve) -> str:
        handlers[:] = [serve]
        return f"{request.param}://127.0.0.1:{port}/x.bin"

    yield url
    srv.close()
    for task in tasks:  # a stalling answer would keep wait_closed waiting (3.12+)
        task.cancel()
    await srv.wait_closed()


def sends(body: bytes, *, length: int | None = None, then: str = "close") -> Serve:
    """Headers with Content-Length ``length`` (default: the body's), the body in uneven
    pieces, then ``close`` the connection or ``stall`` with it open."""

    async def serve(writer: asyncio.StreamWriter) -> None:
        announced = len(body) if length is None else length
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\n\r\n".encode())
        rng = random.Random(1)
        at = 0
        while at < len(body):
            step = rng.randint(1, 200_000)
            writer.write(body[at : at + step])
            at += step
            await writer.drain()
            if rng.random() < 0.2:
                await asyncio.sleep(0.001)
        if then == "stall":
            await asyncio.sleep(3600)

    return serve


class File:
    """The ``.part`` a sink writes into, and what its bookkeeping says was written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.counted = 0

    def sink(self, **kwargs: Any) -> Sink:
        return Sink(self.fd, lambda: self.counted, self._written, **kwargs)

    def _written(self, count: int) -> None:
        self.counted += count

    def close(self) -> bytes:
        os.close(self.fd)
        return self.path.read_bytes()


@pytest.fixture
def taken_over(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts bodies that went the direct way (so a test cannot pass on aiohttp's)."""
    calls: list[int] = []
    real = _body._receive_directly

    async def spy(resp: aiohttp.ClientResponse, length: int, *args: Any) -> None:
        calls.append(length)
        await real(resp, length, *args)

    monkeypatch.setattr(_body, "_receive_directly", spy)
    return calls


async def fetch(url: str, sink: Sink, length: int | None = None, **config: Any) -> None:
    settings: dict[str, Any] = {"write_size": WRITE_SIZE, "read_timeout": 5.0}
    settings.update(config)
    tls = CLIENT_TLS[0] if url.startswith("https") else None
    connector = aiohttp.TCPConnector(ssl=tls) if tls else None
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
        expected = resp.content_length if length is None else length
        await _body.receive(resp, expected, sink, DownloadConfig(**settings))


async def test_body_arrives_exactly(
    server: Callable[[Serve], str], tmp_path: Path, taken_over: list[int]
) -> None:
    file = File(tmp_path / "x.part")
    await fetch(server(sends(BODY)), file.sink())
    assert taken_over == [len(BODY)]
    assert file.close() == BODY and file.counted == len(BODY)


async def test_small_body_stays_with_aiohttp(
    server: Callable[[Serve], str], tmp_path: Path, taken_over: list[int]
) -> None:
    small = BODY[: 4 * WRITE_SIZE - 1]
    file = File(tmp_path / "x.part")
    await fetch(server(sends(small)), file.sink())
    assert taken_over == []
    assert file.close() == small


async def test_a_broken_body_keeps_what_arrived(
    server: Callable[[Serve], str], tmp_path: Path, taken_over: list[int]
) -> None:
    cut = 2_000_003
    file = File(tmp_path / "x.part")
    with pytest.raises(TransferError, match="broke in the middle"):
        await fetch(server(sends(BODY[:cut], length=len(BODY))), file.sink(), len(BODY))
    assert taken_over
    assert file.close() == BODY[:cut] and file.counted == cut


async def test_a_stalled_body_times_out_and_keeps_what_arrived(
    server: Callable[[Serve], str], tmp_path: Path, taken_over: list[int]
) -> None:
    cut = 1_000_001
    file = File(tmp_path / "x.part")
    serve = sends(BODY[:cut], length=len(BODY), then="stall")
    with pytest.raises(TransferError, match=r"no data for 0\.5 s"):
        await fetch(server(serve), file.sink(), len(BODY), read_timeout=0.5)
    assert taken_over
    assert file.close() == BODY[:cut]


async def test_bytes_past_the_length_are_not_written(
    server: Callable[[Serve], str], tmp_path: Path, taken_over: list[int]
) -> None:
    # The server sends more than asked and keeps the connection open: take the length, go.
    file = File(tmp_path / "x.part")
    serve = sends(BODY, length=len(BODY), then="stall")
    await asyncio.wait_for(fetch(server(serve), file.sink(), 2_500_000), 10)
    assert taken_over
    assert file.close() == BODY[:2_500_000]


async def test_slow_threaded_writes_pause_the_socket_and_lose_nothing(
    server: Callable[[Serve], str],
    tmp_path: Path,
    taken_over: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = _sink.write_and_check
    waiting: list[int] = []

    def slow(*args: Any) -> int:
        waiting.append(0)
        import time

        time.sleep(0.003)
        return real(*args)

    monkeypatch.setattr(_sink, "write_and_check", slow)
    paused: list[bool] = []
    real_hand_over = _body._Receiver._hand_over

    def watch(self: Any) -> None:
        real_hand_over(self)
        paused.append(self._paused)

    monkeypatch.setattr(_body._Receiver, "_hand_over", watch)
    file = File(tmp_path / "x.part")
    await fetch(server(sends(BODY)), file.sink(inline=False))
    assert taken_over
    assert any(paused), "the disk was slower than the socket, yet reading never paused"
    assert file.close() == BODY


async def test_slow_writes_on_the_event_loop_move_to_threads(
    server: Callable[[Serve], str],
    tmp_path: Path,
    taken_over: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_sink, "_SLOW_WRITE", 0.0)  # every write counts as slow
    file = File(tmp_path / "x.part")
    sink = file.sink()
    await fetch(server(sends(BODY)), sink)
    assert taken_over
    assert not sink.inline
    assert file.close() == BODY


async def test_a_full_disk_ends_the_body_with_the_error(
    server: Callable[[Serve], str],
    tmp_path: Path,
    taken_over: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fill_disk_after(monkeypatch, 1_000_000)
    file = File(tmp_path / "x.part")
    with pytest.raises(OSError) as caught:
        await asyncio.wait_for(fetch(server(sends(BODY, then="stall")), file.sink()), 10)
    assert caught.value.errno == errno.ENOSPC
    assert taken_over
    data = file.close()
    assert file.counted == len(data) and data == BODY[: len(data)]


@pytest.mark.parametrize("inline", [True, False])
async def test_cancelled_midway_what_is_counted_is_on_disk(
    server: Callable[[Serve], str], tmp_path: Path, taken_over: list[int], inline: bool
) -> None:
    file = File(tmp_path / "x.part")
    task = asyncio.ensure_future(
        fetch(server(sends(BODY, then="stall")), file.sink(inline=inline), len(BODY) + 1)
    )
    while file.counted < 1_000_000:
        await asyncio.sleep(0.01)
        assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    counted = file.counted
    data = file.close()
    assert taken_over
    assert len(data) == counted and data == BODY[:counted]
