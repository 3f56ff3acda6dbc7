"""The download engine against the emulator over real 127.0.0.1 sockets, byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import stat
from pathlib import Path

import pytest

from conftest import cli_env, download_command, run_cli
from dcs_backup import (
    Client,
    Event,
    FileStarted,
    LinksRefreshed,
    RetryPolicy,
    download_backup,
    parse_links,
)
from dcs_backup.emulator import Emulator, Faults, make_rdb
from dcs_backup.emulator._server import StoredObject
from helpers import assert_exact, download, quick_config

MiB = 1024 * 1024


async def test_several_shards_concurrently(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.rate_limit = 4 * MiB  # long enough transfers to overlap
    sizes = [MiB, 3 * MiB, 2 * MiB, MiB // 2, 2 * MiB]
    backup_id = emulator.add_generated_backup("inst", shard_size=sizes)
    result = await download(emulator, "inst", backup_id, tmp_path / "out")
    assert result.ok and result.retries == 0
    assert_exact(emulator, "inst", backup_id, tmp_path / "out")
    assert emulator.stats.max_active_responses >= 4
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    for f in result.files:
        assert stat.S_IMODE(f.path.stat().st_mode) == 0o600


async def test_largest_files_start_first(emulator: Emulator, tmp_path: Path) -> None:
    sizes = [100_000, 900_000, 300_000, 700_000]
    backup_id = emulator.add_generated_backup("inst", shard_size=sizes)
    events: list[Event] = []
    result = await download(
        emulator,
        "inst",
        backup_id,
        tmp_path / "out",
        config=quick_config(concurrency=1),
        subscribers=[events.append],
    )
    assert result.ok
    started = [e.size for e in events if isinstance(e, FileStarted)]
    assert started == sorted(started, reverse=True) and len(started) == 4


async def test_rerun_over_finished_directory_downloads_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    backup_id = emulator.add_generated_backup("inst", shards=3, shard_size=MiB)
    assert (await download(emulator, "inst", backup_id, tmp_path)).ok
    sent = emulator.stats.bytes_sent
    again = await download(emulator, "inst", backup_id, tmp_path)
    assert again.ok and {f.status for f in again.files} == {"skipped"}
    assert emulator.stats.bytes_sent - sent <= 3  # only the one-byte size probes
    assert again.bytes_received == 0


async def test_links_expiring_every_two_seconds(tmp_path: Path) -> None:
    # Each file takes ~3 s at 1 MiB/s and every response is cut after 512 KiB, so every file
    # needs new requests long after its first link expired.
    faults = Faults(link_lifetime=2, rate_limit=MiB, cut_after=512 * 1024)
    async with Emulator(faults=faults) as emu:
        backup_id = emu.add_generated_backup("inst", shards=4, shard_size=3 * MiB)
        events: list[Event] = []
        result = await download(emu, "inst", backup_id, tmp_path, subscribers=[events.append])
        assert result.ok, [f.error for f in result.failed]
        assert_exact(emu, "inst", backup_id, tmp_path)
        refreshes = [e for e in events if isinstance(e, LinksRefreshed)]
        assert result.refreshes >= 1 and len(refreshes) == result.refreshes
        # Shared refreshes: about one per link lifetime, not one per task per expiry.
        assert emu.stats.links_calls == 1 + result.refreshes
        assert result.refreshes <= result.seconds / 2 + 2, (result.refreshes, result.seconds)


async def test_thirty_percent_of_requests_fail(tmp_path: Path) -> None:
    faults = Faults(
        reset=0.05,
        error_500=0.05,
        slowdown_503=0.05,
        truncate=0.05,
        stall=0.05,
        stall_seconds=3,
        ignore_range=0.05,
        seed=1234,
    )
    async with Emulator(faults=faults) as emu:
        backup_id = emu.add_generated_backup("inst", shards=8, shard_size=MiB)
        result = await download(
            emu,
            "inst",
            backup_id,
            tmp_path,
            config=quick_config(read_timeout=1.0, retry=quick_config().retry),
        )
        assert result.ok, [f.error for f in result.failed]
        assert_exact(emu, "inst", backup_id, tmp_path)
        assert sum(emu.stats.faults.values()) >= 3, emu.stats.faults
        assert result.retries >= 1


async def test_server_ignoring_range_never_appends(tmp_path: Path) -> None:
    faults = Faults(ignore_range=1.0, truncate=0.5, seed=7)
    async with Emulator(faults=faults) as emu:
        backup_id = emu.add_generated_backup("inst", shards=3, shard_size=MiB)
        result = await download(emu, "inst", backup_id, tmp_path)
        assert result.ok, [f.error for f in result.failed]
        assert_exact(emu, "inst", backup_id, tmp_path)
        assert emu.stats.faults["ignore_range"] >= 1


async def test_changed_object_starts_over(emulator: Emulator, tmp_path: Path) -> None:
    name = "redis_10.0.0.1_6379_0-16383_20261124000000.rdb"
    old, new = make_rdb(2 * MiB, seed=1), make_rdb(2 * MiB, seed=2)
    assert len(old) == len(new) and old != new
    backup_id = emulator.add_backup("inst", {name: old}, backup_id="b-1")
    emulator.faults.cut_after = MiB  # the first run stops half way
    emulator.faults.ignore_range = 0.0
    result = await download(
        emulator, "inst", backup_id, tmp_path, config=quick_config(retry=RetryPolicy(attempts=1))
    )
    assert not result.ok and 0 < (tmp_path / f"{name}.part").stat().st_size <= MiB
    assert not (tmp_path / name).exists()
    # The object is replaced by one of the same size: resuming would splice two objects.
    key = f"inst/b-1/{name}"
    emulator.objects[key] = StoredObject(key, len(new), hashlib.md5(new).hexdigest(), data=new)
    emulator.faults.cut_after = None
    result = await download(emulator, "inst", backup_id, tmp_path)
    assert result.ok
    assert (tmp_path / name).read_bytes() == new


async def test_expired_links_file_without_credentials(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.link_lifetime = 1
    backup_id = emulator.add_generated_backup("inst", shards=2, shard_size=64 * 1024)
    async with Client(credentials=emulator.credentials(), endpoint=emulator.endpoint) as client:
        links = await client.get_backup_links("inst", backup_id)
    await asyncio.sleep(2.1)
    result = await download_backup(
        None, "inst", backup_id, tmp_path, links=links, config=quick_config()
    )
    assert not result.ok and len(result.failed) == 2
    for failed in result.failed:
        assert "expired" in (failed.error or "") and "credentials" in (failed.error or "")
    assert not any(p.suffix == ".rdb" for p in tmp_path.iterdir())


async def test_links_file_cli_and_tampered_signature(emulator: Emulator, tmp_path: Path) -> None:
    backup_id = emulator.add_generated_backup("inst", shards=2, shard_size=256 * 1024)
    async with Client(credentials=emulator.credentials(), endpoint=emulator.endpoint) as client:
        links = await client.get_backup_links("inst", backup_id)
    good = tmp_path / "links.json"
    good.write_text(json.dumps(links.to_json()))
    env = cli_env(emulator)
    del env["HUAWEICLOUD_SDK_AK"], env["HUAWEICLOUD_SDK_SK"]  # no credentials at all
    code, _, err = await run_cli(
        "download", "--links-file", str(good), "-o", str(tmp_path / "a"), env=env
    )
    assert code == 0, err
    assert_exact(emulator, "inst", backup_id, tmp_path / "a")

    data = links.to_json()
    data["links"][0]["link"] = data["links"][0]["link"].replace("Signature=", "Signature=AA")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    code, _, text = await run_cli(
        "download", "--links-file", str(bad), "-o", str(tmp_path / "b"), env=env
    )
    assert code == 1 and "SignatureDoesNotMatch" in text
    assert "retry" not in text  # a bad signature fails fast, it is not retried
    name = parse_links(data).links[0].file_name
    assert not (tmp_path / "b" / name).exists()


async def _wait_for_bytes(directory: Path, at_least: int, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        parts = list(directory.glob("*.part")) if directory.exists() else []
        if sum(p.stat().st_size for p in parts) >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the download made no progress")


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
async def test_killed_midway_then_rerun(
    emulator: Emulator, tmp_path: Path, sig: int, processes: str
) -> None:
    emulator.faults.rate_limit = 2 * MiB
    backup_id = emulator.add_generated_backup("inst", shards=4, shard_size=3 * MiB)
    size = 4 * 3 * MiB
    args = download_command(backup_id, tmp_path, "--processes", processes)
    proc = await asyncio.create_subprocess_exec(
        *args, env=cli_env(emulator), stderr=asyncio.subprocess.PIPE
    )
    await _wait_for_bytes(tmp_path, 2 * MiB)
    proc.send_signal(sig)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err.decode()
        assert "interrupted" in err.decode()
    else:
        assert proc.returncode == -signal.SIGKILL
    # Worker processes stop with their parent: nothing is downloading any more.
    await asyncio.sleep(1.0)
    assert emulator.stats.active_responses == 0
    # No file sits under its final name unless it is complete.
    for path in tmp_path.iterdir():
        if path.suffix == ".rdb":
            assert path.read_bytes() == emulator.object_bytes("inst", backup_id, path.name)
    assert list(tmp_path.glob("*.part"))
    sent_before = emulator.stats.bytes_sent
    proc = await asyncio.create_subprocess_exec(
        *args, env=cli_env(emulator), stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert_exact(emulator, "inst", backup_id, tmp_path)
    assert sent_before >= 2 * MiB
    # It resumed: what was on disk was not fetched again.
    assert emulator.stats.bytes_sent <= 1.1 * size, (emulator.stats.bytes_sent, size)


async def test_worker_processes_share_one_refresh(tmp_path: Path) -> None:
    # Two processes, links that expire every 2 s, responses cut every 512 KiB: the workers ask
    # the parent for new links, and the parent's single flight serves them all.
    faults = Faults(link_lifetime=2, rate_limit=MiB, cut_after=512 * 1024, error_500=0.05, seed=5)
    async with Emulator(faults=faults) as emu:
        backup_id = emu.add_generated_backup("inst", shards=4, shard_size=3 * MiB)
        events: list[Event] = []
        result = await download(
            emu,
            "inst",
            backup_id,
            tmp_path,
            config=quick_config(processes=2),
            subscribers=[events.append],
        )
        assert result.ok, [f.error for f in result.failed]
        assert_exact(emu, "inst", backup_id, tmp_path)
        # Events of the worker's files reached this process's subscribers too.
        assert len([e for e in events if isinstance(e, FileStarted)]) == 4
        assert emu.stats.links_calls == 1 + result.refreshes
        assert 1 <= result.refreshes <= result.seconds / 2 + 2
        assert result.bytes_received == 4 * len(
            emu.object_bytes("inst", backup_id, result.files[0].name)
        )
        manifest = json.loads((tmp_path / "manifest.json").read_text())
        assert len(manifest["files"]) == 4 and manifest["complete"]


SEGMENTED = {"segment_size": 256 * 1024, "max_segments": 6, "concurrency": 8}


@pytest.mark.parametrize(
    "faults",
    [
        Faults(rate_limit=4 * MiB),
        Faults(
            reset=0.05,
            error_500=0.05,
            slowdown_503=0.05,
            truncate=0.1,
            stall=0.03,
            stall_seconds=3,
            seed=11,
        ),
        Faults(link_lifetime=2, rate_limit=2 * MiB, cut_after=300 * 1024),
        Faults(ignore_range=0.3, truncate=0.2, seed=4),
    ],
    ids=["clean", "faulty", "expiring-links", "ignores-range"],
)
async def test_segmented_download(tmp_path: Path, faults: Faults) -> None:
    async with Emulator(faults=faults) as emu:
        backup_id = emu.add_generated_backup("inst", shard_size=[4 * MiB, 3 * MiB])
        result = await download(
            emu, "inst", backup_id, tmp_path, config=quick_config(read_timeout=1.0, **SEGMENTED)
        )
        assert result.ok, [f.error for f in result.failed]
        assert_exact(emu, "inst", backup_id, tmp_path)
        if faults.rate_limit == 4 * MiB:
            assert emu.stats.max_active_responses >= 5  # several ranges of a file at once
        for f in result.files:  # checked after the ranges met, by reading the file back
            assert f.checks is not None and "rdb-crc64" in f.checks.verified


async def test_segmented_resume_fetches_only_missing_ranges(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.faults.rate_limit = MiB // 2
    backup_id = emulator.add_generated_backup("inst", shard_size=[6 * MiB])
    name = emulator.backups["inst"][0].files[0]
    args = download_command(backup_id, tmp_path, "--segment-size", "512K", "--max-segments", "6")
    proc = await asyncio.create_subprocess_exec(
        *args, env=cli_env(emulator), stderr=asyncio.subprocess.PIPE
    )
    state_path = tmp_path / f"{name}.state"
    for _ in range(200):  # until the saved state shows some ranges well under way
        await asyncio.sleep(0.05)
        if state_path.exists():
            done = sum(d for _, _, d in json.loads(state_path.read_text())["segments"])
            if done >= 2 * MiB:
                break
    proc.kill()
    await proc.wait()
    state = json.loads(state_path.read_text())
    assert len(state["segments"]) == 6
    done = sum(d for _, _, d in state["segments"])
    assert 2 * MiB <= done < 6 * MiB
    sent = emulator.stats.bytes_sent
    proc = await asyncio.create_subprocess_exec(
        *args, env=cli_env(emulator), stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert_exact(emulator, "inst", backup_id, tmp_path)
    # The rerun fetched what the ranges had not (and what arrived after the last save).
    assert emulator.stats.bytes_sent - sent <= 6 * MiB - done + MiB // 2
    assert emulator.stats.bytes_sent <= 1.3 * 6 * MiB
