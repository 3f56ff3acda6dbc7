"""The CLI's API commands against the emulator, which verifies SDK-HMAC-SHA256 signatures."""

from __future__ import annotations

import json

from conftest import cli_env, run_cli
from dcs_backup.emulator import Emulator


async def test_backups_and_links_with_right_keys(emulator: Emulator) -> None:
    backup_id = emulator.add_generated_backup("inst-1", shards=2, shard_size=4096)
    code, out, err = await run_cli(
        "backups", "--instance-id", "inst-1", "--json", env=cli_env(emulator)
    )
    assert code == 0, err
    assert [b["backup_id"] for b in json.loads(out)] == [backup_id]

    code, out, err = await run_cli("backups", "--instance-id", "inst-1", env=cli_env(emulator))
    assert code == 0 and backup_id in out and "succeed" in out

    code, out, err = await run_cli(
        "links",
        "--instance-id",
        "inst-1",
        "--backup-id",
        backup_id,
        "--expiration",
        "600",
        env=cli_env(emulator),
    )
    assert code == 0, err
    answer = json.loads(out)
    assert len(answer["links"]) == 2
    assert all("Signature=" in link["link"] for link in answer["links"])
    assert emulator.stats.auth_failures == 0
    assert emulator.stats.api_calls >= 4  # the IAM project lookup plus the calls


async def test_wrong_secret_key_exits_2_with_one_line(emulator: Emulator) -> None:
    emulator.add_generated_backup("inst-1", shards=1, shard_size=4096)
    env = cli_env(emulator, HUAWEICLOUD_SDK_SK="not-the-right-secret")
    for command in (
        ["backups", "--instance-id", "inst-1"],
        ["links", "--instance-id", "inst-1", "--backup-id", "x"],
    ):
        code, out, err = await run_cli(*command, "--project-id", emulator.project_id, env=env)
        assert code == 2
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "APIGW.0301" in lines[0] and "not-the-right-secret" not in err
    assert emulator.stats.auth_failures == 2  # a 401 is never retried


async def test_missing_credentials_exit_2(emulator: Emulator) -> None:
    env = cli_env(emulator)
    del env["HUAWEICLOUD_SDK_AK"], env["HUAWEICLOUD_SDK_SK"]
    code, _, err = await run_cli("backups", "--instance-id", "inst-1", env=env)
    assert code == 2 and "HUAWEICLOUD_SDK_AK" in err and len(err.strip().splitlines()) == 1


async def test_unknown_instance_is_one_line(emulator: Emulator) -> None:
    code, _, err = await run_cli("backups", "--instance-id", "nope", env=cli_env(emulator))
    assert code == 1 and "DCS.3022" in err and len(err.strip().splitlines()) == 1


async def test_clock_far_off_is_refused(emulator: Emulator) -> None:
    emulator.add_generated_backup("inst-1", shards=1, shard_size=4096)
    emulator.clock_offset = 3600  # the gateway's clock is an hour ahead of ours
    code, _, err = await run_cli("backups", "--instance-id", "inst-1", env=cli_env(emulator))
    assert code == 2 and "APIGW.0303" in err


async def test_bad_flags_exit_2() -> None:
    code, _, err = await run_cli("download", "--concurrency", "0", "-o", "x", env={})
    assert code == 2 and "concurrency" in err
