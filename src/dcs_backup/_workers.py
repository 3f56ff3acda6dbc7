"""Transfers in worker processes: one event loop is one core, a backup wants them all.

The parent keeps the API client, the single-flight link refresh, the events and the result;
each worker downloads its share of the files with the same engine and talks to the parent in
JSON lines over its stdin/stdout. A worker whose stdin closes (its parent died or gave up)
stops at once, leaving its partial files for a rerun, as the parent would.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import traceback
from typing import IO, Any

from ._events import EventBus, FileFailed
from ._links import LinkSource
from ._result import FileResult
from ._transfer import TransferContext
from ._wire import (
    config_from_json,
    config_to_json,
    event_from_json,
    event_to_json,
    links_from_json,
    links_to_json,
    result_from_json,
    result_to_json,
)

log = logging.getLogger("dcs_backup.workers")
_LINE_LIMIT = 16 * 1024 * 1024


def split_by_size(
    files: list[tuple[str, int | None]], parts: int
) -> list[list[tuple[str, int | None]]]:
    """Greedy balance: each file, largest first, to the share with the fewest bytes so far."""
    shares: list[list[tuple[str, int | None]]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for name, size in sorted(files, key=lambda f: -(f[1] or 0)):
        i = loads.index(min(loads))
        shares[i].append((name, size))
        loads[i] += size or 0
    return [s for s in shares if s]


class _Child:
    """A worker interpreter, as the parent holds it: its pid and its stdin and stdout pipes."""

    def __init__(
        self, pid: int, stdin: IO[bytes], stdout: IO[bytes], popen: subprocess.Popen[bytes] | None
    ) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: int | None = None
        self._popen = popen  # a spawned worker; a forked one is reaped with waitpid

    @classmethod
    def spawn(cls) -> _Child:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dcs_backup._workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        return cls(proc.pid, proc.stdin, proc.stdout, proc)

    def wait(self) -> int:
        """Block until the worker exits (run in a thread); its exit status."""
        if self.returncode is None:
            if self._popen is not None:
                self.returncode = self._popen.wait()
            else:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def discard(self) -> None:
        """An unused spare: its stdin closes, so it exits at once."""
        self.stdin.close()
        self.stdout.close()
        with contextlib.suppress(ChildProcessError):
            self.wait()


_spares: list[_Child] = []


def fork_spares(count: int) -> None:
    """Fork ``count`` workers now, for a download that may want them (Linux only).

    Called by the program before its event loop exists, with its modules imported and no
    other thread running, so a fork is safe and the worker starts with everything loaded: a
    fresh interpreter spends 0.4 s of a core importing first, while the download needs that
    core. A spare the download does not use exits as soon as its stdin closes.
    """
    if not sys.platform.startswith("linux") or count < 1:
        return  # elsewhere a fork after imports is not known to be safe: workers are spawned
    sys.stdout.flush()
    sys.stderr.flush()
    for _ in range(count):
        job_read, job_write = os.pipe()
        out_read, out_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: its pipes become its stdin and stdout
            code = 1
            try:
                os.dup2(job_read, 0)
                os.dup2(out_write, 1)
                for fd in (job_read, job_write, out_read, out_write):
                    os.close(fd)
                for sibling in _spares:
                    sibling.stdin.close()
                    sibling.stdout.close()
                code = main()
            except BaseException:
                traceback.print_exc()  # as a spawned worker would, before it dies
            finally:
                sys.stderr.flush()
                os._exit(code)
        os.close(job_read)
        os.close(out_write)
        stdin, stdout = os.fdopen(job_write, "wb", 0), os.fdopen(out_read, "rb", 0)
        _spares.append(_Child(pid, stdin, stdout, None))
    atexit.register(discard_spares)


def discard_spares() -> None:
    while _spares:
        _spares.pop().discard()


class WorkerProcess:
    """The parent's handle on one worker: start it, serve its refreshes, relay its events."""

    def __init__(self, ctx: TransferContext, files: list[tuple[str, int | None]], verbosity: int):
        self.ctx = ctx
        self.files = files
        self.verbosity = verbosity
        self.results: dict[str, FileResult] = {}
        self._child: _Child | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._refreshing: set[asyncio.Future[None]] = set()

    async def run(self) -> dict[str, FileResult]:
        child = _spares.pop() if _spares else _Child.spawn()
        self._child = child
        loop = asyncio.get_running_loop()
        try:
            reader = asyncio.StreamReader(limit=_LINE_LIMIT)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), child.stdout)
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), child.stdin
            )
            self._writer = asyncio.StreamWriter(transport, protocol, None, loop)
            links = self.ctx.links
            await self._send(
                {
                    "op": "job",
                    "directory": str(self.ctx.directory),
                    "backup_id": self.ctx.backup_id,
                    "config": config_to_json(self.ctx.config),
                    "links": links_to_json(links.snapshot()),
                    "generation": links.generation,
                    "clock_offset": links.clock_offset,
                    "can_refresh": links.can_refresh,
                    "files": self.files,
                    "inline_writes": self.ctx.inline_writes,
                    "verbosity": self.verbosity,
                }
            )
            while line := await reader.readline():
                await self._handle(json.loads(line))
        finally:
            await self._stop()
        missing = [name for name, _ in self.files if name not in self.results]
        for name in missing:  # a worker that died without a word: its files failed
            error = f"the worker process ended unexpectedly (exit {child.returncode})"
            self.results[name] = FileResult(name, "failed", self.ctx.directory / name, error=error)
            self.ctx.bus.emit(FileFailed(name, error))
        return self.results

    async def _handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "event":
            self.ctx.bus.emit(event_from_json(message["event"]))
        elif op == "result":
            result = result_from_json(message["result"])
            self.results[result.name] = result
        elif op == "stats":
            self.ctx.stats.bytes_received += message["bytes_received"]
            self.ctx.stats.retries += message["retries"]
        elif op == "refresh":
            # In a task of its own: the worker's events keep being read meanwhile.
            task = asyncio.ensure_future(self._refresh(message))
            self._refreshing.add(task)
            task.add_done_callback(self._refreshing.discard)

    async def _refresh(self, message: dict[str, Any]) -> None:
        links = self.ctx.links
        try:
            await links.refresh(message["generation"], reason=message["reason"])
        except Exception as exc:  # the worker fails the files that needed it
            await self._send({"op": "refresh_failed", "message": str(exc)})
            return
        await self._send(
            {
                "op": "links",
                "links": links_to_json(links.snapshot()),
                "generation": links.generation,
                "clock_offset": links.clock_offset,
            }
        )

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.write(json.dumps(message).encode() + b"\n")
        await self._writer.drain()

    async def _stop(self) -> None:
        for task in self._refreshing:
            task.cancel()
        child = self._child
        if child is None:
            return
        if self._writer is not None:
            self._writer.close()  # the worker stops when its stdin closes
        else:
            child.stdin.close()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(asyncio.shield(loop.run_in_executor(None, child.wait)), 10)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            child.kill()
            raise


