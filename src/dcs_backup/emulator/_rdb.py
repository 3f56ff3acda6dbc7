"""Valid RDB files for the emulator, the demo and the tests (no redis-server needed)."""

from __future__ import annotations

import random
import struct
import time

import anycrc

_CRC64 = anycrc.Model("CRC64-REDIS")

OP_AUX, OP_RESIZEDB, OP_SELECTDB, OP_EOF = 0xFA, 0xFB, 0xFE, 0xFF
TYPE_STRING = 0


def crc64(data: bytes, previous: int = 0) -> int:
    """CRC-64/Jones as Redis computes it over an RDB file."""
    return int(_CRC64.calc(data, previous))


def _length(n: int) -> bytes:
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return bytes([0x40 | (n >> 8), n & 0xFF])
    if n < 1 << 32:
        return b"\x80" + struct.pack(">I", n)
    return b"\x81" + struct.pack(">Q", n)


def _string(value: bytes) -> bytes:
    return _length(len(value)) + value


def make_rdb(
    size: int,
    *,
    seed: int = 0,
    version: int = 11,
    value_size: int = 4096,
    ctime: int | None = None,
) -> bytes:
    """An RDB of about ``size`` bytes (at least a header): string keys with random values.

    The same arguments give the same bytes (pass ``ctime`` to pin the creation time).
    """
    rng = random.Random(seed)
    head = bytearray(b"REDIS%04d" % version)
    for key, value in (
        (b"redis-ver", b"7.2.4"),
        (b"redis-bits", b"64"),
        (b"ctime", str(int(time.time()) if ctime is None else ctime).encode()),
        (b"used-mem", str(size).encode()),
        (b"aof-base", b"0"),
    ):
        head += bytes([OP_AUX]) + _string(key) + _string(value)
    body = bytearray()
    keys = 0
    budget = max(size - len(head) - 32, 0)
    while len(body) < budget:
        n = min(value_size, max(budget - len(body) - 24, 1))
        body += (
            bytes([TYPE_STRING]) + _string(b"key:%d:%d" % (seed, keys)) + _string(rng.randbytes(n))
        )
        keys += 1
    out = head + bytes([OP_SELECTDB]) + _length(0)
    out += bytes([OP_RESIZEDB]) + _length(keys) + _length(0) + body + bytes([OP_EOF])
    out += struct.pack("<Q", crc64(bytes(out)))
    return bytes(out)


def shard_name(index: int, shards: int, stamp: str = "20261124061500") -> str:
    """A cluster shard file name as DCS gives it: redis_<ip>_<port>_<slots>_<time>.rdb."""
    first = index * 16384 // shards
    last = (index + 1) * 16384 // shards - 1
    return f"redis_192.168.0.{10 + index}_6379_{first}-{last}_{stamp}.rdb"
