"""Short versions of the soak and crash scripts, and the operator's world: limits, DNS, clocks."""

from __future__ import annotations

import asyncio
import importlib.util
import resource
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import CLI, ROOT, cli_env, download_command
from dcs_backup.emulator import Emulator
from helpers import assert_exact, download, quick_config


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_soak_short(capsys: pytest.CaptureFixture[str]) -> None:
    soak = load_script("soak")
    code = soak.main(
        [
            "--rounds",
            "1",
            "--shards",
            "12",
            "--shard-size",
            "393216",
            "--cut-after",
            "262144",
            "--link-lifetime",
            "1",
            "--seed",
            "3",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "exact, verified" in out and "PASS" in out


@pytest.mark.parametrize(("sig", "mode"), [("KILL", "whole"), ("INT", "segmented")])
def test_crash_resume_short(capsys: pytest.CaptureFixture[str], sig: str, mode: str) -> None:
    crash = load_script("crash_resume")
    code = crash.main(
        [
            "--cycles",
            "3",
            "--signal",
            sig,
            "--mode",
            mode,
            "--shards",
            "3",
            "--shard-size",
            str(3 << 20),
            "--rate-limit",
            str(2 << 20),
            "--min-wait",
            "0.6",
            "--max-wait",
            "0.9",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 interrupted mid-download" in out or "interrupted mid-download" in out


async def test_low_open_file_limit_with_64_shards(emulator: Emulator, tmp_path: Path) -> None:
    backup_id = emulator.add_generated_backup("inst", shards=64, shard_size=32 * 1024)

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = await asyncio.create_subprocess_exec(
        *download_command(backup_id, tmp_path, "--concurrency", "32"),
        "-v",
        env=cli_env(emulator),
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=low_limit,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "Too many open files" not in err.decode()
    assert "ulimit -n is 64: 16 connections instead of 32" in err.decode()
    assert_exact(emulator, "inst", backup_id, tmp_path)
    assert emulator.stats.max_active_responses <= 16


async def test_unresolvable_endpoint_is_one_line(tmp_path: Path) -> None:
    env = {
        "HUAWEICLOUD_SDK_AK": "ak-x",
        "HUAWEICLOUD_SDK_SK": "sk-x",
        "HUAWEICLOUD_SDK_PROJECT_ID": "p",
        "PATH": "/usr/bin:/bin",
        "DCS_BACKUP_ENDPOINT": "http://dcs.no-such-region.invalid",
    }
    proc = await asyncio.create_subprocess_exec(
        *CLI, "backups", "--instance-id", "i", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1
    assert "cannot resolve dcs.no-such-region.invalid" in lines[0]


async def test_expiry_is_judged_by_the_servers_clock(tmp_path: Path) -> None:
    # The servers' clock is 10 minutes ahead (inside the gateway's 15): by the local clock the
    # 4-second links would live 10 minutes, by the server's they expire during the download.
    from dcs_backup.emulator import Faults

    faults = Faults(link_lifetime=4, rate_limit=1 << 20, cut_after=256 * 1024)
    async with Emulator(faults=faults) as emu:
        emu.clock_offset = 600
        backup_id = emu.add_generated_backup("inst", shards=2, shard_size=6 << 20)
        result = await download(emu, "inst", backup_id, tmp_path, config=quick_config())
        assert result.ok and result.refreshes >= 1
        assert_exact(emu, "inst", backup_id, tmp_path)
        # Refreshed ahead of time, by the server's clock: hardly any request met an expired link.
        assert emu.stats.links_calls == 1 + result.refreshes
        assert emu.stats.expired_requests == 0, emu.stats.expired_requests


async def test_clock_far_off_says_so(emulator: Emulator) -> None:
    emulator.clock_offset = 3600
    proc = await asyncio.create_subprocess_exec(
        *CLI, "backups", "--instance-id", "i", env=cli_env(emulator), stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and "system clock" in err.decode()


async def test_output_directory_deleted_midway(emulator: Emulator, tmp_path: Path) -> None:
    import shutil

    emulator.faults.rate_limit = 1 << 20
    backup_id = emulator.add_generated_backup("inst", shards=2, shard_size=2 << 20)
    out = tmp_path / "out"
    task = asyncio.ensure_future(download(emulator, "inst", backup_id, out))
    await asyncio.sleep(0.8)
    shutil.rmtree(out)
    result = await task
    assert not result.ok
    for failed in result.failed:
        assert failed.error and "\n" not in failed.error
    out.mkdir()
    again = await download(emulator, "inst", backup_id, out)
    assert again.ok
    assert_exact(emulator, "inst", backup_id, out)


async def test_download_through_an_http_proxy(emulator: Emulator, tmp_path: Path) -> None:
    """HTTP_PROXY / HTTPS_PROXY are honoured, as curl honours them."""
    import aiohttp
    from aiohttp import web

    seen: list[str] = []

    async def forward(request: web.Request) -> web.StreamResponse:
        seen.append(str(request.url))
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method, request.url, headers=request.headers, data=await request.read()
            ) as upstream,
        ):
            response = web.StreamResponse(status=upstream.status, headers=upstream.headers)
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(1 << 16):
                await response.write(chunk)
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    proxy = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        backup_id = emulator.add_generated_backup("inst", shards=2, shard_size=256 * 1024)
        env = cli_env(emulator, HTTP_PROXY=proxy, HTTPS_PROXY=proxy, NO_PROXY="")
        proc = await asyncio.create_subprocess_exec(
            *download_command(backup_id, tmp_path), env=env, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, err.decode()
    assert_exact(emulator, "inst", backup_id, tmp_path)
    assert any("/obs/" in url for url in seen) and any("/links" in url for url in seen)


async def test_output_directory_on_a_read_only_file_system(emulator: Emulator) -> None:
    backup_id = emulator.add_generated_backup("inst", shards=1, shard_size=4096)
    proc = await asyncio.create_subprocess_exec(
        *download_command(backup_id, Path("/proc/dcs-backup-test")),
        env=cli_env(emulator),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1
    assert lines[0].startswith("error: cannot create the output directory /proc/dcs-backup-test")


async def test_tls_is_verified_and_ca_bundle_is_honoured(
    tls_files: dict[str, Path], tmp_path: Path
) -> None:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files["cert"], tls_files["key"])
    async with Emulator(ssl_context=context) as emu:
        assert emu.endpoint.startswith("https://")
        backup_id = emu.add_generated_backup("inst", shards=2, shard_size=128 * 1024)
        proc = await asyncio.create_subprocess_exec(
            *download_command(backup_id, tmp_path / "a"),
            env=cli_env(emu),
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        lines = err.decode().strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, err.decode()
        assert "not trusted" in lines[0] and "--ca-bundle" in lines[0]
        assert emu.stats.api_calls == 0  # nothing was sent to a server it could not verify

        proc = await asyncio.create_subprocess_exec(
            *download_command(
                backup_id, tmp_path / "b", "--ca-bundle", str(tls_files["ca"]), "--processes", "2"
            ),
            env=cli_env(emu),
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert_exact(emu, "inst", backup_id, tmp_path / "b")
