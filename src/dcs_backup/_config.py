"""The download configuration object, with its documented defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ._integrity import VerifyMode
from ._retry import RetryPolicy

MiB = 1024 * 1024


def _default_file_retry() -> RetryPolicy:
    # A file may take long; what bounds it is failures without progress, and an hour of trying.
    return RetryPolicy(attempts=10, timeout=3600.0, wait_initial=0.5, wait_max=15.0)


@dataclass(frozen=True, kw_only=True)
class DownloadConfig:
    """How a backup is downloaded. Every field has a default that suits a cloud download.

    concurrency:     files downloaded at once (default 8); also the connection pool size.
    write_size:      bytes gathered from the socket before one write to disk (default 1 MiB);
                     buffers take concurrency x write_size while the disk keeps up, and
                     at most about 5 x that while it falls behind.
    read_timeout:    seconds a response may stall without a byte before it counts as a
                     failure and is retried (default 30).
    connect_timeout: seconds to open a connection (default 15).
    link_expiration: lifetime, in seconds, asked for new presigned links (default 3600,
                     300..86400).
    refresh_margin:  refresh a link before a request when it expires within this many
                     seconds (default 60; shrinks for short-lived links).
    retry:           the per-file retry policy: failures in a row without progress, and a
                     time bound (default 10 failures, 3600 s).
    verify:          "auto" (default: size, RDB CRC-64, AOF format, MD5 where a file has no
                     checksum of its own) or "full" (also MD5 and SHA-256 of every file).
    check_space:     refuse to start when the file system cannot hold the backup (default
                     True).
    allow_http:      accept plain http:// links to hosts other than loopback (default False).
    ca_bundle:       a PEM file of CA certificates to trust for downloads (default None: the
                     system's); worker processes use it too.
    segment_size:    files of at least twice this size (default 32 MiB) are fetched in
                     ranges over several connections at once, when the connections allowed
                     (``concurrency``) outnumber the files; 0 never splits.
    max_segments:    ranges of one file fetched at once (default 8).
    processes:       processes that download side by side (default None: one per CPU core,
                     at most 4, and only for backups of 256 MiB or more: one event loop
                     saturates one core long before a fast network does).
    """

    concurrency: int = 8
    write_size: int = 1 * MiB
    read_timeout: float = 30.0
    connect_timeout: float = 15.0
    link_expiration: int = 3600
    refresh_margin: float = 60.0
    retry: RetryPolicy = field(default_factory=_default_file_retry)
    verify: VerifyMode = "auto"
    check_space: bool = True
    allow_http: bool = False
    ca_bundle: str | None = None
    segment_size: int = 32 * MiB
    max_segments: int = 8
    processes: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 256:
            raise ValueError("concurrency must be 1..256")
        if self.write_size < 64 * 1024:
            raise ValueError("write_size must be at least 64 KiB")
        if self.read_timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.segment_size < 0 or (0 < self.segment_size < 64 * 1024):
            raise ValueError("segment_size must be 0 or at least 64 KiB")
        if not 1 <= self.max_segments <= 64:
            raise ValueError("max_segments must be 1..64")
        if self.processes is not None and not 1 <= self.processes <= 64:
            raise ValueError("processes must be 1..64")
        if self.verify not in ("auto", "full"):
            raise ValueError("verify must be 'auto' or 'full'")


MULTIPROCESS_MIN_BYTES = 256 * MiB


def most_processes(processes: int | None) -> int:
    """The processes a large download uses: as asked, or one per core, at most 4."""
    return processes if processes is not None else min(os.cpu_count() or 1, 4)


def worker_processes(config: DownloadConfig, files: int, total_bytes: int) -> int:
    """How many processes a download of ``files`` files and ``total_bytes`` bytes should use."""
    if config.processes is None and total_bytes < MULTIPROCESS_MIN_BYTES:
        wanted = 1
    else:
        wanted = most_processes(config.processes)
    return max(1, min(wanted, files))
