"""Shared fixtures: the emulator on a real 127.0.0.1 socket, and credentials for it."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dcs_backup.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's real credentials or config."""
    for name in list(os.environ):
        if name.startswith(("HUAWEICLOUD_", "CLOUD_SDK_", "DCS_BACKUP_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator() as emu:
        yield emu


def cli_env(emu: Emulator, **extra: str) -> dict[str, str]:
    """Environment for a `dcs-backup` subprocess pointed at the emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUAWEICLOUD_", "CLOUD_SDK"))}
    env.update(
        {
            "DCS_BACKUP_ENDPOINT": emu.endpoint,
            "HUAWEICLOUD_SDK_IAM_ENDPOINT": emu.endpoint,
            "HUAWEICLOUD_SDK_REGION": emu.region,
            "HUAWEICLOUD_SDK_AK": emu.ak,
            "HUAWEICLOUD_SDK_SK": emu.sk,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


CLI = [sys.executable, "-m", "dcs_backup"]
