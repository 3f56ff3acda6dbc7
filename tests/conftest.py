"""Shared fixtures: the emulator on a real 127.0.0.1 socket, and credentials for it."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dcs_backup.emulator import Emulator, make_certificates

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


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run `dcs-backup ARGS` in a subprocess: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def download_command(backup_id: str, out: Path, *extra: str, instance: str = "inst") -> list[str]:
    """`dcs-backup download` of one backup into ``out``, plain progress lines, plus ``extra``."""
    return [
        *CLI,
        "download",
        "--instance-id",
        instance,
        "--backup-id",
        backup_id,
        "-o",
        str(out),
        "--no-progress",
        *extra,
    ]


class ThreadedEmulator:
    """An emulator on its own event loop in a thread, for tests that call the CLI in-process."""

    def __init__(self, **kwargs: object) -> None:
        self.loop = asyncio.new_event_loop()
        self.emulator = Emulator(**kwargs)  # type: ignore[arg-type]
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Emulator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.emulator.start(), self.loop).result(10)
        return self.emulator

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.emulator.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def threaded_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with ThreadedEmulator() as emu:
        for name, value in cli_env(emu).items():
            if name.startswith(("HUAWEICLOUD_", "DCS_BACKUP_")):
                monkeypatch.setenv(name, value)
        yield emu


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A private CA and a certificate for 127.0.0.1 signed by it (Debian's openssl CLI)."""
    return make_certificates(tmp_path_factory.mktemp("tls"))
