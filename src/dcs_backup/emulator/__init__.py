"""A local DCS + OBS emulator with fault injection, for the demo, the tests and benchmarks."""

from ._faults import FAULT_KINDS, EmulatorStats, Faults
from ._rdb import crc64, make_rdb, shard_name
from ._server import BUCKET, Emulator
from ._tls import make_certificates

__all__ = [
    "BUCKET",
    "FAULT_KINDS",
    "Emulator",
    "EmulatorStats",
    "Faults",
    "crc64",
    "make_certificates",
    "make_rdb",
    "shard_name",
]