# -- the worker side ------------------------------------------------------------------------


class _Parent:
    """The worker's line to its parent: events out, link refreshes asked for and awaited."""

    def __init__(self, generation: int, out: asyncio.StreamWriter) -> None:
        self.generation = generation
        self._out = out
        self._waiting: asyncio.Future[dict[str, Any]] | None = None

    def send(self, message: dict[str, Any]) -> None:
        # Buffered by the pipe's transport: the event loop never blocks on a full pipe while
        # the parent is busy (say, fetching new links).
        self._out.write(json.dumps(message).encode() + b"\n")

    async def refresh_links(self, reason: str) -> Any:
        if self._waiting is None or self._waiting.done():
            self._waiting = asyncio.get_running_loop().create_future()
            self.send({"op": "refresh", "generation": self.generation, "reason": reason})
        answer = await asyncio.shield(self._waiting)
        if answer["op"] == "refresh_failed":
            from ._errors import DcsBackupError

            raise DcsBackupError(answer["message"])
        self.generation = answer["generation"]
        return links_from_json(answer["links"])

    def answer(self, message: dict[str, Any]) -> None:
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(message)


async def _worker(
    job: dict[str, Any], stdin: asyncio.StreamReader, out: asyncio.StreamWriter
) -> None:
    from pathlib import Path

    from ._downloader import _download_session, run_files

    parent = _Parent(job["generation"], out)
    config = config_from_json(job["config"])
    bus = EventBus([lambda event: parent.send({"op": "event", "event": event_to_json(event)})])

    async def refresh() -> Any:
        return await parent.refresh_links("worker")

    source = LinkSource(
        links_from_json(job["links"]),
        refresh if job["can_refresh"] else None,
        margin=config.refresh_margin,
    )
    source.clock_offset = job["clock_offset"]
    async with _download_session(config, None) as session:
        ctx = TransferContext(
            session,
            source,
            Path(job["directory"]),
            job["backup_id"],
            config,
            bus,
            inline_writes=job["inline_writes"],
        )
        files = [(name, size) for name, size in job["files"]]

        async def transfers() -> None:
            await run_files(
                ctx,
                files,
                lambda result: parent.send({"op": "result", "result": result_to_json(result)}),
            )

        async def listen() -> None:
            while line := await stdin.readline():
                parent.answer(json.loads(line))
            raise asyncio.CancelledError  # the parent is gone: stop, keep the partials

        work = asyncio.ensure_future(transfers())
        ear = asyncio.ensure_future(listen())
        done, _ = await asyncio.wait({work, ear}, return_when=asyncio.FIRST_COMPLETED)
        ear.cancel()
        if work not in done:
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            return
        await work
    parent.send(
        {"op": "stats", "bytes_received": ctx.stats.bytes_received, "retries": ctx.stats.retries}
    )


async def _main() -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=_LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    first = await stdin.readline()
    if not first:
        return
    job = json.loads(first)
    from ._cli import _setup_logging

    _setup_logging(job.get("verbosity", 0))
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), sys.stdout
    )
    out = asyncio.StreamWriter(transport, protocol, None, loop)
    try:
        await _worker(job, stdin, out)
    finally:
        # Everything said reaches the parent before the worker exits, unless it stopped
        # listening (it is gone, or giving up on this worker).
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            await asyncio.wait_for(out.drain(), 2)
        out.close()


def main() -> int:
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent reports
        return 130
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
