"""Streaming checks of Redis backup formats: RDB (magic, CRC-64 trailer) and AOF (RESP).

Each checker is fed the file's bytes in order, in pieces of any size, and says at the end
whether the file is well formed. They hold no more than a few bytes between pieces.
"""

from __future__ import annotations

import re

import anycrc

_CRC64 = anycrc.Model("CRC64-REDIS")
_MAGIC = re.compile(rb"^(?:REDIS(\d{4})|VALKEY(\d{3}))$")  # 9 bytes either way
EOF_OPCODE = 0xFF
_MAX_LINE = 64  # RESP header lines ("*<n>", "$<len>") are short; longer means garbage


def crc64(data: bytes | memoryview, previous: int = 0) -> int:
    """CRC-64/Jones (reflected, poly 0xad93d23594c935a9, init 0) as Redis computes it."""
    return int(_CRC64.calc(data, previous))


class FormatError(ValueError):
    """The bytes are not a well-formed file of their kind."""


class RdbChecker:
    """An RDB file: ``REDIS``/``VALKEY`` + version, ..., ``0xFF`` + CRC-64 of all before it.

    After ``finish()``: ``version`` (int), ``crc`` (the computed CRC-64) and ``checksummed``
    (False when Redis wrote a zero trailer, i.e. had ``rdbchecksum no``).
    """

    def __init__(self) -> None:
        self._crc = 0
        self._tail = b""  # the last (up to) 8 bytes, not yet in the CRC: maybe the trailer
        self._head = b""
        self._last_crc_byte = -1
        self.size = 0
        self.version: int | None = None
        self.crc: int | None = None
        self.checksummed = True

    def update(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self.size += len(data)
        if len(self._head) < 16:
            self._head += data[: 16 - len(self._head)]
        joined = self._tail + data if len(data) < 8 else None
        if joined is not None:
            ready, self._tail = joined[:-8], joined[-8:]
            if ready:
                self._crc = crc64(ready, self._crc)
                self._last_crc_byte = ready[-1]
            return
        if self._tail:
            self._crc = crc64(self._tail, self._crc)
            self._last_crc_byte = self._tail[-1]
        view = memoryview(data)
        if len(view) > 8:
            self._crc = crc64(view[:-8], self._crc)
            self._last_crc_byte = view[-9]
        self._tail = bytes(view[-8:])

    def finish(self) -> None:
        magic = _MAGIC.match(self._head[:9])
        if not magic:
            raise FormatError("not an RDB file: it does not start with REDIS and a version")
        self.version = int(magic.group(1)) if magic.group(1) else None
        if self.size < 18 or len(self._tail) != 8:
            raise FormatError(f"RDB file too short ({self.size} bytes)")
        if self._last_crc_byte != EOF_OPCODE:
            raise FormatError("RDB file does not end with the EOF opcode: truncated or corrupt")
        trailer = int.from_bytes(self._tail, "little")
        self.crc = self._crc
        if trailer == 0:
            self.checksummed = False
            return
        if trailer != self._crc:
            raise FormatError(
                f"RDB checksum mismatch: the file says {trailer:016x}, its bytes give "
                f"{self._crc:016x}"
            )


class RespChecker:
    """RESP commands (``*<n>`` then n ``$<len>`` bulk strings), ``#`` annotation lines allowed."""

    def __init__(self) -> None:
        self._line = b""  # a header line split between pieces
        self._args_left = 0  # bulk strings still expected in the current command
        self._skip = 0  # payload bytes still to pass over
        self._crlf = b""  # what must still follow the payload
        self._fed = 0  # bytes fed before the current piece
        self.commands = 0
        self.error: str | None = None

    def update(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n and self.error is None:
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
            elif self._crlf:
                take = min(len(self._crlf), n - i)
                if data[i : i + take] != self._crlf[:take]:
                    self._fail(i, "a bulk string is not followed by CRLF")
                    break
                self._crlf = self._crlf[take:]
                i += take
                if not self._crlf and self._args_left == 0:
                    self.commands += 1
            else:
                end = data.find(b"\n", i, i + _MAX_LINE + 2)
                if end == -1:
                    self._line += data[i : i + _MAX_LINE + 2]
                    if len(self._line) > _MAX_LINE + 2 or n - i > _MAX_LINE + 2:
                        self._fail(i, "a RESP header line is too long")
                    break
                line = self._line + data[i : end + 1]
                self._line = b""
                self._header(line, i)
                i = end + 1
        self._fed += n

    def _header(self, line: bytes, at: int) -> None:
        if len(line) > _MAX_LINE + 2 or not line.endswith(b"\r\n"):
            self._fail(at, "a RESP header line does not end in CRLF")
            return
        body = line[:-2]
        if self._args_left == 0:
            if body.startswith(b"#"):
                return
            if body[:1] != b"*" or not body[1:].isdigit() or int(body[1:]) < 1:
                self._fail(at, f"expected a command (*<n>), found {body[:16]!r}")
                return
            self._args_left = int(body[1:])
            return
        if body[:1] != b"$" or not body[1:].isdigit():
            self._fail(at, f"expected a bulk string ($<len>), found {body[:16]!r}")
            return
        self._args_left -= 1
        self._skip = int(body[1:])
        self._crlf = b"\r\n"

    def _fail(self, at: int, message: str) -> None:
        self.error = f"{message} (near byte {self._fed + at})"

    def finish(self) -> None:
        if self.error:
            raise FormatError(f"not a valid AOF: {self.error}")
        if self._line or self._skip or self._crlf or self._args_left:
            raise FormatError("AOF ends in the middle of a command: truncated")


class AofChecker:
    """An AOF: RESP commands, optionally after an RDB preamble whose trailer is checked too.

    The preamble's end is found where an ``0xFF`` byte is followed by the CRC-64 of everything
    up to it (a chance match is a 2^-64 event).
    """

    def __init__(self) -> None:
        self._resp = RespChecker()
        self._mode = "start"  # start -> preamble -> resp
        self._head = b""
        self._crc = 0
        self._pending: list[tuple[int, bytes]] = []  # (crc through an 0xFF, trailer bytes so far)
        self.preamble_version: int | None = None
        self.preamble_size: int | None = None
        self._consumed = 0

    @property
    def commands(self) -> int:
        return self._resp.commands

    def update(self, data: bytes) -> None:
        if self._mode == "start":
            self._head += data
            if len(self._head) < 9:
                return
            data, self._head = self._head, b""
            magic = _MAGIC.match(data[:9])
            self._mode = "preamble" if magic else "resp"
            if magic and magic.group(1):
                self.preamble_version = int(magic.group(1))
        if self._mode == "preamble":
            data = self._scan_preamble(data)
        if self._mode == "resp" and data:
            self._resp.update(data)

    def _scan_preamble(self, data: bytes) -> bytes:
        """Consume preamble bytes; return what follows the preamble (if it ended here)."""
        view = memoryview(data)
        # Candidates left open by the previous piece: complete their 8 trailer bytes.
        still: list[tuple[int, bytes]] = []
        for crc_at, got in self._pending:
            need = 8 - len(got)
            got += bytes(view[:need])
            if len(got) < 8:
                still.append((crc_at, got))
            elif int.from_bytes(got, "little") == crc_at:
                return self._end_preamble(data, need)
        self._pending = still
        start = 0
        pos = data.find(b"\xff")
        while pos != -1:
            self._crc = crc64(view[start : pos + 1], self._crc)
            start = pos + 1
            trailer = bytes(view[pos + 1 : pos + 9])
            if len(trailer) < 8:
                self._pending.append((self._crc, trailer))
            elif int.from_bytes(trailer, "little") == self._crc:
                return self._end_preamble(data, pos + 9)
            pos = data.find(b"\xff", start)
        self._crc = crc64(view[start:], self._crc)
        self._consumed += len(data)
        return b""

    def _end_preamble(self, data: bytes, used: int) -> bytes:
        self.preamble_size = self._consumed + used
        self._mode = "resp"
        self._pending = []
        return data[used:]

    def finish(self) -> None:
        if self._mode == "start" and self._head:
            self._mode = "resp"  # a tiny AOF: a few bytes of RESP at most
            self._resp.update(self._head)
        if self._mode == "preamble":
            raise FormatError("AOF's RDB preamble has no valid end (0xFF + CRC-64): corrupt")
        self._resp.finish()
