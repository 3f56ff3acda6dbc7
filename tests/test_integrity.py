"""Integrity and safety, on real Redis files (tests/fixtures, made by scripts/make-fixtures)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest
from aiohttp import web

from conftest import CLI, ROOT, cli_env, download_command
from dcs_backup import Event, FileRetry
from dcs_backup._cli import main
from dcs_backup._formats import AofChecker, FormatError, RdbChecker
from dcs_backup._verify import verify_directory
from dcs_backup.emulator import Emulator
from helpers import assert_exact, download, fill_disk_after, quick_config

FIXTURES = ROOT / "tests" / "fixtures"
RDB = (FIXTURES / "redis.rdb").read_bytes()
RDB_NOCRC = (FIXTURES / "redis-nochecksum.rdb").read_bytes()
AOF = (FIXTURES / "redis.aof").read_bytes()
AOF_PREAMBLE = (FIXTURES / "redis-preamble.aof").read_bytes()
SHARD = "redis_192.168.0.1_6379_0-16383_20261124000000.rdb"


def feed(checker: RdbChecker | AofChecker, data: bytes, seed: int) -> None:
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.choice([1, 2, 7, 8, 9, rng.randint(1, 70000)])
        checker.update(data[i : i + n])
        i += n
    checker.finish()


@pytest.mark.parametrize("seed", range(5))
def test_real_files_pass_in_any_chunking(seed: int) -> None:
    rdb = RdbChecker()
    feed(rdb, RDB, seed)
    assert rdb.checksummed and rdb.version == 10  # written by Debian's Redis 7.0
    nocrc = RdbChecker()
    feed(nocrc, RDB_NOCRC, seed)
    assert not nocrc.checksummed
    aof = AofChecker()
    feed(aof, AOF, seed)
    assert aof.commands > 400 and aof.preamble_size is None
    pre = AofChecker()
    feed(pre, AOF_PREAMBLE, seed)
    assert pre.preamble_size is not None and pre.preamble_version == 10 and pre.commands >= 3


@pytest.mark.parametrize(
    ("data", "checker"),
    [(RDB, RdbChecker), (AOF_PREAMBLE, AofChecker)],
    ids=["rdb", "aof-preamble"],
)
def test_every_flipped_byte_is_caught(data: bytes, checker: type) -> None:
    # Checksummed formats: a flip anywhere, from the magic to the trailer, is caught.
    for pos in range(0, len(data), max(len(data) // 97, 1)):
        spoiled = bytearray(data)
        spoiled[pos] ^= 0x04
        with pytest.raises(FormatError):
            feed(checker(), bytes(spoiled), pos)


@pytest.mark.parametrize("data", [RDB, AOF, AOF_PREAMBLE], ids=["rdb", "aof", "aof-preamble"])
def test_truncation_is_caught(data: bytes) -> None:
    checker = RdbChecker if data is RDB else AofChecker
    for cut in (1, 5, 9, len(data) // 3):
        with pytest.raises(FormatError):
            feed(checker(), data[:-cut], cut)


async def test_corruption_in_transit_is_caught_and_fetched_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    backup_id = emulator.add_backup(
        "inst", {SHARD: RDB, "appendonly.aof": AOF, "preamble.aof": AOF_PREAMBLE}
    )
    emulator.faults.corrupt = 1.0  # every body has one flipped bit ...
    events: list[Event] = []

    def heal(event: Event) -> None:  # ... until the first corrupt file is noticed
        events.append(event)
        if isinstance(event, FileRetry) and "failed its check" in event.reason:
            emulator.faults.corrupt = 0.0

    result = await download(
        emulator,
        "inst",
        backup_id,
        tmp_path,
        config=quick_config(concurrency=1),
        subscribers=[heal],
    )
    assert result.ok, [f.error for f in result.failed]
    assert_exact(emulator, "inst", backup_id, tmp_path)
    assert emulator.stats.faults["corrupt"] >= 1
    assert any(isinstance(e, FileRetry) and "failed its check" in e.reason for e in events)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    by_name = {f["name"]: f for f in manifest["files"]}
    assert "rdb-crc64" in by_name[SHARD]["verified"] and by_name[SHARD]["rdb_version"] == 10
    assert "md5" not in by_name[SHARD]  # CRC-64 is enough for a checksummed RDB by default
    assert {"md5=etag", "aof-resp"} <= set(by_name["appendonly.aof"]["verified"])
    assert "aof-preamble-crc64" in by_name["preamble.aof"]["verified"]
    assert manifest["backup_id"] == backup_id and manifest["complete"] is True
    assert manifest["backup_format"] == "rdb" and manifest["backup_created_at"]


@pytest.mark.parametrize("name", [SHARD, "appendonly.aof"])
async def test_always_corrupt_file_fails_and_never_gets_its_name(
    emulator: Emulator, tmp_path: Path, name: str
) -> None:
    backup_id = emulator.add_backup("inst", {name: RDB if name == SHARD else AOF})
    emulator.faults.corrupt = 1.0
    result = await download(emulator, "inst", backup_id, tmp_path)
    assert not result.ok and "failed its check twice" in (result.failed[0].error or "")
    assert not (tmp_path / name).exists()
    assert emulator.stats.requests_by_file[name] == 3  # the size probe and two downloads


async def test_rdb_without_checksum_falls_back_to_md5(emulator: Emulator, tmp_path: Path) -> None:
    backup_id = emulator.add_backup("inst", {SHARD: RDB_NOCRC})
    result = await download(emulator, "inst", backup_id, tmp_path)
    assert result.ok
    checks = result.files[0].checks
    assert checks is not None and checks.rdb_checksummed is False
    assert "md5=etag" in checks.verified and "rdb-crc64" not in checks.verified


async def test_full_verification_records_sha256(emulator: Emulator, tmp_path: Path) -> None:
    backup_id = emulator.add_backup("inst", {SHARD: RDB})
    result = await download(
        emulator, "inst", backup_id, tmp_path, config=quick_config(verify="full")
    )
    checks = result.files[0].checks
    assert checks is not None and checks.sha256 and "md5=etag" in checks.verified


async def test_resumed_file_is_checked_as_strictly(emulator: Emulator, tmp_path: Path) -> None:
    backup_id = emulator.add_backup("inst", {"appendonly.aof": AOF})
    emulator.faults.cut_after = len(AOF) // 2
    first = await download(
        emulator,
        "inst",
        backup_id,
        tmp_path,
        config=quick_config(retry=quick_config().retry.__class__(attempts=1)),
    )
    assert not first.ok
    # Spoil the bytes already on disk: the resumed download must notice (MD5 over all of it).
    part = tmp_path / "appendonly.aof.part"
    data = bytearray(part.read_bytes())
    data[100] ^= 0x01
    part.write_bytes(bytes(data))
    emulator.faults.cut_after = None
    events: list[Event] = []
    second = await download(emulator, "inst", backup_id, tmp_path, subscribers=[events.append])
    assert second.ok and (tmp_path / "appendonly.aof").read_bytes() == AOF
    assert any(isinstance(e, FileRetry) and "failed its check" in e.reason for e in events)


async def test_verify_names_a_file_flipped_on_disk(emulator: Emulator, tmp_path: Path) -> None:
    backup_id = emulator.add_backup("inst", {SHARD: RDB, "appendonly.aof": AOF})
    assert (await download(emulator, "inst", backup_id, tmp_path)).ok
    assert all(r.ok for r in await verify_directory(tmp_path))
    for name in (SHARD, "appendonly.aof"):
        path = tmp_path / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01  # AOF payload byte: only the MD5 can see it
        path.write_bytes(bytes(data))
    reports = {r.name: r for r in await verify_directory(tmp_path)}
    assert not reports[SHARD].ok and "checksum" in reports[SHARD].problems[0]
    assert not reports["appendonly.aof"].ok
    (tmp_path / SHARD).unlink()
    reports = {r.name: r for r in await verify_directory(tmp_path)}
    assert reports[SHARD].problems == ["missing"]


def test_verify_cli_without_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("redis.rdb", "redis.aof", "redis-preamble.aof", "redis-nochecksum.rdb"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    assert main(["verify", str(tmp_path)]) == 0
    assert "4 good, 0 bad" in capsys.readouterr().err
    data = bytearray((tmp_path / "redis.rdb").read_bytes())
    data[5000] ^= 0x80
    (tmp_path / "redis.rdb").write_bytes(bytes(data))
    assert main(["verify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "BAD  redis.rdb" in err and "3 good, 1 bad" in err


@pytest.mark.parametrize("hostile", ["../x.rdb", "/etc/x.rdb", "a/b.rdb", "..", "manifest.json"])
def test_hostile_names_are_refused(
    threaded_emulator: Emulator, tmp_path: Path, hostile: str, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = threaded_emulator
    backup_id = emu.add_backup("inst", {"good.rdb": RDB, hostile: RDB})
    out = tmp_path / "out"
    code = main(["download", "--instance-id", "inst", "--backup-id", backup_id, "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "unsafe file name" in err[0], err
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == ["home", "out"]
        or not (tmp_path / "x.rdb").exists()
    )
    assert list(out.iterdir()) == []


def test_duplicate_names_are_refused(
    threaded_emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup_id = threaded_emulator.add_backup("inst", {"a.rdb": RDB})
    backup = threaded_emulator.backups["inst"][0]
    backup.files.append("a.rdb")
    code = main(
        ["download", "--instance-id", "inst", "--backup-id", backup_id, "-o", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == 1 and "duplicate file name 'a.rdb'" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "answer", ["<html>Gateway timeout</html>", '{"links": "nope"}', '{"links": [{"x": 1}]}']
)
async def test_bad_links_answer_is_one_line(tmp_path: Path, answer: str) -> None:
    async def links(_: web.Request) -> web.Response:
        return web.Response(text=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v2/{p}/instances/{i}/backups/{b}/links", links)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        import asyncio

        env = {
            **os.environ,
            "HUAWEICLOUD_SDK_AK": "ak-x",
            "HUAWEICLOUD_SDK_SK": "sk-x",
            "HUAWEICLOUD_SDK_PROJECT_ID": "p",
            "DCS_BACKUP_ENDPOINT": f"http://127.0.0.1:{port}",
        }
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "download",
            "--instance-id",
            "i",
            "--backup-id",
            "b",
            "-o",
            str(tmp_path / "o"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await runner.cleanup()
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "links answer" in lines[0] or "not JSON" in lines[0]
    assert "Traceback" not in err.decode() and out == b""


def test_links_file_not_json_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "links.json"
    bad.write_text("this is not json")
    assert main(["download", "--links-file", str(bad), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: the links file {bad} is not JSON"]


def test_plain_http_link_to_a_remote_host_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    links = tmp_path / "links.json"
    links.write_text(
        json.dumps(
            {
                "links": [
                    {
                        "file_name": "a.rdb",
                        "link": "http://obs.example.invalid/a.rdb?Expires=1&Signature=s",
                    }
                ]
            }
        )
    )
    assert main(["download", "--links-file", str(links), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "plain http" in err and "--allow-http" in err and "Signature=s" not in err


async def test_disk_full_midway_keeps_partials_and_rerun_completes(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.faults.rate_limit = 8 << 20
    backup_id = emulator.add_generated_backup("inst", shards=4, shard_size=1 << 20)
    free_space = fill_disk_after(monkeypatch, 1_500_000)
    result = await download(emulator, "inst", backup_id, tmp_path)
    assert not result.ok
    assert all("the disk is full" in (f.error or "") for f in result.failed)
    parts = list(tmp_path.glob("*.part"))
    assert parts and sum(p.stat().st_size for p in parts) > 0
    for path in tmp_path.glob("*.rdb"):  # only complete files carry a final name
        assert path.read_bytes() == emulator.object_bytes("inst", backup_id, path.name)
    free_space()
    sent = emulator.stats.bytes_sent
    again = await download(emulator, "inst", backup_id, tmp_path)
    assert again.ok
    assert_exact(emulator, "inst", backup_id, tmp_path)
    assert emulator.stats.bytes_sent - sent < 4 * (1 << 20)  # it resumed


async def test_not_enough_space_is_refused_up_front(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dcs_backup import DcsBackupError

    backup_id = emulator.add_generated_backup("inst", shards=2, shard_size=1 << 20)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10, 9, 1))  # type: ignore[attr-defined]
    with pytest.raises(DcsBackupError, match=r"needs 2 MiB more.*--force"):
        await download(emulator, "inst", backup_id, tmp_path)
    assert emulator.stats.bytes_sent <= 2  # only the size probes
    result = await download(
        emulator, "inst", backup_id, tmp_path, config=quick_config(check_space=False)
    )
    assert result.ok


async def test_no_secret_in_a_verbose_run(tmp_path: Path) -> None:
    import asyncio

    from dcs_backup import Client
    from dcs_backup.emulator import Faults

    faults = Faults(
        link_lifetime=1,
        rate_limit=2 << 20,
        error_500=0.2,
        slowdown_503=0.1,
        reset=0.1,
        seed=3,
        cut_after=1 << 19,
    )
    async with Emulator(faults=faults) as emu:
        backup_id = emu.add_generated_backup("inst", shards=3, shard_size=3 << 20)
        async with Client(credentials=emu.credentials(), endpoint=emu.endpoint) as client:
            signatures = [
                re.search(r"Signature=([^&]+)", x.url).group(1)  # type: ignore[union-attr]
                for x in (await client.get_backup_links("inst", backup_id)).links
            ]
        env = cli_env(emu, HUAWEICLOUD_SDK_SECURITY_TOKEN="TOKEN-SECRET-123")
        proc = await asyncio.create_subprocess_exec(
            *download_command(backup_id, tmp_path, "-vvv", "--json"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode() + err.decode() + (tmp_path / "manifest.json").read_text()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "links refreshed" in text  # the run did refresh links (and logged about it)
    secrets = [emu.sk, emu.ak, "TOKEN-SECRET-123", emu._obs_sk, emu._obs_ak, *signatures]
    for secret in secrets:
        assert secret not in text, f"leaked {secret[:4]}..."
    assert not re.search(r"Signature=(?!REDACTED)", text)
    assert not re.search(r"Access=(?!REDACTED)", text)
