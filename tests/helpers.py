"""Helpers for the download tests: run the engine against the emulator and check the bytes."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dcs_backup import Client, DownloadConfig, DownloadResult, RetryPolicy, download_backup
from dcs_backup.emulator import Emulator

QUICK_RETRY = RetryPolicy(attempts=10, timeout=120, wait_initial=0.02, wait_max=0.2)


def quick_config(**overrides: Any) -> DownloadConfig:
    settings: dict[str, Any] = {"retry": QUICK_RETRY, "read_timeout": 5.0, "write_size": 64 * 1024}
    settings.update(overrides)
    return DownloadConfig(**settings)


async def download(
    emu: Emulator, instance: str, backup_id: str, dest: Path, **kwargs: Any
) -> DownloadResult:
    config = kwargs.pop("config", None) or quick_config()
    async with Client(
        credentials=emu.credentials(),
        endpoint=emu.endpoint,
        iam_endpoint=emu.endpoint,
        region=emu.region,
    ) as client:
        return await download_backup(client, instance, backup_id, dest, config=config, **kwargs)


def assert_exact(emu: Emulator, instance: str, backup_id: str, dest: Path) -> int:
    """Every file of the backup is in ``dest`` byte for byte, and nothing else is left."""
    backup = next(b for b in emu.backups[instance] if b.backup_id == backup_id)
    total = 0
    for name in backup.files:
        expected = emu.object_bytes(instance, backup_id, name)
        actual = (dest / name).read_bytes()
        assert len(actual) == len(expected), f"{name}: {len(actual)} != {len(expected)} bytes"
        assert actual == expected, f"{name}: content differs"
        total += len(expected)
    leftovers = sorted(
        p.name for p in dest.iterdir() if p.name not in backup.files and p.name != "manifest.json"
    )
    assert leftovers == [], f"left behind: {leftovers}"
    return total


def fill_disk_after(monkeypatch: pytest.MonkeyPatch, budget: int) -> Callable[[], None]:
    """The "disk" takes ``budget`` bytes of positional writes, then every write fails with
    ENOSPC, until the test ends or the returned function frees the space."""
    real = os.pwritev
    left = [budget]

    def pwritev(fd: int, buffers: list[Any], offset: int) -> int:
        size = sum(len(b) for b in buffers)
        if left[0] < size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        left[0] -= size
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", pwritev)
    return lambda: monkeypatch.setattr(os, "pwritev", real)
